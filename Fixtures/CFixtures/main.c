// hp-fixture-c: deliberately buggy programs, one subcommand per bug, and deliberately tricky but
// correct ones (names starting with "good-") that must run clean under HeapPatrol.
//
// Every bug sits in its own non-inlined function. The comment markers "hp:alloc CASE", "hp:free CASE"
// and "hp:bug CASE" label the source lines where the case allocates, frees and does the bad thing:
// the integration tests read these markers to check the symbolized stacks name the right
// function and file:line, so keep a marker on the same line as its call.
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <wchar.h>

#define NOINLINE __attribute__((noinline))

// Accesses through a volatile pointer, so they are really performed; macros, not functions, so the
// faulting instruction belongs to the case's own function and line.
#define read_byte(pointer) (*(const volatile char *)(pointer))
#define write_byte(pointer, value) (*(volatile char *)(pointer) = (value))
// Hides where a pointer came from, so the compiler cannot warn about (or elide) a bad free.
static void *launder(void *pointer) {
  void *volatile hidden = pointer;
  return hidden;
}

// MARK: - Bad programs

NOINLINE static int overflow_write(void) {
  char *block = malloc(32);  // hp:alloc heap-buffer-overflow-write
  memset(block, 'a', 32);
  write_byte(block + 32, 'x');  // hp:bug heap-buffer-overflow-write
  free(block);
  return 0;
}

NOINLINE static int overflow_read(void) {
  char *block = malloc(64);  // hp:alloc heap-buffer-overflow-read
  memset(block, 'a', 64);
  char value = read_byte(block + 70);  // hp:bug heap-buffer-overflow-read
  free(block);
  return value == 'a' ? 0 : 1;
}

NOINLINE static int underflow_write(void) {
  char *block = malloc(32);  // hp:alloc heap-buffer-underflow
  write_byte(block - 4, 'x');  // hp:bug heap-buffer-underflow
  free(block);
  return 0;
}

NOINLINE static int use_after_free_read(void) {
  char *block = malloc(48);  // hp:alloc use-after-free-read
  memset(block, 'a', 48);
  free(block);  // hp:free use-after-free-read
  return read_byte(block + 8) == 'a' ? 0 : 1;  // hp:bug use-after-free-read
}

NOINLINE static int use_after_free_write(void) {
  char *block = malloc(48);  // hp:alloc use-after-free-write
  free(block);  // hp:free use-after-free-write
  write_byte(block + 40, 'x');  // hp:bug use-after-free-write
  return 0;
}

NOINLINE static int double_free(void) {
  char *block = malloc(24);  // hp:alloc double-free
  free(block);  // hp:free double-free
  free(launder(block));  // hp:bug double-free
  return 0;
}

NOINLINE static int invalid_free_stack(void) {
  char on_stack[32];
  memset(on_stack, 0, sizeof on_stack);
  free(launder(on_stack));  // hp:bug invalid-free-stack
  return on_stack[0];
}

static char global_buffer[64];

NOINLINE static int invalid_free_global(void) {
  free(launder(global_buffer));  // hp:bug invalid-free-global
  return 0;
}

NOINLINE static int interior_free(void) {
  char *block = malloc(64);  // hp:alloc interior-free
  free(launder(block + 16));  // hp:bug interior-free
  free(block);
  return 0;
}

NOINLINE static int canary_corruption(void) {
  // A 64-byte aligned 13-byte block ends 51 bytes before its guard page: that slack holds the
  // canary, so the stray write does not fault; free() finds the damage.
  char *block = NULL;
  if (posix_memalign((void **)&block, 64, 13) != 0) return 1;  // hp:alloc canary-corruption
  write_byte(block + 14, 'x');
  free(block);  // hp:bug canary-corruption
  return 0;
}

NOINLINE static int bad_alignment(void) {
  void *block = NULL;
  // 24 is not a power of two: POSIX requires EINVAL (and no allocation).
  int result = posix_memalign(&block, 24, 64);  // hp:bug bad-alignment
  printf("posix_memalign(24) = %d (%s), block %p\n", result, result == EINVAL ? "EINVAL" : "?", block);
  return result == EINVAL && block == NULL ? 0 : 1;
}

