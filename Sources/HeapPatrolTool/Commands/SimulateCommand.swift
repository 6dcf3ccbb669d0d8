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
      for sweepPolicy in ReplacementPolicy.allCases {
        var points: [(frames: Int, faults: UInt64)] = []
        for count in low...high {
          points.append(
            (count, try replay(frames: count, policy: sweepPolicy, progress: false).totalFaults))
        }
        curves.append(
          FaultCurve(policy: sweepPolicy == .optimal ? "opt" : sweepPolicy.rawValue, points: points)
        )
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
    }
  }

  func replay(frames: Int?, policy: ReplacementPolicy, progress showProgress: Bool) throws
    -> ReplayResult
  {
    let builtin = BuiltinTraces.all[trace]
    func open() throws(WorkloadParseError) -> any ByteSource {
      if let builtin { return StringByteSource(builtin) }
      return try FileByteSource(path: trace)
    }
    let first = try open()
    let totalBytes = (first as? FileByteSource)?.size
    var prefixSource = first
    var prefix = [UInt8](repeating: 0, count: 4096)
    let prefixCount = try prefix.withUnsafeMutableBytes { buffer throws(WorkloadParseError) in
      try prefixSource.read(into: buffer)
    }
    let isAddressTrace = AddressTraceReader.looksLikeAddressTrace(
      String(decoding: prefix[0..<prefixCount], as: UTF8.self))
    var progressSource: FileByteSource?
    let bar = showProgress ? ProgressBar(total: totalBytes) : nil
    defer { bar?.finish() }
    if isAddressTrace {
      return try TraceReplay.replayAddresses(
        makeSource: { () throws(WorkloadParseError) -> any ByteSource in
          let source = try open()
          if progressSource == nil { progressSource = source as? FileByteSource }
          return source
        }, sourceName: trace, frames: frames, swapSlots: swap, policy: policy,
        progress: bar.map { bar in { _ in bar.update(progressSource?.bytesRead ?? 0) } })
    }
    guard policy != .optimal else {
      throw ValidationError(
        "OPT needs the future: it replays address traces only (see docs/faults-and-simulate.md)")
    }
    let source = try open()
    progressSource = source as? FileByteSource
    let (result, _) = try TraceReplay.replayWorkload(
      source: source, sourceName: trace, frames: frames, swapSlots: swap, policy: policy,
      progress: bar.map { bar in { _ in bar.update(progressSource?.bytesRead ?? 0) } })
    return result
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
