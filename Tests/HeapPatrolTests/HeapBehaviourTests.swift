import HeapPatrol
import PageSpace
import Testing

@Suite("Heap behaviour: frees, quarantine, fills, limits")
struct HeapBehaviourTests {
  @Test(arguments: HeapSpaceKind.allCases)
  func invalidInteriorAndMismatchedFrees(_ kind: HeapSpaceKind) throws {
    try withHeap(kind, testConfiguration()) { heap in
      let address = try heap.allocate(100, api: .newArray)
      let block = try #require(heap.block(containing: address))

      let interior = heap.deallocate(address + 10, api: .deleteArray)
      #expect(interior.owned && interior.findings.count == 1)
      let interiorFinding = try #require(interior.findings.first(of: .interiorFree))
      #expect(interiorFinding.block?.index == block.index && interiorFinding.distance == 10)

      // The guard page after the block: ours, not a block start.
      let guardPage = (address + 100 + heap.pageSize - 1) & ~(heap.pageSize - 1)
      let invalid = heap.deallocate(guardPage + 8, api: .deleteArray)
      #expect(invalid.findings.first(of: .invalidFree)?.relation == .pastEnd)

      // A pointer outside the heap is not ours: the caller forwards it (to glibc).
      var local = 0
      let foreign = withUnsafeMutablePointer(to: &local) { UInt(bitPattern: $0) }
      let notOurs = heap.deallocate(foreign, api: .free)
      #expect(!notOurs.owned && notOurs.findings.isEmpty)

      // Still live after the bad frees; freeing a new[] block with free() is a mismatch but frees it.
      #expect(heap.block(containing: address)?.state == .live)
      let mismatched = heap.deallocate(address, api: .free)
      let mismatch = try #require(mismatched.findings.first(of: .allocDeallocMismatch))
      #expect(mismatch.block?.api == .newArray && mismatch.block?.freeAPI == .free)
      #expect(heap.block(containing: address)?.state == .quarantined)

      let scalar = try heap.allocate(8, api: .new)
      #expect(heap.deallocate(scalar, api: .delete).findings.isEmpty)
      let swift = try heap.allocate(8, api: .swift)
      #expect(heap.deallocate(swift, api: .delete).findings.first(of: .allocDeallocMismatch) != nil)
    }
  }

  @Test func quarantineIsFIFOByCount() throws {
    var configuration = testConfiguration()
    configuration.quarantineMaxCount = 2
    try withHeap(.real, configuration) { heap in
      let blocks = try (0..<4).map { _ in try heap.allocate(32) }
      for block in blocks { heap.deallocate(block, api: .free) }
      // The first two left quarantine in order; the last two are still in it.
      #expect(heap.block(containing: blocks[0])?.state == .released)
      #expect(heap.block(containing: blocks[1])?.state == .released)
      #expect(heap.block(containing: blocks[2])?.state == .quarantined)
      #expect(heap.block(containing: blocks[3])?.state == .quarantined)
      #expect(heap.statistics.quarantinedBlocks == 2)
      // A released block that was not reused is still named (its pages stay guarded).
      let late = try #require(heap.faultingLoad(at: blocks[0]))
      #expect(late.kind == .useAfterFree && late.block?.state == .released)
      // Its run is reused first (oldest released first), and the new block is named from then on.
      let reused = try heap.allocate(32)
      #expect(reused == blocks[0])
      #expect(heap.block(containing: reused)?.state == .live)
      // A double free of a released block is still caught while its record is remembered.
      #expect(heap.deallocate(blocks[1], api: .free).findings.first(of: .doubleFree) != nil)
    }
  }

  @Test func quarantineIsBoundedByBytes() throws {
    var configuration = testConfiguration()
    configuration.quarantineMaxBytes = 1000
    try withHeap(.real, configuration) { heap in
      let a = try heap.allocate(600)
      let b = try heap.allocate(300)
      let c = try heap.allocate(200)
      heap.deallocate(a, api: .free)
      heap.deallocate(b, api: .free)
      #expect(heap.statistics.quarantinedBytes == 900)
      heap.deallocate(c, api: .free)  // 1100 > 1000: a leaves
      #expect(heap.block(containing: a)?.state == .released)
      #expect(heap.block(containing: b)?.state == .quarantined)
      #expect(heap.statistics.quarantinedBytes == 500)
      #expect(heap.statistics.quarantinedBlocks == 2)
    }
  }