NOINLINE static int size_overflow(void) {
  errno = 0;
  // SIZE_MAX/2 * 4 does not fit in size_t: calloc must fail with ENOMEM, not allocate a wrapped size.
  // (volatile: the compiler would otherwise refuse the call it can see overflowing.)
  volatile size_t half = SIZE_MAX / 2;
  void *block = calloc(half, 4);  // hp:bug size-overflow
  printf("calloc(SIZE_MAX/2, 4) = %p, errno %s\n", block, errno == ENOMEM ? "ENOMEM" : "?");
  return block == NULL && errno == ENOMEM ? 0 : 1;
}

NOINLINE static int out_of_memory(void) {
  errno = 0;
  // Run with a heap limit below 64 MiB (limit=16m): the allocation must fail cleanly.
  void *block = malloc(64 << 20);  // hp:bug out-of-memory
  printf("malloc(64 MiB) = %s, errno %s\n", block ? "a block" : "NULL", errno == ENOMEM ? "ENOMEM" : "?");
  if (block != NULL) {
    free(block);
    return 3;  // no limit in effect
  }
  return errno == ENOMEM ? 0 : 1;
}

NOINLINE static void lose_pointers(void) {
  for (int i = 0; i < 3; i++) {
    char *lost = malloc(16);  // hp:alloc leak
    memset(lost, 'L', 16);
  }
}

// Overwrites the dead stack frames below the caller so no stale copy of a lost pointer survives.
NOINLINE static void scrub_stack(void) {
  volatile char scratch[8192];
  for (size_t i = 0; i < sizeof scratch; i++) scratch[i] = 0;
}

NOINLINE static int leak(void) {
  lose_pointers();
  scrub_stack();
  return 0;
}

NOINLINE static int wild_access(void) {
  char *block = malloc(32);  // hp:alloc wild-access
  // 1 GiB past the block: inside the address space the heap reserved (64 GiB by default) but in
  // its not yet carved, inaccessible part, where no block lives.
  char value = read_byte(block + ((size_t)1 << 30));  // hp:bug wild-access
  free(block);
  return value;
}

// The bug happens in a forked child, which writes its own log: the report must still reach the user.
NOINLINE static int use_after_free_in_child(void) {
  printf("parent %d\n", (int)getpid());
  fflush(stdout);
  pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) _exit(use_after_free_read());
  int status = 0;
  if (waitpid(child, &status, 0) != child) return 2;
  return WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0) ? 0 : 3;
}

// MARK: - Good programs (tricky but legal)

NOINLINE static int good_realloc(void) {
  char *buffer = NULL;
  size_t size = 0;
  for (size_t step = 1; step <= 2000; step++) {
    size_t new_size = (step * 37) % 5000 + 1;
    char *grown = realloc(buffer, new_size);
    if (!grown) return 1;
    for (size_t i = 0; i < (size < new_size ? size : new_size); i++)
      if (grown[i] != (char)(i & 0x7f)) return 2;  // realloc kept the contents
    for (size_t i = 0; i < new_size; i++) grown[i] = (char)(i & 0x7f);
    buffer = grown;
    size = new_size;
  }
  free(buffer);
  char *fresh = realloc(NULL, 100);  // realloc(NULL, n) is malloc(n)
  if (!fresh) return 3;
  free(fresh);
  int *array = reallocarray(NULL, 1000, sizeof(int));
  if (!array) return 4;
  array[999] = 1;
  free(array);
  return 0;
}

NOINLINE static int good_usable_size(void) {
  for (size_t size = 1; size <= 4096; size = size * 3 / 2 + 1) {
    char *block = malloc(size);
    size_t usable = malloc_usable_size(block);
    if (usable < size) return 1;
    memset(block, 'u', usable);  // every usable byte may be written
    free(block);
  }
  return malloc_usable_size(NULL) == 0 ? 0 : 2;
}

