// CShims: only what Swift cannot express. Each wrapper is thin: `cshim_foo` wraps `foo` and returns
// 0 or an errno (never -1 with errno left in a global). Everything here is async-signal-safe unless a
// comment says otherwise, and nothing here calls malloc.
#ifndef CSHIMS_H
#define CSHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- Constants the libc headers may lack -------------------------------------------------------
enum {
  CSHIM_MADV_GUARD_INSTALL = 102,
  CSHIM_MADV_GUARD_REMOVE = 103,
  CSHIM_SEGV_MAPERR = 1,
  CSHIM_SEGV_ACCERR = 2,
  CSHIM_SI_KERNEL = 128,
  CSHIM_ACCESS_READ = 0,
  CSHIM_ACCESS_WRITE = 1,
  CSHIM_ACCESS_EXECUTE = 2,
};

// ---- Memory syscalls ---------------------------------------------------------------------------
/// mmap of anonymous memory (fd -1) or of a file; `*out` gets the address on success.
int cshim_mmap(void *hint, size_t length, int prot, int flags, int fd, off_t offset, void **out);
int cshim_munmap(void *address, size_t length);
int cshim_mprotect(void *address, size_t length, int prot);
int cshim_madvise(void *address, size_t length, int advice);
int cshim_mlock(const void *address, size_t length);
int cshim_munlock(const void *address, size_t length);
int cshim_mincore(void *address, size_t length, unsigned char *vector);
size_t cshim_page_size(void);

/// Whether MADV_GUARD_INSTALL works here (probed once on a scratch mapping; cached).
/// `cshim_force_no_guard_markers(1)` makes it report 0 from then on (to test the fallback).
int cshim_guard_markers_supported(void);
void cshim_force_no_guard_markers(int force);

// ---- Counters ----------------------------------------------------------------------------------
/// getrusage(RUSAGE_SELF) minor/major fault counters.
int cshim_fault_counts(uint64_t *minor, uint64_t *major);
/// getrusage(RUSAGE_THREAD): the calling thread's own minor/major fault counters (immune to other
/// threads' faults, which makes per-step fault deltas exact under a parallel test runner).
int cshim_thread_fault_counts(uint64_t *minor, uint64_t *major);
/// The number of VMAs as counted against vm.max_map_count: lines of /proc/self/maps less
/// [vsyscall]. Reads with a stack buffer (no malloc).
int cshim_vma_count(int *count);
/// The number of VMAs (lines of /proc/self/maps less [vsyscall]) that overlap [start, end).
int cshim_vma_count_in(uintptr_t start, uintptr_t end, int *count);
/// The protection (PROT_* bits) of the VMA containing `address` per /proc/self/maps, without
/// touching the memory; `*mapped` is 0 in a hole. Guard markers are invisible here (they keep the
/// VMA's protection).
int cshim_mapping_protection(uintptr_t address, int *mapped, int *protection);
/// For each of `pages` pages from `start`: the PROT_* bits of its VMA, or -1 where there is no VMA.
/// One pass over /proc/self/maps; never touches the pages.
int cshim_page_protections(uintptr_t start, size_t pages, signed char *protections);
/// Reads `pages` 64-bit entries of /proc/self/pagemap from `start` (bit 63 present, bit 62 swapped,
/// bit 58 guard region on Linux 6.15+). Never touches the pages.
int cshim_pagemap_entries(uintptr_t start, size_t pages, uint64_t *entries);
/// vm.max_map_count from /proc/sys/vm/max_map_count.
int cshim_max_map_count(int *limit);

// ---- Faults and signals ------------------------------------------------------------------------
/// A decoded SIGSEGV/SIGBUS.
typedef struct cshim_fault {
  int signo;
  int code;             // si_code
  uintptr_t address;    // si_addr
  int access;           // CSHIM_ACCESS_*: x86-64 error code bit 0x2 (write), 0x10 (fetch); aarch64 ESR WnR
  unsigned long error;  // raw error code (REG_ERR) or ESR; 0 when unknown
  uintptr_t pc;
  uintptr_t sp;
  uintptr_t fp;
} cshim_fault;

/// The handler is called on the alternate stack with the decoded fault. It returns 1 if it handled
/// the fault (the faulting instruction is retried), 0 to pass it on: to the previous handler, or to
/// the default action (re-raised, so the process dies the way a crash would and can dump core).
typedef int (*cshim_fault_handler)(const cshim_fault *fault, void *siginfo, void *ucontext);

/// Installs `handler` for SIGSEGV and SIGBUS with SA_SIGINFO | SA_ONSTACK, keeping the previous
/// actions for chaining. Also sets up the calling thread's alternate stack.
int cshim_install_fault_handler(cshim_fault_handler handler);
/// Restores the previous actions.
int cshim_uninstall_fault_handler(void);
/// Gives the calling thread an alternate signal stack (mmap'd, with a guard page) if it has none.
int cshim_ensure_alternate_stack(void);
/// Restores SIG_DFL for `signo` and re-raises it (the process dies with that signal).
void cshim_die_with_signal(int signo);

/// write(2) of the whole buffer, retrying on EINTR and short writes. Async-signal-safe.
int cshim_write_all(int fd, const void *buffer, size_t length);
/// fsync-free flush helper: nothing is buffered in C; provided for symmetry. Returns 0.
int cshim_open_append(const char *path, int *fd_out);
int cshim_close(int fd);

