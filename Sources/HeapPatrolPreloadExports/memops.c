// Checked memory operations (mpatrol's RNGOVF / STROVF / RNGOVL checks): memcpy, memmove, memset,
// memcmp, memchr, strlen, strcpy, strncpy, strcat, strncat, strdup, strndup, bzero, explicit_bzero,
// wmemcpy, wcscpy and the fortified __*_chk forms glibc routes _FORTIFY_SOURCE calls through.
//
// Before an operation runs, the ranges it will read and write are checked against the heap blocks
// they touch (heappatrol_check_range: a page -> block lookup, no scan), so an overrun is reported at
// the call, with the call's own stack, instead of as a fault inside glibc (or not at all, when it
// only reaches the canary slack before the guard page). Then glibc's own implementation runs.
//
// Pointers that are not the heap's cost one range test on the Swift side; calls made from inside
// HeapPatrol, calls before the library's start and everything with check_memops=0 go straight to
// glibc. Nothing here allocates.
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
// The heap's HeapView (see heappatrol_memops_configure).
static const void *heap_view;

#define RESOLVE(name)                                   \
  do {                                                  \
    void *symbol = dlsym(RTLD_NEXT, #name);             \
    if (symbol != NULL) *(void **)&real.name = symbol;  \
  } while (0)

void heappatrol_memops_configure(int enabled, const void *view) {
  heap_view = view;
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
  __atomic_store_n(&checking, enabled != 0 && view != NULL, __ATOMIC_RELEASE);
}

static inline int checks_on(void) { return __atomic_load_n(&checking, __ATOMIC_RELAXED); }

// glibc's fortify failure ("*** buffer overflow detected ***"), for the __*_chk forms.
extern void __chk_fail(void) __attribute__((noreturn));

// ---- Checks (always inlined: FRAME is the exported function's) -----------------------------------

// In bounds of one live block, or nowhere near the heap: nothing more to do. Anything else goes to
// heappatrol_check_range, which diagnoses and reports (or lets HeapPatrol's own copies pass).
static inline __attribute__((always_inline)) void check_range(const void *start, size_t length,
                                                             unsigned char access, void *frame) {
  if (length == 0) return;
  size_t block_start, block_end;
  uintptr_t first = (uintptr_t)start, last = first + length - 1;
  switch (heappatrol_live_bounds(heap_view, start, &block_start, &block_end)) {
    case 0:
      // Not the heap's: only a range crossing into a page of the heap is still suspect.
      if (last < first || ((first ^ last) >> 12) != 0) break;
      return;
    case 1:
      if (last >= first && last < block_end) return;
      break;
    default:
      break;
  }
  heappatrol_check_range(start, length, access, frame);
}

static inline __attribute__((always_inline)) void check_read(const void *start, size_t length,
                                                            void *frame) {
  check_range(start, length, ACCESS_READ, frame);
}

static inline __attribute__((always_inline)) void check_write(const void *start, size_t length,
                                                             void *frame) {
  check_range(start, length, ACCESS_WRITE, frame);
}

// Bytes readable from `address` before its block ends; SIZE_MAX when not the heap's.
static inline __attribute__((always_inline)) size_t readable_bytes(const void *address) {
  size_t block_start, block_end;
  switch (heappatrol_live_bounds(heap_view, address, &block_start, &block_end)) {
    case 0: return SIZE_MAX;
    case 1: return block_end - (uintptr_t)address;
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
static inline __attribute__((always_inline)) size_t checked_strlen(const char *text, void *frame) {
  size_t limit = readable_bytes(text);
  if (limit == SIZE_MAX) return real.strlen(text);
  size_t length = real.strnlen(text, limit);
  if (length == limit) heappatrol_check_range(text, limit + 1, ACCESS_READ, frame);
  return length;
}

static inline __attribute__((always_inline)) size_t checked_strnlen(const char *text, size_t bound,
                                                                   void *frame) {
  size_t limit = readable_bytes(text);
  if (limit >= bound) return real.strnlen(text, bound);
  size_t length = real.strnlen(text, limit);
  if (length == limit) heappatrol_check_range(text, limit + 1, ACCESS_READ, frame);
  return length;
}

static inline __attribute__((always_inline)) size_t checked_wcslen(const wchar_t *text,
                                                                  void *frame) {
  size_t limit = readable_bytes(text);
  if (limit == SIZE_MAX) return real.wcslen(text);
  size_t characters = limit / sizeof(wchar_t);
  size_t length = 0;
  while (length < characters && text[length] != 0) length++;
  if (length == characters) heappatrol_check_range(text, (characters + 1) * sizeof(wchar_t), ACCESS_READ, frame);
  return length;
}

// memcpy's copy once the ranges are checked: an overlap is reported, then copied as memmove would
// (the program's data stays as it most likely would have been).
static inline __attribute__((always_inline)) void *copy_checking_overlap(void *destination,
                                                                        const void *source,
                                                                        size_t length, void *frame) {
  if (UNLIKELY(overlapping(destination, length, source, length))) {
    heappatrol_report_overlap(destination, source, length, frame);
    return real.memmove(destination, source, length);
  }
  return real.memcpy(destination, source, length);
}

static inline __attribute__((always_inline)) void *checked_copy(void *destination, const void *source,
                                                               size_t length, void *frame) {
  check_read(source, length, frame);
  check_write(destination, length, frame);
  return copy_checking_overlap(destination, source, length, frame);
}

// ---- The exported operations ---------------------------------------------------------------------

EXPORT KEEP_FRAME void *memcpy(void *restrict destination, const void *restrict source, size_t length) {
  if (!checks_on() || length == 0) return real.memcpy(destination, source, length);
  return checked_copy(destination, source, length, FRAME);
}

EXPORT KEEP_FRAME void *memmove(void *destination, const void *source, size_t length) {
  if (checks_on() && length != 0) {
    check_read(source, length, FRAME);
    check_write(destination, length, FRAME);
  }
  return real.memmove(destination, source, length);
}

EXPORT KEEP_FRAME void *memset(void *destination, int value, size_t length) {
  if (checks_on()) check_write(destination, length, FRAME);
  return real.memset(destination, value, length);
}

EXPORT KEEP_FRAME void bzero(void *destination, size_t length) {
  if (checks_on()) check_write(destination, length, FRAME);
  real.memset(destination, 0, length);
  __asm__ volatile("");
}

EXPORT KEEP_FRAME void explicit_bzero(void *destination, size_t length) {
  if (checks_on()) check_write(destination, length, FRAME);
  real.explicit_bzero(destination, length);
  __asm__ volatile("");
}

// Like AddressSanitizer's strict_memcmp: all `length` bytes of both sides must be valid, even if the
// comparison could stop earlier.
EXPORT KEEP_FRAME int memcmp(const void *left, const void *right, size_t length) {
  if (checks_on()) {
    check_read(left, length, FRAME);
    check_read(right, length, FRAME);
  }
  int result = real.memcmp(left, right, length);
  __asm__ volatile("");
  return result;
}

// memchr may stop at the first match: only the bytes up to the match must be valid. Search within
// the block first; past it, the search would have read outside the block.
EXPORT KEEP_FRAME void *memchr(const void *source, int value, size_t length) {
  if (!checks_on() || length == 0) return real.memchr(source, value, length);
  size_t limit = readable_bytes(source);
  if (limit >= length) return real.memchr(source, value, length);
  void *found = real.memchr(source, value, limit);
  if (found == NULL) heappatrol_check_range(source, limit + 1, ACCESS_READ, FRAME);
  return found;
}

EXPORT KEEP_FRAME size_t strlen(const char *text) {
  if (!checks_on()) return real.strlen(text);
  size_t length = checked_strlen(text, FRAME);
  __asm__ volatile("");
  return length;
}

EXPORT KEEP_FRAME char *strcpy(char *restrict destination, const char *restrict source) {
  if (!checks_on()) {
    size_t length = real.strlen(source);
    real.memcpy(destination, source, length + 1);
    return destination;
  }
  size_t length = checked_strlen(source, FRAME) + 1;
  check_write(destination, length, FRAME);
  if (UNLIKELY(overlapping(destination, length, source, length))) {
    heappatrol_report_overlap(destination, source, length, FRAME);
    real.memmove(destination, source, length);
  } else {
    real.memcpy(destination, source, length);
  }
  return destination;
}

// strncpy reads up to `count` bytes of the source (fewer at its NUL) and always writes `count`.
EXPORT KEEP_FRAME char *strncpy(char *restrict destination, const char *restrict source, size_t count) {
  size_t length;
  if (checks_on()) {
    length = checked_strnlen(source, count, FRAME);
    size_t read = length < count ? length + 1 : count;
    check_write(destination, count, FRAME);
    if (UNLIKELY(overlapping(destination, count, source, read))) {
      heappatrol_report_overlap(destination, source, read, FRAME);
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
  if (!checks_on()) {
    size_t existing = real.strlen(destination), length = real.strlen(source);
    real.memcpy(destination + existing, source, length + 1);
    return destination;
  }
  size_t existing = checked_strlen(destination, FRAME);
  size_t length = checked_strlen(source, FRAME) + 1;
  check_write(destination + existing, length, FRAME);
  if (UNLIKELY(overlapping(destination, existing + length, source, length))) {
    heappatrol_report_overlap(destination + existing, source, length, FRAME);
    real.memmove(destination + existing, source, length);
  } else {
    real.memcpy(destination + existing, source, length);
  }
  return destination;
}

// strncat appends at most `count` bytes of the source, then a NUL.
EXPORT KEEP_FRAME char *strncat(char *restrict destination, const char *restrict source, size_t count) {
  size_t existing, length;
  if (checks_on()) {
    existing = checked_strlen(destination, FRAME);
    length = checked_strnlen(source, count, FRAME);
    check_write(destination + existing, length + 1, FRAME);
    if (UNLIKELY(overlapping(destination, existing + length + 1, source, length))) {
      heappatrol_report_overlap(destination + existing, source, length, FRAME);
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
  if (!__atomic_load_n(&started, __ATOMIC_ACQUIRE)) {
    size_t length = real.strlen(source);
    char *copy = malloc(length + 1);
    if (copy != NULL) real.memcpy(copy, source, length + 1);
    return copy;
  }
  size_t length = checks_on() ? checked_strlen(source, FRAME) : real.strlen(source);
  return duplicate(source, length, FRAME);
}

EXPORT KEEP_FRAME char *strndup(const char *source, size_t count) {
  if (!__atomic_load_n(&started, __ATOMIC_ACQUIRE)) {
    size_t length = real.strnlen(source, count);
    char *copy = malloc(length + 1);
    if (copy != NULL) {
      real.memcpy(copy, source, length);
      copy[length] = 0;
    }
    return copy;
  }
  size_t length = checks_on() ? checked_strnlen(source, count, FRAME) : real.strnlen(source, count);
  return duplicate(source, length, FRAME);
}

EXPORT KEEP_FRAME wchar_t *wmemcpy(wchar_t *restrict destination, const wchar_t *restrict source,
                                   size_t count) {
  size_t bytes = count * sizeof(wchar_t);
  if (!checks_on() || bytes == 0) {
    real.memcpy(destination, source, bytes);
    return destination;
  }
  checked_copy(destination, source, bytes, FRAME);
  return destination;
}

EXPORT KEEP_FRAME wchar_t *wcscpy(wchar_t *restrict destination, const wchar_t *restrict source) {
  size_t bytes;
  if (!checks_on()) {
    bytes = (real.wcslen(source) + 1) * sizeof(wchar_t);
    real.memcpy(destination, source, bytes);
    return destination;
  }
  bytes = (checked_wcslen(source, FRAME) + 1) * sizeof(wchar_t);
  check_write(destination, bytes, FRAME);
  if (UNLIKELY(overlapping(destination, bytes, source, bytes))) {
    heappatrol_report_overlap(destination, source, bytes, FRAME);
    real.memmove(destination, source, bytes);
  } else {
    real.memcpy(destination, source, bytes);
  }
  return destination;
}

// ---- Fortified forms (-D_FORTIFY_SOURCE): the compiler knew the destination's object size. -------
// Our bounds check comes first (it names the block and the call); then glibc's own rule: a
// destination smaller than the operation is a fortify failure.

EXPORT KEEP_FRAME void *__memcpy_chk(void *destination, const void *source, size_t length,
                                     size_t destination_size) {
  if (!checks_on() || length == 0) {
    if (destination_size < length) __chk_fail();
    return real.memcpy(destination, source, length);
  }
  check_read(source, length, FRAME);
  check_write(destination, length, FRAME);
  if (destination_size < length) __chk_fail();
  return copy_checking_overlap(destination, source, length, FRAME);
}

EXPORT KEEP_FRAME void *__memmove_chk(void *destination, const void *source, size_t length,
                                      size_t destination_size) {
  if (checks_on() && length != 0) {
    check_read(source, length, FRAME);
    check_write(destination, length, FRAME);
  }
  if (destination_size < length) __chk_fail();
  return real.memmove(destination, source, length);
}

EXPORT KEEP_FRAME void *__memset_chk(void *destination, int value, size_t length,
                                     size_t destination_size) {
  if (checks_on()) check_write(destination, length, FRAME);
  if (destination_size < length) __chk_fail();
  return real.memset(destination, value, length);
}

EXPORT KEEP_FRAME void __explicit_bzero_chk(void *destination, size_t length,
                                            size_t destination_size) {
  if (checks_on()) check_write(destination, length, FRAME);
  if (destination_size < length) __chk_fail();
  real.explicit_bzero(destination, length);
  __asm__ volatile("");
}

EXPORT KEEP_FRAME char *__strcpy_chk(char *destination, const char *source, size_t destination_size) {
  size_t length = (checks_on() ? checked_strlen(source, FRAME) : real.strlen(source)) + 1;
  if (checks_on()) check_write(destination, length, FRAME);
  if (destination_size < length) __chk_fail();
  if (checks_on() && UNLIKELY(overlapping(destination, length, source, length))) {
    heappatrol_report_overlap(destination, source, length, FRAME);
    real.memmove(destination, source, length);
    return destination;
  }
  real.memcpy(destination, source, length);
  return destination;
}

EXPORT KEEP_FRAME char *__strncpy_chk(char *destination, const char *source, size_t count,
                                      size_t destination_size) {
  if (destination_size < count) __chk_fail();
  size_t length = checks_on() ? checked_strnlen(source, count, FRAME) : real.strnlen(source, count);
  if (checks_on()) check_write(destination, count, FRAME);
  real.memmove(destination, source, length);
  real.memset(destination + length, 0, count - length);
  return destination;
}

EXPORT KEEP_FRAME char *__strcat_chk(char *destination, const char *source, size_t destination_size) {
  int on = checks_on();
  size_t existing = on ? checked_strlen(destination, FRAME) : real.strlen(destination);
  size_t length = (on ? checked_strlen(source, FRAME) : real.strlen(source)) + 1;
  if (on) check_write(destination + existing, length, FRAME);
  if (destination_size < existing + length) __chk_fail();
  real.memmove(destination + existing, source, length);
  return destination;
}

EXPORT KEEP_FRAME char *__strncat_chk(char *destination, const char *source, size_t count,
                                      size_t destination_size) {
  int on = checks_on();
  size_t existing = on ? checked_strlen(destination, FRAME) : real.strlen(destination);
  size_t length = on ? checked_strnlen(source, count, FRAME) : real.strnlen(source, count);
  if (on) check_write(destination + existing, length + 1, FRAME);
  if (destination_size < existing + length + 1) __chk_fail();
  real.memmove(destination + existing, source, length);
  destination[existing + length] = 0;
  return destination;
}

EXPORT KEEP_FRAME wchar_t *__wmemcpy_chk(wchar_t *destination, const wchar_t *source, size_t count,
                                         size_t destination_count) {
  size_t bytes = count * sizeof(wchar_t);
  if (!checks_on() || bytes == 0) {
    if (destination_count < count) __chk_fail();
    real.memcpy(destination, source, bytes);
    return destination;
  }
  check_read(source, bytes, FRAME);
  check_write(destination, bytes, FRAME);
  if (destination_count < count) __chk_fail();
  copy_checking_overlap(destination, source, bytes, FRAME);
  return destination;
}

EXPORT KEEP_FRAME wchar_t *__wcscpy_chk(wchar_t *destination, const wchar_t *source,
                                        size_t destination_count) {
  size_t characters = (checks_on() ? checked_wcslen(source, FRAME) : real.wcslen(source)) + 1;
  if (checks_on()) check_write(destination, characters * sizeof(wchar_t), FRAME);
  if (destination_count < characters) __chk_fail();
  real.memmove(destination, source, characters * sizeof(wchar_t));
  return destination;
}
