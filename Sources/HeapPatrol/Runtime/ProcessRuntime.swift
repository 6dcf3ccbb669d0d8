import CShims
import PageSpace
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The process-wide HeapPatrol: one guarded heap over real pages, the stack depot, the SIGSEGV/SIGBUS
/// handler, report output, canary check and leak detection at exit, and fork handling.
///
/// The preload library starts it lazily inside the first malloc (`startFromEnvironment()`); a program
/// that links HeapPatrol can start it itself with `start(options:)`. All its state lives in mmap'd
/// memory and every path used by malloc and the fault handler is allocation-free.
///
/// How the process ends after a finding:
/// - A bad access (overflow, underflow, use-after-free, wild access in our address space) is fatal, as
///   the crash it is: the report is written and flushed, then the signal is re-raised with its default
///   action (core-dump compatible), or the process exits with `fatal_exitcode` if set.
/// - A bad free (double, invalid, interior), an alloc-dealloc mismatch or a corrupted canary is
///   reported and the program continues: the bad free is ignored, never reused (mpatrol's behaviour).
///   `halt_on_error=1` ends the process instead (SIGABRT, or `fatal_exitcode`), like AddressSanitizer.
public struct ProcessRuntime: @unchecked Sendable {
  let state: UnsafeMutablePointer<RuntimeState>

  /// The running runtime, if started.
  @inline(__always)
  public static var current: ProcessRuntime? {
    guard runtimePhase.load(ordering: .acquiring) == RuntimePhase.ready,
      let state = UnsafeMutablePointer<RuntimeState>(
        bitPattern: runtimeStateAddress.load(ordering: .relaxed))
    else { return nil }
    return ProcessRuntime(state: state)
  }

  /// The guarded heap (real pages).
  public var heap: HeapHandle<SystemPageSpace> { state.pointee.heap }
  public var depot: StackDepot { state.pointee.depot }
  public var options: RuntimeOptions { state.pointee.options }
  /// Findings reported so far by this process.
  public var findingCount: Int { state.pointee.findings.load(ordering: .relaxed) }

  // MARK: Starting

  /// Starts the runtime with `options` (once per process; later calls return the running one).
  /// Nil if the process cannot map the heap's tables.
  public static func start(options: RuntimeOptions) -> ProcessRuntime? {
    let reentered = cshim_enter() != 0
    defer { if !reentered { cshim_leave() } }
    return startOnce { options }
  }

