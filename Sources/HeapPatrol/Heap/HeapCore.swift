import CShims
import PageSpace
import Synchronization

/// The guarded heap's state and algorithms, without a lock (see `GuardedHeap` / `HeapHandle` for the
/// locked API). `~Copyable` and placed in mmap'd memory by its owner, so that a process-wide instance
/// needs no malloc. Nothing in the allocate/deallocate/lookup paths allocates, retains or locks.
///
/// Layout: blocks live in runs carved from large MAP_NORESERVE reservations. In a guarded reservation
/// page 0 is a guard, then each run is `runPages` pages followed by one guard page, which is also the
/// lower guard of the next run. A block's run is mapped in the page map (including its trailing guard)
/// so that any address resolves to its block in O(1). Canary reservations (the VMA-budget fallback and
/// `guard=canary`) have no guard pages: red zones of canary bytes surround each block.
public struct HeapCore<Space: PageSpace>: ~Copyable {
  public let space: Space
  public let configuration: HeapConfiguration
  public let view: HeapView
  @usableFromInline let pageSize: UInt

  // Tables (mmap'd; see HeapTables.swift).
  @usableFromInline let freeRuns: UnsafeMutablePointer<FreeRun>
  @usableFromInline let freeRunCapacity: UInt32
  @usableFromInline var freeRunBump: UInt32 = 1
  @usableFromInline var freeRunFreeList: UInt32 = 0
  /// FIFO heads and tails of free runs per size class, guarded classes then canary classes.
  @usableFromInline let classHeads: UnsafeMutablePointer<UInt32>
  @usableFromInline let classTails: UnsafeMutablePointer<UInt32>

  @usableFromInline var recordBump: UInt32 = 1
  @usableFromInline var recordFreeList: UInt32 = 0
  @usableFromInline var freeRecordCount = 0
  @usableFromInline var quarantineHead: UInt32 = 0
  @usableFromInline var quarantineTail: UInt32 = 0
  @usableFromInline var releasedHead: UInt32 = 0
  @usableFromInline var releasedTail: UInt32 = 0
  @usableFromInline var releasedCount = 0

  @usableFromInline var statistics = HeapStatistics()
  @usableFromInline var currentGuardedReservation = -1
  @usableFromInline var currentCanaryReservation = -1
  @usableFromInline var budgetWarningIssued = false
  @usableFromInline var refusalWarningIssued = false
  @usableFromInline var randomState: UInt64
  public var warningHandler: HeapWarningHandler? = nil

  /// The largest block the heap will try (64 TiB): anything larger cannot exist in a 47-bit space.
  public static var maximumBlockSize: UInt { 1 << 46 }
  /// The largest alignment honoured (1 GiB).
  public static var maximumAlignment: UInt { 1 << 30 }

  /// Sets up the tables. Nil if the real process cannot map them (the heap cannot exist).
  public init?(space: Space, configuration: HeapConfiguration = .default) {
    let pageSize = space.pageSize
    self.space = space
    self.configuration = configuration
    self.pageSize = pageSize
    let recordCapacity = max(16, configuration.maximumRecords)
    guard
      let header = mapTableMemory(
        UInt(HeapHeader.maximumReservations * (MemoryLayout<ReservationEntry>.stride + 8) + 64)),
      let records = mapTableMemory(UInt(recordCapacity * MemoryLayout<BlockRecord>.stride)),
      let runs = mapTableMemory(UInt(recordCapacity * MemoryLayout<FreeRun>.stride)),
      let classes = mapTableMemory(UInt(RunClass.count * 4 * 4))
    else { return nil }
    let count = header.bindMemory(to: Atomic<Int>.self, capacity: 1)
    let dedicated = (header + 64).bindMemory(
      to: Atomic<UInt32>.self, capacity: HeapHeader.maximumReservations)
    let entries = (header + 64 + HeapHeader.maximumReservations * 8).bindMemory(
      to: ReservationEntry.self, capacity: HeapHeader.maximumReservations)
    self.view = HeapView(
      reservations: entries, reservationCount: count, dedicatedRecords: dedicated,
      records: records.bindMemory(to: BlockRecord.self, capacity: recordCapacity),
      recordCapacity: recordCapacity, pageSize: pageSize)
    self.freeRuns = runs.bindMemory(to: FreeRun.self, capacity: recordCapacity)
    self.freeRunCapacity = UInt32(min(recordCapacity, Int(UInt32.max)))
    let classWords = classes.bindMemory(to: UInt32.self, capacity: RunClass.count * 4)
    self.classHeads = classWords
    self.classTails = classWords + RunClass.count * 2
    var seed = configuration.faultInjection.seed
    if seed == 0 { seed = 0x9E37_79B9_7F4A_7C15 }
    self.randomState = seed

    switch configuration.guardMechanism {
    case .canary: statistics.mechanism = .canary
    case .mprotect: statistics.mechanism = .mprotect
    case .automatic, .markers:
      statistics.mechanism = space.supportsGuardMarkers ? .markers : .mprotect
    }
    if statistics.mechanism == .mprotect {
      let limit = space.maxMapCount
      let headroom = configuration.vmaHeadroom ?? max(1024, limit / 4)
      var budget = max(0, limit - space.vmaCount - headroom)
      if let cap = configuration.vmaBudgetLimit { budget = min(budget, max(0, cap)) }
      statistics.vmaBudget = budget
    }
  }

