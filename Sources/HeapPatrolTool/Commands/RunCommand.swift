import ArgumentParser

// Placeholder until its issue lands: refuses clearly instead of pretending.
struct RunCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "run", abstract: "(not built yet)")
  func run() throws {
    throw ValidationError("heappatrol run is not built yet")
  }
}
