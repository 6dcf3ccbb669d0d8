// The allocator microbenchmark: malloc/free churn over a fixed live set with a fixed-seed size mix
// (80% 8-256 B, 19% 257-4096 B, 1% 4097-65536 B); the first and last byte of every block are written.
//
//   malloc_bench LIVE OPS THREADS [SEED]
//
// Each thread owns LIVE/THREADS slots, fills them (the "reached" count is printed as it grows, so a
// tool that dies part way still tells how far it got), then does OPS/THREADS replace operations
// (free a random slot, malloc a new size into it). Prints one line of key=value results.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static uint64_t splitmix(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static size_t pick_size(uint64_t *rng) {
  uint64_t bucket = splitmix(rng) % 100;
  uint64_t r = splitmix(rng);
  if (bucket < 80) return 8 + r % (256 - 8 + 1);
  if (bucket < 99) return 257 + r % (4096 - 257 + 1);
  return 4097 + r % (65536 - 4097 + 1);
}

typedef struct {
  size_t live;
  size_t ops;
  uint64_t seed;
  int failed;
} worker_args;

static volatile size_t reached_total;
static pthread_mutex_t reached_lock = PTHREAD_MUTEX_INITIALIZER;

static void note_reached(size_t n) {
  pthread_mutex_lock(&reached_lock);
  reached_total += n;
  size_t now = reached_total;
  pthread_mutex_unlock(&reached_lock);
  // Unbuffered progress so that a tool that aborts still leaves the figure behind.
  char line[64];
  int len = snprintf(line, sizeof line, "reached=%zu\n", now);
  (void)!write(2, line, (size_t)len);
}

static void touch(unsigned char *p, size_t size) {
  p[0] = 1;
  p[size - 1] = 2;
}

static void *worker(void *opaque) {
  worker_args *args = opaque;
  uint64_t rng = args->seed;
  unsigned char **slots = calloc(args->live, sizeof *slots);
  size_t *sizes = calloc(args->live, sizeof *sizes);
  if (!slots || !sizes) { args->failed = 1; return NULL; }
  size_t since_note = 0;
  for (size_t i = 0; i < args->live; i++) {
    size_t size = pick_size(&rng);
    slots[i] = malloc(size);
    if (!slots[i]) { note_reached(since_note); args->failed = 1; return NULL; }
    sizes[i] = size;
    touch(slots[i], size);
    if (++since_note == 256) { note_reached(since_note); since_note = 0; }
  }
  note_reached(since_note);
  for (size_t op = 0; op < args->ops; op++) {
    size_t slot = splitmix(&rng) % args->live;
    free(slots[slot]);
    size_t size = pick_size(&rng);
    slots[slot] = malloc(size);
    if (!slots[slot]) { args->failed = 1; return NULL; }
    sizes[slot] = size;
    touch(slots[slot], size);
  }
  for (size_t i = 0; i < args->live; i++) free(slots[i]);
  free(slots);
  free(sizes);
  return NULL;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s LIVE OPS THREADS [SEED]\n", argv[0]);
    return 2;
  }
  size_t live = strtoull(argv[1], NULL, 10), ops = strtoull(argv[2], NULL, 10);
  int threads = atoi(argv[3]);
  uint64_t seed = argc > 4 ? strtoull(argv[4], NULL, 10) : 42;
  if (threads < 1 || threads > 64 || live < (size_t)threads) {
    fprintf(stderr, "malloc_bench: bad arguments\n");
    return 2;
  }
  pthread_t ids[64];
  worker_args args[64];
  struct rusage before, after;
  getrusage(RUSAGE_SELF, &before);
  double start = now_seconds();
  for (int t = 0; t < threads; t++) {
    args[t] = (worker_args){live / threads, ops / threads, seed + (uint64_t)t * 7919, 0};
    if (threads == 1) worker(&args[t]);
    else pthread_create(&ids[t], NULL, worker, &args[t]);
  }
  if (threads > 1)
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
  double seconds = now_seconds() - start;
  getrusage(RUSAGE_SELF, &after);
  int failed = 0;
  for (int t = 0; t < threads; t++) failed |= args[t].failed;
  // ops counts both the fill and the replace phase, each a malloc (+ free) of one block.
  double total_ops = (double)(live + ops);
  printf("status=%s seconds=%.6f ops_per_sec=%.0f live=%zu reached=%zu minflt=%ld maxrss_kb=%ld\n",
         failed ? "failed" : "ok", seconds, total_ops / seconds, live, (size_t)reached_total,
         after.ru_minflt - before.ru_minflt, after.ru_maxrss);
  return failed ? 3 : 0;
}
