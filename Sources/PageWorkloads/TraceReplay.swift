import PageSimulator
import PageSpace

/// One access of a plain address trace (`R 0x7f12...` / `W 0x...`).
public struct TraceAccess: Sendable, Hashable {
  public var access: MemoryAccess
  public var address: UInt
}

/// Reads a plain address trace line by line, in chunks: memory does not grow with the trace.
/// Lines: `R ADDRESS` or `W ADDRESS` (hexadecimal with `0x`, else decimal); `#` comments and blank
/// lines are skipped. Errors carry line and column.
public struct AddressTraceReader {
  private var lexer: WorkloadLexer
  private var pending: Token?

  public init(source: any ByteSource, sourceName: String) {
    lexer = WorkloadLexer(source: source, sourceName: sourceName)
  }

  private func error(_ message: String, _ token: Token) -> WorkloadParseError {
    WorkloadParseError(
      sourceName: lexer.sourceName, location: token.location, message: message, found: token.shown)
  }

  public mutating func next() throws(WorkloadParseError) -> TraceAccess? {
    var token = try lexer.next()
    while token.kind == .separator { token = try lexer.next() }
    if token.kind == .end { return nil }
    let access: MemoryAccess
    switch (token.kind, token.text) {
    case (.word, "R"), (.word, "r"): access = .read
    case (.word, "W"), (.word, "w"): access = .write
    default: throw error("expected R or W", token)
    }
    let addressToken = try lexer.next()
    guard addressToken.kind == .number, let address = Self.parseAddress(addressToken.text) else {
      throw error("expected an address (0x7f00... or decimal)", addressToken)
    }
    let end = try lexer.next()
    guard end.kind == .separator || end.kind == .end else {
      throw error("expected the end of the line", end)
    }
    return TraceAccess(access: access, address: address)
  }

  static func parseAddress(_ text: String) -> UInt? {
    if text.hasPrefix("0x") || text.hasPrefix("0X") { return UInt(text.dropFirst(2), radix: 16) }
    return UInt(text)
  }

  /// Whether `prefix` (the start of a file) looks like an address trace rather than a workload.
  public static func looksLikeAddressTrace(_ prefix: String) -> Bool {
    for line in prefix.split(separator: "\n", omittingEmptySubsequences: true) {
      let content =
        line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
      let fields = content.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
      if fields.isEmpty { continue }
      return fields.count == 2 && ["R", "W", "r", "w"].contains(fields[0])
        && parseAddress(String(fields[1])) != nil
    }
    return false
  }
}

/// What a replay did.
public struct ReplayResult: Sendable, Hashable, Codable {
  public var policy: String
  public var frames: Int?
  public var swapSlots: Int
  public var accesses: UInt64 = 0
  public var minorFaults: UInt64 = 0
  public var majorFaults: UInt64 = 0
  public var swapIns: UInt64 = 0
  public var swapOuts: UInt64 = 0
  public var invalidAccesses: UInt64 = 0
  public var zeroPageMaps: UInt64 = 0
  public var copyOnWriteCopies: UInt64 = 0
  /// Workload operations that failed (an errno, a SIGSEGV), and the first few of them.
  public var operationErrors: UInt64 = 0
  public var firstErrors: [String] = []
  public static let keptErrors = 20
  /// Accesses that needed no fault (of any kind).
  public var hitRatio: Double {
    accesses == 0
      ? 0 : Double(accesses &- min(accesses, minorFaults &+ majorFaults)) / Double(accesses)
  }
  public var totalFaults: UInt64 { minorFaults &+ majorFaults }
}

/// Replays traces through the simulator with bounded memory.
public enum TraceReplay {
  /// Trace addresses are placed at this offset in the simulated process (low addresses such as the
  /// classic page numbers 1, 2, 3 would fall under mmap_min_addr).
  public static let addressBase: UInt = 0x10_0000_0000
  /// The unit mapped on demand around a trace address.
  public static let chunkSize: UInt = 2 << 20
  /// OPT's look-ahead: the future is handed to the simulator `window` accesses at a time, each time
  /// covering the next `2 * window` accesses, so every eviction sees at least `window` accesses ahead
  /// (exact OPT for traces up to 2 * window accesses) in bounded memory.
  public static let optWindow = 1 << 20

  public static func configuration(frames: Int?, swapSlots: Int, policy: ReplacementPolicy)
    -> MachineConfiguration
  {
    MachineConfiguration(frames: frames, swapSlots: swapSlots, policy: policy)
  }

