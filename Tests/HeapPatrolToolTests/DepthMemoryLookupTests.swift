import Foundation
import HeapPatrolTool
import Testing

/// The checked memory operations' hot path is C reading the heap's tables directly
/// (HeapPatrolPreloadExports/memops.c, laid out as HeapTableLayout describes them). These tests run a
/// real heap under the preload and compare that C lookup with `HeapView.liveBounds` on every address
/// where the answer can change (block start, end - 1, end, slack, guard pages, freed and recycled
/// blocks, reservation edges, dedicated reservations) and on addresses that are not the heap's.
@Suite struct DepthMemoryLookupTests {
  /// Allocates blocks of many shapes (small, page-sized, aligned, large enough for a dedicated
  /// reservation, enough in total for a second reservation), frees and reallocates some, then asks
  /// the preload to compare both lookups everywhere and checks the C lookup's answers directly.
  static let program = #"""
    #include <dlfcn.h>
    #include <malloc.h>
    #include <stdint.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>

    typedef int (*lookup_fn)(const void *, size_t *, size_t *);
    typedef long (*verify_fn)(const uintptr_t *, long, long *);
    static int failures;
    static char global_bytes[64];

    static void expect_lookup(lookup_fn lookup, const void *address, int kind, const void *start,
                              size_t size, const char *what) {
      size_t found_start = 0, found_end = 0;
      int found = lookup(address, &found_start, &found_end);
      int bounds_ok = kind != 1 || (found_start == (size_t)start && found_end == (size_t)start + size);
      if (found != kind || !bounds_ok) {
        printf("FAIL %s: lookup(%p) = %d [%#zx, %#zx), expected %d\n", what, address, found,
               found_start, found_end, kind);
        failures++;
      }
    }

