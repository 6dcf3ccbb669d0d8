import CShims

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// The real page space: the calling process's own address space, through CShims.
///
/// Every operation is one system call (or a plain memory access) and passes the kernel's answer
/// through unchanged: the errno becomes a `PageError`, a fault during `load`/`store` becomes the
/// `PageFault` (exact `si_addr`, `si_code`) the program would have received. Nothing here
/// allocates, locks or retains, so it can be used from the malloc path. On that path an `EINVAL` from
/// our own aligned call is a bug of the caller; deciding that is the heap's policy, not this type's.
public struct SystemPageSpace: PageSpace, Sendable {
  /// Which fault counters `faultCounts` reads.
  public enum FaultCounting: Sendable, Hashable {
    /// `getrusage(RUSAGE_SELF)`: every thread of the process (what `kernel-semantics.md` §1 measured).
    case process
    /// `getrusage(RUSAGE_THREAD)`: the calling thread only — exact deltas while other threads run.
    case thread
  }

  public let pageSize: UInt
  public let faultCounting: FaultCounting
  /// Guard markers switched off for this value, as on a kernel before 6.13 (tests the fallback).
  public let guardMarkersForcedOff: Bool

  public init(forceNoGuardMarkers: Bool = false, faultCounting: FaultCounting = .process) {
    pageSize = UInt(cshim_page_size())
    self.faultCounting = faultCounting
    guardMarkersForcedOff = forceNoGuardMarkers
  }

  // MARK: Mappings

  public func map(at hint: UInt?, length: UInt, protection: PageProtection, flags: MapFlags)
    throws(PageError) -> UInt
  {
    // Anonymous memory always; private unless `.shared` is asked for.
    let sharing: Int32 = flags.contains(.shared) ? 0 : Int32(MAP_PRIVATE)
    let kernelFlags = flags.rawValue | Int32(MAP_ANONYMOUS) | sharing
    var result: UnsafeMutableRawPointer? = nil
    let error = cshim_mmap(
      Self.pointer(hint ?? 0), Self.size(length), protection.rawValue, kernelFlags, -1, 0, &result)
    if error != 0 { throw PageError(errno: error) }
    return UInt(bitPattern: result)
  }

  public func unmap(_ address: UInt, length: UInt) throws(PageError) {
    try Self.check(cshim_munmap(Self.pointer(address), Self.size(length)))
  }

  public func protect(_ address: UInt, length: UInt, to protection: PageProtection)
    throws(PageError)
  {
    try Self.check(cshim_mprotect(Self.pointer(address), Self.size(length), protection.rawValue))
  }

  public func advise(_ address: UInt, length: UInt, _ advice: PageAdvice) throws(PageError) {
    if advice == .guardInstall || advice == .guardRemove, !supportsGuardMarkers {
      throw .unsupported
    }
    try Self.check(cshim_madvise(Self.pointer(address), Self.size(length), advice.rawValue))
  }

  public func lock(_ address: UInt, length: UInt) throws(PageError) {
    try Self.check(cshim_mlock(Self.pointer(address), Self.size(length)))
  }

  public func unlock(_ address: UInt, length: UInt) throws(PageError) {
    try Self.check(cshim_munlock(Self.pointer(address), Self.size(length)))
  }

  public func residency(
    _ address: UInt, length: UInt, into vector: UnsafeMutableBufferPointer<UInt8>
  )
    throws(PageError)
  {
    // The kernel writes one byte per page of a mapped range, so a short vector would be overrun.
    // It is only allowed when the kernel rejects the call before writing anything: an unaligned
    // address (EINVAL) or a range outside user space (ENOMEM).
    let pages = length / pageSize + (length % pageSize == 0 ? 0 : 1)
    let (end, overflow) = address.addingReportingOverflow(pages &* pageSize)
    let rejectedBeforeWriting =
      address % pageSize != 0 || overflow || end > Self.userSpaceEnd
      || pages > UInt(Int.max) / pageSize
    precondition(
      UInt(vector.count) >= pages || rejectedBeforeWriting,
      "residency: vector shorter than the range")
    try Self.check(cshim_mincore(Self.pointer(address), Self.size(length), vector.baseAddress))
  }

