// The x86-64 shape of address translation: a 4-level radix tree of 512-entry nodes, allocated lazily,
// holding 64-bit entries. Nodes live in one flat pool of integers so that a walk is four array reads.

/// Bits of a page-table entry (leaf level) and of a huge PMD entry. The frame number (or swap slot)
/// sits above bit 12, as in hardware.

enum PTE {
  /// The entry maps a frame (or the zero page).
  static let present: UInt64 = 1 << 0
  /// The CPU may write through this entry without faulting.
  static let writable: UInt64 = 1 << 1
  /// The CPU may read through this entry (clear for PROT_NONE).
  static let accessible: UInt64 = 1 << 2
  /// Linux's PageAnonExclusive: a private page only this mapping uses, so a write may reuse it.
  static let exclusive: UInt64 = 1 << 3
  /// Maps the shared zero page (or, in a PMD, the huge zero page).
  static let zeroPage: UInt64 = 1 << 4
  static let accessed: UInt64 = 1 << 5
  static let dirty: UInt64 = 1 << 6
  /// MADV_FREE'd: may be discarded under memory pressure unless written again (dirty).
  static let lazyFree: UInt64 = 1 << 7
  /// A MADV_GUARD_INSTALL marker (not present; access is SEGV_MAPERR).
  static let guardMarker: UInt64 = 1 << 8
  /// Not present: the page is in swap slot `frame`.
  static let swapped: UInt64 = 1 << 9
  /// PMD level only: the entry maps a 2 MiB huge page (512 consecutive frames from `frame`).
  static let huge: UInt64 = 1 << 10
  /// Maps a page-cache frame (shared anonymous memory or a file), not an anonymous frame.
  static let pageCache: UInt64 = 1 << 11
  static let frameShift: UInt64 = 12
  static let flagMask: UInt64 = (1 << 12) - 1

  static func frame(_ entry: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: entry >> frameShift) }
  static func make(frame: UInt32, flags: UInt64) -> UInt64 {
    (UInt64(frame) << frameShift) | flags
  }
}

/// A sparse 4-level page table. Inner entries hold `node index << 12` (0 = no table) or a huge leaf.

struct RadixPageTable {
  static let fanOut = 512
  /// The pool: node `n` occupies entries `[n * 512, (n + 1) * 512)`. Node 0 is the root (PML4).
  var pool: UnsafeMutablePointer<UInt64>
  var nodeCapacity: Int
  var nodeCount: Int
  var freeNodes: [Int32] = []

  init() {
    nodeCapacity = 64
    pool = .allocate(capacity: nodeCapacity * Self.fanOut)
    pool.initialize(repeating: 0, count: nodeCapacity * Self.fanOut)
    nodeCount = 1
  }

  func deallocate() { pool.deallocate() }

  /// The number of 512-entry nodes in use (the simulated page-table memory).
  var liveNodes: Int { nodeCount - freeNodes.count }

  static func index(_ vpn: UInt64, level: Int) -> Int {
    Int(truncatingIfNeeded: (vpn >> UInt64(9 * level)) & 511)
  }

  mutating func allocateNode() -> Int {
    if let reused = freeNodes.popLast() {
      let node = Int(reused)
      (pool + node * Self.fanOut).update(repeating: 0, count: Self.fanOut)
      return node
    }
    if nodeCount == nodeCapacity {
      let newCapacity = nodeCapacity * 2
      let grown = UnsafeMutablePointer<UInt64>.allocate(capacity: newCapacity * Self.fanOut)
      grown.moveInitialize(from: pool, count: nodeCapacity * Self.fanOut)
      (grown + nodeCapacity * Self.fanOut).initialize(
        repeating: 0, count: nodeCapacity * Self.fanOut)
      pool.deallocate()
      pool = grown
      nodeCapacity = newCapacity
    }
    nodeCount += 1
    return nodeCount - 1
  }

  /// The index in `pool` of the PMD entry for `vpn`, creating the upper levels; nil if not creating
  /// and a level is missing.
  mutating func pmdSlot(_ vpn: UInt64, create: Bool) -> Int? {
    var node = 0
    for level in stride(from: 3, through: 2, by: -1) {
      let slot = node * Self.fanOut + Self.index(vpn, level: level)
      var entry = pool[slot]
      if entry == 0 {
        guard create else { return nil }
        let child = allocateNode()
        entry = UInt64(child) << PTE.frameShift
        pool[slot] = entry
      }
      node = Int(truncatingIfNeeded: entry >> PTE.frameShift)
    }
    return node * Self.fanOut + Self.index(vpn, level: 1)
  }

  /// The pool index of the leaf entry for `vpn`; nil when the PTE table is missing (and `create` is
  /// false) or when the PMD maps a huge page (check `pmdSlot` first for those).
  mutating func pteSlot(_ vpn: UInt64, create: Bool) -> Int? {
    guard let pmd = pmdSlot(vpn, create: create) else { return nil }
    var entry = pool[pmd]
    if entry & PTE.huge != 0 { return nil }
    if entry == 0 {
      guard create else { return nil }
      let child = allocateNode()
      entry = UInt64(child) << PTE.frameShift
      pool[pmd] = entry
    }
    return Int(truncatingIfNeeded: entry >> PTE.frameShift) * Self.fanOut
      + Self.index(vpn, level: 0)
  }

  /// Reads the leaf entry for `vpn` without creating anything (0 when absent). Huge PMDs are
  /// reported through `hugeEntry`.
  func entry(_ vpn: UInt64) -> UInt64 {
    var node = 0
    for level in stride(from: 3, through: 1, by: -1) {
      let entry = pool[node * Self.fanOut + Self.index(vpn, level: level)]
      if entry == 0 || entry & PTE.huge != 0 { return 0 }
      node = Int(truncatingIfNeeded: entry >> PTE.frameShift)
    }
    return pool[node * Self.fanOut + Self.index(vpn, level: 0)]
  }

  /// Frees the PTE table behind a PMD slot (the caller has emptied it).
  mutating func freePTETable(pmdSlot: Int) {
    let entry = pool[pmdSlot]
    guard entry != 0, entry & PTE.huge == 0 else { return }
    freeNodes.append(Int32(truncatingIfNeeded: entry >> PTE.frameShift))
    pool[pmdSlot] = 0
  }
}
