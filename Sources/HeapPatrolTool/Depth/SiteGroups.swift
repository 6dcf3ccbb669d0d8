import HeapPatrol

/// Blocks grouped by their allocation site (the symbolized frame that called the allocator).
public struct SiteGroup: Codable, Sendable, Hashable {
  public var site: String
  /// The program's frames of the first block's stack, innermost first.
  public var stack: [String]
  public var count: Int
  public var bytes: UInt64
  public var addresses: [String]
}

extension SiteGroup {
  /// Groups `blocks` by site, largest byte total first (then by count, then by name).
  static func group(_ blocks: [TracedBlock], symbols: TraceSymbols) -> [SiteGroup] {
    var groups: [String: SiteGroup] = [:]
    for block in blocks.sorted(by: { $0.allocatedAt < $1.allocatedAt }) {
      let site = symbols.siteName(block.stack)
      groups[
        site,
        default: SiteGroup(
          site: site, stack: (symbols.stacks[block.stack] ?? []).map(\.description), count: 0,
          bytes: 0, addresses: [])
      ].count += 1
      groups[site]!.bytes += block.size
      groups[site]!.addresses.append(hex(block.address))
    }
    return groups.values.sorted {
      ($0.bytes, $0.count, $1.site) > ($1.bytes, $1.count, $0.site)
    }
  }
}
