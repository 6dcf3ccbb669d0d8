import Foundation
import HeapPatrol
import HeapPatrolTool
import Testing

/// The preload's checked memory operations on the C fixtures: each bug is reported at the call (the
/// fixture's function and marked line), with the block, the right kind and READ/WRITE.
@Suite struct DepthMemoryOperationTests {
  static let buggy: [FixtureExpectation] = [
    .init(
      language: .c, argument: "memcpy-overflow", kind: "memory-operation-overflow",
      access: "WRITE", blockSize: 16, offset: 16, function: "memcpy_overflow",
      checksAllocationStack: true),
    .init(
      language: .c, argument: "memcpy-read-overflow", kind: "memory-operation-overflow",
      access: "READ", blockSize: 10, offset: 10, function: "memcpy_read_overflow",
      checksAllocationStack: true),
    .init(
      language: .c, argument: "strcpy-overflow", kind: "memory-operation-overflow",
      access: "WRITE", blockSize: 8, offset: 8, function: "strcpy_overflow",
      checksAllocationStack: true),
    .init(
      language: .c, argument: "memset-overflow", kind: "memory-operation-overflow",
      access: "WRITE", blockSize: 24, offset: 24, function: "memset_overflow",
      checksAllocationStack: true),
    .init(
      language: .c, argument: "strlen-overflow", kind: "memory-operation-overflow",
      access: "READ", blockSize: 12, offset: 12, function: "strlen_overflow",
      checksAllocationStack: true),
    .init(
      language: .c, argument: "memcpy-overlap", kind: "memcpy-param-overlap", access: "WRITE",
      blockSize: 64, offset: 8, function: "memcpy_overlap", checksAllocationStack: true),
    .init(
      language: .c, argument: "strcpy-after-free", kind: "use-after-free", access: "WRITE",
      blockSize: 32, offset: 0, function: "strcpy_after_free", checksAllocationStack: true,
      checksFreeStack: true),
    .init(
      language: .c, argument: "memcpy-chk-overflow", kind: "memory-operation-overflow",
      access: "WRITE", blockSize: 16, offset: 16, function: "memcpy_chk_overflow",
      checksAllocationStack: true),
  ]

  @Test(arguments: buggy)
  func memoryOperationBugIsReportedAtTheCall(_ expectation: FixtureExpectation) throws {
    try FixtureIntegrationTests().buggyFixtureIsReported(expectation)
  }

  /// What each fixture's report says about the operation: its C name, the access and the range it
  /// was about to touch (relative to the block), and for the overlap the source.
  struct OperationExpectation: Sendable, CustomTestStringConvertible {
    var argument: String
    var operation: String
    var access: String
    var bytes: UInt64
    var offset: UInt = 0
    var testDescription: String { argument }
  }

  static let operations: [OperationExpectation] = [
    .init(argument: "memcpy-overflow", operation: "memcpy", access: "WRITE", bytes: 17),
    .init(argument: "memcpy-read-overflow", operation: "memcpy", access: "READ", bytes: 11),
    .init(argument: "strcpy-overflow", operation: "strcpy", access: "WRITE", bytes: 9),
    .init(argument: "memset-overflow", operation: "memset", access: "WRITE", bytes: 25),
    // strlen reads at least one byte past the 12 in the block to find no terminator there.
    .init(argument: "strlen-overflow", operation: "strlen", access: "READ", bytes: 13),
    .init(
      argument: "memcpy-overlap", operation: "memcpy", access: "WRITE", bytes: 32, offset: 8),
    .init(argument: "strcpy-after-free", operation: "strcpy", access: "WRITE", bytes: 9),
    .init(argument: "memcpy-chk-overflow", operation: "__memcpy_chk", access: "WRITE", bytes: 20),
  ]

