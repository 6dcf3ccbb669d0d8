import ArgumentParser
import Foundation
import HeapPatrol

/// `heappatrol map FILE --svg OUT.svg`
struct MapCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "map",
    abstract:
      "Draw the heap's address space at one event of a trace: live and freed blocks, guards.",
    discussion: """
      Replays the trace (trace=FILE) up to --at (default: its end) and draws every page that holds \
      a live or freed block, and the guard page after each block's page run, in rows of 32 pages; \
      long unused stretches are collapsed. --finding marks where each finding's faulting address \
      fell relative to its block (a log written with log=FILE or `heappatrol run --json`).
      """)

  @Argument(help: ArgumentHelp("The trace file.", valueName: "file"))
  var file: String

  @Option(help: ArgumentHelp("Write the map as SVG to OUT.", valueName: "out"))
  var svg: String

  @Option(
    help: ArgumentHelp(
      "Draw the heap right after this event (default: the end).", valueName: "event"))
  var at: UInt64?

  @Option(
    help: ArgumentHelp(
      "A JSON-lines findings log whose faulting addresses to mark.", valueName: "log"))
  var finding: String?

  func run() throws {
    try exitWithStatus {
      let trace = try TraceFile.load(file)
      if let at, !trace.events.contains(where: { $0.index == at }) {
        throw CheckError(
          "\(file) has no event #\(at) (events #1...#\(trace.events.last?.index ?? 0))")
      }
      var map = HeapMap(trace, through: at)
      if let finding {
        guard FileManager.default.fileExists(atPath: finding) else {
          throw CheckError("\(finding): no such file")
        }
        map.mark(LogReader.read(file: finding).findings.map(\.record))
      }
      do {
        try map.svg.write(toFile: svg, atomically: true, encoding: .utf8)
      } catch {
        throw CheckError("\(svg): \(error.localizedDescription)")
      }
      print(map.summary(source: file), terminator: "")
      return 0
    }
  }
}
