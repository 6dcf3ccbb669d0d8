import ArgumentParser
import Foundation
import HeapPatrol

/// `heappatrol trace FILE`
struct TraceCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "trace",
    abstract: "Statistics and the table of events of an allocation trace (trace=FILE).",
    discussion: """
      FILE is written by HEAPPATROL_OPTIONS=trace=FILE. Sites are symbolized while the modules still \
      exist at their recorded paths. --workload writes the allocation pattern as a page workload for \
      `heappatrol faults` / `simulate` (see docs/depth.md for what it approximates).
      """)

  @Argument(help: ArgumentHelp("The trace file.", valueName: "file"))
  var file: String

  @Flag(help: "Print one JSON object (statistics and events) instead of text.")
  var json = false

  @Option(
    help: ArgumentHelp("Write the allocation pattern as a page workload to OUT.", valueName: "out"))
  var workload: String?

  func run() throws {
    try exitWithStatus {
      let trace = try TraceFile.load(file)
      if let workload {
        let text = TraceWorkload.text(for: trace, source: file)
        do {
          try text.write(toFile: workload, atomically: true, encoding: .utf8)
        } catch {
          throw CheckError("\(workload): \(error.localizedDescription)")
        }
      }
      let summary = TraceSummary(trace, symbols: TraceSymbols(trace, symbolizer: .discover()))
      if json {
        try printJSONLine(summary)
      } else {
        print(summary.text(source: file), terminator: "")
      }
      return 0
    }
  }
}