  /// Replays a plain address trace. `makeSource` opens the trace from its start; OPT opens it twice
  /// (once to read ahead). `progress` is called every 65536 accesses with the count so far.
  public static func replayAddresses(
    makeSource: () throws(WorkloadParseError) -> any ByteSource, sourceName: String,
    frames: Int?, swapSlots: Int, policy: ReplacementPolicy, progress: ((UInt64) -> Void)? = nil
  ) throws(WorkloadParseError) -> ReplayResult {
    let machine = SimulatedMachine(
      configuration(frames: frames, swapSlots: swapSlots, policy: policy))
    let space = SimulatedPageSpace(machine: machine)
    var reader = AddressTraceReader(source: try makeSource(), sourceName: sourceName)
    var scout: AddressTraceReader? =
      policy == .optimal
      ? AddressTraceReader(source: try makeSource(), sourceName: sourceName) : nil
    var future: [UInt64] = []
    var futureBase = 0  // the access index of future[0]
    var result = ReplayResult(policy: policy.rawValue, frames: frames, swapSlots: swapSlots)
    var mappedChunks = Set<UInt>()
    var accessIndex = 0
    while let access = try reader.next() {
      let address = addressBase &+ access.address
      if var opt = scout, accessIndex % optWindow == 0 {
        // Slide the window: drop what has been replayed, read ahead to 2 * window accesses.
        future.removeFirst(accessIndex - futureBase)
        futureBase = accessIndex
        while future.count < 2 * optWindow, let ahead = try opt.next() {
          future.append(UInt64((addressBase &+ ahead.address) >> 12))
        }
        scout = opt
        machine.setFutureReferences(pages: future)
      }
      let chunk = address & ~(chunkSize - 1)
      if !mappedChunks.contains(chunk) {
        // Map on first use, as a program would have before touching (costs no fault).
        _ = try? space.map(
          at: chunk, length: chunkSize, protection: .readWrite, flags: [.fixed, .noReserve])
        mappedChunks.insert(chunk)
      }
      do throws(PageFault) {
        if access.access == .write {
          try space.store(1, at: address)
        } else {
          _ = try space.load(address)
        }
      } catch {
        result.invalidAccesses &+= 1
      }
      accessIndex += 1
      result.accesses &+= 1
      if let progress, result.accesses & 0xFFFF == 0 { progress(result.accesses) }
    }
    fill(&result, from: space.counters)
    return result
  }

  /// Replays a workload-language trace (streamed statement by statement) on a simulated machine.
  public static func replayWorkload(
    source: any ByteSource, sourceName: String, frames: Int?, swapSlots: Int,
    policy: ReplacementPolicy,
    progress: ((UInt64) -> Void)? = nil
  ) throws(WorkloadParseError) -> ReplayResult {
    let machine = SimulatedMachine(
      configuration(frames: frames, swapSlots: swapSlots, policy: policy))
    let space = SimulatedPageSpace(machine: machine)
    var parser = WorkloadParser(source: source, sourceName: sourceName)
    var runner: WorkloadRunner<SimulatedPageSpace>?
    var result = ReplayResult(policy: policy.rawValue, frames: frames, swapSlots: swapSlots)
    var statements = 0
    func drain(_ steps: [StepResult]) {
      for step in steps {
        result.operationErrors &+= UInt64(step.errors.count)
        for error in step.errors where result.firstErrors.count < ReplayResult.keptErrors {
          result.firstErrors.append(
            step.label == "(start)" ? error : "\(step.qualifiedLabel): \(error)")
        }
      }
    }
    while let statement = try parser.next() {
      // Regions are declared as the parser meets them: the runner learns their names as it goes.
      if runner == nil {
        runner = WorkloadRunner(space: space, symbols: parser.symbols, host: SimulatedProcessHost())
      }
      runner!.symbols = parser.symbols
      runner!.run(statement)
      statements += 1
      // Steps are folded into the result as the replay goes, so memory does not grow with them.
      if statements % 1024 == 0 { drain(runner!.takeSteps()) }
      if let progress { progress(runner!.accessCount) }
    }
    drain(runner?.finish() ?? [])
    result.accesses = runner?.accessCount ?? 0
    fill(&result, from: space.counters)
    return result
  }

  static func fill(_ result: inout ReplayResult, from counters: SimulatorCounters) {
    result.minorFaults = counters.minorFaults
    result.majorFaults = counters.majorFaults
    result.swapIns = counters.swapIns
    result.swapOuts = counters.swapOuts
    result.zeroPageMaps = counters.zeroPageMaps
    result.copyOnWriteCopies = counters.copyOnWriteCopies
  }
}

/// Built-in address traces for `heappatrol simulate`.
public enum BuiltinTraces {
  /// The classic reference string 1,2,3,4,1,2,5,1,2,3,4,5 (as writes to pages 1..5): FIFO takes 9
  /// faults with 3 frames and 10 with 4 (Belady's anomaly).
  public static let belady: String =
    [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5].map {
      "W 0x\(String($0 * 4096, radix: 16))"
    }.joined(separator: "\n") + "\n"

  public static let all: [String: String] = ["belady": belady]
}
