import HeapPatrol
import PageSpace

#if canImport(Glibc)
  import Glibc
#endif

/// What one step of a workload did in one process.
public struct StepResult: Sendable, Hashable, Codable {
  public var label: String
  /// The process that ran the step: "" for the main process, else the child's name.
  public var process: String
  public var minorFaults: UInt64 = 0
  public var majorFaults: UInt64 = 0
  /// VMAs overlapping the workload's live regions when the step ended.
  public var vmaCount: Int = 0
  /// Failed operations, e.g. "line 7: protect a: ENOMEM" or "line 9: write a: SIGSEGV ...".
  public var errors: [String] = []
  /// The step used a file mapping: real counts depend on the page-cache folio layout, so the step is
  /// run on the simulator only.
  public var simulatedOnly = false

  public init(label: String, process: String) {
    self.label = label
    self.process = process
  }

  /// The label as reported: child steps are prefixed with the child's name.
  public var qualifiedLabel: String { process.isEmpty ? label : "[\(process)] \(label)" }
}

/// What a page space offers beyond `PageSpace` for a workload: processes and files. The simulator
/// models both; the real side forks a real process and does not run file mappings (their counts
/// depend on the page cache's folio layout, kernel-semantics §2).
public protocol WorkloadProcessHost<Space>: AnyObject {
  associatedtype Space: PageSpace
  /// Whether this side runs file mappings (false: steps using them are marked simulated-only).
  var runsFileMappings: Bool { get }
  /// Maps a fresh file of `length` bytes; returns the address.
  func mapFile(
    in space: Space, length: UInt, protection: PageProtection, shared: Bool, cache: FileCacheState
  )
    throws(PageError) -> UInt
  /// `fork`: the child starts as a copy of `parent` (its regions included).
  func fork(_ child: ChildID, name: String, parent: WorkloadRunner<Space>) throws(PageError)
  /// Runs a block of statements in the child; returns the steps it recorded.
  func run(_ body: [WorkloadStatement], block: Int, in child: ChildID) throws(PageError)
    -> [StepResult]
  /// The child exits; the parent waits for it.
  func exit(_ child: ChildID) throws(PageError)
  /// Runs `create` (which makes a heap and its first reservation), then makes present the memory
  /// it mapped outside the page space's view — the heap's tables — except `excluding()` (the heap's
  /// reservations, which belong to the page space).
  func prepareHeapTables(excluding: () -> [AddressRange], _ create: () -> Void)
}

/// Runs workload statements on one page space (one process), recording per step the fault deltas,
/// the VMA count in the workload's regions and the errors.
///
/// Faults are measured around each operation separately (a window: snapshot, operation, snapshot)
/// and summed into the step, so that the runner's own bookkeeping between operations (recording
/// errors, starting steps, counting VMAs) never lands inside a measurement. Inside a window nothing
/// allocates: page selections are iterated arithmetically and errors are kept until it closes.
public final class WorkloadRunner<Space: PageSpace> {
  public let space: Space
  public let processName: String
  /// Names for reports; a streaming caller updates them as the parser declares more.
  public var symbols: WorkloadSymbols {
    didSet {
      if regions.count < symbols.regionNames.count {
        regions.append(
          contentsOf: repeatElement(nil, count: symbols.regionNames.count - regions.count))
      }
    }
  }
  /// Loads and stores made so far (touches), for replay statistics.
  public private(set) var accessCount: UInt64 = 0
  public private(set) var steps: [StepResult] = []
  /// Subtracted from every window (the cost of an empty pair of snapshots; see `calibrate`).
  public var noiseFloor = FaultCounts()
  /// Every mapping gets MADV_NOHUGEPAGE unless the workload asks for huge pages — needed only where
  /// THP is `always`: under `madvise` (the measured machine) no huge page appears without
  /// MADV_HUGEPAGE, and the advice would change VMA flags (a MAP_STACK neighbour would then merge).
  /// Set it the same on both sides of a comparison.
  public var adviseNoHugePages = TransparentHugePages.isAlways
  let host: (any WorkloadProcessHost<Space>)?

  struct Region {
    var start: UInt
    var length: UInt
    var live: Bool
    var isFile: Bool
  }
  var regions: [Region?]
  /// Heaps by region index (`heap NAME`); a forked child does not inherit them (a heap object
  /// belongs to one page space).
  var heaps: [Int: GuardedHeap<Space>] = [:]
  private var currentStep: Int?
  private var implicitLabel = "(start)"

