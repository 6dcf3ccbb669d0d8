import Foundation
import HeapPatrol

/// `heappatrol trace`: the trace's statistics and its table of events.
public struct TraceSummary: Codable, Sendable {
  public struct Event: Codable, Sendable {
    public var index: UInt64
    public var timeNanoseconds: UInt64
    public var thread: Int32
    public var kind: String
    public var api: String
    /// The size asked for; for a free, the size of the block it freed (0 when unknown).
    public var size: UInt64
    public var alignment: UInt64
    public var address: String
    public var oldAddress: String?
    public var site: String

    /// The API, marked when it freed (realloc(p, 0) frees).
    var apiColumn: String { kind == "free" && api != "free" ? "\(api)(free)" : api }
  }

  public var pid: Int32
  public var pageSize: UInt64
  public var events: Int
  public var eventsByAPI: [String: Int]
  public var allocations: Int
  public var frees: Int
  public var reallocations: Int
  public var failedAllocations: Int
  public var unknownFrees: Int
  public var allocatedBytes: UInt64
  public var freedBytes: UInt64
  public var liveBytesAtEnd: UInt64
  public var liveBlocksAtEnd: Int
  public var peakLiveBytes: UInt64
  public var peakEventIndex: UInt64
  public var peakTimeNanoseconds: UInt64
  public var threads: [Int32]
  public var durationNanoseconds: UInt64
  public var truncatedBytes: Int
  public var table: [Event]

  public init(_ trace: TraceFile, symbols: TraceSymbols) {
    var replay = HeapReplay()
    var table: [Event] = []
    for event in trace.events {
      let freedSize: UInt64 =
        event.kind == .free ? (replay.live[event.address]?.size ?? 0) : event.size
      replay.apply(event)
      table.append(
        Event(
          index: event.index, timeNanoseconds: event.time, thread: event.thread,
          kind: "\(event.kind)", api: "\(event.api)", size: freedSize, alignment: event.alignment,
          address: hex(event.address),
          oldAddress: event.kind == .reallocation ? hex(event.oldAddress) : nil,
          site: symbols.siteName(event.stack)))
    }
    pid = trace.pid
    pageSize = trace.pageSize
    events = trace.events.count
    eventsByAPI = Dictionary(
      uniqueKeysWithValues: replay.eventsByAPI.map { ("\($0.key)", $0.value) })
    allocations = replay.allocations
    frees = replay.frees
    reallocations = replay.reallocations
    failedAllocations = replay.failedAllocations
    unknownFrees = replay.unknownFrees
    allocatedBytes = replay.allocatedBytes
    freedBytes = replay.freedBytes
    liveBytesAtEnd = replay.liveBytes
    liveBlocksAtEnd = replay.live.count
    peakLiveBytes = replay.peakLiveBytes
    peakEventIndex = replay.peakEventIndex
    peakTimeNanoseconds = replay.peakTime
    threads = replay.threads.sorted()
    durationNanoseconds = trace.events.last?.time ?? 0
    truncatedBytes = trace.trailingBytes
    self.table = table
  }

  public func text(source: String) -> String {
    var lines: [String] = []
    lines.append("trace \(source): pid \(pid), page size \(pageSize)")
    if truncatedBytes > 0 {
      lines.append("  (cut short: \(truncatedBytes) bytes after the last whole record ignored)")
    }
    let byAPI = eventsByAPI.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
      .map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    lines.append(
      "events:     \(events) (\(allocations) allocations, \(frees) frees, \(reallocations) reallocations; "
        + "\(failedAllocations) failed, \(unknownFrees) frees of unknown blocks)")
    lines.append("by API:     \(byAPI.isEmpty ? "-" : byAPI)")
    lines.append(
      "bytes:      \(allocatedBytes) allocated, \(freedBytes) freed, \(liveBytesAtEnd) live at the end in \(liveBlocksAtEnd) blocks"
    )
    lines.append(
      "peak live:  \(peakLiveBytes) bytes after event #\(peakEventIndex) (at \(formatDuration(peakTimeNanoseconds)))"
    )
    lines.append(
      "threads:    \(threads.count) (\(threads.map(String.init).joined(separator: ", ")))")
    lines.append("duration:   \(formatDuration(durationNanoseconds))")
    lines.append("")
    lines.append(
      pad("#", 7, right: true) + "  " + pad("time", 11, right: true) + "  "
        + pad("thread", 7, right: true)
        + "  " + pad("api", 14) + pad("size", 10, right: true) + pad("align", 7, right: true) + "  "
        + pad("address", 16) + "  site")
    for event in table {
      var address = event.address
      if let old = event.oldAddress { address = "\(old) -> \(event.address)" }
      lines.append(
        pad("\(event.index)", 7, right: true) + "  "
          + pad(formatDuration(event.timeNanoseconds), 11, right: true) + "  "
          + pad("\(event.thread)", 7, right: true) + "  " + pad(event.apiColumn, 14)
          + pad("\(event.size)", 10, right: true)
          + pad(event.alignment == 0 ? "-" : "\(event.alignment)", 7, right: true) + "  "
          + pad(address, 16) + "  " + event.site)
    }
    return lines.joined(separator: "\n") + "\n"
  }
}
