import Foundation
import HeapPatrolTool
import Testing

@Suite struct ReportRendererTests {
  let renderer = ReportRenderer(currentDirectory: "/src")

  static func frame(
    _ pc: UInt64, _ module: String, _ offset: UInt64, _ function: String? = nil,
    _ file: String? = nil, _ line: Int? = nil
  )
    -> StackFrame
  {
    StackFrame(
      pc: HexNumber(pc), module: module, offset: HexNumber(offset), function: function, file: file,
      line: line)
  }

  static let preload = "/build/debug/libHeapPatrolPreload.so"

  static var overflow: FindingRecord {
    var finding = FindingRecord(kind: "heap-buffer-overflow")
    finding.code = "ILLMEM"
    finding.access = "WRITE"
    finding.address = HexNumber(0x7f2a_1c3f_f00d)
    finding.pid = 4242
    finding.thread = 4243
    finding.offset = 13
    finding.relation = "past-end"
    finding.distance = 0
    finding.block = BlockRecord(
      index: 7, address: HexNumber(0x7f2a_1c3f_f000), size: 13, alignment: 1, api: "malloc",
      state: "live",
      thread: 4243)
    finding.accessStack = [
      frame(0x55d0_c0a0_11c9, "/src/fixture", 0x11c9, "overflow_write", "/src/fixture.c", 12),
      frame(0x55d0_c0a0_1300, "/src/fixture", 0x1300, "main", "/src/fixture.c", 40),
    ]
    finding.allocationStack = [
      frame(0x7f00_0000_2000, preload, 0x2000, "$s17HeapPatrolPreload6mallocyS2iF"),
      frame(0x7f00_0000_2100, preload, 0x2100),
      frame(0x55d0_c0a0_11b0, "/src/fixture", 0x11b0, "overflow_write", "/src/fixture.c", 10),
    ]
    return finding
  }

  @Test func rendersTheASanLikeLayoutWithSymbols() {
    let expected = """
      =================================================================
      ==4242==ERROR: HeapPatrol: heap-buffer-overflow [ILLMEM] WRITE at 0x00007f2a1c3ff00d (thread 4243)
        0x00007f2a1c3ff00d is 0 bytes past the end of block #7 (13 bytes, malloc) at 0x00007f2a1c3ff000
        accessed at:
          #0 0x000055d0c0a011c9 in overflow_write fixture.c:12 (/src/fixture+0x11c9)
          #1 0x000055d0c0a01300 in main fixture.c:40 (/src/fixture+0x1300)
        allocated by thread 4243 at:
          #0 0x000055d0c0a011b0 in overflow_write fixture.c:10 (/src/fixture+0x11b0)
      SUMMARY: HeapPatrol: heap-buffer-overflow fixture.c:12 in overflow_write

      """
    #expect(renderer.render(Self.overflow) == expected)
  }

