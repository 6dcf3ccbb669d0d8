// The checked memory operations (memops.c): memcpy, strcpy & co. are checked against the bounds of
// the heap blocks they touch before glibc's implementation runs. The checks themselves are Swift
// (HeapPatrolPreload/MemoryOperations.swift); this header is the contract between the two sides.
#ifndef HEAPPATROL_MEMOPS_H
#define HEAPPATROL_MEMOPS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Called once from the library's start (inside the reentrancy guard: dlsym may allocate).
/// Resolves glibc's implementations and turns the checks on (`enabled` != 0) or leaves them off.
/// Until then every operation runs a plain byte loop.
/// `view` is the heap's lock-free view (a HeapView in memory that lives as long as the process),
/// handed back to heappatrol_live_bounds on every check.
void heappatrol_memops_configure(int enabled, const void *view);

// Implemented in Swift (@_cdecl). `access` is a MemoryAccess raw value (0 READ, 1 WRITE); `frame`
// is the exported function's own frame, so the reported stack starts at the program's call.

/// The hot path: 0 when `address` is not the heap's; 1 inside a live block (bounds in start/end);
/// 2 for a heap address outside every live block.
int heappatrol_live_bounds(const void *view, const void *address, size_t *start, size_t *end);
/// Checks [start, start+length) against the heap: an overrun, a freed block or a wild address of
/// ours is reported and ends the process. Pointers outside the heap return at once.
void heappatrol_check_range(const void *start, size_t length, unsigned char access, void *frame);
/// Bytes readable from `address` to the end of its live heap block; 0 for a heap address outside
/// every live block; SIZE_MAX when the address is not the heap's (no bound) or checks are off.
size_t heappatrol_readable_bytes(const void *address);
/// Reports overlapping source and destination of memcpy/strcpy-like calls (not fatal).
void heappatrol_report_overlap(const void *destination, const void *source, size_t length,
                               void *frame);

#ifdef __cplusplus
}
#endif
#endif
