// CShims: the thin C layer under PageSpace and the heap. See include/cshims.h for the contract.
//
// Rules kept throughout this file: no malloc (stack buffers and mmap only), every syscall wrapper
// returns 0 or an errno, and everything reachable from the SIGSEGV/SIGBUS dispatcher is
// async-signal-safe. Per-thread state uses initial-exec TLS so that touching it never calls
// __tls_get_addr (which may allocate) — this matters once the library is LD_PRELOADed.
#define _GNU_SOURCE
#include "cshims.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#define CSHIM_TLS __thread __attribute__((tls_model("initial-exec")))

// ---- Memory syscalls ---------------------------------------------------------------------------

int cshim_mmap(void *hint, size_t length, int prot, int flags, int fd, off_t offset, void **out) {
  void *result = mmap(hint, length, prot, flags, fd, offset);
  if (result == MAP_FAILED) return errno;
  *out = result;
  return 0;
}

int cshim_munmap(void *address, size_t length) { return munmap(address, length) == 0 ? 0 : errno; }

int cshim_mprotect(void *address, size_t length, int prot) {
  return mprotect(address, length, prot) == 0 ? 0 : errno;
}

int cshim_madvise(void *address, size_t length, int advice) {
  return madvise(address, length, advice) == 0 ? 0 : errno;
}

int cshim_mlock(const void *address, size_t length) {
  return mlock(address, length) == 0 ? 0 : errno;
}

int cshim_munlock(const void *address, size_t length) {
  return munlock(address, length) == 0 ? 0 : errno;
}

int cshim_mincore(void *address, size_t length, unsigned char *vector) {
  return mincore(address, length, vector) == 0 ? 0 : errno;
}

size_t cshim_page_size(void) {
  static _Atomic size_t cached = 0;
  size_t size = atomic_load_explicit(&cached, memory_order_relaxed);
  if (size == 0) {
    size = (size_t)sysconf(_SC_PAGESIZE);
    atomic_store_explicit(&cached, size, memory_order_relaxed);
  }
  return size;
}

// 0 = not probed yet, 1 = supported, 2 = not supported.
static _Atomic int guard_markers_state = 0;
static _Atomic int guard_markers_forced_off = 0;

int cshim_guard_markers_supported(void) {
  if (atomic_load(&guard_markers_forced_off)) return 0;
  int state = atomic_load(&guard_markers_state);
  if (state == 0) {
    // Probe on a scratch page: older kernels reject the unknown advice with EINVAL.
    size_t page = cshim_page_size();
    void *scratch = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (scratch == MAP_FAILED) return 0;  // cannot tell now; try again next time
    state = madvise(scratch, page, CSHIM_MADV_GUARD_INSTALL) == 0 ? 1 : 2;
    munmap(scratch, page);
    atomic_store(&guard_markers_state, state);
  }
  return state == 1;
}

void cshim_force_no_guard_markers(int force) { atomic_store(&guard_markers_forced_off, force != 0); }

// ---- Counters ----------------------------------------------------------------------------------

int cshim_fault_counts(uint64_t *minor, uint64_t *major) {
  struct rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) != 0) return errno;
  *minor = (uint64_t)usage.ru_minflt;
  *major = (uint64_t)usage.ru_majflt;
  return 0;
}

int cshim_thread_fault_counts(uint64_t *minor, uint64_t *major) {
  struct rusage usage;
  if (getrusage(RUSAGE_THREAD, &usage) != 0) return errno;
  *minor = (uint64_t)usage.ru_minflt;
  *major = (uint64_t)usage.ru_majflt;
  return 0;
}

// A /proc/self/maps line, parsed. `path` points into the reader's line buffer (valid only during
// the callback) and is "" for anonymous mappings.
typedef struct maps_line {
  uintptr_t start;
  uintptr_t end;
  char perms[5];
  uintptr_t offset;
  const char *path;
} maps_line;

// Return nonzero from the visitor to stop early.
typedef int (*maps_visitor)(const maps_line *line, void *context);

