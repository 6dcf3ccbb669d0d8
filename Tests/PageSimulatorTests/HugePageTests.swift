// kernel-semantics.md §3: THP in madvise mode, and the placement of anonymous mmaps.

import PageSimulator
import PageSpace
import Testing

@Suite("§3 transparent huge pages and placement")
struct HugePageTests {
  let twoMiB: UInt = 2 << 20

  /// A 2 MiB-aligned private RW region of `length` bytes (mmap of a multiple of 2 MiB is aligned).
  func aligned(_ space: SimulatedPageSpace, length: UInt) throws -> UInt {
    let p = try space.map(at: nil, length: length, protection: .readWrite, flags: [])
    #expect(p % twoMiB == 0)
    return p
  }

  @Test func oneFaultPerHugePage() throws {
    let space = SimulatedPageSpace()
    let p = try aligned(space, length: twoMiB)
    try space.advise(p, length: twoMiB, .hugePage)
    #expect(try minorFaults(space) { try writeEach(space, p, pages: 512) } == 1)
    #expect(space.counters.hugePageFaults == 1)
    #expect(space.counters.residentPages == 512)
    // Without the advice: 512.
    let q = try aligned(space, length: twoMiB)
    #expect(try minorFaults(space) { try writeEach(space, q, pages: 512) } == 512)
    #expect(space.counters.hugePageFaults == 1)
  }

  @Test func hugeZeroPageThenWrite() throws {
    let space = SimulatedPageSpace()
    let p = try aligned(space, length: twoMiB)
    try space.advise(p, length: twoMiB, .hugePage)
    #expect(try minorFaults(space) { try readEach(space, p, pages: 512) } == 1)
    #expect(space.counters.hugePageFaults == 0)
    #expect(space.counters.residentPages == 0)
    #expect(try minorFaults(space) { try writeEach(space, p, pages: 512) } == 1)
    #expect(space.counters.hugePageFaults == 1)
  }

  @Test func misalignedRegionGetsNoHugePage() throws {
    let space = SimulatedPageSpace()
    let region = try aligned(space, length: 2 * twoMiB)
    let p = region + 7 * page
    try space.advise(p, length: twoMiB, .hugePage)
    #expect(try minorFaults(space) { try writeEach(space, p, pages: 512) } == 512)
    #expect(space.counters.hugePageFaults == 0)
  }

  @Test func twoPMDsAndPopulate() throws {
    let space = SimulatedPageSpace()
    let p = try aligned(space, length: 2 * twoMiB)
    try space.advise(p, length: 2 * twoMiB, .hugePage)
    #expect(try minorFaults(space) { try writeEach(space, p, pages: 1024) } == 2)
    let q = try aligned(space, length: twoMiB)
    try space.advise(q, length: twoMiB, .hugePage)
    #expect(try minorFaults(space) { try space.advise(q, length: twoMiB, .populateWrite) } == 1)
    #expect(space.counters.hugePageFaults == 3)
  }

  @Test func splitByMprotectAndDontNeed() throws {
    let space = SimulatedPageSpace()
    let p = try aligned(space, length: twoMiB)
    try space.advise(p, length: twoMiB, .hugePage)
    try writeEach(space, p, pages: 512, value: 3)
    let count = space.vmaCount
    #expect(
      try minorFaults(space) { try space.protect(p + 100 * page, length: page, to: .none) } == 0)
    #expect(space.vmaCount == count + 2)
    #expect(space.counters.hugePageSplits == 1)
    try space.protect(p + 100 * page, length: page, to: .readWrite)
    #expect(space.vmaCount == count)
    #expect(try minorFaults(space) { try writeEach(space, p, pages: 512) } == 0)
    #expect(try minorFaults(space) { try space.advise(p + 5 * page, length: page, .dontNeed) } == 0)
    #expect(try minorFaults(space) { try writeEach(space, p, pages: 512) } == 1)
    #expect(try readEach(space, p, pages: 512).allSatisfy { $0 == 7 })
  }

  @Test func hugePageAdviceOnPartOfAMapping() throws {
    let space = SimulatedPageSpace()
    let p = try aligned(space, length: 2 * twoMiB)
    let count = space.vmaCount
    try space.advise(p, length: twoMiB, .hugePage)
    #expect(space.vmaCount == count + 1)
  }

  @Test func hugePageDataSurvivesSplitAndUnmap() throws {
    let space = SimulatedPageSpace()
    let p = try aligned(space, length: twoMiB)
    try space.advise(p, length: twoMiB, .hugePage)
    space.fill(p, count: twoMiB, with: 0x5a)
    try space.unmap(p + twoMiB / 2, length: twoMiB / 2)
    #expect(space.counters.residentPages == 256)
    #expect(space.firstMismatch(p, count: twoMiB / 2, expected: 0x5a) == nil)
  }

  @Test func placement() throws {
    let space = SimulatedPageSpace()
    for size in [twoMiB, 2 * twoMiB, 4 * twoMiB] {
      var previous: UInt? = nil
      for _ in 0..<3 {
        let p = try space.map(at: nil, length: size, protection: .readWrite, flags: [])
        #expect(p % twoMiB == 0)
        if let previous { #expect(p + size == previous) }
        previous = p
      }
    }
    for size in [page, 16 * page, twoMiB - page, twoMiB + page, 3 * twoMiB + page] {
      var previous: UInt? = nil
      for _ in 0..<3 {
        let p = try space.map(at: nil, length: size, protection: .readWrite, flags: [])
        #expect(p % twoMiB != 0)
        if let previous { #expect(p + size == previous) }
        previous = p
      }
    }
  }
}
