import Foundation
import HeapPatrol
import HeapPatrolTool
import Testing

#if canImport(FoundationXML)
  import FoundationXML
#endif

/// `heappatrol trace`, `mleak`, `profile` and `map` on the trace of a small C program whose
/// allocations are known exactly: build_list -> make_node allocates 5 x 24 bytes, make_buffer
/// allocates 100 and 4000 bytes, main frees two nodes and the 100-byte buffer, then exits (or, with
/// `kill`, dies by SIGKILL with 4 blocks, 4072 bytes, unfreed).
@Suite struct DepthCommandTests {
  static let program = """
    #include <signal.h>
    #include <stdlib.h>
    #include <string.h>

    __attribute__((noinline)) void *make_node(void) { return malloc(24); }
    __attribute__((noinline)) void *make_buffer(size_t n) { return malloc(n); }
    __attribute__((noinline)) void build_list(void *out[5]) {
      for (int i = 0; i < 5; i++) out[i] = make_node();
    }

    int main(int argc, char **argv) {
      void *nodes[5];
      build_list(nodes);
      void *small = make_buffer(100);
      void *big = make_buffer(4000);
      memset(big, 1, 4000);
      free(nodes[0]);
      free(nodes[1]);
      free(small);
      if (argc > 1 && strcmp(argv[1], "kill") == 0) raise(SIGKILL);
      if (argc > 1 && strcmp(argv[1], "overflow") == 0) ((char *)big)[4000] = 1;
      return 0;
    }
    """

