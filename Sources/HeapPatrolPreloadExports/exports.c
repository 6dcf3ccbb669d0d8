// The exported allocation symbols: the C malloc family and the C++ operators new/delete. Each is a
// thin forwarder to the Swift entry points (heappatrol_exports.h); C handles what Swift cannot say
// well here: errno, the exact C signatures, and the mangled C++ names.
//
// Whether loaded with LD_PRELOAD or linked into an executable, these definitions come before
// glibc's in symbol resolution, so every malloc of the process (glibc's internal ones included)
// arrives here. None of them allocates; reentrant calls are sent to glibc by the Swift side.
//
// C++ `operator new` must throw std::bad_alloc when it fails. This library does not link the C++
// runtime (it also serves C and Swift programs), so a failing throwing `new` reports out-of-memory
// and aborts instead; the nothrow forms return NULL as specified.
#include "heappatrol_exports.h"

#include "cshims.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default"))) __attribute__((used))
// Each forwarder keeps a real frame (built with -fno-omit-frame-pointer, no tail calls): the Swift
// side walks the stack from FRAME, so the first recorded PC is the program's call site.
#define KEEP_FRAME __attribute__((noinline, disable_tail_calls))
#define FRAME __builtin_frame_address(0)

// AllocationAPI raw values (Sources/HeapPatrol/Core/Finding.swift).
enum {
  API_MALLOC = 0,
  API_CALLOC = 1,
  API_REALLOC = 2,
  API_REALLOCARRAY = 3,
  API_MEMALIGN = 4,
  API_POSIX_MEMALIGN = 5,
  API_ALIGNED_ALLOC = 6,
  API_VALLOC = 7,
  API_PVALLOC = 8,
  API_FREE = 9,
  API_NEW = 10,
  API_NEW_ARRAY = 11,
  API_DELETE = 12,
  API_DELETE_ARRAY = 13,
};

// Set by our constructor. Until then every call goes straight to glibc: the first mallocs of a
// process come from other libraries' initializers (libstdc++'s emergency pool, ld.so) before the
// Swift runtime has registered this image's types, when Swift code of ours cannot run yet. Those
// blocks stay glibc's for good (our free hands pointers it does not own back to glibc).
static volatile int constructed;

extern void *__libc_malloc(size_t size);
extern void __libc_free(void *pointer);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

// The kernel thread id, cached per thread (gettid is a syscall; reports and block records need it
// on every call). The first call of each thread also gives it an alternate signal stack, so a fault
// on an overflowed stack can still be diagnosed. Reset in the child after fork.
static __thread int cached_thread __attribute__((tls_model("initial-exec")));

static inline int thread_id(void) {
  int id = cached_thread;
  if (__builtin_expect(id == 0, 0)) {
    cshim_ensure_alternate_stack();
    id = cshim_gettid();
    cached_thread = id;
  }
  return id;
}

static void forget_thread_in_child(void) { cached_thread = 0; }

// ---- Sampling (`sample=N`) ----------------------------------------------------------------------
// With N > 1 only one allocation in N (on average) goes to the guarded heap; the others go to glibc
// without entering Swift at all. Each thread counts down a draw from [1, 2N-1] (mean N, as GWP-ASan
// does), from a per-thread xorshift generator: seeded from `sample_seed` and the thread's ordinal
// (the order threads first allocate), so a fixed seed picks the same allocations of each thread in
// every run; with seed 0 from the clock. Pointers route back by address: the heap's reservations are
// a few large ranges (heappatrol_owns), everything else is glibc's.
static uint32_t sample_interval = 1;  // set once by the constructor
static uint64_t sample_seed;
static unsigned long thread_ordinals;
static __thread int32_t sample_countdown __attribute__((tls_model("initial-exec")));
static __thread uint64_t sample_state __attribute__((tls_model("initial-exec")));

extern uint32_t heappatrol_sample_interval(void);
extern uint64_t heappatrol_sample_seed(void);
extern int heappatrol_owns(const void *pointer);

static int32_t next_countdown(void) {
  if (sample_state == 0) {
    unsigned long ordinal = __atomic_add_fetch(&thread_ordinals, 1, __ATOMIC_RELAXED);
    uint64_t seed = sample_seed;
    if (seed == 0) {
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      seed = (uint64_t)now.tv_nsec ^ ((uint64_t)now.tv_sec << 32) ^ (uint64_t)getpid();
    }
    sample_state = (seed ^ (ordinal * 0x9E3779B97F4A7C15ULL)) | 1;
  }
  sample_state ^= sample_state << 13;
  sample_state ^= sample_state >> 7;
  sample_state ^= sample_state << 17;
  return (int32_t)(1 + sample_state % (2 * (uint64_t)sample_interval - 1));
}

