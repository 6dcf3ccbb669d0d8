import ArgumentParser
import Foundation
import PageSimulator
import PageWorkloads

/// `heappatrol simulate`: replays a trace through the page simulator, streaming.
struct SimulateCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "simulate",
    abstract: "Replay a page trace through the simulator: faults by kind, hit ratio, swap traffic.",
    discussion: "TRACE is a workload-language file, a plain address trace (lines 'R 0x7f...' / "
      + "'W 0x...'), or a built-in trace (belady). See docs/faults-and-simulate.md.")

  @Argument(help: "The trace file or built-in trace name.")
  var trace: String

  @Option(help: "Physical frames (default: unlimited).")
  var frames: Int?

  @Option(help: "Replacement policy: fifo, lru, clock or opt.")
  var policy: String = "clock"

  @Option(help: "Swap slots (pages).")
  var swap: Int = 1 << 20

  @Flag(help: "Print one JSON object.")
  var json = false

  @Option(help: "Sweep memory sizes A..B (frames) for every policy.")
  var sweepFrames: String?

  @Option(help: "Write the sweep's fault curves as an SVG plot.")
  var plot: String?

  @Option(help: "Write the sweep's fault curves as CSV.")
  var csv: String?

  static func parsePolicy(_ text: String) throws -> ReplacementPolicy {
    switch text.lowercased() {
    case "fifo": return .fifo
    case "lru": return .lru
    case "clock": return .clock
    case "opt", "optimal": return .optimal
    default: throw ValidationError("unknown policy '\(text)' (fifo, lru, clock, opt)")
    }
  }

  func run() throws {
    let chosen = try Self.parsePolicy(policy)
    if let sweepFrames {
      let bounds = sweepFrames.components(separatedBy: "..")
      guard bounds.count == 2, let low = Int(bounds[0]), let high = Int(bounds[1]), low >= 1,
        high >= low
      else {
        throw ValidationError("--sweep-frames takes A..B with 1 <= A <= B")
      }
      var curves: [FaultCurve] = []
      let addressTrace = try isAddressTrace()
      for sweepPolicy in ReplacementPolicy.allCases {
        if sweepPolicy == .optimal && !addressTrace {
          FileHandle.standardError.write(
            Data((Self.optRefusal + "; the sweep leaves it out\n").utf8))
          continue
        }
        var points: [(frames: Int, faults: UInt64)] = []
        for count in low...high {
          points.append(
            (count, try replay(frames: count, policy: sweepPolicy, progress: false).totalFaults))
        }
        curves.append(FaultCurve(policy: sweepPolicy.shortName, points: points))
      }
      let csvText = FaultCurvePlot.csv(curves)
      if let csv { try csvText.write(toFile: csv, atomically: true, encoding: .utf8) }
      if let plot {
        let title = "Page faults vs memory: \((trace as NSString).lastPathComponent)"
        try FaultCurvePlot.svg(curves, title: title).write(
          toFile: plot, atomically: true, encoding: .utf8)
      }
      print(csvText, terminator: "")
      for curve in curves where !curve.anomalies.isEmpty {
        print(
          "Belady's anomaly: \(curve.policy) faults more with \(curve.anomalies.map(String.init).joined(separator: ", ")) frames than with one fewer"
        )
      }
      return
    }
    let result = try replay(frames: frames, policy: chosen, progress: isatty(2) != 0)
    if json {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.sortedKeys]
      var object = try JSONSerialization.jsonObject(with: encoder.encode(result)) as! [String: Any]
      object["policy"] = policy.lowercased() == "optimal" ? "opt" : policy.lowercased()
      object["frames"] = frames ?? NSNull()
      object["hitRatio"] = result.hitRatio
      let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
      print(String(decoding: data, as: UTF8.self))
    } else {
      print("trace:          \(trace)")
      print(
        "policy:         \(policy), frames: \(frames.map(String.init) ?? "unlimited"), swap: \(swap) pages"
      )
      print("accesses:       \(result.accesses)")
      print(
        "minor faults:   \(result.minorFaults) (zero-page maps: \(result.zeroPageMaps), COW copies: \(result.copyOnWriteCopies))"
      )
      print("major faults:   \(result.majorFaults)")
      print("invalid:        \(result.invalidAccesses)")
      print("hit ratio:      \(String(format: "%.4f", result.hitRatio))")
      print("swap traffic:   \(result.swapIns) in, \(result.swapOuts) out")
      if result.operationErrors > 0 {
        print("failed operations: \(result.operationErrors)")
        for error in result.firstErrors { print("  \(error)") }
        if result.operationErrors > UInt64(result.firstErrors.count) { print("  ...") }
      }
    }
  }

  /// Why OPT is refused for workload-language traces.
  static let optRefusal =
    "OPT needs every future access before the run: a workload's addresses exist only once its maps "
    + "run (and fork splits it into processes), so OPT replays plain address traces only; record "
    + "the workload's accesses as an address trace to compare OPT"

  /// The trace from its start: a built-in trace or a file, streamed.
  func openTrace() throws(WorkloadParseError) -> any ByteSource {
    if let builtin = BuiltinTraces.all[trace] { return StringByteSource(builtin) }
    return try FileByteSource(path: trace)
  }

  /// Whether the trace is a plain address trace (judged from its first 4 KiB).
  func isAddressTrace() throws -> Bool {
    var source = try openTrace()
    var prefix = [UInt8](repeating: 0, count: 4096)
    let count = try prefix.withUnsafeMutableBytes { buffer throws(WorkloadParseError) in
      try source.read(into: buffer)
    }
    return AddressTraceReader.looksLikeAddressTrace(
      String(decoding: prefix[0..<count], as: UTF8.self))
  }

  func replay(frames: Int?, policy: ReplacementPolicy, progress showProgress: Bool) throws
    -> ReplayResult
  {
    let first = try openTrace()
    let totalBytes = (first as? FileByteSource)?.size
    let isAddressTrace = try isAddressTrace()
    var progressSource: FileByteSource?
    let bar = showProgress ? ProgressBar(total: totalBytes) : nil
    defer { bar?.finish() }
    if isAddressTrace {
      return try TraceReplay.replayAddresses(
        makeSource: { () throws(WorkloadParseError) -> any ByteSource in
          let source = try openTrace()
          if progressSource == nil { progressSource = source as? FileByteSource }
          return source
        }, sourceName: trace, frames: frames, swapSlots: swap, policy: policy,
        progress: bar.map { bar in { _ in bar.update(progressSource?.bytesRead ?? 0) } })
    }
    guard policy != .optimal else { throw ValidationError(Self.optRefusal) }
    let source = try openTrace()
    progressSource = source as? FileByteSource
    return try TraceReplay.replayWorkload(
      source: source, sourceName: trace, frames: frames, swapSlots: swap, policy: policy,
      progress: bar.map { bar in { _ in bar.update(progressSource?.bytesRead ?? 0) } })
  }
}

/// A progress bar on stderr (only used when stderr is a terminal).
final class ProgressBar {
  let total: UInt64?
  var lastPercent = -1
  init(total: UInt64?) { self.total = total }
  func update(_ done: UInt64) {
    guard let total, total > 0 else { return }
    let percent = Int(min(100, done * 100 / total))
    guard percent != lastPercent else { return }
    lastPercent = percent
    let filled = percent * 40 / 100
    let line =
      "\r[" + String(repeating: "#", count: filled) + String(repeating: " ", count: 40 - filled)
      + "] \(percent)%"
    FileHandle.standardError.write(Data(line.utf8))
  }
  func finish() {
    if lastPercent >= 0 { FileHandle.standardError.write(Data("\n".utf8)) }
  }
}
