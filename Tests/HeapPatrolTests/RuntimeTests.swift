import CShims
import Foundation
import PageSpace
import Testing

@testable import HeapPatrol

/// Death tests: each body runs in a fresh child process (exit tests), starts the process-wide runtime
/// (fault handler, atexit, atfork) over real pages and does the bad thing for real.
@Suite("Runtime")
struct RuntimeTests {
  @Test("an overflow by one byte is reported (text) and the process dies with SIGSEGV")
  func overflowDies() async throws {
    let result = await #expect(
      processExitsWith: .signal(SIGSEGV), observing: [\.standardErrorContent]
    ) {
      let options = try RuntimeOptions(parsing: "align=1,detect_leaks=0")
      guard let runtime = ProcessRuntime.start(options: options) else { exit(90) }
      let block = runtime.heap.allocate(
        size: 13, api: .malloc, stack: runtime.captureStack(), thread: cshim_gettid())
      guard let address = block.address,
        let bytes = UnsafeMutablePointer<UInt8>(bitPattern: address)
      else { exit(91) }
      for index in 0..<13 { bytes[index] = UInt8(index) }  // every byte of the block is usable
      bytes[13] = 0x42
      exit(92)
    }
    let stderr = String(decoding: try #require(result).standardErrorContent, as: UTF8.self)
    #expect(stderr.contains("==ERROR: HeapPatrol: heap-buffer-overflow [ILLMEM] WRITE at 0x"))
    #expect(stderr.contains(" is 0 bytes past the end of block #1 (13 bytes, malloc) at 0x"))
    #expect(stderr.contains("  accessed at:\n    #0 0x"))
    #expect(stderr.contains("  allocated by thread "))
    #expect(stderr.contains("SUMMARY: HeapPatrol: heap-buffer-overflow ("))
  }

