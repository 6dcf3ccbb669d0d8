// kernel-semantics.md §6: merge and split rules, and the max_map_count limit with its asymmetry.

import PageSimulator
import PageSpace
import Testing

@Suite("§6 VMA merge/split rules and max_map_count")
struct VMARuleTests {
  /// A fenced, free range of `pages` pages (the inside of a fence, unmapped).
  func fence(_ space: SimulatedPageSpace, pages: Int) throws -> UInt {
    let p = try fenced(space, pages: pages)
    try space.unmap(p, length: UInt(pages) * page)
    return p
  }

  func inside(_ space: SimulatedPageSpace, _ p: UInt, pages: Int) -> Int {
    space.vmaCount(in: AddressRange(start: p, length: UInt(pages) * page))
  }

  @Test(
    "nine pages, odd pages NONE (touched or not): 9, restoring RW: 1", arguments: [false, true])
  func alternatingProtections(touched: Bool) throws {
    let space = SimulatedPageSpace()
    let p = try fenced(space, pages: 9)
    if touched { try writeEach(space, p, pages: 9) }
    for index in [1, 3, 5, 7] { try space.protect(p + UInt(index) * page, length: page, to: .none) }
    #expect(inside(space, p, pages: 9) == 9)
    for index in [1, 3, 5, 7] {
      try space.protect(p + UInt(index) * page, length: page, to: .readWrite)
    }
    #expect(inside(space, p, pages: 9) == 1)
  }

  @Test(
    "mmap B directly above or below a touched A: merged, still 1 after touching B",
    arguments: [false, true])
  func adjacentMappingsMerge(below: Bool) throws {
    let space = SimulatedPageSpace()
    let p = try fence(space, pages: 8)
    let a = below ? p + 4 * page : p
    let b = below ? p : p + 4 * page
    try space.map(fixed: a, length: 4 * page, protection: .readWrite)
    try writeEach(space, a, pages: 4)
    try space.map(fixed: b, length: 4 * page, protection: .readWrite)
    #expect(inside(space, p, pages: 8) == 1)
    try writeEach(space, b, pages: 4)
    #expect(inside(space, p, pages: 8) == 1)
  }

  @Test(
    "A gap B, C fills the gap: 1 unless both A and B were touched",
    arguments: [(false, false, 1), (true, false, 1), (false, true, 1), (true, true, 2)])
  func gapFill(touchA: Bool, touchB: Bool, expected: Int) throws {
    let space = SimulatedPageSpace()
    let p = try fence(space, pages: 9)
    try space.map(fixed: p, length: 4 * page, protection: .readWrite)
    try space.map(fixed: p + 5 * page, length: 4 * page, protection: .readWrite)
    if touchA { try writeEach(space, p, pages: 4) }
    if touchB { try writeEach(space, p + 5 * page, pages: 4) }
    try space.map(fixed: p + 4 * page, length: page, protection: .readWrite)
    #expect(inside(space, p, pages: 9) == expected)
  }

  @Test func neighbourMadeWritable() throws {
    let space = SimulatedPageSpace()
    let p = try fence(space, pages: 8)
    try space.map(fixed: p, length: 4 * page, protection: .readWrite)
    try writeEach(space, p, pages: 4)
    try space.map(fixed: p + 4 * page, length: 4 * page, protection: .read)
    try readEach(space, p + 4 * page, pages: 4)
    #expect(inside(space, p, pages: 8) == 2)
    try space.protect(p + 4 * page, length: 4 * page, to: .readWrite)
    #expect(inside(space, p, pages: 8) == 1)

    let q = try fence(space, pages: 8)
    try space.map(fixed: q, length: 4 * page, protection: .readWrite)
    try writeEach(space, q, pages: 4)
    try space.map(fixed: q + 4 * page, length: 4 * page, protection: .none)
    #expect(inside(space, q, pages: 8) == 2)
    try space.protect(q + 4 * page, length: 4 * page, to: .readWrite)
    #expect(inside(space, q, pages: 8) == 1)
  }

