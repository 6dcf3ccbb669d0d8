// Checked memory operations (mpatrol's RNGOVF / STROVF / RNGOVL checks): memcpy, memmove, memset,
// memcmp, memchr, strlen, strcpy, strncpy, strcat, strncat, strdup, strndup, bzero, explicit_bzero,
// wmemcpy, wcscpy and the fortified __*_chk forms glibc routes _FORTIFY_SOURCE calls through.
//
// Before an operation runs, the ranges it will read and write are checked against the heap blocks
// they touch, so an overrun is reported at the call, with the call's own stack, instead of as a
// fault inside glibc (or not at all, when it only reaches the canary slack before the guard page).
// Then glibc's own implementation runs.
//
// The hot path is here, in C, inlined into each operation: the heap's tables are read directly
// (a scan of the few reservations, one page-map entry, four fields of one block record), laid out
// as the Swift side described them at start (heappatrol_heap_layout). A range inside one live block
// or touching no reservation costs that and nothing more; anything else goes to Swift
// (heappatrol_check_range), which diagnoses and reports. Calls made from inside HeapPatrol, calls
// before the library's start and everything with check_memops=0 go straight to glibc. Nothing here
// allocates.
#define _GNU_SOURCE
#include "heappatrol_memops.h"

#include "cshims.h"
#include "heappatrol_exports.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wchar.h>

#define EXPORT __attribute__((visibility("default"))) __attribute__((used))
// A real frame of its own (see exports.c): the reported stack is walked from FRAME, so its first
// entry is the program's call.
#define KEEP_FRAME __attribute__((noinline, disable_tail_calls))
#define FRAME __builtin_frame_address(0)
#define UNLIKELY(condition) __builtin_expect(!!(condition), 0)
#define LIKELY(condition) __builtin_expect(!!(condition), 1)
#define INLINE static inline __attribute__((always_inline))

enum { ACCESS_READ = 0, ACCESS_WRITE = 1 };
enum { API_STRDUP = 15 };  // AllocationAPI.strdup

// ---- Before the library's start: byte loops -----------------------------------------------------
// Other libraries' initializers run before ours and may copy memory. The loops go through volatile
// pointers so the compiler cannot turn them back into calls to memcpy/memset (that is: to us).

static void *byte_copy(void *destination, const void *source, size_t length) {
  volatile unsigned char *to = destination;
  const volatile unsigned char *from = source;
  if (to < from) {
    for (size_t index = 0; index < length; index++) to[index] = from[index];
  } else {
    for (size_t index = length; index > 0; index--) to[index - 1] = from[index - 1];
  }
  return destination;
}

static void *byte_fill(void *destination, int value, size_t length) {
  volatile unsigned char *to = destination;
  for (size_t index = 0; index < length; index++) to[index] = (unsigned char)value;
  return destination;
}

static int byte_compare(const void *left, const void *right, size_t length) {
  const volatile unsigned char *a = left, *b = right;
  for (size_t index = 0; index < length; index++)
    if (a[index] != b[index]) return a[index] < b[index] ? -1 : 1;
  return 0;
}

static void *byte_find(const void *source, int value, size_t length) {
  const volatile unsigned char *from = source;
  for (size_t index = 0; index < length; index++)
    if (from[index] == (unsigned char)value) return (void *)(from + index);
  return NULL;
}

static size_t byte_length_bounded(const char *text, size_t limit) {
  const volatile char *from = text;
  size_t length = 0;
  while (length < limit && from[length] != 0) length++;
  return length;
}

static size_t byte_length(const char *text) { return byte_length_bounded(text, SIZE_MAX); }

static size_t wide_length(const wchar_t *text) {
  const volatile wchar_t *from = text;
  size_t length = 0;
  while (from[length] != 0) length++;
  return length;
}

static void byte_zero(void *destination, size_t length) { byte_fill(destination, 0, length); }

// ---- glibc's implementations ---------------------------------------------------------------------

