// Physical memory shared by the simulated processes: frames with lazily materialised contents, the
// zero page, swap slots, a replacement policy, page caches of shared objects, and the OOM killer.

import PageSpace

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// Which resident page gives way when every frame is in use.
public enum ReplacementPolicy: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
  /// The page loaded longest ago.
  case fifo
  /// The page used longest ago (exact, from a per-frame use stamp).
  case lru
  /// Second chance: a hand sweeps the frames, sparing (and clearing) referenced ones once.
  case clock
  /// Belady's optimal: the page whose next use is farthest in the future. Needs the future access
  /// sequence (`SimulatedMachine.setFutureReferences`), so it is for trace replay only.
  case optimal
  public var description: String { rawValue }
}

/// Something the simulator did, for tests and tools (`SimulatedMachine.eventHandler`).
public enum SimulatorEvent: Sendable, Hashable {
  case minorFault(process: Int, address: UInt, access: MemoryAccess)
  case majorFault(process: Int, address: UInt, access: MemoryAccess)
  case invalidAccess(process: Int, fault: PageFault)
  case copyOnWrite(process: Int, address: UInt)
  case swapOut(process: Int, address: UInt, slot: Int)
  case swapIn(process: Int, address: UInt, slot: Int)
  case discard(process: Int, address: UInt)
  case outOfMemoryKill(process: Int, residentPages: Int)
}

/// What a frame holds.
enum FrameKind: UInt8 {
  case free = 0
  /// An anonymous page, mapped by one or more page tables (several after fork).
  case anonymous = 1
  /// A page of a shared object's page cache (shared anonymous memory or a file).
  case pageCache = 2
}

/// A mapping of a frame by a page table: the process id and the virtual page number, packed.
typealias MapperKey = UInt64
@inline(__always) func mapperKey(process: Int, vpn: UInt64) -> MapperKey {
  (UInt64(process) << 36) | vpn
}
@inline(__always) func mapperProcess(_ key: MapperKey) -> Int { Int(key >> 36) }
@inline(__always) func mapperVPN(_ key: MapperKey) -> UInt64 { key & ((1 << 36) - 1) }

/// Machine-wide configuration.
public struct MachineConfiguration: Sendable, Hashable {
  /// Physical frames available to processes (nil: unlimited, frames are created as needed).
  public var frames: Int?
  /// Swap slots (0: no swap, as on the measured machine).
  public var swapSlots: Int
  public var policy: ReplacementPolicy
  /// The overcommit heuristic's limit (`overcommit_memory=0`): one accountable mapping larger than
  /// RAM + swap fails with ENOMEM. In pages.
  public var commitLimitPages: UInt
  public init(
    frames: Int? = nil, swapSlots: Int = 0, policy: ReplacementPolicy = .clock,
    commitLimitPages: UInt = 1 << 22
  ) {
    self.frames = frames
    self.swapSlots = swapSlots
    self.policy = policy
    self.commitLimitPages = commitLimitPages
  }
}

/// The physical side shared by several `SimulatedPageSpace` processes. Not thread-safe: one thread
/// drives a machine and its processes at a time.
public final class SimulatedMachine {
  public let configuration: MachineConfiguration
  public var policy: ReplacementPolicy
  /// Called for every event when set (slow paths only: faults, swaps, kills).
  public var eventHandler: ((SimulatorEvent) -> Void)?

  // Frame table: parallel arrays indexed by frame number. Frame 0 is the zero page (never written).
  var frameCapacity: Int
  var frameData: UnsafeMutablePointer<UnsafeMutableRawPointer?>
  /// A frame without a buffer keeps up to three non-zero bytes here (a trace that touches a byte per
  /// page must not cost 4 KiB of host memory per page): bits 60-63 hold the count, entry i sits at
  /// bits 20i (12 bits of offset, 8 of value).
  var frameSparse: UnsafeMutablePointer<UInt64>
  /// The tick of the frame's last access (LRU, Clock's reference test, OPT's position).
  var frameStamp: UnsafeMutablePointer<UInt64>
  /// Clock: the frame counts as referenced while its stamp is at or above this mark.
  var frameClockMark: UnsafeMutablePointer<UInt64>
  /// FIFO: when the frame was loaded.
  var frameLoaded: UnsafeMutablePointer<UInt64>
  var frameKind: UnsafeMutablePointer<FrameKind>
  /// The number of page-table entries mapping the frame.
  var frameMapCount: UnsafeMutablePointer<UInt32>
  /// Anonymous: the single mapper (when map count is 1). Page cache: object id << 32 | page index.
  var frameOwner: UnsafeMutablePointer<UInt64>
  /// Every mapper, for frames mapped more than once and for page-cache frames.
  var frameMappers: [UInt32: [MapperKey]] = [:]
  var freeFrames: [UInt32] = []
  var nextUnusedFrame: UInt32 = 1
  public private(set) var framesInUse = 0
  var clockHand: UInt32 = 1
  /// FIFO: frames in load order with their load stamps (an entry whose stamp no longer matches the
  /// frame's is stale: the frame was freed or reloaded since); `fifoHead` is the first live entry.
  var fifoFrames: [UInt32] = []
  var fifoLoads: [UInt64] = []
  var fifoHead = 0
  /// A frame that must not be chosen as victim right now (the source of a copy in progress).
  var pinnedFrame: UInt32 = 0

