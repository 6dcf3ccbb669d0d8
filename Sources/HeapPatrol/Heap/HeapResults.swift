import PageSpace

/// Up to three findings produced by one heap call (e.g. a free that is an alloc-dealloc mismatch, finds
/// the block's canary corrupted, and evicts from quarantine a block written after it was freed).
/// Fixed storage: never allocates.
public struct FindingBuffer: Sendable, Hashable {
  public static let capacity = 3
  public private(set) var count = 0
  /// Findings that did not fit (counted, not kept).
  public private(set) var dropped = 0
  private var first: Finding? = nil
  private var second: Finding? = nil
  private var third: Finding? = nil

  public init() {}

  public mutating func append(_ finding: Finding) {
    switch count {
    case 0: first = finding
    case 1: second = finding
    case 2: third = finding
    default:
      dropped += 1
      return
    }
    count += 1
  }

  public subscript(index: Int) -> Finding {
    precondition(index >= 0 && index < count, "finding index out of range")
    switch index {
    case 0: return first!
    case 1: return second!
    default: return third!
    }
  }

  public var isEmpty: Bool { count == 0 }

  /// The first finding of `kind`, if any.
  public func first(of kind: FindingKind) -> Finding? {
    var index = 0
    while index < count {
      if self[index].kind == kind { return self[index] }
      index += 1
    }
    return nil
  }
}

/// The outcome of `allocate`, `deallocate` or `reallocate`.
public struct HeapResult: Sendable, Hashable {
  /// The block handed out (allocate, reallocate), or nil (failure, or a deallocation).
  public var address: UInt?
  /// False when the pointer given is not in the heap's address space at all: the caller must hand it
  /// to whoever owns it (the preload: glibc). Always true for allocations.
  public var owned: Bool
  public var findings: FindingBuffer

  public init(address: UInt? = nil, owned: Bool = true, findings: FindingBuffer = FindingBuffer()) {
    self.address = address
    self.owned = owned
    self.findings = findings
  }
}

/// What the heap tells its owner once, outside any report (the reporting side renders it).
public enum HeapWarning: UInt8, Sendable, Hashable {
  /// The mprotect VMA budget is spent: new blocks get canary red zones instead of guard pages.
  /// The detail is the budget (VMAs).
  case vmaBudgetExhausted = 1
  /// The kernel refused a page operation the heap needed (ENOMEM/EAGAIN) for a reason other than the
  /// budget; the block fell back to canaries. The detail is the errno.
  case pageOperationRefused = 2
}

/// Called at most once per warning kind, with the lock held: it must not call back into the heap, and on
/// the malloc path it must not allocate. The second argument is a detail (see `HeapWarning`).
public typealias HeapWarningHandler = @convention(c) (UInt8, Int) -> Void

/// Counters of the heap at one instant.
public struct HeapStatistics: Sendable, Hashable {
  public var liveBlocks: Int = 0
  public var liveBytes: UInt = 0
  public var quarantinedBlocks: Int = 0
  public var quarantinedBytes: UInt = 0
  /// Live blocks protected only by canary red zones (the VMA budget fallback, or `guard=canary`).
  public var canaryBlocks: Int = 0
  /// The page guard mechanism in use for new blocks while the budget lasts.
  public var mechanism: BlockProtection = .markers
  /// VMAs the heap's mprotect'ed blocks account for (2 per live block), and the budget for them.
  public var vmasUsed: Int = 0
  public var vmaBudget: Int = 0
  public var budgetLeft: Int { max(0, vmaBudget - vmasUsed) }
  /// Address space reservations made.
  public var reservations: Int = 0
  /// Every allocation attempted, and those that failed (limit, injection, out of memory, bad alignment).
  public var allocations: UInt64 = 0
  public var failedAllocations: UInt64 = 0
  /// Records in use (live, quarantined, remembered released).
  public var records: Int = 0

  public init() {}
}

/// `count * size` did not fit in a size_t (calloc, reallocarray).
public struct SizeOverflow: Error, Sendable, Hashable {
  /// The size-overflow finding: `detail` is the count, `bytes` the element size.
  public var finding: Finding
}
