import CShims
import Synchronization

/// A deduplicating store of call stacks: each distinct sequence of return addresses is kept once and
/// named by a `StackID`. Everything lives in one `MAP_NORESERVE` mapping (paid for only as it fills),
/// never in malloc'd memory, so the malloc path and the SIGSEGV handler can use it.
///
/// Lookups are lock-free: a stack is written completely before its id is published into the hash
/// table with a release store, and readers load slots with acquire. Inserts of new stacks serialize on
/// a short spin lock (only the bookkeeping of one append: no syscall inside). A depot that is full
/// returns `StackID.none` for new stacks (existing ones are still found) and counts the drops.
///
/// `StackDepot` is a handle (a pointer): copies share the same depot.
public struct StackDepot: @unchecked Sendable {
  /// The most frames a stack may have.
  public static let maximumDepth = 64

  struct Header: ~Copyable {
    let lock: Atomic<UInt32>
    /// The next id to hand out (ids start at 1; 0 is `StackID.none`).
    let nextID: Atomic<UInt32>
    /// PCs used in the pool.
    let pcsUsed: Atomic<UInt>
    let dropped: Atomic<UInt>
    let stackCapacity: UInt32
    let tableMask: UInt32
    let pcCapacity: UInt
  }

  /// One stored stack: where its PCs are in the pool.
  struct Entry {
    var hash: UInt64
    var firstPC: UInt32
    var frameCount: UInt32
  }

  let header: UnsafeMutablePointer<Header>
  /// Open-addressing table of ids (0 = empty), `tableMask + 1` slots.
  let slots: UnsafeMutablePointer<Atomic<UInt32>>
  /// Entries indexed by id (entry 0 unused).
  let entries: UnsafeMutablePointer<Entry>
  let pcs: UnsafeMutablePointer<UInt>
  /// The whole mapping, for `destroy` and for excluding it from the leak scan.
  public let region: (base: UInt, length: UInt)

  /// Maps a depot for up to `stackCapacity` distinct stacks holding `pcCapacity` frames in total.
  /// Returns nil if the mapping fails.
  public init?(stackCapacity: Int = 1 << 18, pcCapacity: Int = 1 << 23) {
    precondition(stackCapacity > 0 && stackCapacity < Int(UInt32.max / 4) && pcCapacity > 0)
    var tableSize = 1
    while tableSize < stackCapacity * 2 { tableSize <<= 1 }
    let page = Int(cshim_page_size())
    func roundUp(_ value: Int) -> Int { (value + page - 1) / page * page }
    let headerBytes = roundUp(MemoryLayout<Header>.stride)
    let slotBytes = roundUp(tableSize * MemoryLayout<Atomic<UInt32>>.stride)
    let entryBytes = roundUp((stackCapacity + 1) * MemoryLayout<Entry>.stride)
    let pcBytes = roundUp(pcCapacity * MemoryLayout<UInt>.stride)
    let total = headerBytes + slotBytes + entryBytes + pcBytes
    var raw: UnsafeMutableRawPointer?
    // MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, read-write.
    guard cshim_mmap(nil, total, 0x3, 0x02 | 0x20 | 0x4000, -1, 0, &raw) == 0, let base = raw else {
      return nil
    }
    region = (UInt(bitPattern: base), UInt(total))
    header = base.bindMemory(to: Header.self, capacity: 1)
    slots = (base + headerBytes).bindMemory(to: Atomic<UInt32>.self, capacity: tableSize)
    entries = (base + headerBytes + slotBytes).bindMemory(
      to: Entry.self, capacity: stackCapacity + 1)
    pcs = (base + headerBytes + slotBytes + entryBytes).bindMemory(
      to: UInt.self, capacity: pcCapacity)
    // Fresh anonymous memory is zero, which is what every Atomic(0) and empty slot looks like; the
    // explicit initialization keeps the typed memory model honest for the header.
    header.initialize(
      to: Header(
        lock: Atomic(0), nextID: Atomic(1), pcsUsed: Atomic(0), dropped: Atomic(0),
        stackCapacity: UInt32(stackCapacity), tableMask: UInt32(tableSize - 1),
        pcCapacity: UInt(pcCapacity)))
  }

  /// Unmaps the depot. Every copy of this handle becomes invalid.
  public func destroy() {
    _ = cshim_munmap(UnsafeMutableRawPointer(bitPattern: region.base), Int(region.length))
  }

  /// The number of distinct stacks stored.
  public var count: Int { Int(header.pointee.nextID.load(ordering: .acquiring)) - 1 }
  /// Stacks that could not be stored because the depot was full.
  public var droppedCount: Int { Int(header.pointee.dropped.load(ordering: .relaxed)) }
  public var stackCapacity: Int { Int(header.pointee.stackCapacity) }

  @inline(__always)
  static func hash(_ frames: UnsafeBufferPointer<UInt>) -> UInt64 {
    // 64-bit FNV-1a over whole words, then a final avalanche (splitmix64's finalizer).
    var value: UInt64 = 0xcbf2_9ce4_8422_2325
    for pc in frames {
      value = (value ^ UInt64(pc)) &* 0x0000_0100_0000_01b3
    }
    value ^= UInt64(frames.count)
    value = (value ^ (value >> 30)) &* 0xbf58_476d_1ce4_e5b9
    value = (value ^ (value >> 27)) &* 0x94d0_49bb_1331_11eb
    return value ^ (value >> 31)
  }

