import ArgumentParser
import Foundation

/// Runs a command body that yields an exit status, turning `CheckError`s into "heappatrol: MESSAGE"
/// on stderr and their exit code.
func exitWithStatus(_ body: () throws -> Int32) throws {
  let status: Int32
  do {
    status = try body()
  } catch let error as CheckError {
    FileHandle.standardError.write(Data("heappatrol: \(error.message)\n".utf8))
    throw ExitCode(error.exitCode)
  }
  if status != 0 { throw ExitCode(status) }
}

/// The options every checking command shares.
struct CheckingOptions: ParsableArguments {
  @Option(
    name: .long,
    help: ArgumentHelp(
      "HeapPatrol options for the program, as key=value,key=value (see `heappatrol options`).",
      valueName: "options"))
  var options: String?

  @Option(
    name: .long,
    help: ArgumentHelp(
      "Also write the symbolized findings as JSON lines to FILE.", valueName: "file"))
  var json: String?

  @Option(name: .customLong("error-exitcode"), help: "The exit status when there are findings.")
  var errorExitCode: Int32 = 99

  @Flag(name: .customLong("no-leaks"), help: "Do not look for leaks at exit.")
  var noLeaks = false

  var settings: CheckSettings {
    CheckSettings(
      userOptions: options, detectLeaks: !noLeaks, errorExitCode: errorExitCode, jsonOutput: json)
  }
}

/// Writes `value` as one JSON line on standard output, keys sorted (the `--json` form of every
/// command that prints one object).
func printJSONLine<Value: Encodable>(_ value: Value) throws {
  let encoder = JSONEncoder()
  encoder.outputFormatting = [.sortedKeys]
  FileHandle.standardOutput.write(try encoder.encode(value) + Data("\n".utf8))
}
