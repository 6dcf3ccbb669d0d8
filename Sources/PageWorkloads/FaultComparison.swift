import Foundation
import PageSimulator
import PageSpace

/// The simulated side of a workload: processes on one `SimulatedMachine`.
public final class SimulatedProcessHost: WorkloadProcessHost {
  public typealias Space = SimulatedPageSpace
  private var children: [Int: WorkloadRunner<SimulatedPageSpace>] = [:]
  /// The files mapped so far (their page caches live in the machine).
  public private(set) var files: [SimulatedFile] = []

  public init() {}

  public var runsFileMappings: Bool { true }

  /// A fresh file of `length` bytes (page `i` filled with the byte `i % 251 + 1`, so contents can be
  /// told apart), mapped from offset 0. `hot`: the whole file is in the page cache as order-0 pages
  /// (the 16-page fault-around rule of kernel-semantics §2); `cold`: nothing is cached, and the
  /// first read fault reads around it from disk (a major fault).
  public func mapFile(
    in space: SimulatedPageSpace, length: UInt, protection: PageProtection, shared: Bool,
    cache: FileCacheState
  ) throws(PageError) -> UInt {
    let pageSize = Int(space.pageSize)
    let pages = (Int(length) + pageSize - 1) / pageSize
    guard pages > 0 else { throw .invalidArgument }
    var bytes = [UInt8](repeating: 0, count: pages * pageSize)
    for page in 0..<pages { bytes[page * pageSize] = UInt8(page % 251 + 1) }
    let file = SimulatedFile(name: "workload-file-\(files.count)", bytes: bytes)
    files.append(file)
    if cache == .hot { space.machine.loadPageCache(of: file, for: space) }
    return try space.mapFile(file, length: length, protection: protection, shared: shared)
  }

  public func fork(_ child: ChildID, name: String, parent: WorkloadRunner<SimulatedPageSpace>)
    throws(PageError)
  {
    // The simulator's fork costs no fault, like the real fork outside the measured windows.
    children[child.index] = WorkloadRunner(childOf: parent, space: parent.space.fork(), name: name)
  }

  public func run(_ body: [WorkloadStatement], block: Int, in child: ChildID) throws(PageError)
    -> [StepResult]
  {
    guard let runner = children[child.index] else { throw .invalidArgument }
    runner.run(body)
    return runner.takeSteps()
  }

  public func exit(_ child: ChildID) throws(PageError) {
    guard let runner = children.removeValue(forKey: child.index) else { throw .invalidArgument }
    runner.space.exit()
  }

  /// The heap's tables are host memory, invisible to the simulated counters: nothing to prepare.
  public func prepareHeapTables(excluding: () -> [AddressRange], _ create: () -> Void) {
    create()
  }
}

/// One row of `heappatrol faults`: one step of one workload, real against simulated.
public struct FaultComparisonRow: Sendable, Hashable, Codable {
  public var workload: String
  public var step: String
  public var realMinor: UInt64?
  public var realMajor: UInt64?
  public var simMinor: UInt64
  public var simMajor: UInt64
  public var realVMAs: Int?
  public var simVMAs: Int
  public var realErrors: [String]
  public var simErrors: [String]
  /// Simulated only (file mappings): no real counts, never a mismatch.
  public var simulatedOnly: Bool
  public var match: Bool
}

/// Runs workloads on real memory (in a child process) and on the simulator, and compares them.
public enum FaultComparison {
  /// Runs a workload on a fresh simulated machine with unlimited memory (the real machine has
  /// plenty and no swap).
  public static func simulate(
    _ workload: Workload, adviseNoHugePages: Bool = TransparentHugePages.isAlways
  )
    -> [StepResult]
  {
    let space = SimulatedPageSpace(machine: SimulatedMachine(MachineConfiguration()))
    let runner = WorkloadRunner(
      space: space, symbols: workload.symbols, host: SimulatedProcessHost())
    runner.adviseNoHugePages = adviseNoHugePages
    runner.run(workload.statements)
    return runner.finish()
  }

  public struct ChildFailure: Error, CustomStringConvertible {
    public var description: String
  }

  /// Runs `executable faults --child WORKLOAD` (a fresh process) and decodes the steps it prints.
  public static func runReal(workload argument: String, executable: String) throws -> [StepResult] {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = ["faults", "--child", argument]
    // Resolve every dynamic symbol at start-up: a lazily bound first call writes its GOT page, a
    // copy-on-write fault that would land in the first window using that function.
    var environment = ProcessInfo.processInfo.environment
    environment["LD_BIND_NOW"] = "1"
    process.environment = environment
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw ChildFailure(
        description: "the real run of \(argument) failed (status \(process.terminationStatus)): "
          + String(decoding: errorData, as: UTF8.self))
    }
    let decoder = JSONDecoder()
    return try data.split(separator: UInt8(ascii: "\n")).map {
      try decoder.decode(StepResult.self, from: Data($0))
    }
  }

  /// Pairs the steps in order (both sides run the same statements, so they record the same steps).
  public static func compare(workload: String, real: [StepResult], simulated: [StepResult])
    -> [FaultComparisonRow]
  {
    var rows: [FaultComparisonRow] = []
    for index in 0..<max(real.count, simulated.count) {
      let realStep = index < real.count ? real[index] : nil
      let simStep = index < simulated.count ? simulated[index] : nil
      let simulatedOnly = (simStep?.simulatedOnly ?? false) || (realStep?.simulatedOnly ?? false)
      let labelsAgree = realStep?.qualifiedLabel == simStep?.qualifiedLabel
      var row = FaultComparisonRow(
        workload: workload, step: simStep?.qualifiedLabel ?? realStep?.qualifiedLabel ?? "?",
        realMinor: realStep?.minorFaults, realMajor: realStep?.majorFaults,
        simMinor: simStep?.minorFaults ?? 0, simMajor: simStep?.majorFaults ?? 0,
        realVMAs: realStep?.vmaCount, simVMAs: simStep?.vmaCount ?? 0,
        realErrors: realStep?.errors ?? [], simErrors: simStep?.errors ?? [],
        simulatedOnly: simulatedOnly, match: false)
      if simulatedOnly {
        row.realMinor = nil
        row.realMajor = nil
        row.realVMAs = nil
        row.match = simStep != nil
      } else {
        row.match =
          labelsAgree && row.realMinor == row.simMinor && row.realMajor == row.simMajor
          && row.realVMAs == row.simVMAs && row.realErrors == row.simErrors
      }
      rows.append(row)
    }
    return rows
  }

  /// Resolves a workload argument: a built-in name, else a file.
  public static func load(_ argument: String) throws -> Workload {
    if let entry = BuiltinWorkloads.named(argument) { return try BuiltinWorkloads.workload(entry) }
    let text = try String(contentsOfFile: argument, encoding: .utf8)
    return try Workload(name: argument, text: text)
  }

  /// The `faults --child` side: runs the workload on this process's memory and prints one JSON line
  /// per step. Output happens only after the whole run (no I/O between measurements).
  public static func runChild(_ argument: String) throws -> String {
    let workload = try load(argument)
    #if os(Linux)
      let steps = RealWorkloadRun.run(workload)
    #else
      let steps: [StepResult] = []
    #endif
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return try steps.map { String(decoding: try encoder.encode($0), as: UTF8.self) }.joined(
      separator: "\n")
  }
}
