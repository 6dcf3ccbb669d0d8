import CShims
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

// `trace=FILE`: every allocation event of the process in a compact binary file, written from the
// malloc path without allocating. Each event goes out with one write(2) under the trace lock, so a
// program that dies by any signal (SIGKILL included) leaves a complete trace up to its last event:
// `heappatrol mleak` rebuilds its unfreed list from exactly that. Costs one syscall per event, small
// next to the guarded heap's own page operations per allocation.
//
// File layout (little-endian; TraceFile.swift reads it):
//   header  "HPTRACE1" u32 version, i32 pid, u64 start (CLOCK_MONOTONIC ns), u64 page size
//   records u8 type, then by type:
//     1 alloc / 2 free / 3 realloc   (64 bytes) u8 api, u16 0, i32 thread, u64 index, u64 time
//         (ns since start), u64 address (0: the allocation failed), u64 size, u64 alignment,
//         u64 old address (realloc), u32 stack id, u32 0
//     4 stack   u8 0, u16 frames, u32 id, then per frame: u64 module offset, u32 module id, u32 0
//     5 module  u8 0, u16 path length, u32 id, path bytes padded to 8
// Stacks and modules are written the first time an event refers to them, before that event.

/// The kinds of trace records.
public enum TraceRecordType: UInt8, Sendable {
  case allocation = 1
  case free = 2
  case reallocation = 3
  case stack = 4
  case module = 5
}

/// The writer side, one per process (in its own mapping; reached through an atomic address).
public struct AllocationTrace: @unchecked Sendable {
  static let magic: StaticString = "HPTRACE1"
  public static let version: UInt32 = 1
  static let maximumModules = 256
  static let modulePathCapacity = 1024

  struct State {
    var lock = pthread_mutex_t()
    var fd: Int32 = -1
    var pid: Int32 = 0
    var start: UInt64 = 0
    var nextIndex: UInt64 = 1
    /// Stack ids 1...writtenStacks are in the file (the depot hands out ids densely).
    var writtenStacks: UInt32 = 0
    var moduleCount = 0
    var options: RuntimeOptions
    /// Set once at start (its cache lives in the trace's mapping).
    var resolver: ModuleResolver? = nil
  }

  let state: UnsafeMutablePointer<State>
  /// Module paths already written (their index is the module id).
  let modulePaths: UnsafeMutablePointer<UInt8>
  let modulePathLengths: UnsafeMutablePointer<Int>
  var resolver: ModuleResolver { state.pointee.resolver! }

  /// 0: not started, 1: starting, 2: tracing, 3: off (no trace option, or the file cannot be opened).
  static let phase = Atomic<UInt8>(0)
  static let stateAddress = Atomic<UInt>(0)

  /// The process's trace, opened on first use; nil when `trace=` is not set.
  @inline(__always)
  public static func current(_ runtime: ProcessRuntime) -> AllocationTrace? {
    let now = phase.load(ordering: .acquiring)
    if now == 2 { return AllocationTrace(address: stateAddress.load(ordering: .relaxed)) }
    if now == 3 { return nil }
    return start(runtime)
  }

  init(address: UInt) {
    let base = UnsafeMutableRawPointer(bitPattern: address)!
    state = base.bindMemory(to: State.self, capacity: 1)
    let stateBytes = (MemoryLayout<State>.stride + 63) / 64 * 64
    modulePathLengths = (base + stateBytes).bindMemory(
      to: Int.self, capacity: AllocationTrace.maximumModules)
    modulePaths = (base + stateBytes + AllocationTrace.maximumModules * 8).bindMemory(
      to: UInt8.self, capacity: AllocationTrace.maximumModules * AllocationTrace.modulePathCapacity)
  }

  static var memorySize: Int {
    (MemoryLayout<State>.stride + 63) / 64 * 64 + maximumModules * (8 + modulePathCapacity)
      + ModuleResolver.memorySize
  }

  private static func start(_ runtime: ProcessRuntime) -> AllocationTrace? {
    guard
      phase.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged
    else {
      while phase.load(ordering: .acquiring) == 1 { sched_yield() }
      return phase.load(ordering: .acquiring) == 2
        ? AllocationTrace(address: stateAddress.load(ordering: .relaxed)) : nil
    }
    let options = runtime.options
    guard !options.tracePath.isEmpty, let memory = mapTableMemory(UInt(memorySize)) else {
      phase.store(3, ordering: .releasing)
      return nil
    }
    let trace = AllocationTrace(address: UInt(bitPattern: memory))
    trace.state.initialize(to: State(options: options))
    let stateBytes = (MemoryLayout<State>.stride + 63) / 64 * 64
    trace.state.pointee.resolver = ModuleResolver(
      memory: memory + stateBytes + maximumModules * (8 + modulePathCapacity))
    guard trace.open(pid: cshim_getpid()) else {
      phase.store(3, ordering: .releasing)
      return nil
    }
    stateAddress.store(UInt(bitPattern: memory), ordering: .relaxed)
    phase.store(2, ordering: .releasing)
    _ = cshim_atfork(tracePrepareFork, traceParentAfterFork, traceChildAfterFork)
    return trace
  }

