// kernel-semantics.md §2, as far as the model reaches: order-0 page cache with the 16-page
// fault-around window, read-around on a cold cache, MADV_RANDOM, private COW, shared write-notify,
// write-back. Large folios (one fault mapping a whole 256-page folio) are not modelled.

import PageSimulator
import PageSpace
import Testing

@Suite("§2 file-backed mappings")
struct FileMappingTests {
  let base: UInt = 0x5000_0000_0000  // 2 MiB-aligned, free

  func file(pages: Int = 256) -> SimulatedFile {
    SimulatedFile(
      name: "probe", bytes: (0..<(pages * 4096)).map { UInt8(truncatingIfNeeded: $0 / 4096 + 1) })
  }

  /// Reads one byte per page of a mapping of `file` placed at the aligned base + `offset` pages.
  func readFaults(_ file: SimulatedFile, offset: Int, hot: Bool, random: Bool = false) throws -> (
    UInt64, UInt64
  ) {
    let space = SimulatedPageSpace()
    if hot { space.machine.loadPageCache(of: file, for: space) }
    let p = try space.mapFile(
      file, length: UInt(file.pageCount) * page, protection: .read, shared: true,
      at: base + UInt(offset) * page)
    #expect(p == base + UInt(offset) * page)
    if random { try space.advise(p, length: UInt(file.pageCount) * page, .random) }
    let before = space.faultCounts
    let bytes = try readEach(space, p, pages: file.pageCount)
    #expect(bytes == (0..<file.pageCount).map { UInt8(truncatingIfNeeded: $0 + 1) })
    let delta = space.faultCounts - before
    return (delta.minor, delta.major)
  }

  @Test func hotOrderZeroCache() throws {
    #expect(try readFaults(file(), offset: 0, hot: true) == (16, 0))
    #expect(try readFaults(file(), offset: 1, hot: true) == (17, 0))
  }

  @Test func coldCache() throws {
    #expect(try readFaults(file(), offset: 0, hot: false) == (15, 1))
    #expect(try readFaults(file(), offset: 1, hot: false) == (16, 1))
    #expect(try readFaults(file(), offset: 0, hot: false, random: true) == (0, 256))
  }

  @Test func faultAroundWindow() throws {
    // Mapping start ≡ 5 (mod 16): page 0 maps 0–15; page 16 maps 11–26; page 255 maps 251–255.
    let file = file()
    let space = SimulatedPageSpace()
    space.machine.loadPageCache(of: file, for: space)
    let p = try space.mapFile(
      file, length: 256 * page, protection: .read, shared: true, at: base + 5 * page)
    #expect(try minorFaults(space) { _ = try space.load(p) } == 1)
    #expect(try minorFaults(space) { try readEach(space, p, pages: 16) } == 0)
    #expect(try minorFaults(space) { _ = try space.load(p + 16 * page) } == 1)
    #expect(try minorFaults(space) { try readEach(space, p + 16 * page, pages: 11) } == 0)
    #expect(try minorFaults(space) { _ = try space.load(p + 27 * page) } == 1)
    #expect(try minorFaults(space) { _ = try space.load(p + 255 * page) } == 1)
    #expect(try minorFaults(space) { try readEach(space, p + 251 * page, pages: 5) } == 0)
    #expect(try minorFaults(space) { _ = try space.load(p + 250 * page) } == 1)
  }

  @Test func privateWritesCopy() throws {
    let file = file()
    let space = SimulatedPageSpace()
    space.machine.loadPageCache(of: file, for: space)
    let p = try space.mapFile(
      file, length: 256 * page, protection: .readWrite, shared: false, at: base)
    #expect(try minorFaults(space) { try writeEach(space, p, pages: 256, value: 0xee) } == 256)
    let q = try space.mapFile(
      file, length: 256 * page, protection: .readWrite, shared: false, at: base + (4 << 20))
    #expect(try minorFaults(space) { try readEach(space, q, pages: 256) } == 16)
    #expect(try minorFaults(space) { try writeEach(space, q, pages: 256) } == 256)
    // Private writes never reach the file.
    #expect(space.machine.contents(of: file, page: 3)[5] == 4)
    #expect(file.pagesWrittenBack == 0)
  }

  @Test func sharedWritesAndWriteBack() throws {
    let file = file()
    let space = SimulatedPageSpace()
    space.machine.loadPageCache(of: file, for: space)
    let p = try space.mapFile(
      file, length: 256 * page, protection: .readWrite, shared: true, at: base)
    // Order-0 cache: one write fault per page (the measured 1 is a 256-page folio, not modelled).
    #expect(try minorFaults(space) { try writeEach(space, p, pages: 256, value: 0x42) } == 256)
    let q = try space.mapFile(
      file, length: 256 * page, protection: .readWrite, shared: true, at: base + (4 << 20))
    #expect(try minorFaults(space) { try readEach(space, q, pages: 256) } == 16)
    // Write notification: pages first mapped by a read fault take one write fault each.
    #expect(try minorFaults(space) { try writeEach(space, q, pages: 256, value: 0x43) } == 256)
    #expect(space.machine.contents(of: file, page: 7)[5] == 0x43)
    #expect(file.diskBytes(page: 7)[5] == 8)
    try space.sync(p, length: 16 * page)
    #expect(file.pagesWrittenBack == 16)
    #expect(file.diskBytes(page: 7)[5] == 0x43)
    // Written back pages are clean and write-protected again: the next write notifies again.
    #expect(try minorFaults(space) { try space.store(0x44, at: q + 3 * page) } == 1)
    try space.unmap(q, length: 256 * page)
    #expect(file.pagesWrittenBack == 256 + 1)
    #expect(file.diskBytes(page: 200)[5] == 0x43)
  }

  @Test func sharedMappingsSeeEachOther() throws {
    let file = file(pages: 4)
    let machine = SimulatedMachine()
    let a = SimulatedPageSpace(machine: machine)
    let b = SimulatedPageSpace(machine: machine)
    let pa = try a.mapFile(file, length: 4 * page, protection: .readWrite, shared: true)
    let pb = try b.mapFile(file, length: 4 * page, protection: .read, shared: true)
    try a.store(99, at: pa + 2 * page + 1)
    #expect(try b.load(pb + 2 * page + 1) == 99)
  }

  @Test func sharedAnonymousAcrossFork() throws {
    let parent = SimulatedPageSpace()
    let p = try parent.map(at: nil, length: 4 * page, protection: .readWrite, flags: .shared)
    try parent.store(1, at: p)
    let child = parent.fork()
    try child.store(2, at: p + 1)
    #expect(try parent.load(p + 1) == 2)
    // The child had no PTEs (no anon_vma): its first access faulted.
    #expect(child.counters.minorFaults == 1)
  }
}
