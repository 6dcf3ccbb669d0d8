import CShims
import HeapPatrol

#if canImport(Glibc)
  import Glibc
#endif

// The Swift side of libHeapPatrolPreload: what the exported malloc family (HeapPatrolPreloadExports)
// forwards to. Rules of every entry point:
// - Reentrant calls (HeapPatrol's own code, or glibc/Swift runtime code it calls, asking for memory)
//   go to glibc's __libc_* functions: `cshim_enter` says so.
// - The first call of the process starts the runtime (options from HEAPPATROL_OPTIONS, the heap, the
//   fault handler, atexit/atfork), whichever entry point it is, even before any initializer of ours.
// - Pointers the heap does not own go back to glibc if they look like glibc's chunks; otherwise a
//   free is an invalid-free finding (a stack or global address), never a glibc abort.
// - Nothing here allocates.

@inline(__always)
func runningRuntime() -> ProcessRuntime? {
  if let runtime = ProcessRuntime.current { return runtime }
  return ProcessRuntime.startFromEnvironment()
}

@inline(__always)
func libcAllocate(_ size: UInt, _ alignment: UInt) -> UnsafeMutableRawPointer? {
  alignment > 16 ? cshim_libc_memalign(Int(alignment), Int(size)) : cshim_libc_malloc(Int(size))
}

@inline(__always)
func finish(_ runtime: ProcessRuntime, _ result: HeapResult) {
  guard !result.findings.isEmpty else { return }
  runtime.report(result.findings)
  runtime.haltIfRequested(result.findings)
}

/// An invalid free of a pointer nobody owns (or a realloc of one).
func reportForeign(
  _ runtime: ProcessRuntime, _ address: UInt, frame: UnsafeMutableRawPointer?, thread: Int32
) {
  let finding = Finding(
    kind: .invalidFree, address: address, thread: thread,
    accessStack: runtime.captureStack(fromFrame: frame))
  runtime.report(finding)
  var findings = FindingBuffer()
  findings.append(finding)
  runtime.haltIfRequested(findings)
}

/// Starts the runtime from the library's constructor, if no malloc did it before.
@_cdecl("heappatrol_start")
public func heappatrolStart() {
  if cshim_enter() != 0 { return }
  defer { cshim_leave() }
  let started = runningRuntime()
  configureMemoryOperations(started)
  guard let runtime = started else { return }
  // The heap's entry points reach generic code that looks up HeapCore<SystemPageSpace>'s metadata
  // once and caches it. Do that now, single-threaded, rather than in the program's first malloc
  // (which may come from inside the Swift runtime while it holds its metadata lock).
  _ = runtime.heap.usableSize(of: 0)
  _ = runtime.heap.block(containing: 0)
}

@_cdecl("heappatrol_allocate")
public func heappatrolAllocate(
  _ size: UInt, _ alignment: UInt, _ api: UInt8, _ frame: UnsafeMutableRawPointer?, _ thread: Int32
) -> UnsafeMutableRawPointer? {
  if cshim_enter() != 0 {
    cshim_note_reentrant_allocation()
    return libcAllocate(size, alignment)
  }
  defer { cshim_leave() }
  guard let runtime = runningRuntime() else { return libcAllocate(size, alignment) }
  let result = runtime.allocate(
    size: size, alignment: alignment, api: AllocationAPI(rawValue: api) ?? .malloc,
    stack: runtime.captureStack(fromFrame: frame), thread: thread)
  finish(runtime, result)
  runtime.trace(
    .allocation, api: AllocationAPI(rawValue: api) ?? .malloc, size: size, alignment: alignment,
    address: result.address, frame: frame, thread: thread)
  return UnsafeMutableRawPointer(bitPattern: result.address ?? 0)
}