    int main(void) {
      lookup_fn lookup = (lookup_fn)dlsym(RTLD_DEFAULT, "heappatrol_memops_lookup");
      verify_fn verify = (verify_fn)dlsym(RTLD_DEFAULT, "heappatrol_memops_verify_lookup");
      if (lookup == NULL || verify == NULL) { printf("FAIL: preload symbols missing\n"); return 2; }
      static const size_t sizes[] = {1, 13, 16, 100, 4095, 4096, 4097, 3 * 4096 + 5, 70000};
      enum { SIZES = sizeof(sizes) / sizeof(sizes[0]), ROUNDS = 4 };
      char *blocks[ROUNDS][SIZES];
      for (int round = 0; round < ROUNDS; round++)
        for (int index = 0; index < SIZES; index++) blocks[round][index] = malloc(sizes[index]);
      char *aligned = memalign(256, 200);
      char *zeroed = calloc(7, 9);
      // 1.5 MiB blocks: dedicated reservations with reservation=16m (a block of at least 1/16 of
      // it); 12 of 600 KiB overflow the first 16 MiB reservation into a second one.
      char *dedicated = malloc(1536 << 10);
      char *fillers[12];
      for (int index = 0; index < 12; index++) fillers[index] = malloc(600 << 10);
      char *moved = realloc(malloc(24), 5000);
      // Freed blocks (in quarantine): their bytes and the pages around them.
      char *freed = blocks[1][1];
      for (int index = 0; index < SIZES; index++) free(blocks[1][index]);
      free(fillers[3]);
      char local[32];
      uintptr_t extra[] = {0, 1, 4096, (uintptr_t)local, (uintptr_t)(local + 31),
                           (uintptr_t)global_bytes, (uintptr_t)&printf, UINTPTR_MAX,
                           UINTPTR_MAX - 4096};
      long checked = 0;
      long disagreements = verify(extra, sizeof(extra) / sizeof(extra[0]), &checked);
      printf("checked=%ld disagreements=%ld\n", checked, disagreements);
      // The same after the lookups ran (nothing in them is stateful, this proves it).
      long again = verify(extra, sizeof(extra) / sizeof(extra[0]), &checked);
      if (disagreements != 0 || again != 0) failures++;
      if (checked < 10 * ROUNDS * SIZES) { printf("FAIL: only %ld addresses\n", checked); failures++; }

      char *b13 = blocks[0][1];
      expect_lookup(lookup, b13, 1, b13, 13, "start");
      expect_lookup(lookup, b13 + 12, 1, b13, 13, "end - 1");
      expect_lookup(lookup, b13 + 13, 2, NULL, 0, "end (slack or guard)");
      expect_lookup(lookup, b13 - 1, 2, NULL, 0, "before the start");
      expect_lookup(lookup, blocks[0][5] + 4095, 1, blocks[0][5], 4096, "page block's last byte");
      expect_lookup(lookup, blocks[0][8] + 69999, 1, blocks[0][8], 70000, "multi-page block's end - 1");
      expect_lookup(lookup, aligned + 199, 1, aligned, 200, "aligned block");
      expect_lookup(lookup, zeroed + 62, 1, zeroed, 63, "calloc block");
      expect_lookup(lookup, dedicated, 1, dedicated, 1536 << 10, "dedicated reservation's block");
      expect_lookup(lookup, dedicated + (1536 << 10), 2, NULL, 0, "after a dedicated block");
      expect_lookup(lookup, fillers[11] + 1000, 1, fillers[11], 600 << 10, "second reservation");
      expect_lookup(lookup, moved + 4999, 1, moved, 5000, "reallocated block");
      expect_lookup(lookup, freed, 2, NULL, 0, "freed block");
      expect_lookup(lookup, fillers[3] + 5, 2, NULL, 0, "freed large block");
      expect_lookup(lookup, local, 0, NULL, 0, "stack");
      expect_lookup(lookup, global_bytes, 0, NULL, 0, "global");
      expect_lookup(lookup, NULL, 0, NULL, 0, "null");
      for (int round = 0; round < ROUNDS; round++)
        for (int index = 0; index < SIZES; index++)
          if (round != 1) free(blocks[round][index]);
      for (int index = 0; index < 12; index++)
        if (index != 3) free(fillers[index]);
      free(aligned);
      free(zeroed);
      free(dedicated);
      free(moved);
      return failures == 0 ? 0 : 1;
    }
    """#

  static let configurations = [
    "reservation=16m",
    "reservation=16m,guard=canary",
    "reservation=16m,guard=mprotect,placement=lower",
    "reservation=16m,align=1",
  ]

  @Test(arguments: configurations)
  func cLookupAgreesWithHeapView(_ options: String) throws {
    let directory = try TestSupport.makeTemporaryDirectory("lookup")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let binary = (directory as NSString).appendingPathComponent("lookup")
    try TestSupport.compileC(Self.program, to: binary, arguments: ["-O0", "-ldl"])
    let run = try Self.run(binary, options: options)
    #expect(run.status == 0, "\(options):\n\(run.output)")
    #expect(run.output.contains("disagreements=0"), "\(options):\n\(run.output)")
  }

  /// With check_memops=0 the C lookup is not in use and says so (-1), rather than answering.
  @Test func lookupIsOffWithoutTheChecks() throws {
    let directory = try TestSupport.makeTemporaryDirectory("lookup-off")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let binary = (directory as NSString).appendingPathComponent("lookup")
    try TestSupport.compileC(Self.program, to: binary, arguments: ["-O0", "-ldl"])
    let run = try Self.run(binary, options: "check_memops=0")
    #expect(run.output.contains("checked=0 disagreements=-1"), "\(run.output)")
    #expect(run.status == 1)
  }

  static func run(_ binary: String, options: String) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binary)
    var environment = ProcessInfo.processInfo.environment
    environment["LD_PRELOAD"] = try TestSupport.product(InstallLayout.preloadLibraryName)
    environment["HEAPPATROL_OPTIONS"] = options
    process.environment = environment
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
  }
}