  public init(
    space: Space, symbols: WorkloadSymbols, processName: String = "",
    host: (any WorkloadProcessHost<Space>)? = nil
  ) {
    self.space = space
    self.symbols = symbols
    self.processName = processName
    self.host = host
    regions = Array(repeating: nil, count: symbols.regionNames.count)
  }

  /// A runner for a forked child: the same regions, another space.
  public init(childOf parent: WorkloadRunner<Space>, space: Space, name: String) {
    self.space = space
    symbols = parent.symbols
    processName = name
    host = nil
    regions = parent.regions
    noiseFloor = parent.noiseFloor
    adviseNoHugePages = parent.adviseNoHugePages
    implicitLabel = "in \(name)"
  }

  /// The address range of a region, if it is mapped in this process.
  public func range(of region: RegionID) -> AddressRange? {
    guard region.index < regions.count, let state = regions[region.index], state.live else {
      return nil
    }
    return AddressRange(start: state.start, length: state.length)
  }

  // MARK: Running

  /// Runs statements in order; errors of operations are recorded in the steps, never thrown.
  public func run(_ statements: [WorkloadStatement]) {
    for statement in statements { run(statement) }
  }

  /// Runs one (top-level) statement.
  public func run(_ statement: WorkloadStatement) {
    execute(statement)
  }

  /// Closes the current step (its VMA count is taken now) and returns every step so far.
  public func finish() -> [StepResult] {
    closeStep()
    return steps
  }

  /// Starts the next block with a fresh step list (a child serving one `in` block at a time).
  public func takeSteps() -> [StepResult] {
    closeStep()
    defer { steps.removeAll(keepingCapacity: true) }
    return steps
  }

  /// Measures empty windows until two in a row agree, and takes their cost as the noise floor.
  /// On Linux an empty pair of `getrusage` calls costs 0 faults once warm (kernel-semantics §1).
  @discardableResult
  public func calibrate() -> FaultCounts {
    var previous: FaultCounts?
    for _ in 0..<16 {
      let before = space.faultCounts
      let after = space.faultCounts
      let cost = after - before
      if cost == previous { break }
      previous = cost
    }
    noiseFloor = previous ?? FaultCounts()
    return noiseFloor
  }

  private func closeStep() {
    guard let index = currentStep else { return }
    steps[index].vmaCount = vmaCountInRegions()
    currentStep = nil
  }

  private func beginStep(_ label: String) {
    closeStep()
    steps.append(StepResult(label: label, process: processName))
    currentStep = steps.count - 1
  }

  private func stepIndex() -> Int {
    if let currentStep { return currentStep }
    beginStep(implicitLabel)
    return currentStep!
  }

  /// VMAs overlapping the union of the live regions (adjacent or overlapping regions coalesced, so
  /// a VMA spanning two regions counts once).
  func vmaCountInRegions() -> Int {
    var ranges: [AddressRange] = regions.compactMap { region in
      guard let region, region.live, region.length > 0 else { return nil }
      return AddressRange(start: region.start, length: region.length)
    }
    for heap in heaps.values { heap.view.forEachReservation { ranges.append($0) } }
    ranges.sort { $0.start < $1.start }
    var merged: [AddressRange] = []
    for range in ranges {
      if let last = merged.last, range.start <= last.end {
        merged[merged.count - 1].end = max(last.end, range.end)
      } else {
        merged.append(range)
      }
    }
    return merged.reduce(0) { $0 + space.vmaCount(in: $1) }
  }

  private func recordError(_ text: String, at location: SourceLocation) {
    let index = stepIndex()
    steps[index].errors.append("line \(location.line): \(text)")
  }

  private func regionName(_ region: RegionID) -> String { symbols.regionNames[region.index] }

  /// Adds the faults of one window to the current step.
  @inline(__always)
  private func account(_ before: FaultCounts, _ after: FaultCounts, step: Int) {
    let delta = after - before
    steps[step].minorFaults &+= delta.minor > noiseFloor.minor ? delta.minor - noiseFloor.minor : 0
    steps[step].majorFaults &+= delta.major > noiseFloor.major ? delta.major - noiseFloor.major : 0
  }