NOINLINE static int good_aligned(void) {
  for (size_t alignment = sizeof(void *); alignment <= 65536; alignment *= 2) {
    void *block = NULL;
    if (posix_memalign(&block, alignment, 100) != 0) return 1;
    if ((uintptr_t)block % alignment) return 2;
    memset(block, 1, 100);
    free(block);
    char *aligned = aligned_alloc(alignment, alignment * 2);
    if (!aligned || (uintptr_t)aligned % alignment) return 3;
    memset(aligned, 2, alignment * 2);
    free(aligned);
    char *old_style = memalign(alignment, 33);
    if (!old_style || (uintptr_t)old_style % alignment) return 4;
    free(old_style);
  }
  long page = sysconf(_SC_PAGESIZE);
  char *paged = valloc(10);
  if (!paged || (uintptr_t)paged % page) return 5;
  free(paged);
  char *rounded = pvalloc(10);
  if (!rounded || (uintptr_t)rounded % page) return 6;
  memset(rounded, 3, page);  // pvalloc rounds the size up to a whole page
  free(rounded);
  return 0;
}

NOINLINE static int good_many_blocks(void) {
  enum { count = 200000 };
  char **blocks = malloc(count * sizeof(char *));
  if (!blocks) return 1;
  for (size_t i = 0; i < count; i++) {
    size_t size = 1 + (i * 7) % 96;
    blocks[i] = malloc(size);
    if (!blocks[i]) return 2;
    blocks[i][0] = (char)i;
    blocks[i][size - 1] = (char)i;
  }
  for (size_t i = 0; i < count; i++) {
    if (blocks[i][0] != (char)i) return 3;
    free(blocks[i]);
  }
  free(blocks);
  printf("200000 live blocks: ok\n");
  return 0;
}

NOINLINE static int good_fork(void) {
  char *shared = strdup("before fork");
  pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) {
    // The child allocates and frees on its own copy of the heap.
    char *mine = malloc(1000);
    if (!mine || strcmp(shared, "before fork") != 0) _exit(2);
    free(mine);
    free(shared);
    exit(0);
  }
  int status = 0;
  if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 3;
  char *after = malloc(64);
  if (!after) return 4;
  free(after);
  free(shared);
  return 0;
}

static void *thread_churn(void *argument) {
  uintptr_t seed = (uintptr_t)argument;
  void *held[64] = {0};
  for (int i = 0; i < 5000; i++) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    size_t slot = (seed >> 33) % 64;
    free(held[slot]);
    held[slot] = malloc(1 + (seed >> 40) % 256);
    if (!held[slot]) return (void *)1;
    memset(held[slot], (int)slot, 1);
  }
  for (int i = 0; i < 64; i++) free(held[i]);
  return NULL;
}

NOINLINE static int good_threads(void) {
  enum { count = 8 };
  pthread_t threads[count];
  for (uintptr_t i = 0; i < count; i++)
    if (pthread_create(&threads[i], NULL, thread_churn, (void *)(i + 1)) != 0) return 1;
  int failures = 0;
  for (int i = 0; i < count; i++) {
    void *result = NULL;
    pthread_join(threads[i], &result);
    failures += result != NULL;
  }
  return failures ? 2 : 0;
}

NOINLINE static int good_malloc0(void) {
  void *a = malloc(0), *b = malloc(0);
  // glibc returns distinct, freeable pointers for malloc(0).
  if (a == NULL || b == NULL || a == b) return 1;
  free(a);
  free(b);
  void *c = calloc(0, 16);
  free(c);
  free(NULL);
  char *d = malloc(10);
  d = realloc(d, 0);  // glibc: frees and returns NULL
  free(d);
  return 0;
}

static char *format(const char *format_string, ...) {
  va_list arguments;
  va_start(arguments, format_string);
  char *result = NULL;
  if (vasprintf(&result, format_string, arguments) < 0) result = NULL;
  va_end(arguments);
  return result;
}