@_cdecl("heappatrol_calloc")
public func heappatrolCalloc(
  _ count: UInt, _ size: UInt, _ frame: UnsafeMutableRawPointer?, _ thread: Int32
) -> UnsafeMutableRawPointer? {
  if cshim_enter() != 0 {
    cshim_note_reentrant_allocation()
    return cshim_libc_calloc(Int(count), Int(size))
  }
  defer { cshim_leave() }
  guard let runtime = runningRuntime() else { return cshim_libc_calloc(Int(count), Int(size)) }
  let (total, overflow) = count.multipliedReportingOverflow(by: size)
  if overflow {
    reportSizeOverflow(runtime, count: count, size: size, frame: frame, thread: thread)
    return nil
  }
  let result = runtime.allocate(
    size: total, api: .calloc, zeroed: true, stack: runtime.captureStack(fromFrame: frame),
    thread: thread)
  finish(runtime, result)
  runtime.trace(
    .allocation, api: .calloc, size: total, address: result.address, frame: frame, thread: thread)
  return UnsafeMutableRawPointer(bitPattern: result.address ?? 0)
}

@_cdecl("heappatrol_bad_alignment")
public func heappatrolBadAlignment(
  _ alignment: UInt, _ size: UInt, _ frame: UnsafeMutableRawPointer?, _ thread: Int32
) {
  if cshim_enter() != 0 { return }
  defer { cshim_leave() }
  guard let runtime = runningRuntime() else { return }
  reportArgument(
    runtime, .badAlignment, detail: alignment, bytes: size, frame: frame, thread: thread)
}

func reportSizeOverflow(
  _ runtime: ProcessRuntime, count: UInt, size: UInt, frame: UnsafeMutableRawPointer?,
  thread: Int32
) {
  guard runtime.options.reportSizeOverflow else { return }
  reportArgument(runtime, .sizeOverflow, detail: count, bytes: size, frame: frame, thread: thread)
}

/// A finding about a call's arguments (no block involved), reported at the call.
func reportArgument(
  _ runtime: ProcessRuntime, _ kind: FindingKind, detail: UInt, bytes: UInt,
  frame: UnsafeMutableRawPointer?, thread: Int32
) {
  var findings = FindingBuffer()
  findings.append(
    Finding(
      kind: kind, address: 0, thread: thread, accessStack: runtime.captureStack(fromFrame: frame),
      detail: detail, bytes: bytes))
  runtime.report(findings)
  runtime.haltIfRequested(findings)
}

@_cdecl("heappatrol_free")
public func heappatrolFree(
  _ pointer: UnsafeMutableRawPointer?, _ api: UInt8, _ frame: UnsafeMutableRawPointer?,
  _ thread: Int32
) {
  guard let pointer else { return }
  let address = UInt(bitPattern: pointer)
  if cshim_enter() != 0 {
    cshim_note_reentrant_allocation()
    // Our own (reentrant) allocations are glibc's. One of the heap's blocks freed from inside
    // HeapPatrol would be a bug of ours: leak it rather than hand it to glibc.
    if let runtime = ProcessRuntime.current, runtime.heap.view.owns(address) { return }
    cshim_libc_free(pointer)
    return
  }
  defer { cshim_leave() }
  guard let runtime = runningRuntime() else {
    cshim_libc_free(pointer)
    return
  }
  guard runtime.heap.view.owns(address) else {
    if ForeignPointers.isPlausibleGlibcChunk(address) {
      cshim_libc_free(pointer)
    } else {
      reportForeign(runtime, address, frame: frame, thread: thread)
    }
    return
  }
  let result = runtime.deallocate(
    address, api: AllocationAPI(rawValue: api) ?? .free,
    stack: runtime.captureStack(fromFrame: frame), thread: thread)
  finish(runtime, result)
  runtime.trace(
    .free, api: AllocationAPI(rawValue: api) ?? .free, size: 0, address: address, frame: frame,
    thread: thread)
}

@_cdecl("heappatrol_realloc")
public func heappatrolRealloc(
  _ pointer: UnsafeMutableRawPointer?, _ size: UInt, _ frame: UnsafeMutableRawPointer?,
  _ thread: Int32
) -> UnsafeMutableRawPointer? {
  reallocate(pointer, size, api: .realloc, frame: frame, thread: thread)
}