  private func execute(_ statement: WorkloadStatement) {
    let location = statement.location
    switch statement.operation {
    case .step(let label):
      beginStep(label)

    case .map(let region, let size, let protection, let options, let placement):
      let step = stepIndex()
      let length = size.bytes(pageSize: space.pageSize)
      var flags = options.flags
      var hint: UInt?
      if let placement {
        // An unmapped region still names its old place (a hole to map into).
        guard let base = regions[placement.base.index], !base.isFile || base.live else {
          recordError(
            "map \(regionName(region)): region \(regionName(placement.base)) is not mapped",
            at: location)
          return
        }
        hint = base.start &+ placement.offset.bytes(pageSize: space.pageSize)
        flags.insert(placement.noReplace ? .fixedNoReplace : .fixed)
      }
      let alignment =
        options.alignment.map { space.roundUpToPage($0.bytes(pageSize: space.pageSize)) } ?? 0
      let aligned =
        placement == nil && alignment > space.pageSize && alignment & (alignment - 1) == 0
      let mappedLength = aligned ? length &+ alignment : length
      let before = space.faultCounts
      var result: Result<UInt, PageError>
      do throws(PageError) {
        result = .success(
          try space.map(at: hint, length: mappedLength, protection: protection, flags: flags))
      } catch {
        result = .failure(error)
      }
      let after = space.faultCounts
      account(before, after, step: step)
      if aligned, case .success(let address) = result {
        // Trim the over-allocation to an aligned start (trims at the ends split nothing).
        let start = (address &+ alignment &- 1) & ~(alignment &- 1)
        let end = start &+ space.roundUpToPage(length)
        if start > address { try? space.unmap(address, length: start &- address) }
        let mappedEnd = address &+ space.roundUpToPage(mappedLength)
        if mappedEnd > end { try? space.unmap(end, length: mappedEnd &- end) }
        result = .success(start)
      }
      switch result {
      case .failure(let error):
        recordError("map \(regionName(region)): \(error)", at: location)
      case .success(let address):
        let rounded = space.roundUpToPage(length)
        regions[region.index] = Region(start: address, length: rounded, live: true, isFile: false)
        // Transparent huge pages would turn 512 faults into one: keep them off unless asked for.
        if options.hugePage {
          try? space.advise(address, length: rounded, .hugePage)
        } else if adviseNoHugePages {
          try? space.advise(address, length: rounded, .noHugePage)
        }
      }

    case .mapFile(let region, let size, let protection, let shared, let cache):
      let step = stepIndex()
      guard let host, host.runsFileMappings else {
        steps[step].simulatedOnly = true
        regions[region.index] = Region(start: 0, length: 0, live: false, isFile: true)
        return
      }
      let length = size.bytes(pageSize: space.pageSize)
      let before = space.faultCounts
      do throws(PageError) {
        let address = try host.mapFile(
          in: space, length: length, protection: protection, shared: shared, cache: cache)
        account(before, space.faultCounts, step: step)
        regions[region.index] = Region(
          start: address, length: space.roundUpToPage(length), live: true, isFile: true)
      } catch {
        recordError("file \(regionName(region)): \(error)", at: location)
      }

    case .touch(let access, let region, let selection):
      let step = stepIndex()
      guard
        let state = usableRegion(
          region, step: step, verb: access == .read ? "read" : "write", at: location)
      else { return }
      let pageCount = Int(state.length / space.pageSize)
      let before = space.faultCounts
      let fault = touch(access, base: state.start, pageCount: pageCount, selection: selection)
      let after = space.faultCounts
      account(before, after, step: step)
      if let fault {
        // The page, not the address: addresses differ between page spaces, pages do not.
        let page = (fault.address &- state.start) / space.pageSize
        let verb = access == .read ? "read" : "write"
        recordError(
          "\(verb) \(regionName(region)): SIGSEGV \(fault.code) at page \(Int(bitPattern: page))",
          at: location)
      }

    case .protect(let region, let selection, let protection):
      rangeOperation(region, selection, verb: "protect", at: location) {
        (address, length) throws(PageError) in
        try self.space.protect(address, length: length, to: protection)
      }
    case .advise(let region, let selection, let advice):
      rangeOperation(region, selection, verb: "advise \(advice)", at: location) {
        (address, length) throws(PageError) in
        try self.space.advise(address, length: length, advice)
      }
    case .lock(let region, let selection):
      rangeOperation(region, selection, verb: "lock", at: location) {
        (address, length) throws(PageError) in
        try self.space.lock(address, length: length)
      }
    case .unlock(let region, let selection):
      rangeOperation(region, selection, verb: "unlock", at: location) {
        (address, length) throws(PageError) in
        try self.space.unlock(address, length: length)
      }
    case .unmap(let region, let selection):
      rangeOperation(region, selection, verb: "unmap", at: location) {
        (address, length) throws(PageError) in
        try self.space.unmap(address, length: length)
      }
      // Unmapping a whole region retires it from the VMA count.
      if selection == .all, var state = regions[region.index], state.live {
        state.live = false
        regions[region.index] = state
      }

    case .heap(let region, let guarding):
      _ = stepIndex()
      var configuration = HeapConfiguration()
      switch guarding {
      case .markers: configuration.guardMechanism = .markers
      case .mprotect: configuration.guardMechanism = .mprotect
      case .canary: configuration.guardMechanism = .canary
      }
      // Small tables (the default 2^24 records, 64 GiB reservations) would cost gigabytes of
      // address space and, prepared below, tens of MiB of memory.
      configuration.maximumRecords = 1 << 16
      configuration.reservationSize = 1 << 30
      var created: GuardedHeap<Space>?
      // Created outside any window. The heap's tables live in the process's own memory on every
      // page space (DESIGN.md: metadata is never in the page space it manages), where the
      // simulator cannot count them; one allocation and free make the first reservation and its
      // page map, and the host then makes every table present, so that the windows count only
      // the heap's traffic in its page space, on both sides.
      let prepare = {
        created = GuardedHeap(space: self.space, configuration: configuration)
        if let heap = created,
          let address = heap.allocate(byteCount: 1, api: .malloc, thread: 1).address
        {
          heap.deallocate(address, api: .free, thread: 1)
        }
      }
      let reservations = { () -> [AddressRange] in
        var ranges: [AddressRange] = []
        created?.view.forEachReservation { ranges.append($0) }
        return ranges
      }
      if let host { host.prepareHeapTables(excluding: reservations, prepare) } else { prepare() }
      guard let heap = created else {
        recordError("heap \(regionName(region)): the heap could not be created", at: location)
        return
      }
      heaps[region.index] = heap

    case .churn(let region, let churn):
      let step = stepIndex()
      guard let heap = heaps[region.index] else {
        recordError(
          "churn \(regionName(region)): no heap of that name in this process", at: location)
        return
      }
      let failures = self.churn(heap, churn, step: step)
      if failures > 0 {
        recordError(
          "churn \(regionName(region)): \(failures) allocations failed", at: location)
      }

    case .repeat(let count, let body):
      for _ in 0..<count {
        for inner in body { execute(inner) }
      }

    case .fork(let child):
      // fork itself is not measured: its cost is the copy of the runner's own memory, not the
      // workload's (the host warms both processes up before the next window).
      guard let host else {
        recordError(
          "fork \(symbols.childNames[child.index]): this page space cannot fork", at: location)
        return
      }
      _ = stepIndex()
      do throws(PageError) {
        try host.fork(child, name: symbols.childNames[child.index], parent: self)
      } catch {
        recordError("fork \(symbols.childNames[child.index]): \(error)", at: location)
      }

    case .inChild(let child, let block, let body):
      closeStep()
      guard let host else { return }
      do throws(PageError) {
        steps.append(contentsOf: try host.run(body, block: block, in: child))
      } catch {
        recordError("in \(symbols.childNames[child.index]): \(error)", at: location)
      }
      implicitLabel = "(after in \(symbols.childNames[child.index]))"

    case .exitChild(let child):
      guard let host else { return }
      do throws(PageError) {
        try host.exit(child)
      } catch {
        recordError("exit \(symbols.childNames[child.index]): \(error)", at: location)
      }
    }
  }