  /// The access clock: every access made by any process advances it by one.
  var tick: UInt64 = 0
  var loadCounter: UInt64 = 0

  // Swap: each slot holds a page's contents (nil = zero) and the number of entries referring to it.
  var slotData: [UnsafeMutableRawPointer?] = []
  var slotSparse: [UInt64] = []
  var slotRefs: [UInt32] = []
  var freeSlots: [Int] = []
  public var swapSlotsInUse: Int { slotRefs.count - freeSlots.count }

  // OPT: the future, as page keys, and for each position the position of the next use.
  var futureNextUse: [Int] = []

  // Processes and shared objects.
  var processes: [Int: Unmanaged<SimulatedPageSpace>] = [:]
  var nextProcessID = 1
  var objects: [UInt32: MemoryObject] = [:]
  var nextObjectID: UInt32 = 1
  var nextAnonIdentity: UInt64 = 1
  public private(set) var killedProcesses: [Int] = []

  public init(_ configuration: MachineConfiguration = MachineConfiguration()) {
    self.configuration = configuration
    self.policy = configuration.policy
    frameCapacity = min(configuration.frames.map { $0 + 1 } ?? 1024, 1 << 20)
    frameData = .allocate(capacity: frameCapacity)
    frameData.initialize(repeating: nil, count: frameCapacity)
    frameSparse = .allocate(capacity: frameCapacity)
    frameSparse.initialize(repeating: 0, count: frameCapacity)
    frameStamp = .allocate(capacity: frameCapacity)
    frameStamp.initialize(repeating: 0, count: frameCapacity)
    frameClockMark = .allocate(capacity: frameCapacity)
    frameClockMark.initialize(repeating: 0, count: frameCapacity)
    frameLoaded = .allocate(capacity: frameCapacity)
    frameLoaded.initialize(repeating: 0, count: frameCapacity)
    frameKind = .allocate(capacity: frameCapacity)
    frameKind.initialize(repeating: .free, count: frameCapacity)
    frameMapCount = .allocate(capacity: frameCapacity)
    frameMapCount.initialize(repeating: 0, count: frameCapacity)
    frameOwner = .allocate(capacity: frameCapacity)
    frameOwner.initialize(repeating: 0, count: frameCapacity)
  }

  deinit {
    for frame in 0..<frameCapacity { frameData[frame]?.deallocate() }
    for data in slotData { data?.deallocate() }
    frameData.deallocate()
    frameSparse.deallocate()
    frameStamp.deallocate()
    frameClockMark.deallocate()
    frameLoaded.deallocate()
    frameKind.deallocate()
    frameMapCount.deallocate()
    frameOwner.deallocate()
  }

  /// The frames a process may use (nil: unlimited).
  public var frameLimit: Int? { configuration.frames }

  /// Gives OPT the future: the sequence of page keys (virtual page numbers of one process) that the
  /// coming accesses will touch, one per load/store, starting with the next one.
  public func setFutureReferences(pages: [UInt64]) {
    var next = [Int](repeating: Int.max, count: pages.count)
    var lastSeen: [UInt64: Int] = [:]
    for position in stride(from: pages.count - 1, through: 0, by: -1) {
      next[position] = lastSeen[pages[position]] ?? Int.max
      lastSeen[pages[position]] = position
    }
    futureNextUse = next
    tick = 0
    // Frames already resident: their next use is their first appearance in the future.
    for frame in 1..<nextUnusedFrame where frameKind[Int(frame)] != .free {
      frameStamp[Int(frame)] = UInt64.max
    }
    firstUseOfResident = lastSeen
  }
  var firstUseOfResident: [UInt64: Int] = [:]

