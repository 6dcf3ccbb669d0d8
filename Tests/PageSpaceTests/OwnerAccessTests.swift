import PageSpace
import Testing

/// The owner's own accesses: fill (memset), firstMismatch (a word-at-a-time scan), copy (memmove).
@Suite struct OwnerAccessTests {
  @Test func fillAndFirstMismatchAtEveryAlignment() throws {
    let region = try FencedRegion(pages: 2)
    space.fill(region.base, count: 2 * pageSize, with: 0xAB)
    #expect(space.firstMismatch(region.base, count: 2 * pageSize, expected: 0xAB) == nil)
    for start: UInt in [0, 1, 3, 7, 8, 13] {
      for length: UInt in [0, 1, 7, 8, 9, 31, 100] {
        for planted in [UInt?.none, 0, length / 2, length &- 1] {
          space.fill(region.base, count: 256, with: 0xAB)
          if let planted, planted < length {
            try space.store(0x00, at: region.base + start + planted)
          }
          let expected = planted.flatMap { $0 < length ? region.base + start + $0 : nil }
          #expect(
            space.firstMismatch(region.base + start, count: length, expected: 0xAB) == expected,
            "start \(start) length \(length) planted \(String(describing: planted))")
        }
      }
    }
    // Only the first of several mismatches, and bytes outside the range do not count.
    space.fill(region.base, count: 64, with: 0x11)
    try space.store(0x12, at: region.base + 40)
    try space.store(0x13, at: region.base + 20)
    #expect(space.firstMismatch(region.base, count: 64, expected: 0x11) == region.base + 20)
    #expect(space.firstMismatch(region.base + 21, count: 19, expected: 0x11) == nil)
    #expect(try space.load(region.base + 63) == 0x11 && (try space.load(region.base + 64)) == 0xAB)
  }

  @Test func copyHasMemmoveSemantics() throws {
    let region = try FencedRegion(pages: 1)
    for index in 0..<64 { try space.store(UInt8(index), at: region.base + UInt(index)) }
    space.copy(from: region.base, to: region.base + 8, count: 32)  // overlapping, upwards
    #expect(try (0..<8).map { try space.load(region.base + 8 + UInt($0)) } == Array(0..<8))
    #expect(try space.load(region.base + 39) == 31)
    space.copy(from: region.base + 8, to: region.base + 4, count: 32)  // overlapping, downwards
    #expect(try (0..<4).map { try space.load(region.base + 4 + UInt($0)) } == Array(0..<4))
    space.copy(from: region.base, to: region.base + 100, count: 0)
    #expect(try space.load(region.base + 100) == 0)
  }
}
