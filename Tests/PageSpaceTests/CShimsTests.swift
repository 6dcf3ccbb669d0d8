import CShims
import PageSpace
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The CShims wrappers that are not page operations: counters, files, glibc forwarding, the
/// reentrancy flag, backtraces and module lookup.
@Suite struct CShimsTests {
  @Test func pageSizeAndLimitsMatchTheSystem() {
    #expect(cshim_page_size() == sysconf(Int32(_SC_PAGESIZE)))
    var limit: Int32 = 0
    #expect(cshim_max_map_count(&limit) == 0)
    #expect(Int(limit) == Int(readFirstLine("/proc/sys/vm/max_map_count")) ?? -1)
    #expect(space.maxMapCount == Int(limit))
  }

  @Test func vmaCountIsMapsLinesLessVsyscall() async {
    await #expect(processExitsWith: .success) {
      var counted: Int32 = 0
      require(cshim_vma_count(&counted) == 0, "cshim_vma_count")
      let lines = mapsLines()
      let vsyscall = lines.filter { $0.hasSuffix("[vsyscall]") }.count
      require(Int(counted) == lines.count - vsyscall, "\(counted) vs \(lines.count) - \(vsyscall)")
      require(space.vmaCount == Int(counted), "the space agrees")
      // A shared page never merges: +1, then -1.
      let page = try! space.map(at: nil, length: pageSize, protection: .readWrite, flags: .shared)
      require(space.vmaCount == Int(counted) + 1, "mmap adds one VMA")
      try! space.unmap(page, length: pageSize)
      require(space.vmaCount == Int(counted), "munmap removes it")
    }
  }

  @Test func vmaCountInARangeCountsOverlappingVMAs() throws {
    let region = try FencedRegion(pages: 6)
    try space.protect(region.page(2), length: pageSize, to: .read)
    #expect(region.vmaCount == 3)
    #expect(space.vmaCount(in: AddressRange(start: region.page(2), length: 1)) == 1)
    #expect(
      space.vmaCount(in: AddressRange(start: region.page(1) + 5, end: region.page(3) + 1)) == 3)
    #expect(
      space.vmaCount(in: AddressRange(start: region.base - pageSize, length: 8 * pageSize)) == 5)
  }

  @Test func faultCountersAreReadable() {
    var minor: UInt64 = 0
    var major: UInt64 = 0
    #expect(cshim_fault_counts(&minor, &major) == 0 && minor > 0)
    var threadMinor: UInt64 = 0
    #expect(cshim_thread_fault_counts(&threadMinor, &major) == 0)
    #expect(threadMinor <= minor)
  }

  @Test func appendWritesAndCloses() throws {
    let path = "/tmp/heappatrol-cshims-\(getpid())-\(cshim_monotonic_ns()).log"
    defer { unlink(path) }
    for text in ["first line\n", "second line\n"] {
      var fd: Int32 = -1
      #expect(cshim_open_append(path, &fd) == 0)
      #expect(text.withCString { cshim_write_all(fd, $0, strlen($0)) } == 0)
      #expect(cshim_close(fd) == 0)
    }
    #expect(readWholeFile(path) == "first line\nsecond line\n")
    var fd: Int32 = -1
    #expect(cshim_open_append("/nonexistent-dir/x.log", &fd) == ENOENT)
    #expect(cshim_close(-1) == EBADF)
    #expect("x".withCString { cshim_write_all(-1, $0, 1) } == EBADF)
  }

  @Test func identityAndClock() {
    #expect(cshim_getpid() == getpid())
    #expect(cshim_gettid() == glibcGettid())
    let first = cshim_monotonic_ns()
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    let second = cshim_monotonic_ns()
    let reference = UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    #expect(first <= reference && reference <= second)
  }

  @Test func atexitRunsTheFunction() async {
    await #expect(processExitsWith: .exitCode(42)) {
      _ = cshim_atexit { _exit(42) }
      exit(0)
    }
  }

  @Test func atforkRunsAllThreeHandlers() async {
    await #expect(processExitsWith: .success) {
      require(
        cshim_atfork({ forkPrepared += 1 }, { forkParentRan += 1 }, { forkChildRan += 1 }) == 0,
        "register")
      let child = fork()
      if child == 0 { _exit(forkPrepared == 1 && forkChildRan == 1 && forkParentRan == 0 ? 0 : 3) }
      var status: Int32 = 0
      waitpid(child, &status, 0)
      require(status == 0, "the child saw prepare and child handlers (status \(status))")
      require(forkPrepared == 1 && forkParentRan == 1 && forkChildRan == 0, "parent handlers")
    }
  }

  // MARK: glibc forwarding

  @Test func glibcForwardingAndUsableSize() throws {
    for size in [1, 24, 100, 4000, 200_000, 1 << 20] {
      let pointer = try #require(cshim_libc_malloc(size))
      #expect(cshim_libc_usable_size(pointer) == glibcUsableSize(pointer), "size \(size)")
      #expect(cshim_libc_usable_size(pointer) >= size)
      memset(pointer, 0x5C, size)
      let grown = try #require(cshim_libc_realloc(pointer, size * 2))
      #expect(grown.load(fromByteOffset: size - 1, as: UInt8.self) == 0x5C)
      #expect(cshim_libc_usable_size(grown) == glibcUsableSize(grown))
      cshim_libc_free(grown)
    }
    let zeroed = try #require(cshim_libc_calloc(100, 16))
    #expect(UnsafeRawBufferPointer(start: zeroed, count: 1600).allSatisfy { $0 == 0 })
    cshim_libc_free(zeroed)
    let aligned = try #require(cshim_libc_memalign(4096, 100))
    #expect(UInt(bitPattern: aligned) % 4096 == 0)
    #expect(cshim_libc_usable_size(aligned) == glibcUsableSize(aligned))
    cshim_libc_free(aligned)
    #expect(cshim_libc_usable_size(nil) == 0)
  }

  @Test func reentrancyFlagIsPerThread() {
    #expect(cshim_is_inside() == 0)
    #expect(cshim_enter() == 0)
    #expect(cshim_is_inside() == 1)
    #expect(cshim_enter() == 1)  // nested: the caller must go to glibc
    var thread = pthread_t()
    pthread_create(
      &thread, nil,
      { _ in
        otherThreadSawInside = cshim_is_inside()
        return nil
      }, nil)
    pthread_join(thread, nil)
    #expect(otherThreadSawInside == 0)
    cshim_leave()
    #expect(cshim_is_inside() == 0)
  }

  // MARK: Backtraces and modules

  @Test func backtraceReturnsTheCallerChain() throws {
    let (ours, unwound) = backtraceOuter()
    #expect(ours.count >= 4)
    // Frame 0 is the return address in the innermost function (another call site than glibc's).
    #expect(ours[0] != unwound[0] && max(ours[0], unwound[0]) - min(ours[0], unwound[0]) < 512)
    // Above it: the returns into middle, outer and the test, as the DWARF unwinder sees them too.
    #expect(Array(ours[1...3]) == Array(unwound[1...3]))
    let executable = try #require(readLink("/proc/self/exe"))
    for pc in ours[0...2] {  // inner, middle, outer (the test body may be inlined into a thunk)
      var path = [CChar](repeating: 0, count: 4096)
      var offset: UInt = 0
      #expect(cshim_module_for_pc(pc, &path, path.count, &offset) == 0)
      #expect(text(path) == executable)
      #expect(offset == pc - (try #require(loadBase(of: pc))), "a PIE: offset from the load base")
    }
    var none: [UInt] = []
    #expect(cshim_backtrace(&none, 0, 0) == 0)
    var skipped = [UInt](repeating: 0, count: 2)
    #expect(cshim_backtrace(&skipped, 2, 1) == 2)
  }

  @Test func moduleForPcNamesLibcForALibcFunction() throws {
    let function = try #require(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "getpid"))
    let pc = UInt(bitPattern: function) + 4
    var path = [CChar](repeating: 0, count: 4096)
    var offset: UInt = 0
    #expect(cshim_module_for_pc(pc, &path, path.count, &offset) == 0)
    #expect(text(path).contains("libc.so"))
    #expect(offset == pc - (try #require(loadBase(of: pc))))
    // Truncation keeps a terminated prefix; anonymous memory has no module.
    var short = [CChar](repeating: 7, count: 5)
    #expect(cshim_module_for_pc(pc, &short, short.count, &offset) == 0)
    #expect(short[4] == 0 && text(short) == String(text(path).prefix(4)))
    let region = try FencedRegion(pages: 1)
    #expect(cshim_module_for_pc(region.base, &path, path.count, &offset) == ENOENT)
    #expect(cshim_module_for_pc(0x10, &path, path.count, &offset) == ENOENT)
  }
}

