import ArgumentParser

// Placeholder until its issue lands: refuses clearly instead of pretending.
struct DemoCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "demo", abstract: "(not built yet)")
  func run() throws {
    throw ValidationError("heappatrol demo is not built yet")
  }
}