NOINLINE static int good_strings(void) {
  char *copy = strdup("heappatrol");
  char *prefix = strndup("heappatrol", 4);
  if (strcmp(copy, "heappatrol") || strcmp(prefix, "heap")) return 1;
  char *printed = NULL;
  if (asprintf(&printed, "%s-%d", prefix, 42) < 0 || strcmp(printed, "heap-42")) return 2;
  char *varargs = format("%s/%s", copy, prefix);
  if (!varargs || strcmp(varargs, "heappatrol/heap")) return 3;

  static char text[] = "first line\nsecond, longer line\nthird\n";
  FILE *stream = fmemopen(text, strlen(text), "r");
  if (!stream) return 4;
  char *line = NULL;
  size_t capacity = 0;
  int lines = 0;
  while (getline(&line, &capacity, stream) > 0) lines++;
  fclose(stream);
  free(line);
  if (lines != 3) return 5;

  char *memory = NULL;
  size_t memory_size = 0;
  FILE *output = open_memstream(&memory, &memory_size);
  for (int i = 0; i < 1000; i++) fprintf(output, "%d,", i);
  fclose(output);
  if (memory_size < 1000) return 6;

  char *directory = getcwd(NULL, 0);
  char *resolved = realpath(".", NULL);
  if (!directory || !resolved) return 7;

  free(copy);
  free(prefix);
  free(printed);
  free(varargs);
  free(memory);
  free(directory);
  free(resolved);
  return 0;
}

// Everything in globals at exit is still reachable: not a leak.
static char *kept_in_global;

NOINLINE static int good_reachable_at_exit(void) {
  kept_in_global = malloc(128);
  memset(kept_in_global, 'k', 128);
  return 0;
}

// MARK: - Memory operations (checked by the preload against block bounds before they run)

// Declared here: the fortified entry points -D_FORTIFY_SOURCE would call (the fixtures are built
// without it, so the cases call them directly).
extern void *__memcpy_chk(void *destination, const void *source, size_t length, size_t size);
extern char *__strcpy_chk(char *destination, const char *source, size_t size);

NOINLINE static int memcpy_overflow(void) {
  char source[32] = "0123456789abcdefghijklmnopqrstu";
  char *block = malloc(16);  // hp:alloc memcpy-overflow
  memcpy(block, source, 17);  // hp:bug memcpy-overflow
  free(block);
  return 0;
}

NOINLINE static int memcpy_read_overflow(void) {
  char destination[32];
  char *block = malloc(10);  // hp:alloc memcpy-read-overflow
  memset(block, 'r', 10);
  memcpy(destination, block, 11);  // hp:bug memcpy-read-overflow
  free(block);
  return destination[0] == 'r' ? 0 : 1;
}

NOINLINE static int strcpy_overflow(void) {
  char *block = malloc(8);  // hp:alloc strcpy-overflow
  strcpy(block, "12345678");  // hp:bug strcpy-overflow
  free(block);
  return 0;
}

NOINLINE static int memset_overflow(void) {
  char *block = malloc(24);  // hp:alloc memset-overflow
  memset(block, 0, 25);  // hp:bug memset-overflow
  free(block);
  return 0;
}

NOINLINE static int strlen_overflow(void) {
  char *block = malloc(12);  // hp:alloc strlen-overflow
  memset(block, 'x', 12);
  size_t length = strlen(block);  // hp:bug strlen-overflow
  free(block);
  return length == 12 ? 0 : 1;
}

NOINLINE static int memcpy_overlap(void) {
  char *block = malloc(64);  // hp:alloc memcpy-overlap
  memset(block, 'o', 64);
  memcpy(block + 8, block, 32);  // hp:bug memcpy-overlap
  free(block);
  return 0;
}

NOINLINE static int strcpy_after_free(void) {
  char *block = malloc(32);  // hp:alloc strcpy-after-free
  free(block);  // hp:free strcpy-after-free
  strcpy(block, "too late");  // hp:bug strcpy-after-free
  return 0;
}