// The countdown reached zero: this allocation is sampled, draw the next one. A thread's first
// allocation only starts its countdown (otherwise every thread's first allocation would be sampled).
static __attribute__((noinline)) int countdown_expired(void) {
  int first = sample_state == 0;
  sample_countdown = next_countdown();
  return !first;
}

// Whether this allocation is one of the sampled (guarded) ones.
static inline __attribute__((always_inline)) int sampled(void) {
  if (__builtin_expect(sample_interval == 1, 1)) return 1;
  if (__builtin_expect(--sample_countdown > 0, 1)) return 0;
  return countdown_expired();
}

// Whether a pointer must go to glibc in sampling mode (not in our address space).
static inline __attribute__((always_inline)) int glibc_owned(void *pointer) {
  return sample_interval != 1 &&
         (cshim_range_outside_heap((uintptr_t)pointer, (uintptr_t)pointer) ||
          !heappatrol_owns(pointer));
}

static void *libc_allocate(size_t size, size_t alignment) {
  return alignment > 16 ? __libc_memalign(alignment, size) : __libc_malloc(size);
}

static int is_power_of_two(size_t value) { return value != 0 && (value & (value - 1)) == 0; }

static size_t page_size(void) {
  static size_t cached;
  if (cached == 0) cached = (size_t)sysconf(_SC_PAGESIZE);
  return cached;
}

// The leak scan at exit is conservative: a stale copy of a block's address left in a dead stack
// frame of our allocation path would keep that block "reachable" for good. Our frames lie within a
// few KiB below the exported function's; wipe that area once the call returned (~100 ns).
static __attribute__((noinline)) void scrub_dead_frames(void) {
  volatile char area[8192];
  memset((char *)area, 0, sizeof area);
  __asm__ volatile("" : : "r"(area) : "memory");
}

static inline __attribute__((always_inline)) void *scrubbed(void *result) {
  scrub_dead_frames();
  return result;
}

// Every allocating entry point goes through here (inlined, so FRAME stays the caller's).
static inline __attribute__((always_inline)) void *gated_allocate(size_t size, size_t alignment,
                                                                 unsigned char api, void *frame) {
  if (!constructed || !sampled()) return libc_allocate(size, alignment);
  return scrubbed(heappatrol_allocate(size, alignment, api, frame, thread_id()));
}

static void *allocated(void *pointer) {
  if (pointer == NULL) errno = ENOMEM;
  return pointer;
}

EXPORT KEEP_FRAME void *malloc(size_t size) {
  if (!constructed) return __libc_malloc(size);
  return allocated(gated_allocate(size, 0, API_MALLOC, FRAME));
}

EXPORT KEEP_FRAME void free(void *pointer) {
  if (!constructed || glibc_owned(pointer)) {
    __libc_free(pointer);
    return;
  }
  if (pointer != NULL) heappatrol_free(pointer, API_FREE, FRAME, thread_id());
  __asm__ volatile("");
}

EXPORT KEEP_FRAME void *calloc(size_t count, size_t size) {
  if (!constructed || !sampled()) return __libc_calloc(count, size);
  return allocated(scrubbed(heappatrol_calloc(count, size, FRAME, thread_id())));
}

EXPORT KEEP_FRAME void *realloc(void *pointer, size_t size) {
  if (!constructed) return __libc_realloc(pointer, size);
  int foreign = glibc_owned(pointer);
  if (foreign && (size == 0 || !sampled())) return __libc_realloc(pointer, size);
  if (foreign && pointer != NULL) {
    // A glibc block that moves into a sampled (guarded) one: copy what both hold.
    void *moved = scrubbed(heappatrol_allocate(size, 0, API_REALLOC, FRAME, thread_id()));
    if (moved == NULL) {
      errno = ENOMEM;
      return NULL;
    }
    size_t old = cshim_libc_usable_size(pointer);
    memcpy(moved, pointer, old < size ? old : size);
    __libc_free(pointer);
    return moved;
  }
  void *result = scrubbed(heappatrol_realloc(pointer, size, FRAME, thread_id()));
  if (result == NULL && (size != 0 || pointer == NULL)) errno = ENOMEM;
  return result;
}