  /// The preload's start: options from `HEAPPATROL_OPTIONS`. A bad option is fatal here: the message
  /// goes to stderr and the process exits with status 1 before the program runs. Must be called
  /// inside `cshim_enter` (the malloc entry points are).
  public static func startFromEnvironment() -> ProcessRuntime? {
    startOnce {
      var options = RuntimeOptions()
      let name: StaticString = "HEAPPATROL_OPTIONS"
      if let text = getenv(UnsafeRawPointer(name.utf8Start).assumingMemoryBound(to: CChar.self)) {
        do throws(OptionsError) {
          try options.apply(cString: text)
        } catch {
          var line = InlineArray<768, UInt8>(repeating: 0)
          withUnsafeMutableBytes(of: &line) { raw in
            var out = ReportBuffer(
              base: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), capacity: raw.count,
              sink: 2)
            error.render(into: &out)
            out.append("\n")
            out.flush()
          }
          _exit(1)
        }
      }
      return options
    }
  }

  /// Runs the one-time start. Another thread arriving meanwhile waits for it; the starting thread
  /// itself never comes back here (its mallocs are reentrant and go to glibc).
  private static func startOnce(_ makeOptions: () -> RuntimeOptions) -> ProcessRuntime? {
    while true {
      switch runtimePhase.load(ordering: .acquiring) {
      case RuntimePhase.ready: return current
      case RuntimePhase.failed: return nil
      case RuntimePhase.starting:
        sched_yield()
        continue
      default: break
      }
      guard
        runtimePhase.compareExchange(
          expected: RuntimePhase.none, desired: RuntimePhase.starting,
          ordering: .acquiringAndReleasing
        ).exchanged
      else { continue }
      let options = makeOptions()
      guard let state = RuntimeState.create(options: options) else {
        runtimePhase.store(RuntimePhase.failed, ordering: .releasing)
        return nil
      }
      runtimeStateAddress.store(UInt(bitPattern: state), ordering: .relaxed)
      runtimePhase.store(RuntimePhase.ready, ordering: .releasing)
      let runtime = ProcessRuntime(state: state)
      runtime.installProcessHooks()
      if options.verbose { runtime.printBanner() }
      return runtime
    }
  }

  private func installProcessHooks() {
    heap.setWarningHandler(runtimeWarningHandler)
    _ = cshim_install_fault_handler(runtimeFaultHandler)
    _ = cshim_atfork(runtimePrepareFork, runtimeParentAfterFork, runtimeChildAfterFork)
    _ = cshim_atexit(runtimeAtExit)
  }

  private func printBanner() {
    withReportBuffer(sink: 2) { out in
      out.append("==")
      out.append(decimal: state.pointee.pid)
      out.append("==HeapPatrol: guarding this process (")
      switch heap.statistics.mechanism {
      case .markers: out.append("guard markers")
      case .mprotect: out.append("mprotect guard pages")
      case .canary: out.append("canary red zones")
      }
      out.append(", stack depth ")
      out.append(decimal: options.stackDepth)
      out.append(", log fd ")
      out.append(decimal: state.pointee.logFD)
      out.append(")\n")
    }
  }

  // MARK: Heap entry points

  // The preload's malloc family calls these rather than `heap.allocate` & co.: compiled in this
  // module for the concrete `HeapHandle<SystemPageSpace>`, the whole heap path is specialized, so a
  // malloc instantiates no generic metadata and dispatches through no witness table.

  @inline(never)
  public func allocate(
    size: UInt, alignment: UInt = 0, api: AllocationAPI, zeroed: Bool = false, stack: StackID,
    thread: Int32
  ) -> HeapResult {
    heap.allocate(
      size: size, alignment: alignment, api: api, zeroed: zeroed, stack: stack, thread: thread)
  }

  @inline(never)
  public func deallocate(_ address: UInt, api: AllocationAPI, stack: StackID, thread: Int32)
    -> HeapResult
  {
    heap.deallocate(address, api: api, stack: stack, thread: thread)
  }

  @inline(never)
  public func reallocate(
    _ address: UInt, size: UInt, api: AllocationAPI, stack: StackID, thread: Int32
  )
    -> HeapResult
  {
    heap.reallocate(address, size: size, api: api, stack: stack, thread: thread)
  }

  @inline(never)
  public func usableSize(of address: UInt) -> UInt? { heap.usableSize(of: address) }

  // MARK: Stacks

  /// The caller's stack, `skip` frames above the caller left out, at the configured depth.
  @inline(__always)
  public func captureStack(skip: Int = 0) -> StackID {
    depot.capture(skip: skip + 1, depth: state.pointee.options.stackDepth)
  }

  /// The stack of the program's call into an exported allocation function: walked from that
  /// function's own frame (`__builtin_frame_address(0)`), so frame 0 is the program's call site.
  @inline(__always)
  public func captureStack(fromFrame frame: UnsafeMutableRawPointer?) -> StackID {
    guard let frame else { return .none }
    return depot.capture(
      pc: 0, fp: UInt(bitPattern: frame), depth: state.pointee.options.stackDepth)
  }

  // MARK: Reporting

  /// Writes `finding` as text (stderr) and JSON (the log), serialized with other reports, and counts
  /// it. Allocation-free.
  public func report(_ finding: Finding) {
    guard acquireReportLock() else { return }
    defer { releaseReportLock() }
    writeLocked(finding)
  }

  /// Reports every finding of a heap call; returns whether any was reported.
  @discardableResult
  public func report(_ findings: FindingBuffer) -> Bool {
    guard !findings.isEmpty else { return false }
    var index = 0
    while index < findings.count {
      let finding = findings[index]
      if shouldReport(finding) { report(finding) }
      index += 1
    }
    return true
  }

  /// Whether the options want this finding reported (size overflow and out-of-memory are optional).
  public func shouldReport(_ finding: Finding) -> Bool {
    switch finding.kind {
    case .sizeOverflow: options.reportSizeOverflow
    case .outOfMemory: options.reportOutOfMemory
    default: true
    }
  }

  /// After a non-fatal finding: ends the process if `halt_on_error` asks for it.
  public func haltIfRequested(_ findings: FindingBuffer) {
    guard options.haltOnError, !findings.isEmpty else { return }
    var index = 0
    while index < findings.count {
      if shouldReport(findings[index]) { endProcess(signal: SIGABRT) }
      index += 1
    }
  }

  private func writeLocked(_ finding: Finding) {
    state.pointee.findings.add(1, ordering: .relaxed)
    let renderer = FindingRenderer(
      depot: depot, modules: state.pointee.modules, pid: state.pointee.pid)
    if options.textReport {
      withReportBuffer(sink: 2) { out in renderer.renderText(finding, into: &out) }
    }
    let logFD = state.pointee.logFD
    if logFD >= 0 {
      withReportBuffer(sink: logFD) { out in renderer.renderJSON(finding, into: &out) }
    }
  }

  /// A one-off warning (text and JSON).
  public func warn(_ message: UnsafeBufferPointer<UInt8>) {
    guard acquireReportLock() else { return }
    defer { releaseReportLock() }
    let renderer = FindingRenderer(
      depot: depot, modules: state.pointee.modules, pid: state.pointee.pid)
    if options.textReport {
      withReportBuffer(sink: 2) { out in renderer.renderWarningText(message, into: &out) }
    }
    let logFD = state.pointee.logFD
    if logFD >= 0 {
      withReportBuffer(sink: logFD) { out in renderer.renderWarningJSON(message, into: &out) }
    }
  }

  /// Writes the `exit` event line to the log (once per process image).
  func writeExitEvent() {
    let logFD = state.pointee.logFD
    guard logFD >= 0,
      state.pointee.exitEventWritten.exchange(true, ordering: .acquiringAndReleasing) == false
    else { return }
    let renderer = FindingRenderer(depot: depot, modules: nil, pid: state.pointee.pid)
    withReportBuffer(sink: logFD) { out in
      renderer.renderExitJSON(findings: findingCount, into: &out)
    }
  }

  func withReportBuffer(sink: Int32, _ body: (inout ReportBuffer) -> Void) {
    var out = ReportBuffer(
      base: state.pointee.reportMemory, capacity: RuntimeState.reportCapacity, sink: sink)
    body(&out)
    out.flush()
  }

  /// The report lock: a spin lock holding the owner's thread id. A fault while reporting on the same
  /// thread (a bug of ours) must not deadlock: the second report is dropped.
  func acquireReportLock() -> Bool {
    let me = cshim_gettid()
    while true {
      let (exchanged, owner) = state.pointee.reportLock.compareExchange(
        expected: 0, desired: me, ordering: .acquiring)
      if exchanged { return true }
      if owner == me { return false }
      sched_yield()
    }
  }

  func releaseReportLock() { state.pointee.reportLock.store(0, ordering: .releasing) }

  /// Ends the process after a finding: `fatal_exitcode` if set, else the signal's default action.
  public func endProcess(signal: Int32) -> Never {
    writeExitEvent()
    let code = options.fatalExitCode
    if code != 0 { _exit(code) }
    cshim_die_with_signal(signal)
    _exit(128 + signal)
  }

  // MARK: Fault handling

  /// The fault handler's work: nil-diagnosis faults are not ours (0: chain on); ours are reported and
  /// end the process.
  func handle(_ fault: UnsafePointer<cshim_fault>) -> Int32 {
    let info = fault.pointee
    let access = MemoryAccess(rawValue: UInt8(truncatingIfNeeded: info.access)) ?? .read
    guard
      let diagnosed = heap.view.diagnose(
        address: info.address, access: access, code: FaultCode(rawValue: info.code),
        thread: cshim_gettid())
    else { return 0 }
    var finding = diagnosed
    finding.accessStack = depot.capture(pc: info.pc, fp: info.fp, depth: options.stackDepth)
    report(finding)
    endProcess(signal: info.signo)
  }
}