  // MARK: - Allocation
  //
  // The non-mutating helpers the phases call through `core.pointee` are `@inline(__always)`: a
  // non-mutating method takes this (large, loadable) struct by value, so an outlined call copies all
  // of it first (~470 bytes, four times per free before this was done).
  //
  // Every heap operation is split into phases so that a multi-threaded owner (`HeapHandle`) holds its
  // lock only while deciding and publishing, never across the madvise/mprotect calls in between:
  //
  //   allocate:   reserve (locked)  -> open pages, fill canaries (unlocked) -> publish (locked)
  //   deallocate: look up, mark closing (locked) -> close pages (unlocked) -> quarantine (locked)
  //   reallocate: look up, mark moving (locked) -> allocate -> copy (unlocked) -> deallocate phases
  //
  // Ordering that makes this safe: a run popped from a free list and a record taken from the record
  // table belong to the reserving thread alone until published, so nobody else touches their pages;
  // a record's page-map entries are stored (releasing) only after its pages are open and its record is
  // complete, so the fault handler never resolves an address to a half-built block. A block being
  // freed is marked `closing` before its pages close, so a concurrent free of it is a double free and
  // `check()` skips it; it enters the quarantine FIFO (and so can be evicted and its run reused) only
  // after its pages are inaccessible. Every run in a free list or in quarantine is therefore closed.
  // Carving fresh address space (mmap, the frontier's mprotect) stays under the lock: it happens once
  // per 4 MiB of runs.

  /// Allocates a block of `size` bytes. `alignment` 0 means the configured policy; otherwise it must be
  /// a power of two (else a bad-alignment finding and nil). `zeroed` gives calloc semantics.
  @inlinable
  public mutating func allocate(
    size: UInt, alignment requested: UInt = 0, api: AllocationAPI, zeroed: Bool = false,
    stack: StackID = .none, thread: Int32 = 0
  ) -> HeapResult {
    let request = AllocationRequest(
      size: size, alignment: requested, api: api, zeroed: zeroed, stack: stack, thread: thread)
    return withUnsafeMutablePointer(to: &self) { core in
      Self.allocate(core: core, lock: nil, request)
    }
  }

  /// Frees the block at `address` with `api`. Not ours -> `owned == false`. A pointer of ours that is
  /// not a live block's start is reported (double, invalid or interior free) and otherwise ignored.
  @inlinable
  public mutating func deallocate(
    _ address: UInt, api: AllocationAPI, stack: StackID = .none, thread: Int32 = 0
  ) -> HeapResult {
    withUnsafeMutablePointer(to: &self) { core in
      Self.deallocate(core: core, lock: nil, address, api: api, stack: stack, thread: thread)
    }
  }

  /// realloc: the block always moves (a stale pointer to the old block is then a use-after-free);
  /// the data up to the smaller size is kept; the old block's canaries are checked. On failure the old
  /// block stays valid and the address is nil. `address == nil` is an allocation.
  @inlinable
  public mutating func reallocate(
    _ address: UInt?, size: UInt, api: AllocationAPI = .realloc, stack: StackID = .none,
    thread: Int32 = 0
  ) -> HeapResult {
    withUnsafeMutablePointer(to: &self) { core in
      Self.reallocate(
        core: core, lock: nil, address, size: size, api: api, stack: stack, thread: thread)
    }
  }

  /// One allocation's parameters, carried through its phases.
  @usableFromInline
  struct AllocationRequest {
    @usableFromInline var size: UInt
    @usableFromInline var alignment: UInt
    @usableFromInline var api: AllocationAPI
    @usableFromInline var zeroed: Bool
    @usableFromInline var stack: StackID
    @usableFromInline var thread: Int32

    @inlinable
    init(
      size: UInt, alignment: UInt, api: AllocationAPI, zeroed: Bool, stack: StackID, thread: Int32
    ) {
      self.size = size
      self.alignment = alignment
      self.api = api
      self.zeroed = zeroed
      self.stack = stack
      self.thread = thread
    }
  }

  /// What the locked first phase of an allocation decided: the record and the run are the caller's
  /// alone until `publishAllocation`.
  @usableFromInline
  struct PendingAllocation {
    @usableFromInline var record: UInt32
    @usableFromInline var placement: Placement
    @usableFromInline var alignment: UInt
  }

  @usableFromInline
  enum Reservation {
    case failed(Finding)
    case pending(PendingAllocation)
  }

  /// The phases of an allocation around `lock` (nil: the caller serializes, e.g. a single thread).
  @inlinable
  static func allocate(
    core: UnsafeMutablePointer<Self>, lock: HeapLock?, _ request: AllocationRequest
  ) -> HeapResult {
    var result = HeapResult()
    var forceCanary = false
    var counted = false
    while true {
      lock?.lock()
      let reservation = core.pointee.reserveAllocation(
        request, forceCanary: forceCanary, counted: counted)
      lock?.unlock()
      counted = true
      switch reservation {
      case .failed(let finding):
        result.findings.append(finding)
        return result
      case .pending(var pending):
        let failure = core.pointee.openPages(pending.placement)
        if failure == 0 { core.pointee.fillNewBlock(pending.placement, request) }
        lock?.lock()
        let outcome = core.pointee.publishAllocation(&pending, request, pageFailure: failure)
        lock?.unlock()
        switch outcome {
        case .published:
          result.address = pending.placement.address
          return result
        case .retryWithCanaries:
          // The kernel refused to open an mprotect'ed block's pages: this block gets canaries.
          forceCanary = true
        case .outOfMemory:
          result.findings.append(
            Finding(
              kind: .outOfMemory, address: 0, thread: request.thread, accessStack: request.stack,
              bytes: request.size))
          return result
        }
      }
    }
  }

  @inlinable
  static func deallocate(
    core: UnsafeMutablePointer<Self>, lock: HeapLock?, _ address: UInt, api: AllocationAPI,
    stack: StackID, thread: Int32
  ) -> HeapResult {
    var result = HeapResult()
    lock?.lock()
    let number = core.pointee.beginRelease(
      address, api: api, stack: stack, thread: thread, result: &result)
    if number != 0 {
      core.pointee.markClosing(record: number, api: api, stack: stack, thread: thread)
    }
    lock?.unlock()
    if number == 0 { return result }
    finishRelease(
      core: core, lock: lock, record: number, stack: stack, thread: thread,
      findings: &result.findings)
    return result
  }

