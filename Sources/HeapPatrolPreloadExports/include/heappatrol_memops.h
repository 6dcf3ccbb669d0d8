// The checked memory operations (memops.c): memcpy, strcpy & co. are checked against the bounds of
// the heap blocks they touch before glibc's implementation runs. The hot path (is this range inside
// one live block, or not the heap's at all?) is C reading the heap's tables directly, laid out as
// the Swift side describes them at start; everything else (the diagnosis, the report) is Swift
// (HeapPatrolPreload/MemoryOperations.swift). This header is the contract between the two sides.
#ifndef HEAPPATROL_MEMOPS_H
#define HEAPPATROL_MEMOPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The memory operation a check is made for, named in the report.
typedef enum heappatrol_memory_operation {
  HEAPPATROL_OP_MEMCPY,
  HEAPPATROL_OP_MEMMOVE,
  HEAPPATROL_OP_MEMSET,
  HEAPPATROL_OP_MEMCMP,
  HEAPPATROL_OP_MEMCHR,
  HEAPPATROL_OP_STRLEN,
  HEAPPATROL_OP_STRCPY,
  HEAPPATROL_OP_STRNCPY,
  HEAPPATROL_OP_STRCAT,
  HEAPPATROL_OP_STRNCAT,
  HEAPPATROL_OP_STRDUP,
  HEAPPATROL_OP_STRNDUP,
  HEAPPATROL_OP_BZERO,
  HEAPPATROL_OP_EXPLICIT_BZERO,
  HEAPPATROL_OP_WMEMCPY,
  HEAPPATROL_OP_WCSCPY,
  HEAPPATROL_OP_MEMCPY_CHK,
  HEAPPATROL_OP_MEMMOVE_CHK,
  HEAPPATROL_OP_MEMSET_CHK,
  HEAPPATROL_OP_EXPLICIT_BZERO_CHK,
  HEAPPATROL_OP_STRCPY_CHK,
  HEAPPATROL_OP_STRNCPY_CHK,
  HEAPPATROL_OP_STRCAT_CHK,
  HEAPPATROL_OP_STRNCAT_CHK,
  HEAPPATROL_OP_WMEMCPY_CHK,
  HEAPPATROL_OP_WCSCPY_CHK,
} heappatrol_memory_operation;

/// A stored field of a Swift struct: byte offset and size.
typedef struct heappatrol_field {
  size_t offset, size;
} heappatrol_field;

/// Where the heap's tables are and how they are laid out (HeapTableLayout in HeapTables.swift,
/// filled from MemoryLayout of the real Swift types). memops.c checks every size it relies on and
/// leaves the lookup to Swift (heappatrol_check_range) if one differs.
typedef struct heappatrol_heap_layout {
  uintptr_t reservations, reservation_count, dedicated_records, records;
  size_t reservation_count_size, record_capacity, page_size;
  size_t record_number_stride, record_number_size;
  size_t reservation_stride;
  heappatrol_field reservation_base, reservation_length, reservation_page_map,
      reservation_dedicated;
  size_t record_stride;
  heappatrol_field record_address, record_size, record_state, record_reservation;
  unsigned char live_state;
} heappatrol_heap_layout;

/// Called once from the library's start (inside the reentrancy guard: dlsym may allocate).
/// Resolves glibc's implementations and turns the checks on (`enabled` != 0) or leaves them off.
/// Until then every operation runs a plain byte loop. `layout` describes the tables the C lookup
/// reads (copied; NULL or a layout it does not understand: every check goes to
/// heappatrol_check_range, correct but slower).
void heappatrol_memops_configure(int enabled, const heappatrol_heap_layout *layout);

/// The C lookup the checks use (exported for the test that compares it with HeapView.liveBounds):
/// 0 when `address` is not the heap's; 1 inside a live block (bounds in start/end); 2 for a heap
/// address outside every live block. -1 when the C lookup is not in use (checks off, or a layout
/// it does not understand).
int heappatrol_memops_lookup(const void *address, size_t *start, size_t *end);

// Implemented in Swift (@_cdecl). `access` is a MemoryAccess raw value (0 READ, 1 WRITE); `frame`
// is the exported function's own frame, so the reported stack starts at the program's call;
// `operation` is a heappatrol_memory_operation, named in the report.

/// Checks [start, start+length) against the heap: an overrun, a freed block or a wild address of
/// ours is reported and ends the process. Pointers outside the heap return at once.
void heappatrol_check_range(const void *start, size_t length, unsigned char access, void *frame,
                            unsigned char operation);
/// Bytes readable from `address` to the end of its live heap block; 0 for a heap address outside
/// every live block; SIZE_MAX when the address is not the heap's (no bound) or checks are off.
size_t heappatrol_readable_bytes(const void *address);
/// Reports overlapping source and destination of memcpy/strcpy-like calls (not fatal).
void heappatrol_report_overlap(const void *destination, const void *source, size_t length,
                               void *frame, unsigned char operation);

#ifdef __cplusplus
}
#endif
#endif