  @Test func noFreeKeepsEverything() throws {
    var configuration = testConfiguration()
    configuration.quarantineMaxCount = 0
    configuration.quarantineMaxBytes = 0
    configuration.noFree = true
    try withHeap(.real, configuration) { heap in
      let blocks = try (0..<50).map { _ in try heap.allocate(64) }
      for block in blocks { heap.deallocate(block, api: .free) }
      #expect(heap.statistics.quarantinedBlocks == 50)
      for block in blocks { #expect(heap.block(containing: block)?.state == .quarantined) }
      // No run is reused: a new block gets fresh address space.
      let fresh = try heap.allocate(64)
      #expect(!blocks.contains(fresh))
      #expect(heap.faultingStore(at: blocks[0])?.kind == .useAfterFree)
    }
  }

  @Test func heapLimit() throws {
    var configuration = testConfiguration()
    configuration.heapLimit = 1000
    try withHeap(.real, configuration) { heap in
      let first = try heap.allocate(600)
      let refused = heap.allocate(byteCount: 600, alignment: 0, api: .malloc, zeroed: false)
      #expect(refused.address == nil)
      let finding = try #require(refused.findings.first(of: .outOfMemory))
      #expect(finding.bytes == 600 && finding.detail == 1000)
      heap.deallocate(first, api: .free)
      _ = try heap.allocate(600)
      #expect(heap.statistics.failedAllocations == 1)
    }
  }

  @Test func faultInjectionEveryNth() throws {
    var configuration = testConfiguration()
    configuration.faultInjection = .init(failEvery: 3)
    try withHeap(.real, configuration) { heap in
      let failed = (1...9).filter {
        _ in heap.allocate(byteCount: 8, alignment: 0, api: .malloc, zeroed: false).address == nil
      }
      #expect(failed.count == 3)
      #expect(heap.statistics.failedAllocations == 3)
    }
    try withHeap(.real, configuration) { heap in
      let pattern = (1...9).map { _ in
        heap.allocate(byteCount: 8, alignment: 0, api: .malloc, zeroed: false).address == nil
      }
      #expect(pattern == [false, false, true, false, false, true, false, false, true])
    }
  }

  @Test func faultInjectionIsDeterministicPerSeed() throws {
    func pattern(seed: UInt64) throws -> [Bool] {
      var configuration = testConfiguration()
      configuration.faultInjection = .init(probability: 0.5, seed: seed)
      var result: [Bool] = []
      try withHeap(.real, configuration) { heap in
        for _ in 0..<64 {
          result.append(
            heap.allocate(byteCount: 8, alignment: 0, api: .malloc, zeroed: false).address == nil)
        }
      }
      return result
    }
    let first = try pattern(seed: 42)
    #expect(try pattern(seed: 42) == first)
    #expect(try pattern(seed: 43) != first)
    #expect(first.filter { $0 }.count > 10 && first.filter { $0 }.count < 54)
  }

  @Test(arguments: [HeapConfiguration.GuardMechanism.automatic, .mprotect, .canary])
  func fillsAndCallocOnReusedRuns(_ mechanism: HeapConfiguration.GuardMechanism) throws {
    var configuration = testConfiguration(mechanism: mechanism)
    configuration.quarantineMaxCount = 0  // a freed run is reusable at once
    try withHeap(.real, configuration) { heap in
      let dirty = try heap.allocate(5000)
      for offset in stride(from: 0, to: 5000, by: 7) {
        #expect(try heap.load(dirty + UInt(offset)) == 0xFF)
      }
      try heap.store(0x12, at: dirty + 100)
      heap.deallocate(dirty, api: .free)
      let zeroed = try heap.allocate(5000, api: .calloc, zeroed: true)
      #expect(heap.block(containing: zeroed)?.index == heap.block(containing: dirty)?.index)
      for offset in stride(from: 0, to: 5000, by: 7) {
        #expect(try heap.load(zeroed + UInt(offset)) == 0)
      }
      #expect(try heap.load(zeroed + 100) == 0)
    }
  }

  @Test func canaryModeFillsAndWriteAfterFree() throws {
    var configuration = testConfiguration(mechanism: .canary)
    configuration.quarantineMaxCount = 1
    try withHeap(.real, configuration) { heap in
      #expect(heap.statistics.mechanism == .canary)
      let block = try heap.allocate(40)
      #expect(try heap.load(block) == 0xFF)
      // Red zones: the byte after and before the block are canary, found by check().
      try heap.store(1, at: block + 40)
      let findings = heap.check(stack: .none)
      #expect(findings.count == 1)
      #expect(findings.first?.kind == .canaryCorruption && findings.first?.detail == block + 40)
      try heap.store(0xAA, at: block + 40)
      #expect(heap.check(stack: .none).isEmpty)

      #expect(heap.deallocate(block, api: .free).findings.isEmpty)
      // Freed canary memory stays accessible, filled with the free byte; a write to it is caught
      // when the block leaves quarantine.
      #expect(try heap.load(block + 3) == 0x55)
      try heap.store(7, at: block + 3)
      #expect(heap.check(stack: .none).first?.kind == .useAfterFree)
      let other = try heap.allocate(40)
      let evicting = heap.deallocate(other, api: .free)
      let late = try #require(evicting.findings.first(of: .useAfterFree))
      #expect(late.address == block + 3 && late.access == .write && late.distance == 3)
    }
  }

  @Test(arguments: HeapSpaceKind.allCases)
  func reallocKeepsDataAndChecksCanaries(_ kind: HeapSpaceKind) throws {
    try withHeap(kind, testConfiguration(alignment: .fixed(16))) { heap in
      let old = try heap.allocate(13)
      for offset in 0..<13 { try heap.store(UInt8(offset), at: old + UInt(offset)) }
      let grown = heap.reallocate(old, byteCount: 10000, api: .realloc)
      let bigger = try #require(grown.address)
      #expect(bigger != old && grown.findings.isEmpty)
      for offset in 0..<13 { #expect(try heap.load(bigger + UInt(offset)) == UInt8(offset)) }
      #expect(try heap.load(bigger + 13) == 0xFF)
      // The old block is freed by realloc.
      #expect(heap.block(containing: old)?.freeAPI == .realloc)
      #expect(heap.faultingLoad(at: old)?.kind == .useAfterFree)

      let shrunk = try #require(heap.reallocate(bigger, byteCount: 5, api: .realloc).address)
      for offset in 0..<5 { #expect(try heap.load(shrunk + UInt(offset)) == UInt8(offset)) }
      // Fixed 16 alignment leaves 11 bytes of slack after a 5-byte block: corrupt it.
      try heap.store(0, at: shrunk + 6)
      let moved = heap.reallocate(shrunk, byteCount: 8, api: .realloc)
      let corruption = try #require(moved.findings.first(of: .canaryCorruption))
      #expect(corruption.detail == shrunk + 6 && corruption.distance == 1)
      #expect(moved.address != nil)
      // realloc of a freed block is a double free and returns nothing.
      let stale = heap.reallocate(old, byteCount: 8, api: .realloc)
      #expect(stale.address == nil && stale.findings.first(of: .doubleFree) != nil)
    }
  }

  @Test func badAlignmentImpossibleSizesAndOverflow() throws {
    try withHeap(.real, testConfiguration()) { heap in
      let bad = heap.allocate(byteCount: 64, alignment: 24, api: .posixMemalign, zeroed: false)
      #expect(bad.address == nil && bad.findings.first(of: .badAlignment)?.detail == 24)
      let huge = heap.allocate(byteCount: Int(1 << 50), alignment: 0, api: .malloc, zeroed: false)
      #expect(huge.address == nil && huge.findings.first(of: .outOfMemory)?.bytes == 1 << 50)
      switch HeapCore<SystemPageSpace>.multipliedSize(count: 1 << 40, size: 1 << 30) {
      case .success: Issue.record("count * size overflow not detected")
      case .failure(let overflow): #expect(overflow.finding.kind == .sizeOverflow)
      }
      #expect((try? HeapCore<SystemPageSpace>.multipliedSize(count: 3, size: 5).get()) == 15)
    }
  }

  @Test(arguments: HeapSpaceKind.allCases)
  func zeroSizedBlocksAreUniqueAndGuarded(_ kind: HeapSpaceKind) throws {
    try withHeap(kind, testConfiguration()) { heap in
      let blocks = try (0..<8).map { _ in try heap.allocate(0) }
      #expect(Set(blocks).count == 8)
      let finding = try #require(heap.faultingLoad(at: blocks[3]))
      #expect(finding.kind == .heapBufferOverflow && finding.distance == 0)
      #expect(finding.block?.address == blocks[3] && finding.block?.size == 0)
      for block in blocks { #expect(heap.deallocate(block, api: .free).findings.isEmpty) }
    }
  }

  /// GNU sort asks for a 3.25 GB buffer; Electric Fence truncates such sizes to 32 bits.
  @Test func blocksOfTwoGigabytesAndMore() throws {
    var configuration = testConfiguration()
    configuration.reservationSize = 1 << 30
    try withHeap(.real, configuration) { heap in
      let size = 3_250_000_000
      let address = try heap.allocate(size)
      #expect(heap.usableSize(of: address) == UInt(size))
      try heap.store(1, at: address)
      try heap.store(2, at: address + UInt(size) - 1)
      #expect(try heap.load(address + UInt(size) - 1) == 2)
      let finding = try #require(heap.faultingStore(at: address + UInt(size)))
      #expect(finding.kind == .heapBufferOverflow && finding.block?.size == UInt(size))
      #expect(heap.deallocate(address, api: .free).findings.isEmpty)
    }
  }
}

@Suite("Heap diagnose rules")
struct HeapDiagnoseTests {
  @Test func straddlingAccessAndNearestBlock() throws {
    try withHeap(.real, testConfiguration(placement: .lower)) { heap in
      let page = heap.pageSize
      let a = try heap.allocate(100)
      let b = try heap.allocate(100)
      // Lower placement: a's run is one page, then the guard shared with b, which starts right after.
      #expect(b == a + 2 * page)
      let guardBase = a + page
      // A straddling store reported at the guard base: past a's end by page - 100.
      let straddle = try #require(heap.view.diagnose(address: guardBase, access: .write))
      #expect(straddle.kind == .heapBufferOverflow && straddle.block?.address == a)
      #expect(straddle.distance == page - 100)
      // Near the end of the guard page, b's start is nearer: an underflow of b.
      let near = try #require(heap.view.diagnose(address: b - 16, access: .read))
      #expect(near.kind == .heapBufferUnderflow && near.block?.address == b && near.distance == 16)
      // Equally far past a's end and before b's start: the tie goes to the block before.
      let tie = a + 100 + (b - (a + 100)) / 2
      #expect(heap.view.diagnose(address: tie, access: .read)?.block?.address == a)
      #expect(heap.view.diagnose(address: tie + 1, access: .read)?.block?.address == b)
      // Non-canonical addresses and foreign addresses are not ours.
      #expect(heap.view.diagnose(address: 0, access: .read, code: .kernel) == nil)
      #expect(heap.view.diagnose(address: 0x1000, access: .read) == nil)
    }
  }

  @Test func wildAccessInOurReservation() throws {
    try withHeap(.real, testConfiguration()) { heap in
      let a = try heap.allocate(16)
      let reservation = try #require(heap.reservationRanges.first { $0.contains(a) })
      let far = reservation.end - heap.pageSize
      let finding = try #require(heap.faultingLoad(at: far))
      #expect(finding.kind == .wildAccess && finding.block == nil)
      // The reservation's first page guards the first run from below.
      let first = try #require(heap.view.diagnose(address: reservation.start, access: .read))
      #expect(first.kind == .wildAccess || first.kind == .heapBufferUnderflow)
    }
  }

  @Test func liveBlocksAndStatistics() throws {
    try withHeap(.real, testConfiguration()) { heap in
      let blocks = try (1...5).map { try heap.allocate($0 * 10) }
      heap.deallocate(blocks[1], api: .free)
      let live = heap.liveBlocks
      #expect(live.count == 4)
      #expect(Set(live.map(\.address)) == Set([blocks[0], blocks[2], blocks[3], blocks[4]]))
      #expect(live.map(\.index).sorted() == live.map(\.index))
      let statistics = heap.statistics
      #expect(statistics.liveBlocks == 4 && statistics.liveBytes == 10 + 30 + 40 + 50)
      #expect(statistics.quarantinedBlocks == 1 && statistics.quarantinedBytes == 20)
      #expect(statistics.allocations == 5)
    }
  }
}

@Suite("Heap behaviour: the slack canary bound")
struct SlackCanaryTests {
  /// An upper-placed 100-byte block leaves ~4 KiB of slack below it on its page. With a 256-byte
  /// bound only the 256 bytes nearest the block are canary; `slack_canary=0` canaries (and checks)
  /// all of it; the default (64) is the cache line before the block.
  @Test(arguments: HeapSpaceKind.allCases)
  func underflowsAreCheckedWithinTheBound(_ kind: HeapSpaceKind) throws {
    for (limit, checkedDistances, uncheckedDistances) in [
      (UInt?(256), [1, 100, 256], [257, 1000, 3900]),
      (UInt?(nil), [1, 257, 3900], []),
      (HeapConfiguration().slackCanaryLimit, [1, 64], [65, 300]),
    ] as [(UInt?, [UInt], [UInt])] {
      var configuration = testConfiguration(alignment: .fixed(16))
      configuration.slackCanaryLimit = limit
      try withHeap(kind, configuration) { heap in
        for distance in checkedDistances + uncheckedDistances {
          let address = try heap.allocate(100, api: .malloc)
          #expect(!heap.storeFaults(at: address - distance, value: 0x00))
          let findings = heap.deallocate(address, api: .free).findings
          if checkedDistances.contains(distance) {
            let corruption = findings.first(of: .canaryCorruption)
            #expect(
              corruption?.detail == address - distance,
              "limit \(String(describing: limit)), \(distance) below")
            #expect(corruption?.relation == .beforeStart && corruption?.distance == distance)
          } else {
            #expect(
              findings.isEmpty,
              "\(distance) below is outside the \(String(describing: limit))-byte bound")
          }
        }
        // The bytes past the end up to the guard page are always within the bound (< alignment).
        let address = try heap.allocate(100, api: .malloc)
        #expect(!heap.storeFaults(at: address + 100, value: 0x00))
        #expect(
          heap.deallocate(address, api: .free).findings.first(of: .canaryCorruption)?.detail
            == address + 100)
      }
    }
  }
}
