import Foundation
import HeapPatrolTool
import Testing

/// Paths and helpers shared by the CLI tests.
enum TestSupport {
  /// The package root (this file is Tests/HeapPatrolToolTests/TestSupport.swift).
  static let packageRoot: String = {
    // Resolved, so a symlinked checkout still finds its fixtures' real paths (the ones in the DWARF).
    let file = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
    return file.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
      .path
  }()

  /// The directory of the running test bundle: `swift test` builds the package's executables and
  /// its dynamic library (libHeapPatrolPreload.so) into the same directory.
  static let productsDirectory: String = {
    let executable =
      (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    return (executable as NSString).deletingLastPathComponent
  }()

  /// A built product of this package, or a failure that says how to build it.
  static func product(_ name: String) throws -> String {
    let path = (productsDirectory as NSString).appendingPathComponent(name)
    guard FileManager.default.fileExists(atPath: path) else {
      let build = InstallLayout(directory: productsDirectory).buildCommand(
        product: productName(name))
      Issue.record("\(path) is missing: build it with `\(build)` (swift test normally builds it)")
      throw MissingProduct()
    }
    return path
  }

  struct MissingProduct: Error {}

  static func productName(_ file: String) -> String {
    file == InstallLayout.preloadLibraryName ? "HeapPatrolPreload" : file
  }

  /// A fresh temporary directory, removed by the caller.
  static func makeTemporaryDirectory(_ label: String) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent(
      "hp-\(label)-\(UUID().uuidString)"
    ).path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
  }

  /// A C compiler: the toolchain's clang, else cc.
  static var cCompiler: String? { ToolProcess.find("clang") ?? ToolProcess.find("cc") }

  /// Compiles C source into `output` with `arguments` (e.g. -g, -shared); fails the test on error.
  static func compileC(_ source: String, to output: String, arguments: [String] = []) throws {
    let compiler = try #require(cCompiler, "no C compiler (clang or cc) found")
    let sourcePath = output + ".c"
    try source.write(toFile: sourcePath, atomically: true, encoding: .utf8)
    let result = try ToolProcess.capture(
      compiler, arguments + [sourcePath, "-o", output], mergeStandardError: true)
    try #require(result.status == 0, "compiling \(sourcePath) failed:\n\(result.text)")
  }

  /// The 1-based line of the fixture source line carrying `marker` (e.g. "hp:bug double-free").
  static func markerLine(_ marker: String, in relativePath: String) throws -> Int {
    let path = (packageRoot as NSString).appendingPathComponent(relativePath)
    let text = try String(contentsOfFile: path, encoding: .utf8)
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    let matches = lines.indices.filter { lines[$0].hasSuffix("// " + marker) }
    try #require(
      matches.count == 1, "marker '\(marker)' must occur exactly once in \(relativePath)")
    return matches[0] + 1
  }

  /// The address of a symbol in an ELF file (its module offset for a PIE or shared object).
  static func symbolOffset(_ symbol: String, in binary: String) throws -> UInt64 {
    let nm = try #require(ToolProcess.find("llvm-nm") ?? ToolProcess.find("nm"), "no nm found")
    let output = try ToolProcess.capture(nm, [binary]).text
    for line in output.split(separator: "\n") {
      let fields = line.split(separator: " ")
      if fields.count == 3, fields[2] == symbol, let address = UInt64(fields[0], radix: 16) {
        return address
      }
    }
    Issue.record("symbol \(symbol) not found in \(binary)")
    throw MissingProduct()
  }
}

/// The outcome of running the `heappatrol` executable.
struct CLIRun {
  var status: Int32
  var standardOutput: String
  var standardError: String
  /// The findings of `--json`, symbolized.
  var findings: [FindingRecord]
  var seconds: Double
}

extension TestSupport {
  /// Runs the built `heappatrol` with `arguments` (a `--json` file is added), from the package root.
  static func runHeapPatrol(
    _ arguments: [String], environment extra: [String: String] = [:],
    currentDirectory: String? = nil
  ) throws -> CLIRun {
    let heappatrol = try product("heappatrol")
    let directory = try makeTemporaryDirectory("cli")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let jsonPath = (directory as NSString).appendingPathComponent("findings.jsonl")
    var fullArguments = arguments
    if let first = arguments.first, ["run", "swift-test", "report"].contains(first) {
      fullArguments.insert(contentsOf: ["--json", jsonPath], at: 1)
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: heappatrol)
    process.arguments = fullArguments
    process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory ?? packageRoot)
    var environment = ProcessInfo.processInfo.environment
    environment.merge(extra) { _, new in new }
    process.environment = environment
    let outputPath = (directory as NSString).appendingPathComponent("stdout")
    let errorPath = (directory as NSString).appendingPathComponent("stderr")
    _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
    _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
    let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
    let error = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
    process.standardOutput = output
    process.standardError = error
    process.standardInput = FileHandle.nullDevice
    let start = Date()
    try process.run()
    process.waitUntilExit()
    let seconds = Date().timeIntervalSince(start)
    try output.close()
    try error.close()
    let contents = LogReader.read(file: jsonPath)
    return CLIRun(
      status: process.terminationStatus,
      standardOutput: (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "",
      standardError: (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "",
      findings: FileManager.default.fileExists(atPath: jsonPath)
        ? contents.findings.map(\.record) : [],
      seconds: seconds)
  }
}

extension FindingRecord {
  /// The frames of a stack as the report shows them (HeapPatrol's own frames elided).
  func visible(_ stack: KeyPath<FindingRecord, [StackFrame]?>) -> [StackFrame] {
    ReportRenderer.visibleFrames(self[keyPath: stack] ?? [])
  }
}