nonisolated(unsafe) private var forkPrepared = 0
nonisolated(unsafe) private var forkParentRan = 0
nonisolated(unsafe) private var forkChildRan = 0
nonisolated(unsafe) private var otherThreadSawInside: Int32 = -1

private typealias BacktraceFunction =
  @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>?, Int32) -> Int32

@inline(never) func backtraceOuter() -> ([UInt], [UInt]) {
  let result = backtraceMiddle()
  return result
}

@inline(never) func backtraceMiddle() -> ([UInt], [UInt]) {
  let result = backtraceInner()
  return result
}

@inline(never) func backtraceInner() -> ([UInt], [UInt]) {
  var ours = [UInt](repeating: 0, count: 16)
  var unwound = [UnsafeMutableRawPointer?](repeating: nil, count: 16)
  let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "backtrace")!
  let glibcBacktrace = unsafeBitCast(symbol, to: BacktraceFunction.self)
  let count = Int(cshim_backtrace(&ours, 16, 0))
  let unwoundCount = Int(glibcBacktrace(&unwound, 16))
  return (Array(ours.prefix(count)), unwound.prefix(unwoundCount).map { UInt(bitPattern: $0) })
}

func readWholeFile(_ path: String) -> String? {
  let fd = open(path, O_RDONLY)
  guard fd >= 0 else { return nil }
  defer { close(fd) }
  var bytes: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 65536)
  while true {
    let got = read(fd, &chunk, chunk.count)
    if got <= 0 { break }
    bytes.append(contentsOf: chunk.prefix(got))
  }
  return String(decoding: bytes, as: UTF8.self)
}

