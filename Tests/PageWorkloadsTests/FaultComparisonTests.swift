import Foundation
import PageSimulator
import PageSpace
import Testing

@testable import PageWorkloads

#if canImport(FoundationXML)
  import FoundationXML
#endif

/// The package's built products (`swift test` builds the `heappatrol` executable next to the test
/// bundle).
enum Products {
  static let directory: String = {
    let executable =
      (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    return (executable as NSString).deletingLastPathComponent
  }()

  static func path(_ name: String) throws -> String {
    let path = (directory as NSString).appendingPathComponent(name)
    guard FileManager.default.isExecutableFile(atPath: path) else {
      Issue.record("\(path) is missing: `swift build --product \(name)` with the same scratch path")
      throw CancellationError()
    }
    return path
  }

  /// Runs a product; returns its exit status and standard output.
  static func run(_ name: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try path(name))
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
  }
}

@Suite("Real against simulated")
struct FaultComparisonTests {
  /// The issue's bar: every built-in workload, real kernel against simulator, no mismatch. Each
  /// workload runs real in a fresh `heappatrol faults --child` process (single-threaded, so `fork`
  /// and RUSAGE_SELF are exact), and the simulation runs in that same command.
  @Test(.enabled(if: isLinux, "real fault counts need Linux"))
  func builtinWorkloadsMatchTheKernel() throws {
    let (status, output) = try Products.run("heappatrol", ["faults", "--json"])
    struct Row: Decodable {
      var workload: String
      var step: String
      var realMinor: UInt64?
      var realMajor: UInt64?
      var simMinor: UInt64
      var simMajor: UInt64
      var realVMAs: Int?
      var simVMAs: Int
      var simulatedOnly: Bool
      var match: Bool
    }
    let rows = try output.split(separator: "\n").map {
      try JSONDecoder().decode(Row.self, from: Data($0.utf8))
    }
    for row in rows where !row.match {
      Issue.record(
        "\(row.workload) / \(row.step): real \(row.realMinor ?? 0)/\(row.realMajor ?? 0) VMAs \(row.realVMAs ?? -1), simulated \(row.simMinor)/\(row.simMajor) VMAs \(row.simVMAs)"
      )
    }
    #expect(status == 0)
    // Every built-in workload reported, and only file steps are simulated-only.
    #expect(Set(rows.map(\.workload)) == Set(BuiltinWorkloads.all.map(\.name)))
    for row in rows {
      #expect(row.simulatedOnly == row.workload.hasPrefix("file-"), "\(row.workload) / \(row.step)")
      if !row.simulatedOnly { #expect(row.realMinor != nil && row.realVMAs != nil) }
    }
    // Spot checks against kernel-semantics §1 (the table's numbers, not the simulator's).
    func minor(_ workload: String, _ step: String) -> UInt64? {
      rows.first { $0.workload == workload && $0.step == step }?.realMinor
    }
    #expect(minor("b-read-then-write-1024", "then write each page") == 1024)
    #expect(
      minor("l4-mlock-over-hole-1024", "mlock over [RW N/4][NONE N/4][RW N/2] (ENOMEM)") == 256)
    #expect(minor("h-fork-cow", "parent: write all 64 pre-fork pages") == 64)
    #expect(minor("l2-populate-advice-16", "mlock on untouched PROT_NONE (ENOMEM)") == 0)
  }