  /// Release, phase 1 (the caller holds the lock): finds the block a free or realloc names, with the
  /// misuse and canary findings. Returns its record, or 0 when there is nothing to release.
  @inlinable
  mutating func beginRelease(
    _ address: UInt, api: AllocationAPI, stack: StackID, thread: Int32, result: inout HeapResult
  ) -> UInt32 {
    switch lookupForRelease(address, api: api, stack: stack, thread: thread) {
    case .notOurs:
      result.owned = false
      return 0
    case .misuse(let finding):
      result.findings.append(finding)
      return 0
    case .block(let found, let mismatch):
      if let mismatch { result.findings.append(mismatch) }
      if let corruption = checkCanaries(record: found, thread: thread, stack: stack) {
        result.findings.append(corruption)
      }
      return found
    }
  }

  /// Release, phases 2 and 3: the block's pages become inaccessible (no lock held across the
  /// syscall), then it enters quarantine (locked). The record must be marked closing already.
  @inlinable
  static func finishRelease(
    core: UnsafeMutablePointer<Self>, lock: HeapLock?, record number: UInt32, stack: StackID,
    thread: Int32, findings: inout FindingBuffer
  ) {
    core.pointee.closePages(record: number)
    lock?.lock()
    core.pointee.enterQuarantine(record: number, thread: thread, stack: stack, findings: &findings)
    lock?.unlock()
  }

  @inlinable
  static func reallocate(
    core: UnsafeMutablePointer<Self>, lock: HeapLock?, _ address: UInt?, size: UInt,
    api: AllocationAPI, stack: StackID, thread: Int32
  ) -> HeapResult {
    let request = AllocationRequest(
      size: size, alignment: 0, api: api, zeroed: false, stack: stack, thread: thread)
    guard let address else { return allocate(core: core, lock: lock, request) }
    var result = HeapResult()
    lock?.lock()
    let number = core.pointee.beginRelease(
      address, api: api, stack: stack, thread: thread, result: &result)
    // Moving: a concurrent free or realloc of this block is now a double free.
    if number != 0 { core.pointee.view.records[Int(number)].state = BlockRecord.moving }
    lock?.unlock()
    if number == 0 { return result }
    let old = core.pointee.view.records[Int(number)]
    let fresh = allocate(core: core, lock: lock, request)
    guard let newAddress = fresh.address else {
      if fresh.findings.count > 0 { result.findings.append(fresh.findings[0]) }
      lock?.lock()
      core.pointee.view.records[Int(number)].state = BlockState.live.rawValue
      lock?.unlock()
      return result
    }
    let kept = min(old.size, size)
    // The part beyond the old size is new memory: it already has the allocation fill.
    if kept > 0 { core.pointee.space.copy(from: old.address, to: newAddress, count: kept) }
    lock?.lock()
    core.pointee.markClosing(record: number, api: api, stack: stack, thread: thread)
    lock?.unlock()
    finishRelease(
      core: core, lock: lock, record: number, stack: stack, thread: thread,
      findings: &result.findings)
    result.address = newAddress
    return result
  }

  /// Phase 1 of an allocation (locked): policy, the run and the record. `counted`: a retry of the same
  /// allocation (already counted, already checked against limits and injection).
  @usableFromInline
  mutating func reserveAllocation(_ request: AllocationRequest, forceCanary: Bool, counted: Bool)
    -> Reservation
  {
    let size = request.size
    if !counted {
      statistics.allocations &+= 1
      if let failure = injectedOrLimitFailure(
        size: size, requested: request.alignment, thread: request.thread, stack: request.stack)
      {
        statistics.failedAllocations &+= 1
        return .failed(failure)
      }
    }
    let alignment = effectiveAlignment(size: size, requested: request.alignment)
    var protection = forceCanary ? .canary : statistics.mechanism
    if protection == .mprotect && statistics.vmasUsed + 2 > statistics.vmaBudget {
      protection = .canary
      warnBudgetExhausted()
    }
    guard let placement = choosePlacement(size: size, alignment: alignment, protection: protection),
      let number = takeRecord()
    else {
      // (A placement without a record: its run was never opened, so it goes straight back.)
      statistics.failedAllocations &+= 1
      return .failed(
        Finding(
          kind: .outOfMemory, address: 0, thread: request.thread, accessStack: request.stack,
          bytes: size))
    }
    // A recycled remembered record must stop resolving its old run before anything else happens.
    view.records[Int(number)].state = BlockRecord.unused
    // Counted now, so that concurrent allocations see the limit and the VMA budget in use.
    statistics.liveBlocks += 1
    statistics.liveBytes += size
    if placement.protection == .canary { statistics.canaryBlocks += 1 }
    if placement.protection == .mprotect && placement.accessible.length > 0 {
      statistics.vmasUsed += 2
    }
    return .pending(PendingAllocation(record: number, placement: placement, alignment: alignment))
  }

  /// Phase 2 of an allocation (unlocked): canary the accessible bytes around the block (see
  /// `canaryZones`); the block itself gets the allocation fill.
  @usableFromInline
  @inline(__always)
  func fillNewBlock(_ placed: Placement, _ request: AllocationRequest) {
    let address = placed.address
    let size = request.size
    let end = address + size
    let zones = canaryZones(
      accessible: placed.accessible, block: AddressRange(start: address, end: end),
      protection: placed.protection)
    if zones.below.length > 0 {
      space.fill(zones.below.start, count: zones.below.length, with: configuration.canaryByte)
    }
    if zones.above.length > 0 {
      space.fill(zones.above.start, count: zones.above.length, with: configuration.canaryByte)
    }
    if request.zeroed {
      // Guarded pages are always zero when handed out (fresh, guard-removed, or DONTNEED'd on free).
      if placed.protection == .canary && size > 0 { space.fill(address, count: size, with: 0) }
    } else if let fill = configuration.allocationFill, size > 0 {
      if let limit = configuration.allocationFillLimit, size > limit {
        space.fill(address, count: limit / 2, with: fill)
        space.fill(end - limit / 2, count: limit / 2, with: fill)
      } else {
        space.fill(address, count: size, with: fill)
      }
    }
  }

