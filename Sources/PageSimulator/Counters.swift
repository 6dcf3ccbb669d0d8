import PageSpace

/// Per-process counters of the simulator.
public struct SimulatorCounters: Sendable, Hashable, CustomStringConvertible {
  /// Faults served without I/O: zero-fill, zero page, copy-on-write, page-cache hits (`ru_minflt`).
  public var minorFaults: UInt64 = 0
  /// Faults that needed I/O: swap-in, a file page not in the page cache (`ru_majflt`).
  public var majorFaults: UInt64 = 0
  /// Accesses that raised SIGSEGV (not counted as page faults, as on Linux).
  public var invalidAccesses: UInt64 = 0
  /// Copy-on-write faults that copied a page (a reused exclusive page is not a copy).
  public var copyOnWriteCopies: UInt64 = 0
  /// Read faults that mapped the shared zero page (or the huge zero page).
  public var zeroPageMaps: UInt64 = 0
  public var swapIns: UInt64 = 0
  public var swapOuts: UInt64 = 0
  /// Pages dropped without swap: clean MADV_FREE pages under memory pressure.
  public var discardedPages: UInt64 = 0
  /// Transparent huge pages allocated by a fault (`thp_fault_alloc`).
  public var hugePageFaults: UInt64 = 0
  /// Huge PMDs split into 512 PTEs (`thp_split_pmd`).
  public var hugePageSplits: UInt64 = 0
  /// Page-table walks (TLB misses that did not fault).
  public var pageWalks: UInt64 = 0
  /// Pages this process maps from its own frames or the page cache (not the zero page).
  public var residentPages: Int = 0

  public init() {}

  public var faultCounts: FaultCounts { FaultCounts(minor: minorFaults, major: majorFaults) }

  public var description: String {
    "minor \(minorFaults) major \(majorFaults) invalid \(invalidAccesses) cow \(copyOnWriteCopies) "
      + "zero-page \(zeroPageMaps) swap-in \(swapIns) swap-out \(swapOuts) discarded \(discardedPages) "
      + "thp \(hugePageFaults) thp-split \(hugePageSplits) resident \(residentPages)"
  }
}
