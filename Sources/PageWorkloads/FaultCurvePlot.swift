import PageSimulator

/// A fault curve: total faults (minor + major) for each memory size, one series per policy.
public struct FaultCurve: Sendable, Hashable {
  public var policy: String
  /// (frames, faults), frames ascending.
  public var points: [(frames: Int, faults: UInt64)]

  public init(policy: String, points: [(frames: Int, faults: UInt64)]) {
    self.policy = policy
    self.points = points
  }

  public static func == (lhs: FaultCurve, rhs: FaultCurve) -> Bool {
    lhs.policy == rhs.policy && lhs.points.elementsEqual(rhs.points) { $0 == $1 }
  }
  public func hash(into hasher: inout Hasher) {
    hasher.combine(policy)
    for point in points {
      hasher.combine(point.frames)
      hasher.combine(point.faults)
    }
  }

  /// Frame counts where adding memory made this policy fault more (Belady's anomaly).
  public var anomalies: [Int] {
    zip(points, points.dropFirst()).compactMap { $1.faults > $0.faults ? $1.frames : nil }
  }
}

/// Renders fault curves as CSV and as an SVG line plot.
public enum FaultCurvePlot {
  /// `frames,POLICY1,POLICY2,...` then one line per frame count.
  public static func csv(_ curves: [FaultCurve]) -> String {
    var text = "frames," + curves.map(\.policy).joined(separator: ",") + "\n"
    let frames = Array(Set(curves.flatMap { $0.points.map(\.frames) })).sorted()
    for count in frames {
      let values = curves.map { curve in
        curve.points.first { $0.frames == count }.map { String($0.faults) } ?? ""
      }
      text += "\(count)," + values.joined(separator: ",") + "\n"
    }
    return text
  }

