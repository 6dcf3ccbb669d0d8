import Foundation
import HeapPatrolTool
import Testing

/// What running one buggy fixture case under `heappatrol run` must report.
struct FixtureExpectation: Sendable, CustomTestStringConvertible {
  enum Language: Sendable { case c, cxx, swift }

  var language: Language
  var argument: String
  var kind: String
  var access: String? = nil
  var blockSize: UInt64? = nil
  var offset: Int? = nil
  var options: String? = nil
  /// The fixture function the stacks must name (C: exactly; C++/Swift: the demangled name contains it).
  var function: String
  /// Marker name in the source ("hp:bug NAME", "hp:alloc NAME", "hp:free NAME"); defaults to `argument`.
  var marker: String? = nil
  var checksAllocationStack = false
  var checksFreeStack = false

  var program: String {
    switch language {
    case .c: "hp-fixture-c"
    case .cxx: "hp-fixture-cxx"
    case .swift: "hp-fixture-swift"
    }
  }

  var source: String {
    switch language {
    case .c: "Fixtures/CFixtures/main.c"
    case .cxx: "Fixtures/CXXFixtures/main.cpp"
    case .swift: "Fixtures/SwiftFixtures/main.swift"
    }
  }

  var testDescription: String { "\(program) \(argument)" }

  func names(_ frame: StackFrame) -> Bool {
    guard let name = frame.function else { return false }
    return language == .c ? name == function : name.contains(function)
  }
}

/// `heappatrol run` on every buggy fixture: the finding's kind, access, block size and offset, and that
/// the access, allocation and free stacks name the fixture's function at the marked source line.
/// These need the real libHeapPatrolPreload.so, built next to the test bundle.
@Suite struct FixtureIntegrationTests {
  static let buggy: [FixtureExpectation] = [
    .init(
      language: .c, argument: "heap-buffer-overflow-write", kind: "heap-buffer-overflow",
      access: "WRITE",
      blockSize: 32, offset: 32, function: "overflow_write", checksAllocationStack: true),
    .init(
      language: .c, argument: "heap-buffer-overflow-read", kind: "heap-buffer-overflow",
      access: "READ",
      blockSize: 64, offset: 70, function: "overflow_read", checksAllocationStack: true),
    .init(
      language: .c, argument: "heap-buffer-underflow", kind: "heap-buffer-underflow",
      access: "WRITE",
      blockSize: 32, offset: -4, options: "placement=lower", function: "underflow_write",
      checksAllocationStack: true),
    .init(
      language: .c, argument: "use-after-free-read", kind: "use-after-free", access: "READ",
      blockSize: 48,
      offset: 8, function: "use_after_free_read", checksAllocationStack: true, checksFreeStack: true
    ),
    .init(
      language: .c, argument: "use-after-free-write", kind: "use-after-free", access: "WRITE",
      blockSize: 48,
      offset: 40, function: "use_after_free_write", checksAllocationStack: true,
      checksFreeStack: true),
    .init(
      language: .c, argument: "double-free", kind: "double-free", blockSize: 24, offset: 0,
      function: "double_free", checksAllocationStack: true, checksFreeStack: true),
    .init(
      language: .c, argument: "invalid-free-stack", kind: "invalid-free",
      function: "invalid_free_stack"),
    .init(
      language: .c, argument: "invalid-free-global", kind: "invalid-free",
      function: "invalid_free_global"),
    .init(
      language: .c, argument: "interior-free", kind: "interior-free", blockSize: 64, offset: 16,
      function: "interior_free", checksAllocationStack: true),
    .init(
      language: .c, argument: "canary-corruption", kind: "canary-corruption", access: "WRITE",
      blockSize: 13,
      function: "canary_corruption", checksAllocationStack: true),
    .init(
      language: .c, argument: "out-of-memory", kind: "out-of-memory", options: "limit=16m",
      function: "out_of_memory"),
    .init(
      language: .c, argument: "size-overflow", kind: "size-overflow",
      options: "report_size_overflow=1",
      function: "size_overflow"),
    .init(
      language: .c, argument: "wild-access", kind: "wild-access", access: "READ",
      function: "wild_access"),
    .init(
      language: .c, argument: "use-after-free-in-child", kind: "use-after-free", access: "READ",
      blockSize: 48,
      offset: 8, function: "use_after_free_read", marker: "use-after-free-read",
      checksAllocationStack: true,
      checksFreeStack: true),
    .init(
      language: .cxx, argument: "malloc-delete", kind: "alloc-dealloc-mismatch", blockSize: 24,
      offset: 0,
      function: "malloc_then_delete", checksAllocationStack: true),
    .init(
      language: .cxx, argument: "new-array-delete", kind: "alloc-dealloc-mismatch", blockSize: 32,
      offset: 0,
      function: "new_array_then_delete", checksAllocationStack: true),
    .init(
      language: .cxx, argument: "new-free", kind: "alloc-dealloc-mismatch", blockSize: 24,
      offset: 0,
      function: "new_then_free", checksAllocationStack: true),
    .init(
      language: .cxx, argument: "new-delete-array", kind: "alloc-dealloc-mismatch", blockSize: 24,
      offset: 0,
      function: "new_then_delete_array", checksAllocationStack: true),
    .init(
      language: .swift, argument: "heap-buffer-overflow", kind: "heap-buffer-overflow",
      access: "WRITE",
      blockSize: 32, offset: 32, function: "overflowUnsafePointer()", checksAllocationStack: true),
    .init(
      language: .swift, argument: "use-after-free", kind: "use-after-free", access: "READ",
      blockSize: 64,
      offset: 16, function: "useAfterDeallocate()", checksAllocationStack: true,
      checksFreeStack: true),
    .init(
      language: .swift, argument: "double-free", kind: "double-free", blockSize: 40, offset: 0,
      function: "doubleDeallocate()", checksAllocationStack: true, checksFreeStack: true),
  ]

