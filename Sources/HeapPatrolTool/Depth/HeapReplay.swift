import HeapPatrol

/// A block as the trace saw it: who allocated it, and (once freed) when.
public struct TracedBlock: Sendable, Hashable {
  public var address: UInt64
  public var size: UInt64
  public var alignment: UInt64
  public var api: AllocationAPI
  public var stack: UInt32
  public var thread: Int32
  /// The index of the event that produced it.
  public var allocatedAt: UInt64
  /// The index of the event that freed (or moved) it.
  public var freedAt: UInt64?
}

/// The heap's state rebuilt by replaying a trace's events in order: the live blocks, the freed ones,
/// and the running statistics. Replaying up to an event gives the heap as it was right after it.
public struct HeapReplay: Sendable {
  public private(set) var live: [UInt64: TracedBlock] = [:]
  /// Every block freed so far, in the order it was freed.
  public private(set) var freed: [TracedBlock] = []
  public private(set) var liveBytes: UInt64 = 0
  public private(set) var peakLiveBytes: UInt64 = 0
  /// The event after which the live bytes first reached their peak (0: nothing was ever live).
  public private(set) var peakEventIndex: UInt64 = 0
  public private(set) var peakTime: UInt64 = 0
  /// Events per API name (malloc, free, realloc...).
  public private(set) var eventsByAPI: [AllocationAPI: Int] = [:]
  public private(set) var allocations = 0
  public private(set) var frees = 0
  public private(set) var reallocations = 0
  /// Allocations (and reallocations) that returned NULL.
  public private(set) var failedAllocations = 0
  /// Frees of addresses no traced event handed out (double frees, or blocks from before the trace).
  public private(set) var unknownFrees = 0
  /// Bytes asked for by allocations and reallocations that succeeded.
  public private(set) var allocatedBytes: UInt64 = 0
  public private(set) var freedBytes: UInt64 = 0
  public private(set) var threads: Set<Int32> = []
  public private(set) var lastEventIndex: UInt64 = 0
  public private(set) var lastTime: UInt64 = 0

  public init() {}

  /// Replays `trace` up to and including the event with index `through` (nil: the whole trace).
  public init(_ trace: TraceFile, through: UInt64? = nil) {
    for event in trace.events {
      if let through, event.index > through { break }
      apply(event)
    }
  }

  public mutating func apply(_ event: TraceEvent) {
    eventsByAPI[event.api, default: 0] += 1
    threads.insert(event.thread)
    lastEventIndex = event.index
    lastTime = event.time
    switch event.kind {
    case .allocation:
      allocations += 1
      if event.address == 0 {
        failedAllocations += 1
      } else {
        add(event)
      }
    case .free:
      frees += 1
      release(event.address, at: event.index)
    case .reallocation:
      reallocations += 1
      if event.address == 0 {
        // A failed realloc leaves the old block as it was.
        failedAllocations += 1
      } else {
        release(event.oldAddress, at: event.index)
        add(event)
      }
    }
  }

  private mutating func add(_ event: TraceEvent) {
    let block = TracedBlock(
      address: event.address, size: event.size, alignment: event.alignment, api: event.api,
      stack: event.stack, thread: event.thread, allocatedAt: event.index)
    if let stale = live.updateValue(block, forKey: event.address) {
      // The heap handed out an address the trace still thinks live: the free was not traced.
      liveBytes -= stale.size
    }
    allocatedBytes += event.size
    liveBytes += event.size
    if liveBytes > peakLiveBytes {
      peakLiveBytes = liveBytes
      peakEventIndex = event.index
      peakTime = event.time
    }
  }

  private mutating func release(_ address: UInt64, at index: UInt64) {
    guard var block = live.removeValue(forKey: address) else {
      unknownFrees += 1
      return
    }
    liveBytes -= block.size
    freedBytes += block.size
    block.freedAt = index
    freed.append(block)
  }

  /// The live blocks by address.
  public var liveBlocks: [TracedBlock] { live.values.sorted { $0.address < $1.address } }
}
