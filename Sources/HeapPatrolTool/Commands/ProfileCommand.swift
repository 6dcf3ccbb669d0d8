import ArgumentParser
import Foundation
import HeapPatrol

/// `heappatrol profile FILE`: mprof over a trace.
struct ProfileCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "profile",
    abstract:
      "Allocations and bytes by call site, size histogram, peak, leaks and call graph of a trace.",
    discussion: """
      FILE is written by HEAPPATROL_OPTIONS=trace=FILE. The histogram's bins use mpatrol's bounds: \
      small <= --small, medium <= --medium, large <= --large, extra large above. --dot writes the \
      call graph (caller -> callee, ending in the allocator, weighted by bytes) for Graphviz.
      """)

  @Argument(help: ArgumentHelp("The trace file.", valueName: "file"))
  var file: String

  @Option(help: "The largest small allocation, in bytes.")
  var small: UInt64 = 32

  @Option(help: "The largest medium allocation, in bytes.")
  var medium: UInt64 = 256

  @Option(help: "The largest large allocation, in bytes.")
  var large: UInt64 = 2048

  @Option(help: ArgumentHelp("Write the call graph as Graphviz dot to OUT.", valueName: "out"))
  var dot: String?

  @Flag(help: "Print one JSON object instead of text.")
  var json = false

  func validate() throws {
    guard small < medium, medium < large else {
      throw ValidationError("The bounds must grow: --small < --medium < --large.")
    }
  }

  func run() throws {
    try exitWithStatus {
      let trace = try TraceFile.load(file)
      let profile = AllocationProfile(
        trace, symbols: TraceSymbols(trace, symbolizer: .discover()),
        bounds: .init(small: small, medium: medium, large: large))
      if let dot {
        do {
          try profile.dot.write(toFile: dot, atomically: true, encoding: .utf8)
        } catch {
          throw CheckError("\(dot): \(error.localizedDescription)")
        }
      }
      if json {
        try printJSONLine(profile)
      } else {
        print(profile.text(source: file), terminator: "")
      }
      return 0
    }
  }
}
