import ArgumentParser
import Foundation

/// `heappatrol demo`
struct DemoCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "demo",
    abstract: "Run the bundled buggy example programs under HeapPatrol and show each report.",
    discussion: """
      The example programs (hp-fixture-c, hp-fixture-cxx, hp-fixture-swift) are built with this package \
      and found next to heappatrol: `swift build && swift run heappatrol demo`. Each demo runs like \
      `heappatrol run -- PROGRAM CASE`. Exits 0 when every demo produced its expected finding.
      """)

  @Option(
    name: .long,
    help: ArgumentHelp("Run only the demos whose case or kind contains TEXT.", valueName: "text"))
  var only: String?

  func run() throws {
    try exitWithStatus {
      let layout = InstallLayout.current()
      _ = try layout.requirePreloadLibrary()
      let missing = DemoCatalog.fixturePrograms.filter { !layout.hasProduct($0) }
      if !missing.isEmpty {
        throw CheckError(
          "the example programs are missing from \(layout.directory): \(missing.joined(separator: ", "))\n"
            + "  build them (in the HeapPatrol package directory) with: swift build")
      }
      let demos = DemoCatalog.demos.filter { demo in
        only.map {
          demo.argument.contains($0) || demo.expectedKind.contains($0) || demo.program.contains($0)
        } ?? true
      }
      if demos.isEmpty { throw CheckError("no demo matches '\(only ?? "")'") }

      let symbolizer = Symbolizer.discover()
      var failures: [String] = []
      for (number, demo) in demos.enumerated() {
        let command = "\(demo.program) \(demo.argument)"
        let optionsText = demo.options.map { " --options \($0)" } ?? ""
        printError(
          "\n\u{2500}\u{2500} \(number + 1)/\(demos.count)  \(demo.expectedKind): \(demo.title)\n"
            + "$ heappatrol run\(optionsText) -- \(command)\n")
        let checked = CheckedRun(
          layout: layout, settings: CheckSettings(userOptions: demo.options), symbolizer: symbolizer
        )
        let result = try checked.run(
          program: layout.product(demo.program), arguments: [demo.argument],
          displayName: demo.program)
        if !result.findings.contains(where: { $0.kind == demo.expectedKind }) {
          failures.append(
            "\(command): expected \(demo.expectedKind), got \(ReportRenderer.summaryLine(result.findings, program: nil))"
          )
        }
      }
      printError("\n")
      if failures.isEmpty {
        let subject = demos.count == 1 ? "the demo" : "all \(demos.count) demos"
        printError(
          "heappatrol demo: \(subject) produced \(demos.count == 1 ? "its" : "their") expected finding\n"
        )
        return 0
      }
      printError(
        "heappatrol demo: \(failures.count) of \(demos.count) demos did not produce their expected finding:\n"
      )
      for failure in failures { printError("  \(failure)\n") }
      return 1
    }
  }

  private func printError(_ text: String) {
    FileHandle.standardError.write(Data(text.utf8))
  }
}
