import Foundation
import HeapPatrol
import HeapPatrolTool
import Testing

/// `trace=FILE` written by the preload and read back with `TraceFile`.
@Suite struct DepthTraceTests {
  static func tracedRun(_ argument: String, directory: String) throws -> TraceFile {
    let trace = (directory as NSString).appendingPathComponent("run.trace")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try TestSupport.product("hp-fixture-c"))
    process.arguments = [argument]
    var environment = ProcessInfo.processInfo.environment
    environment["LD_PRELOAD"] = try TestSupport.product(InstallLayout.preloadLibraryName)
    environment["HEAPPATROL_OPTIONS"] = "text_report=0,trace=\(trace)"
    process.environment = environment
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: trace)))
    return try TraceFile(bytes: bytes)
  }

  @Test func theLeakFixturesAllocationsAreTracedWithTheirStacks() throws {
    let directory = try TestSupport.makeTemporaryDirectory("trace")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let trace = try Self.tracedRun("leak", directory: directory)
    #expect(trace.trailingBytes == 0)
    let allocations = trace.events.filter { $0.kind == .allocation && $0.size == 16 }
    #expect(allocations.count == 3, "\(trace.events)")
    #expect(trace.events.map(\.index) == Array(1...UInt64(trace.events.count)))
    for event in allocations {
      #expect(event.api == .malloc && event.address != 0 && event.address % 16 == 0)
      let frames = try #require(trace.stacks[event.stack], "stack \(event.stack) not in the trace")
      let first = try #require(frames.first)
      #expect(first.module.flatMap { trace.modules[$0] }?.hasSuffix("/hp-fixture-c") == true)
    }
    // Times never go backwards.
    #expect(zip(trace.events, trace.events.dropFirst()).allSatisfy { $0.time <= $1.time })
  }

  @Test func freesAndReallocsAreTraced() throws {
    let directory = try TestSupport.makeTemporaryDirectory("trace")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let trace = try Self.tracedRun("good-realloc", directory: directory)
    let reallocations = trace.events.filter { $0.kind == .reallocation }
    #expect(!reallocations.isEmpty)
    // Every realloc moves a block that an earlier event handed out.
    var live = Set<UInt64>()
    for event in trace.events {
      switch event.kind {
      case .allocation: if event.address != 0 { live.insert(event.address) }
      case .free: live.remove(event.address)
      case .reallocation:
        #expect(live.contains(event.oldAddress), "realloc of an unknown block: \(event)")
        live.remove(event.oldAddress)
        if event.address != 0 { live.insert(event.address) }
      }
    }
  }

  @Test func aTruncatedTraceReadsUpToItsLastWholeRecord() throws {
    let directory = try TestSupport.makeTemporaryDirectory("trace")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = (directory as NSString).appendingPathComponent("run.trace")
    _ = try Self.tracedRun("leak", directory: directory)
    let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    let cut = try TraceFile(bytes: Array(bytes.dropLast(10)))
    #expect(cut.trailingBytes == 54)
    #expect(throws: TraceFile.ReadError.self) { try TraceFile(bytes: Array("not a trace".utf8)) }
  }
}