  // MARK: Frames

  private func growFrameTable(to needed: Int) {
    var capacity = frameCapacity
    while capacity < needed { capacity *= 2 }
    func grow<T>(_ pointer: inout UnsafeMutablePointer<T>, _ fill: T) {
      let grown = UnsafeMutablePointer<T>.allocate(capacity: capacity)
      grown.moveInitialize(from: pointer, count: frameCapacity)
      (grown + frameCapacity).initialize(repeating: fill, count: capacity - frameCapacity)
      pointer.deallocate()
      pointer = grown
    }
    grow(&frameData, nil)
    grow(&frameSparse, 0)
    grow(&frameStamp, 0)
    grow(&frameClockMark, 0)
    grow(&frameLoaded, 0)
    grow(&frameKind, .free)
    grow(&frameMapCount, 0)
    grow(&frameOwner, 0)
    frameCapacity = capacity
  }

  private func takeFrame() -> UInt32? {
    if let frame = freeFrames.popLast() { return frame }
    if let limit = configuration.frames, Int(nextUnusedFrame) > limit { return nil }
    if Int(nextUnusedFrame) >= frameCapacity { growFrameTable(to: Int(nextUnusedFrame) + 1) }
    nextUnusedFrame += 1
    return nextUnusedFrame - 1
  }

  private func claim(_ frame: UInt32, kind: FrameKind) {
    let f = Int(frame)
    frameKind[f] = kind
    frameMapCount[f] = 0
    frameOwner[f] = 0
    frameStamp[f] = tick
    frameClockMark[f] = 0
    loadCounter += 1
    frameLoaded[f] = loadCounter
    framesInUse += 1
    if configuration.frames != nil {
      // Recorded under every policy (`policy` may switch to FIFO mid-run), so the queue must not
      // grow with the trace: only FIFO evictions consume it, and frames freed without an eviction
      // leave stale entries. Compacting when it outgrows the frames in use keeps it bounded.
      fifoFrames.append(frame)
      fifoLoads.append(loadCounter)
      if fifoFrames.count - fifoHead > 2 * framesInUse + 4096 { compactLoadQueue() }
    }
  }

  /// Drops the load queue's stale entries (frames freed, reloaded or already evicted since). Each
  /// live frame has exactly one matching entry, so at most `framesInUse` remain.
  private func compactLoadQueue() {
    var kept = 0
    for i in fifoHead..<fifoFrames.count {
      let frame = fifoFrames[i]
      guard frameKind[Int(frame)] != .free && frameLoaded[Int(frame)] == fifoLoads[i] else {
        continue
      }
      fifoFrames[kept] = frame
      fifoLoads[kept] = fifoLoads[i]
      kept += 1
    }
    fifoFrames.removeLast(fifoFrames.count - kept)
    fifoLoads.removeLast(fifoLoads.count - kept)
    fifoHead = 0
  }

  /// A zero-filled frame for `requester`, evicting (or OOM-killing) when memory is full. Nil when the
  /// requester itself was killed.
  func allocateFrame(kind: FrameKind, for requester: SimulatedPageSpace) -> UInt32? {
    while true {
      if requester.isKilled { return nil }
      if let frame = takeFrame() {
        claim(frame, kind: kind)
        return frame
      }
      if !evictOne() { outOfMemoryKill() }
    }
  }

  /// 512 consecutive fresh frames for a THP, or nil (the caller falls back to small pages). Never
  /// reclaims: Linux's THP fault does not wait for compaction in `defrag=madvise` mode either.
  func allocateHugeFrames() -> UInt32? {
    let base = nextUnusedFrame
    if let limit = configuration.frames, Int(base) + 511 > limit { return nil }
    if Int(base) + 512 > frameCapacity { growFrameTable(to: Int(base) + 512) }
    nextUnusedFrame += 512
    for frame in base..<(base + 512) { claim(frame, kind: .anonymous) }
    return base
  }

  func releaseFrame(_ frame: UInt32) {
    let f = Int(frame)
    precondition(frameKind[f] != .free, "double release of frame \(frame)")
    frameKind[f] = .free
    frameData[f]?.deallocate()
    frameData[f] = nil
    frameSparse[f] = 0
    frameMappers[frame] = nil
    frameMapCount[f] = 0
    framesInUse -= 1
    freeFrames.append(frame)
  }