  static let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]

  /// An SVG plot: labelled axes with ticks, one polyline per policy, and a legend.
  public static func svg(_ curves: [FaultCurve], title: String) -> String {
    let width = 720.0
    let height = 440.0
    let left = 80.0
    let right = 170.0
    let top = 40.0
    let bottom = 60.0
    let allFrames = curves.flatMap { $0.points.map(\.frames) }
    let minFrames = Double(allFrames.min() ?? 0)
    let maxFrames = Double(max(allFrames.max() ?? 1, Int(minFrames) + 1))
    let maxFaults = Double(max(curves.flatMap { $0.points.map(\.faults) }.max() ?? 1, 1))
    let plotWidth = width - left - right
    let plotHeight = height - top - bottom
    func x(_ frames: Double) -> Double {
      left + (frames - minFrames) / (maxFrames - minFrames) * plotWidth
    }
    func y(_ faults: Double) -> Double { top + plotHeight - faults / maxFaults * plotHeight }
    func format(_ value: Double) -> String {
      let rounded = (value * 10).rounded() / 10
      return rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
    }
    func escape(_ text: String) -> String {
      var escaped = ""
      for character in text {
        switch character {
        case "&": escaped += "&amp;"
        case "<": escaped += "&lt;"
        case ">": escaped += "&gt;"
        case "\"": escaped += "&quot;"
        default: escaped.append(character)
        }
      }
      return escaped
    }

    var svg = """
      <?xml version="1.0" encoding="UTF-8"?>
      <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
      viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
      <rect width="100%" height="100%" fill="white"/>
      <text x="\(format(width / 2))" y="22" text-anchor="middle" font-size="15">\(escape(title))</text>

      """
    // Axes.
    svg += """
      <g id="axes" stroke="black">
      <line x1="\(format(left))" y1="\(format(top + plotHeight))" x2="\(format(left + plotWidth))" \
      y2="\(format(top + plotHeight))"/>
      <line x1="\(format(left))" y1="\(format(top))" x2="\(format(left))" y2="\(format(top + plotHeight))"/>
      </g>

      """
    // Ticks: every frame count when there are few, else about ten; faults in about eight steps.
    let frameSpan = Int(maxFrames - minFrames)
    let frameStep = max(1, Int((Double(frameSpan) / 10).rounded(.up)))
    svg += "<g id=\"x-ticks\">\n"
    var tick = Int(minFrames)
    while tick <= Int(maxFrames) {
      let position = format(x(Double(tick)))
      svg += "<line x1=\"\(position)\" y1=\"\(format(top + plotHeight))\" x2=\"\(position)\" "
      svg += "y2=\"\(format(top + plotHeight + 5))\" stroke=\"black\"/>"
      svg +=
        "<text x=\"\(position)\" y=\"\(format(top + plotHeight + 18))\" text-anchor=\"middle\">\(tick)</text>\n"
      tick += frameStep
    }
    svg += "</g>\n<g id=\"y-ticks\">\n"
    let faultStep = max(1.0, niceStep(maxFaults / 8))
    var faultTick = 0.0
    while faultTick <= maxFaults {
      let position = format(y(faultTick))
      svg +=
        "<line x1=\"\(format(left - 5))\" y1=\"\(position)\" x2=\"\(format(left))\" y2=\"\(position)\" "
      svg +=
        "stroke=\"black\"/><line x1=\"\(format(left))\" y1=\"\(position)\" x2=\"\(format(left + plotWidth))\" "
      svg += "y2=\"\(position)\" stroke=\"#e0e0e0\"/>"
      svg +=
        "<text x=\"\(format(left - 8))\" y=\"\(format(y(faultTick) + 4))\" text-anchor=\"end\">"
      svg += "\(format(faultTick))</text>\n"
      faultTick += faultStep
    }
    svg += "</g>\n"
    // Axis labels.
    svg +=
      "<text id=\"x-label\" x=\"\(format(left + plotWidth / 2))\" y=\"\(format(height - 15))\" "
    svg += "text-anchor=\"middle\">memory (frames)</text>\n"
    svg +=
      "<text id=\"y-label\" x=\"20\" y=\"\(format(top + plotHeight / 2))\" text-anchor=\"middle\" "
    svg +=
      "transform=\"rotate(-90 20 \(format(top + plotHeight / 2)))\">page faults (minor + major)</text>\n"
    // Curves and legend.
    for (index, curve) in curves.enumerated() {
      let colour = colours[index % colours.count]
      let points = curve.points.map {
        "\(format(x(Double($0.frames)))),\(format(y(Double($0.faults))))"
      }
      svg +=
        "<polyline class=\"curve\" data-policy=\"\(escape(curve.policy))\" fill=\"none\" stroke=\"\(colour)\" "
      svg += "stroke-width=\"2\" points=\"\(points.joined(separator: " "))\"/>\n"
      let legendY = top + 20 + Double(index) * 20
      svg +=
        "<line x1=\"\(format(width - right + 20))\" y1=\"\(format(legendY))\" x2=\"\(format(width - right + 45))\" "
      svg += "y2=\"\(format(legendY))\" stroke=\"\(colour)\" stroke-width=\"2\"/>"
      svg +=
        "<text class=\"legend\" x=\"\(format(width - right + 52))\" y=\"\(format(legendY + 4))\">"
      svg += "\(escape(curve.policy))</text>\n"
    }
    svg += "</svg>\n"
    return svg
  }

  /// 1, 2 or 5 times a power of ten, at least `raw`.
  static func niceStep(_ raw: Double) -> Double {
    guard raw > 0 else { return 1 }
    var magnitude = 1.0
    while magnitude * 10 <= raw { magnitude *= 10 }
    while magnitude > raw { magnitude /= 10 }
    for factor in [1.0, 2.0, 5.0, 10.0] where magnitude * factor >= raw {
      return magnitude * factor
    }
    return magnitude * 10
  }
}

extension TraceReplay {
  /// The fault curve of an address trace for each policy: every frame count in `frames`, replayed
  /// from the start each time (`makeSource` reopens the trace).
  public static func sweep(
    makeSource: () throws(WorkloadParseError) -> any ByteSource, sourceName: String,
    frames: ClosedRange<Int>, swapSlots: Int,
    policies: [ReplacementPolicy] = ReplacementPolicy.allCases
  ) throws(WorkloadParseError) -> [FaultCurve] {
    var curves: [FaultCurve] = []
    for policy in policies {
      var points: [(frames: Int, faults: UInt64)] = []
      for count in frames {
        let result = try replayAddresses(
          makeSource: makeSource, sourceName: sourceName, frames: count, swapSlots: swapSlots,
          policy: policy)
        points.append((count, result.totalFaults))
      }
      curves.append(FaultCurve(policy: policy.shortName, points: points))
    }
    return curves
  }
}

extension ReplacementPolicy {
  /// The name used on the command line and in plots (`opt` for Belady's optimal).
  public var shortName: String { self == .optimal ? "opt" : rawValue }
}