  @Test(.enabled(if: isLinux, "real fault counts need Linux"))
  func aMismatchFailsTheCommand() throws {
    // A workload file whose real and simulated runs cannot agree is not available by construction,
    // so check the exit status path with an unknown workload (an error) and the comparison itself.
    let (status, _) = try Products.run("heappatrol", ["faults", "no-such-workload-or-file"])
    #expect(status != 0)
    var real = StepResult(label: "s", process: "")
    real.minorFaults = 3
    real.vmaCount = 1
    var simulated = real
    #expect(
      FaultComparison.compare(workload: "w", real: [real], simulated: [simulated]).allSatisfy {
        $0.match
      })
    simulated.minorFaults = 2
    #expect(!FaultComparison.compare(workload: "w", real: [real], simulated: [simulated])[0].match)
    simulated.minorFaults = 3
    simulated.vmaCount = 2
    #expect(!FaultComparison.compare(workload: "w", real: [real], simulated: [simulated])[0].match)
    simulated.vmaCount = 1
    simulated.errors = ["line 1: lock a: ENOMEM"]
    #expect(!FaultComparison.compare(workload: "w", real: [real], simulated: [simulated])[0].match)
    // A missing step on one side is a mismatch, not a silent pass.
    #expect(
      !FaultComparison.compare(workload: "w", real: [real, real], simulated: [real])[1].match)
  }

  @Test func fileMappingsRunOnTheSimulatorOnly() throws {
    let workload = try BuiltinWorkloads.workload(BuiltinWorkloads.named("file-fault-around")!)
    let simulated = FaultComparison.simulate(workload)
    // kernel-semantics §2: order-0 hot cache 16 faults per 256 pages; cold 15 + 1 major.
    #expect(simulated.map(\.minorFaults) == [16, 15, 256])
    #expect(simulated.map(\.majorFaults) == [0, 1, 0])
    let rows = FaultComparison.compare(
      workload: workload.name,
      real: simulated.map { step in
        var real = StepResult(label: step.label, process: step.process)
        real.simulatedOnly = true
        return real
      }, simulated: simulated)
    #expect(rows.allSatisfy { $0.match && $0.simulatedOnly && $0.realMinor == nil })
  }

  @Test func simulatedForkFollowsTheCopyOnWriteRule() throws {
    let workload = try BuiltinWorkloads.workload(BuiltinWorkloads.named("h-fork-cow")!)
    let steps = FaultComparison.simulate(workload)
    #expect(
      steps.map(\.minorFaults) == [64, 0, 16, 0, 48, 16, 0, 64, 0, 16, 64, 64],
      "\(steps.map { "\($0.qualifiedLabel): \($0.minorFaults)" })")
    #expect(steps[1].process == "child" && steps.last?.process == "second")
  }
}

let isLinux: Bool = {
  #if os(Linux)
    true
  #else
    false
  #endif
}()

@Suite("Fault curves")
struct FaultCurveTests {
  func beladyCurves() throws -> [FaultCurve] {
    try TraceReplay.sweep(
      makeSource: { StringByteSource(BuiltinTraces.belady) }, sourceName: "belady",
      frames: 1...6, swapSlots: 64)
  }

  @Test func beladysAnomalyForFIFO() throws {
    let curves = try beladyCurves()
    let byPolicy = Dictionary(uniqueKeysWithValues: curves.map { ($0.policy, $0) })
    let fifo = try #require(byPolicy["fifo"])
    // The classic numbers: 9 faults with 3 frames, 10 with 4.
    #expect(fifo.points.map(\.faults) == [12, 12, 9, 10, 5, 5])
    #expect(fifo.anomalies == [4])
    let opt = try #require(byPolicy["opt"])
    let lru = try #require(byPolicy["lru"])
    #expect(opt.points.map(\.faults) == [12, 9, 7, 6, 5, 5])
    #expect(lru.anomalies.isEmpty && opt.anomalies.isEmpty)
    for (optimal, other) in zip(opt.points, lru.points) { #expect(optimal.faults <= other.faults) }
    let csv = FaultCurvePlot.csv(curves)
    #expect(csv.hasPrefix("frames,fifo,lru,clock,opt\n1,12,12,12,12\n"))
    #expect(csv.contains("\n3,9,10,9,7\n4,10,8,10,6\n"))
  }

  /// The SVG is well-formed XML with one curve per policy, labelled axes and a legend.
  @Test func svgPlotParses() throws {
    let curves = try beladyCurves()
    let svg = FaultCurvePlot.svg(curves, title: "Belady & friends <FIFO>")

    final class Collector: NSObject, XMLParserDelegate {
      var curves: [String: Int] = [:]  // policy -> point count
      var texts: [String: String] = [:]  // id -> text
      var legend: [String] = []
      var rootName: String?
      private var currentID: String?
      private var currentClass: String?
      private var buffer = ""
      func parser(
        _ parser: XMLParser, didStartElement name: String, namespaceURI: String?,
        qualifiedName: String?, attributes: [String: String] = [:]
      ) {
        if rootName == nil { rootName = name }
        if name == "polyline", attributes["class"] == "curve",
          let policy = attributes["data-policy"]
        {
          curves[policy] = (attributes["points"] ?? "").split(separator: " ").count
        }
        if name == "text" {
          currentID = attributes["id"]
          currentClass = attributes["class"]
          buffer = ""
        }
      }
      func parser(_ parser: XMLParser, foundCharacters string: String) { buffer += string }
      func parser(
        _ parser: XMLParser, didEndElement name: String, namespaceURI: String?,
        qualifiedName: String?
      ) {
        guard name == "text" else { return }
        if let currentID { texts[currentID] = buffer }
        if currentClass == "legend" { legend.append(buffer) }
        if currentID == nil, currentClass == nil, texts["title"] == nil { texts["title"] = buffer }
        currentID = nil
        currentClass = nil
      }
    }
    let parser = XMLParser(data: Data(svg.utf8))
    let collector = Collector()
    parser.delegate = collector
    #expect(parser.parse(), "\(parser.parserError.map { "\($0)" } ?? "")")
    #expect(collector.rootName == "svg")
    #expect(collector.curves == ["fifo": 6, "lru": 6, "clock": 6, "opt": 6])
    #expect(collector.legend == ["fifo", "lru", "clock", "opt"])
    #expect(collector.texts["x-label"] == "memory (frames)")
    #expect(collector.texts["y-label"] == "page faults (minor + major)")
    #expect(collector.texts["title"] == "Belady & friends <FIFO>")
  }
}

@Suite("Streaming replay")
struct StreamingTests {
  /// An address trace generated on the fly: `count` lines over `pages` pages, never held whole.
  final class GeneratedTrace: ByteSource {
    var remaining: Int
    let pages: UInt64
    var generator = SplitMix64(seed: 11)
    var pending: [UInt8] = []
    var pendingOffset = 0
    init(count: Int, pages: UInt64) {
      remaining = count
      self.pages = pages
    }
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
      var written = 0
      while written < buffer.count {
        if pendingOffset == pending.count {
          guard remaining > 0 else { break }
          remaining -= 1
          let value = generator.next()
          let page = value % pages
          pending = Array(
            "\((value >> 40) & 1 == 0 ? "R" : "W") 0x\(String(page * 4096, radix: 16))\n".utf8)
          pendingOffset = 0
        }
        buffer[written] = pending[pendingOffset]
        pendingOffset += 1
        written += 1
      }
      return written
    }
  }