  @Test func protNoneNeighbours() throws {
    let space = SimulatedPageSpace()
    // NONE next to NONE: 1.
    let a = try fence(space, pages: 8)
    try space.map(fixed: a, length: 4 * page, protection: .none)
    try space.map(fixed: a + 4 * page, length: 4 * page, protection: .none)
    #expect(inside(space, a, pages: 8) == 1)
    // Untouched RW -> NONE next to NONE: 1.
    let b = try fence(space, pages: 8)
    try space.map(fixed: b, length: 4 * page, protection: .readWrite)
    try space.map(fixed: b + 4 * page, length: 4 * page, protection: .none)
    try space.protect(b, length: 4 * page, to: .none)
    #expect(inside(space, b, pages: 8) == 1)
    // Touched RW -> NONE next to NONE, either creation order: 2.
    for rwFirst in [true, false] {
      let c = try fence(space, pages: 8)
      if rwFirst {
        try space.map(fixed: c, length: 4 * page, protection: .readWrite)
        try writeEach(space, c, pages: 4)
        try space.map(fixed: c + 4 * page, length: 4 * page, protection: .none)
      } else {
        try space.map(fixed: c + 4 * page, length: 4 * page, protection: .none)
        try space.map(fixed: c, length: 4 * page, protection: .readWrite)
        try writeEach(space, c, pages: 4)
      }
      try space.protect(c, length: 4 * page, to: .none)
      #expect(inside(space, c, pages: 8) == 2)
    }
    // One touched VMA made NONE in two calls: 1.
    let d = try fenced(space, pages: 8)
    try writeEach(space, d, pages: 8)
    try space.protect(d, length: 4 * page, to: .none)
    try space.protect(d + 4 * page, length: 4 * page, to: .none)
    #expect(inside(space, d, pages: 8) == 1)
    // mmap(NONE) -> RW next to mmap(RW): 1.
    let e = try fence(space, pages: 8)
    try space.map(fixed: e, length: 4 * page, protection: .readWrite)
    try space.map(fixed: e + 4 * page, length: 4 * page, protection: .none)
    try space.protect(e + 4 * page, length: 4 * page, to: .readWrite)
    #expect(inside(space, e, pages: 8) == 1)
  }

  @Test(
    "flags that prevent merging: NORESERVE, MAP_STACK, shared next to shared",
    arguments: [MapFlags.noReserve, .stack, .shared])
  func flagsPreventMerging(flags: MapFlags) throws {
    let space = SimulatedPageSpace()
    let p = try fence(space, pages: 8)
    try space.map(
      fixed: p, length: 4 * page, protection: .readWrite, flags: flags == .shared ? .shared : [])
    try space.map(fixed: p + 4 * page, length: 4 * page, protection: .readWrite, flags: flags)
    #expect(inside(space, p, pages: 8) == 2)
  }

  // MARK: max_map_count

  /// A space at exactly `count` VMAs under a small limit, with a touched 4-page VMA to split.
  func spaceAt(count: Int, limit: Int = 40) throws -> (SimulatedPageSpace, UInt) {
    let space = SimulatedPageSpace()
    space.maxMapCount = limit
    let target = try space.map(at: nil, length: 4 * page, protection: .readWrite, flags: [])
    try writeEach(space, target, pages: 4)
    while space.vmaCount < count {
      // Separate shared pages never merge: one VMA each.
      _ = try space.map(at: nil, length: page, protection: .readWrite, flags: .shared)
    }
    #expect(space.vmaCount == count)
    return (space, target)
  }

