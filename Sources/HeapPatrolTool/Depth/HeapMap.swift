import Foundation
import HeapPatrol

/// The heap's address space at one event of a trace, page by page: which pages hold live blocks,
/// freed (quarantined) blocks, the guard page after each block's page run, and the canary slack in
/// front of a block that ends against its guard. Drawn as rows of pages so fragmentation shows.
public struct HeapMap: Sendable {
  public enum PageState: String, Sendable, Hashable {
    case live, freed
    case guardPage = "guard"
    case unused
  }

  /// A block and its page run [firstPage, endPage) in page numbers from the map's first page.
  public struct Placed: Sendable, Hashable {
    public var block: TracedBlock
    public var live: Bool
    public var firstPage: UInt64
    public var endPage: UInt64
  }

  /// A faulting address from a finding, placed on the map.
  public struct Marker: Sendable, Hashable {
    public var address: UInt64
    public var label: String
  }

  public var eventIndex: UInt64
  public var pageSize: UInt64
  /// The address of page 0.
  public var base: UInt64
  public var pageCount: UInt64
  public var blocks: [Placed]
  /// Page number -> state, for every page that is not unused.
  public var pages: [UInt64: PageState]
  public var markers: [Marker] = []

  /// Builds the map after event `through` (nil: the end of the trace).
  public init(_ trace: TraceFile, through: UInt64? = nil) {
    let replay = HeapReplay(trace, through: through)
    eventIndex = replay.lastEventIndex
    pageSize = max(trace.pageSize, 1)
    let size = pageSize
    // A freed block whose pages a later block reuses is no longer on the map.
    let live = replay.liveBlocks
    var candidates = live.map { ($0, true) } + replay.freed.map { ($0, false) }
    candidates.sort { $0.0.address < $1.0.address }
    let lowest = candidates.map { $0.0.address / size * size }.min() ?? 0
    base = lowest
    var pages: [UInt64: PageState] = [:]
    var placed: [Placed] = []
    for (block, isLive) in candidates.sorted(by: { $0.1 && !$1.1 }) {
      let first = (block.address - lowest) / size
      let end = (TraceWorkload.pageEnd(block.address, block.size, size) - lowest) / size
      if !isLive && (first..<end).contains(where: { pages[$0] == .live }) { continue }
      for page in first..<end where pages[page] != .live {
        pages[page] = isLive ? .live : .freed
      }
      placed.append(Placed(block: block, live: isLive, firstPage: first, endPage: end))
    }
    // The guard page follows each run (default placement: the block ends against it).
    for block in placed where pages[block.endPage] == nil { pages[block.endPage] = .guardPage }
    self.pages = pages
    blocks = placed.sorted { $0.block.address < $1.block.address }
    pageCount = (pages.keys.max() ?? 0) + 1
  }

  public var liveBlocks: Int { blocks.filter(\.live).count }
  public var freedBlocks: Int { blocks.count - liveBlocks }
  public func count(_ state: PageState) -> Int { pages.values.filter { $0 == state }.count }

  /// Places each finding's access address relative to the block it names (or that contains it).
  public mutating func mark(_ findings: [FindingRecord]) {
    for finding in findings {
      // Leaks and other findings without an access have no faulting address.
      guard finding.access != nil, let address = finding.address?.value else { continue }
      var label = "\(finding.kind) at \(hex(address))"
      if let block = finding.block, let start = block.address?.value, let size = block.size {
        if address >= start + size {
          label +=
            ": \(address - start - size) bytes past the end of the \(size)-byte block at \(hex(start))"
        } else if address < start {
          label += ": \(start - address) bytes before the \(size)-byte block at \(hex(start))"
        } else {
          label += ": \(address - start) bytes into the \(size)-byte block at \(hex(start))"
        }
      }
      markers.append(Marker(address: address, label: label))
    }
  }

  // MARK: - Text and SVG

  public func summary(source: String) -> String {
    let liveBytes = blocks.filter(\.live).reduce(UInt64(0)) { $0 + $1.block.size }
    var lines = [
      "map \(source) after event #\(eventIndex): \(liveBlocks) live blocks (\(liveBytes) bytes), \(freedBlocks) freed blocks",
      "pages: \(count(.live)) live, \(count(.freed)) freed, \(count(.guardPage)) guard, \(pageCount - UInt64(pages.count)) unused between them (span \(pageCount) pages from \(hex(base)))",
    ]
    for marker in markers { lines.append("finding: \(marker.label)") }
    return lines.joined(separator: "\n") + "\n"
  }

  static let pagesPerRow: UInt64 = 32
  static let cell = 22.0
  /// A run of this many unused pages or more is drawn as one gap row.
  static let collapsedGap: UInt64 = 2 * pagesPerRow

