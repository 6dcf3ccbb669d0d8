import ArgumentParser
import Foundation
import HeapPatrol
import HeapPatrolTool
import Testing

/// The CLI surface: help for every subcommand, the options table.
@Suite struct CLICommandTests {
  static let subcommands = HeapPatrolCommand.configuration.subcommands.map {
    $0.configuration.commandName ?? "?"
  }

  @Test(arguments: subcommands)
  func everySubcommandHasHelp(_ name: String) throws {
    let run = try TestSupport.runHeapPatrol([name, "--help"])
    #expect(run.status == 0)
    #expect(run.standardOutput.contains("USAGE: heappatrol \(name)"), "\(run.standardOutput)")
    #expect(run.standardOutput.contains("OVERVIEW: "))
  }

  @Test func optionsListsTheWholeTable() throws {
    let run = try TestSupport.runHeapPatrol(["options"], environment: ["COLUMNS": "100"])
    #expect(run.status == 0)
    let rows = run.standardOutput.split(separator: "\n").map(String.init)
    #expect(rows.first?.hasPrefix("NAME") == true)
    for spec in OptionsTable.all {
      let row = rows.first { $0.hasPrefix(spec.name + " ") }
      #expect(row?.contains(" \(spec.type) ") == true, "no row for \(spec.name)")
      #expect(row.map { $0.count <= 100 } == true, "row wider than COLUMNS: \(row ?? "")")
    }

    let json = try TestSupport.runHeapPatrol(["options", "--json"])
    let objects = json.standardOutput.split(separator: "\n").compactMap {
      try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: String]
    }
    #expect(objects.map { $0["name"] } == OptionsTable.all.map(\.name))
    #expect(objects.map { $0["default"] } == OptionsTable.all.map(\.defaultValue))
    #expect(objects.allSatisfy { !($0["help"] ?? "").isEmpty })
  }

  @Test func aMissingPreloadSaysHowToBuildIt() throws {
    let directory = try TestSupport.makeTemporaryDirectory("nopreload")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let run = try TestSupport.runHeapPatrol(
      ["run", "--", "true"], environment: ["HEAPPATROL_HOME": directory])
    #expect(run.status == 2)
    #expect(
      run.standardError.contains(
        "the preload library is missing: \(directory)/libHeapPatrolPreload.so"))
    #expect(run.standardError.contains("swift build --product HeapPatrolPreload"))
    let demo = try TestSupport.runHeapPatrol(["demo"], environment: ["HEAPPATROL_HOME": directory])
    #expect(
      demo.status == 2 && demo.standardError.contains("swift build --product HeapPatrolPreload"))
  }

  @Test func reportFlagsMalformedLinesAndExitsCleanWithoutFindings() throws {
    let directory = try TestSupport.makeTemporaryDirectory("badlog")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let log = (directory as NSString).appendingPathComponent("bad.jsonl")
    try "{\"heappatrol\":1,\"event\":\"exit\",\"pid\":1,\"findings\":0}\n{truncated\n"
      .write(toFile: log, atomically: true, encoding: .utf8)
    let run = try TestSupport.runHeapPatrol(["report", log])
    #expect(run.status == 0)
    #expect(
      run.standardError.contains(
        "heappatrol: skipped a malformed log line: \(log):2: not a JSON object"))
    #expect(run.standardError.hasSuffix("heappatrol: no findings\n"))

    let missing = try TestSupport.runHeapPatrol(["report", "/nonexistent.jsonl"])
    #expect(
      missing.status == 2
        && missing.standardError == "heappatrol: /nonexistent.jsonl: no such file\n")
  }
}