  @Test("use-after-free READ: JSON line in the log file, then exit with fatal_exitcode")
  func useAfterFreeJSON() async throws {
    let log = FileManager.default.temporaryDirectory.appendingPathComponent("hp-uaf-\(UUID()).json")
    defer { try? FileManager.default.removeItem(at: log) }
    setenv("HP_TEST_LOG", log.path, 1)
    await #expect(processExitsWith: .exitCode(42)) {
      let path = String(cString: getenv("HP_TEST_LOG"))
      let options = try RuntimeOptions(parsing: "fatal_exitcode=42,text_report=0,log=\(path)")
      guard let runtime = ProcessRuntime.start(options: options) else { exit(90) }
      let thread = cshim_gettid()
      let block = runtime.heap.allocate(
        size: 100, api: .malloc, stack: runtime.captureStack(), thread: thread)
      guard let address = block.address else { exit(91) }
      _ = runtime.heap.deallocate(
        address, api: .free, stack: runtime.captureStack(), thread: thread)
      let value = UnsafePointer<UInt8>(bitPattern: address + 10)!.pointee
      exit(Int32(value))  // not reached
    }
    let lines = try String(contentsOf: log, encoding: .utf8).split(separator: "\n")
    #expect(lines.count == 2)
    let finding = try #require(
      try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
    #expect(finding["kind"] as? String == "use-after-free")
    #expect(finding["access"] as? String == "READ")
    #expect(finding["offset"] as? Int == 10)
    #expect(finding["relation"] as? String == "inside")
    let block = try #require(finding["block"] as? [String: Any])
    #expect(block["size"] as? Int == 100 && block["state"] as? String == "quarantined")
    #expect(block["freeApi"] as? String == "free")
    #expect((finding["freeStack"] as? [Any])?.isEmpty == false)
    #expect((finding["accessStack"] as? [[String: Any]])?.first?["module"] != nil)
    let exitEvent = try #require(
      try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as? [String: Any])
    #expect(exitEvent["event"] as? String == "exit" && exitEvent["findings"] as? Int == 1)
  }

  @Test("a fault outside the heap is not ours: passed on untouched (no report)")
  func foreignFaultChains() async throws {
    let result = await #expect(
      processExitsWith: .signal(SIGSEGV), observing: [\.standardErrorContent]
    ) {
      guard ProcessRuntime.start(options: RuntimeOptions()) != nil else { exit(90) }
      var raw: UnsafeMutableRawPointer?
      guard cshim_mmap(nil, 4096, 0, 0x22, -1, 0, &raw) == 0, let page = raw else { exit(91) }
      page.storeBytes(of: 1, as: UInt8.self)
      exit(92)
    }
    let stderr = String(decoding: try #require(result).standardErrorContent, as: UTF8.self)
    #expect(!stderr.contains("HeapPatrol"))
  }

  @Test("leaks at exit: an unreachable block is reported, a block kept in a global is not")
  func leaksAtExit() async throws {
    let result = await #expect(processExitsWith: .exitCode(23), observing: [\.standardErrorContent])
    {
      let options = try RuntimeOptions(parsing: "leak_exitcode=23,show_reachable=1")
      guard let runtime = ProcessRuntime.start(options: options) else { exit(90) }
      for _ in 0..<2 { RuntimeTests.allocateUnreachable(runtime, size: 24) }  // one stack, 2 blocks
      RuntimeTests.keptAlive = RuntimeTests.allocateReachable(runtime, size: 77)
      exit(0)
    }
    let stderr = String(decoding: try #require(result).standardErrorContent, as: UTF8.self)
    #expect(stderr.contains("==ERROR: HeapPatrol: leak [SHOWUNFREED] 48 bytes in 2 blocks\n"))
    #expect(!stderr.contains("77 bytes in 1 block\n  leak"))
    #expect(stderr.contains("==HeapPatrol: still reachable: 77 bytes in 1 block allocated at:"))
  }

  nonisolated(unsafe) static var keptAlive: UInt = 0

  /// Allocates and forgets (the pointer is wiped from this frame before returning).
  @inline(never)
  static func allocateUnreachable(_ runtime: ProcessRuntime, size: UInt) {
    var address =
      runtime.heap.allocate(
        size: size, api: .malloc, stack: runtime.captureStack(), thread: cshim_gettid()
      ).address ?? 0
    withUnsafeMutablePointer(to: &address) { $0.pointee = 0 }
  }

  @inline(never)
  static func allocateReachable(_ runtime: ProcessRuntime, size: UInt) -> UInt {
    runtime.heap.allocate(
      size: size, api: .malloc, stack: runtime.captureStack(), thread: cshim_gettid()
    )
    .address ?? 0
  }

  @Test("log_fd: JSON lines go to an inherited descriptor")
  func logDescriptor() async throws {
    let log = FileManager.default.temporaryDirectory.appendingPathComponent("hp-fd-\(UUID()).json")
    defer { try? FileManager.default.removeItem(at: log) }
    setenv("HP_TEST_LOG", log.path, 1)
    await #expect(processExitsWith: .exitCode(0)) {
      let fd = open(getenv("HP_TEST_LOG"), O_WRONLY | O_CREAT | O_TRUNC, 0o644)
      guard fd >= 0 else { exit(89) }
      let options = try RuntimeOptions(parsing: "log_fd=\(fd),text_report=0,detect_leaks=0")
      guard let runtime = ProcessRuntime.start(options: options) else { exit(90) }
      let thread = cshim_gettid()
      let address = runtime.heap.allocate(size: 32, api: .newArray, thread: thread).address!
      let result = runtime.heap.deallocate(address, api: .delete, thread: thread)
      runtime.report(result.findings)
      exit(0)
    }
    let lines = try String(contentsOf: log, encoding: .utf8).split(separator: "\n")
    try #require(lines.count == 2)
    let finding = try #require(
      try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
    #expect(finding["kind"] as? String == "alloc-dealloc-mismatch")
    let block = try #require(finding["block"] as? [String: Any])
    #expect(block["api"] as? String == "operator new[]")
    #expect(block["size"] as? Int == 32)
  }

  @Test("the VMA budget running out is one warning, in text and as a JSON event")
  func budgetWarning() async throws {
    let log = FileManager.default.temporaryDirectory.appendingPathComponent(
      "hp-warn-\(UUID()).json")
    defer { try? FileManager.default.removeItem(at: log) }
    setenv("HP_TEST_LOG", log.path, 1)
    let result = await #expect(processExitsWith: .exitCode(0), observing: [\.standardErrorContent])
    {
      let path = String(cString: getenv("HP_TEST_LOG"))
      let options = try RuntimeOptions(
        parsing: "guard=mprotect,vma_budget=4,detect_leaks=0,check_on_exit=0,log=\(path)")
      guard let runtime = ProcessRuntime.start(options: options) else { exit(90) }
      for _ in 0..<10 {
        guard runtime.heap.allocate(size: 100, api: .malloc, thread: cshim_gettid()).address != nil
        else { exit(91) }
      }
      exit(0)
    }
    let stderr = String(decoding: try #require(result).standardErrorContent, as: UTF8.self)
    #expect(stderr.components(separatedBy: "==WARNING: HeapPatrol: VMA budget spent").count == 2)
    let lines = try String(contentsOf: log, encoding: .utf8).split(separator: "\n")
    let events = try lines.map {
      try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
    }
    #expect(events.count == 2)
    #expect(events.first?["event"] as? String == "warning")
    #expect((events.first?["message"] as? String)?.hasPrefix("VMA budget spent (4 VMAs)") == true)
    #expect(events.last?["event"] as? String == "exit" && events.last?["findings"] as? Int == 0)
  }

  @Test("a bad free is reported and the program continues; halt_on_error=1 aborts")
  func nonFatalFindings() async throws {
    let result = await #expect(processExitsWith: .exitCode(0), observing: [\.standardErrorContent])
    {
      guard
        let runtime = ProcessRuntime.start(options: try RuntimeOptions(parsing: "detect_leaks=0"))
      else { exit(90) }
      let thread = cshim_gettid()
      let address = runtime.heap.allocate(size: 8, api: .malloc, thread: thread).address!
      _ = runtime.heap.deallocate(address, api: .free, thread: thread)
      let second = runtime.heap.deallocate(
        address, api: .free, stack: runtime.captureStack(), thread: thread)
      runtime.report(second.findings)
      runtime.haltIfRequested(second.findings)
      exit(0)
    }
    let stderr = String(decoding: try #require(result).standardErrorContent, as: UTF8.self)
    #expect(stderr.contains("==ERROR: HeapPatrol: double-free [PRVFRD] at 0x"))
    #expect(stderr.contains("  released at:\n"))

    await #expect(processExitsWith: .signal(SIGABRT)) {
      guard
        let runtime = ProcessRuntime.start(options: try RuntimeOptions(parsing: "halt_on_error=1"))
      else { exit(90) }
      let thread = cshim_gettid()
      let address = runtime.heap.allocate(size: 8, api: .malloc, thread: thread).address!
      _ = runtime.heap.deallocate(address, api: .free, thread: thread)
      let second = runtime.heap.deallocate(address, api: .free, thread: thread)
      runtime.report(second.findings)
      runtime.haltIfRequested(second.findings)
      exit(0)
    }
  }
}
