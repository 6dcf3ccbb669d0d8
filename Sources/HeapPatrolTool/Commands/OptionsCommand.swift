import ArgumentParser

// Placeholder until its issue lands: refuses clearly instead of pretending.
struct OptionsCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "options", abstract: "(not built yet)")
  func run() throws {
    throw ValidationError("heappatrol options is not built yet")
  }
}
