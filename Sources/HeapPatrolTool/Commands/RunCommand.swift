import ArgumentParser
import Foundation

/// `heappatrol run -- PROGRAM [ARGS...]`
struct RunCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "run",
    abstract: "Run a program with HeapPatrol's allocator preloaded and report its heap bugs.",
    discussion: """
      The program runs with LD_PRELOAD set to libHeapPatrolPreload.so (found next to heappatrol) and its \
      own stdin, stdout and stderr. Findings from it and from every process it forks are symbolized \
      (function, file:line; Swift names demangled) and printed to stderr, followed by a one-line summary.

      Exit status: the program's own (128+N if it was killed by signal N) when there are no findings; \
      the --error-exitcode value (default 99) when there are.

      Example: heappatrol run --options quarantine_bytes=64m -- ./my-tests --filter Parser
      """)

  @OptionGroup var checking: CheckingOptions

  @Argument(help: ArgumentHelp("The program to run (put -- before it).", valueName: "program"))
  var program: String

  @Argument(
    parsing: .captureForPassthrough,
    help: ArgumentHelp("The program's arguments.", valueName: "args"))
  var arguments: [String] = []

  func run() throws {
    try exitWithStatus {
      let checked = CheckedRun(settings: checking.settings)
      return try checked.run(program: program, arguments: arguments).exitCode
    }
  }
}