  @usableFromInline
  enum PublishOutcome {
    case published
    case retryWithCanaries
    case outOfMemory
  }

  /// Phase 3 of an allocation (locked): the record, then the page map. When the pages could not be
  /// opened (`pageFailure` is the errno) the reservation is undone: an mprotect'ed block is retried
  /// with canaries, a guard-marker failure is out of memory.
  @usableFromInline
  mutating func publishAllocation(
    _ pending: inout PendingAllocation, _ request: AllocationRequest, pageFailure: Int32
  ) -> PublishOutcome {
    let placed = pending.placement
    let number = pending.record
    if pageFailure != 0 {
      statistics.liveBlocks -= 1
      statistics.liveBytes -= request.size
      view.records[Int(number)].next = recordFreeList
      recordFreeList = number
      freeRecordCount += 1
      switch placed.protection {
      case .mprotect:
        // The run is still PROT_NONE (a failed split changes no protection): give it back, and
        // never ask again. The budget ends here; new blocks get canaries.
        if placed.accessible.length > 0 { statistics.vmasUsed -= 2 }
        pushFreeRun(
          list: RunClass.of(pages: placed.runPages).index, base: placed.runBase,
          reservation: placed.reservation)
        if !refusalWarningIssued {
          refusalWarningIssued = true
          warningHandler?(HeapWarning.pageOperationRefused.rawValue, Int(pageFailure))
        }
        statistics.vmaBudget = statistics.vmasUsed
        warnBudgetExhausted()
        return .retryWithCanaries
      default:
        // Guard markers (ENOMEM for page tables): the run is left half-guarded, so it is never
        // reused.
        statistics.failedAllocations &+= 1
        return .outOfMemory
      }
    }
    let address = placed.address
    let accessible = placed.accessible
    let record = view.records + Int(number)
    record.pointee = BlockRecord(
      sequence: statistics.allocations, address: address, size: request.size,
      alignment: pending.alignment, runBase: placed.runBase, accessibleStart: accessible.start,
      accessibleEnd: accessible.end, runPages: UInt32(truncatingIfNeeded: placed.runPages),
      allocationStack: request.stack.rawValue, freeStack: 0, allocationThread: request.thread,
      freeThread: 0, next: 0, reservation: UInt16(placed.reservation), api: request.api.rawValue,
      freeAPI: BlockRecord.noAPI, state: BlockState.live.rawValue,
      protection: placed.protection.rawValue)
    publish(record: number, run: placed)
    return .published
  }

  /// `count * size` for calloc / reallocarray, or a size-overflow finding when it does not fit: the
  /// caller decides (calloc returns NULL with ENOMEM).
  public static func multipliedSize(
    count: UInt, size: UInt, thread: Int32 = 0, stack: StackID = .none
  ) -> Result<UInt, SizeOverflow> {
    let (product, overflow) = count.multipliedReportingOverflow(by: size)
    if overflow {
      return .failure(
        SizeOverflow(
          finding: Finding(
            kind: .sizeOverflow, address: 0, thread: thread, accessStack: stack, detail: count,
            bytes: size)))
    }
    return .success(product)
  }

  // MARK: - Lookup

  /// The block whose run contains `address` (live, quarantined or released), if the heap knows it.
  /// Inlinable: the preload's reports call it, and must reach it specialized.
  @inlinable
  public func block(containing address: UInt) -> BlockSnapshot? {
    guard let number = validRecord(at: address) else { return nil }
    return view.records[Int(number)].snapshot()
  }

  /// The size of the live block starting exactly at `address` (malloc_usable_size: exact).
  /// Inlinable, like `validRecord`: a Swift program calls this on every Array growth, and a
  /// specialization compiled in another module could otherwise reach only the unspecialized
  /// `validRecord`, which instantiates generic metadata (locks, allocates) on the malloc path.
  @inlinable
  @inline(__always)
  public func usableSize(of address: UInt) -> UInt? {
    guard let number = validRecord(at: address) else { return nil }
    let record = view.records[Int(number)]
    guard record.state == BlockState.live.rawValue, record.address == address else { return nil }
    return record.size
  }

  /// Calls `body` with every live block, in record order (not allocation order once records recycle).
  public func forEachLiveBlock(_ body: (BlockSnapshot) -> Void) {
    var number: UInt32 = 1
    while number < recordBump {
      let record = view.records[Int(number)]
      if record.state == BlockState.live.rawValue { body(record.snapshot()) }
      number += 1
    }
  }

  /// Checks the canaries of every live block (and the free fill of quarantined canary blocks); calls
  /// `report` for each corruption. Returns the number of findings.
  @discardableResult
  public func check(thread: Int32 = 0, stack: StackID = .none, _ report: (Finding) -> Void) -> Int {
    var found = 0
    var number: UInt32 = 1
    while number < recordBump {
      let state = view.records[Int(number)].state
      if state == BlockState.live.rawValue {
        if let finding = checkCanaries(record: number, thread: thread, stack: stack) {
          report(finding)
          found += 1
        }
      } else if state == BlockState.quarantined.rawValue {
        if let finding = checkFreeFill(record: number, thread: thread, stack: stack) {
          report(finding)
          found += 1
        }
      }
      number += 1
    }
    return found
  }

  public var currentStatistics: HeapStatistics {
    var copy = statistics
    copy.reservations = view.reservationCount.pointee.load(ordering: .relaxed)
    copy.records = Int(recordBump) - 1 - freeRecordCount
    return copy
  }

  // MARK: - Internals: policy

