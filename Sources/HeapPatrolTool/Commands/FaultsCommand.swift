import ArgumentParser
import Foundation
import PageSpace
import PageWorkloads

/// `heappatrol faults`: each workload on real memory (a fresh child process) and on the simulator,
/// step by step; exits non-zero on any mismatch.
struct FaultsCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "faults",
    abstract: "Run page workloads on real memory and on the simulator and compare fault counts.",
    discussion: "A workload is a built-in name (see --list) or a file in the workload language "
      + "(docs/faults-and-simulate.md). Without arguments, every built-in workload runs.")

  @Argument(help: "Built-in workload names or workload files.")
  var workloads: [String] = []

  @Flag(help: "One JSON object per step (JSON lines).")
  var json = false

  @Flag(help: "CSV rows instead of the table.")
  var csv = false

  @Flag(help: "List the built-in workloads.")
  var list = false

  @Option(help: .hidden)
  var child: String?

  func run() throws {
    if let child {
      // The measured side: a fresh process; prints only after the whole run.
      print(try FaultComparison.runChild(child))
      return
    }
    if list {
      for entry in BuiltinWorkloads.all {
        print("\(entry.name.padding(toLength: 34, withPad: " ", startingAt: 0)) \(entry.row)")
      }
      return
    }
    let executable =
      ProcessInfo.processInfo.environment["HEAPPATROL_EXECUTABLE"]
      ?? (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
      ?? CommandLine.arguments[0]
    let names = workloads.isEmpty ? BuiltinWorkloads.all.map(\.name) : workloads
    var mismatches = 0
    if csv { print("workload,step,realMinor,realMajor,simMinor,simMajor,realVMAs,simVMAs,match") }
    for name in names {
      let workload = try FaultComparison.load(name)
      let real = try FaultComparison.runReal(workload: name, executable: executable)
      let simulated = FaultComparison.simulate(workload)
      let rows = FaultComparison.compare(workload: workload.name, real: real, simulated: simulated)
      mismatches += rows.filter { !$0.match }.count
      if json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        for row in rows { print(String(decoding: try encoder.encode(row), as: UTF8.self)) }
      } else if csv {
        for row in rows { print(FaultsTable.csvLine(row)) }
      } else {
        print(FaultsTable.render(workload: workload.name, rows: rows))
      }
    }
    if !json && !csv {
      print(mismatches == 0 ? "no mismatches" : "\(mismatches) MISMATCH(ES)")
    }
    if mismatches > 0 { throw ExitCode(1) }
  }
}

enum FaultsTable {
  static func cell(_ value: UInt64?) -> String { value.map(String.init) ?? "-" }
  static func cell(_ value: Int?) -> String { value.map(String.init) ?? "-" }

  static func render(workload: String, rows: [FaultComparisonRow]) -> String {
    let header = ["step", "real min/maj", "sim min/maj", "VMAs real/sim", ""]
    var table: [[String]] = [header]
    var notes: [String] = []
    for row in rows {
      let verdict = row.simulatedOnly ? "sim-only" : (row.match ? "match" : "MISMATCH")
      table.append([
        row.step, "\(cell(row.realMinor))/\(cell(row.realMajor))",
        "\(row.simMinor)/\(row.simMajor)",
        "\(cell(row.realVMAs))/\(row.simVMAs)", verdict,
      ])
      if row.realErrors == row.simErrors {
        notes += row.realErrors.map { "  \(row.step): \($0)" }
      } else {
        notes += row.realErrors.map { "  \(row.step): real: \($0)" }
        notes += row.simErrors.map { "  \(row.step): simulated: \($0)" }
      }
      if row.simulatedOnly {
        notes.append(
          "  \(row.step): simulated only: real counts depend on the page cache's folio layout")
      }
    }
    let widths = header.indices.map { column in table.map { $0[column].count }.max() ?? 0 }
    var text = "== \(workload)\n"
    for line in table {
      text +=
        zip(line, widths).enumerated().map { index, pair in
          index == 0
            ? pair.0.padding(toLength: pair.1, withPad: " ", startingAt: 0)
            : String(repeating: " ", count: pair.1 - pair.0.count) + pair.0
        }.joined(separator: "  ") + "\n"
    }
    if !notes.isEmpty { text += "errors and notes:\n" + notes.joined(separator: "\n") + "\n" }
    return text
  }

  static func csvLine(_ row: FaultComparisonRow) -> String {
    func quote(_ text: String) -> String {
      "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
    return [
      quote(row.workload), quote(row.step), cell(row.realMinor), cell(row.realMajor),
      String(row.simMinor),
      String(row.simMajor), cell(row.realVMAs), String(row.simVMAs),
      row.match ? "match" : "MISMATCH",
    ].joined(separator: ",")
  }
}
