import PageSpace

/// Where a statement came from in the workload text (1-based line and column).
public struct SourceLocation: Sendable, Hashable, CustomStringConvertible {
  public var line: Int
  public var column: Int
  public init(line: Int, column: Int) {
    self.line = line
    self.column = column
  }
  public var description: String { "\(line):\(column)" }
}

/// A named region of the workload (`map a 16p rw` declares region `a`). The parser numbers regions
/// densely from 0 so that executors can keep them in a flat table.
public struct RegionID: Sendable, Hashable {
  public var index: Int
  public init(_ index: Int) { self.index = index }
}

/// A child process of the workload (`fork c`), numbered densely from 0.
public struct ChildID: Sendable, Hashable {
  public var index: Int
  public init(_ index: Int) { self.index = index }
}

/// A byte count as written in the workload: pages (`16p`) are resolved against the page size of the
/// space that runs the workload; the other units are plain bytes.
public enum WorkloadSize: Sendable, Hashable, CustomStringConvertible {
  case pages(UInt)
  case bytes(UInt)

  public func bytes(pageSize: UInt) -> UInt {
    switch self {
    case .pages(let count): count &* pageSize
    case .bytes(let count): count
    }
  }

  public var description: String {
    switch self {
    case .pages(let count): "\(count)p"
    case .bytes(let count): "\(count)"
    }
  }
}

/// Which pages of a region an operation applies to, as page indices relative to the region start.
public struct PageSelection: Sendable, Hashable {
  public enum Order: Sendable, Hashable {
    case ascending
    case descending
    /// `count` pages drawn uniformly (with replacement) from the span by a SplitMix64 generator,
    /// so that every page space replays exactly the same sequence.
    case random(count: Int, seed: UInt64)
  }

  /// First page index (inclusive).
  public var first: Int
  /// One past the last page index; nil means the end of the region.
  public var end: Int?
  /// Every `stride`-th page of the span.
  public var stride: Int
  public var order: Order

  public init(first: Int = 0, end: Int? = nil, stride: Int = 1, order: Order = .ascending) {
    self.first = first
    self.end = end
    self.stride = stride
    self.order = order
  }

  /// The whole region, ascending.
  public static let all = PageSelection()

  /// Whether the selection is a contiguous span (what protect, advise, unmap and lock take).
  public var isContiguous: Bool { stride == 1 && order == .ascending }
}

/// Flags of `map` beyond protection.
public struct MapOptions: Sendable, Hashable {
  public var flags: MapFlags
  /// `hugepage`: the mapping gets MADV_HUGEPAGE instead of the MADV_NOHUGEPAGE every other mapping
  /// gets on the real side (so that transparent huge pages never blur the page-level counts).
  public var hugePage: Bool
  /// `align SIZE`: the mapping starts at a multiple of SIZE (mapped larger, then trimmed), so that
  /// alignment-dependent behaviour (fault-around windows) is the same on every page space.
  public var alignment: WorkloadSize?
  public init(flags: MapFlags = [], hugePage: Bool = false, alignment: WorkloadSize? = nil) {
    self.flags = flags
    self.hugePage = hugePage
    self.alignment = alignment
  }
}

/// `at NAME+OFFSET`: a fixed placement relative to another region's start.
public struct Placement: Sendable, Hashable {
  public var base: RegionID
  public var offset: WorkloadSize
  /// `noreplace`: MAP_FIXED_NOREPLACE instead of MAP_FIXED.
  public var noReplace: Bool
  public init(base: RegionID, offset: WorkloadSize, noReplace: Bool) {
    self.base = base
    self.offset = offset
    self.noReplace = noReplace
  }
}

/// The page-cache state a simulated file mapping starts from.
public enum FileCacheState: String, Sendable, Hashable {
  /// The file's pages are all in the page cache as order-0 folios (the 16-page fault-around rule).
  case hot
  /// Nothing of the file is cached: the first access to each fault-around window is a major fault.
  case cold
}