  /// The first frame of a stack inside the fixture executable (past the preload, libc and the Swift
  /// runtime): it must be the case's function at the marked line.
  static func checkFrame(
    _ stack: [StackFrame]?, _ what: String, marker: String, of expectation: FixtureExpectation,
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let line = try TestSupport.markerLine(marker, in: expectation.source)
    let frames = stack ?? []
    let frame = frames.first { ($0.module as NSString?)?.lastPathComponent == expectation.program }
    let described = frames.map { "\($0.function ?? "?") \($0.file ?? "?"):\($0.line ?? 0)" }
    #expect(
      frame.map(expectation.names) == true, "\(what) stack: \(described)",
      sourceLocation: sourceLocation)
    #expect(
      frame?.file?.hasSuffix(expectation.source) == true, "\(what) stack: \(described)",
      sourceLocation: sourceLocation)
    #expect(
      frame?.line == line, "\(what) stack should be at line \(line): \(described)",
      sourceLocation: sourceLocation)
  }

  @Test(arguments: buggy)
  func buggyFixtureIsReported(_ expectation: FixtureExpectation) throws {
    let program = try TestSupport.product(expectation.program)
    var arguments = ["run"]
    if let options = expectation.options { arguments += ["--options", options] }
    let run = try TestSupport.runHeapPatrol(arguments + ["--", program, expectation.argument])

    #expect(run.status == 99, "stderr:\n\(run.standardError)")
    try #require(
      run.findings.count == 1, "expected one \(expectation.kind), got:\n\(run.standardError)")
    let finding = run.findings[0]
    #expect(finding.kind == expectation.kind)
    #expect(finding.access == expectation.access)
    if let size = expectation.blockSize { #expect(finding.block?.size == size) }
    if let offset = expectation.offset { #expect(finding.offset == offset) }

    let marker = expectation.marker ?? expectation.argument
    try Self.checkFrame(finding.accessStack, "access", marker: "hp:bug \(marker)", of: expectation)
    if expectation.checksAllocationStack {
      try Self.checkFrame(
        finding.allocationStack, "allocation", marker: "hp:alloc \(marker)", of: expectation)
    }
    if expectation.checksFreeStack {
      try Self.checkFrame(finding.freeStack, "free", marker: "hp:free \(marker)", of: expectation)
    }

    // The human report on stderr: the header and the summary naming the function and file:line.
    #expect(run.standardError.contains("==ERROR: HeapPatrol: \(expectation.kind) ["))
    #expect(
      run.standardError.contains("heappatrol: 1 finding (1 \(expectation.kind)) in \(program)"))
    if expectation.language != .swift {
      let line = try TestSupport.markerLine("hp:bug \(marker)", in: expectation.source)
      #expect(
        run.standardError.contains(
          "SUMMARY: HeapPatrol: \(expectation.kind) \(expectation.source):\(line) in "))
    }
  }

  @Test func canaryCorruptionNamesTheFirstBadByte() throws {
    let run = try TestSupport.runHeapPatrol([
      "run", "--", try TestSupport.product("hp-fixture-c"), "canary-corruption",
    ])
    let finding = try #require(run.findings.first, "\(run.standardError)")
    let block = try #require(finding.block?.address?.value)
    #expect(finding.firstBadByte.map { $0.value &- block } == 14)
  }

  @Test func leakIsGroupedByAllocationStack() throws {
    let run = try TestSupport.runHeapPatrol([
      "run", "--", try TestSupport.product("hp-fixture-c"), "leak",
    ])
    #expect(run.status == 99, "\(run.standardError)")
    #expect(run.findings.map(\.kind) == ["leak"], "\(run.standardError)")
    let leak = try #require(run.findings.first)
    #expect(leak.count == 3)
    #expect(leak.bytes == 48)
    let expectation = FixtureExpectation(
      language: .c, argument: "leak", kind: "leak", function: "lose_pointers")
    try Self.checkFrame(
      leak.allocationStack, "allocation", marker: "hp:alloc leak", of: expectation)
    #expect(run.standardError.contains("leak of 48 bytes in 3 blocks allocated"))

    let withoutLeaks = try TestSupport.runHeapPatrol(
      ["run", "--no-leaks", "--", try TestSupport.product("hp-fixture-c"), "leak"])
    #expect(
      withoutLeaks.status == 0 && withoutLeaks.findings.isEmpty, "\(withoutLeaks.standardError)")
  }

  @Test func badAlignmentReturnsEINVALAndAtMostABadAlignmentFinding() throws {
    // POSIX fixes the observable part (EINVAL, no allocation); whether it is also a finding is the
    // preload's choice (mpatrol reports BADALN): if it reports, it must be this kind at this line.
    let run = try TestSupport.runHeapPatrol([
      "run", "--", try TestSupport.product("hp-fixture-c"), "bad-alignment",
    ])
    #expect(
      run.standardOutput.contains("posix_memalign(24) = 22 (EINVAL), block (nil)"),
      "\(run.standardOutput)")
    #expect(run.findings.allSatisfy { $0.kind == "bad-alignment" }, "\(run.standardError)")
    #expect(run.status == (run.findings.isEmpty ? 0 : 99))
    if let finding = run.findings.first {
      let expectation = FixtureExpectation(
        language: .c, argument: "bad-alignment", kind: "bad-alignment", function: "bad_alignment")
      try Self.checkFrame(
        finding.accessStack, "access", marker: "hp:bug bad-alignment", of: expectation)
    }
  }

  @Test func sizeOverflowIsSilentByDefault() throws {
    let run = try TestSupport.runHeapPatrol([
      "run", "--", try TestSupport.product("hp-fixture-c"), "size-overflow",
    ])
    #expect(run.status == 0 && run.findings.isEmpty, "\(run.standardError)")
    #expect(run.standardOutput.contains("= (nil), errno ENOMEM"))
  }

  @Test func theErrorExitCodeIsUsedWithFindings() throws {
    let run = try TestSupport.runHeapPatrol(
      [
        "run", "--error-exitcode", "42", "--", try TestSupport.product("hp-fixture-c"),
        "double-free",
      ])
    #expect(run.status == 42, "\(run.standardError)")
  }

  @Test func aForkedChildsFindingIsReportedWithItsOwnPid() throws {
    let run = try TestSupport.runHeapPatrol(
      ["run", "--", try TestSupport.product("hp-fixture-c"), "use-after-free-in-child"])
    let parentLine = try #require(
      run.standardOutput.split(separator: "\n").first { $0.hasPrefix("parent ") })
    let parent = Int(parentLine.dropFirst("parent ".count))
    #expect(run.findings.count == 1 && run.findings.first?.pid != parent, "\(run.standardError)")
  }

  static let good: [(program: String, argument: String)] = [
    ("hp-fixture-c", "good-realloc"), ("hp-fixture-c", "good-usable-size"),
    ("hp-fixture-c", "good-aligned"),
    ("hp-fixture-c", "good-many-blocks"), ("hp-fixture-c", "good-fork"),
    ("hp-fixture-c", "good-threads"),
    ("hp-fixture-c", "good-malloc0"), ("hp-fixture-c", "good-strings"),
    ("hp-fixture-c", "good-reachable-at-exit"),
    ("hp-fixture-cxx", "good"), ("hp-fixture-swift", "good"),
  ]

  @Test(arguments: good)
  func goodFixtureRunsClean(program: String, argument: String) throws {
    let path = try TestSupport.product(program)
    let run = try TestSupport.runHeapPatrol(["run", "--", path, argument])
    #expect(run.status == 0, "stdout:\n\(run.standardOutput)\nstderr:\n\(run.standardError)")
    #expect(run.findings.isEmpty, "\(run.standardError)")
    #expect(run.standardError.hasSuffix("heappatrol: no findings\n"), "\(run.standardError)")
  }

  @Test func theProgramsOwnFailureStatusIsKept() throws {
    // A usage error of the fixture (exit 2) with no heap bug: heappatrol exits 2 as well.
    let run = try TestSupport.runHeapPatrol([
      "run", "--", try TestSupport.product("hp-fixture-c"), "no-such-case",
    ])
    #expect(run.status == 2 && run.findings.isEmpty, "\(run.standardError)")
  }

  @Test func aBadOptionValueIsReportedByThePreload() throws {
    let run = try TestSupport.runHeapPatrol(
      [
        "run", "--options", "placement=sideways", "--", try TestSupport.product("hp-fixture-c"),
        "good-malloc0",
      ])
    #expect(run.status != 0)
    #expect(run.standardError.contains("placement"), "\(run.standardError)")
  }

  @Test func aMissingProgramIsAClearError() throws {
    let run = try TestSupport.runHeapPatrol(["run", "--", "/nonexistent/heappatrol-program"])
    #expect(run.status == 127)
    #expect(
      run.standardError == "heappatrol: cannot run /nonexistent/heappatrol-program: no such file\n")
    let unknown = try TestSupport.runHeapPatrol(["run", "--options", "bogus=1", "--", "true"])
    #expect(unknown.status == 2)
    #expect(unknown.standardError.contains("unknown option 'bogus'"))
  }

  @Test func reportReRendersASavedLog() throws {
    let directory = try TestSupport.makeTemporaryDirectory("report")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let log = (directory as NSString).appendingPathComponent("ci.jsonl")
    let program = try TestSupport.product("hp-fixture-c")
    // A raw log written by the preload itself (no CLI involved), as CI would keep it.
    let preloaded = Process()
    preloaded.executableURL = URL(fileURLWithPath: program)
    preloaded.arguments = ["double-free"]
    var environment = ProcessInfo.processInfo.environment
    environment["LD_PRELOAD"] = try TestSupport.product(InstallLayout.preloadLibraryName)
    environment["HEAPPATROL_OPTIONS"] = "text_report=0,log=\(log)"
    environment["SWIFT_BACKTRACE"] = "enable=no"
    preloaded.environment = environment
    preloaded.standardError = FileHandle.nullDevice
    try preloaded.run()
    preloaded.waitUntilExit()
    let contents = LogReader.read(file: log)
    try #require(contents.findings.count == 1, "the preload wrote no log at \(log)")
    #expect(contents.findings[0].record.accessStack?.contains { $0.function != nil } == false)

    let report = try TestSupport.runHeapPatrol(["report", log])
    #expect(report.status == 99)
    #expect(report.findings.first?.accessStack?.contains { $0.function == "double_free" } == true)
    let line = try TestSupport.markerLine("hp:bug double-free", in: "Fixtures/CFixtures/main.c")
    #expect(
      report.standardError.contains(
        "SUMMARY: HeapPatrol: double-free Fixtures/CFixtures/main.c:\(line) in double_free"))
    #expect(report.standardError.hasSuffix("heappatrol: 1 finding (1 double-free) in \(log)\n"))
    #expect(try TestSupport.runHeapPatrol(["report", "--error-exitcode", "3", log]).status == 3)
  }

  @Test func demoShowsEveryExpectedFinding() throws {
    _ = try TestSupport.product("hp-fixture-c")
    let run = try TestSupport.runHeapPatrol(["demo"])
    #expect(run.status == 0, "\(run.standardError)")
    #expect(
      run.standardError.contains(
        "all \(DemoCatalog.demos.count) demos produced their expected finding"))
    for demo in DemoCatalog.demos {
      #expect(run.standardError.contains("\(demo.expectedKind): \(demo.title)"))
    }
  }
}
