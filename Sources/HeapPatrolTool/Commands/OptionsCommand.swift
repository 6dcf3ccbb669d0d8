import ArgumentParser
import Foundation
import HeapPatrol

/// `heappatrol options`
struct OptionsCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "options",
    abstract: "List HeapPatrol's options (HEAPPATROL_OPTIONS / --options) with their defaults.",
    discussion: """
      Options are given as key=value,key=value in HEAPPATROL_OPTIONS or `heappatrol run --options`. \
      Sizes accept k/m/g/t suffixes (powers of 1024); booleans accept 1/0, true/false, yes/no.
      """)

  @Flag(name: .long, help: "Print the table as JSON lines (name, type, default, help).")
  var json = false

  func run() throws {
    let table = OptionsTable.all
    if json {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
      for spec in table {
        let row = [
          "name": spec.name, "type": spec.type.description, "default": spec.defaultValue,
          "help": spec.help,
        ]
        print(String(decoding: try encoder.encode(row), as: UTF8.self))
      }
      return
    }
    print(Self.render(table, width: Self.terminalWidth()))
  }

  /// A table: name, type and default in columns, help wrapped to the width after them.
  static func render(_ table: [OptionSpec], width: Int) -> String {
    let nameWidth = max(4, table.map(\.name.count).max() ?? 0)
    let typeWidth = max(4, table.map(\.type.description.count).max() ?? 0)
    let defaultWidth = max(
      7, table.map { $0.defaultValue.isEmpty ? 2 : $0.defaultValue.count }.max() ?? 0)
    let helpColumn = nameWidth + typeWidth + defaultWidth + 6
    let helpWidth = max(30, width - helpColumn)
    func pad(_ text: String, _ width: Int) -> String {
      text + String(repeating: " ", count: max(0, width - text.count))
    }

    var lines = [
      pad("NAME", nameWidth) + "  " + pad("TYPE", typeWidth) + "  " + pad("DEFAULT", defaultWidth)
        + "  HELP"
    ]
    for spec in table {
      let shownDefault = spec.defaultValue.isEmpty ? "\"\"" : spec.defaultValue
      let wrapped = wrap(spec.help, width: helpWidth)
      lines.append(
        pad(spec.name, nameWidth) + "  " + pad(spec.type.description, typeWidth) + "  "
          + pad(shownDefault, defaultWidth) + "  " + (wrapped.first ?? ""))
      for continuation in wrapped.dropFirst() {
        lines.append(String(repeating: " ", count: helpColumn) + continuation)
      }
    }
    return lines.joined(separator: "\n")
  }

  static func wrap(_ text: String, width: Int) -> [String] {
    var lines: [String] = []
    var current = ""
    for word in text.split(separator: " ") {
      if !current.isEmpty, current.count + 1 + word.count > width {
        lines.append(current)
        current = ""
      }
      current += (current.isEmpty ? "" : " ") + word
    }
    if !current.isEmpty { lines.append(current) }
    return lines
  }

  static func terminalWidth() -> Int {
    if let columns = ProcessInfo.processInfo.environment["COLUMNS"].flatMap(Int.init), columns > 40
    {
      return columns
    }
    return 120
  }
}