  /// A workload generated on the fly: one region, then `count` statements (writes, and every
  /// 1000th an advice the kernel rejects with EINVAL).
  final class GeneratedWorkload: ByteSource {
    var produced = 0
    let count: Int
    var pending = Array("map a 64p\n".utf8)
    var pendingOffset = 0
    init(count: Int) { self.count = count }
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
      var written = 0
      while written < buffer.count {
        if pendingOffset == pending.count {
          guard produced < count else { break }
          produced += 1
          let line =
            produced % 1000 == 0 ? "advise a 0..1 advice_12345\n" : "write a \(produced % 64)\n"
          pending = Array(line.utf8)
          pendingOffset = 0
        }
        buffer[written] = pending[pendingOffset]
        pendingOffset += 1
        written += 1
      }
      return written
    }
  }

  /// Peak resident memory of this process (VmHWM), in KiB.
  static func peakResidentKiB() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
      let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
    else { return -1 }
    return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? -1
  }

  /// 2,000,000 accesses replay in the memory that 100,000 needed: the reader holds one 64 KiB
  /// chunk, the simulator holds the working set, and nothing grows with the trace. Run in a
  /// fresh process so that the peak RSS is this replay's alone.
  @Test(.enabled(if: isLinux, "reads /proc/self/status"))
  func twoMillionAccessesInBoundedMemory() async {
    let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      func replay(_ count: Int) -> ReplayResult {
        try! TraceReplay.replayAddresses(
          makeSource: { StreamingTests.GeneratedTrace(count: count, pages: 512) },
          sourceName: "generated", frames: 256, swapSlots: 1024, policy: .clock)
      }
      let short = replay(100_000)
      precondition(short.accesses == 100_000 && short.majorFaults > 0)
      let afterShort = StreamingTests.peakResidentKiB()
      let long = replay(2_000_000)
      precondition(long.accesses == 2_000_000, "replayed \(long.accesses)")
      let afterLong = StreamingTests.peakResidentKiB()
      // The trace text is ~28 MB; holding it (or its accesses) would add far more than 4 MiB.
      precondition(
        afterShort > 0 && afterLong - afterShort < 4096, "\(afterShort) -> \(afterLong) KiB")
    }
    if let result, !result.standardErrorContent.isEmpty {
      Issue.record(
        "the child said: \(String(decoding: result.standardErrorContent, as: UTF8.self))")
    }
  }
}