// MARK: - Process-wide state

enum RuntimePhase {
  static let none: UInt8 = 0
  static let starting: UInt8 = 1
  static let ready: UInt8 = 2
  static let failed: UInt8 = 3
}

/// Both are constant-initialized (no swift_once; atomics, so no exclusivity-checking runtime calls),
/// so reading them from the first malloc or the signal handler is safe. The phase's release store
/// publishes the state address.
let runtimePhase = Atomic<UInt8>(0)
let runtimeStateAddress = Atomic<UInt>(0)

/// The runtime's state, in its own mapping.
struct RuntimeState: ~Copyable {
  static let reportCapacity = 64 << 10

  var options: RuntimeOptions
  let heap: HeapHandle<SystemPageSpace>
  let depot: StackDepot
  let modules: ModuleResolver
  let reportMemory: UnsafeMutablePointer<UInt8>
  /// The whole mapping (state, report buffer, module cache), for the leak scan's exclusions.
  let region: (base: UInt, length: UInt)
  var logFD: Int32
  var logFDIsOurs: Bool
  var pid: Int32
  let reportLock = Atomic<Int32>(0)
  let findings = Atomic<Int>(0)
  let exitEventWritten = Atomic<Bool>(false)

  static func create(options: RuntimeOptions) -> UnsafeMutablePointer<RuntimeState>? {
    let page = Int(cshim_page_size())
    let stateBytes = (MemoryLayout<RuntimeState>.stride + 63) / 64 * 64
    let total =
      (stateBytes + reportCapacity + ModuleResolver.memorySize + page - 1) / page * page
    var raw: UnsafeMutableRawPointer?
    guard cshim_mmap(nil, total, 0x3, 0x02 | 0x20, -1, 0, &raw) == 0, let base = raw else {
      return nil
    }
    guard let heap = HeapHandle(space: SystemPageSpace(), configuration: options.heap),
      let depot = StackDepot()
    else {
      _ = cshim_munmap(base, total)
      return nil
    }
    let reportMemory = (base + stateBytes).bindMemory(to: UInt8.self, capacity: reportCapacity)
    let modules = ModuleResolver(memory: base + stateBytes + reportCapacity)
    let pid = cshim_getpid()
    let (logFD, ours) = openLog(options: options, pid: pid)
    let state = base.bindMemory(to: RuntimeState.self, capacity: 1)
    state.initialize(
      to: RuntimeState(
        options: options, heap: heap, depot: depot, modules: modules, reportMemory: reportMemory,
        region: (UInt(bitPattern: base), UInt(total)), logFD: logFD, logFDIsOurs: ours, pid: pid))
    return state
  }