  @inline(__always)
  func matches(_ id: UInt32, _ frames: UnsafeBufferPointer<UInt>, hash: UInt64) -> Bool {
    let entry = entries[Int(id)]
    guard entry.hash == hash, Int(entry.frameCount) == frames.count else { return false }
    let stored = pcs + Int(entry.firstPC)
    for index in 0..<frames.count where stored[index] != frames[index] { return false }
    return true
  }

  /// Finds or stores `frames` (at most `maximumDepth` are kept). An empty stack is `.none`.
  public func insert(_ frames: UnsafeBufferPointer<UInt>) -> StackID {
    let frames = UnsafeBufferPointer(
      rebasing: frames[0..<min(frames.count, StackDepot.maximumDepth)])
    guard frames.count > 0 else { return .none }
    let hash = StackDepot.hash(frames)
    let mask = header.pointee.tableMask
    // Fast path: already present (lock-free).
    var slot = UInt32(truncatingIfNeeded: hash) & mask
    while true {
      let id = slots[Int(slot)].load(ordering: .acquiring)
      if id == 0 { break }
      if matches(id, frames, hash: hash) { return StackID(rawValue: id) }
      slot = (slot &+ 1) & mask
    }
    // Slow path: take the lock, look again from where we stopped (ids are only ever added), append.
    while header.pointee.lock.compareExchange(expected: 0, desired: 1, ordering: .acquiring)
      .exchanged
      == false
    {
      // Short critical sections: spin.
    }
    defer { header.pointee.lock.store(0, ordering: .releasing) }
    while true {
      let id = slots[Int(slot)].load(ordering: .acquiring)
      if id == 0 { break }
      if matches(id, frames, hash: hash) { return StackID(rawValue: id) }
      slot = (slot &+ 1) & mask
    }
    let id = header.pointee.nextID.load(ordering: .relaxed)
    let used = header.pointee.pcsUsed.load(ordering: .relaxed)
    guard id <= header.pointee.stackCapacity, used + UInt(frames.count) <= header.pointee.pcCapacity
    else {
      header.pointee.dropped.add(1, ordering: .relaxed)
      return .none
    }
    let destination = pcs + Int(used)
    for index in 0..<frames.count { destination[index] = frames[index] }
    entries[Int(id)] = Entry(hash: hash, firstPC: UInt32(used), frameCount: UInt32(frames.count))
    header.pointee.pcsUsed.store(used + UInt(frames.count), ordering: .relaxed)
    header.pointee.nextID.store(id + 1, ordering: .releasing)
    slots[Int(slot)].store(id, ordering: .releasing)
    return StackID(rawValue: id)
  }

  /// atfork `prepare`: holds the insert lock across fork, so the child never inherits it taken by
  /// a thread that does not exist there.
  public func lockForFork() {
    while !header.pointee.lock.compareExchange(expected: 0, desired: 1, ordering: .acquiring)
      .exchanged
    {
    }
  }

  /// atfork `parent` and `child`.
  public func unlockAfterFork() { header.pointee.lock.store(0, ordering: .releasing) }

  /// The frames of `id` (empty for `.none` or an id this depot never handed out). The memory stays
  /// valid for the depot's lifetime: stacks are never removed.
  public func frames(of id: StackID) -> UnsafeBufferPointer<UInt> {
    let raw = id.rawValue
    guard raw != 0, raw < header.pointee.nextID.load(ordering: .acquiring) else {
      return UnsafeBufferPointer(start: nil, count: 0)
    }
    let entry = entries[Int(raw)]
    return UnsafeBufferPointer(start: pcs + Int(entry.firstPC), count: Int(entry.frameCount))
  }

  /// Captures the caller's stack (frame-pointer walk), skipping `skip` frames above the caller, and
  /// stores it. `depth` is clamped to 1...maximumDepth.
  @inline(never)
  public func capture(skip: Int = 0, depth: Int = 32) -> StackID {
    var buffer = InlineArray<64, UInt>(repeating: 0)
    let wanted = max(1, min(depth, StackDepot.maximumDepth))
    return withUnsafeMutableBytes(of: &buffer) { raw in
      let frames = raw.baseAddress!.assumingMemoryBound(to: UInt.self)
      // skip + 1: this function's own frame is not the caller's business.
      let count = Int(cshim_backtrace(frames, Int32(wanted), Int32(skip + 1)))
      return insert(UnsafeBufferPointer(start: frames, count: count))
    }
  }

  /// Stores the stack of a faulting context (its pc unless 0, then the frame-pointer chain from `fp`:
  /// the return address saved in the frame record at `fp` comes next).
  public func capture(pc: UInt, fp: UInt, depth: Int = 32) -> StackID {
    var buffer = InlineArray<64, UInt>(repeating: 0)
    let wanted = max(1, min(depth, StackDepot.maximumDepth))
    return withUnsafeMutableBytes(of: &buffer) { raw in
      let frames = raw.baseAddress!.assumingMemoryBound(to: UInt.self)
      let count = Int(cshim_backtrace_from(pc, fp, frames, Int32(wanted)))
      return insert(UnsafeBufferPointer(start: frames, count: count))
    }
  }
}