static struct {
  void *(*memcpy)(void *, const void *, size_t);
  void *(*memmove)(void *, const void *, size_t);
  void *(*memset)(void *, int, size_t);
  int (*memcmp)(const void *, const void *, size_t);
  void *(*memchr)(const void *, int, size_t);
  size_t (*strlen)(const char *);
  size_t (*strnlen)(const char *, size_t);
  size_t (*wcslen)(const wchar_t *);
  void (*explicit_bzero)(void *, size_t);
} real = {byte_copy, byte_copy,    byte_fill,   byte_compare, byte_find,
          byte_length, byte_length_bounded, wide_length, byte_zero};

// 1 once glibc's implementations are resolved (from then on strdup allocates through the heap).
static int started;
// 1 when the checks are on (check_memops=1 and the runtime running).
static int checking;

#define RESOLVE(name)                                   \
  do {                                                  \
    void *symbol = dlsym(RTLD_NEXT, #name);             \
    if (symbol != NULL) *(void **)&real.name = symbol;  \
  } while (0)

// ---- The heap's tables, as the Swift side laid them out ------------------------------------------
// Written once by heappatrol_memops_configure before `checking` is released; read-only afterwards.

static struct {
  // 1 when the layout was understood (every size below as this file reads it).
  int usable;
  const unsigned char *reservations;
  const long *reservation_count;
  const uint32_t *dedicated_records;
  const unsigned char *records;
  size_t record_capacity;
  unsigned page_shift;
  size_t reservation_stride, reservation_base, reservation_length, reservation_page_map,
      reservation_dedicated;
  size_t record_stride, record_address, record_size, record_state, record_reservation;
  unsigned char live_state;
} heap;

// Whether a field fits its struct and has the size this file reads it with.
static int field_is(heappatrol_field field, size_t size, size_t stride) {
  return field.size == size && field.offset + size <= stride && field.offset % size == 0;
}

static int adopt_layout(const heappatrol_heap_layout *layout) {
  if (layout == NULL || layout->reservations == 0 || layout->reservation_count == 0 ||
      layout->dedicated_records == 0 || layout->records == 0)
    return 0;
  size_t page = layout->page_size;
  if (page == 0 || (page & (page - 1)) != 0) return 0;
  size_t word = sizeof(uintptr_t), stride = layout->reservation_stride,
         record = layout->record_stride;
  if (layout->reservation_count_size != sizeof(long) || layout->record_number_size != 4 ||
      layout->record_number_stride != 4 || !field_is(layout->reservation_base, word, stride) ||
      !field_is(layout->reservation_length, word, stride) ||
      !field_is(layout->reservation_page_map, word, stride) ||
      !field_is(layout->reservation_dedicated, 1, stride) ||
      !field_is(layout->record_address, word, record) ||
      !field_is(layout->record_size, word, record) || !field_is(layout->record_state, 1, record) ||
      !field_is(layout->record_reservation, 2, record) || stride % word != 0 ||
      record % word != 0)
    return 0;
  heap.reservations = (const unsigned char *)layout->reservations;
  heap.reservation_count = (const long *)layout->reservation_count;
  heap.dedicated_records = (const uint32_t *)layout->dedicated_records;
  heap.records = (const unsigned char *)layout->records;
  heap.record_capacity = layout->record_capacity;
  heap.page_shift = (unsigned)__builtin_ctzl(page);
  heap.reservation_stride = stride;
  heap.reservation_base = layout->reservation_base.offset;
  heap.reservation_length = layout->reservation_length.offset;
  heap.reservation_page_map = layout->reservation_page_map.offset;
  heap.reservation_dedicated = layout->reservation_dedicated.offset;
  heap.record_stride = record;
  heap.record_address = layout->record_address.offset;
  heap.record_size = layout->record_size.offset;
  heap.record_state = layout->record_state.offset;
  heap.record_reservation = layout->record_reservation.offset;
  heap.live_state = layout->live_state;
  return 1;
}

void heappatrol_memops_configure(int enabled, const heappatrol_heap_layout *layout) {
  heap.usable = adopt_layout(layout);
  RESOLVE(memcpy);
  RESOLVE(memmove);
  RESOLVE(memset);
  RESOLVE(memcmp);
  RESOLVE(memchr);
  RESOLVE(strlen);
  RESOLVE(strnlen);
  RESOLVE(wcslen);
  RESOLVE(explicit_bzero);
  __atomic_store_n(&started, 1, __ATOMIC_RELEASE);
  __atomic_store_n(&checking, enabled != 0, __ATOMIC_RELEASE);
}

// Fields of the tables. Records and reservation entries may be rewritten while we read them (see
// HeapTables.swift): relaxed atomic loads say so and cost the same as plain ones.
#define FIELD(base, offset, type) \
  __atomic_load_n((const type *)((base) + (offset)), __ATOMIC_RELAXED)

enum { NOT_HEAP = 0, LIVE_BLOCK = 1, HEAP_OTHER = 2 };

// The block whose page map entry covers `address` in reservation `index` (at `entry`): LIVE_BLOCK
// with its bounds when `address` is one of its bytes and it is live, else HEAP_OTHER. The same
// reading as HeapView.recordNumber + liveBounds: acquiring loads of the record number, so the
// record is at least as new as the block's publication.
INLINE int block_at(uintptr_t address, const unsigned char *entry, long index, uintptr_t base,
                    uintptr_t *start, uintptr_t *end) {
  uint32_t number;
  if (FIELD(entry, heap.reservation_dedicated, unsigned char)) {
    number = __atomic_load_n(heap.dedicated_records + index, __ATOMIC_ACQUIRE);
  } else {
    const uint32_t *map = (const uint32_t *)FIELD(entry, heap.reservation_page_map, uintptr_t);
    number = __atomic_load_n(map + ((address - base) >> heap.page_shift), __ATOMIC_ACQUIRE);
  }
  if (number == 0 || number >= heap.record_capacity) return HEAP_OTHER;
  const unsigned char *record = heap.records + (size_t)number * heap.record_stride;
  uintptr_t block_start = FIELD(record, heap.record_address, uintptr_t);
  uintptr_t block_end = block_start + FIELD(record, heap.record_size, uintptr_t);
  if (FIELD(record, heap.record_state, unsigned char) != heap.live_state ||
      FIELD(record, heap.record_reservation, uint16_t) != (uint16_t)index ||
      address < block_start || address >= block_end)
    return HEAP_OTHER;
  *start = block_start;
  *end = block_end;
  return LIVE_BLOCK;
}

// Where the range [first, last] lies: LIVE_BLOCK when `first` is a byte of a live block (its bounds
// in start/end: the caller compares `last`), NOT_HEAP when no reservation holds any byte of it,
// HEAP_OTHER otherwise (a heap address outside every live block, or a range running into the heap).
// Reservations are a handful of large ranges (64 GiB by default), scanned as HeapView does.
INLINE int lookup_range(uintptr_t first, uintptr_t last, uintptr_t *start, uintptr_t *end) {
  long count = __atomic_load_n(heap.reservation_count, __ATOMIC_ACQUIRE);
  const unsigned char *entry = heap.reservations;
  uintptr_t next_base = UINTPTR_MAX;  // the lowest reservation above `first`
  for (long index = 0; index < count; index++, entry += heap.reservation_stride) {
    uintptr_t base = FIELD(entry, heap.reservation_base, uintptr_t);
    uintptr_t length = FIELD(entry, heap.reservation_length, uintptr_t);
    if (first - base < length) return block_at(first, entry, index, base, start, end);
    if (base > first && base < next_base) next_base = base;
  }
  return next_base != UINTPTR_MAX && last >= next_base ? HEAP_OTHER : NOT_HEAP;
}

int heappatrol_memops_lookup(const void *address, size_t *start, size_t *end) {
  if (!heap.usable || !__atomic_load_n(&checking, __ATOMIC_ACQUIRE)) return -1;
  uintptr_t block_start = 0, block_end = 0;
  int found = lookup_range((uintptr_t)address, (uintptr_t)address, &block_start, &block_end);
  if (found == LIVE_BLOCK) {
    *start = block_start;
    *end = block_end;
  }
  return found;
}

// Checks are on and this call is the program's: HeapPatrol's own copies (struct copies, canary
// fills, a realloc's copy) run with the thread's reentrancy flag set and go straight to glibc.
INLINE int checks_on(void) {
  return __atomic_load_n(&checking, __ATOMIC_RELAXED) && LIKELY(!cshim_is_inside_inline());
}

// glibc's fortify failure ("*** buffer overflow detected ***"), for the __*_chk forms.
extern void __chk_fail(void) __attribute__((noreturn));

// ---- Checks (always inlined: FRAME is the exported function's) -----------------------------------

// In bounds of one live block, or nowhere near the heap: nothing more to do. Anything else goes to
// heappatrol_check_range, which diagnoses and reports.
INLINE void check_range(const void *start, size_t length, unsigned char access, void *frame,
                        unsigned char operation) {
  if (length == 0) return;
  if (LIKELY(heap.usable)) {
    uintptr_t first = (uintptr_t)start, last = first + length - 1;
    if (last < first) last = UINTPTR_MAX;
    // Most ranges of most programs (all of them but 1 in N under sample=N) are glibc's memory.
    if (LIKELY(cshim_range_outside_heap(first, last))) return;
    uintptr_t block_start, block_end;
    switch (lookup_range(first, last, &block_start, &block_end)) {
      case NOT_HEAP: return;
      case LIVE_BLOCK:
        if (last < block_end) return;
        break;
      default: break;
    }
  }
  heappatrol_check_range(start, length, access, frame, operation);
}

INLINE void check_read(const void *start, size_t length, void *frame, unsigned char operation) {
  check_range(start, length, ACCESS_READ, frame, operation);
}

INLINE void check_write(const void *start, size_t length, void *frame, unsigned char operation) {
  check_range(start, length, ACCESS_WRITE, frame, operation);
}

// Bytes readable from `address` before its block ends; SIZE_MAX when not the heap's.
INLINE size_t readable_bytes(const void *address) {
  if (UNLIKELY(!heap.usable)) return heappatrol_readable_bytes(address);
  if (LIKELY(cshim_range_outside_heap((uintptr_t)address, (uintptr_t)address))) return SIZE_MAX;
  uintptr_t block_start, block_end;
  switch (lookup_range((uintptr_t)address, (uintptr_t)address, &block_start, &block_end)) {
    case NOT_HEAP: return SIZE_MAX;
    case LIVE_BLOCK: return block_end - (uintptr_t)address;
    default: return heappatrol_readable_bytes(address);
  }
}

static inline int overlapping(const void *destination, size_t destination_length,
                              const void *source, size_t source_length) {
  uintptr_t to = (uintptr_t)destination, from = (uintptr_t)source;
  return destination_length != 0 && source_length != 0 && to < from + source_length &&
         from < to + destination_length;
}

// The length of a C string, bounded by the end of its heap block: a string that runs off its block
// is reported as a READ overrun before anything reads past the block.
INLINE size_t checked_strlen(const char *text, void *frame, unsigned char operation) {
  size_t limit = readable_bytes(text);
  if (limit == SIZE_MAX) return real.strlen(text);
  size_t length = real.strnlen(text, limit);
  if (length == limit) heappatrol_check_range(text, limit + 1, ACCESS_READ, frame, operation);
  return length;
}

INLINE size_t checked_strnlen(const char *text, size_t bound, void *frame,
                              unsigned char operation) {
  size_t limit = readable_bytes(text);
  if (limit >= bound) return real.strnlen(text, bound);
  size_t length = real.strnlen(text, limit);
  if (length == limit) heappatrol_check_range(text, limit + 1, ACCESS_READ, frame, operation);
  return length;
}

INLINE size_t checked_wcslen(const wchar_t *text, void *frame, unsigned char operation) {
  size_t limit = readable_bytes(text);
  if (limit == SIZE_MAX) return real.wcslen(text);
  size_t characters = limit / sizeof(wchar_t);
  size_t length = 0;
  while (length < characters && text[length] != 0) length++;
  if (length == characters)
    heappatrol_check_range(text, (characters + 1) * sizeof(wchar_t), ACCESS_READ, frame, operation);
  return length;
}

// memcpy's copy once the ranges are checked: an overlap is reported, then copied as memmove would
// (the program's data stays as it most likely would have been).
INLINE void *copy_checking_overlap(void *destination, const void *source, size_t length,
                                   void *frame, unsigned char operation) {
  if (UNLIKELY(overlapping(destination, length, source, length))) {
    heappatrol_report_overlap(destination, source, length, frame, operation);
    return real.memmove(destination, source, length);
  }
  return real.memcpy(destination, source, length);
}

INLINE void *checked_copy(void *destination, const void *source, size_t length, void *frame,
                          unsigned char operation) {
  check_read(source, length, frame, operation);
  check_write(destination, length, frame, operation);
  return copy_checking_overlap(destination, source, length, frame, operation);
}

// ---- The exported operations ---------------------------------------------------------------------

EXPORT KEEP_FRAME void *memcpy(void *restrict destination, const void *restrict source, size_t length) {
  const unsigned char operation = HEAPPATROL_OP_MEMCPY;
  if (!checks_on() || length == 0) return real.memcpy(destination, source, length);
  return checked_copy(destination, source, length, FRAME, operation);
}

EXPORT KEEP_FRAME void *memmove(void *destination, const void *source, size_t length) {
  const unsigned char operation = HEAPPATROL_OP_MEMMOVE;
  if (checks_on() && length != 0) {
    check_read(source, length, FRAME, operation);
    check_write(destination, length, FRAME, operation);
  }
  return real.memmove(destination, source, length);
}

EXPORT KEEP_FRAME void *memset(void *destination, int value, size_t length) {
  const unsigned char operation = HEAPPATROL_OP_MEMSET;
  if (checks_on()) check_write(destination, length, FRAME, operation);
  return real.memset(destination, value, length);
}

EXPORT KEEP_FRAME void bzero(void *destination, size_t length) {
  const unsigned char operation = HEAPPATROL_OP_BZERO;
  if (checks_on()) check_write(destination, length, FRAME, operation);
  real.memset(destination, 0, length);
  __asm__ volatile("");
}

EXPORT KEEP_FRAME void explicit_bzero(void *destination, size_t length) {
  const unsigned char operation = HEAPPATROL_OP_EXPLICIT_BZERO;
  if (checks_on()) check_write(destination, length, FRAME, operation);
  real.explicit_bzero(destination, length);
  __asm__ volatile("");
}

// Like AddressSanitizer's strict_memcmp: all `length` bytes of both sides must be valid, even if the
// comparison could stop earlier.
EXPORT KEEP_FRAME int memcmp(const void *left, const void *right, size_t length) {
  const unsigned char operation = HEAPPATROL_OP_MEMCMP;
  if (checks_on()) {
    check_read(left, length, FRAME, operation);
    check_read(right, length, FRAME, operation);
  }
  int result = real.memcmp(left, right, length);
  __asm__ volatile("");
  return result;
}

// memchr may stop at the first match: only the bytes up to the match must be valid. Search within
// the block first; past it, the search would have read outside the block.
EXPORT KEEP_FRAME void *memchr(const void *source, int value, size_t length) {
  const unsigned char operation = HEAPPATROL_OP_MEMCHR;
  if (!checks_on() || length == 0) return real.memchr(source, value, length);
  size_t limit = readable_bytes(source);
  if (limit >= length) return real.memchr(source, value, length);
  void *found = real.memchr(source, value, limit);
  if (found == NULL) heappatrol_check_range(source, limit + 1, ACCESS_READ, FRAME, operation);
  return found;
}

EXPORT KEEP_FRAME size_t strlen(const char *text) {
  const unsigned char operation = HEAPPATROL_OP_STRLEN;
  if (!checks_on()) return real.strlen(text);
  size_t length = checked_strlen(text, FRAME, operation);
  __asm__ volatile("");
  return length;
}

EXPORT KEEP_FRAME char *strcpy(char *restrict destination, const char *restrict source) {
  const unsigned char operation = HEAPPATROL_OP_STRCPY;
  if (!checks_on()) {
    size_t length = real.strlen(source);
    real.memcpy(destination, source, length + 1);
    return destination;
  }
  size_t length = checked_strlen(source, FRAME, operation) + 1;
  check_write(destination, length, FRAME, operation);
  copy_checking_overlap(destination, source, length, FRAME, operation);
  return destination;
}

// strncpy reads up to `count` bytes of the source (fewer at its NUL) and always writes `count`.
EXPORT KEEP_FRAME char *strncpy(char *restrict destination, const char *restrict source, size_t count) {
  const unsigned char operation = HEAPPATROL_OP_STRNCPY;
  size_t length;
  if (checks_on()) {
    length = checked_strnlen(source, count, FRAME, operation);
    size_t read = length < count ? length + 1 : count;
    check_write(destination, count, FRAME, operation);
    if (UNLIKELY(overlapping(destination, count, source, read))) {
      heappatrol_report_overlap(destination, source, read, FRAME, operation);
      real.memmove(destination, source, length);
      real.memset(destination + length, 0, count - length);
      return destination;
    }
  } else {
    length = real.strnlen(source, count);
  }
  real.memcpy(destination, source, length);
  real.memset(destination + length, 0, count - length);
  return destination;
}

EXPORT KEEP_FRAME char *strcat(char *restrict destination, const char *restrict source) {
  const unsigned char operation = HEAPPATROL_OP_STRCAT;
  if (!checks_on()) {
    size_t existing = real.strlen(destination), length = real.strlen(source);
    real.memcpy(destination + existing, source, length + 1);
    return destination;
  }
  size_t existing = checked_strlen(destination, FRAME, operation);
  size_t length = checked_strlen(source, FRAME, operation) + 1;
  check_write(destination + existing, length, FRAME, operation);
  if (UNLIKELY(overlapping(destination, existing + length, source, length))) {
    heappatrol_report_overlap(destination + existing, source, length, FRAME, operation);
    real.memmove(destination + existing, source, length);
  } else {
    real.memcpy(destination + existing, source, length);
  }
  return destination;
}

// strncat appends at most `count` bytes of the source, then a NUL.
EXPORT KEEP_FRAME char *strncat(char *restrict destination, const char *restrict source, size_t count) {
  const unsigned char operation = HEAPPATROL_OP_STRNCAT;
  size_t existing, length;
  if (checks_on()) {
    existing = checked_strlen(destination, FRAME, operation);
    length = checked_strnlen(source, count, FRAME, operation);
    check_write(destination + existing, length + 1, FRAME, operation);
    if (UNLIKELY(overlapping(destination, existing + length + 1, source, length))) {
      heappatrol_report_overlap(destination + existing, source, length, FRAME, operation);
      real.memmove(destination + existing, source, length);
      destination[existing + length] = 0;
      return destination;
    }
  } else {
    existing = real.strlen(destination);
    length = real.strnlen(source, count);
  }
  real.memcpy(destination + existing, source, length);
  destination[existing + length] = 0;
  return destination;
}

// The copy of strdup/strndup, allocated through the heap and charged to the program's call.
static inline __attribute__((always_inline)) char *duplicate(const char *source, size_t length,
                                                            void *frame) {
  char *copy = heappatrol_allocate(length + 1, 0, API_STRDUP, frame, cshim_gettid());
  if (copy == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  real.memcpy(copy, source, length);
  copy[length] = 0;
  return copy;
}

EXPORT KEEP_FRAME char *strdup(const char *source) {
  const unsigned char operation = HEAPPATROL_OP_STRDUP;
  if (!__atomic_load_n(&started, __ATOMIC_ACQUIRE)) {
    size_t length = real.strlen(source);
    char *copy = malloc(length + 1);
    if (copy != NULL) real.memcpy(copy, source, length + 1);
    return copy;
  }
  size_t length = checks_on() ? checked_strlen(source, FRAME, operation) : real.strlen(source);
  return duplicate(source, length, FRAME);
}

EXPORT KEEP_FRAME char *strndup(const char *source, size_t count) {
  const unsigned char operation = HEAPPATROL_OP_STRNDUP;
  if (!__atomic_load_n(&started, __ATOMIC_ACQUIRE)) {
    size_t length = real.strnlen(source, count);
    char *copy = malloc(length + 1);
    if (copy != NULL) {
      real.memcpy(copy, source, length);
      copy[length] = 0;
    }
    return copy;
  }
  size_t length =
      checks_on() ? checked_strnlen(source, count, FRAME, operation) : real.strnlen(source, count);
  return duplicate(source, length, FRAME);
}

EXPORT KEEP_FRAME wchar_t *wmemcpy(wchar_t *restrict destination, const wchar_t *restrict source,
                                   size_t count) {
  const unsigned char operation = HEAPPATROL_OP_WMEMCPY;
  size_t bytes = count * sizeof(wchar_t);
  if (!checks_on() || bytes == 0) {
    real.memcpy(destination, source, bytes);
    return destination;
  }
  checked_copy(destination, source, bytes, FRAME, operation);
  return destination;
}

EXPORT KEEP_FRAME wchar_t *wcscpy(wchar_t *restrict destination, const wchar_t *restrict source) {
  const unsigned char operation = HEAPPATROL_OP_WCSCPY;
  size_t bytes;
  if (!checks_on()) {
    bytes = (real.wcslen(source) + 1) * sizeof(wchar_t);
    real.memcpy(destination, source, bytes);
    return destination;
  }
  bytes = (checked_wcslen(source, FRAME, operation) + 1) * sizeof(wchar_t);
  check_write(destination, bytes, FRAME, operation);
  copy_checking_overlap(destination, source, bytes, FRAME, operation);
  return destination;
}

// ---- Fortified forms (-D_FORTIFY_SOURCE): the compiler knew the destination's object size. -------
// Our bounds check comes first (it names the block and the call); then glibc's own rule: a
// destination smaller than the operation is a fortify failure.

EXPORT KEEP_FRAME void *__memcpy_chk(void *destination, const void *source, size_t length,
                                     size_t destination_size) {
  const unsigned char operation = HEAPPATROL_OP_MEMCPY_CHK;
  if (!checks_on() || length == 0) {
    if (destination_size < length) __chk_fail();
    return real.memcpy(destination, source, length);
  }
  check_read(source, length, FRAME, operation);
  check_write(destination, length, FRAME, operation);
  if (destination_size < length) __chk_fail();
  return copy_checking_overlap(destination, source, length, FRAME, operation);
}

EXPORT KEEP_FRAME void *__memmove_chk(void *destination, const void *source, size_t length,
                                      size_t destination_size) {
  const unsigned char operation = HEAPPATROL_OP_MEMMOVE_CHK;
  if (checks_on() && length != 0) {
    check_read(source, length, FRAME, operation);
    check_write(destination, length, FRAME, operation);
  }
  if (destination_size < length) __chk_fail();
  return real.memmove(destination, source, length);
}

EXPORT KEEP_FRAME void *__memset_chk(void *destination, int value, size_t length,
                                     size_t destination_size) {
  const unsigned char operation = HEAPPATROL_OP_MEMSET_CHK;
  if (checks_on()) check_write(destination, length, FRAME, operation);
  if (destination_size < length) __chk_fail();
  return real.memset(destination, value, length);
}

EXPORT KEEP_FRAME void __explicit_bzero_chk(void *destination, size_t length,
                                            size_t destination_size) {
  const unsigned char operation = HEAPPATROL_OP_EXPLICIT_BZERO_CHK;
  if (checks_on()) check_write(destination, length, FRAME, operation);
  if (destination_size < length) __chk_fail();
  real.explicit_bzero(destination, length);
  __asm__ volatile("");
}

EXPORT KEEP_FRAME char *__strcpy_chk(char *destination, const char *source, size_t destination_size) {
  const unsigned char operation = HEAPPATROL_OP_STRCPY_CHK;
  size_t length =
      (checks_on() ? checked_strlen(source, FRAME, operation) : real.strlen(source)) + 1;
  if (checks_on()) check_write(destination, length, FRAME, operation);
  if (destination_size < length) __chk_fail();
  if (checks_on() && UNLIKELY(overlapping(destination, length, source, length))) {
    heappatrol_report_overlap(destination, source, length, FRAME, operation);
    real.memmove(destination, source, length);
    return destination;
  }
  real.memcpy(destination, source, length);
  return destination;
}

EXPORT KEEP_FRAME char *__strncpy_chk(char *destination, const char *source, size_t count,
                                      size_t destination_size) {
  const unsigned char operation = HEAPPATROL_OP_STRNCPY_CHK;
  if (destination_size < count) __chk_fail();
  size_t length =
      checks_on() ? checked_strnlen(source, count, FRAME, operation) : real.strnlen(source, count);
  if (checks_on()) check_write(destination, count, FRAME, operation);
  real.memmove(destination, source, length);
  real.memset(destination + length, 0, count - length);
  return destination;
}

EXPORT KEEP_FRAME char *__strcat_chk(char *destination, const char *source, size_t destination_size) {
  const unsigned char operation = HEAPPATROL_OP_STRCAT_CHK;
  int on = checks_on();
  size_t existing = on ? checked_strlen(destination, FRAME, operation) : real.strlen(destination);
  size_t length = (on ? checked_strlen(source, FRAME, operation) : real.strlen(source)) + 1;
  if (on) check_write(destination + existing, length, FRAME, operation);
  if (destination_size < existing + length) __chk_fail();
  real.memmove(destination + existing, source, length);
  return destination;
}

EXPORT KEEP_FRAME char *__strncat_chk(char *destination, const char *source, size_t count,
                                      size_t destination_size) {
  const unsigned char operation = HEAPPATROL_OP_STRNCAT_CHK;
  int on = checks_on();
  size_t existing = on ? checked_strlen(destination, FRAME, operation) : real.strlen(destination);
  size_t length =
      on ? checked_strnlen(source, count, FRAME, operation) : real.strnlen(source, count);
  if (on) check_write(destination + existing, length + 1, FRAME, operation);
  if (destination_size < existing + length + 1) __chk_fail();
  real.memmove(destination + existing, source, length);
  destination[existing + length] = 0;
  return destination;
}

EXPORT KEEP_FRAME wchar_t *__wmemcpy_chk(wchar_t *destination, const wchar_t *source, size_t count,
                                         size_t destination_count) {
  const unsigned char operation = HEAPPATROL_OP_WMEMCPY_CHK;
  size_t bytes = count * sizeof(wchar_t);
  if (!checks_on() || bytes == 0) {
    if (destination_count < count) __chk_fail();
    real.memcpy(destination, source, bytes);
    return destination;
  }
  check_read(source, bytes, FRAME, operation);
  check_write(destination, bytes, FRAME, operation);
  if (destination_count < count) __chk_fail();
  copy_checking_overlap(destination, source, bytes, FRAME, operation);
  return destination;
}

EXPORT KEEP_FRAME wchar_t *__wcscpy_chk(wchar_t *destination, const wchar_t *source,
                                        size_t destination_count) {
  const unsigned char operation = HEAPPATROL_OP_WCSCPY_CHK;
  size_t characters =
      (checks_on() ? checked_wcslen(source, FRAME, operation) : real.wcslen(source)) + 1;
  if (checks_on()) check_write(destination, characters * sizeof(wchar_t), FRAME, operation);
  if (destination_count < characters) __chk_fail();
  real.memmove(destination, source, characters * sizeof(wchar_t));
  return destination;
}