EXPORT KEEP_FRAME void *reallocarray(void *pointer, size_t count, size_t size) {
  if (!constructed || (glibc_owned(pointer) && pointer != NULL)) {
    // (Sampling: a glibc block stays glibc's through reallocarray.)
    if (size != 0 && count > SIZE_MAX / size) {
      errno = ENOMEM;
      return NULL;
    }
    return __libc_realloc(pointer, count * size);
  }
  void *result = scrubbed(heappatrol_reallocarray(pointer, count, size, FRAME, thread_id()));
  if (result == NULL && (count != 0 && size != 0)) errno = ENOMEM;
  return result;
}

// mpatrol's BADALN, ASan's invalid-allocation-alignment: the call fails as glibc's would (EINVAL),
// and the program is told why, at the call.
static void bad_alignment(size_t alignment, size_t size, void *frame) {
  if (constructed) heappatrol_bad_alignment(alignment, size, frame, thread_id());
}

EXPORT KEEP_FRAME int posix_memalign(void **out, size_t alignment, size_t size) {
  if (!is_power_of_two(alignment) || alignment % sizeof(void *) != 0) {
    bad_alignment(alignment, size, FRAME);
    return EINVAL;
  }
  void *result = gated_allocate(size, alignment, API_POSIX_MEMALIGN, FRAME);
  if (result == NULL) return ENOMEM;
  *out = result;
  return 0;
}

EXPORT KEEP_FRAME void *aligned_alloc(size_t alignment, size_t size) {
  // glibc 2.38+: a non-power-of-two alignment is EINVAL (C17 dropped the size-multiple rule).
  if (!is_power_of_two(alignment)) {
    bad_alignment(alignment, size, FRAME);
    errno = EINVAL;
    return NULL;
  }
  return allocated(gated_allocate(size, alignment, API_ALIGNED_ALLOC, FRAME));
}

EXPORT KEEP_FRAME void *memalign(size_t alignment, size_t size) {
  // glibc's memalign rounds a non-power-of-two alignment up to the next power of two.
  if (alignment > ((size_t)1 << 62)) {
    bad_alignment(alignment, size, FRAME);
    errno = EINVAL;
    return NULL;
  }
  size_t rounded = 1;
  while (rounded < alignment) rounded <<= 1;
  return allocated(gated_allocate(size, rounded, API_MEMALIGN, FRAME));
}

EXPORT KEEP_FRAME void *valloc(size_t size) {
  return allocated(gated_allocate(size, page_size(), API_VALLOC, FRAME));
}

EXPORT KEEP_FRAME void *pvalloc(size_t size) {
  size_t page = page_size();
  if (size > SIZE_MAX - page) {
    errno = ENOMEM;
    return NULL;
  }
  size_t rounded = size == 0 ? page : (size + page - 1) & ~(page - 1);
  return allocated(gated_allocate(rounded, page, API_PVALLOC, FRAME));
}

EXPORT KEEP_FRAME size_t malloc_usable_size(void *pointer) {
  if (pointer == NULL) return 0;
  if (!constructed || glibc_owned(pointer)) return cshim_libc_usable_size(pointer);
  size_t size = heappatrol_usable_size(pointer);
  __asm__ volatile("");
  return size;
}

// For tests and benchmarks (found with dlsym): allocation calls that reached glibc because our own
// code, inside a malloc of the program, allocated. The malloc path must keep this still.
EXPORT unsigned long heappatrol_reentrant_calls(void) { return cshim_reentrant_allocations(); }

// ---- C++ operators (Itanium ABI mangled names; size_t is unsigned long: 'm') -------------------

typedef struct nothrow_t nothrow_t;
typedef size_t align_val_t;

// A throwing new never returns NULL (a macro, so FRAME is the operator's own frame).
#define NEW_OR_DIE(size, alignment, api)                             \
  do {                                                               \
    void *result = gated_allocate(size, alignment, api, FRAME); \
    if (result == NULL) heappatrol_new_failed(size, api, FRAME, thread_id());     \
    return result;                                                   \
  } while (0)