  @Test(arguments: operations)
  func reportNamesTheOperationAndItsRange(_ expected: OperationExpectation) throws {
    let run = try TestSupport.runHeapPatrol([
      "run", "--", try TestSupport.product("hp-fixture-c"), expected.argument,
    ])
    let finding = try #require(run.findings.first, "\(run.standardError)")
    let block = try #require(finding.block?.address?.value)
    #expect(finding.operation == expected.operation)
    #expect(finding.operationBytes == expected.bytes)
    #expect(finding.operationAddress?.value == block + UInt64(expected.offset))
    let range = "\(expected.bytes) bytes"
    let line: String
    if expected.argument == "memcpy-overlap" {
      #expect(finding.operationSource?.value == block)
      line =
        "  operation: memcpy (\(range) from \(finding.operationSource?.paddedHex ?? "") to "
        + "\(finding.operationAddress?.paddedHex ?? ""))"
    } else {
      line =
        "  operation: \(expected.operation) (\(expected.access) of \(range) at "
        + "\(finding.operationAddress?.paddedHex ?? ""))"
    }
    #expect(run.standardError.contains(line + "\n"), "\(line)\n\(run.standardError)")
  }

  /// The preload's own renderer (what a program run without the CLI prints): the operation line in
  /// the text report, the operation fields in the JSON line, nothing of either for other findings.
  @Test func rendererWritesTheOperation() throws {
    let block = BlockSnapshot(
      index: 3, address: 0x1000, size: 16, alignment: 16, api: .malloc, state: .live,
      allocationThread: 7, allocationStack: .none)
    let overflow = Finding(
      kind: .memoryOperationOverflow, access: .write, address: 0x1010, block: block,
      relation: .pastEnd, thread: 7, operation: .memcpy, operationAddress: 0x1000,
      operationBytes: 17)
    let overlap = Finding(
      kind: .memcpyParamOverlap, access: .write, address: 0x1008, block: block, thread: 7,
      detail: 0x1000, bytes: 8, operation: .strcpyChk, operationAddress: 0x1008, operationBytes: 8)
    let fault = Finding(
      kind: .heapBufferOverflow, access: .read, address: 0x1010, block: block, relation: .pastEnd,
      thread: 7)

    #expect(
      Self.render(overflow, json: false).contains(
        "\n  operation: memcpy (WRITE of 17 bytes at 0x0000000000001000)\n  accessed at:\n"))
    #expect(
      Self.render(overlap, json: false).contains(
        "\n  operation: __strcpy_chk (8 bytes from 0x0000000000001000 to 0x0000000000001008)\n"))
    #expect(!Self.render(fault, json: false).contains("operation"))

    let json = try #require(
      try JSONSerialization.jsonObject(with: Data(Self.render(overlap, json: true).utf8))
        as? [String: Any])
    #expect(json["operation"] as? String == "__strcpy_chk")
    #expect(json["operationAddress"] as? String == "0x1008")
    #expect(json["operationBytes"] as? Int == 8)
    #expect(json["operationSource"] as? String == "0x1000")
    let plain = try #require(
      try JSONSerialization.jsonObject(with: Data(Self.render(fault, json: true).utf8))
        as? [String: Any])
    #expect(plain["operation"] == nil && plain["operationBytes"] == nil)
  }

  static func render(_ finding: Finding, json: Bool) -> String {
    let capacity = 4096
    let bytes = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
    defer { bytes.deallocate() }
    var out = ReportBuffer(base: bytes, capacity: capacity)
    let renderer = FindingRenderer(depot: nil, modules: nil, pid: 1)
    if json {
      renderer.renderJSON(finding, into: &out)
    } else {
      renderer.renderText(finding, into: &out)
    }
    return String(decoding: out.bytes, as: UTF8.self)
  }

  @Test func everyCheckedOperationInBoundsRunsClean() throws {
    let run = try TestSupport.runHeapPatrol([
      "run", "--", try TestSupport.product("hp-fixture-c"), "good-memops",
    ])
    #expect(run.status == 0 && run.findings.isEmpty, "\(run.standardError)")
  }

  /// Without the checks, the one-byte strcpy overrun lands in the block's canary slack: it is only
  /// found when the block is freed, as canary corruption at the free, not at the strcpy.
  @Test func withoutTheChecksTheOverrunIsOnlyFoundLater() throws {
    let run = try TestSupport.runHeapPatrol([
      "run", "--options", "check_memops=0", "--", try TestSupport.product("hp-fixture-c"),
      "strcpy-overflow",
    ])
    #expect(run.findings.map(\.kind) == ["canary-corruption"], "\(run.standardError)")
  }
}