  @usableFromInline
  mutating func injectedOrLimitFailure(size: UInt, requested: UInt, thread: Int32, stack: StackID)
    -> Finding?
  {
    if requested != 0 && (requested & (requested &- 1)) != 0 {
      return Finding(
        kind: .badAlignment, address: 0, thread: thread, accessStack: stack, detail: requested,
        bytes: size)
    }
    if requested > Self.maximumAlignment || size > Self.maximumBlockSize {
      return Finding(
        kind: .outOfMemory, address: 0, thread: thread, accessStack: stack, bytes: size)
    }
    if let limit = configuration.heapLimit, statistics.liveBytes + size > limit {
      return Finding(
        kind: .outOfMemory, address: 0, thread: thread, accessStack: stack, detail: limit,
        bytes: size)
    }
    let injection = configuration.faultInjection
    if injection.isEnabled {
      var fail = injection.failEvery != 0 && statistics.allocations % injection.failEvery == 0
      if injection.probability > 0 {
        // xorshift64*: one draw per allocation, so failures depend only on the seed and the sequence.
        randomState ^= randomState >> 12
        randomState ^= randomState << 25
        randomState ^= randomState >> 27
        let draw = Double((randomState &* 0x2545_F491_4F6C_DD1D) >> 11) / Double(1 << 53)
        if draw < injection.probability { fail = true }
      }
      if fail {
        return Finding(
          kind: .outOfMemory, address: 0, thread: thread, accessStack: stack, bytes: size)
      }
    }
    return nil
  }

  @usableFromInline
  func effectiveAlignment(size: UInt, requested: UInt) -> UInt {
    var alignment: UInt
    switch configuration.alignment {
    case .fixed(let value):
      // A value that is not a power of two is rounded up to one.
      alignment = value <= 1 ? 1 : UInt(1) << (UInt.bitWidth - (value - 1).leadingZeroBitCount)
    case .natural(let maximum):
      let lowest: UInt = size == 0 ? maximum : (UInt(1) << size.trailingZeroBitCount)
      alignment = min(lowest, max(1, maximum))
    }
    return max(alignment, requested)
  }

  @usableFromInline
  mutating func warnBudgetExhausted() {
    if budgetWarningIssued { return }
    budgetWarningIssued = true
    warningHandler?(HeapWarning.vmaBudgetExhausted.rawValue, statistics.vmaBudget)
  }

  // MARK: - Internals: runs and pages

  @usableFromInline
  struct Placement {
    @usableFromInline var reservation: Int
    @usableFromInline var runBase: UInt
    @usableFromInline var runPages: UInt
    @usableFromInline var address: UInt
    @usableFromInline var accessible: AddressRange
    @usableFromInline var protection: BlockProtection
    @usableFromInline var fresh: Bool
  }

  /// Finds or carves a run and decides where the block goes in it (locked). Its pages are opened
  /// later, unlocked (`openPages`). Nil when the address space says no.
  @usableFromInline
  mutating func choosePlacement(size: UInt, alignment: UInt, protection: BlockProtection)
    -> Placement?
  {
    let page = pageSize
    let guarded = protection != .canary
    var needed: UInt
    var redZone: UInt = 0
    if guarded {
      let span = alignment > page ? size + alignment - page : size
      needed = max(1, (span + page - 1) / page)
    } else {
      redZone = max(16, (configuration.redZoneSize + 15) & ~15)
      needed = max(1, (2 * redZone + size + alignment - 1 + page - 1) / page)
    }
    let runClass = RunClass.of(pages: needed)
    let runPages = runClass.pages
    let listIndex = runClass.index + (guarded ? 0 : RunClass.count)
    var fresh = false
    var reservation = 0
    var runBase: UInt = 0
    if let reused = popFreeRun(list: listIndex) {
      reservation = Int(reused.reservation)
      runBase = reused.base
    } else if let carved = carveRun(pages: runPages, protection: protection) {
      reservation = carved.reservation
      runBase = carved.base
      fresh = true
    } else {
      return nil
    }
    let runEnd = runBase + runPages * page
    var address: UInt
    var accessible: AddressRange
    if guarded {
      if configuration.placement == .upper {
        address = (runEnd - size) & ~(alignment - 1)
        accessible = AddressRange(start: address & ~(page - 1), end: runEnd)
      } else {
        address = (runBase + alignment - 1) & ~(alignment - 1)
        accessible = AddressRange(
          start: address & ~(page - 1), end: (address + size + page - 1) & ~(page - 1))
      }
      if accessible.end < accessible.start { accessible.end = accessible.start }
    } else {
      if configuration.placement == .upper {
        address = (runEnd - redZone - size) & ~(alignment - 1)
      } else {
        address = (runBase + redZone + alignment - 1) & ~(alignment - 1)
      }
      accessible = AddressRange(start: runBase, end: runEnd)
    }
    return Placement(
      reservation: reservation, runBase: runBase, runPages: runPages, address: address,
      accessible: accessible, protection: protection, fresh: fresh)
  }

  /// Makes the block's accessible pages usable and everything else in its run a guard (unlocked: the
  /// run is the caller's alone). Returns 0, or the errno of the refused call.
  /// Invariant of a free guarded run: every page of it (and its trailing guard) is inaccessible.
  @usableFromInline
  @inline(__always)
  func openPages(_ placement: Placement) -> Int32 {
    let page = pageSize
    let runEnd = placement.runBase + placement.runPages * page
    let accessible = placement.accessible
    do throws(PageError) {
      switch placement.protection {
      case .markers:
        if placement.fresh {
          // A fresh run is read-write below the frontier: guard everything but the block's pages.
          if accessible.start > placement.runBase {
            try space.advise(
              placement.runBase, length: accessible.start - placement.runBase, .guardInstall)
          }
          try space.advise(accessible.end, length: runEnd + page - accessible.end, .guardInstall)
        } else if accessible.length > 0 {
          try space.advise(accessible.start, length: accessible.length, .guardRemove)
        }
      case .mprotect:
        if accessible.length > 0 {
          try space.protect(accessible.start, length: accessible.length, to: .readWrite)
        }
      case .canary:
        break
      }
    } catch {
      precondition(
        error.errno != PageError.invalidArgument.errno, "page protection call rejected: \(error)")
      return error.errno
    }
    return 0
  }

