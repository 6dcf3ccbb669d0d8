import Foundation

/// What the user asked for when checking a program (shared by `run`, `swift-test`, `demo`, `report`).
public struct CheckSettings: Sendable {
  /// The user's `HEAPPATROL_OPTIONS`-style string (`key=value,key=value`).
  public var userOptions: String?
  public var detectLeaks = true
  /// The exit status when there are findings.
  public var errorExitCode: Int32 = 99
  /// Where to write the symbolized findings as JSON lines.
  public var jsonOutput: String?
  /// Leaks allocated with a frame in one of these modules (matched by file-name prefix) are not
  /// findings: `swift-test` uses it for XCTest's own objects, which it never frees before exit.
  public var leakSuppressedModules: [String] = []

  public init(
    userOptions: String? = nil, detectLeaks: Bool = true, errorExitCode: Int32 = 99,
    jsonOutput: String? = nil
  ) {
    self.userOptions = userOptions
    self.detectLeaks = detectLeaks
    self.errorExitCode = errorExitCode
    self.jsonOutput = jsonOutput
  }
}

/// The outcome of checking one program.
public struct CheckResult: Sendable {
  public var programExit: ChildExit?
  public var findings: [FindingRecord]
  public var events: [EventRecord]
  public var malformed: [MalformedLine]
  /// What `heappatrol` exits with: the program's own status without findings, the error exit code with.
  public var exitCode: Int32
}

/// Runs a program under the preload library, collects its JSON-lines reports (one file per process),
/// symbolizes them, prints the human report and summary to stderr and optionally writes JSON lines.
public final class CheckedRun {
  public let layout: InstallLayout
  public let settings: CheckSettings
  public let symbolizer: Symbolizer
  public var renderer = ReportRenderer()
  public var environment: [String: String]
  /// Where the report goes (stderr by default).
  public var write: (String) -> Void = { text in FileHandle.standardError.write(Data(text.utf8)) }

  public init(
    layout: InstallLayout = .current(), settings: CheckSettings,
    environment: [String: String] = ProcessInfo.processInfo.environment,
    symbolizer: Symbolizer? = nil
  ) {
    self.layout = layout
    self.settings = settings
    self.environment = environment
    self.symbolizer = symbolizer ?? Symbolizer.discover(environment: environment)
  }

  /// The child's `HEAPPATROL_OPTIONS`: text reports off (we render them, symbolized) unless the user
  /// turns them back on, then the user's options, then the log channel, which must stay ours.
  public static func childOptions(
    inherited: String?, user: String?, logDirectory: String, detectLeaks: Bool
  )
    -> String
  {
    var parts = ["text_report=0"]
    for given in [inherited, user] {
      if let given, !given.trimmingCharacters(in: .whitespaces).isEmpty { parts.append(given) }
    }
    parts.append("log=\(logDirectory)/%p.jsonl")
    if !detectLeaks { parts.append("detect_leaks=0") }
    return parts.joined(separator: ",")
  }

  /// `LD_PRELOAD` with our library appended to whatever the user already preloads.
  public static func childPreload(existing: String?, library: String) -> String {
    guard let existing, !existing.trimmingCharacters(in: .whitespaces).isEmpty else {
      return library
    }
    let entries = existing.split(whereSeparator: { $0 == ":" || $0 == " " }).map(String.init)
    return entries.contains(library) ? existing : existing + ":" + library
  }

  /// Runs `program` under the preload and reports. `displayName` names it in the summary.
  public func run(
    program: String, arguments: [String], displayName: String? = nil,
    currentDirectory: String? = nil
  ) throws -> CheckResult {
    let executable = try ChildProcess.resolve(program, environment: environment)
    try OptionsValidation.validate(settings.userOptions)
    let library = try layout.requirePreloadLibrary()

    let logDirectory = try Self.makeLogDirectory()
    defer { try? FileManager.default.removeItem(atPath: logDirectory) }

    var childEnvironment = environment
    childEnvironment["LD_PRELOAD"] = Self.childPreload(
      existing: environment["LD_PRELOAD"], library: library)
    // The Swift runtime the preload brings into every program installs its crash backtracer, which
    // would take SIGSEGV before HeapPatrol's fault handler and exit 0 after a crash; keep it off
    // unless the user configured it.
    if childEnvironment["SWIFT_BACKTRACE"] == nil {
      childEnvironment["SWIFT_BACKTRACE"] = "enable=no"
    }
    childEnvironment["HEAPPATROL_OPTIONS"] = Self.childOptions(
      inherited: environment["HEAPPATROL_OPTIONS"], user: settings.userOptions,
      logDirectory: logDirectory,
      detectLeaks: settings.detectLeaks)

    let exit = try ChildProcess.run(
      executable, arguments: arguments, displayName: program, environment: childEnvironment,
      currentDirectory: currentDirectory)
    let logs = (try? FileManager.default.contentsOfDirectory(atPath: logDirectory)) ?? []
    if case .exited = exit, !logs.contains(where: { $0.hasSuffix(".jsonl") }) {
      // Every process the preload runs in leaves a log when it exits (at least its exit event).
      write(
        "heappatrol: warning: \(displayName ?? program) was not checked: the preload did not run in it "
          + "(options it rejected, see above; or a statically linked or setuid program)\n")
    }
    let contents = LogReader.read(directory: logDirectory)
    return try report(contents, programExit: exit, program: displayName ?? program)
  }

