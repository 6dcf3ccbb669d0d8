import Foundation
import Testing

/// libHeapPatrolPreload.so under LD_PRELOAD in child processes: small C (and C++) programs compiled
/// at test time, and python3. The test bundle itself never loads the library.
@Suite("Preload library", .serialized)
struct PreloadTests {
  /// The library next to the test bundle (`swift build` puts every product there).
  static func library() throws -> String {
    let executable =
      (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    let path = ((executable as NSString).deletingLastPathComponent as NSString)
      .appendingPathComponent("libHeapPatrolPreload.so")
    try #require(
      FileManager.default.fileExists(atPath: path),
      "\(path) is missing: build it with `swift build --product HeapPatrolPreload`")
    return path
  }

  static func find(_ tool: String) -> String? {
    for directory in ["/opt/swift/usr/bin", "/usr/bin", "/usr/local/bin", "/bin"] {
      let path = directory + "/" + tool
      if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
  }

  struct Outcome {
    var status: Int32
    var signaled: Bool
    var standardOutput: String
    var standardError: String
    var log: [[String: Any]]
  }

  /// Removes the build directories of earlier test runs whose process is gone (once per run).
  static let staleDirectoriesRemoved: Bool = {
    let temporary = FileManager.default.temporaryDirectory
    let names = (try? FileManager.default.contentsOfDirectory(atPath: temporary.path)) ?? []
    for name in names where name.hasPrefix("hp-preload-") {
      if let pid = Int32(name.dropFirst("hp-preload-".count)), pid != getpid(),
        kill(pid, 0) != 0 && errno == ESRCH
      {
        try? FileManager.default.removeItem(at: temporary.appendingPathComponent(name))
      }
    }
    return true
  }()

  /// Compiles `source` once per test run (cached by name).
  static func compile(
    _ source: String, name: String, cplusplus: Bool = false, arguments: [String] = []
  ) throws -> String {
    _ = staleDirectoriesRemoved
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
      "hp-preload-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let binary = directory.appendingPathComponent(name).path
    if FileManager.default.fileExists(atPath: binary) { return binary }
    let sourcePath = binary + (cplusplus ? ".cpp" : ".c")
    try source.write(toFile: sourcePath, atomically: true, encoding: .utf8)
    let compiler = try #require(
      cplusplus ? (find("clang++") ?? find("c++")) : (find("clang") ?? find("cc")),
      "no C/C++ compiler")
    let result = try run(
      compiler,
      [
        "-g", "-O0", "-fno-omit-frame-pointer", "-fno-builtin", sourcePath, "-o", binary,
        "-lpthread",
      ] + arguments,
      preload: false)
    try #require(result.status == 0 && !result.signaled, "compile failed: \(result.standardError)")
    return binary
  }

