import Foundation
import Testing

/// The malloc path under LD_PRELOAD: it must never allocate (a reentrant call into our own malloc is
/// the symptom: Swift runtime metadata instantiation, a retain of a boxed value, anything that calls
/// malloc) and, since the heap's lock is dropped around page syscalls, it must stay right under
/// threads racing on the same size classes.
@Suite("Performance: hot path", .serialized)
struct PerfHotPathTests {
  /// 100,000 calls of the malloc family after start-up; prints the reentrant-call counter before
  /// and after (read through dlsym, so the program also runs without the library).
  static let reentrancyProgram = #"""
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <malloc.h>
    #include <stdint.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>

    static uint64_t state = 12345;
    static uint64_t next(void) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state; }

    int main(void) {
      unsigned long (*reentrant)(void) = (unsigned long (*)(void))dlsym(RTLD_DEFAULT, "heappatrol_reentrant_calls");
      if (!reentrant) { printf("no heappatrol_reentrant_calls\n"); return 2; }
      enum { LIVE = 512 };
      void *slots[LIVE] = {0};
      size_t sizes[LIVE] = {0};
      // Warm up every path once (first calls may set things up lazily), then count.
      free(realloc(calloc(3, 7), 9000));
      void *warm = NULL;
      if (posix_memalign(&warm, 64, 100) == 0) free(warm);
      unsigned long before = reentrant();
      int calls = 0;
      while (calls < 100000) {
        size_t slot = next() % LIVE;
        size_t size = 2 + next() % 3000;
        unsigned char *p = slots[slot];
        switch (next() % 5) {
          case 0: free(p); p = malloc(size); calls += 2; break;
          case 1: free(p); p = calloc(1, size); calls += 2;
            if (p[size - 1] != 0) { printf("calloc not zeroed\n"); return 1; }
            break;
          case 2:
            if (p && sizes[slot] && p[0] != (unsigned char)slot) { printf("data lost\n"); return 1; }
            p = realloc(p, size); calls += 1; break;
          case 3: { void *q = NULL; free(p); calls += 2;
            if (posix_memalign(&q, 32, size) != 0) { printf("posix_memalign failed\n"); return 1; }
            p = q; break; }
          default:
            if (p && malloc_usable_size(p) != sizes[slot]) { printf("usable size wrong\n"); return 1; }
            calls += 1; continue;
        }
        if (!p) { printf("allocation failed\n"); return 1; }
        p[0] = (unsigned char)slot;
        p[size - 1] = 7;
        slots[slot] = p;
        sizes[slot] = size;
      }
      unsigned long after = reentrant();
      for (int i = 0; i < LIVE; i++) free(slots[i]);
      printf("calls=%d reentrant_before=%lu reentrant_after=%lu\n", calls, before, after);
      return 0;
    }
    """#

  @Test("100,000 malloc-family calls make no reentrant allocation")
  func mallocPathNeverAllocates() throws {
    let binary = try PreloadTests.compile(
      Self.reentrancyProgram, name: "perf-reentrancy", arguments: ["-ldl"])
    let outcome = try PreloadTests.run(
      binary, [], options: "detect_leaks=0,quarantine_count=256", timeout: 240)
    #expect(outcome.status == 0, "\(outcome.standardOutput) \(outcome.standardError)")
    let line = outcome.standardOutput.split(separator: "\n").last.map(String.init) ?? ""
    var values: [String: Int] = [:]
    for pair in line.split(separator: " ") {
      let parts = pair.split(separator: "=")
      if parts.count == 2, let value = Int(parts[1]) { values[String(parts[0])] = value }
    }
    let before = try #require(values["reentrant_before"], "no counter line: \(line)")
    let after = try #require(values["reentrant_after"])
    #expect((values["calls"] ?? 0) >= 100_000)
    #expect(after == before, "the malloc path allocated \(after - before) times")
    #expect(PreloadTests.findings(outcome).isEmpty)
  }

  /// Four threads churning the same size classes (frees of other threads' blocks included) while the
  /// lock is released around every madvise: the data survives, nothing is reported, use-after-free
  /// is still caught at once afterwards.
  static let threadsProgram = #"""
    #include <pthread.h>
    #include <stdint.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>

    enum { SLOTS = 256, THREADS = 4, ROUNDS = 6000 };
    static unsigned char *volatile slots[SLOTS];
    static pthread_mutex_t slot_locks[SLOTS];
    static volatile int failed;

    static void *worker(void *arg) {
      uint64_t s = (uint64_t)(uintptr_t)arg * 7919 + 1;
      for (int round = 0; round < ROUNDS; round++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        int slot = (int)(s % SLOTS);
        size_t size = 16 + (s >> 20) % 600;
        pthread_mutex_lock(&slot_locks[slot]);
        unsigned char *p = slots[slot];
        if (p) {
          size_t n = (size_t)p[0] | ((size_t)p[1] << 8);
          for (size_t i = 2; i < n; i++) if (p[i] != (unsigned char)(slot + i)) failed = 1;
          if (round & 1) { p = realloc(p, size); }
          else { free(p); p = malloc(size); }
        } else {
          p = malloc(size);
        }
        if (!p) failed = 1;
        else {
          p[0] = (unsigned char)size; p[1] = (unsigned char)(size >> 8);
          for (size_t i = 2; i < size; i++) p[i] = (unsigned char)(slot + i);
        }
        slots[slot] = p;
        pthread_mutex_unlock(&slot_locks[slot]);
      }
      return NULL;
    }

    int main(void) {
      pthread_t ids[THREADS];
      for (int i = 0; i < SLOTS; i++) pthread_mutex_init(&slot_locks[i], NULL);
      for (int t = 0; t < THREADS; t++) pthread_create(&ids[t], NULL, worker, (void *)(uintptr_t)(t + 1));
      for (int t = 0; t < THREADS; t++) pthread_join(ids[t], NULL);
      for (int i = 0; i < SLOTS; i++) free(slots[i]);
      printf("failed=%d\n", failed);
      fflush(stdout);
      if (failed) return 1;
      volatile char *late = malloc(40);
      free((void *)late);
      return late[3];  // use-after-free: must fault right here
    }
    """#

  @Test("threads racing on the heap: data intact, then use-after-free caught")
  func concurrentChurn() throws {
    let binary = try PreloadTests.compile(Self.threadsProgram, name: "perf-threads")
    let outcome = try PreloadTests.run(
      binary, [], options: "detect_leaks=0,quarantine_count=512", timeout: 240)
    #expect(outcome.standardOutput.contains("failed=0"), "\(outcome.standardOutput)")
    let findings = PreloadTests.findings(outcome)
    #expect(findings.count == 1, "\(findings)")
    #expect(findings.first?["kind"] as? String == "use-after-free")
    #expect(outcome.signaled || outcome.status != 0)
  }
}
