/// The seam between the heap and memory: anonymous virtual memory with Linux's page semantics.
///
/// Two implementations sit on either side: `SystemPageSpace` (the real kernel, through CShims) and
/// `SimulatedPageSpace` (module PageSimulator). Every operation returns exactly what Linux returns —
/// the same errno, the same partial effects (mprotect stops at a hole, madvise carries on), the same
/// VMA splits and merges, the same fault counts — so that anything built above can run on either and
/// the two can be compared step by step (see `../shared/kernel-semantics.md`).
///
/// Addresses and lengths are `UInt` so that the kernel's edge cases (a length of 2^62, a length that
/// wraps, addresses above the 47-bit user space) can be expressed.
///
/// Requirements for conformers used on the malloc path (SystemPageSpace): no allocation, no lock of
/// the Swift runtime, no retain/release in any of the operations below.
public protocol PageSpace {
  /// The page size in bytes (4096 on x86-64).
  var pageSize: UInt { get }

  /// `mmap(hint, length, protection, MAP_ANONYMOUS | (shared ? MAP_SHARED : MAP_PRIVATE) | flags)`.
  /// Returns the address of the new mapping. Without `.fixed`/`.fixedNoReplace`, a hint is only a hint.
  func map(at hint: UInt?, length: UInt, protection: PageProtection, flags: MapFlags) throws(PageError)
    -> UInt

  /// `munmap(address, length)`; the length is rounded up to whole pages.
  func unmap(_ address: UInt, length: UInt) throws(PageError)

  /// `mprotect(address, length, protection)`. Stops at the first hole (ENOMEM) having changed the
  /// part before it.
  func protect(_ address: UInt, length: UInt, to protection: PageProtection) throws(PageError)

  /// `madvise(address, length, advice)`. Carries on across holes (applying both sides) and then
  /// reports ENOMEM. `.guardInstall` throws `.unsupported` where guard markers are not available.
  func advise(_ address: UInt, length: UInt, _ advice: PageAdvice) throws(PageError)

  /// `mlock(address, length)`: populates the range (faults counted inside the call).
  func lock(_ address: UInt, length: UInt) throws(PageError)

  /// `munlock(address, length)`.
  func unlock(_ address: UInt, length: UInt) throws(PageError)

  /// `mincore(address, length, vector)`: one byte per page, bit 0 set when the page is resident.
  /// `vector` must hold at least `ceil(length / pageSize)` bytes.
  func residency(_ address: UInt, length: UInt, into vector: UnsafeMutableBufferPointer<UInt8>)
    throws(PageError)

  /// The number of VMAs, counted as the kernel counts them against `vm.max_map_count`
  /// (the lines of `/proc/self/maps` less `[vsyscall]`).
  var vmaCount: Int { get }

  /// The number of VMAs that overlap `range` (for comparing one arena while other code maps elsewhere).
  func vmaCount(in range: AddressRange) -> Int

  /// `vm.max_map_count`: the limit on `vmaCount` (mmap may reach limit + 1; a split needs < limit).
  var maxMapCount: Int { get }

  /// Cumulative minor and major fault counts (the real space: `getrusage(RUSAGE_SELF)`).
  var faultCounts: FaultCounts { get }

  /// Whether `MADV_GUARD_INSTALL` / `MADV_GUARD_REMOVE` are available.
  var supportsGuardMarkers: Bool { get }

  // MARK: Accesses that may fault (the program's accesses, replayed).

  /// Reads one byte as the program would. A fault comes back as the SIGSEGV the program would get.
  func load(_ address: UInt) throws(PageFault) -> UInt8

  /// Writes one byte as the program would. A fault comes back as the SIGSEGV the program would get.
  func store(_ value: UInt8, at address: UInt) throws(PageFault)

  // MARK: The owner's own accesses (fills, canaries): the range must be accessible.

  /// Sets `count` bytes at `address` to `byte` (memset). The range must be readable and writable;
  /// anything else is a bug of the caller and traps. Fault counting is as for the program's writes.
  func fill(_ address: UInt, count: UInt, with byte: UInt8)

  /// The address of the first byte in `[address, address + count)` that is not `byte`, or nil.
  /// The range must be readable.
  func firstMismatch(_ address: UInt, count: UInt, expected byte: UInt8) -> UInt?

  /// Copies `count` bytes between accessible ranges (memmove semantics).
  func copy(from source: UInt, to destination: UInt, count: UInt)
}

extension PageSpace {
  /// A reservation of address space: `PROT_NONE`, `MAP_NORESERVE`, private. Costs no memory.
  @inlinable
  public func reserve(length: UInt) throws(PageError) -> UInt {
    try map(at: nil, length: length, protection: .none, flags: .noReserve)
  }

  /// `mmap(MAP_FIXED)` over part of an existing reservation or mapping.
  @inlinable
  public func map(fixed address: UInt, length: UInt, protection: PageProtection, flags: MapFlags = [])
    throws(PageError)
  {
    _ = try map(at: address, length: length, protection: protection, flags: flags.union(.fixed))
  }

  /// Rounds `value` up to a whole number of pages.
  @inlinable
  public func roundUpToPage(_ value: UInt) -> UInt {
    (value &+ pageSize &- 1) & ~(pageSize &- 1)
  }

  /// Rounds `value` down to a page boundary.
  @inlinable
  public func roundDownToPage(_ value: UInt) -> UInt {
    value & ~(pageSize &- 1)
  }
}
