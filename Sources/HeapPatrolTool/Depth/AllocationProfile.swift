import Foundation
import HeapPatrol

/// mprof's outputs over a trace: allocations and bytes by call site, a size histogram with mpatrol's
/// small/medium/large bounds, the peak, leaks by site, and the call graph weighted by bytes.
public struct AllocationProfile: Codable, Sendable {
  public struct Bounds: Codable, Sendable, Hashable {
    public var small: UInt64
    public var medium: UInt64
    public var large: UInt64

    public init(small: UInt64 = 32, medium: UInt64 = 256, large: UInt64 = 2048) {
      self.small = small
      self.medium = medium
      self.large = large
    }

    /// The histogram's bin of a size: 0 small (<= small), 1 medium, 2 large, 3 extra large.
    func bin(_ size: UInt64) -> Int {
      size <= small ? 0 : size <= medium ? 1 : size <= large ? 2 : 3
    }

    var labels: [String] {
      [
        "small (<= \(small))", "medium (<= \(medium))", "large (<= \(large))",
        "extra large (> \(large))",
      ]
    }
  }

  public struct Site: Codable, Sendable, Hashable {
    public var site: String
    public var allocations: Int
    public var bytes: UInt64
    /// Allocations per histogram bin (small, medium, large, extra large).
    public var bins: [Int]
  }

  public struct Bin: Codable, Sendable, Hashable {
    public var label: String
    public var allocations: Int
    public var bytes: UInt64
  }

  public struct Edge: Codable, Sendable, Hashable {
    public var caller: String
    public var callee: String
    public var bytes: UInt64
    public var allocations: Int
  }

  public var bounds: Bounds
  public var allocations: Int
  public var bytes: UInt64
  public var sites: [Site]
  public var histogram: [Bin]
  public var peakLiveBytes: UInt64
  public var peakEventIndex: UInt64
  public var peakTimeNanoseconds: UInt64
  public var leaks: [SiteGroup]
  public var edges: [Edge]

  public init(_ trace: TraceFile, symbols: TraceSymbols, bounds: Bounds = Bounds()) {
    self.bounds = bounds
    var sites: [String: Site] = [:]
    var bins = bounds.labels.map { Bin(label: $0, allocations: 0, bytes: 0) }
    var edges: [String: Edge] = [:]
    var allocations = 0
    var bytes: UInt64 = 0
    for event in trace.events where event.kind != .free && event.address != 0 {
      allocations += 1
      bytes += event.size
      let bin = bounds.bin(event.size)
      bins[bin].allocations += 1
      bins[bin].bytes += event.size
      let name = symbols.siteName(event.stack)
      sites[name, default: Site(site: name, allocations: 0, bytes: 0, bins: [0, 0, 0, 0])]
        .allocations += 1
      sites[name]!.bytes += event.size
      sites[name]!.bins[bin] += 1
      // Caller -> callee along the stack, ending in the allocator; each edge once per allocation
      // (a recursive stack would otherwise count its bytes several times).
      let frames = symbols.stacks[event.stack] ?? []
      var path = frames.reversed().map(\.functionName)
      path.append("\(event.api)")
      var seen = Set<String>()
      for (caller, callee) in zip(path, path.dropFirst()) {
        let key = caller + "\u{0}" + callee
        guard seen.insert(key).inserted else { continue }
        edges[key, default: Edge(caller: caller, callee: callee, bytes: 0, allocations: 0)].bytes +=
          event.size
        edges[key]!.allocations += 1
      }
    }
    let replay = HeapReplay(trace)
    self.allocations = allocations
    self.bytes = bytes
    self.sites = sites.values.sorted {
      ($0.bytes, $0.allocations, $1.site) > ($1.bytes, $1.allocations, $0.site)
    }
    histogram = bins
    peakLiveBytes = replay.peakLiveBytes
    peakEventIndex = replay.peakEventIndex
    peakTimeNanoseconds = replay.peakTime
    leaks = SiteGroup.group(replay.liveBlocks, symbols: symbols)
    self.edges = edges.values.sorted {
      ($0.bytes, $1.caller, $1.callee) > ($1.bytes, $0.caller, $0.callee)
    }
  }

  public func text(source: String) -> String {
    var lines = ["profile \(source): \(allocations) allocations, \(bytes) bytes"]
    lines.append(
      "peak live:  \(peakLiveBytes) bytes after event #\(peakEventIndex) (at \(formatDuration(peakTimeNanoseconds)))"
    )
    lines.append("")
    lines.append("allocations by call site:")
    lines.append(
      pad("count", 8, right: true) + pad("bytes", 12, right: true) + pad("%bytes", 8, right: true)
        + pad("small", 7, right: true) + pad("medium", 8, right: true)
        + pad("large", 7, right: true)
        + pad("xlarge", 8, right: true) + "  site")
    for site in sites {
      let share = bytes == 0 ? 0 : Double(site.bytes) * 100 / Double(bytes)
      lines.append(
        pad("\(site.allocations)", 8, right: true) + pad("\(site.bytes)", 12, right: true)
          + pad(String(format: "%.1f", share), 8, right: true)
          + pad("\(site.bins[0])", 7, right: true) + pad("\(site.bins[1])", 8, right: true)
          + pad("\(site.bins[2])", 7, right: true) + pad("\(site.bins[3])", 8, right: true) + "  "
          + site.site)
    }
    lines.append("")
    lines.append("size histogram:")
    let widest = max(1, histogram.map(\.allocations).max() ?? 1)
    for bin in histogram {
      let bar = String(
        repeating: "#", count: bin.allocations == 0 ? 0 : max(1, bin.allocations * 40 / widest))
      lines.append(
        "  " + pad(bin.label, 26) + pad("\(bin.allocations)", 8, right: true) + " allocations "
          + pad("\(bin.bytes)", 12, right: true) + " bytes  " + bar)
    }
    lines.append("")
    if leaks.isEmpty {
      lines.append("leaks: none (every block was freed)")
    } else {
      let leaked = leaks.reduce(UInt64(0)) { $0 + $1.bytes }
      lines.append("leaks by site (\(leaked) bytes):")
      for leak in leaks {
        lines.append(
          pad("\(leak.count)", 8, right: true) + pad("\(leak.bytes)", 12, right: true) + "  "
            + leak.site)
      }
    }
    return lines.joined(separator: "\n") + "\n"
  }

  /// The call graph in Graphviz dot: caller -> callee edges labelled and weighted by bytes.
  public var dot: String {
    var lines = [
      "digraph heappatrol_profile {", "  rankdir=TB;",
      "  node [shape=box, fontname=\"monospace\"];",
    ]
    let heaviest = max(1, edges.map(\.bytes).max() ?? 1)
    for edge in edges {
      let width = 1 + 4 * Double(edge.bytes) / Double(heaviest)
      lines.append(
        "  \(Self.quoted(edge.caller)) -> \(Self.quoted(edge.callee)) [label=\"\(edge.bytes) bytes, \(edge.allocations) allocs\", weight=\(max(1, edge.bytes)), penwidth=\(String(format: "%.2f", width))];"
      )
    }
    lines.append("}")
    return lines.joined(separator: "\n") + "\n"
  }

  static func quoted(_ name: String) -> String {
    "\""
      + name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(
        of: "\"", with: "\\\"") + "\""
  }
}
