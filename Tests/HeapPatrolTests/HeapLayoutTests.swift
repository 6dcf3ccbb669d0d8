import HeapPatrol
import PageSpace
import Testing

/// One point of the size x alignment x placement x page-space grid.
struct LayoutCase: Sendable, CustomTestStringConvertible {
  var size: Int
  var alignment: Int
  var placement: HeapConfiguration.Placement
  var space: HeapSpaceKind
  var testDescription: String { "size \(size) align \(alignment) \(placement) \(space)" }

  static let sizes = [0, 1, 7, 8, 13, 16, 17, 100, 4095, 4096, 4097, 10000, 65537]
  static let alignments = [0, 1, 16, 64, 4096, 8192]

  static var all: [LayoutCase] {
    var cases: [LayoutCase] = []
    for space in HeapSpaceKind.allCases {
      for placement in HeapConfiguration.Placement.allCases {
        for size in sizes {
          for alignment in alignments {
            cases.append(
              LayoutCase(size: size, alignment: alignment, placement: placement, space: space))
          }
        }
      }
    }
    return cases
  }
}

@Suite("Heap layout: size x alignment x placement x page space")
struct HeapLayoutTests {
  @Test(arguments: LayoutCase.all)
  func blockBoundaries(_ layout: LayoutCase) throws {
    try withHeap(layout.space, testConfiguration(placement: layout.placement)) { heap in
      let page = heap.pageSize
      let size = UInt(layout.size)
      // A neighbour on each side, so the guard between runs is shared as in a real heap.
      let before = try heap.allocate(24)
      let address = try heap.allocate(layout.size, alignment: layout.alignment)
      let after = try heap.allocate(24)
      let block = try #require(heap.block(containing: address))
      #expect(block.address == address && block.size == size && block.state == .live)
      if layout.alignment > 1 { #expect(address % UInt(layout.alignment) == 0) }
      #expect(heap.usableSize(of: address) == size)

      // Every byte inside is usable (all of them, or a stride for the large sizes).
      var offsets = Array(stride(from: 0, to: size, by: size > 10000 ? 61 : 1))
      if size > 0 { offsets.append(size - 1) }
      for offset in offsets {
        try heap.store(UInt8(truncatingIfNeeded: offset), at: address + offset)
        #expect(try heap.load(address + offset) == UInt8(truncatingIfNeeded: offset))
      }

      // The first byte past the end: a fault diagnosed as an overflow, or a canary hit on free.
      let end = address + size
      if end % page == 0 {
        let finding = try #require(heap.faultingStore(at: end))
        #expect(finding.kind == .heapBufferOverflow)
        #expect(finding.access == .write)
        #expect(finding.block?.index == block.index)
        #expect(finding.relation == .pastEnd && finding.distance == 0)
        #expect(finding.offset == layout.size)
      } else {
        // The first byte past the guard-aligned end faults, the right distance from the block.
        let guardBase = (end + page - 1) & ~(page - 1)
        let finding = try #require(heap.faultingStore(at: guardBase))
        #expect(finding.kind == .heapBufferOverflow)
        #expect(finding.block?.index == block.index)
        #expect(finding.relation == .pastEnd && finding.distance == guardBase - end)
        #expect(!heap.storeFaults(at: end, value: 0x00))
      }

      // The byte before the start: an underflow fault, or a canary hit on free.
      let underflowFaults = address % page == 0
      if underflowFaults {
        let finding = try #require(heap.faultingLoad(at: address - 1))
        #expect(finding.kind == .heapBufferUnderflow)
        #expect(finding.access == .read)
        #expect(finding.block?.index == block.index)
        #expect(finding.relation == .beforeStart && finding.distance == 1)
      } else {
        #expect(!heap.storeFaults(at: address - 1, value: 0x00))
      }

      let result = heap.deallocate(address, api: .free)
      let canaryExpected = end % page != 0 || !underflowFaults
      if canaryExpected {
        let corruption = try #require(result.findings.first(of: .canaryCorruption))
        #expect(corruption.block?.index == block.index)
        if !underflowFaults {
          // The underflow is reported first: it is the byte nearest the start.
          #expect(corruption.detail == address - 1)
          #expect(corruption.relation == .beforeStart && corruption.distance == 1)
        } else {
          #expect(corruption.detail == end)
          #expect(corruption.relation == .pastEnd && corruption.distance == 0)
        }
      } else {
        #expect(result.findings.isEmpty)
      }

      // Quarantined: every access is a use-after-free; a second free is a double free.
      if size > 0 {
        let read = try #require(heap.faultingLoad(at: address))
        #expect(read.kind == .useAfterFree && read.access == .read)
        #expect(read.relation == .inside && read.distance == 0)
        #expect(read.block?.index == block.index && read.block?.state == .quarantined)
        #expect(read.block?.freeAPI == .free)
        let middle = address + size / 2
        let write = try #require(heap.faultingStore(at: middle))
        #expect(write.kind == .useAfterFree && write.access == .write)
        #expect(write.relation == .inside && write.distance == size / 2)
      }
      let second = heap.deallocate(address, api: .free)
      #expect(second.findings.count == 1)
      #expect(second.findings.first(of: .doubleFree)?.block?.index == block.index)

      // The neighbours are intact.
      #expect(heap.deallocate(before, api: .free).findings.isEmpty)
      #expect(heap.deallocate(after, api: .free).findings.isEmpty)
    }
  }
}