  /// The frame's bytes, materialised (zero-filled, sparse bytes applied) on first need.
  func writableData(_ frame: UInt32) -> UnsafeMutableRawPointer {
    let f = Int(frame)
    if let data = frameData[f] { return data }
    let data = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)
    data.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
    let sparse = frameSparse[f]
    for i in 0..<Int(sparse >> 60) {
      let entry = sparse >> UInt64(20 * i)
      data.storeBytes(
        of: UInt8(truncatingIfNeeded: entry >> 12), toByteOffset: Int(entry & 0xfff), as: UInt8.self
      )
    }
    frameSparse[f] = 0
    frameData[f] = data
    return data
  }

  /// The frame's bytes for bulk reading; nil when the frame is all zeros.
  func readableData(_ frame: UInt32) -> UnsafeMutableRawPointer? {
    if let data = frameData[Int(frame)] { return data }
    return frameSparse[Int(frame)] == 0 ? nil : writableData(frame)
  }

  @inline(__always)
  func readByte(_ frame: UInt32, _ offset: Int) -> UInt8 {
    let f = Int(frame)
    if let data = frameData[f] { return data.load(fromByteOffset: offset, as: UInt8.self) }
    let sparse = frameSparse[f]
    guard sparse != 0 else { return 0 }
    for i in 0..<Int(sparse >> 60) {
      let entry = sparse >> UInt64(20 * i)
      if Int(entry & 0xfff) == offset { return UInt8(truncatingIfNeeded: entry >> 12) }
    }
    return 0
  }

  @inline(__always)
  func writeByte(_ frame: UInt32, _ offset: Int, _ value: UInt8) {
    let f = Int(frame)
    if let data = frameData[f] {
      data.storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
      return
    }
    let sparse = frameSparse[f]
    let count = Int(sparse >> 60)
    for i in 0..<count {
      let shift = UInt64(20 * i)
      if Int((sparse >> shift) & 0xfff) == offset {
        frameSparse[f] = (sparse & ~(0xff000 << shift)) | (UInt64(value) << (shift + 12))
        return
      }
    }
    guard value != 0 else { return }
    if count < 3 {
      let entry = UInt64(offset) | UInt64(value) << 12
      frameSparse[f] =
        (sparse & ((1 << 60) - 1)) | entry << UInt64(20 * count) | UInt64(count + 1) << 60
      return
    }
    writableData(frame).storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
  }

  func copyFrame(from source: UInt32, to destination: UInt32) {
    if let data = frameData[Int(source)] {
      writableData(destination).copyMemory(from: data, byteCount: 4096)
    } else {
      frameSparse[Int(destination)] = frameSparse[Int(source)]
    }
  }

  /// Moves a frame's contents into a swap slot (and back): no copy.
  func moveContents(frame: UInt32, toSlot slot: Int) {
    slotData[slot] = frameData[Int(frame)]
    slotSparse[slot] = frameSparse[Int(frame)]
    frameData[Int(frame)] = nil
    frameSparse[Int(frame)] = 0
  }

  /// Brings a slot's contents into a frame: moved if this was the slot's last user, else copied.
  func takeContents(slot: Int, into frame: UInt32) {
    if slotRefs[slot] == 1 {
      frameData[Int(frame)] = slotData[slot]
      frameSparse[Int(frame)] = slotSparse[slot]
      slotData[slot] = nil
      slotSparse[slot] = 0
    } else if let data = slotData[slot] {
      writableData(frame).copyMemory(from: data, byteCount: 4096)
    } else {
      frameSparse[Int(frame)] = slotSparse[slot]
    }
  }

  // MARK: Reverse mappings

  func addMapper(_ frame: UInt32, _ key: MapperKey) {
    let f = Int(frame)
    let count = frameMapCount[f]
    if frameKind[f] == .anonymous && count == 0 {
      frameOwner[f] = key
    } else if frameKind[f] == .anonymous && count == 1 {
      frameMappers[frame] = [frameOwner[f], key]
    } else {
      frameMappers[frame, default: []].append(key)
    }
    frameMapCount[f] = count + 1
  }

  /// Removes one mapping; returns the remaining map count.
  @discardableResult
  func removeMapper(_ frame: UInt32, _ key: MapperKey) -> UInt32 {
    let f = Int(frame)
    let count = frameMapCount[f]
    precondition(count > 0, "unmapping frame \(frame) that has no mapper")
    if frameKind[f] == .anonymous && count == 1 {
      frameOwner[f] = 0
    } else {
      var list = frameMappers[frame] ?? []
      if let at = list.firstIndex(of: key) { list.remove(at: at) }
      if frameKind[f] == .anonymous && list.count == 1 {
        frameOwner[f] = list[0]
        frameMappers[frame] = nil
      } else {
        frameMappers[frame] = list.isEmpty ? nil : list
      }
    }
    frameMapCount[f] = count - 1
    return count - 1
  }

  func mappers(of frame: UInt32) -> [MapperKey] {
    let f = Int(frame)
    if frameKind[f] == .anonymous && frameMapCount[f] == 1 { return [frameOwner[f]] }
    return frameMappers[frame] ?? []
  }

  func process(_ id: Int) -> SimulatedPageSpace? { processes[id]?.takeUnretainedValue() }

  // MARK: Swap

  func allocateSlot() -> Int? {
    if let slot = freeSlots.popLast() { return slot }
    guard slotRefs.count < configuration.swapSlots else { return nil }
    slotRefs.append(0)
    slotData.append(nil)
    slotSparse.append(0)
    return slotRefs.count - 1
  }

  var hasFreeSlot: Bool { !freeSlots.isEmpty || slotRefs.count < configuration.swapSlots }

  func releaseSlotReference(_ slot: Int) {
    slotRefs[slot] -= 1
    if slotRefs[slot] == 0 {
      slotData[slot]?.deallocate()
      slotData[slot] = nil
      slotSparse[slot] = 0
      freeSlots.append(slot)
    }
  }

  // MARK: Replacement

  /// Whether `frame` can be reclaimed now, and whether that needs a swap slot.
  private func reclaimability(_ frame: UInt32) -> (possible: Bool, needsSlot: Bool) {
    let f = Int(frame)
    guard frameKind[f] != .free, frame != pinnedFrame else { return (false, false) }
    var discardable = true
    for key in mappers(of: frame) {
      guard let process = process(mapperProcess(key)) else { continue }
      let state = process.reclaimState(vpn: mapperVPN(key))
      if state.locked { return (false, false) }
      if !state.cleanLazyFree { discardable = false }
    }
    if frameKind[f] == .pageCache {
      let owner = frameOwner[f]
      guard let object = objects[UInt32(owner >> 32)] else { return (true, false) }
      return (true, object.isShmem)
    }
    return (true, !discardable)
  }

  func evictableNow(_ frame: UInt32) -> Bool { evictable(frame) }

  private func evictable(_ frame: UInt32) -> Bool {
    let state = reclaimability(frame)
    return state.possible && (!state.needsSlot || hasFreeSlot)
  }

  /// Chooses a victim by the policy and reclaims it. False when nothing can be reclaimed.
  func evictOne() -> Bool {
    guard let victim = chooseVictim() else { return false }
    reclaim(victim)
    return true
  }

  private func chooseVictim() -> UInt32? {
    let end = nextUnusedFrame
    guard end > 1 else { return nil }
    switch policy {
    case .fifo:
      return oldestLoaded()
    case .lru, .optimal:
      var best: UInt32? = nil
      var bestScore = UInt64.max
      for frame in UInt32(1)..<end where frameKind[Int(frame)] != .free {
        let score: UInt64
        switch policy {
        case .fifo: score = frameLoaded[Int(frame)]
        case .lru: score = frameStamp[Int(frame)]
        default: score = UInt64.max - UInt64(nextUse(of: frame))
        }
        // Ties go to the lowest frame, like the policy-level simulation's lowest slot.
        if (best == nil || score < bestScore) && evictable(frame) {
          best = frame
          bestScore = score
        }
      }
      return best
    case .clock:
      // Two full sweeps: the first may only clear reference marks.
      var steps = 0
      let span = Int(end - 1)
      while steps < 2 * span + 1 {
        let frame = clockHand
        clockHand = clockHand + 1 >= end ? 1 : clockHand + 1
        steps += 1
        let f = Int(frame)
        guard frameKind[f] != .free, evictable(frame) else { continue }
        if frameStamp[f] >= frameClockMark[f] {
          frameClockMark[f] = tick &+ 1
          continue
        }
        return frame
      }
      return nil
    }
  }

  /// FIFO from the load queue: the oldest live, reclaimable frame (O(1) amortised).
  private func oldestLoaded() -> UInt32? {
    if fifoHead > 4096 && fifoHead * 2 > fifoFrames.count {
      fifoFrames.removeFirst(fifoHead)
      fifoLoads.removeFirst(fifoHead)
      fifoHead = 0
    }
    var i = fifoHead
    while i < fifoFrames.count {
      let frame = fifoFrames[i]
      let live = frameKind[Int(frame)] != .free && frameLoaded[Int(frame)] == fifoLoads[i]
      if live && evictable(frame) {
        fifoLoads[i] = 0
        if i == fifoHead { fifoHead += 1 }
        return frame
      }
      if !live && i == fifoHead { fifoHead += 1 }
      i += 1
    }
    return nil
  }

  /// OPT: the position of the frame's next use (Int.max: never again).
  private func nextUse(of frame: UInt32) -> Int {
    let stamp = frameStamp[Int(frame)]
    if stamp == UInt64.max {
      // Resident before the future was given: its next use is the first occurrence of its page.
      let key = mapperVPN(mappers(of: frame).first ?? 0)
      return firstUseOfResident[key] ?? Int.max
    }
    let position = Int(stamp)
    return position < futureNextUse.count ? futureNextUse[position] : Int.max
  }

  /// Reclaims one frame: anonymous pages go to swap (or are discarded if MADV_FREE'd and clean),
  /// page-cache pages are written back (files) or swapped (shmem), then every mapping is removed.
  func reclaim(_ frame: UInt32) {
    let f = Int(frame)
    let (_, needsSlot) = reclaimability(frame)
    let mappers = mappers(of: frame)
    if frameKind[f] == .pageCache {
      let owner = frameOwner[f]
      let object = objects[UInt32(owner >> 32)]
      let page = Int(owner & 0xffff_ffff)
      for key in mappers {
        process(mapperProcess(key))?.dropMapping(vpn: mapperVPN(key), frame: frame)
      }
      if let object {
        if object.isShmem {
          let slot = allocateSlot()!
          slotRefs[slot] = 1
          moveContents(frame: frame, toSlot: slot)
          object.pages[page] = .swapped(slot)
          if let process = mappers.first.map({ mapperProcess($0) }) ?? object.lastMapper {
            self.process(process)?.counters.swapOuts += 1
          }
        } else {
          object.writeBack(page: page, from: self, frame: frame)
          object.pages[page] = .absent
        }
      }
      releaseFrame(frame)
      return
    }
    if needsSlot {
      let slot = allocateSlot()!
      slotRefs[slot] = UInt32(mappers.count)
      moveContents(frame: frame, toSlot: slot)
      for key in mappers {
        let process = process(mapperProcess(key))
        process?.swapOutMapping(vpn: mapperVPN(key), frame: frame, slot: slot)
      }
      if frameKind[f] != .free { releaseFrame(frame) }
    } else {
      for key in mappers {
        process(mapperProcess(key))?.discardMapping(vpn: mapperVPN(key), frame: frame)
      }
      if frameKind[f] != .free { releaseFrame(frame) }
    }
  }

  /// The OOM killer: the process with the most resident and swapped pages dies.
  func outOfMemoryKill() {
    var victim: SimulatedPageSpace? = nil
    var worst = -1
    for (_, reference) in processes {
      let process = reference.takeUnretainedValue()
      guard !process.isKilled else { continue }
      let badness = process.counters.residentPages + process.swappedPages
      if badness > worst {
        worst = badness
        victim = process
      }
    }
    guard let victim else { preconditionFailure("out of memory with no process to kill") }
    eventHandler?(
      .outOfMemoryKill(process: victim.processID, residentPages: victim.counters.residentPages))
    killedProcesses.append(victim.processID)
    victim.killByOOM()
  }

  // MARK: Processes

  func register(_ process: SimulatedPageSpace) -> Int {
    let id = nextProcessID
    nextProcessID += 1
    processes[id] = Unmanaged.passUnretained(process)
    return id
  }

  func unregister(_ id: Int) { processes[id] = nil }

  func newAnonIdentity() -> UInt64 {
    nextAnonIdentity += 1
    return nextAnonIdentity - 1
  }

  func makeObject(pages: Int, file: SimulatedFile?) -> MemoryObject {
    let object = MemoryObject(id: nextObjectID, pages: pages, file: file)
    nextObjectID += 1
    objects[object.id] = object
    return object
  }
}