  /// The JSON log: `log_fd` if given, else `log` (with `%p` replaced by the pid) opened for append.
  static func openLog(options: RuntimeOptions, pid: Int32) -> (Int32, Bool) {
    if options.logFD >= 0 { return (options.logFD, false) }
    guard !options.logPath.isEmpty else { return (-1, false) }
    var path = InlineArray<640, UInt8>(repeating: 0)
    return withUnsafeMutableBytes(of: &path) { raw -> (Int32, Bool) in
      var out = ReportBuffer(
        base: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), capacity: raw.count - 1)
      options.logPath.withBytes { bytes in
        out.append(pathTemplate: bytes, pid: pid)
      }
      raw[out.count] = 0
      var fd: Int32 = -1
      let error = cshim_open_append(raw.baseAddress!.assumingMemoryBound(to: CChar.self), &fd)
      if error != 0 {
        var line = InlineArray<768, UInt8>(repeating: 0)
        withUnsafeMutableBytes(of: &line) { lineRaw in
          var message = ReportBuffer(
            base: lineRaw.baseAddress!.assumingMemoryBound(to: UInt8.self), capacity: lineRaw.count,
            sink: 2)
          message.append("==")
          message.append(decimal: pid)
          message.append("==WARNING: HeapPatrol: cannot open log file '")
          message.append(out.bytes)
          message.append("' (errno ")
          message.append(decimal: error)
          message.append("); JSON reports are off\n")
          message.flush()
        }
        return (-1, false)
      }
      return (fd, true)
    }
  }

  var logPathHasPID: Bool { options.logPath.hasPIDPlaceholder }

}