  /// Opens (truncates) the trace file for `pid` and writes the header.
  func open(pid: Int32) -> Bool {
    var path = InlineArray<640, UInt8>(repeating: 0)
    let fd = withUnsafeMutableBytes(of: &path) { raw -> Int32 in
      var out = ReportBuffer(
        base: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), capacity: raw.count - 1)
      state.pointee.options.tracePath.withBytes { bytes in
        out.append(pathTemplate: bytes, pid: pid)
      }
      raw[out.count] = 0
      return Glibc.open(
        raw.baseAddress!.assumingMemoryBound(to: CChar.self),
        O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
        0o644)
    }
    guard fd >= 0 else { return false }
    state.pointee.fd = fd
    state.pointee.pid = pid
    state.pointee.start = cshim_monotonic_ns()
    state.pointee.nextIndex = 1
    state.pointee.writtenStacks = 0
    state.pointee.moduleCount = 0
    var header = InlineArray<32, UInt8>(repeating: 0)
    withUnsafeMutableBytes(of: &header) { raw in
      let magic = AllocationTrace.magic
      for index in 0..<8 { raw[index] = magic.utf8Start[index] }
      raw.storeBytes(of: AllocationTrace.version.littleEndian, toByteOffset: 8, as: UInt32.self)
      raw.storeBytes(of: pid.littleEndian, toByteOffset: 12, as: Int32.self)
      raw.storeBytes(of: state.pointee.start.littleEndian, toByteOffset: 16, as: UInt64.self)
      raw.storeBytes(
        of: UInt64(cshim_page_size()).littleEndian, toByteOffset: 24, as: UInt64.self)
      _ = cshim_write_all(fd, raw.baseAddress, 32)
    }
    return true
  }

  /// Records one event. `address` 0 is a failed allocation; `oldAddress` is a realloc's argument.
  public func record(
    _ type: TraceRecordType, api: AllocationAPI, size: UInt, alignment: UInt, address: UInt,
    oldAddress: UInt = 0, stack: StackID, thread: Int32, depot: StackDepot
  ) {
    pthread_mutex_lock(&state.pointee.lock)
    defer { pthread_mutex_unlock(&state.pointee.lock) }
    guard state.pointee.fd >= 0 else { return }
    if stack.rawValue > state.pointee.writtenStacks {
      var id = state.pointee.writtenStacks + 1
      while id <= stack.rawValue {
        writeStack(StackID(rawValue: id), depot: depot)
        id += 1
      }
      state.pointee.writtenStacks = stack.rawValue
    }
    var event = InlineArray<64, UInt8>(repeating: 0)
    let index = state.pointee.nextIndex
    state.pointee.nextIndex += 1
    let time = cshim_monotonic_ns() &- state.pointee.start
    withUnsafeMutableBytes(of: &event) { raw in
      raw[0] = type.rawValue
      raw[1] = api.rawValue
      raw.storeBytes(of: thread.littleEndian, toByteOffset: 4, as: Int32.self)
      raw.storeBytes(of: index.littleEndian, toByteOffset: 8, as: UInt64.self)
      raw.storeBytes(of: time.littleEndian, toByteOffset: 16, as: UInt64.self)
      raw.storeBytes(of: UInt64(address).littleEndian, toByteOffset: 24, as: UInt64.self)
      raw.storeBytes(of: UInt64(size).littleEndian, toByteOffset: 32, as: UInt64.self)
      raw.storeBytes(of: UInt64(alignment).littleEndian, toByteOffset: 40, as: UInt64.self)
      raw.storeBytes(of: UInt64(oldAddress).littleEndian, toByteOffset: 48, as: UInt64.self)
      raw.storeBytes(of: stack.rawValue.littleEndian, toByteOffset: 56, as: UInt32.self)
      _ = cshim_write_all(state.pointee.fd, raw.baseAddress, 64)
    }
  }

  /// A stack record, preceded by the records of modules it names for the first time.
  private func writeStack(_ id: StackID, depot: StackDepot) {
    let frames = depot.frames(of: id)
    let count = min(frames.count, StackDepot.maximumDepth)
    var record = InlineArray<1032, UInt8>(repeating: 0)  // 8 + 64 frames * 16
    withUnsafeMutableBytes(of: &record) { raw in
      raw[0] = TraceRecordType.stack.rawValue
      raw.storeBytes(of: UInt16(count).littleEndian, toByteOffset: 2, as: UInt16.self)
      raw.storeBytes(of: id.rawValue.littleEndian, toByteOffset: 4, as: UInt32.self)
      for index in 0..<count {
        var offset = UInt64(frames[index])
        var module = UInt32.max  // no module maps this pc: the raw pc is kept
        if let resolved = resolver.resolve(frames[index]), let known = moduleID(resolved.path) {
          offset = UInt64(resolved.offset)
          module = known
        }
        raw.storeBytes(of: offset.littleEndian, toByteOffset: 8 + index * 16, as: UInt64.self)
        raw.storeBytes(of: module.littleEndian, toByteOffset: 16 + index * 16, as: UInt32.self)
      }
      _ = cshim_write_all(state.pointee.fd, raw.baseAddress, 8 + count * 16)
    }
  }

  /// The id of a module path, writing its record if new (nil when the table is full).
  private func moduleID(_ path: UnsafeBufferPointer<UInt8>) -> UInt32? {
    let length = min(path.count, AllocationTrace.modulePathCapacity)
    var index = 0
    while index < state.pointee.moduleCount {
      let stored = modulePaths + index * AllocationTrace.modulePathCapacity
      if modulePathLengths[index] == length {
        var same = true
        var byte = 0
        while byte < length {
          if stored[byte] != path[byte] {
            same = false
            break
          }
          byte += 1
        }
        if same { return UInt32(index) }
      }
      index += 1
    }
    guard index < AllocationTrace.maximumModules else { return nil }
    let stored = modulePaths + index * AllocationTrace.modulePathCapacity
    for byte in 0..<length { stored[byte] = path[byte] }
    modulePathLengths[index] = length
    state.pointee.moduleCount = index + 1
    var record = InlineArray<1040, UInt8>(repeating: 0)
    withUnsafeMutableBytes(of: &record) { raw in
      raw[0] = TraceRecordType.module.rawValue
      raw.storeBytes(of: UInt16(length).littleEndian, toByteOffset: 2, as: UInt16.self)
      raw.storeBytes(of: UInt32(index).littleEndian, toByteOffset: 4, as: UInt32.self)
      for byte in 0..<length { raw[8 + byte] = path[byte] }
      _ = cshim_write_all(state.pointee.fd, raw.baseAddress, 8 + (length + 7) / 8 * 8)
    }
    return UInt32(index)
  }

  var pathHasPID: Bool { state.pointee.options.tracePath.hasPIDPlaceholder }

}

