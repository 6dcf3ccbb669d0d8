import ArgumentParser

// Placeholder until its issue lands: refuses clearly instead of pretending.
struct ReportCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "report", abstract: "(not built yet)")
  func run() throws {
    throw ValidationError("heappatrol report is not built yet")
  }
}
