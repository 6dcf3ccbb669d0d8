#if os(Linux)
  import Glibc
  import PageSpace

  /// The real side of a workload: `fork` is a real fork of this (single-threaded) process, and each
  /// `in CHILD { ... }` block is sent to the child over a pipe; the child runs it on its own address
  /// space, measures with its own `getrusage`, and sends its steps back.
  ///
  /// Only for a process that runs nothing else: the `heappatrol faults --child` helper. Forking a
  /// multithreaded process and running Swift in the child is unsafe, so `fork` refuses when the
  /// process has more than one thread.
  public final class RealProcessHost: WorkloadProcessHost {
    public typealias Space = SystemPageSpace
    /// The running workload's regions (set by the runner that owns this host).
    weak var runner: WorkloadRunner<SystemPageSpace>?
    var workloadRegions: [AddressRange] {
      runner?.regions.compactMap { region -> AddressRange? in
        guard let region, region.length > 0 else { return nil }
        return AddressRange(start: region.start, length: region.length)
      } ?? []
    }

    struct Child {
      var pid: pid_t
      var commands: Int32
      var results: Int32
    }

    private var children: [Int: Child] = [:]
    private let blocks: [Int: [WorkloadStatement]]

    public init(workload: Workload) {
      var blocks: [Int: [WorkloadStatement]] = [:]
      for statement in workload.statements {
        if case .inChild(_, let block, let body) = statement.operation { blocks[block] = body }
      }
      self.blocks = blocks
    }

    public var runsFileMappings: Bool { false }

    public func mapFile(
      in space: SystemPageSpace, length: UInt, protection: PageProtection, shared: Bool,
      cache: FileCacheState
    ) throws(PageError) -> UInt {
      throw .unsupported
    }

    public func fork(_ child: ChildID, name: String, parent: WorkloadRunner<SystemPageSpace>)
      throws(PageError)
    {
      guard Self.threadCount() == 1 else { throw .notPermitted }
      var commandPipe: [Int32] = [0, 0]
      var resultPipe: [Int32] = [0, 0]
      guard pipe(&commandPipe) == 0 else { throw PageError(errno: errno) }
      guard pipe(&resultPipe) == 0 else {
        close(commandPipe[0])
        close(commandPipe[1])
        throw PageError(errno: errno)
      }
      let pid = Glibc.fork()
      if pid < 0 {
        let error = errno
        for descriptor in commandPipe + resultPipe { close(descriptor) }
        throw PageError(errno: error)
      }
      if pid == 0 {
        close(commandPipe[1])
        close(resultPipe[0])
        serve(as: name, parent: parent, commands: commandPipe[0], results: resultPipe[1])
      }
      close(commandPipe[0])
      close(resultPipe[1])
      children[child.index] = Child(pid: pid, commands: commandPipe[1], results: resultPipe[0])
      Self.warmUp(after: parent)
    }

    public func run(_ body: [WorkloadStatement], block: Int, in child: ChildID) throws(PageError)
      -> [StepResult]
    {
      guard let process = children[child.index] else { throw .invalidArgument }
      var command = Int64(block)
      guard Self.writeAll(process.commands, &command, MemoryLayout<Int64>.size) else {
        throw .badAddress
      }
      var text: [UInt8] = []
      var chunk = [UInt8](repeating: 0, count: 4096)
      while !text.ends(with: Self.terminator) {
        let count = chunk.withUnsafeMutableBytes { read(process.results, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { throw .badAddress }  // the child died
        text.append(contentsOf: chunk[0..<count])
      }
      return Self.decode(text.dropLast(Self.terminator.count))
    }

    public func exit(_ child: ChildID) throws(PageError) {
      guard let process = children.removeValue(forKey: child.index) else { throw .invalidArgument }
      var command = Int64(-1)
      _ = Self.writeAll(process.commands, &command, MemoryLayout<Int64>.size)
      close(process.commands)
      close(process.results)
      var status: Int32 = 0
      while waitpid(process.pid, &status, 0) < 0 && errno == EINTR {}
    }

    /// Populates (MADV_POPULATE_WRITE) every private writable mapping that `create` added or
    /// changed, less the heap's reservations and the workload's regions.
    public func prepareHeapTables(excluding: () -> [AddressRange], _ create: () -> Void) {
      let before = Set(ProcessQuieting.mappings().map { [$0.range.start, $0.range.end] })
      create()
      let excluded = excluding()
      let added = ProcessQuieting.mappings().filter {
        $0.writable && $0.isPrivate && !before.contains([$0.range.start, $0.range.end])
      }
      for mapping in added {
        for piece in ProcessQuieting.subtract(excluded + workloadRegions, from: mapping.range) {
          _ = madvise(
            UnsafeMutableRawPointer(bitPattern: piece.start), Int(piece.length),
            PageAdvice.populateWrite.rawValue)
        }
      }
    }

    /// The child's side: waits for block numbers, runs each block, answers with its steps; never
    /// returns (exits when told to, or when the parent goes away).
    private func serve(
      as name: String, parent: WorkloadRunner<SystemPageSpace>, commands: Int32, results: Int32
    )
      -> Never
    {
      let runner = WorkloadRunner(childOf: parent, space: parent.space, name: name)
      // Children of this child (none: the language has no nested processes) and the parent's pipes
      // to other children are not ours.
      for other in children.values {
        close(other.commands)
        close(other.results)
      }
      Self.warmUp(after: runner)
      while true {
        var command: Int64 = -1
        let count = withUnsafeMutableBytes(of: &command) {
          read(commands, $0.baseAddress, $0.count)
        }
        if count < 0 && errno == EINTR { continue }
        guard count == MemoryLayout<Int64>.size, command >= 0, let body = blocks[Int(command)]
        else { _exit(0) }
        runner.run(body)
        var text = Self.encode(runner.takeSteps())
        text.append(contentsOf: Self.terminator)
        guard Self.writeAll(results, text, text.count) else { _exit(1) }
      }
    }

    // MARK: Keeping the runner's own activity out of the windows

    /// After `fork`, the first write by either process to any page it shares with the other costs a
    /// fault — the runner's own stack, heap and globals included. That would land in the next
    /// measurement window, so before measuring again each process prefaults (and thereby copies)
    /// every page of its own mappings outside the workload's regions, rehearses the measuring code
    /// path, and recalibrates the noise floor.
    static func warmUp(after runner: WorkloadRunner<SystemPageSpace>) {
      let excluded = runner.regions.compactMap { region -> AddressRange? in
        guard let region, region.length > 0 else { return nil }
        return AddressRange(start: region.start, length: region.length)
      }
      ProcessQuieting.prefault(excluding: excluded)
      rehearse(runner)
      runner.calibrate()
    }

    /// Runs every code path a window may take (successful and failing calls, a handled SIGSEGV) on
    /// scratch pages until a round costs nothing: the stack depth, code and data they need are then
    /// present. The scratch pages are shared anonymous memory, which never merges with the
    /// workload's private mappings, and are unmapped again, leaving no hole behind.
    static func rehearse(_ runner: WorkloadRunner<SystemPageSpace>) {
      let space = runner.space
      let pageSize = space.pageSize
      guard
        let scratch = try? space.map(
          at: nil, length: 2 * pageSize, protection: .readWrite, flags: .shared)
      else { return }
      let inaccessible = scratch + pageSize
      try? space.protect(inaccessible, length: pageSize, to: .none)
      _ = space.supportsGuardMarkers  // probes once, with an mmap of its own
      for _ in 0..<8 {
        let before = space.faultCounts
        try? space.store(1, at: scratch)
        _ = try? space.load(scratch)
        _ = try? space.load(inaccessible)  // the SIGSEGV path
        try? space.store(1, at: inaccessible)
        try? space.protect(scratch, length: pageSize, to: .readWrite)
        try? space.protect(scratch + 1, length: pageSize, to: .readWrite)  // EINVAL
        try? space.advise(scratch, length: pageSize, .normal)
        try? space.advise(scratch, length: pageSize, PageAdvice(rawValue: 12345))  // EINVAL
        try? space.lock(scratch, length: pageSize)
        try? space.unlock(scratch, length: pageSize)
        try? space.lock(inaccessible, length: pageSize)  // ENOMEM
        try? space.unlock(inaccessible, length: pageSize)
        _ = try? space.map(at: nil, length: 0, protection: .readWrite, flags: [])  // EINVAL
        try? space.unmap(scratch + 1, length: pageSize)  // EINVAL
        let after = space.faultCounts
        if after - before == FaultCounts() { break }
      }
      try? space.unmap(scratch, length: 2 * pageSize)
    }

    static func threadCount() -> Int {
      let descriptor = open("/proc/self/status", O_RDONLY | O_CLOEXEC)
      guard descriptor >= 0 else { return 1 }
      defer { close(descriptor) }
      var buffer = [UInt8](repeating: 0, count: 8192)
      let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
      guard count > 0 else { return 1 }
      for line in buffer[0..<count].split(separator: UInt8(ascii: "\n"))
      where line.starts(with: "Threads:".utf8) {
        let digits = line.dropFirst(8).filter { $0 >= 0x30 && $0 <= 0x39 }
        return Int(String(decoding: digits, as: UTF8.self)) ?? 1
      }
      return 1
    }

    // MARK: The pipe protocol (one line per step, tab-separated; a terminator line ends a block)

    static let terminator = Array("\u{1}END\n".utf8)

    static func encode(_ steps: [StepResult]) -> [UInt8] {
      func clean(_ text: String) -> String {
        String(text.map { $0 == "\t" || $0 == "\n" || $0 == "\u{1f}" ? " " : $0 })
      }
      var text = ""
      for step in steps {
        text += [
          clean(step.label), clean(step.process), String(step.minorFaults),
          String(step.majorFaults),
          String(step.vmaCount), step.simulatedOnly ? "1" : "0",
          step.errors.map(clean).joined(separator: "\u{1f}"),
        ].joined(separator: "\t")
        text += "\n"
      }
      return Array(text.utf8)
    }

    static func decode(_ bytes: ArraySlice<UInt8>) -> [StepResult] {
      var steps: [StepResult] = []
      for line in bytes.split(separator: UInt8(ascii: "\n")) {
        let fields = line.split(separator: UInt8(ascii: "\t"), omittingEmptySubsequences: false).map
        {
          String(decoding: $0, as: UTF8.self)
        }
        guard fields.count == 7 else { continue }
        var step = StepResult(label: fields[0], process: fields[1])
        step.minorFaults = UInt64(fields[2]) ?? 0
        step.majorFaults = UInt64(fields[3]) ?? 0
        step.vmaCount = Int(fields[4]) ?? 0
        step.simulatedOnly = fields[5] == "1"
        step.errors = fields[6].isEmpty ? [] : fields[6].split(separator: "\u{1f}").map(String.init)
        steps.append(step)
      }
      return steps
    }

    static func writeAll(_ descriptor: Int32, _ pointer: UnsafeRawPointer, _ count: Int) -> Bool {
      var offset = 0
      while offset < count {
        let written = write(descriptor, pointer + offset, count - offset)
        if written < 0 && errno == EINTR { continue }
        guard written > 0 else { return false }
        offset += written
      }
      return true
    }
  }

  extension Array where Element == UInt8 {
    fileprivate func ends(with suffix: [UInt8]) -> Bool {
      count >= suffix.count && self[(count - suffix.count)...].elementsEqual(suffix)
    }
  }

  /// The `heappatrol faults --child` side: runs a whole workload on this process's own memory and
  /// returns its steps. Call it in a fresh, single-threaded process that does nothing else.
  public enum RealWorkloadRun {
    public static func run(_ workload: Workload) -> [StepResult] {
      let host = RealProcessHost(workload: workload)
      let runner = WorkloadRunner(space: SystemPageSpace(), symbols: workload.symbols, host: host)
      host.runner = runner
      RealProcessHost.rehearse(runner)
      ProcessQuieting.growStack()
      ProcessQuieting.prefault(excluding: [])
      ProcessQuieting.fenceHoles()
      RealProcessHost.rehearse(runner)
      runner.calibrate()
      runner.run(workload.statements)
      return runner.finish()
    }
  }
#endif