// new / new[]
EXPORT KEEP_FRAME void *_Znwm(size_t size) { NEW_OR_DIE(size, 0, API_NEW); }
EXPORT KEEP_FRAME void *_Znam(size_t size) { NEW_OR_DIE(size, 0, API_NEW_ARRAY); }
EXPORT KEEP_FRAME void *_ZnwmRKSt9nothrow_t(size_t size, const nothrow_t *tag) {
  (void)tag;
  return allocated(gated_allocate(size, 0, API_NEW, FRAME));
}
EXPORT KEEP_FRAME void *_ZnamRKSt9nothrow_t(size_t size, const nothrow_t *tag) {
  (void)tag;
  return allocated(gated_allocate(size, 0, API_NEW_ARRAY, FRAME));
}
EXPORT KEEP_FRAME void *_ZnwmSt11align_val_t(size_t size, align_val_t alignment) {
  NEW_OR_DIE(size, alignment, API_NEW);
}
EXPORT KEEP_FRAME void *_ZnamSt11align_val_t(size_t size, align_val_t alignment) {
  NEW_OR_DIE(size, alignment, API_NEW_ARRAY);
}
EXPORT KEEP_FRAME void *_ZnwmSt11align_val_tRKSt9nothrow_t(size_t size, align_val_t alignment,
                                                          const nothrow_t *tag) {
  (void)tag;
  return allocated(gated_allocate(size, alignment, API_NEW, FRAME));
}
EXPORT KEEP_FRAME void *_ZnamSt11align_val_tRKSt9nothrow_t(size_t size, align_val_t alignment,
                                                          const nothrow_t *tag) {
  (void)tag;
  return allocated(gated_allocate(size, alignment, API_NEW_ARRAY, FRAME));
}

// delete / delete[]: plain, sized, aligned, sized+aligned, nothrow.
#define DELETE_BODY(api)                                                     \
  do {                                                                       \
    if (!constructed || glibc_owned(pointer)) {                              \
      __libc_free(pointer);                                                  \
      return;                                                                \
    }                                                                        \
    if (pointer != NULL) heappatrol_free(pointer, api, FRAME, thread_id());  \
    __asm__ volatile("");                                                    \
  } while (0)

EXPORT KEEP_FRAME void _ZdlPv(void *pointer) { DELETE_BODY(API_DELETE); }
EXPORT KEEP_FRAME void _ZdaPv(void *pointer) { DELETE_BODY(API_DELETE_ARRAY); }
EXPORT KEEP_FRAME void _ZdlPvm(void *pointer, size_t size) {
  (void)size;
  DELETE_BODY(API_DELETE);
}
EXPORT KEEP_FRAME void _ZdaPvm(void *pointer, size_t size) {
  (void)size;
  DELETE_BODY(API_DELETE_ARRAY);
}
EXPORT KEEP_FRAME void _ZdlPvSt11align_val_t(void *pointer, align_val_t alignment) {
  (void)alignment;
  DELETE_BODY(API_DELETE);
}
EXPORT KEEP_FRAME void _ZdaPvSt11align_val_t(void *pointer, align_val_t alignment) {
  (void)alignment;
  DELETE_BODY(API_DELETE_ARRAY);
}
EXPORT KEEP_FRAME void _ZdlPvmSt11align_val_t(void *pointer, size_t size, align_val_t alignment) {
  (void)size;
  (void)alignment;
  DELETE_BODY(API_DELETE);
}
EXPORT KEEP_FRAME void _ZdaPvmSt11align_val_t(void *pointer, size_t size, align_val_t alignment) {
  (void)size;
  (void)alignment;
  DELETE_BODY(API_DELETE_ARRAY);
}
EXPORT KEEP_FRAME void _ZdlPvRKSt9nothrow_t(void *pointer, const nothrow_t *tag) {
  (void)tag;
  DELETE_BODY(API_DELETE);
}
EXPORT KEEP_FRAME void _ZdaPvRKSt9nothrow_t(void *pointer, const nothrow_t *tag) {
  (void)tag;
  DELETE_BODY(API_DELETE_ARRAY);
}
EXPORT KEEP_FRAME void _ZdlPvSt11align_val_tRKSt9nothrow_t(void *pointer, align_val_t alignment,
                                                           const nothrow_t *tag) {
  (void)alignment;
  (void)tag;
  DELETE_BODY(API_DELETE);
}
EXPORT KEEP_FRAME void _ZdaPvSt11align_val_tRKSt9nothrow_t(void *pointer, align_val_t alignment,
                                                           const nothrow_t *tag) {
  (void)alignment;
  (void)tag;
  DELETE_BODY(API_DELETE_ARRAY);
}

// Start the runtime when the library is loaded, if no malloc did it before: bad options stop the
// process before main, and the fault handler is in place even for programs that never allocate.
__attribute__((constructor)) static void heappatrol_constructor(void) {
  cshim_atfork(NULL, NULL, forget_thread_in_child);
  constructed = 1;
  heappatrol_start();
  sample_seed = heappatrol_sample_seed();
  sample_interval = heappatrol_sample_interval();
}