NOINLINE static int memcpy_chk_overflow(void) {
  char source[32] = "0123456789abcdefghijklmnopqrstu";
  char *block = malloc(16);  // hp:alloc memcpy-chk-overflow
  __memcpy_chk(block, source, 20, 64);  // hp:bug memcpy-chk-overflow
  free(block);
  return 0;
}

// Every checked operation, in bounds, on heap blocks, the stack and globals.
NOINLINE static int good_memops(void) {
  static char global[64];
  char local[64];
  char *block = malloc(64);
  char *other = malloc(64);
  memset(block, 0, 64);
  bzero(other, 64);
  explicit_bzero(local, sizeof local);
  strcpy(block, "heap");
  strcat(block, "patrol");
  strncat(block, "-checks-everything", 7);
  if (strcmp(block, "heappatrol-checks")) return 1;
  strncpy(other, block, 64);  // pads to the block's end, exactly
  if (strlen(other) != 17 || memcmp(block, other, 64) != 0) return 2;
  memmove(block + 1, block, 63);  // overlapping: memmove's job
  if (memchr(block, 'k', 64) != block + 16 || memchr(other, '#', 64) != NULL) return 3;
  memcpy(global, other, 64);
  memcpy(local, global, 64);
  memcpy(other, local, 64);
  __memcpy_chk(block, other, 64, 64);
  __strcpy_chk(local, block, sizeof local);
  char *copy = strdup(block);
  char *prefix = strndup(block, 4);
  if (strcmp(copy, block) || strcmp(prefix, "heap")) return 4;
  wchar_t *wide = malloc(8 * sizeof(wchar_t));
  wcscpy(wide, L"wide");
  wchar_t wide_copy[8];
  wmemcpy(wide_copy, wide, 5);
  if (wcscmp(wide_copy, L"wide")) return 5;
  free(wide);
  free(copy);
  free(prefix);
  free(other);
  free(block);
  return 0;
}

// The memory-operation benchmark: small and medium copies, string functions and fills between live
// heap blocks, the way parsers and serializers use them. HEAPPATROL_BENCH_ROUNDS sets the work.
NOINLINE static int bench_memops(void) {
  const char *rounds_text = getenv("HEAPPATROL_BENCH_ROUNDS");
  long rounds = rounds_text ? atol(rounds_text) : 200000;
  enum { BLOCKS = 64 };
  char *blocks[BLOCKS];
  for (int i = 0; i < BLOCKS; i++) {
    blocks[i] = malloc(256);
    memset(blocks[i], 'a' + i % 26, 255);
    blocks[i][255] = 0;
  }
  char local[256];
  unsigned long checksum = 0;
  for (long round = 0; round < rounds; round++) {
    char *from = blocks[round % BLOCKS], *to = blocks[(round * 7 + 3) % BLOCKS];
    if (from == to) continue;
    memcpy(to, from, 16 + round % 200);
    to[255] = 0;
    checksum += strlen(to);
    memcpy(local, to, 64);
    memset(to + 200, 'z', 55);
    strcpy(local, "key=");
    strncat(local, from, 32);
    checksum += (unsigned long)memcmp(local, to, 8) + (memchr(to, 'z', 256) != NULL);
  }
  for (int i = 0; i < BLOCKS; i++) free(blocks[i]);
  printf("bench-memops: %ld rounds, checksum %lu\n", rounds, checksum);
  return 0;
}

// MARK: - Dispatch

struct fixture_case {
  const char *name;
  int (*run)(void);
  const char *summary;
};

