import HeapPatrol

/// A trace's allocation pattern in the page-workload language (docs/faults-and-simulate.md), for
/// `heappatrol faults` / `simulate`.
///
/// The language has no per-event malloc/free statement (`churn` is a seeded random pattern), so each
/// event becomes the page operations the guarded heap performs for it: one `reserve` covers the traced
/// heap's address span (its PROT_NONE pages are the guards), an allocation maps its block's page run
/// at the block's own offset in that span and writes every page (the program fills its block), a free
/// protects the run `none` (the quarantine of the heap's mprotect mode). Approximated: the heap's own
/// metadata pages and canary writes, and the reuse of quarantined pages, are not modelled.
public enum TraceWorkload {
  /// Above this span, blocks are mapped anywhere rather than at their traced offsets.
  static let maximumSpan: UInt64 = 64 << 30

  public static func text(for trace: TraceFile, source: String) -> String {
    let pageSize = max(trace.pageSize, 1)
    var lowest = UInt64.max
    var highest: UInt64 = 0
    for event in trace.events where event.address != 0 && event.kind != .free {
      lowest = min(lowest, event.address / pageSize * pageSize)
      highest = max(highest, pageEnd(event.address, event.size, pageSize))
    }
    let placed = lowest < highest && highest - lowest <= maximumSpan
    var lines = [
      "# \(trace.events.count) events of \(source) (pid \(trace.pid)) as page operations.",
      "# Each block: its page run mapped at its traced offset and written; each free: protect none.",
      "# Approximated: heap metadata, canaries and page reuse are not modelled (docs/depth.md).",
    ]
    if placed {
      lines.append("reserve heap \((highest - lowest) / pageSize)p")
    }
    var names: [UInt64: String] = [:]  // live block address -> region
    func protect(_ address: UInt64, event: TraceEvent) {
      guard let name = names.removeValue(forKey: address) else { return }
      lines.append("protect \(name) none  # event \(event.index): \(event.api) of \(hex(address))")
    }
    for event in trace.events {
      switch event.kind {
      case .free:
        protect(event.address, event: event)
      case .allocation, .reallocation:
        guard event.address != 0 else { continue }
        if event.kind == .reallocation { protect(event.oldAddress, event: event) }
        let first = event.address / pageSize * pageSize
        let pages = (pageEnd(event.address, event.size, pageSize) - first) / pageSize
        let name = "b\(event.index)"
        names[event.address] = name
        let placement = placed ? " at heap+\((first - lowest) / pageSize)p" : ""
        lines.append(
          "map \(name) \(pages)p\(placement)  # event \(event.index): \(event.api)(\(event.size)) = \(hex(event.address))"
        )
        lines.append("write \(name)")
      }
    }
    return lines.joined(separator: "\n") + "\n"
  }

  /// The end of the page run holding [address, address + size) (a 0-byte block still has a page).
  static func pageEnd(_ address: UInt64, _ size: UInt64, _ pageSize: UInt64) -> UInt64 {
    (address + max(size, 1) + pageSize - 1) / pageSize * pageSize
  }
}

func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