  /// Compiles the program into `directory`, runs it under the preload with `trace=` (and `log=`), and
  /// returns the trace's path and how the program ended.
  static func tracedRun(_ argument: String?, directory: String) throws -> (
    trace: String, log: String, process: Process
  ) {
    let binary = (directory as NSString).appendingPathComponent("allocs")
    try TestSupport.compileC(
      program, to: binary, arguments: ["-g", "-O0", "-fno-omit-frame-pointer"])
    let trace = (directory as NSString).appendingPathComponent("run.trace")
    let log = (directory as NSString).appendingPathComponent("run.jsonl")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binary)
    process.arguments = argument.map { [$0] } ?? []
    var environment = ProcessInfo.processInfo.environment
    environment["LD_PRELOAD"] = try TestSupport.product(InstallLayout.preloadLibraryName)
    environment["HEAPPATROL_OPTIONS"] = "text_report=0,trace=\(trace),log=\(log)"
    process.environment = environment
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    return (trace, log, process)
  }

  static func decode<T: Decodable>(_ type: T.Type, _ run: CLIRun) throws -> T {
    try JSONDecoder().decode(T.self, from: Data(run.standardOutput.utf8))
  }

  @Test func traceCountsTheProgramsEventsAndNamesTheirSites() throws {
    let directory = try TestSupport.makeTemporaryDirectory("depth2")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let run = try Self.tracedRun(nil, directory: directory)
    #expect(run.process.terminationStatus == 0)
    let workload = (directory as NSString).appendingPathComponent("w.txt")
    let result = try TestSupport.runHeapPatrol([
      "trace", run.trace, "--json", "--workload", workload,
    ])
    #expect(result.status == 0, "\(result.standardError)")
    let summary = try Self.decode(TraceSummary.self, result)
    #expect(summary.events == 10 && summary.allocations == 7 && summary.frees == 3)
    #expect(summary.eventsByAPI == ["malloc": 7, "free": 3])
    #expect(summary.allocatedBytes == 5 * 24 + 100 + 4000)
    #expect(summary.freedBytes == 2 * 24 + 100)
    #expect(summary.liveBytesAtEnd == 4072 && summary.liveBlocksAtEnd == 4)
    // The peak is reached by the 4000-byte allocation, the 7th event.
    #expect(summary.peakLiveBytes == 4220 && summary.peakEventIndex == 7)
    #expect(summary.threads.count == 1 && summary.unknownFrees == 0)
    #expect(summary.table.map(\.size) == [24, 24, 24, 24, 24, 100, 4000, 24, 24, 100])
    #expect(
      summary.table.prefix(5).allSatisfy {
        $0.site.hasPrefix("make_node /") && $0.site.hasSuffix("/allocs.c:5")
      })
    #expect(
      summary.table[5...6].allSatisfy {
        $0.site.hasPrefix("make_buffer /") && $0.site.hasSuffix("/allocs.c:6")
      })
    #expect(summary.table.suffix(3).allSatisfy { $0.site.hasPrefix("main /") })

    // The workload parses, maps the 7 blocks at their traced offsets and protects the 3 freed ones.
    let text = try String(contentsOfFile: workload, encoding: .utf8)
    let statements = text.split(separator: "\n").filter { !$0.hasPrefix("#") }
    #expect(statements.filter { $0.hasPrefix("map ") }.count == 7)
    #expect(statements.filter { $0.hasPrefix("protect ") }.count == 3)
    let simulated = try TestSupport.runHeapPatrol(["simulate", workload])
    #expect(simulated.status == 0, "\(simulated.standardError)")
    // One write per block page, all of them first touches.
    #expect(simulated.standardOutput.contains("minor faults:   7 "), "\(simulated.standardOutput)")

    let textRun = try TestSupport.runHeapPatrol(["trace", run.trace])
    #expect(textRun.standardOutput.contains("peak live:  4220 bytes after event #7"))
    #expect(textRun.standardOutput.contains("/allocs.c:6"))
  }

  @Test func mleakRebuildsTheUnfreedListOfAKilledProgram() throws {
    let directory = try TestSupport.makeTemporaryDirectory("depth2")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let run = try Self.tracedRun("kill", directory: directory)
    #expect(run.process.terminationReason == .uncaughtSignal && run.process.terminationStatus == 9)
    let result = try TestSupport.runHeapPatrol(["mleak", run.trace, "--json"])
    #expect(result.status == 1, "\(result.standardError)")
    let groups = try Self.decode([SiteGroup].self, result)
    #expect(groups.map(\.count) == [1, 3])
    #expect(groups.map(\.bytes) == [4000, 72])
    #expect(
      groups.map { $0.site.components(separatedBy: " ").first } == ["make_buffer", "make_node"])
    // make_node was called from build_list, called from main.
    #expect(
      groups[1].stack.prefix(3).map { $0.components(separatedBy: " ")[0] } == [
        "make_node", "build_list", "main",
      ])
    let text = try TestSupport.runHeapPatrol(["mleak", run.trace]).standardOutput
    #expect(text.contains("4072 bytes unfreed in 4 blocks from 2 sites"), "\(text)")
  }

  @Test func profileHasSitesHistogramLeaksAndTheCallGraph() throws {
    let directory = try TestSupport.makeTemporaryDirectory("depth2")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let run = try Self.tracedRun(nil, directory: directory)
    let dot = (directory as NSString).appendingPathComponent("graph.dot")
    let result = try TestSupport.runHeapPatrol(["profile", run.trace, "--json", "--dot", dot])
    #expect(result.status == 0, "\(result.standardError)")
    let profile = try Self.decode(AllocationProfile.self, result)
    #expect(profile.allocations == 7 && profile.bytes == 4220)
    #expect(
      profile.sites.map(\.allocations) == [2, 5] && profile.sites.map(\.bytes) == [4100, 120])
    // Default bounds 32 / 256 / 2048: 5 small (24), 1 medium (100), 0 large, 1 extra large (4000).
    #expect(profile.histogram.map(\.allocations) == [5, 1, 0, 1])
    #expect(profile.peakLiveBytes == 4220 && profile.peakEventIndex == 7)
    #expect(profile.leaks.map(\.bytes) == [4000, 72])
    let graph = try String(contentsOfFile: dot, encoding: .utf8)
    #expect(
      graph.contains("\"build_list\" -> \"make_node\" [label=\"120 bytes, 5 allocs\""), "\(graph)")
    #expect(graph.contains("\"main\" -> \"make_buffer\" [label=\"4100 bytes, 2 allocs\""))
    #expect(graph.contains("\"make_node\" -> \"malloc\""))

    // The bounds are inclusive and configurable.
    let bounded = try TestSupport.runHeapPatrol([
      "profile", run.trace, "--json", "--small", "24", "--medium", "100", "--large", "4000",
    ])
    #expect(
      try Self.decode(AllocationProfile.self, bounded).histogram.map(\.allocations) == [5, 1, 1, 0])
    #expect(try TestSupport.runHeapPatrol(["profile", run.trace, "--small", "300"]).status != 0)
  }

  @Test func mapDrawsBlocksGuardsAndTheFaultingAddressAsParsableSVG() throws {
    let directory = try TestSupport.makeTemporaryDirectory("depth2")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let run = try Self.tracedRun("overflow", directory: directory)
    #expect(run.process.terminationStatus != 0)
    let svg = (directory as NSString).appendingPathComponent("heap.svg")
    let result = try TestSupport.runHeapPatrol([
      "map", run.trace, "--svg", svg, "--finding", run.log,
    ])
    #expect(result.status == 0, "\(result.standardError)")
    // 7 blocks on a page each, each followed by its guard page; 3 of them freed.
    #expect(result.standardOutput.contains("4 live blocks (4072 bytes), 3 freed blocks"))
    #expect(
      result.standardOutput.contains("pages: 4 live, 3 freed, 7 guard"), "\(result.standardOutput)")
    // The one-byte overflow of the 4000-byte block hit the guard right after it.
    #expect(
      result.standardOutput.contains(
        "heap-buffer-overflow at 0x"), "\(result.standardOutput)")
    #expect(result.standardOutput.contains(": 0 bytes past the end of the 4000-byte block at 0x"))

    let elements = try SVGElementCounter.parse(svg)
    #expect(elements["svg"] == 1)
    // 14 page cells (7 block pages, 7 guards) + 7 block bars + 5 legend swatches + the background.
    #expect(elements["rect"] == 14 + 7 + 5 + 1)
    #expect(elements["path"] == 1)  // the faulting address

    let early = try TestSupport.runHeapPatrol(["map", run.trace, "--svg", svg, "--at", "5"])
    #expect(
      early.standardOutput.contains("after event #5: 5 live blocks (120 bytes), 0 freed blocks"))
    #expect(try SVGElementCounter.parse(svg)["rect"] == 10 + 5 + 5 + 1)
    #expect(
      try TestSupport.runHeapPatrol(["map", run.trace, "--svg", svg, "--at", "99"]).status != 0)
  }
}

/// Parses an SVG file with Foundation's XMLParser and counts its elements by name.
final class SVGElementCounter: NSObject, XMLParserDelegate {
  var counts: [String: Int] = [:]

  func parser(
    _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
    qualifiedName: String?, attributes: [String: String] = [:]
  ) {
    counts[elementName, default: 0] += 1
  }

  static func parse(_ path: String) throws -> [String: Int] {
    let parser = try #require(XMLParser(contentsOf: URL(fileURLWithPath: path)))
    let counter = SVGElementCounter()
    parser.delegate = counter
    let parsed = parser.parse()
    #expect(parsed, "\(path) does not parse: \(String(describing: parser.parserError))")
    return counter.counts
  }
}