/// One operation of a workload.
public indirect enum WorkloadOperation: Sendable, Hashable {
  /// Starts a new reported step in the process that runs it.
  case step(label: String)
  /// `mmap(NULL or fixed, size, protection, MAP_ANONYMOUS | ...)`; binds the region name.
  case map(
    RegionID, size: WorkloadSize, protection: PageProtection, options: MapOptions, at: Placement?)
  /// A file mapping of a fresh file of `size` bytes (simulated only: real counts depend on the page
  /// cache's folio layout, see kernel-semantics §2).
  case mapFile(
    RegionID, size: WorkloadSize, protection: PageProtection, shared: Bool, cache: FileCacheState)
  /// One byte per selected page, read or written in the selection's order.
  case touch(MemoryAccess, RegionID, PageSelection)
  case protect(RegionID, PageSelection, PageProtection)
  case advise(RegionID, PageSelection, PageAdvice)
  case unmap(RegionID, PageSelection)
  case lock(RegionID, PageSelection)
  case unlock(RegionID, PageSelection)
  /// Creates child process `ChildID` as a copy of the running process (fork).
  case fork(ChildID)
  /// Runs the block in the child. `block` numbers the `in` blocks of a workload densely from 0.
  case inChild(ChildID, block: Int, body: [WorkloadStatement])
  /// The child exits; the parent waits for it.
  case exitChild(ChildID)
  case `repeat`(count: Int, body: [WorkloadStatement])
  /// A GuardedHeap (module HeapPatrol) over this process's page space, named like a region. Its
  /// creation is not measured; its reservations count in the step's VMAs.
  case heap(RegionID, HeapGuarding)
  /// A seeded malloc/free sequence through the heap: the allocator's own page behaviour.
  case churn(RegionID, HeapChurn)
}

/// How a workload's heap guards blocks (`HeapConfiguration.GuardMechanism`).
public enum HeapGuarding: String, Sendable, Hashable {
  /// Guard markers (MADV_GUARD_INSTALL): no VMA per block.
  case markers
  /// mprotect(PROT_NONE) guard pages: 2 VMAs per live block.
  case mprotect
  /// Canary red zones only.
  case canary
}

/// `churn HEAP COUNT [seed S] [max SIZE] [live N]`: COUNT operations; each allocates a block of
/// 1...max bytes (while fewer than `live` blocks are live, with probability 1/2, or always when
/// none is), else frees a random live block. SplitMix64 decides, identically on every page space.
public struct HeapChurn: Sendable, Hashable {
  public static let maximumLive = 65536
  public var operations: Int
  public var seed: UInt64 = 1
  public var maximumSize: WorkloadSize = .bytes(4096)
  public var liveLimit: Int = 64
  public init(operations: Int) { self.operations = operations }
}

/// An operation with the place it was written.
public struct WorkloadStatement: Sendable, Hashable {
  public var operation: WorkloadOperation
  public var location: SourceLocation
  public init(_ operation: WorkloadOperation, at location: SourceLocation) {
    self.operation = operation
    self.location = location
  }
}

/// The names the parser has bound so far, for reports.
public struct WorkloadSymbols: Sendable, Hashable {
  public var regionNames: [String] = []
  public var childNames: [String] = []
  public init() {}
}

/// A whole workload held in memory (what `heappatrol faults` runs; `simulate` streams instead).
public struct Workload: Sendable {
  public var name: String
  public var statements: [WorkloadStatement]
  public var symbols: WorkloadSymbols

  public init(name: String, statements: [WorkloadStatement], symbols: WorkloadSymbols) {
    self.name = name
    self.statements = statements
    self.symbols = symbols
  }

  /// Parses a whole workload from text.
  public init(name: String, text: String) throws(WorkloadParseError) {
    var parser = WorkloadParser(source: StringByteSource(text), sourceName: name)
    var statements: [WorkloadStatement] = []
    while let statement = try parser.next() { statements.append(statement) }
    self.init(name: name, statements: statements, symbols: parser.symbols)
  }

  /// Whether any statement maps a file (simulated only).
  public var usesFiles: Bool {
    func scan(_ statements: [WorkloadStatement]) -> Bool {
      statements.contains { statement in
        switch statement.operation {
        case .mapFile: true
        case .inChild(_, _, let body), .repeat(_, let body): scan(body)
        default: false
        }
      }
    }
    return scan(statements)
  }
}