  // MARK: Counters

  public var vmaCount: Int {
    var count: Int32 = 0
    // -1: /proc/self/maps unreadable (no procfs); the count is unknown, not zero.
    return cshim_vma_count(&count) == 0 ? Int(count) : -1
  }

  public func vmaCount(in range: AddressRange) -> Int {
    var count: Int32 = 0
    return cshim_vma_count_in(range.start, range.end, &count) == 0 ? Int(count) : -1
  }

  public var maxMapCount: Int {
    var limit: Int32 = 0
    // Without /proc/sys, assume the kernel's default (DEFAULT_MAX_MAP_COUNT).
    return cshim_max_map_count(&limit) == 0 ? Int(limit) : 65530
  }

  /// `getrusage` minor/major faults: process-wide (`RUSAGE_SELF`) or for the calling thread only
  /// (`RUSAGE_THREAD`), as chosen at `init`. Process-wide counts include every other thread's
  /// faults, so deltas are exact only when nothing else runs.
  public var faultCounts: FaultCounts {
    var minor: UInt64 = 0
    var major: UInt64 = 0
    switch faultCounting {
    case .process: _ = cshim_fault_counts(&minor, &major)
    case .thread: _ = cshim_thread_fault_counts(&minor, &major)
    }
    return FaultCounts(minor: minor, major: major)
  }

  public var supportsGuardMarkers: Bool {
    !guardMarkersForcedOff && cshim_guard_markers_supported() != 0
  }

  // MARK: The program's accesses

  public func load(_ address: UInt) throws(PageFault) -> UInt8 {
    var value: UInt8 = 0
    var code: Int32 = 0
    var faultAddress: UInt = 0
    let faulted = cshim_probe(address, 0, 0, &value, &code, &faultAddress)
    if faulted != 0 { throw Self.fault(faulted, code: code, address: faultAddress, access: .read) }
    return value
  }

  public func store(_ value: UInt8, at address: UInt) throws(PageFault) {
    var code: Int32 = 0
    var faultAddress: UInt = 0
    let faulted = cshim_probe(address, 1, value, nil, &code, &faultAddress)
    if faulted != 0 { throw Self.fault(faulted, code: code, address: faultAddress, access: .write) }
  }

  // MARK: The owner's accesses

  public func fill(_ address: UInt, count: UInt, with byte: UInt8) {
    guard count > 0 else { return }
    // Address 0 is never accessible: the unwrap traps like the access itself would.
    memset(Self.pointer(address)!, Int32(byte), Int(count))
  }

  public func firstMismatch(_ address: UInt, count: UInt, expected byte: UInt8) -> UInt? {
    guard count > 0, let base = UnsafeRawPointer(bitPattern: address) else { return nil }
    var offset: UInt = 0
    // Byte by byte up to an 8-byte boundary, then a word at a time, then the tail.
    while offset < count, (address &+ offset) % 8 != 0 {
      if base.load(fromByteOffset: Int(offset), as: UInt8.self) != byte { return address &+ offset }
      offset += 1
    }
    let pattern = UInt64(byte) &* 0x0101_0101_0101_0101
    while count - offset >= 8 {
      let word = base.load(fromByteOffset: Int(offset), as: UInt64.self)
      if word != pattern {
        // Little-endian: the lowest differing byte is the first one in memory.
        let differing = (word ^ pattern).trailingZeroBitCount / 8
        return address &+ offset &+ UInt(differing)
      }
      offset += 8
    }
    while offset < count {
      if base.load(fromByteOffset: Int(offset), as: UInt8.self) != byte { return address &+ offset }
      offset += 1
    }
    return nil
  }

  public func copy(from source: UInt, to destination: UInt, count: UInt) {
    guard count > 0 else { return }
    memmove(Self.pointer(destination)!, UnsafeRawPointer(bitPattern: source)!, Int(count))
  }

  // MARK: Inspection without access (tests, the differential harness, the CLI)

