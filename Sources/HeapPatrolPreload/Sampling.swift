import CShims
import HeapPatrol

// Sampling mode (`sample=N`): the exported malloc family (exports.c) decides per allocation, with a
// per-thread countdown, whether it is guarded (it comes here) or goes to glibc untouched. These are
// what the C side needs to route the other calls: the interval and seed once at start, and on every
// free / realloc / malloc_usable_size whether a pointer lies in the heap's address space (our
// reservations: a handful of ranges, checked without a lock and without a syscall).

/// The sampling interval N (1 = every allocation guarded), once the runtime runs; 1 before.
@_cdecl("heappatrol_sample_interval")
public func heappatrolSampleInterval() -> UInt32 {
  guard let runtime = ProcessRuntime.current else { return 1 }
  return UInt32(clamping: runtime.options.sample)
}

/// `sample_seed` (0 = choose one).
@_cdecl("heappatrol_sample_seed")
public func heappatrolSampleSeed() -> UInt64 {
  ProcessRuntime.current?.options.sampleSeed ?? 0
}

/// 1 if `pointer` lies in one of the heap's reservations (a guarded block, live or not), else 0.
/// Allocation-free and lock-free: also exported for tests (via dlsym) to tell sampled blocks apart.
@_cdecl("heappatrol_owns")
public func heappatrolOwns(_ pointer: UnsafeRawPointer?) -> Int32 {
  guard let pointer, let runtime = ProcessRuntime.current else { return 0 }
  return runtime.heap.view.owns(UInt(bitPattern: pointer)) ? 1 : 0
}