  /// The drawing: one row per `pagesPerRow` pages, long unused stretches collapsed into a gap row.
  public var svg: String {
    // Rows: page ranges, or gaps.
    enum Row {
      case pages(UInt64)  // first page of the row
      case gap(UInt64, UInt64)
    }
    let used = pages.keys.sorted()
    var rows: [Row] = []
    var rowStart: UInt64 = 0
    var index = 0
    while rowStart < pageCount {
      rows.append(.pages(rowStart))
      rowStart += Self.pagesPerRow
      while index < used.count && used[index] < rowStart { index += 1 }
      guard index < used.count else { break }
      let next = used[index] / Self.pagesPerRow * Self.pagesPerRow
      if next - rowStart >= Self.collapsedGap {
        rows.append(.gap(rowStart, next))
        rowStart = next
      }
    }
    let cell = Self.cell
    let left = 150.0
    let top = 60.0
    let rowHeight = cell + 6
    let width = left + Double(Self.pagesPerRow) * cell + 20
    let legendTop = top + Double(rows.count) * rowHeight + 20
    let height = legendTop + 40 + Double(markers.count) * 18
    var out: [String] = []
    out.append(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"monospace\" font-size=\"11\">"
    )
    out.append("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>")
    out.append(
      "<text x=\"10\" y=\"20\" font-size=\"14\">\(Self.escape("Heap after event #\(eventIndex): \(liveBlocks) live, \(freedBlocks) freed blocks; \(count(.guardPage)) guard pages"))</text>"
    )
    out.append(
      "<text x=\"10\" y=\"40\">\(Self.escape("one cell = one \(pageSize)-byte page; the dark bar is the block's bytes, the light part its page's slack"))</text>"
    )
    var rowTop: [UInt64: Double] = [:]  // first page of a row -> y
    for (number, row) in rows.enumerated() {
      let y = top + Double(number) * rowHeight
      switch row {
      case .gap(let from, let to):
        out.append(
          "<text x=\"10\" y=\"\(y + cell * 0.7)\" fill=\"#777\">\(Self.escape("... \(to - from) unused pages ..."))</text>"
        )
      case .pages(let first):
        rowTop[first] = y
        out.append("<text x=\"10\" y=\"\(y + cell * 0.7)\">\(hex(base + first * pageSize))</text>")
        for page in first..<min(first + Self.pagesPerRow, pageCount) {
          let x = left + Double(page - first) * cell
          let state = pages[page] ?? .unused
          let fill: String
          switch state {
          case .live: fill = "#cdeccd"
          case .freed: fill = "#e3e3e3"
          case .guardPage: fill = "#e05a4e"
          case .unused: fill = "#ffffff"
          }
          out.append(
            "<rect x=\"\(x)\" y=\"\(y)\" width=\"\(cell - 1)\" height=\"\(cell)\" fill=\"\(fill)\" stroke=\"#999\" stroke-width=\"0.5\"><title>\(Self.escape("\(hex(base + page * pageSize)): \(state.rawValue) page"))</title></rect>"
          )
        }
      }
    }
    // Each block's bytes as a bar over its pages.
    for placed in blocks {
      let start = placed.block.address - base
      let end = start + max(placed.block.size, 1)
      var offset = start
      while offset < end {
        let page = offset / pageSize
        let rowFirst = page / Self.pagesPerRow * Self.pagesPerRow
        let pageEnd = (page + 1) * pageSize
        let pieceEnd = min(end, pageEnd)
        if let y = rowTop[rowFirst] {
          let x =
            left + Double(page - rowFirst) * cell + Double(offset - page * pageSize)
            / Double(pageSize) * (cell - 1)
          let barWidth = max(1, Double(pieceEnd - offset) / Double(pageSize) * (cell - 1))
          let color = placed.live ? "#2e8b3e" : "#8a8a8a"
          let what = placed.live ? "live" : "freed at event #\(placed.block.freedAt ?? 0)"
          out.append(
            "<rect x=\(Self.number(x)) y=\(Self.number(y + 4)) width=\(Self.number(barWidth)) height=\(Self.number(cell - 8)) fill=\"\(color)\"><title>\(Self.escape("\(placed.block.api) block of \(placed.block.size) bytes at \(hex(placed.block.address)), event #\(placed.block.allocatedAt), \(what)"))</title></rect>"
          )
        }
        offset = pieceEnd
      }
    }
    for marker in markers where marker.address >= base {
      let page = (marker.address - base) / pageSize
      let rowFirst = page / Self.pagesPerRow * Self.pagesPerRow
      guard let y = rowTop[rowFirst] else { continue }
      let x =
        left + Double(page - rowFirst) * cell + Double((marker.address - base) % pageSize)
        / Double(pageSize) * (cell - 1)
      out.append(
        "<path d=\"M \(Self.plain(x - 5)) \(Self.plain(y - 6)) L \(Self.plain(x + 5)) \(Self.plain(y - 6)) L \(Self.plain(x)) \(Self.plain(y + cell / 2)) Z\" fill=\"#1f4fd8\"><title>\(Self.escape(marker.label))</title></path>"
      )
    }
    let legend: [(String, String)] = [
      ("#2e8b3e", "live block"), ("#8a8a8a", "freed block (quarantine)"), ("#e05a4e", "guard page"),
      ("#cdeccd", "slack (canary zone) of a live block's page"), ("#1f4fd8", "faulting address"),
    ]
    for (number, item) in legend.enumerated() {
      let x = 10.0 + Double(number % 3) * 220
      let y = legendTop + Double(number / 3) * 18
      out.append(
        "<rect x=\"\(x)\" y=\"\(y - 10)\" width=\"12\" height=\"12\" fill=\"\(item.0)\" stroke=\"#999\" stroke-width=\"0.5\"/><text x=\"\(x + 18)\" y=\"\(y)\">\(Self.escape(item.1))</text>"
      )
    }
    for (number, marker) in markers.enumerated() {
      out.append(
        "<text x=\"10\" y=\"\(legendTop + 40 + Double(number) * 18)\" fill=\"#1f4fd8\">\(Self.escape(marker.label))</text>"
      )
    }
    out.append("</svg>")
    return out.joined(separator: "\n") + "\n"
  }

  /// An attribute value (quoted) and a bare coordinate for path data.
  static func number(_ value: Double) -> String { "\"" + plain(value) + "\"" }
  static func plain(_ value: Double) -> String { String(format: "%.2f", value) }

  static func escape(_ text: String) -> String {
    text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
      .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
  }
}