@_cdecl("heappatrol_reallocarray")
public func heappatrolReallocarray(
  _ pointer: UnsafeMutableRawPointer?, _ count: UInt, _ size: UInt,
  _ frame: UnsafeMutableRawPointer?, _ thread: Int32
) -> UnsafeMutableRawPointer? {
  let (total, overflow) = count.multipliedReportingOverflow(by: size)
  if overflow {
    if cshim_enter() == 0 {
      defer { cshim_leave() }
      if let runtime = runningRuntime() {
        reportSizeOverflow(runtime, count: count, size: size, frame: frame, thread: thread)
      }
    }
    return nil  // the original block is untouched
  }
  return reallocate(pointer, total, api: .reallocarray, frame: frame, thread: thread)
}

@inline(__always)
func reallocate(
  _ pointer: UnsafeMutableRawPointer?, _ size: UInt, api: AllocationAPI,
  frame: UnsafeMutableRawPointer?, thread: Int32
) -> UnsafeMutableRawPointer? {
  let address = UInt(bitPattern: pointer)
  if cshim_enter() != 0 {
    cshim_note_reentrant_allocation()
    if let runtime = ProcessRuntime.current, address != 0, runtime.heap.view.owns(address) {
      return nil
    }
    return cshim_libc_realloc(pointer, Int(size))
  }
  defer { cshim_leave() }
  guard let runtime = runningRuntime() else { return cshim_libc_realloc(pointer, Int(size)) }
  guard let pointer else {
    let result = runtime.allocate(
      size: size, api: api, stack: runtime.captureStack(fromFrame: frame), thread: thread)
    finish(runtime, result)
    runtime.trace(
      .allocation, api: api, size: size, address: result.address, frame: frame, thread: thread)
    return UnsafeMutableRawPointer(bitPattern: result.address ?? 0)
  }
  guard runtime.heap.view.owns(address) else {
    if ForeignPointers.isPlausibleGlibcChunk(address) {
      return cshim_libc_realloc(pointer, Int(size))
    }
    reportForeign(runtime, address, frame: frame, thread: thread)
    return nil
  }
  let stack = runtime.captureStack(fromFrame: frame)
  if size == 0 {
    // glibc: realloc(p, 0) frees p and returns NULL.
    finish(runtime, runtime.deallocate(address, api: api, stack: stack, thread: thread))
    runtime.trace(.free, api: api, size: 0, address: address, frame: frame, thread: thread)
    return nil
  }
  let result = runtime.reallocate(address, size: size, api: api, stack: stack, thread: thread)
  finish(runtime, result)
  runtime.trace(
    .reallocation, api: api, size: size, address: result.address, oldAddress: address,
    frame: frame, thread: thread)
  return UnsafeMutableRawPointer(bitPattern: result.address ?? 0)
}

/// Exact: the size the program asked for, so code that grows into the usable size (Swift's Array)
/// never crosses into the canary slack or the guard page.
@_cdecl("heappatrol_usable_size")
public func heappatrolUsableSize(_ pointer: UnsafeMutableRawPointer?) -> UInt {
  guard let pointer else { return 0 }
  let address = UInt(bitPattern: pointer)
  if let runtime = ProcessRuntime.current, runtime.heap.view.owns(address) {
    return runtime.usableSize(of: address) ?? 0
  }
  if cshim_is_inside() != 0 || ForeignPointers.isPlausibleGlibcChunk(address) {
    return UInt(cshim_libc_usable_size(pointer))
  }
  return 0
}

/// A throwing `operator new` failed: report out-of-memory and abort (we cannot throw bad_alloc).
@_cdecl("heappatrol_new_failed")
public func heappatrolNewFailed(
  _ size: UInt, _ api: UInt8, _ frame: UnsafeMutableRawPointer?, _ thread: Int32
) {
  if cshim_enter() == 0, let runtime = runningRuntime() {
    if !runtime.options.reportOutOfMemory {  // otherwise allocate() has reported it already
      runtime.report(
        Finding(
          kind: .outOfMemory, address: 0, thread: thread,
          accessStack: runtime.captureStack(fromFrame: frame), bytes: size))
    }
    runtime.endProcess(signal: SIGABRT)
  }
  abort()
}