func readFirstLine(_ path: String) -> String {
  String(readWholeFile(path)?.split(separator: "\n").first ?? "")
}

func mapsLines() -> [Substring] {
  (readWholeFile("/proc/self/maps") ?? "").split(separator: "\n")
}

func readLink(_ path: String) -> String? {
  var buffer = [CChar](repeating: 0, count: 4096)
  let length = readlink(path, &buffer, buffer.count - 1)
  guard length > 0 else { return nil }
  buffer[length] = 0
  return text(buffer)
}

/// glibc functions the Swift Glibc module does not import, looked up by name.
func glibcUsableSize(_ pointer: UnsafeMutableRawPointer?) -> Int {
  typealias Function = @convention(c) (UnsafeMutableRawPointer?) -> Int
  let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_usable_size")!
  return unsafeBitCast(symbol, to: Function.self)(pointer)
}

func glibcGettid() -> Int32 {
  typealias Function = @convention(c) () -> Int32
  let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "gettid")!
  return unsafeBitCast(symbol, to: Function.self)()
}

/// The NUL-terminated text in `buffer`.
func text(_ buffer: [CChar]) -> String {
  let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
  return String(decoding: bytes, as: UTF8.self)
}

/// The load base of the object containing `pc`, from glibc's dladdr (an independent source).
func loadBase(of pc: UInt) -> UInt? {
  typealias Function = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer) -> Int32
  let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "dladdr")!
  // Dl_info: dli_fname, dli_fbase, dli_sname, dli_saddr.
  var info: (UInt, UInt, UInt, UInt) = (0, 0, 0, 0)
  let found = withUnsafeMutableBytes(of: &info) {
    unsafeBitCast(symbol, to: Function.self)(UnsafeRawPointer(bitPattern: pc), $0.baseAddress!)
  }
  return found != 0 ? info.1 : nil
}
