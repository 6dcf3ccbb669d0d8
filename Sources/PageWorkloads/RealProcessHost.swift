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

    // MARK: Warming up after fork

    /// After `fork`, the first write by either process to any page it shares with the other costs a
    /// fault — the runner's own stack, heap and globals included. That would land in the next
    /// measurement window, so before measuring again each process rewrites every resident writable
    /// private page outside the workload's regions (same value: the copy is made, nothing changes),
    /// rehearses the measuring code path on a scratch page, and recalibrates the noise floor.
    static func warmUp(after runner: WorkloadRunner<SystemPageSpace>) {
      let excluded = runner.regions.compactMap { region -> AddressRange? in
        guard let region, region.length > 0 else { return nil }
        return AddressRange(start: region.start, length: region.length)
      }
      breakCopyOnWrite(excluding: excluded)
      rehearse(runner)
      runner.calibrate()
    }

    /// Runs the measuring code path (windows around touches and a protect) on a scratch page until a
    /// round costs nothing: the stack pages and globals it uses are then private and present.
    static func rehearse(_ runner: WorkloadRunner<SystemPageSpace>) {
      let space = runner.space
      guard
        let scratch = try? space.map(
          at: nil, length: space.pageSize, protection: .readWrite, flags: [])
      else { return }
      for _ in 0..<8 {
        let before = space.faultCounts
        try? space.store(1, at: scratch)
        _ = try? space.load(scratch)
        try? space.protect(scratch, length: space.pageSize, to: .readWrite)
        // Every other call a window may make, so their code and data pages are warm too.
        try? space.advise(scratch, length: space.pageSize, .normal)
        try? space.lock(scratch, length: space.pageSize)
        try? space.unlock(scratch, length: space.pageSize)
        let after = space.faultCounts
        if after - before == FaultCounts() { break }
      }
      try? space.unmap(scratch, length: space.pageSize)
    }

    /// Rewrites (same byte) one byte of every resident page of every private writable mapping,
    /// except the workload's regions and the band of stack this function runs in.
    static func breakCopyOnWrite(excluding excluded: [AddressRange]) {
      var stackMarker: UInt8 = 0
      let stackPointer = withUnsafeMutablePointer(to: &stackMarker) { UInt(bitPattern: $0) }
      // Frames of this function and of the calls below it change while it runs: leave them alone
      // (the rehearsal makes them private).
      let busyStack = AddressRange(start: stackPointer &- 64 * 1024, end: stackPointer &+ 16 * 1024)
      let pageSize = UInt(sysconf(Int32(_SC_PAGESIZE)))
      var vector = [UInt8](repeating: 0, count: 4096)
      for mapping in writablePrivateMappings() {
        var page = mapping.start
        while page < mapping.end {
          let chunkPages = min(UInt(vector.count), (mapping.end - page) / pageSize)
          let resident = vector.withUnsafeMutableBufferPointer { buffer in
            mincore(
              UnsafeMutableRawPointer(bitPattern: page), Int(chunkPages * pageSize),
              buffer.baseAddress) == 0
          }
          if resident {
            for index in 0..<Int(chunkPages) where vector[index] & 1 != 0 {
              let address = page &+ UInt(index) &* pageSize
              if busyStack.contains(address) || excluded.contains(where: { $0.contains(address) }) {
                continue
              }
              rewriteByte(at: address)
            }
          }
          page &+= chunkPages &* pageSize
        }
      }
    }

    /// Reads and writes back one byte through the probe (a page we cannot write is skipped, not fatal).
    @inline(never)
    static func rewriteByte(at address: UInt) {
      let space = SystemPageSpace()
      guard let value = try? space.load(address) else { return }
      try? space.store(value, at: address)
    }

    /// `rw?p` lines of /proc/self/maps (no special kernel mappings).
    static func writablePrivateMappings() -> [AddressRange] {
      var result: [AddressRange] = []
      let descriptor = open("/proc/self/maps", O_RDONLY | O_CLOEXEC)
      guard descriptor >= 0 else { return result }
      defer { close(descriptor) }
      var text: [UInt8] = []
      var chunk = [UInt8](repeating: 0, count: 65536)
      while true {
        let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count <= 0 { break }
        text.append(contentsOf: chunk[0..<count])
      }
      for line in text.split(separator: UInt8(ascii: "\n")) {
        let fields = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
        guard fields.count >= 5 else { continue }
        let permissions = Array(fields[1])
        guard permissions.count == 4, permissions[1] == UInt8(ascii: "w"),
          permissions[3] == UInt8(ascii: "p")
        else { continue }
        if fields.count >= 6, fields[5].first == UInt8(ascii: "["),
          fields[5].elementsEqual("[stack]".utf8) == false,
          fields[5].elementsEqual("[heap]".utf8) == false
        {
          continue  // [vvar], [vdso], [vsyscall], [uprobes]...
        }
        let bounds = fields[0].split(separator: UInt8(ascii: "-"))
        guard bounds.count == 2,
          let start = UInt(String(decoding: bounds[0], as: UTF8.self), radix: 16),
          let end = UInt(String(decoding: bounds[1], as: UTF8.self), radix: 16)
        else { continue }
        result.append(AddressRange(start: start, end: end))
      }
      return result
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
      RealProcessHost.rehearse(runner)
      runner.calibrate()
      runner.run(workload.statements)
      return runner.finish()
    }
  }
#endif
