import CShims
import PageSpace

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The heap's lock: a pthread mutex (futex-based) in mmap'd memory. Not Synchronization's `Mutex`
/// because fork safety needs the lock taken in the atfork `prepare` hook and released in `parent` /
/// `child`, which a closure-scoped lock cannot express. It is our own lock: the Swift runtime never
/// holds it, and locking it never allocates.
public struct HeapLock: @unchecked Sendable {
  @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>

  /// A lock in the given zero-filled memory (a zeroed pthread_mutex_t is PTHREAD_MUTEX_INITIALIZER).
  @inlinable init(zeroedMemory: UnsafeMutableRawPointer) {
    mutex = zeroedMemory.bindMemory(to: pthread_mutex_t.self, capacity: 1)
  }

  @inlinable public func lock() { pthread_mutex_lock(mutex) }
  @inlinable public func unlock() { pthread_mutex_unlock(mutex) }
  /// In the child after fork: the lock was held by the forking thread (prepare); make it fresh.
  @inlinable public func reinitialize() {
    UnsafeMutableRawPointer(mutex).initializeMemory(
      as: UInt8.self, repeating: 0, count: MemoryLayout<pthread_mutex_t>.size)
  }
}

/// A heap in mmap'd memory with its lock: what the preload keeps in a process-wide variable (a plain
/// struct of two pointers, copyable and allocation-free), and what `GuardedHeap` wraps for Swift code.
/// The core and its lock are never freed.
public struct HeapHandle<Space: PageSpace>: @unchecked Sendable {
  public let core: UnsafeMutablePointer<HeapCore<Space>>
  public let lock: HeapLock
  /// The lock-free view for the fault handler.
  public let view: HeapView

  /// Creates the heap's tables and state in fresh mmap'd memory. Nil if the process cannot map them.
  public init?(space: Space, configuration: HeapConfiguration = .default) {
    let size = MemoryLayout<HeapCore<Space>>.stride + 256
    guard let memory = mapTableMemory(UInt(size)),
      let heap = HeapCore(space: space, configuration: configuration)
    else { return nil }
    let view = heap.view
    let core = (memory + 128).bindMemory(to: HeapCore<Space>.self, capacity: 1)
    core.initialize(to: heap)
    self.core = core
    self.lock = HeapLock(zeroedMemory: memory)
    self.view = view
  }

  /// The lock the phased operations release around page syscalls: real pages only. A simulated page
  /// space is one single-threaded machine, so there the lock is held for the whole call.
  @inlinable
  var lockAroundSyscallsOnly: Bool { Space.self == SystemPageSpace.self }

  @inlinable
  public func allocate(
    size: UInt, alignment: UInt = 0, api: AllocationAPI, zeroed: Bool = false,
    stack: StackID = .none, thread: Int32
  ) -> HeapResult {
    let request = HeapCore<Space>.AllocationRequest(
      size: size, alignment: alignment, api: api, zeroed: zeroed, stack: stack, thread: thread)
    if lockAroundSyscallsOnly { return HeapCore.allocate(core: core, lock: lock, request) }
    lock.lock()
    defer { lock.unlock() }
    return HeapCore.allocate(core: core, lock: nil, request)
  }

  @inlinable
  public func deallocate(_ address: UInt, api: AllocationAPI, stack: StackID = .none, thread: Int32)
    -> HeapResult
  {
    if lockAroundSyscallsOnly {
      return HeapCore.deallocate(
        core: core, lock: lock, address, api: api, stack: stack, thread: thread)
    }
    lock.lock()
    defer { lock.unlock() }
    return HeapCore.deallocate(
      core: core, lock: nil, address, api: api, stack: stack, thread: thread)
  }

  @inlinable
  public func reallocate(
    _ address: UInt?, size: UInt, api: AllocationAPI = .realloc, stack: StackID = .none,
    thread: Int32
  ) -> HeapResult {
    if lockAroundSyscallsOnly {
      return HeapCore.reallocate(
        core: core, lock: lock, address, size: size, api: api, stack: stack, thread: thread)
    }
    lock.lock()
    defer { lock.unlock() }
    return HeapCore.reallocate(
      core: core, lock: nil, address, size: size, api: api, stack: stack, thread: thread)
  }

  @inlinable
  public func usableSize(of address: UInt) -> UInt? {
    lock.lock()
    defer { lock.unlock() }
    return core.pointee.usableSize(of: address)
  }

  @inlinable
  public func block(containing address: UInt) -> BlockSnapshot? {
    lock.lock()
    defer { lock.unlock() }
    return core.pointee.block(containing: address)
  }

  public func forEachLiveBlock(_ body: (BlockSnapshot) -> Void) {
    lock.lock()
    defer { lock.unlock() }
    core.pointee.forEachLiveBlock(body)
  }

