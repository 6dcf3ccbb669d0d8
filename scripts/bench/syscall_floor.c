// The syscall floor of full-guard mode: what one malloc/free pair must pay in page-protection calls,
// whatever the allocator does around them. Measured per pair (ns), single-threaded and with a second
// thread alive (TLB shootdowns make protection changes costlier once another thread can hold the mm).
//   guard-markers: MADV_GUARD_REMOVE on allocation + MADV_GUARD_INSTALL on free (block's one page)
//   mprotect:      mprotect RW on allocation + mprotect NONE on free (a middle page: split and merge)
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define GUARD_INSTALL 102
#define GUARD_REMOVE 103

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static volatile int stop_spinner;
static void *spinner(void *unused) {
  (void)unused;
  while (!stop_spinner) { __asm__ volatile("pause"); }
  return NULL;
}

static double guard_pair_ns(char *region, long pages, long rounds) {
  long page = sysconf(_SC_PAGESIZE);
  double start = now();
  for (long r = 0; r < rounds; r++) {
    char *p = region + page * (1 + 2 * (r % (pages / 2 - 1)));
    if (madvise(p, page, GUARD_REMOVE) != 0) return -1;
    p[0] = 1;  // the program writes its block: the fault on fresh memory is part of the floor
    if (madvise(p, page, GUARD_INSTALL) != 0) return -1;
  }
  return (now() - start) / rounds;
}

static double mprotect_pair_ns(char *region, long pages, long rounds) {
  long page = sysconf(_SC_PAGESIZE);
  double start = now();
  for (long r = 0; r < rounds; r++) {
    char *p = region + page * (1 + 2 * (r % (pages / 2 - 1)));
    if (mprotect(p, page, PROT_READ | PROT_WRITE) != 0) return -1;
    p[0] = 1;
    if (mprotect(p, page, PROT_NONE) != 0) return -1;
    if (madvise(p, page, MADV_DONTNEED) != 0) return -1;  // quarantine costs address space, not RSS
  }
  return (now() - start) / rounds;
}

int main(int argc, char **argv) {
  long rounds = argc > 1 ? atol(argv[1]) : 200000;
  long pages = 2048, page = sysconf(_SC_PAGESIZE);
  char *rw = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  char *none = mmap(NULL, pages * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (rw == MAP_FAILED || none == MAP_FAILED) { perror("mmap"); return 1; }
  int markers = madvise(rw, page, GUARD_INSTALL) == 0;
  for (int threaded = 0; threaded <= 1; threaded++) {
    pthread_t t;
    if (threaded) pthread_create(&t, NULL, spinner, NULL);
    double g = markers ? guard_pair_ns(rw, pages, rounds) : -1;
    double m = mprotect_pair_ns(none, pages, rounds / 4);
    printf("threads=%d guard_pair_ns=%.0f mprotect_pair_ns=%.0f\n", threaded + 1, g, m);
    if (threaded) { stop_spinner = 1; pthread_join(t, NULL); }
  }
  return 0;
}