static uintptr_t parse_hex(const char **cursor) {
  uintptr_t value = 0;
  const char *p = *cursor;
  for (;; p++) {
    char c = *p;
    if (c >= '0' && c <= '9') value = value * 16 + (uintptr_t)(c - '0');
    else if (c >= 'a' && c <= 'f') value = value * 16 + (uintptr_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') value = value * 16 + (uintptr_t)(c - 'A' + 10);
    else break;
  }
  *cursor = p;
  return value;
}

static void parse_maps_line(char *text, maps_line *line) {
  const char *p = text;
  line->start = parse_hex(&p);
  if (*p == '-') p++;
  line->end = parse_hex(&p);
  while (*p == ' ') p++;
  for (int i = 0; i < 4; i++) line->perms[i] = (*p && *p != ' ') ? *p++ : '-';
  line->perms[4] = 0;
  while (*p && *p != ' ') p++;
  while (*p == ' ') p++;
  line->offset = parse_hex(&p);
  // Skip dev and inode.
  for (int field = 0; field < 2; field++) {
    while (*p == ' ') p++;
    while (*p && *p != ' ') p++;
  }
  while (*p == ' ') p++;
  line->path = p;
}

// Streams /proc/self/maps through a stack buffer, one parsed line at a time. Lines longer than the
// line buffer are truncated (only very long paths are). Async-signal-safe.
static int visit_maps(maps_visitor visitor, void *context) {
  int fd;
  do fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return errno;
  char chunk[2048];
  char text[4096 + 128];
  size_t used = 0;
  int stopped = 0;
  for (;;) {
    ssize_t got = read(fd, chunk, sizeof chunk);
    if (got < 0) {
      if (errno == EINTR) continue;
      int error = errno;
      close(fd);
      return error;
    }
    if (got == 0) break;
    for (ssize_t i = 0; i < got && !stopped; i++) {
      if (chunk[i] == '\n') {
        text[used] = 0;
        maps_line line;
        parse_maps_line(text, &line);
        stopped = visitor(&line, context);
        used = 0;
      } else if (used + 1 < sizeof text) {
        text[used++] = chunk[i];
      }
    }
    if (stopped) break;
  }
  close(fd);
  return 0;
}

static int is_vsyscall(const maps_line *line) { return strcmp(line->path, "[vsyscall]") == 0; }

static int count_line(const maps_line *line, void *context) {
  if (!is_vsyscall(line)) ++*(int *)context;
  return 0;
}

int cshim_vma_count(int *count) {
  int lines = 0;
  int error = visit_maps(count_line, &lines);
  if (error) return error;
  *count = lines;
  return 0;
}

typedef struct range_count {
  uintptr_t start, end;
  int count;
} range_count;

static int count_overlapping_line(const maps_line *line, void *context) {
  range_count *range = context;
  if (line->start >= range->end) return 1;  // the file is sorted: nothing further can overlap
  if (line->end > range->start && !is_vsyscall(line)) range->count++;
  return 0;
}

int cshim_vma_count_in(uintptr_t start, uintptr_t end, int *count) {
  range_count range = {start, end, 0};
  int error = visit_maps(count_overlapping_line, &range);
  if (error) return error;
  *count = range.count;
  return 0;
}

typedef struct protection_query {
  uintptr_t address;
  int found;
  int protection;
} protection_query;

static int find_protection(const maps_line *line, void *context) {
  protection_query *query = context;
  if (line->start > query->address) return 1;
  if (query->address < line->end) {
    query->found = 1;
    query->protection = (line->perms[0] == 'r' ? PROT_READ : 0) |
                        (line->perms[1] == 'w' ? PROT_WRITE : 0) |
                        (line->perms[2] == 'x' ? PROT_EXEC : 0);
    return 1;
  }
  return 0;
}

int cshim_mapping_protection(uintptr_t address, int *mapped, int *protection) {
  protection_query query = {address, 0, 0};
  int error = visit_maps(find_protection, &query);
  if (error) return error;
  *mapped = query.found;
  *protection = query.protection;
  return 0;
}

typedef struct protections_fill {
  uintptr_t start;
  size_t pages;
  size_t page_size;
  signed char *protections;
} protections_fill;

static int fill_protections(const maps_line *line, void *context) {
  protections_fill *fill = context;
  uintptr_t end = fill->start + fill->pages * fill->page_size;
  if (line->start >= end) return 1;
  if (line->end <= fill->start || is_vsyscall(line)) return 0;
  int protection = (line->perms[0] == 'r' ? PROT_READ : 0) | (line->perms[1] == 'w' ? PROT_WRITE : 0) |
                   (line->perms[2] == 'x' ? PROT_EXEC : 0);
  uintptr_t from = line->start > fill->start ? line->start : fill->start;
  uintptr_t to = line->end < end ? line->end : end;
  for (uintptr_t page = from; page < to; page += fill->page_size)
    fill->protections[(page - fill->start) / fill->page_size] = (signed char)protection;
  return 0;
}

int cshim_page_protections(uintptr_t start, size_t pages, signed char *protections) {
  for (size_t i = 0; i < pages; i++) protections[i] = -1;
  protections_fill fill = {start, pages, cshim_page_size(), protections};
  return visit_maps(fill_protections, &fill);
}

int cshim_pagemap_entries(uintptr_t start, size_t pages, uint64_t *entries) {
  int fd;
  do fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return errno;
  size_t wanted = pages * sizeof(uint64_t);
  off_t offset = (off_t)(start / cshim_page_size() * sizeof(uint64_t));
  size_t done = 0;
  while (done < wanted) {
    ssize_t got = pread(fd, (char *)entries + done, wanted - done, offset + (off_t)done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      int error = got < 0 ? errno : EIO;
      close(fd);
      return error;
    }
    done += (size_t)got;
  }
  close(fd);
  return 0;
}

static int read_small_file(const char *path, char *buffer, size_t size) {
  int fd;
  do fd = open(path, O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return -errno;
  ssize_t got;
  do got = read(fd, buffer, size - 1);
  while (got < 0 && errno == EINTR);
  int error = got < 0 ? errno : 0;
  close(fd);
  if (got < 0) return -error;
  buffer[got] = 0;
  return (int)got;
}

int cshim_max_map_count(int *limit) {
  char text[64];
  int got = read_small_file("/proc/sys/vm/max_map_count", text, sizeof text);
  if (got < 0) return -got;
  int value = 0;
  for (const char *p = text; *p >= '0' && *p <= '9'; p++) value = value * 10 + (*p - '0');
  *limit = value;
  return 0;
}

// ---- Faults and signals ------------------------------------------------------------------------
//
// One process-wide dispatcher handles SIGSEGV and SIGBUS. It is installed on first use, by either
// cshim_install_fault_handler or cshim_probe, and keeps the actions it replaced for chaining. Order:
//   1. a probe active on the faulting thread wins (siglongjmp back into cshim_probe);
//   2. the installed HeapPatrol handler, which may claim the fault (return 1: retry the access);
//   3. the previous action (SA_SIGINFO or plain handler), or the default action.

typedef struct probe_state {
  volatile int active;
  sigjmp_buf resume;
  cshim_fault fault;
} probe_state;

static CSHIM_TLS probe_state thread_probe;

static pthread_mutex_t dispatcher_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int dispatcher_installed = 0;
static _Atomic(cshim_fault_handler) installed_handler = NULL;

// glibc's sigaction itself: the preload library exports an interposing `sigaction` (which hands
// SIGSEGV/SIGBUS actions to cshim_chain_action), and the dispatcher's own installs must reach the
// kernel.
extern int __sigaction(int signo, const struct sigaction *action, struct sigaction *old);

// The action a fault that is not ours goes on to, per signal: what was installed before the
// dispatcher, or what the program has set since (cshim_chain_action). Two slots each, so a handler
// reading one never sees it half-written: an update fills the other slot, then flips the index.
static struct sigaction chained_actions[2][2];  // [0: SIGSEGV, 1: SIGBUS][slot]
static _Atomic int chained_slot[2];

static int signal_index(int signo) { return signo == SIGBUS ? 1 : 0; }

static const struct sigaction *chained_action(int signo) {
  int index = signal_index(signo);
  return &chained_actions[index][atomic_load(&chained_slot[index])];
}

// Caller holds dispatcher_lock.
static void set_chained_action(int signo, const struct sigaction *action) {
  int index = signal_index(signo);
  int next = 1 - atomic_load(&chained_slot[index]);
  chained_actions[index][next] = *action;
  atomic_store(&chained_slot[index], next);
}

static void decode_fault(int signo, siginfo_t *info, void *context, cshim_fault *fault) {
  memset(fault, 0, sizeof *fault);
  fault->signo = signo;
  fault->code = info->si_code;
  fault->address = (uintptr_t)info->si_addr;
  fault->access = CSHIM_ACCESS_READ;
  ucontext_t *uc = context;
  if (uc == NULL) return;
#if defined(__x86_64__)
  unsigned long error = (unsigned long)uc->uc_mcontext.gregs[REG_ERR];
  fault->error = error;
  // Page-fault error code: bit 1 = write, bit 4 = instruction fetch. #GP (SI_KERNEL) gives 0.
  if (error & 0x10) fault->access = CSHIM_ACCESS_EXECUTE;
  else if (error & 0x2) fault->access = CSHIM_ACCESS_WRITE;
  fault->pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
  fault->sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
  fault->fp = (uintptr_t)uc->uc_mcontext.gregs[REG_RBP];
#elif defined(__aarch64__)
  fault->pc = (uintptr_t)uc->uc_mcontext.pc;
  fault->sp = (uintptr_t)uc->uc_mcontext.sp;
  fault->fp = (uintptr_t)uc->uc_mcontext.regs[29];
  // The kernel appends an esr_context record (magic ESR_MAGIC) to the reserved area.
  const unsigned char *record = (const unsigned char *)uc->uc_mcontext.__reserved;
  const unsigned char *limit = record + sizeof uc->uc_mcontext.__reserved;
  while (record + 8 <= limit) {
    uint32_t magic, size;
    memcpy(&magic, record, 4);
    memcpy(&size, record + 4, 4);
    if (magic == 0 || size < 8) break;
    if (magic == 0x45535201u /* ESR_MAGIC */ && size >= 16) {
      uint64_t esr;
      memcpy(&esr, record + 8, 8);
      fault->error = (unsigned long)esr;
      unsigned exception_class = (unsigned)(esr >> 26) & 0x3f;
      if (exception_class == 0x20 || exception_class == 0x21) fault->access = CSHIM_ACCESS_EXECUTE;
      else if (esr & (1u << 6)) fault->access = CSHIM_ACCESS_WRITE;  // WnR
      break;
    }
    record += size;
  }
#endif
}

static void set_default_action(int signo) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  __sigaction(signo, &action, NULL);
}

static void dispatch_fault(int signo, siginfo_t *info, void *context) {
  int saved_errno = errno;
  if (thread_probe.active) {
    thread_probe.active = 0;
    decode_fault(signo, info, context, &thread_probe.fault);
    siglongjmp(thread_probe.resume, 1);
  }
  cshim_fault_handler handler = atomic_load(&installed_handler);
  if (handler != NULL) {
    cshim_fault fault;
    decode_fault(signo, info, context, &fault);
    if (handler(&fault, info, context)) {
      errno = saved_errno;
      return;
    }
  }
  const struct sigaction *previous = chained_action(signo);
  struct sigaction once;
  if (previous->sa_flags & SA_RESETHAND) {
    // As the kernel does for a handler it delivers to: reset to the default on entry (sysv_signal).
    // A trylock: the lock is never held across a fault in practice, and a handler must not block.
    once = *previous;
    previous = &once;
    if (pthread_mutex_trylock(&dispatcher_lock) == 0) {
      struct sigaction reset;
      memset(&reset, 0, sizeof reset);
      reset.sa_handler = SIG_DFL;
      set_chained_action(signo, &reset);
      pthread_mutex_unlock(&dispatcher_lock);
    }
  }
  if (previous->sa_flags & SA_SIGINFO) {
    if (previous->sa_sigaction != NULL) {
      previous->sa_sigaction(signo, info, context);
      errno = saved_errno;
      return;
    }
  } else if (previous->sa_handler != SIG_DFL && previous->sa_handler != SIG_IGN) {
    previous->sa_handler(signo);
    errno = saved_errno;
    return;
  }
  // Default action (an ignored synchronous fault cannot be ignored either). For a fault raised by
  // the CPU, returning re-executes the faulting instruction under SIG_DFL, so the process dies with
  // the real pc in its core dump; a signal sent by kill/raise must be re-raised instead.
  set_default_action(signo);
  if (info == NULL || info->si_code <= 0) raise(signo);
  errno = saved_errno;
}

// Caller holds dispatcher_lock.
static int install_dispatcher_locked(void) {
  if (atomic_load(&dispatcher_installed)) return 0;
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = dispatch_fault;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  // The actions to chain to are in place before the dispatcher can run.
  struct sigaction segv, bus;
  if (__sigaction(SIGSEGV, NULL, &segv) != 0 || __sigaction(SIGBUS, NULL, &bus) != 0) return errno;
  set_chained_action(SIGSEGV, &segv);
  set_chained_action(SIGBUS, &bus);
  if (__sigaction(SIGSEGV, &action, NULL) != 0) return errno;
  if (__sigaction(SIGBUS, &action, NULL) != 0) {
    int error = errno;
    __sigaction(SIGSEGV, &segv, NULL);
    return error;
  }
  atomic_store(&dispatcher_installed, 1);
  return 0;
}

static int ensure_dispatcher(void) {
  if (atomic_load(&dispatcher_installed)) return 0;
  pthread_mutex_lock(&dispatcher_lock);
  int error = install_dispatcher_locked();
  pthread_mutex_unlock(&dispatcher_lock);
  return error;
}

int cshim_install_fault_handler(cshim_fault_handler handler) {
  int error = cshim_ensure_alternate_stack();
  if (error) return error;
  pthread_mutex_lock(&dispatcher_lock);
  error = install_dispatcher_locked();
  if (!error) atomic_store(&installed_handler, handler);
  pthread_mutex_unlock(&dispatcher_lock);
  return error;
}

int cshim_uninstall_fault_handler(void) {
  pthread_mutex_lock(&dispatcher_lock);
  int error = 0;
  atomic_store(&installed_handler, NULL);
  if (atomic_load(&dispatcher_installed)) {
    if (__sigaction(SIGSEGV, chained_action(SIGSEGV), NULL) != 0) error = errno;
    if (__sigaction(SIGBUS, chained_action(SIGBUS), NULL) != 0) error = errno;
    atomic_store(&dispatcher_installed, 0);
  }
  pthread_mutex_unlock(&dispatcher_lock);
  return error;
}

int cshim_chain_action(int signo, const struct sigaction *action, struct sigaction *old) {
  if ((signo != SIGSEGV && signo != SIGBUS) || atomic_load(&installed_handler) == NULL) return 0;
  pthread_mutex_lock(&dispatcher_lock);
  int taken = atomic_load(&dispatcher_installed) && atomic_load(&installed_handler) != NULL;
  if (taken) {
    if (old != NULL) *old = *chained_action(signo);
    if (action != NULL) set_chained_action(signo, action);
  }
  pthread_mutex_unlock(&dispatcher_lock);
  return taken;
}

// Alternate stacks: 256 KiB (NORESERVE, so only touched pages cost) above one PROT_NONE guard page,
// released by a thread-exit destructor. pthread keys below 32 live in the thread descriptor, so
// pthread_setspecific does not allocate for them.
enum { ALTERNATE_STACK_SIZE = 256 * 1024 };
static pthread_key_t alternate_stack_key;
static pthread_once_t alternate_stack_key_once = PTHREAD_ONCE_INIT;
static int alternate_stack_key_valid = 0;

static void release_alternate_stack(void *base) {
  stack_t current;
  if (sigaltstack(NULL, &current) == 0 && (char *)current.ss_sp == (char *)base + cshim_page_size()) {
    stack_t disable = {.ss_sp = NULL, .ss_flags = SS_DISABLE, .ss_size = 0};
    if (sigaltstack(&disable, NULL) != 0) return;  // still in use: leave it mapped
  }
  munmap(base, ALTERNATE_STACK_SIZE + cshim_page_size());
}

static void create_alternate_stack_key(void) {
  alternate_stack_key_valid = pthread_key_create(&alternate_stack_key, release_alternate_stack) == 0;
}

int cshim_ensure_alternate_stack(void) {
  stack_t current;
  if (sigaltstack(NULL, &current) != 0) return errno;
  if (!(current.ss_flags & SS_DISABLE)) return 0;
  size_t page = cshim_page_size();
  size_t total = ALTERNATE_STACK_SIZE + page;
  void *base = mmap(NULL, total, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (base == MAP_FAILED) return errno;
  if (mprotect(base, page, PROT_NONE) != 0) {
    int error = errno;
    munmap(base, total);
    return error;
  }
  stack_t stack = {.ss_sp = (char *)base + page, .ss_flags = 0, .ss_size = ALTERNATE_STACK_SIZE};
  if (sigaltstack(&stack, NULL) != 0) {
    int error = errno;
    munmap(base, total);
    return error;
  }
  pthread_once(&alternate_stack_key_once, create_alternate_stack_key);
  if (alternate_stack_key_valid) pthread_setspecific(alternate_stack_key, base);
  return 0;
}

void cshim_die_with_signal(int signo) {
  set_default_action(signo);
  sigset_t unblock;
  sigemptyset(&unblock);
  sigaddset(&unblock, signo);
  pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
  raise(signo);
  _exit(128 + signo);  // only if the signal somehow did not kill us
}

int cshim_write_all(int fd, const void *buffer, size_t length) {
  const char *cursor = buffer;
  while (length > 0) {
    ssize_t written = write(fd, cursor, length);
    if (written < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (written == 0) return EIO;
    cursor += written;
    length -= (size_t)written;
  }
  return 0;
}

int cshim_open_append(const char *path, int *fd_out) {
  int fd;
  do fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return errno;
  *fd_out = fd;
  return 0;
}

int cshim_close(int fd) { return close(fd) == 0 ? 0 : errno; }

// ---- Recoverable probes ------------------------------------------------------------------------

static CSHIM_TLS int thread_has_alternate_stack;

int cshim_probe(uintptr_t address, int write, uint8_t value, uint8_t *value_out, int *code,
                uintptr_t *fault_address) {
  int error = ensure_dispatcher();
  if (error) return -error;
  // The fault is delivered on this thread's alternate stack, so the signal frame never lands on
  // fresh stack pages: a faulting probe then costs 0 page faults wherever it is called from (§5).
  if (!thread_has_alternate_stack) thread_has_alternate_stack = cshim_ensure_alternate_stack() == 0;
  volatile uint8_t *target = (volatile uint8_t *)address;
  volatile uint8_t loaded = 0;
  // savemask = 0 keeps the no-fault path free of a sigprocmask syscall; the fault path unblocks
  // the signal that the dispatcher left blocked when it jumped out.
  if (sigsetjmp(thread_probe.resume, 0) == 0) {
    thread_probe.active = 1;
    if (write) *target = value;
    else loaded = *target;
    thread_probe.active = 0;
    if (value_out != NULL) *value_out = loaded;
    return 0;
  }
  sigset_t unblock;
  sigemptyset(&unblock);
  sigaddset(&unblock, thread_probe.fault.signo);
  pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
  if (code != NULL) *code = thread_probe.fault.code;
  if (fault_address != NULL) *fault_address = thread_probe.fault.address;
  return 1;
}

void cshim_probe_last_fault(cshim_fault *fault) { *fault = thread_probe.fault; }

// ---- glibc forwarding --------------------------------------------------------------------------

extern void *__libc_malloc(size_t size);
extern void __libc_free(void *pointer);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

void *cshim_libc_malloc(size_t size) { return __libc_malloc(size); }
void cshim_libc_free(void *pointer) { __libc_free(pointer); }
void *cshim_libc_calloc(size_t count, size_t size) { return __libc_calloc(count, size); }
void *cshim_libc_realloc(void *pointer, size_t size) { return __libc_realloc(pointer, size); }
void *cshim_libc_memalign(size_t alignment, size_t size) {
  return __libc_memalign(alignment, size);
}

size_t cshim_libc_usable_size(void *pointer) {
  if (pointer == NULL) return 0;
  // glibc chunk header: the size word sits just before the user pointer; its low 3 bits are flags
  // (PREV_INUSE 0x1, IS_MMAPPED 0x2, NON_MAIN_ARENA 0x4). An in-use chunk can also use the next
  // chunk's prev_size word, so the overhead is one word (8); mmapped chunks have two (16).
  size_t header = ((const size_t *)pointer)[-1];
  size_t chunk = header & ~(size_t)7;
  size_t overhead = (header & 0x2) ? 2 * sizeof(size_t) : sizeof(size_t);
  return chunk > overhead ? chunk - overhead : 0;
}

CSHIM_TLS int cshim_inside_flag;

int cshim_enter(void) {
  if (cshim_inside_flag) return 1;
  cshim_inside_flag = 1;
  return 0;
}

void cshim_leave(void) { cshim_inside_flag = 0; }

int cshim_is_inside(void) { return cshim_inside_flag; }

// Allocation-family calls made from inside HeapPatrol (they go to glibc): the preload's tests assert
// that the malloc path never makes one.
static unsigned long reentrant_allocations;

void cshim_note_reentrant_allocation(void) {
  __atomic_fetch_add(&reentrant_allocations, 1, __ATOMIC_RELAXED);
}

// The lowest and highest address of the heap's reservations (a cheap first filter of ownership).
uintptr_t cshim_heap_low = UINTPTR_MAX, cshim_heap_high;

void cshim_note_heap_range(uintptr_t start, uintptr_t end) {
  uintptr_t low = __atomic_load_n(&cshim_heap_low, __ATOMIC_RELAXED);
  while (start < low &&
         !__atomic_compare_exchange_n(&cshim_heap_low, &low, start, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
  }
  uintptr_t high = __atomic_load_n(&cshim_heap_high, __ATOMIC_RELAXED);
  while (end > high &&
         !__atomic_compare_exchange_n(&cshim_heap_high, &high, end, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
  }
}

unsigned long cshim_reentrant_allocations(void) {
  return __atomic_load_n(&reentrant_allocations, __ATOMIC_RELAXED);
}

// ---- Threads, stacks, modules ------------------------------------------------------------------

int cshim_gettid(void) { return (int)syscall(SYS_gettid); }
int cshim_getpid(void) { return (int)getpid(); }

// The bounds of the stack mapping a frame-pointer chain may live in. Cached per thread (two entries:
// the thread's stack and its alternate signal stack); refreshed from /proc/self/maps on a miss, so
// the common case costs nothing and the miss is still malloc-free and async-signal-safe.
typedef struct stack_bounds {
  uintptr_t low, high;
} stack_bounds;

static CSHIM_TLS stack_bounds cached_stacks[2];
static CSHIM_TLS int next_stack_slot;

typedef struct containing_query {
  uintptr_t address;
  stack_bounds bounds;
  int found;
} containing_query;

static int find_containing(const maps_line *line, void *context) {
  containing_query *query = context;
  if (line->start > query->address) return 1;
  if (query->address < line->end) {
    query->found = line->perms[0] == 'r' && line->perms[1] == 'w';
    query->bounds.low = line->start;
    query->bounds.high = line->end;
    return 1;
  }
  return 0;
}

static int stack_bounds_for(uintptr_t address, stack_bounds *bounds) {
  for (int i = 0; i < 2; i++) {
    if (address >= cached_stacks[i].low && address < cached_stacks[i].high) {
      *bounds = cached_stacks[i];
      return 1;
    }
  }
  containing_query query = {address, {0, 0}, 0};
  if (visit_maps(find_containing, &query) != 0 || !query.found) return 0;
  cached_stacks[next_stack_slot] = query.bounds;
  next_stack_slot ^= 1;
  *bounds = query.bounds;
  return 1;
}

// Follows the chain of (saved fp, return address) records. A record is trusted only if it lies
// inside the stack mapping of the first one, is aligned, and each step moves strictly upwards —
// so a corrupt or absent frame pointer ends the walk instead of faulting.
static int walk_frames(uintptr_t fp, uintptr_t *pcs, int max, int skip, int stored) {
  stack_bounds bounds;
  if (fp == 0 || !stack_bounds_for(fp, &bounds)) return stored;
  while (stored < max) {
    if ((fp & (sizeof(uintptr_t) - 1)) != 0) break;
    if (fp < bounds.low || fp + 2 * sizeof(uintptr_t) > bounds.high) break;
    const uintptr_t *record = (const uintptr_t *)fp;
    uintptr_t next = record[0];
    uintptr_t return_address = record[1];
    if (return_address == 0) break;
    if (skip > 0) skip--;
    else pcs[stored++] = return_address;
    if (next <= fp) break;
    fp = next;
  }
  return stored;
}

// No tail call: our frame record must stay live (above the stack pointer) while it is walked.
__attribute__((noinline, disable_tail_calls)) int cshim_backtrace(uintptr_t *pcs, int max, int skip) {
  if (pcs == NULL || max <= 0) return 0;
  // Our own frame's record holds the return address into the caller: that is frame 0.
  uintptr_t fp = (uintptr_t)__builtin_frame_address(0);
  return walk_frames(fp, pcs, max, skip < 0 ? 0 : skip, 0);
}

int cshim_backtrace_from(uintptr_t pc, uintptr_t fp, uintptr_t *pcs, int max) {
  if (pcs == NULL || max <= 0) return 0;
  int stored = 0;
  if (pc != 0) pcs[stored++] = pc;
  return walk_frames(fp, pcs, max, 0, stored);
}

typedef struct module_query {
  uintptr_t pc;
  int found;
  char path[4096];
  uintptr_t base;
  int base_readable;
} module_query;

static int find_module_path(const maps_line *line, void *context) {
  module_query *query = context;
  if (line->start > query->pc) return 1;
  if (query->pc < line->end) {
    if (line->path[0] == 0) return 1;  // anonymous memory: no module
    size_t length = strlen(line->path);
    if (length >= sizeof query->path) length = sizeof query->path - 1;
    memcpy(query->path, line->path, length);
    query->path[length] = 0;
    query->found = 1;
    return 1;
  }
  return 0;
}

static int find_module_base(const maps_line *line, void *context) {
  module_query *query = context;
  if (line->start > query->pc) return 1;
  // The lowest mapping of the same file (at or below pc) is where its ELF header is mapped.
  if (strcmp(line->path, query->path) == 0 && line->start < query->base) {
    query->base = line->start;
    query->base_readable = line->perms[0] == 'r' && line->offset == 0;
  }
  return 0;
}

int cshim_module_for_pc(uintptr_t pc, char *path, size_t path_size, uintptr_t *offset) {
  module_query query;
  query.pc = pc;
  query.found = 0;
  query.path[0] = 0;
  if (visit_maps(find_module_path, &query) != 0 || !query.found) return ENOENT;
  query.base = UINTPTR_MAX;
  query.base_readable = 0;
  if (visit_maps(find_module_base, &query) != 0 || query.base == UINTPTR_MAX) return ENOENT;
  uintptr_t result = pc - query.base;
  if (query.base_readable) {
    const unsigned char *header = (const unsigned char *)query.base;
    if (header[0] == 0x7f && header[1] == 'E' && header[2] == 'L' && header[3] == 'F') {
      uint16_t type;
      memcpy(&type, header + 16, sizeof type);
      if (type == 2 /* ET_EXEC */) result = pc;
    }
  }
  if (path != NULL && path_size > 0) {
    size_t length = strlen(query.path);
    if (length >= path_size) length = path_size - 1;
    memcpy(path, query.path, length);
    path[length] = 0;
  }
  if (offset != NULL) *offset = result;
  return 0;
}

int cshim_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void)) {
  return pthread_atfork(prepare, parent, child);
}

int cshim_atexit(void (*function)(void)) { return atexit(function) == 0 ? 0 : ENOMEM; }

uint64_t cshim_monotonic_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}