private func tracePrepareFork() {
  guard AllocationTrace.phase.load(ordering: .acquiring) == 2 else { return }
  let trace = AllocationTrace(address: AllocationTrace.stateAddress.load(ordering: .relaxed))
  pthread_mutex_lock(&trace.state.pointee.lock)
}

private func traceParentAfterFork() {
  guard AllocationTrace.phase.load(ordering: .acquiring) == 2 else { return }
  let trace = AllocationTrace(address: AllocationTrace.stateAddress.load(ordering: .relaxed))
  pthread_mutex_unlock(&trace.state.pointee.lock)
}

/// The child gets a trace of its own with `%p`; without it the child stops tracing (two processes
/// appending to one file would interleave their records).
private func traceChildAfterFork() {
  guard AllocationTrace.phase.load(ordering: .acquiring) == 2 else { return }
  let trace = AllocationTrace(address: AllocationTrace.stateAddress.load(ordering: .relaxed))
  withUnsafeMutableBytes(of: &trace.state.pointee.lock) { raw in
    for index in 0..<raw.count { raw[index] = 0 }
  }
  _ = cshim_close(trace.state.pointee.fd)
  trace.state.pointee.fd = -1
  if trace.pathHasPID {
    trace.resolver.reset()
    _ = trace.open(pid: cshim_getpid())
  }
}

extension ProcessRuntime {
  /// Records one allocation event when `trace=` is set (one atomic load otherwise). `frame` is the
  /// exported function's frame, as for the block's own stack (the depot returns the same id).
  @inline(__always)
  public func trace(
    _ type: TraceRecordType, api: AllocationAPI, size: UInt, alignment: UInt = 0, address: UInt?,
    oldAddress: UInt = 0, frame: UnsafeMutableRawPointer?, thread: Int32
  ) {
    guard AllocationTrace.phase.load(ordering: .relaxed) != 3,
      let trace = AllocationTrace.current(self)
    else { return }
    trace.record(
      type, api: api, size: size, alignment: alignment, address: address ?? 0,
      oldAddress: oldAddress, stack: captureStack(fromFrame: frame), thread: thread, depot: depot)
  }
}