  /// Carves a fresh run from the current reservation of its kind, making a new reservation if needed.
  @usableFromInline
  mutating func carveRun(pages: UInt, protection: BlockProtection) -> (
    reservation: Int, base: UInt
  )? {
    let page = pageSize
    let guarded = protection != .canary
    let stride = (pages + (guarded ? 1 : 0)) * page
    let reservationSize = max(16 * page, space.roundUpToPage(configuration.reservationSize))
    if stride * 16 >= reservationSize {
      // A big block gets its own reservation: [guard][run][guard].
      guard
        let index = makeReservation(
          length: stride + (guarded ? page : 0), protection: protection, dedicated: true)
      else { return nil }
      let entry = view.reservations + index
      let base = entry.pointee.base + (guarded ? page : 0)
      entry.pointee.bump = entry.pointee.end
      if protection == .markers && !extendFrontier(index, to: entry.pointee.end) { return nil }
      return (index, base)
    }
    var current = guarded ? currentGuardedReservation : currentCanaryReservation
    if current < 0 || view.reservations[current].bump + stride > view.reservations[current].end {
      guard
        let index = makeReservation(
          length: reservationSize, protection: protection, dedicated: false)
      else { return nil }
      current = index
      if guarded { currentGuardedReservation = index } else { currentCanaryReservation = index }
    }
    let entry = view.reservations + current
    let base = entry.pointee.bump
    if protection == .markers && !extendFrontier(current, to: base + stride) { return nil }
    entry.pointee.bump = base + stride
    return (current, base)
  }

  /// Markers mode keeps the uncarved part of a reservation PROT_NONE (a wild access far past the last
  /// run faults) and opens it read-write in chunks as runs are carved. The opened part merges with the
  /// read-write part below it, so a reservation costs at most 2 VMAs.
  @usableFromInline
  mutating func extendFrontier(_ index: Int, to target: UInt) -> Bool {
    let entry = view.reservations + index
    if target <= entry.pointee.frontier { return true }
    let chunk: UInt = 4 << 20
    let newFrontier = min(
      entry.pointee.end, max(target, (entry.pointee.frontier + chunk) & ~(chunk - 1)))
    do throws(PageError) {
      try space.protect(
        entry.pointee.frontier, length: newFrontier - entry.pointee.frontier, to: .readWrite)
    } catch {
      precondition(error.errno != PageError.invalidArgument.errno, "mprotect rejected: \(error)")
      return false
    }
    if entry.pointee.frontier == entry.pointee.base {
      // The reservation's first page is the lower guard of its first run.
      do throws(PageError) {
        try space.advise(entry.pointee.base, length: pageSize, .guardInstall)
      } catch {
        return false
      }
    }
    entry.pointee.frontier = newFrontier
    return true
  }

  @usableFromInline
  mutating func makeReservation(length: UInt, protection: BlockProtection, dedicated: Bool) -> Int?
  {
    let count = view.reservationCount.pointee.load(ordering: .relaxed)
    guard count < HeapHeader.maximumReservations else { return nil }
    let base: UInt
    do throws(PageError) {
      // Canary reservations are plain read-write memory; guarded ones start inaccessible.
      base = try space.map(
        at: nil, length: length, protection: protection == .canary ? .readWrite : .none,
        flags: .noReserve)
    } catch {
      return nil
    }
    var pageMap: UInt = 0
    if !dedicated {
      guard let map = mapTableMemory(length / pageSize * 4) else {
        try? space.unmap(base, length: length)
        return nil
      }
      pageMap = UInt(bitPattern: map)
    }
    let guarded = protection != .canary
    view.reservations[count] = ReservationEntry(
      base: base, length: length, pageMap: pageMap, bump: base + (guarded ? pageSize : 0),
      frontier: base, protection: protection.rawValue, dedicated: dedicated)
    view.reservationCount.pointee.store(count + 1, ordering: .releasing)
    // Real memory only: the preload's sampling path filters pointers by this extent first.
    if Space.self == SystemPageSpace.self { cshim_note_heap_range(base, base + length) }
    return count
  }

  /// Makes the block findable: every page of its run (and the trailing guard) names the record.
  @usableFromInline
  @inline(__always)
  func publish(record number: UInt32, run: Placement) {
    let entry = view.reservations[run.reservation]
    if entry.dedicated {
      view.dedicatedRecords[run.reservation].store(number, ordering: .releasing)
      return
    }
    let map = UnsafeMutablePointer<Atomic<UInt32>>(bitPattern: entry.pageMap)!
    let first = Int((run.runBase - entry.base) / pageSize)
    let pages = Int(run.runPages) + (entry.hasGuardPages ? 1 : 0)
    var index = first
    while index < first + pages {
      map[index].store(number, ordering: .releasing)
      index += 1
    }
  }

  @usableFromInline
  mutating func popFreeRun(list: Int) -> FreeRun? {
    let head = classHeads[list]
    if head == 0 { return nil }
    let run = freeRuns[Int(head)]
    classHeads[list] = run.next
    if run.next == 0 { classTails[list] = 0 }
    freeRuns[Int(head)].next = freeRunFreeList
    freeRunFreeList = head
    return run
  }