  /// Runs a churn in one window; returns how many allocations failed. The live-block table is
  /// allocated before the window opens, and the heap's paths allocate nothing.
  private func churn(_ heap: GuardedHeap<Space>, _ churn: HeapChurn, step: Int) -> Int {
    let maximum = UInt64(max(1, churn.maximumSize.bytes(pageSize: space.pageSize)))
    let live = UnsafeMutableBufferPointer<UInt>.allocate(capacity: churn.liveLimit)
    live.initialize(repeating: 0)  // written now, so its pages do not fault inside the window
    defer { live.deallocate() }
    var liveCount = 0
    var failures = 0
    var generator = SplitMix64(seed: churn.seed)
    // A fixed thread number: the block records are then the same on every page space.
    let thread: Int32 = 1
    let before = space.faultCounts
    for _ in 0..<churn.operations {
      let roll = generator.next()
      if liveCount == 0 || (liveCount < churn.liveLimit && roll & 1 == 0) {
        let size = Int(1 + (roll >> 1) % maximum)
        if let address = heap.allocate(byteCount: size, api: .malloc, thread: thread).address {
          live[liveCount] = address
          liveCount += 1
        } else {
          failures += 1
        }
      } else {
        let index = Int((roll >> 1) % UInt64(liveCount))
        heap.deallocate(live[index], api: .free, thread: thread)
        liveCount -= 1
        live[index] = live[liveCount]
      }
    }
    let after = space.faultCounts
    account(before, after, step: step)
    return failures
  }