static const struct fixture_case cases[] = {
    {"heap-buffer-overflow-write", overflow_write, "writes one byte past a 32-byte block"},
    {"heap-buffer-overflow-read", overflow_read, "reads 6 bytes past the end of a 64-byte block"},
    {"heap-buffer-underflow", underflow_write, "writes 4 bytes before a 32-byte block (placement=lower)"},
    {"use-after-free-read", use_after_free_read, "reads a freed 48-byte block"},
    {"use-after-free-write", use_after_free_write, "writes a freed 48-byte block"},
    {"double-free", double_free, "frees a 24-byte block twice"},
    {"invalid-free-stack", invalid_free_stack, "frees a stack address"},
    {"invalid-free-global", invalid_free_global, "frees a global array"},
    {"interior-free", interior_free, "frees a pointer 16 bytes inside a block"},
    {"canary-corruption", canary_corruption, "writes into the alignment slack of a 64-byte aligned 13-byte block, then frees it"},
    {"bad-alignment", bad_alignment, "posix_memalign with alignment 24 (EINVAL)"},
    {"size-overflow", size_overflow, "calloc(SIZE_MAX/2, 4) (NULL, ENOMEM)"},
    {"out-of-memory", out_of_memory, "malloc(64 MiB) under limit=16m (NULL, ENOMEM)"},
    {"leak", leak, "loses the only pointers to three 16-byte blocks"},
    {"use-after-free-in-child", use_after_free_in_child, "a forked child reads a freed block; the parent exits 0"},
    {"wild-access", wild_access, "reads 1 GiB past a block, inside the heap's reserved address space"},
    {"good-realloc", good_realloc, "realloc loops, realloc(NULL), reallocarray"},
    {"good-usable-size", good_usable_size, "writes all malloc_usable_size bytes"},
    {"good-aligned", good_aligned, "posix_memalign, aligned_alloc, memalign, valloc, pvalloc"},
    {"good-many-blocks", good_many_blocks, "200,000 live blocks"},
    {"good-fork", good_fork, "allocates across fork"},
    {"good-threads", good_threads, "8 threads churning malloc/free"},
    {"good-malloc0", good_malloc0, "malloc(0), calloc(0, n), free(NULL), realloc(p, 0)"},
    {"good-strings", good_strings, "strdup, strndup, asprintf, vasprintf, getline, open_memstream, getcwd, realpath"},
    {"good-reachable-at-exit", good_reachable_at_exit, "exits with a block still in a global"},
    {"memcpy-overflow", memcpy_overflow, "memcpy of 17 bytes into a 16-byte block"},
    {"memcpy-read-overflow", memcpy_read_overflow, "memcpy of 11 bytes out of a 10-byte block"},
    {"strcpy-overflow", strcpy_overflow, "strcpy of 8 characters (9 bytes) into an 8-byte block"},
    {"memset-overflow", memset_overflow, "memset of 25 bytes on a 24-byte block"},
    {"strlen-overflow", strlen_overflow, "strlen of a 12-byte block with no NUL"},
    {"memcpy-overlap", memcpy_overlap, "memcpy with overlapping source and destination in one block"},
    {"strcpy-after-free", strcpy_after_free, "strcpy into a freed 32-byte block"},
    {"memcpy-chk-overflow", memcpy_chk_overflow, "__memcpy_chk of 20 bytes into a 16-byte block (claimed size 64)"},
    {"good-memops", good_memops, "every checked memory operation, in bounds"},
    {"bench-memops", bench_memops, "memory-operation benchmark (HEAPPATROL_BENCH_ROUNDS, default 200000)"},
};

int main(int argc, char **argv) {
  size_t count = sizeof cases / sizeof cases[0];
  if (argc == 2) {
    for (size_t i = 0; i < count; i++)
      if (strcmp(argv[1], cases[i].name) == 0) return cases[i].run();
    if (strcmp(argv[1], "good") == 0) {
      // Every good case but the big one, in one process.
      for (size_t i = 0; i < count; i++) {
        if (strncmp(cases[i].name, "good-", 5) != 0 || strcmp(cases[i].name, "good-many-blocks") == 0) continue;
        int status = cases[i].run();
        if (status != 0) {
          fprintf(stderr, "hp-fixture-c: %s failed with %d\n", cases[i].name, status);
          return status;
        }
      }
      return 0;
    }
  }
  fprintf(stderr, "usage: %s CASE\ncases:\n  good  (every good-* case but good-many-blocks)\n", argv[0]);
  for (size_t i = 0; i < count; i++) fprintf(stderr, "  %-28s %s\n", cases[i].name, cases[i].summary);
  return 2;
}