// MARK: - C entry points (function pointers given to CShims)

private func runtimeFaultHandler(
  _ fault: UnsafePointer<cshim_fault>?, _ info: UnsafeMutableRawPointer?,
  _ context: UnsafeMutableRawPointer?
) -> Int32 {
  guard let fault, let runtime = ProcessRuntime.current else { return 0 }
  return runtime.handle(fault)
}

private func runtimeWarningHandler(_ kind: UInt8, _ detail: Int) {
  guard let runtime = ProcessRuntime.current else { return }
  var text = InlineArray<256, UInt8>(repeating: 0)
  withUnsafeMutableBytes(of: &text) { raw in
    var out = ReportBuffer(
      base: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), capacity: raw.count)
    switch HeapWarning(rawValue: kind) {
    case .vmaBudgetExhausted:
      out.append("VMA budget spent (")
      out.append(decimal: detail)
      out.append(" VMAs): new blocks get canary red zones instead of guard pages")
    case .pageOperationRefused:
      out.append("the kernel refused a page operation (errno ")
      out.append(decimal: detail)
      out.append("): new blocks get canary red zones instead of guard pages")
    case nil:
      out.append("heap warning ")
      out.append(decimal: Int(kind))
    }
    runtime.warn(out.bytes)
  }
}

private func runtimePrepareFork() {
  guard let runtime = ProcessRuntime.current else { return }
  runtime.heap.prepareFork()
  runtime.depot.lockForFork()
}

private func runtimeParentAfterFork() {
  guard let runtime = ProcessRuntime.current else { return }
  runtime.depot.unlockAfterFork()
  runtime.heap.parentAfterFork()
}

private func runtimeChildAfterFork() {
  guard let runtime = ProcessRuntime.current else { return }
  runtime.depot.unlockAfterFork()
  runtime.heap.childAfterFork()
  let state = runtime.state
  state.pointee.reportLock.store(0, ordering: .releasing)
  state.pointee.pid = cshim_getpid()
  state.pointee.findings.store(0, ordering: .relaxed)
  state.pointee.exitEventWritten.store(false, ordering: .relaxed)
  // A per-process log (`%p`) gets a file of the child's own.
  if state.pointee.logFDIsOurs && state.pointee.logPathHasPID {
    _ = cshim_close(state.pointee.logFD)
    let (fd, ours) = RuntimeState.openLog(options: state.pointee.options, pid: state.pointee.pid)
    state.pointee.logFD = fd
    state.pointee.logFDIsOurs = ours
  }
}

private func runtimeAtExit() {
  guard let runtime = ProcessRuntime.current else { return }
  let reentered = cshim_enter() != 0
  defer { if !reentered { cshim_leave() } }
  runtime.finishAtExit()
}