  /// Runs a program (with the library preloaded unless `preload` is false), with a timeout.
  static func run(
    _ program: String, _ arguments: [String], preload: Bool = true, options: String = "",
    logTemplate: String? = nil, timeout: TimeInterval = 60
  ) throws -> Outcome {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: program)
    process.arguments = arguments
    var environment = ProcessInfo.processInfo.environment
    environment.removeValue(forKey: "LD_PRELOAD")
    environment.removeValue(forKey: "HEAPPATROL_OPTIONS")
    let log = FileManager.default.temporaryDirectory.appendingPathComponent("hp-log-\(UUID()).json")
    defer { try? FileManager.default.removeItem(at: log) }
    if preload {
      environment["LD_PRELOAD"] = try library()
      environment["HEAPPATROL_OPTIONS"] =
        (options.isEmpty ? "" : options + ",") + "log=\(logTemplate ?? log.path)"
    }
    process.environment = environment
    let output = Pipe()
    let error = Pipe()
    process.standardOutput = output
    process.standardError = error
    try process.run()
    // Read both pipes while the child runs (a full pipe would block it).
    nonisolated(unsafe) var outData = Data()
    nonisolated(unsafe) var errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
      outData = output.fileHandleForReading.readDataToEndOfFile()
      group.leave()
    }
    group.enter()
    DispatchQueue.global().async {
      errData = error.fileHandleForReading.readDataToEndOfFile()
      group.leave()
    }
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    if process.isRunning {
      kill(process.processIdentifier, SIGKILL)
      Issue.record("\(program) \(arguments) did not finish within \(timeout) s (killed)")
    }
    process.waitUntilExit()
    group.wait()
    var records: [[String: Any]] = []
    if let text = try? String(contentsOf: log, encoding: .utf8) {
      for line in text.split(separator: "\n") {
        if let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] {
          records.append(object)
        } else {
          Issue.record("log line is not JSON: \(line)")
        }
      }
    }
    return Outcome(
      status: process.terminationStatus, signaled: process.terminationReason == .uncaughtSignal,
      standardOutput: String(decoding: outData, as: UTF8.self),
      standardError: String(decoding: errData, as: UTF8.self), log: records)
  }

  static func findings(_ outcome: Outcome) -> [[String: Any]] {
    outcome.log.filter { $0["kind"] != nil }
  }

  static let program = #"""
    #define _GNU_SOURCE
    #include <errno.h>
    #include <malloc.h>
    #include <pthread.h>
    #include <stdint.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/mman.h>
    #include <sys/wait.h>
    #include <unistd.h>

    #define CHECK(condition) do { if (!(condition)) { printf("FAILED line %d: %s\n", __LINE__, #condition); return 1; } } while (0)

    static int family(void) {
      char *zero = malloc(0), *zero2 = malloc(0);
      CHECK(zero != NULL && zero2 != NULL && zero != zero2);
      free(zero); free(zero2);
      for (size_t size = 1; size < 200; size += 7) {
        unsigned char *p = malloc(size);
        CHECK(p != NULL);
        CHECK(malloc_usable_size(p) == size);
        memset(p, 0xAB, size);
        p = realloc(p, size * 3);
        CHECK(p != NULL && malloc_usable_size(p) == size * 3);
        for (size_t i = 0; i < size; i++) CHECK(p[i] == 0xAB);
        free(p);
      }
      int *c = calloc(1000, sizeof(int));
      CHECK(c != NULL);
      for (int i = 0; i < 1000; i++) CHECK(c[i] == 0);
      free(c);
      errno = 0;
      CHECK(calloc(SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
      char *keep = malloc(8);
      errno = 0;
      CHECK(reallocarray(keep, SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
      keep = reallocarray(keep, 10, 10);
      CHECK(keep != NULL && malloc_usable_size(keep) == 100);
      free(keep);
      void *aligned = (void *)1;
      CHECK(posix_memalign(&aligned, 3, 10) == EINVAL && aligned == (void *)1);
      CHECK(posix_memalign(&aligned, 4, 10) == EINVAL);
      CHECK(posix_memalign(&aligned, 24, 10) == EINVAL);
      CHECK(posix_memalign(&aligned, 64, 10) == 0 && ((uintptr_t)aligned & 63) == 0);
      free(aligned);
      CHECK(posix_memalign(&aligned, 8192, 1) == 0 && ((uintptr_t)aligned & 8191) == 0);
      free(aligned);
      void *a = aligned_alloc(256, 100);
      CHECK(a != NULL && ((uintptr_t)a & 255) == 0);
      free(a);
      errno = 0;
      CHECK(aligned_alloc(3, 100) == NULL && errno == EINVAL);
      void *m = memalign(4096, 10);
      CHECK(m != NULL && ((uintptr_t)m & 4095) == 0);
      free(m);
      void *v = valloc(10);
      CHECK(v != NULL && ((uintptr_t)v & 4095) == 0);
      free(v);
      void *pv = pvalloc(10);
      CHECK(pv != NULL && ((uintptr_t)pv & 4095) == 0 && malloc_usable_size(pv) == 4096);
      free(pv);
      char *s = strdup("heap patrol");
      CHECK(s != NULL && strcmp(s, "heap patrol") == 0);
      free(s);
      CHECK(realloc(malloc(10), 0) == NULL);
      free(NULL);
      // 3.25 GB (GNU sort's buffer): works, or NULL with ENOMEM; never a hang.
      errno = 0;
      size_t huge = 3490000000UL;
      char *big = malloc(huge);
      if (big != NULL) {
        big[0] = 1;
        big[huge - 1] = 2;
        CHECK(malloc_usable_size(big) == huge);
        free(big);
        printf("huge: allocated\n");
      } else {
        CHECK(errno == ENOMEM);
        printf("huge: ENOMEM\n");
      }
      printf("OK\n");
      return 0;
    }

    static void *worker(void *argument) {
      void **slots = argument;
      for (int round = 0; round < 2000; round++) {
        int index = round % 16;
        free(slots[index]);
        slots[index] = malloc(16 + round % 200);
        memset(slots[index], round, 16);
      }
      return NULL;
    }

    static int threads(void) {
      pthread_t ids[4];
      void *slots[4][16];
      memset(slots, 0, sizeof slots);
      for (int i = 0; i < 4; i++) pthread_create(&ids[i], NULL, worker, slots[i]);
      for (int i = 0; i < 4; i++) pthread_join(ids[i], NULL);
      // Blocks allocated by one thread, freed by another (here: the main thread).
      for (int i = 0; i < 4; i++) for (int j = 0; j < 16; j++) free(slots[i][j]);
      printf("OK\n");
      return 0;
    }

    static int forking(void) {
      char *before = malloc(100);
      strcpy(before, "parent data");
      pid_t child = fork();
      if (child == 0) {
        char *mine = malloc(50);
        strcpy(mine, before);
        int same = strcmp("parent data", mine) == 0;
        free(mine);
        free(before);
        _exit(same ? 7 : 8);
      }
      int status = 0;
      waitpid(child, &status, 0);
      free(before);
      printf("child %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
      return 0;
    }

    int global_array[16];
    void *kept_in_global;

    static __attribute__((noinline)) void leak_some(void) {
      for (int i = 0; i < 3; i++) {
        volatile char *lost = malloc(40);
        lost[0] = 1;
      }
    }

    // A conservative scan sees stale copies of pointers in dead stack frames and registers: wipe
    // them, as a program that went on doing work would have.
    static __attribute__((noinline)) void clear_stack(void) {
      volatile char area[16384];
      memset((char *)area, 0, sizeof area);
    }

    static __attribute__((noinline)) int recurse(volatile char *previous) {
      volatile char frame[4096];
      frame[0] = previous ? previous[0] + 1 : 0;
      return recurse(frame) + frame[100];
    }

    int main(int argc, char **argv) {
      const char *mode = argc > 1 ? argv[1] : "family";
      if (strcmp(mode, "family") == 0) return family();
      if (strcmp(mode, "threads") == 0) return threads();
      if (strcmp(mode, "fork") == 0) return forking();
      if (strcmp(mode, "overflow") == 0) {
        char *p = malloc(13);
        p[13] = 'x';
        return 3;
      }
      if (strcmp(mode, "stack-free") == 0) {
        char local[32];
        free(local + 16);
        free(&global_array[4]);
        printf("continued\n");
        return 0;
      }
      if (strcmp(mode, "double-free") == 0) {
        char *p = malloc(24);
        free(p);
        free(p);
        printf("continued\n");
        return 0;
      }
      if (strcmp(mode, "stack-overflow") == 0) {
        free(malloc(1));
        return recurse(NULL);
      }
      if (strcmp(mode, "truncated-mapping") == 0) {
        // A private writable file mapping longer than its file: reading past EOF raises SIGBUS.
        char path[] = "/tmp/hp-truncatedXXXXXX";
        int fd = mkstemp(path);
        if (fd < 0 || write(fd, "hello", 5) != 5) return 4;
        char *map = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        unlink(path);
        if (map == MAP_FAILED) return 5;
        map[0] = 'H';
        leak_some();
        printf("%c\n", map[0]);
        return 0;
      }
      if (strcmp(mode, "leak") == 0) {
        kept_in_global = malloc(77);
        leak_some();
        clear_stack();
        __asm__ volatile("xor %%eax, %%eax; xor %%ecx, %%ecx; xor %%edx, %%edx; xor %%esi, %%esi; xor %%edi, %%edi; xor %%r8d, %%r8d; xor %%r9d, %%r9d; xor %%r10d, %%r10d; xor %%r11d, %%r11d; xor %%ebx, %%ebx; xor %%r12d, %%r12d"
                         ::: "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "rbx", "r12", "memory");
        return 0;
      }
      return 2;
    }
    """#

  @Test("the malloc family: sizes, alignment rules, errno, exact malloc_usable_size, 3.25 GB")
  func mallocFamily() throws {
    let binary = try PreloadTests.compile(PreloadTests.program, name: "preload-program")
    let outcome = try PreloadTests.run(binary, ["family"])
    #expect(
      outcome.status == 0 && !outcome.signaled, "\(outcome.standardOutput)\(outcome.standardError)")
    #expect(outcome.standardOutput.hasSuffix("OK\n"))
    // The refused alignments fail as glibc's would (EINVAL) and are each reported at the call
    // (mpatrol BADALN): posix_memalign 3, 4 and 24, aligned_alloc 3.
    let findings = PreloadTests.findings(outcome)
    #expect(
      findings.map { "\($0["kind"] ?? "") \($0["alignment"] ?? "") \($0["bytes"] ?? "")" } == [
        "bad-alignment 3 10", "bad-alignment 4 10", "bad-alignment 24 10", "bad-alignment 3 100",
      ], "\(outcome.standardError)")
    #expect(outcome.log.last?["event"] as? String == "exit")
  }

  @Test("an overflow: report on stderr, JSON in the log, death by SIGSEGV; the stack names main")
  func overflow() throws {
    let binary = try PreloadTests.compile(PreloadTests.program, name: "preload-program")
    let outcome = try PreloadTests.run(binary, ["overflow"], options: "align=1")
    #expect(outcome.signaled && outcome.status == SIGSEGV)
    #expect(
      outcome.standardError.contains(
        "==ERROR: HeapPatrol: heap-buffer-overflow [ILLMEM] WRITE at 0x"))
    #expect(outcome.standardError.contains("is 0 bytes past the end of block #"))
    #expect(outcome.standardError.contains("(13 bytes, malloc)"))
    let findings = PreloadTests.findings(outcome)
    try #require(findings.count == 1)
    let finding = findings[0]
    #expect(finding["kind"] as? String == "heap-buffer-overflow")
    #expect(finding["access"] as? String == "WRITE")
    #expect(finding["offset"] as? Int == 13)
    let block = try #require(finding["block"] as? [String: Any])
    #expect(block["size"] as? Int == 13 && block["api"] as? String == "malloc")
    // Frame 0 of both stacks is in the program itself (main), not in the library.
    let access = try #require(finding["accessStack"] as? [[String: Any]])
    let allocation = try #require(finding["allocationStack"] as? [[String: Any]])
    #expect(access.first?["module"] as? String == binary)
    #expect(allocation.first?["module"] as? String == binary)
  }

  @Test("free of a stack or global address is an invalid-free finding, and the program goes on")
  func invalidFree() throws {
    let binary = try PreloadTests.compile(PreloadTests.program, name: "preload-program")
    let outcome = try PreloadTests.run(binary, ["stack-free"], options: "detect_leaks=0")
    #expect(outcome.status == 0 && !outcome.signaled, "\(outcome.standardError)")
    #expect(outcome.standardOutput == "continued\n")
    let kinds = PreloadTests.findings(outcome).map { $0["kind"] as? String }
    #expect(kinds == ["invalid-free", "invalid-free"])
    #expect(outcome.standardError.contains("was not allocated by HeapPatrol"))
  }

  @Test("double free: reported, program continues (default); halt_on_error=1 aborts")
  func doubleFree() throws {
    let binary = try PreloadTests.compile(PreloadTests.program, name: "preload-program")
    let outcome = try PreloadTests.run(binary, ["double-free"])
    #expect(outcome.status == 0 && outcome.standardOutput == "continued\n")
    #expect(PreloadTests.findings(outcome).map { $0["kind"] as? String } == ["double-free"])
    let halted = try PreloadTests.run(binary, ["double-free"], options: "halt_on_error=1")
    #expect(halted.signaled && halted.status == SIGABRT)
    #expect(halted.standardOutput.isEmpty)
  }

  @Test("threads: 4 threads churning and freeing each other's blocks, no findings")
  func threads() throws {
    let binary = try PreloadTests.compile(PreloadTests.program, name: "preload-program")
    let outcome = try PreloadTests.run(binary, ["threads"], options: "detect_leaks=0")
    #expect(outcome.status == 0 && outcome.standardOutput == "OK\n", "\(outcome.standardError)")
    #expect(PreloadTests.findings(outcome).isEmpty)
  }

  @Test("fork: the child allocates and frees (atfork), parent and child finish normally")
  func fork() throws {
    let binary = try PreloadTests.compile(PreloadTests.program, name: "preload-program")
    let outcome = try PreloadTests.run(binary, ["fork"], timeout: 30)
    #expect(
      outcome.status == 0 && outcome.standardOutput == "child 7\n", "\(outcome.standardError)")
    #expect(PreloadTests.findings(outcome).isEmpty)
  }

  @Test("log=...%p: after fork the child writes to a log file of its own")
  func perProcessLog() throws {
    let binary = try PreloadTests.compile(PreloadTests.program, name: "preload-program")
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
      "hp-logs-\(UUID())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let outcome = try PreloadTests.run(
      binary, ["fork"], logTemplate: directory.path + "/log.%p.json", timeout: 30)
    #expect(outcome.status == 0 && outcome.standardOutput == "child 7\n")
    let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
    #expect(files.count == 2, "\(files)")
    #expect(
      files.allSatisfy {
        $0.hasPrefix("log.") && $0.hasSuffix(".json") && Int($0.dropFirst(4).dropLast(5)) != nil
      })
  }

  @Test("leaks: unreachable blocks are reported grouped by stack; a block in a global is not")
  func leaks() throws {
    let binary = try PreloadTests.compile(PreloadTests.program, name: "preload-program")
    let outcome = try PreloadTests.run(binary, ["leak"])
    #expect(outcome.status == 0)
    let leaks = PreloadTests.findings(outcome)
    try #require(leaks.count == 1, "\(outcome.standardError)")
    #expect(leaks[0]["kind"] as? String == "leak")
    #expect(leaks[0]["count"] as? Int == 3 && leaks[0]["bytes"] as? Int == 120)
    #expect(outcome.standardError.contains("leak of 120 bytes in 3 blocks allocated"))
    #expect(!outcome.standardError.contains("77 bytes"))
    let exit = outcome.log.last
    #expect(exit?["event"] as? String == "exit" && exit?["findings"] as? Int == 1)
  }

  @Test(
    "a stack overflow is not ours: the fault goes on to the default action (SIGSEGV), no report")
  func stackOverflow() throws {
    let binary = try PreloadTests.compile(PreloadTests.program, name: "preload-program")
    let outcome = try PreloadTests.run(binary, ["stack-overflow"], timeout: 60)
    #expect(outcome.signaled && outcome.status == SIGSEGV)
    #expect(!outcome.standardError.contains("ERROR: HeapPatrol"))
    #expect(PreloadTests.findings(outcome).isEmpty)
  }

  @Test("a Swift executable with HeapPatrolPreload linked in is guarded without LD_PRELOAD")
  func linkedIntoSwiftExecutable() throws {
    let executable =
      (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    let program = ((executable as NSString).deletingLastPathComponent as NSString)
      .appendingPathComponent("hp-preload-linked")
    try #require(
      FileManager.default.fileExists(atPath: program),
      "\(program) is missing: build it with `swift build --product hp-preload-linked`")
    let clean = try PreloadTests.run(program, ["ok"], preload: false)
    #expect(clean.status == 0 && clean.standardOutput == "sum 49995000 words 1000\n")
    #expect(!clean.standardError.contains("HeapPatrol"), "\(clean.standardError)")
    let caught = try PreloadTests.run(program, ["overflow"], preload: false)
    #expect(caught.signaled && caught.status == SIGSEGV)
    #expect(
      caught.standardError.contains("ERROR: HeapPatrol: heap-buffer-overflow [ILLMEM] WRITE at 0x"))
    #expect(caught.standardError.contains("is 3 bytes past the end of block #"))
    #expect(caught.standardError.contains("(13 bytes, "))
  }

  @Test("the leak scan survives a mapping that raises SIGBUS when read (file shorter than the map)")
  func truncatedMapping() throws {
    let binary = try PreloadTests.compile(PreloadTests.program, name: "preload-program")
    let outcome = try PreloadTests.run(binary, ["truncated-mapping"])
    #expect(outcome.status == 0 && !outcome.signaled, "\(outcome.standardError)")
    #expect(outcome.standardOutput == "H\n")
    #expect(PreloadTests.findings(outcome).allSatisfy { $0["kind"] as? String == "leak" })
    #expect(outcome.log.last?["event"] as? String == "exit")
  }

  @Test("bad options stop the program before main with status 1")
  func badOptions() throws {
    let binary = try PreloadTests.compile(PreloadTests.program, name: "preload-program")
    let outcome = try PreloadTests.run(binary, ["family"], options: "foo=1")
    #expect(outcome.status == 1 && !outcome.signaled && outcome.standardOutput.isEmpty)
    #expect(
      outcome.standardError == "heappatrol: unknown option 'foo' (see `heappatrol options`)\n")
  }

  @Test("C++: new[] released with delete is an alloc-dealloc mismatch; matched pairs are clean")
  func cplusplus() throws {
    guard PreloadTests.find("clang++") ?? PreloadTests.find("c++") != nil else {
      print("skipped: no C++ compiler")
      return
    }
    let source = #"""
      #include <cstdio>
      #include <cstring>
      #include <new>
      struct alignas(64) Wide { char bytes[64]; };
      int main(int argc, char **argv) {
        int *one = new int(5); delete one;
        int *many = new int[10]; delete[] many;
        Wide *wide = new Wide; if (((unsigned long)wide & 63) != 0) return 4; delete wide;
        char *nothrow = new (std::nothrow) char[3]; delete[] nothrow;
        if (argc > 1) { char *wrong = new char[16]; delete wrong; }
        std::printf("done\n");
        return 0;
      }
      """#
    let binary = try PreloadTests.compile(source, name: "preload-cxx", cplusplus: true)
    let clean = try PreloadTests.run(binary, [])
    #expect(clean.status == 0 && clean.standardOutput == "done\n", "\(clean.standardError)")
    #expect(PreloadTests.findings(clean).isEmpty, "\(clean.standardError)")
    let mismatch = try PreloadTests.run(binary, ["mismatch"])
    #expect(mismatch.status == 0)
    let kinds = PreloadTests.findings(mismatch).map { $0["kind"] as? String }
    #expect(kinds == ["alloc-dealloc-mismatch"], "\(mismatch.standardError)")
    // The report names both sides: what allocated the block and what released it.
    #expect(
      mismatch.standardError.contains(
        "allocated with operator new[], released with operator delete\n"),
      "\(mismatch.standardError)")
  }

  /// A program that installs its own SIGSEGV handler after start-up keeps it for its own faults,
  /// reads it back, and still gets its heap bugs reported: HeapPatrol's handler stays first.
  static let ownHandlerProgram = #"""
    #define _GNU_SOURCE
    #include <signal.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/mman.h>
    #include <unistd.h>

    static void *own_page;
    static void on_segv_info(int signo, siginfo_t *info, void *context) {
      (void)signo; (void)context;
      _exit(info->si_addr == own_page ? 42 : 43);
    }
    static void on_segv_plain(int signo) { (void)signo; _exit(44); }
    static void *second_page;
    static int handled;
    static void on_segv_once(int signo) {  // makes both pages writable and returns
      (void)signo;
      handled++;
      mprotect(own_page, 4096, PROT_READ | PROT_WRITE);
      mprotect(second_page, 4096, PROT_READ | PROT_WRITE);
    }

    int main(int argc, char **argv) {
      const char *mode = argc > 1 ? argv[1] : "";
      own_page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (own_page == MAP_FAILED) return 2;
      if (strcmp(mode, "signal") == 0) {
        if (signal(SIGSEGV, on_segv_plain) == SIG_ERR) return 3;
        if (signal(SIGSEGV, on_segv_plain) != on_segv_plain) return 4;  // reads its own back
      } else if (strcmp(mode, "sysv") == 0) {
        if (sysv_signal(SIGSEGV, on_segv_plain) == SIG_ERR) return 3;
      } else if (strcmp(mode, "sysv-once") == 0) {
        // System V semantics: the first fault runs the handler and resets the action, so the
        // second fault takes the default action.
        second_page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (sysv_signal(SIGSEGV, on_segv_once) == SIG_ERR) return 3;
        *(volatile char *)own_page = 1;
        printf("handled %d\n", handled);
        fflush(stdout);
        mprotect(second_page, 4096, PROT_NONE);
        *(volatile char *)second_page = 1;
        return 9;
      } else {
        struct sigaction action, query;
        memset(&action, 0, sizeof action);
        action.sa_sigaction = on_segv_info;
        action.sa_flags = SA_SIGINFO;
        sigemptyset(&action.sa_mask);
        if (sigaction(SIGSEGV, &action, NULL) != 0) return 5;
        if (sigaction(SIGSEGV, NULL, &query) != 0 || query.sa_sigaction != on_segv_info) return 6;
      }
      if (strcmp(mode, "heap") == 0) {
        volatile char *block = malloc(16);
        block[16] = 1;  // the guard page right after the block
        return 7;
      }
      *(volatile char *)own_page = 1;  // the program's own fault: its handler exits
      return 8;
    }
    """#

  @Test("a program's own SIGSEGV handler runs for its faults; heap faults are still reported")
  func programHandlersAreChained() throws {
    let binary = try PreloadTests.compile(Self.ownHandlerProgram, name: "preload-own-handler")
    let own = try PreloadTests.run(binary, ["sigaction"])
    #expect(own.status == 42 && !own.signaled, "\(own.status) \(own.standardError)")
    #expect(PreloadTests.findings(own).isEmpty, "\(own.standardError)")
    for mode in ["signal", "sysv"] {
      let plainHandler = try PreloadTests.run(binary, [mode])
      #expect(
        plainHandler.status == 44 && !plainHandler.signaled,
        "\(mode): \(plainHandler.standardError)")
    }
    let once = try PreloadTests.run(binary, ["sysv-once"])
    #expect(once.standardOutput == "handled 1\n" && once.signaled && once.status == SIGSEGV)
    #expect(PreloadTests.findings(once).isEmpty, "\(once.standardError)")
    let heap = try PreloadTests.run(binary, ["heap"])
    #expect(heap.signaled && heap.status == SIGSEGV, "\(heap.status) \(heap.standardError)")
    #expect(
      PreloadTests.findings(heap).map { $0["kind"] as? String } == ["heap-buffer-overflow"],
      "\(heap.standardError)")
    // Without the preload, the same program's handlers take everything (the heap write lands in
    // glibc's chunk padding, so it is the program's own fault that ends it).
    let plain = try PreloadTests.run(binary, ["sigaction"], preload: false)
    #expect(plain.status == 42)
  }

  @Test("allocations in other libraries' initializers, before ours ran, are glibc's and stay safe")
  func earlyInitializers() throws {
    guard PreloadTests.find("clang++") ?? PreloadTests.find("c++") != nil else {
      print("skipped: no C++ compiler")
      return
    }
    let library = #"""
      #include <cstdlib>
      #include <string>
      #include <vector>
      static std::vector<std::string> *kept;
      static char *early;
      __attribute__((constructor)) static void initialize() {
        delete new int(1);
        std::vector<std::string> scratch(20, std::string(40, 'x'));
        kept = new std::vector<std::string>(scratch);
        early = static_cast<char *>(std::malloc(64));
      }
      extern "C" void release_early() {
        std::free(early);  // a glibc block, freed once we run
        delete kept;  // ditto, through operator delete
        early = static_cast<char *>(std::realloc(nullptr, 10));
        std::free(early);
      }
      """#
    let shared = try PreloadTests.compile(
      library, name: "libearly.so", cplusplus: true, arguments: ["-shared", "-fPIC"])
    let program = #"""
      #include <stdio.h>
      void release_early(void);
      int main(void) { release_early(); printf("ok\n"); return 0; }
      """#
    let directory = (shared as NSString).deletingLastPathComponent
    let binary = try PreloadTests.compile(
      program, name: "preload-early", arguments: [shared, "-Wl,-rpath," + directory])
    let outcome = try PreloadTests.run(binary, [])
    #expect(
      outcome.status == 0 && !outcome.signaled && outcome.standardOutput == "ok\n",
      "\(outcome.standardError)")
    #expect(PreloadTests.findings(outcome).isEmpty, "\(outcome.standardError)")
  }

  @Test("python3 runs a JSON round trip of 200,000 objects clean under the preload")
  func python() throws {
    guard let python = PreloadTests.find("python3") else {
      print("skipped: python3 not found")
      return
    }
    let script = """
      import json
      data = [{"id": i, "name": "item%d" % i, "tags": ["a", "b"]} for i in range(200000)]
      text = json.dumps(data)
      assert json.loads(text) == data
      print(len(text))
      """
    let outcome = try PreloadTests.run(python, ["-c", script], timeout: 300)
    #expect(outcome.status == 0 && !outcome.signaled, "\(outcome.standardError)")
    #expect(
      Int(outcome.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 > 1_000_000)
    #expect(PreloadTests.findings(outcome).isEmpty, "\(outcome.standardError.prefix(2000))")
  }
}
