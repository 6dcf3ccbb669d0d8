import ArgumentParser
import Foundation
import HeapPatrol

/// `heappatrol mleak FILE`: mpatrol's mleak over a trace.
struct MleakCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mleak",
    abstract: "The blocks a traced program never freed, by allocation site, largest first.",
    discussion: """
      Rebuilds the unfreed list by replaying the trace (trace=FILE), so it works for a program that \
      died before exit (killed by any signal: the trace is complete up to its last event). Blocks \
      still reachable at exit are listed too: a trace does not know about pointers.

      Exit status: 0 when every block was freed, 1 otherwise.
      """)

  @Argument(help: ArgumentHelp("The trace file.", valueName: "file"))
  var file: String

  @Flag(help: "Print the groups as one JSON array.")
  var json = false

  func run() throws {
    try exitWithStatus {
      let trace = try TraceFile.load(file)
      let replay = HeapReplay(trace)
      let symbols = TraceSymbols(trace, symbolizer: .discover())
      let groups = SiteGroup.group(replay.liveBlocks, symbols: symbols)
      if json {
        try printJSONLine(groups)
      } else {
        print(Self.text(groups, replay: replay, trace: trace, source: file), terminator: "")
      }
      return groups.isEmpty ? 0 : 1
    }
  }

  static func text(_ groups: [SiteGroup], replay: HeapReplay, trace: TraceFile, source: String)
    -> String
  {
    var lines = [
      "mleak \(source): pid \(trace.pid), \(trace.events.count) events, last #\(replay.lastEventIndex) at \(formatDuration(replay.lastTime))"
        + (trace.trailingBytes > 0 ? " (cut short: \(trace.trailingBytes) bytes ignored)" : "")
    ]
    let blocks = groups.reduce(0) { $0 + $1.count }
    let bytes = groups.reduce(UInt64(0)) { $0 + $1.bytes }
    guard !groups.isEmpty else {
      lines.append("no unfreed blocks")
      return lines.joined(separator: "\n") + "\n"
    }
    lines.append(
      "\(bytes) bytes unfreed in \(blocks) block\(blocks == 1 ? "" : "s") from \(groups.count) site\(groups.count == 1 ? "" : "s"):"
    )
    for group in groups {
      lines.append("")
      lines.append(
        "\(group.bytes) bytes in \(group.count) block\(group.count == 1 ? "" : "s") allocated at \(group.site)"
      )
      for (number, frame) in group.stack.enumerated() { lines.append("    #\(number) \(frame)") }
      let shown = group.addresses.prefix(8).joined(separator: " ")
      lines.append(
        "    blocks: \(shown)"
          + (group.addresses.count > 8 ? " (+\(group.addresses.count - 8) more)" : ""))
    }
    return lines.joined(separator: "\n") + "\n"
  }
}