  /// The region's state if it can be used in this process; otherwise records why not.
  private func usableRegion(
    _ region: RegionID, step: Int, verb: String, at location: SourceLocation
  ) -> Region? {
    guard let state = regions[region.index] else {
      recordError(
        "\(verb) \(regionName(region)): region is not mapped in this process", at: location)
      return nil
    }
    if state.isFile && !state.live {
      // A file region on a side that does not run files: the step is simulated-only.
      steps[step].simulatedOnly = true
      return nil
    }
    return state
  }

  /// protect/advise/lock/unlock/unmap over a contiguous span of a region: one call, measured.
  private func rangeOperation(
    _ region: RegionID, _ selection: PageSelection, verb: String, at location: SourceLocation,
    _ operation: (UInt, UInt) throws(PageError) -> Void
  ) {
    let step = stepIndex()
    guard let state = usableRegion(region, step: step, verb: verb, at: location) else { return }
    let pageSize = space.pageSize
    let pageCount = Int(state.length / pageSize)
    let first = selection.first
    let end = selection.end ?? pageCount
    // A span past the region's end is passed through as written: the kernel decides what it means.
    let address = state.start &+ UInt(first) &* pageSize
    let length = UInt(max(0, end - first)) &* pageSize
    let before = space.faultCounts
    var failure: PageError?
    do throws(PageError) {
      try operation(address, length)
    } catch {
      failure = error
    }
    let after = space.faultCounts
    account(before, after, step: step)
    if let failure { recordError("\(verb) \(regionName(region)): \(failure)", at: location) }
  }

  /// One byte per selected page. Returns the fault that stopped the touch (the program would have
  /// died there). Allocation-free: the selection is walked arithmetically.
  private func touch(_ access: MemoryAccess, base: UInt, pageCount: Int, selection: PageSelection)
    -> PageFault?
  {
    let pageSize = space.pageSize
    let first = selection.first
    let end = selection.end ?? pageCount
    guard end > first else { return nil }
    do throws(PageFault) {
      switch selection.order {
      case .ascending:
        var page = first
        while page < end {
          try access1(access, base &+ UInt(page) &* pageSize)
          page += selection.stride
        }
      case .descending:
        // The same pages as ascending (first, first+stride, ...), visited from the last one down.
        var page = first + (end - 1 - first) / selection.stride * selection.stride
        while page >= first {
          try access1(access, base &+ UInt(page) &* pageSize)
          page -= selection.stride
        }
      case .random(let count, let seed):
        var generator = SplitMix64(seed: seed)
        let span = UInt64(end - first)
        for _ in 0..<count {
          let page = first + Int(generator.next() % span)
          try access1(access, base &+ UInt(page) &* pageSize)
        }
      }
    } catch {
      return error
    }
    return nil
  }

  @inline(__always)
  private func access1(_ access: MemoryAccess, _ address: UInt) throws(PageFault) {
    accessCount &+= 1
    if access == .write {
      try space.store(1, at: address)
    } else {
      _ = try space.load(address)
    }
  }
}

/// The system's transparent-huge-page mode.
public enum TransparentHugePages {
  /// Whether `/sys/kernel/mm/transparent_hugepage/enabled` selects `[always]`.
  public static var isAlways: Bool {
    guard let text = readSmallFile("/sys/kernel/mm/transparent_hugepage/enabled") else {
      return false
    }
    return text.contains("[always]")
  }
}

/// Reads a small text file (procfs/sysfs) without Foundation.
func readSmallFile(_ path: String) -> String? {
  #if canImport(Glibc)
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return nil }
    defer { close(descriptor) }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
    return count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : nil
  #else
    return nil
  #endif
}
