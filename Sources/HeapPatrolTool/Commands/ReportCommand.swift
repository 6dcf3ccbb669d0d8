import ArgumentParser
import Foundation

/// `heappatrol report FILE...`
struct ReportCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "report",
    abstract:
      "Re-render JSON-lines logs written by HeapPatrol (for example from CI), symbolizing them.",
    discussion: """
      Reads logs written with HEAPPATROL_OPTIONS=log=FILE or `heappatrol run --json FILE`. Frames that \
      are not yet symbolized are symbolized now (the modules must still exist at their recorded paths). \
      Malformed lines are reported with their file:line and skipped.

      Exit status: 0 without findings, the --error-exitcode value (default 99) with findings.
      """)

  @Argument(help: ArgumentHelp("JSON-lines log files.", valueName: "file"))
  var files: [String]

  @Option(
    name: .long,
    help: ArgumentHelp(
      "Also write the symbolized findings as JSON lines to FILE.", valueName: "file"))
  var json: String?

  @Option(name: .customLong("error-exitcode"), help: "The exit status when there are findings.")
  var errorExitCode: Int32 = 99

  func validate() throws {
    if files.isEmpty { throw ValidationError("Missing the log file(s) to render.") }
  }

  func run() throws {
    try exitWithStatus {
      var contents = LogContents()
      for file in files {
        guard FileManager.default.fileExists(atPath: file) else {
          throw CheckError("\(file): no such file")
        }
        contents.append(LogReader.read(file: file))
      }
      let checked = CheckedRun(
        settings: CheckSettings(errorExitCode: errorExitCode, jsonOutput: json))
      return try checked.report(contents, programExit: nil, program: files.joined(separator: ", "))
        .exitCode
    }
  }
}