  @usableFromInline
  mutating func pushFreeRun(list: Int, base: UInt, reservation: Int) {
    var node = freeRunFreeList
    if node != 0 {
      freeRunFreeList = freeRuns[Int(node)].next
    } else {
      // Out of nodes (more free runs than records): the run's address space is simply not reused.
      guard freeRunBump < freeRunCapacity else { return }
      node = freeRunBump
      freeRunBump += 1
    }
    freeRuns[Int(node)] = FreeRun(base: base, next: 0, reservation: UInt16(reservation))
    let tail = classTails[list]
    if tail == 0 { classHeads[list] = node } else { freeRuns[Int(tail)].next = node }
    classTails[list] = node
  }

  /// Makes a freed block's pages inaccessible and gives their memory back (guarded blocks), or fills
  /// the block with the free byte (canary blocks, whose pages stay accessible). Unlocked: the record
  /// is `closing`, so nobody else touches the block.
  @usableFromInline
  @inline(__always)
  func closePages(record number: UInt32) {
    let record = view.records[Int(number)]
    let accessible = AddressRange(start: record.accessibleStart, end: record.accessibleEnd)
    switch BlockProtection(rawValue: record.protection) ?? .canary {
    case .markers:
      if accessible.length == 0 { return }
      do throws(PageError) {
        // Installing a marker discards the pages' contents: quarantine costs no RSS.
        try space.advise(accessible.start, length: accessible.length, .guardInstall)
      } catch {
        preconditionFailure("guard marker install on a block failed: \(error)")
      }
    case .mprotect:
      if accessible.length == 0 { return }
      do throws(PageError) {
        try space.advise(accessible.start, length: accessible.length, .dontNeed)
        // Back to PROT_NONE merges with the neighbouring guards: no new VMA, cannot hit the limit.
        try space.protect(accessible.start, length: accessible.length, to: .none)
      } catch {
        preconditionFailure("releasing a block's pages failed: \(error)")
      }
    case .canary:
      if let fill = configuration.freeFill, record.size > 0 {
        space.fill(record.address, count: record.size, with: fill)
      }
    }
  }

  // MARK: - Internals: records, quarantine

  @usableFromInline
  mutating func takeRecord() -> UInt32? {
    if recordFreeList != 0 {
      let number = recordFreeList
      recordFreeList = view.records[Int(number)].next
      freeRecordCount -= 1
      return number
    }
    if Int(recordBump) < view.recordCapacity {
      defer { recordBump += 1 }
      return recordBump
    }
    // The table is full: forget the oldest released block.
    if releasedHead != 0 {
      let number = releasedHead
      releasedHead = view.records[Int(number)].next
      if releasedHead == 0 { releasedTail = 0 }
      releasedCount -= 1
      return number
    }
    return nil
  }

  /// The record of the page holding `address`, if it is a record whose run (with its trailing guard)
  /// really contains `address` (page maps keep naming a released run's last record until reuse).
  @inlinable
  @inline(__always)
  func validRecord(at address: UInt) -> UInt32? {
    guard let reservation = view.reservationIndex(containing: address) else { return nil }
    let number = view.recordNumber(at: address, reservation: reservation)
    guard number != 0 else { return nil }
    let record = view.records[Int(number)]
    guard record.state != BlockRecord.unused, Int(record.reservation) == reservation else {
      return nil
    }
    let guardPage: UInt = view.reservations[reservation].hasGuardPages ? pageSize : 0
    guard address >= record.runBase,
      address < record.runBase + UInt(record.runPages) * pageSize + guardPage
    else { return nil }
    return number
  }

  @usableFromInline
  enum ReleaseLookup {
    case notOurs
    case misuse(Finding)
    case block(UInt32, mismatch: Finding?)
  }

  @usableFromInline
  @inline(__always)
  func lookupForRelease(_ address: UInt, api: AllocationAPI, stack: StackID, thread: Int32)
    -> ReleaseLookup
  {
    guard view.owns(address) else { return .notOurs }
    guard let number = validRecord(at: address) else {
      return .misuse(
        Finding(kind: .invalidFree, address: address, thread: thread, accessStack: stack))
    }
    let record = view.records[Int(number)]
    let snapshot = record.snapshot()
    let (relation, distance) = Self.relation(of: address, to: record)
    if record.state != BlockState.live.rawValue {
      let kind: FindingKind = address == record.address ? .doubleFree : .invalidFree
      return .misuse(
        Finding(
          kind: kind, address: address, block: snapshot, relation: relation, distance: distance,
          thread: thread, accessStack: stack))
    }
    if address != record.address {
      let kind: FindingKind = relation == .inside ? .interiorFree : .invalidFree
      return .misuse(
        Finding(
          kind: kind, address: address, block: snapshot, relation: relation, distance: distance,
          thread: thread, accessStack: stack))
    }
    var mismatch: Finding? = nil
    let allocatedWith = AllocationAPI(rawValue: record.api) ?? .malloc
    if allocatedWith.family != api.family {
      // The report names both functions: the block is still live, so its snapshot carries the
      // releasing call as its free API.
      var released = snapshot
      released.freeAPI = api
      mismatch = Finding(
        kind: .allocDeallocMismatch, address: address, block: released, thread: thread,
        accessStack: stack)
    }
    return .block(number, mismatch: mismatch)
  }

  @inlinable
  static func relation(of address: UInt, to record: BlockRecord) -> (BlockRelation, UInt) {
    if address < record.address { return (.beforeStart, record.address - address) }
    if address >= record.end { return (.pastEnd, address - record.end) }
    return (.inside, address - record.address)
  }

  /// The canary bytes below and above a block: everything accessible around it for canary-mode
  /// blocks (their only protection), for guarded blocks the `slackCanaryLimit` bytes nearest to it.
  @usableFromInline
  @inline(__always)
  func canaryZones(accessible: AddressRange, block: AddressRange, protection: BlockProtection)
    -> (below: AddressRange, above: AddressRange)
  {
    var below = AddressRange(start: accessible.start, end: max(block.start, accessible.start))
    var above = AddressRange(start: min(block.end, accessible.end), end: accessible.end)
    if protection != .canary, let limit = configuration.slackCanaryLimit {
      if below.length > limit { below = AddressRange(start: block.start - limit, end: block.start) }
      if above.length > limit { above = AddressRange(start: block.end, end: block.end + limit) }
    }
    return (below, above)
  }