  @discardableResult
  public func check(thread: Int32, stack: StackID = .none, _ report: (Finding) -> Void) -> Int {
    lock.lock()
    defer { lock.unlock() }
    return core.pointee.check(thread: thread, stack: stack, report)
  }

  public var statistics: HeapStatistics {
    lock.lock()
    defer { lock.unlock() }
    return core.pointee.currentStatistics
  }

  public func setWarningHandler(_ handler: HeapWarningHandler?) {
    lock.lock()
    defer { lock.unlock() }
    core.pointee.warningHandler = handler
  }

  /// atfork hooks: take the lock before fork so no other thread is mid-update in the child's copy.
  public func prepareFork() { lock.lock() }
  public func parentAfterFork() { lock.unlock() }
  public func childAfterFork() { lock.reinitialize() }
}

/// The Swift API for programs that link HeapPatrol: a guarded heap of their own, thread-safe.
///
/// ```swift
/// let heap = GuardedHeap(space: SystemPageSpace())!
/// let buffer = heap.allocate(UInt32.self, capacity: 13)!   // ends against a guard page
/// buffer[13] = 1                                          // SIGSEGV, diagnosed as an overflow
/// ```
public final class GuardedHeap<Space: PageSpace>: @unchecked Sendable {
  public let handle: HeapHandle<Space>
  public var space: Space { handle.core.pointee.space }
  public var configuration: HeapConfiguration { handle.core.pointee.configuration }
  public var view: HeapView { handle.view }

  public init?(space: Space, configuration: HeapConfiguration = .default) {
    guard let handle = HeapHandle(space: space, configuration: configuration) else { return nil }
    self.handle = handle
  }

  /// Allocates raw bytes. Findings (out of memory, bad alignment) are in the result.
  public func allocate(
    byteCount: Int, alignment: Int = 0, api: AllocationAPI = .swift, zeroed: Bool = false,
    stack: StackID = .none, thread: Int32? = nil
  ) -> HeapResult {
    handle.allocate(
      size: UInt(max(0, byteCount)), alignment: UInt(max(0, alignment)), api: api, zeroed: zeroed,
      stack: stack, thread: thread ?? cshim_gettid())
  }

  /// Frees raw bytes.
  @discardableResult
  public func deallocate(
    _ address: UInt, api: AllocationAPI = .swift, stack: StackID = .none, thread: Int32? = nil
  ) -> HeapResult {
    handle.deallocate(address, api: api, stack: stack, thread: thread ?? cshim_gettid())
  }

  public func reallocate(
    _ address: UInt?, byteCount: Int, api: AllocationAPI = .realloc, stack: StackID = .none,
    thread: Int32? = nil
  ) -> HeapResult {
    handle.reallocate(
      address, size: UInt(max(0, byteCount)), api: api, stack: stack,
      thread: thread ?? cshim_gettid())
  }

  /// A typed buffer of `capacity` elements (memory the program dereferences: real page spaces only).
  public func allocate<T>(_ type: T.Type, capacity: Int, stack: StackID = .none)
    -> UnsafeMutableBufferPointer<T>?
  {
    let result = allocate(
      byteCount: MemoryLayout<T>.stride * capacity, alignment: MemoryLayout<T>.alignment,
      stack: stack)
    guard let address = result.address, let start = UnsafeMutablePointer<T>(bitPattern: address)
    else { return nil }
    return UnsafeMutableBufferPointer(start: start, count: capacity)
  }

  @discardableResult
  public func deallocate<T>(_ buffer: UnsafeMutableBufferPointer<T>, stack: StackID = .none)
    -> HeapResult
  {
    guard let base = buffer.baseAddress else { return HeapResult(owned: false) }
    return deallocate(UInt(bitPattern: base), stack: stack)
  }

  public func usableSize(of address: UInt) -> UInt? { handle.usableSize(of: address) }
  public func block(containing address: UInt) -> BlockSnapshot? {
    handle.block(containing: address)
  }

  /// Checks every live block's canaries now.
  public func check(stack: StackID = .none) -> [Finding] {
    var findings: [Finding] = []
    handle.check(thread: cshim_gettid(), stack: stack) { findings.append($0) }
    return findings
  }

  /// The live blocks (the leaks, at exit).
  public var liveBlocks: [BlockSnapshot] {
    var blocks: [BlockSnapshot] = []
    handle.forEachLiveBlock { blocks.append($0) }
    return blocks
  }

  public var statistics: HeapStatistics { handle.statistics }

  public func diagnose(_ fault: PageFault, thread: Int32 = 0, stack: StackID = .none) -> Finding? {
    handle.view.diagnose(fault, thread: thread, stack: stack)
  }
}
