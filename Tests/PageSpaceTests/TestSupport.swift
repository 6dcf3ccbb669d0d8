import CShims
import PageSpace
import Synchronization
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The real space with per-thread fault counters: tests run in parallel threads of one process.
let space = SystemPageSpace(faultCounting: .thread)
let pageSize = space.pageSize

/// Test regions are requested in a quiet part of the address space, far below the kernel's top-down
/// mmap area, so that holes a test punches are not refilled by other threads' mmaps meanwhile.
private let nextRegionSlot = Atomic<UInt>(0)

/// `[fence][pages private anonymous pages][fence]`: the fences are 1-page MAP_SHARED mappings, which
/// never merge with private memory (kernel-semantics.md §0), so `vmaCount` of the region counts
/// exactly the VMAs the test made.
final class FencedRegion {
  let base: UInt
  let pages: Int
  private let total: UInt

  init(pages: Int, protection: PageProtection = .readWrite, flags: MapFlags = []) throws(PageError)
  {
    self.pages = pages
    total = UInt(pages + 2) * pageSize
    let slot = nextRegionSlot.add(1, ordering: .relaxed).newValue
    let hint: UInt = 0x3000_0000_0000 + slot * 0x4000_0000
    let region = try space.map(at: hint, length: total, protection: .none, flags: .noReserve)
    try space.map(fixed: region, length: pageSize, protection: .readWrite, flags: .shared)
    try space.map(
      fixed: region + total - pageSize, length: pageSize, protection: .readWrite, flags: .shared)
    base = region + pageSize
    try space.map(fixed: base, length: UInt(pages) * pageSize, protection: protection, flags: flags)
  }

  deinit { try? space.unmap(base - pageSize, length: total) }

  func page(_ index: Int) -> UInt { base + UInt(index) * pageSize }
  var range: AddressRange { AddressRange(start: base, length: UInt(pages) * pageSize) }
  var vmaCount: Int { space.vmaCount(in: range) }

  func views() throws -> [SystemPageSpace.PageView] {
    try space.inspect(pagesFrom: base, count: pages)
  }
  /// Each page's protection as /proc/self/maps shows it (`rw-`), or `hole`.
  func protections() throws -> [String] {
    try views().map { $0.mapped ? $0.protection.description : "hole" }
  }
}

/// Writes one byte in each of `count` pages from `start` (as the program would).
func writeEach(_ start: UInt, _ count: Int, value: UInt8 = 0xA5) throws(PageFault) {
  for index in 0..<count { try space.store(value, at: start + UInt(index) * pageSize + 7) }
}

/// Reads one byte in each of `count` pages into `bytes`, which the caller sized beforehand: inside a
/// measured window nothing may allocate, since a malloc can first-touch a fresh heap page and count a
/// minor fault that is not the test's (CI saw exactly that once under parallel load).
func readEach(_ start: UInt, _ count: Int, into bytes: inout [UInt8]) throws(PageFault) {
  precondition(bytes.count >= count, "size the buffer outside the measured window")
  for index in 0..<count { bytes[index] = try space.load(start + UInt(index) * pageSize + 7) }
}

/// Reads one byte in each of `count` pages; returns the bytes. Allocates: not for measured windows.
@discardableResult
func readEach(_ start: UInt, _ count: Int) throws(PageFault) -> [UInt8] {
  var bytes = [UInt8](repeating: 0, count: count)
  try readEach(start, count, into: &bytes)
  return bytes
}

/// The calling thread's minor faults during `body` (RUSAGE_THREAD).
func minorFaults(_ body: () throws -> Void) rethrows -> UInt64 {
  let before = space.faultCounts
  try body()
  return (space.faultCounts - before).minor
}

/// Touches 64 KiB of this thread's stack below the caller, so that a measured window that happens to
/// run deeper than this thread has been before (an error path, a bigger frame) does not count the
/// stack's own first-touch faults.
@inline(never)
func touchStack() {
  var depth = InlineArray<65536, UInt8>(repeating: 1)
  withUnsafeMutableBytes(of: &depth) { bytes in
    var offset = 0
    while offset < bytes.count {
      bytes[offset] = 2
      offset += 4096
    }
  }
}

/// Calls every operation once on scratch memory, so that first-call effects (lazy PLT binding,
/// first signal delivery on this thread, fresh stack pages) are not counted by the measurements that
/// follow.
func warmUpFaultPaths() throws {
  touchStack()
  let scratch = try space.map(at: nil, length: 4 * pageSize, protection: .readWrite, flags: [])
  defer { try? space.unmap(scratch, length: 4 * pageSize) }
  var byte: [UInt8] = [0]
  for _ in 0..<2 {
    _ = try minorFaults {
      try writeEach(scratch, 1)
      try readEach(scratch, 1, into: &byte)
      try space.advise(scratch, length: pageSize, .dontNeed)
      try space.advise(scratch, length: pageSize, .free)
      try space.advise(scratch, length: pageSize, .populateWrite)
      try space.protect(scratch, length: pageSize, to: .none)
      _ = try? space.load(scratch)
      try space.protect(scratch, length: pageSize, to: .readWrite)
      try space.lock(scratch, length: pageSize)
      try space.unlock(scratch, length: pageSize)
      try space.map(fixed: scratch + pageSize, length: pageSize, protection: .readWrite)
      try space.unmap(scratch + 3 * pageSize, length: pageSize)
    }
  }
}

/// Expects `body` to throw exactly `expected`.
func expectError(
  _ expected: PageError, sourceLocation: SourceLocation = #_sourceLocation,
  _ body: () throws(PageError) -> Void
) {
  do throws(PageError) {
    try body()
    Issue.record("expected \(expected), got success", sourceLocation: sourceLocation)
  } catch {
    #expect(error == expected, sourceLocation: sourceLocation)
  }
}

/// Expects `body` to fault with `code` at `address`.
func expectFault(
  _ code: FaultCode, at address: UInt, _ access: MemoryAccess,
  sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws(PageFault) -> Void
) {
  do throws(PageFault) {
    try body()
    Issue.record("expected a \(code) fault, got none", sourceLocation: sourceLocation)
  } catch {
    #expect(
      error == PageFault(address: address, access: access, code: code),
      sourceLocation: sourceLocation)
  }
}

// MARK: Inside exit tests (child processes)

/// In an exit-test child: unless `condition` holds, write `message` to stderr and exit with a
/// status naming the failing line (line % 255 + 1): the parent's report shows only the exit status.
func require(_ condition: Bool, _ message: @autoclosure () -> String, line: Int = #line) {
  if condition { return }
  let text = "line \(line): \(message())\n"
  _ = text.withCString { cshim_write_all(2, $0, strlen($0)) }
  exit(Int32(line % 255 + 1))
}

/// In an exit-test child: the result of a throwing page operation as text ("ok" or the errno name).
func outcome(_ body: () throws(PageError) -> Void) -> String {
  do throws(PageError) {
    try body()
    return "ok"
  } catch {
    return error.name
  }
}