  @Test func mmapMayReachLimitPlusOne() throws {
    let (space, _) = try spaceAt(count: 40)
    _ = try space.map(at: nil, length: page, protection: .readWrite, flags: .shared)
    #expect(space.vmaCount == 41)
    #expect(
      errorOf { () throws(PageError) in
        _ = try space.map(at: nil, length: page, protection: .readWrite, flags: .shared)
      } == .outOfMemory)
  }

  @Test func splitsFailAtTheLimit() throws {
    let (space, p) = try spaceAt(count: 40)
    #expect(
      errorOf { () throws(PageError) in try space.protect(p + page, length: page, to: .none) }
        == .outOfMemory)
    #expect(
      errorOf { () throws(PageError) in try space.unmap(p + page, length: page) } == .outOfMemory)
    #expect(
      errorOf { () throws(PageError) in
        try space.map(fixed: p + page, length: page, protection: .none)
      } == .outOfMemory)
    #expect(
      errorOf { () throws(PageError) in try space.advise(p + page, length: page, .dontDump) }
        == .tryAgain)
    #expect(space.vmaCount == 40)
    // What still works at the limit.
    try space.advise(p + page, length: page, .dontNeed)
    try space.advise(p + page, length: page, .guardInstall)
    try space.unmap(p + 3 * page, length: page)  // trims one end
    #expect(space.vmaCount == 40)
  }

  @Test func mergingMprotectAtTheLimit() throws {
    // Three VMAs [RW][NONE][RW] at count L: making the middle RW merges them (L-2); back to NONE: L.
    let (space, p) = try spaceAt(count: 38)
    try space.protect(p + page, length: page, to: .none)
    #expect(space.vmaCount == 40)
    try space.protect(p + page, length: page, to: .readWrite)
    #expect(space.vmaCount == 38)
    try space.protect(p + page, length: page, to: .none)
    #expect(space.vmaCount == 40)
  }

  @Test func twoSplitMprotectPartialFailure() throws {
    let (space, p) = try spaceAt(count: 39)
    #expect(
      errorOf { () throws(PageError) in try space.protect(p + page, length: page, to: .none) }
        == .outOfMemory)
    #expect(space.vmaCount == 40)
    let pieces = space.memoryMap.filter { $0.start >= p && $0.end <= p + 4 * page }
    #expect(pieces.map { ($0.end - $0.start) / page } == [1, 3])
    #expect((0..<4).allSatisfy { space.wouldFault(p + UInt($0) * page, .write) == nil })
  }

  /// §6's guard-page allocation schemes: how many (1 data page + 1 guard) allocations fit under L,
  /// starting from 24 VMAs (the measured process), with L lowered to keep the test fast.
  @Test func guardAllocationSchemes() throws {
    let limit = 2024
    func start() -> SimulatedPageSpace {
      let space = SimulatedPageSpace()
      space.maxMapCount = limit
      space.vmaBaseline = 24
      return space
    }
    // Separate mmap(2 pages RW) + mprotect upper page NONE: 24 + 2n <= L.
    do {
      let space = start()
      var n = 0
      while true {
        guard let p = try? space.map(at: nil, length: 2 * page, protection: .readWrite, flags: [])
        else { break }
        if (try? space.protect(p + page, length: page, to: .none)) == nil { break }
        n += 1
      }
      #expect(n == (limit - 24) / 2)
    }
    // One PROT_NONE NORESERVE reservation carved ascending (1-page data): 25 + 1 + 2(n - 1) <= L.
    do {
      let space = start()
      let reservation = try space.reserve(length: UInt(2 * limit + 8) * page)
      var n = 0
      while (try? space.protect(reservation + UInt(2 * n) * page, length: page, to: .readWrite))
        != nil
      { n += 1 }
      #expect(n == (limit - 26) / 2 + 1)
    }
    // Descending: 25 + 2n <= L.
    do {
      let space = start()
      let pages = 2 * limit + 8
      let reservation = try space.reserve(length: UInt(pages) * page)
      var n = 0
      while (try? space.protect(
        reservation + UInt(pages - 2 - 2 * n) * page, length: page, to: .readWrite)) != nil
      {
        n += 1
      }
      #expect(n == (limit - 25) / 2)
    }
    // One RW reservation with a guard marker on every other page: all fit, +1 VMA in total.
    do {
      let space = start()
      let count = space.vmaCount
      let region = try space.map(at: nil, length: 8000 * page, protection: .readWrite, flags: [])
      for index in stride(from: 1, to: 8000, by: 2) {
        try space.advise(region + UInt(index) * page, length: page, .guardInstall)
      }
      #expect(space.vmaCount == count + 1)
    }
  }

  @Test func defaultLimitAndBaseline() {
    let space = SimulatedPageSpace()
    #expect(space.maxMapCount == 65530)
    #expect(space.vmaCount == 0)
    space.vmaBaseline = 24
    #expect(space.vmaCount == 24)
  }
}
