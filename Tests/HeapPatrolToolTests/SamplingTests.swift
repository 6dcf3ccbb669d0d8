import Foundation
import Testing

/// `sample=N` under LD_PRELOAD: one allocation in N is guarded (and found by its address), the others
/// are glibc's; every call routes by address; a fixed `sample_seed` picks the same allocations.
@Suite("Performance: sampling mode", .serialized)
struct SamplingTests {
  static let program = #"""
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <malloc.h>
    #include <stdint.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>

    #define CHECK(c) do { if (!(c)) { printf("FAILED line %d: %s\n", __LINE__, #c); return 1; } } while (0)

    int main(int argc, char **argv) {
      int (*owns)(const void *) = (int (*)(const void *))dlsym(RTLD_DEFAULT, "heappatrol_owns");
      CHECK(owns != NULL);
      enum { COUNT = 4000 };
      static unsigned char *blocks[COUNT];
      unsigned long guarded = 0, pattern = 1469598103934665603UL;
      for (int i = 0; i < COUNT; i++) {
        size_t size = 24 + i % 200;
        blocks[i] = malloc(size);
        CHECK(blocks[i] != NULL);
        int mine = owns(blocks[i]);
        guarded += mine;
        pattern = (pattern ^ (unsigned long)mine) * 1099511628211UL;
        if (mine) CHECK(malloc_usable_size(blocks[i]) == size);  // exact for guarded blocks
        else CHECK(malloc_usable_size(blocks[i]) >= size);
        memset(blocks[i], i & 0xFF, size);
      }
      // realloc across the boundary, both ways: the data is kept whatever side each block ends on.
      unsigned long moved_in = 0, moved_out = 0;
      for (int i = 0; i < COUNT; i++) {
        size_t size = 24 + i % 200;
        int before = owns(blocks[i]);
        unsigned char *p = realloc(blocks[i], size * 3);
        CHECK(p != NULL);
        int after = owns(p);
        moved_in += !before && after;
        moved_out += before && !after;
        for (size_t k = 0; k < size; k++) CHECK(p[k] == (unsigned char)(i & 0xFF));
        if (after) CHECK(malloc_usable_size(p) == size * 3);
        blocks[i] = p;
      }
      for (int i = 0; i < COUNT; i++) {
        int *c = calloc(10 + i % 50, sizeof(int));
        CHECK(c != NULL);
        for (int k = 0; k < 10 + i % 50; k++) CHECK(c[k] == 0);
        void *a = NULL;
        CHECK(posix_memalign(&a, 64, 100) == 0 && ((uintptr_t)a & 63) == 0);
        free(a);
        free(c);
        free(blocks[i]);
      }
      printf("guarded=%lu of %d pattern=%lx moved_in=%lu moved_out=%lu\n", guarded, COUNT, pattern,
             moved_in, moved_out);
      fflush(stdout);
      if (argc > 1) {
        // The overflow bug, in a loop: caught on the first sampled block.
        for (int i = 0; i < 100000; i++) {
          char *p = malloc(48);
          if (owns(p)) { printf("overflowing block %d\n", i); fflush(stdout); }
          p[48] = 1;
          free(p);
        }
        printf("not caught\n");
      }
      return 0;
    }
    """#

  struct Summary: Equatable {
    var guarded: Int
    var pattern: String
    var movedIn: Int
  }

  static func summary(_ outcome: PreloadTests.Outcome) throws -> Summary {
    let line = try #require(
      outcome.standardOutput.split(separator: "\n").first { $0.hasPrefix("guarded=") },
      "no summary: \(outcome.standardOutput)")
    var values: [String: String] = [:]
    for pair in line.split(separator: " ") {
      let parts = pair.split(separator: "=")
      if parts.count == 2 { values[String(parts[0])] = String(parts[1]) }
    }
    return Summary(
      guarded: Int(values["guarded"] ?? "") ?? -1, pattern: values["pattern"] ?? "",
      movedIn: Int(values["moved_in"] ?? "") ?? -1)
  }

  static func binary() throws -> String {
    try PreloadTests.compile(program, name: "sampling", arguments: ["-ldl"])
  }

  @Test(
    "1 in N guarded; usable size, realloc across the boundary, calloc, memalign, free all route")
  func sampledAndUnsampledBlocksWork() throws {
    let binary = try Self.binary()
    let outcome = try PreloadTests.run(binary, [], options: "sample=4,sample_seed=7,detect_leaks=0")
    #expect(outcome.status == 0, "\(outcome.standardOutput)\(outcome.standardError)")
    #expect(PreloadTests.findings(outcome).isEmpty)
    let summary = try Self.summary(outcome)
    // 4,000 draws with mean interval 4: 1,000 expected; 800...1,200 is more than 8 sigma wide.
    #expect((800...1200).contains(summary.guarded), "\(summary)")
    // Unsampled blocks that a sampled realloc moved into the heap.
    #expect(summary.movedIn > 0)

    let everything = try PreloadTests.run(binary, [], options: "detect_leaks=0")
    #expect(try Self.summary(everything).guarded == 4000)
  }

  @Test("a fixed sample_seed picks the same allocations; another seed others")
  func seededSamplingIsDeterministic() throws {
    let binary = try Self.binary()
    let first = try Self.summary(
      PreloadTests.run(binary, [], options: "sample=4,sample_seed=7,detect_leaks=0"))
    let again = try Self.summary(
      PreloadTests.run(binary, [], options: "sample=4,sample_seed=7,detect_leaks=0"))
    let other = try Self.summary(
      PreloadTests.run(binary, [], options: "sample=4,sample_seed=8,detect_leaks=0"))
    #expect(first == again)
    #expect(first.pattern != other.pattern)
  }

  @Test("an overflow in a loop is caught on the first sampled block, with its allocation stack")
  func sampledOverflowIsCaught() throws {
    let binary = try Self.binary()
    let outcome = try PreloadTests.run(
      binary, ["overflow"], options: "sample=50,sample_seed=3,detect_leaks=0")
    #expect(outcome.signaled || outcome.status != 0)
    #expect(outcome.standardOutput.contains("overflowing block"))
    #expect(!outcome.standardOutput.contains("not caught"))
    let findings = PreloadTests.findings(outcome)
    #expect(findings.count == 1, "\(findings)")
    #expect(findings.first?["kind"] as? String == "heap-buffer-overflow")
    let stack = findings.first?["allocationStack"] as? [Any]
    #expect(stack?.isEmpty == false, "\(findings.first ?? [:])")
  }
}