  /// Symbolizes, prints and (with `--json`) writes the findings of `contents`; computes the exit code.
  public func report(_ contents: LogContents, programExit: ChildExit?, program: String?) throws
    -> CheckResult
  {
    for line in contents.malformed {
      write("heappatrol: skipped a malformed log line: \(line)\n")
    }
    for event in contents.events where event.event != "exit" {
      if let message = event.message {
        write("heappatrol: \(event.event)\(event.pid.map { " (pid \($0))" } ?? ""): \(message)\n")
      }
    }
    var findings = contents.findings.map(\.record)
    var raw = contents.findings.map(\.rawLine)
    let suppressed = findings.indices.filter { isSuppressedLeak(findings[$0]) }
    if !suppressed.isEmpty {
      let bytes = suppressed.reduce(UInt64(0)) { $0 + (findings[$1].bytes ?? 0) }
      for index in suppressed.reversed() {
        findings.remove(at: index)
        raw.remove(at: index)
      }
      write(
        "heappatrol: not reporting \(suppressed.count) leak(s) (\(bytes) bytes) allocated inside "
          + "\(settings.leakSuppressedModules.joined(separator: ", "))\n")
    }
    symbolizer.symbolize(&findings)
    for finding in findings {
      write(renderer.render(finding))
    }
    if let path = settings.jsonOutput {
      try Self.writeJSONLines(findings, raw: raw, to: path)
    }
    if let programExit, case .signaled = programExit, findings.isEmpty {
      write("heappatrol: \(program ?? "the program") was \(programExit)\n")
    }
    write(ReportRenderer.summaryLine(findings, program: program) + "\n")
    let exitCode = findings.isEmpty ? (programExit?.shellStatus ?? 0) : settings.errorExitCode
    return CheckResult(
      programExit: programExit, findings: findings, events: contents.events,
      malformed: contents.malformed,
      exitCode: exitCode)
  }

  func isSuppressedLeak(_ finding: FindingRecord) -> Bool {
    guard finding.kind == "leak", !settings.leakSuppressedModules.isEmpty else { return false }
    return (finding.allocationStack ?? []).contains { frame in
      let name = ((frame.module ?? "") as NSString).lastPathComponent
      return settings.leakSuppressedModules.contains { name.hasPrefix($0) }
    }
  }

  /// Each finding as one JSON object per line: the preload's fields as logged (unknown ones kept), with
  /// the stacks replaced by their symbolized frames (`function`, `file`, `line` added).
  public static func writeJSONLines(_ findings: [FindingRecord], raw: [Data], to path: String)
    throws
  {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    var output = Data()
    for (finding, rawLine) in zip(findings, raw) {
      var object = (try? JSONSerialization.jsonObject(with: rawLine) as? [String: Any]) ?? [:]
      let stacks: [(String, [StackFrame]?)] = [
        ("accessStack", finding.accessStack), ("allocationStack", finding.allocationStack),
        ("freeStack", finding.freeStack),
      ]
      for (key, frames) in stacks {
        guard let frames else { continue }
        object[key] = try JSONSerialization.jsonObject(with: encoder.encode(frames))
      }
      output += try JSONSerialization.data(
        withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
      output.append(UInt8(ascii: "\n"))
    }
    guard FileManager.default.createFile(atPath: path, contents: output) else {
      throw CheckError("cannot write the JSON report to \(path)")
    }
  }

  /// A fresh private directory for the child's logs. Its path goes into a comma-separated option
  /// string, so a TMPDIR containing a comma falls back to /tmp.
  static func makeLogDirectory() throws -> String {
    var base = FileManager.default.temporaryDirectory.path
    if base.contains(",") || base.contains("%") { base = "/tmp" }
    var template = Array((base as NSString).appendingPathComponent("heappatrol-XXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else {
      throw CheckError(
        "cannot create a log directory in \(base): \(String(cString: strerror(errno)))")
    }
    return String(cString: made)
  }
}
