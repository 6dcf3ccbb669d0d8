// The memory map: VMAs with the vm_flags that decide whether neighbours merge (kernel-semantics.md §6).

import PageSpace

/// The subset of Linux's `vm_flags` that the simulator models. Two adjacent VMAs merge only when these
/// are equal, so every flag that Linux keeps in `vm_flags` and that an operation here can set is listed.
public struct VMFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
  public let rawValue: UInt32
  public init(rawValue: UInt32) { self.rawValue = rawValue }
  public static let read = VMFlags(rawValue: 1 << 0)
  public static let write = VMFlags(rawValue: 1 << 1)
  public static let exec = VMFlags(rawValue: 1 << 2)
  public static let shared = VMFlags(rawValue: 1 << 3)
  public static let growsDown = VMFlags(rawValue: 1 << 4)
  public static let locked = VMFlags(rawValue: 1 << 5)
  /// VM_ACCOUNT: charged to the commit limit (private writable, not NORESERVE). Kept when a touched
  /// region loses write permission, which is why it no longer merges with a fresh PROT_NONE mapping.
  public static let account = VMFlags(rawValue: 1 << 6)
  public static let noReserve = VMFlags(rawValue: 1 << 7)
  public static let hugePage = VMFlags(rawValue: 1 << 8)
  /// Also set by MAP_STACK (Linux 6.7+).
  public static let noHugePage = VMFlags(rawValue: 1 << 9)
  public static let randomRead = VMFlags(rawValue: 1 << 10)
  public static let sequentialRead = VMFlags(rawValue: 1 << 11)
  public static let dontCopy = VMFlags(rawValue: 1 << 12)
  public static let dontDump = VMFlags(rawValue: 1 << 13)
  public static let wipeOnFork = VMFlags(rawValue: 1 << 14)
  public static let mergeable = VMFlags(rawValue: 1 << 15)

  public static let access: VMFlags = [.read, .write, .exec]

  public var description: String {
    var text =
      (contains(.read) ? "r" : "-") + (contains(.write) ? "w" : "-") + (contains(.exec) ? "x" : "-")
    text += contains(.shared) ? "s" : "p"
    let names: [(VMFlags, String)] = [
      (.growsDown, "gd"), (.locked, "lo"), (.account, "ac"), (.noReserve, "nr"), (.hugePage, "hg"),
      (.noHugePage, "nh"), (.randomRead, "rr"), (.sequentialRead, "sr"), (.dontCopy, "dc"),
      (.dontDump, "dd"), (.wipeOnFork, "wf"), (.mergeable, "mg"),
    ]
    for (flag, name) in names where contains(flag) { text += " " + name }
    return text
  }

  init(protection: PageProtection) {
    var flags: VMFlags = []
    if protection.contains(.read) { flags.insert(.read) }
    if protection.contains(.write) { flags.insert(.write) }
    if protection.contains(.exec) { flags.insert(.exec) }
    self = flags
  }

  /// x86-64: any of read, write or exec makes a page readable.
  var isAccessible: Bool { !intersection(.access).isEmpty }
}

/// One virtual memory area.
public struct VMA: Sendable, Hashable, CustomStringConvertible {
  public var start: UInt
  public var end: UInt
  public var flags: VMFlags
  /// The anon_vma identity (0 = none yet). Linux gives a private region one on its first anonymous
  /// page (a write, not a read of the zero page); split pieces share it, and two regions merge only if
  /// at most one has one or both have the same one.
  public var anonIdentity: UInt64
  /// The anon_vma chain is not singular (the VMA came from fork): it then merges only with an equal
  /// anon_vma and lends its anon_vma to nobody.
  public var anonInherited: Bool
  /// 0 for private anonymous memory; otherwise the id of the memory object (shared anonymous memory
  /// or a simulated file) mapped here.
  public var object: UInt32
  /// The offset of `start` in the object, in pages (for private anonymous memory: start >> 12).
  public var pageOffset: UInt64

  public var pageCount: UInt { (end - start) >> 12 }
  public var isPrivateAnonymous: Bool { object == 0 }
  public var description: String {
    "0x\(String(start, radix: 16))-0x\(String(end, radix: 16)) \(flags)"
      + (anonIdentity != 0 ? " anon#\(anonIdentity)" : "") + (object != 0 ? " obj#\(object)" : "")
  }

  /// The object page index of `address`.
  func objectPage(_ address: UInt) -> UInt64 { pageOffset + UInt64((address - start) >> 12) }
}

/// Linux's anon_vma merge test (`is_mergeable_anon_vma`): equal, or one missing while the other is not
/// inherited from a fork.
func anonCompatible(_ a: VMA, _ b: VMA) -> Bool {
  if a.anonIdentity == 0 && b.anonIdentity != 0 { return !b.anonInherited }
  if b.anonIdentity == 0 && a.anonIdentity != 0 { return !a.anonInherited }
  return a.anonIdentity == b.anonIdentity
}

/// Whether `lower` (ending where `upper` starts) and `upper` may be one VMA: equal flags, same object
/// at contiguous offsets, compatible anon_vmas.
func canMerge(_ lower: VMA, _ upper: VMA) -> Bool {
  lower.end == upper.start && lower.flags == upper.flags && lower.object == upper.object
    && lower.pageOffset + UInt64(lower.pageCount) == upper.pageOffset
    && anonCompatible(lower, upper)
}

/// The VMAs of one address space, sorted by address. A sorted array: lookups are binary searches and
/// the kernel-like operations here touch at most a few neighbours.
struct VMASet {
  var areas: [VMA] = []

  var count: Int { areas.count }

  /// The index of the first VMA whose end is above `address` (it contains `address` or lies above it).
  func firstEndingAbove(_ address: UInt) -> Int {
    var low = 0
    var high = areas.count
    while low < high {
      let mid = (low + high) >> 1
      if areas[mid].end <= address { low = mid + 1 } else { high = mid }
    }
    return low
  }

  /// The index of the VMA containing `address`.
  func index(containing address: UInt) -> Int? {
    let i = firstEndingAbove(address)
    return i < areas.count && areas[i].start <= address ? i : nil
  }

  /// The number of VMAs overlapping `range`.
  func count(overlapping range: AddressRange) -> Int {
    guard !range.isEmpty else { return 0 }
    var i = firstEndingAbove(range.start)
    var n = 0
    while i < areas.count && areas[i].start < range.end {
      n += 1
      i += 1
    }
    return n
  }
}