  /// The first canary byte that is not the pattern, before or after the live block.
  @usableFromInline
  @inline(__always)
  func checkCanaries(record number: UInt32, thread: Int32, stack: StackID) -> Finding? {
    let record = view.records[Int(number)]
    let byte = configuration.canaryByte
    let zones = canaryZones(
      accessible: AddressRange(start: record.accessibleStart, end: record.accessibleEnd),
      block: AddressRange(start: record.address, end: record.end),
      protection: BlockProtection(rawValue: record.protection) ?? .canary)
    var bad: UInt? = nil
    if zones.below.length > 0 {
      bad = space.firstMismatch(zones.below.start, count: zones.below.length, expected: byte)
    }
    if bad == nil && zones.above.length > 0 {
      bad = space.firstMismatch(zones.above.start, count: zones.above.length, expected: byte)
    }
    guard let bad else { return nil }
    // Before the block, the byte nearest to the block is the interesting one for an underflow; the
    // scan finds the lowest, so look for the highest bad byte below the start.
    var reported = bad
    if bad < record.address {
      var probe = record.address - 1
      while probe > bad {
        if space.firstMismatch(probe, count: 1, expected: byte) != nil { break }
        probe -= 1
      }
      reported = probe
    }
    let (relation, distance) = Self.relation(of: reported, to: record)
    return Finding(
      kind: .canaryCorruption, access: .write, address: reported, block: record.snapshot(),
      relation: relation, distance: distance, thread: thread, accessStack: stack, detail: reported)
  }

  /// A quarantined canary block must still hold the free fill: anything else was written after free.
  @usableFromInline
  @inline(__always)
  func checkFreeFill(record number: UInt32, thread: Int32, stack: StackID) -> Finding? {
    let record = view.records[Int(number)]
    guard record.protection == BlockProtection.canary.rawValue, let fill = configuration.freeFill,
      record.size > 0,
      let bad = space.firstMismatch(record.address, count: record.size, expected: fill)
    else { return nil }
    return Finding(
      kind: .useAfterFree, access: .write, address: bad, block: record.snapshot(),
      relation: .inside,
      distance: bad - record.address, thread: thread, accessStack: stack, detail: bad)
  }

  /// Phase 1 of a free (locked): the block stops being live. Its pages are still open.
  @usableFromInline
  mutating func markClosing(
    record number: UInt32, api: AllocationAPI, stack: StackID, thread: Int32
  ) {
    let record = view.records + Int(number)
    record.pointee.state = BlockRecord.closing
    record.pointee.freeAPI = api.rawValue
    record.pointee.freeStack = stack.rawValue
    record.pointee.freeThread = thread
    record.pointee.next = 0
    statistics.liveBlocks -= 1
    statistics.liveBytes -= record.pointee.size
    let protection = BlockProtection(rawValue: record.pointee.protection) ?? .canary
    if protection == .canary { statistics.canaryBlocks -= 1 }
    statistics.quarantinedBlocks += 1
    statistics.quarantinedBytes += record.pointee.size
  }

  /// Phase 3 of a free (locked): the closed block joins the quarantine FIFO; the oldest ones leave it.
  @usableFromInline
  mutating func enterQuarantine(
    record number: UInt32, thread: Int32, stack: StackID, findings: inout FindingBuffer
  ) {
    let record = view.records + Int(number)
    record.pointee.state = BlockState.quarantined.rawValue
    if record.pointee.protection == BlockProtection.mprotect.rawValue
      && record.pointee.accessibleEnd > record.pointee.accessibleStart
    {
      statistics.vmasUsed -= 2
    }
    if quarantineTail == 0 {
      quarantineHead = number
    } else {
      view.records[Int(quarantineTail)].next = number
    }
    quarantineTail = number
    if configuration.noFree { return }
    while quarantineHead != 0
      && (statistics.quarantinedBlocks > configuration.quarantineMaxCount
        || statistics.quarantinedBytes > configuration.quarantineMaxBytes)
    {
      evictOldest(thread: thread, stack: stack, findings: &findings)
    }
  }

  /// The oldest quarantined block leaves quarantine: its run becomes reusable, its record is kept
  /// (state released) among the remembered ones.
  @usableFromInline
  mutating func evictOldest(thread: Int32, stack: StackID, findings: inout FindingBuffer) {
    let number = quarantineHead
    let record = view.records + Int(number)
    quarantineHead = record.pointee.next
    if quarantineHead == 0 { quarantineTail = 0 }
    statistics.quarantinedBlocks -= 1
    statistics.quarantinedBytes -= record.pointee.size
    if let late = checkFreeFill(record: number, thread: thread, stack: stack) {
      findings.append(late)
    }
    record.pointee.state = BlockState.released.rawValue
    record.pointee.next = 0
    let protection = BlockProtection(rawValue: record.pointee.protection) ?? .canary
    let list =
      RunClass.of(pages: UInt(record.pointee.runPages)).index
      + (protection == .canary ? RunClass.count : 0)
    pushFreeRun(
      list: list, base: record.pointee.runBase, reservation: Int(record.pointee.reservation))
    if releasedTail == 0 {
      releasedHead = number
    } else {
      view.records[Int(releasedTail)].next = number
    }
    releasedTail = number
    releasedCount += 1
    if releasedCount > configuration.rememberedReleasedBlocks {
      let oldest = releasedHead
      releasedHead = view.records[Int(oldest)].next
      if releasedHead == 0 { releasedTail = 0 }
      releasedCount -= 1
      view.records[Int(oldest)].state = BlockRecord.unused
      view.records[Int(oldest)].next = recordFreeList
      recordFreeList = oldest
      freeRecordCount += 1
    }
  }
}