  @Test func freedBlocksShowTheFreeStackAndInlinedFramesCountAsFrames() {
    var finding = Self.overflow
    finding.kind = "use-after-free"
    finding.code = "FRDOPN"
    finding.access = "READ"
    finding.relation = "inside"
    finding.distance = 8
    finding.block?.state = "quarantined"
    finding.block?.freeThread = 4244
    finding.accessStack = [
      StackFrame(
        pc: HexNumber(0x1000), module: "/src/m", offset: HexNumber(0x1000), function: "helper",
        file: "/src/m.c",
        line: 3, inlinedInto: [SymbolLocation(function: "caller", file: "/src/m.c", line: 9)])
    ]
    finding.freeStack = [Self.frame(0x2000, "/lib/m.so", 0x2000)]
    let text = renderer.render(finding)
    #expect(
      text.contains(
        "  0x00007f2a1c3ff00d is 8 bytes inside of freed block #7 (13 bytes, malloc) at "))
    #expect(
      text.contains(
        "    #0 0x0000000000001000 in helper m.c:3 (/src/m+0x1000)\n    #1 0x0000000000001000 in caller m.c:9 (/src/m+0x1000)\n"
      ))
    #expect(
      text.contains("  freed by thread 4244 at:\n    #0 0x0000000000002000 (/lib/m.so+0x2000)\n"))
    #expect(text.hasSuffix("SUMMARY: HeapPatrol: use-after-free m.c:3 in helper\n"))
  }

  @Test func relationIsDerivedFromTheOffsetWhenMissing() {
    var finding = Self.overflow
    finding.kind = "heap-buffer-underflow"
    finding.relation = nil
    finding.distance = nil
    finding.offset = -1
    #expect(
      renderer.render(finding).contains(
        " is 1 byte before the start of block #7 (13 bytes, malloc)"))
  }

  @Test func leaksShowSizeCountAndTheAllocationStack() {
    var leak = FindingRecord(kind: "leak")
    leak.code = "SHOWUNFREED"
    leak.pid = 9
    leak.count = 3
    leak.bytes = 48
    leak.block = BlockRecord(
      index: 2, address: HexNumber(0x5000), size: 16, api: "malloc", state: "live", thread: 9)
    leak.allocationStack = [
      Self.frame(0x10, Self.preload, 0x10), Self.frame(0x20, "/src/p", 0x20, "lose", "/src/p.c", 5),
    ]
    let expected = """
      =================================================================
      ==9==ERROR: HeapPatrol: leak [SHOWUNFREED] 48 bytes in 3 blocks
        leak of 48 bytes in 3 blocks allocated (first: block #2, malloc, thread 9) at:
          #0 0x0000000000000020 in lose p.c:5 (/src/p+0x20)
      SUMMARY: HeapPatrol: leak p.c:5 in lose

      """
    #expect(renderer.render(leak) == expected)
  }

  @Test func findingsWithoutABlockUseThePreloadMessage() {
    var finding = FindingRecord(kind: "invalid-free")
    finding.code = "NOTALL"
    finding.address = HexNumber(0x7ffd_0000_0010)
    finding.pid = 1
    finding.thread = 1
    finding.message =
      "invalid-free: 0x00007ffd00000010 was not allocated by HeapPatrol (a stack address)"
    finding.accessStack = []
    let text = renderer.render(finding)
    #expect(
      text.contains("\n  0x00007ffd00000010 was not allocated by HeapPatrol (a stack address)\n"))
    #expect(text.contains("  released at:\n    <no stack recorded>\n"))
    #expect(text.hasSuffix("SUMMARY: HeapPatrol: invalid-free\n"))
  }

  @Test func heapPatrolFramesAreElidedOnlyFromTheTop() {
    let frames = [
      Self.frame(1, Self.preload, 1), Self.frame(2, "/x/prog", 2, "malloc"),
      Self.frame(3, "/x/prog", 3, "work"),
      Self.frame(4, Self.preload, 4),
    ]
    #expect(ReportRenderer.visibleFrames(frames).map(\.pc?.value) == [3, 4])
    // A stack made only of HeapPatrol frames is shown whole rather than emptied.
    #expect(ReportRenderer.visibleFrames([Self.frame(1, Self.preload, 1)]).count == 1)
  }

  @Test func summaryLineCountsKindsInOrderOfAppearance() {
    let kinds = ["heap-buffer-overflow", "leak", "leak"].map { FindingRecord(kind: $0) }
    #expect(
      ReportRenderer.summaryLine(kinds, program: "prog")
        == "heappatrol: 3 findings (1 heap-buffer-overflow, 2 leak) in prog")
    #expect(
      ReportRenderer.summaryLine([FindingRecord(kind: "double-free")], program: "p")
        == "heappatrol: 1 finding (1 double-free) in p")
    #expect(ReportRenderer.summaryLine([], program: "prog") == "heappatrol: no findings")
  }
}