  /// What the kernel reports about one page, read from `/proc/self/maps` and `/proc/self/pagemap`
  /// without touching the page (so no fault, no zero-page mapping, no change of state).
  public struct PageView: Sendable, Hashable {
    /// There is a VMA at the page (a guard marker keeps its VMA).
    public var mapped: Bool
    /// The VMA's protection as `/proc/self/maps` shows it.
    public var protection: PageProtection
    /// A `MADV_GUARD_INSTALL` marker is installed (pagemap bit 58, Linux 6.15+).
    public var guardMarker: Bool
    /// The page has a present page-table entry (pagemap bit 63), zero page included.
    public var present: Bool

    @inlinable public init(
      mapped: Bool, protection: PageProtection, guardMarker: Bool, present: Bool
    ) {
      self.mapped = mapped
      self.protection = protection
      self.guardMarker = guardMarker
      self.present = present
    }

    /// How a one-byte read would end on x86-64: nil if it succeeds, else the `si_code`. Any of
    /// read, write or execute permission makes a page readable there (kernel-semantics.md §5). The
    /// VMA's protection is checked before the page table, so a guard marker on a page the access is
    /// not allowed on anyway faults with SEGV_ACCERR, not SEGV_MAPERR (measured).
    public var readFault: FaultCode? {
      if !mapped { return .mapError }
      if protection.isDisjoint(with: [.read, .write, .exec]) { return .accessError }
      return guardMarker ? .mapError : nil
    }

    /// How a one-byte write would end: nil if it succeeds, else the `si_code`.
    public var writeFault: FaultCode? {
      if !mapped { return .mapError }
      if !protection.contains(.write) { return .accessError }
      return guardMarker ? .mapError : nil
    }
  }

  /// Views of the `pages` pages from `start` (page-aligned), in order. Allocates the result: not for
  /// the malloc path.
  public func inspect(pagesFrom start: UInt, count pages: Int) throws(PageError) -> [PageView] {
    guard pages > 0 else { return [] }
    var protections = [Int8](repeating: -1, count: pages)
    var entries = [UInt64](repeating: 0, count: pages)
    let mapsError = protections.withUnsafeMutableBufferPointer {
      cshim_page_protections(start, pages, $0.baseAddress)
    }
    if mapsError != 0 { throw PageError(errno: mapsError) }
    let pagemapError = entries.withUnsafeMutableBufferPointer {
      cshim_pagemap_entries(start, pages, $0.baseAddress)
    }
    if pagemapError != 0 { throw PageError(errno: pagemapError) }
    return (0..<pages).map { index in
      PageView(
        mapped: protections[index] >= 0,
        protection: PageProtection(rawValue: Int32(max(protections[index], 0))),
        guardMarker: entries[index] & (1 << 58) != 0,
        present: entries[index] & (1 << 63) != 0)
    }
  }

  // MARK: Helpers

  /// The end of the x86-64 4-level user address space (TASK_SIZE_MAX).
  @usableFromInline static let userSpaceEnd: UInt = 0x7FFF_FFFF_F000

  @inline(__always) static func pointer(_ address: UInt) -> UnsafeMutableRawPointer? {
    UnsafeMutableRawPointer(bitPattern: address)
  }

  /// `size_t` is imported as `Int`; the bit pattern keeps lengths such as 2^63 or -PAGE_SIZE intact.
  @inline(__always) static func size(_ length: UInt) -> Int { Int(bitPattern: length) }

  @inline(__always) static func check(_ error: Int32) throws(PageError) {
    if error != 0 { throw PageError(errno: error) }
  }

  static func fault(_ result: Int32, code: Int32, address: UInt, access: MemoryAccess) -> PageFault
  {
    // A negative result means the probe's signal handler could not be installed: no way to access
    // the memory safely, which is an environment failure rather than a program fault.
    precondition(result > 0, "cshim_probe could not install its handler (errno \(-result))")
    // The access is the one performed: SI_KERNEL (#GP) carries no error code to decode it from.
    return PageFault(address: address, access: access, code: FaultCode(rawValue: code) ?? .mapError)
  }
}