// ---- Recoverable probes (tests, the differential harness) --------------------------------------
/// Reads (`write` = 0) or writes (`write` = 1, storing `value`) one byte at `address`. Returns 0 if
/// it did not fault (with `*value_out` set for a read), or 1 if it faulted, with `*code` (si_code)
/// and `*fault_address` (si_addr); a negative errno if the dispatcher could not be installed.
/// Uses sigsetjmp/siglongjmp: the process-wide SIGSEGV/SIGBUS dispatcher (installed on first use,
/// chaining to the previous actions) checks a per-thread "probe active" flag, so a probe wins over
/// cshim_install_fault_handler on its own thread and other threads are unaffected.
int cshim_probe(uintptr_t address, int write, uint8_t value, uint8_t *value_out, int *code,
                uintptr_t *fault_address);
/// The fully decoded fault of this thread's most recent faulting probe (access, error code, pc).
void cshim_probe_last_fault(cshim_fault *fault);

// ---- glibc forwarding (reentrant calls and pointers we do not own) -----------------------------
void *cshim_libc_malloc(size_t size);
void cshim_libc_free(void *pointer);
void *cshim_libc_calloc(size_t count, size_t size);
void *cshim_libc_realloc(void *pointer, size_t size);
void *cshim_libc_memalign(size_t alignment, size_t size);
/// glibc's malloc_usable_size for a glibc pointer (not ours): read from the chunk header.
size_t cshim_libc_usable_size(void *pointer);

/// Per-thread reentrancy flag (initial-exec TLS, so reading it never allocates).
/// `cshim_enter` returns 1 if the thread was already inside HeapPatrol (the caller must then go to
/// glibc), else sets the flag and returns 0. `cshim_leave` clears it.
int cshim_enter(void);
void cshim_leave(void);
int cshim_is_inside(void);
#ifndef __swift__
/// The flag itself, for C callers on a hot path (the checked memcpy & co.): an inline TLS read
/// instead of a call. Initial-exec: the preload library is loaded at start-up (LD_PRELOAD or linked
/// in), so its TLS is in the static block. Hidden: each image that links CShims has its own.
extern __thread int cshim_inside_flag __attribute__((tls_model("initial-exec"), visibility("hidden")));
static inline int cshim_is_inside_inline(void) { return cshim_inside_flag; }
/// For the preload's interposed sigaction/signal. While a HeapPatrol fault handler is installed, a
/// program's SIGSEGV/SIGBUS action does not replace the dispatcher: it becomes the action that faults
/// which are not HeapPatrol's go on to (ASan keeps its handler too; here the program's still runs for
/// its own faults). Returns 1 when it took the call (`old`, if given, receives the program's current
/// action), 0 when the caller must pass the call on to glibc.
struct sigaction;
int cshim_chain_action(int signo, const struct sigaction *action, struct sigaction *old);
/// The extent of every reservation noted so far (`cshim_note_heap_range`), for inline filters.
extern uintptr_t cshim_heap_low __attribute__((visibility("hidden")));
extern uintptr_t cshim_heap_high __attribute__((visibility("hidden")));
/// Whether [first, last] lies wholly outside the extent: then it touches no reservation.
static inline int cshim_range_outside_heap(uintptr_t first, uintptr_t last) {
  return last < __atomic_load_n(&cshim_heap_low, __ATOMIC_ACQUIRE) ||
         first >= __atomic_load_n(&cshim_heap_high, __ATOMIC_ACQUIRE);
}
#endif
/// Counts a malloc-family call made from inside HeapPatrol (sent to glibc), and reads the count.
void cshim_note_reentrant_allocation(void);
unsigned long cshim_reentrant_allocations(void);
/// Widens the known extent of the heap's reservations (called when a reservation is made); a
/// pointer outside it is certainly not the heap's (`cshim_range_outside_heap`, for C callers).
void cshim_note_heap_range(uintptr_t start, uintptr_t end);

// ---- Threads, stacks, modules ------------------------------------------------------------------
int cshim_gettid(void);
int cshim_getpid(void);
/// Walks frame pointers from the caller: stores up to `max` return addresses, skipping `skip`.
/// Validates every frame pointer against the current thread's stack bounds; never faults.
int cshim_backtrace(uintptr_t *pcs, int max, int skip);
/// Same, starting from a given frame (pc, fp), e.g. the faulting context.
int cshim_backtrace_from(uintptr_t pc, uintptr_t fp, uintptr_t *pcs, int max);
/// Finds the module (ELF object) containing `pc` by reading /proc/self/maps with a stack buffer:
/// copies its path into `path` (NUL-terminated, truncated to `path_size`) and returns the offset
/// to give a symbolizer (pc - load base for ET_DYN, pc for ET_EXEC). Returns 0 on success, ENOENT.
int cshim_module_for_pc(uintptr_t pc, char *path, size_t path_size, uintptr_t *offset);

/// Registers fork handlers (pthread_atfork) that call the three functions. Not async-signal-safe.
int cshim_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void));

/// Registers a function to run at exit (atexit). Not async-signal-safe.
int cshim_atexit(void (*function)(void));

/// A monotonic clock in nanoseconds.
uint64_t cshim_monotonic_ns(void);

#ifdef __cplusplus
}
#endif
#endif
