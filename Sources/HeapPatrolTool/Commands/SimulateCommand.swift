import ArgumentParser

// Placeholder until its issue lands: refuses clearly instead of pretending.
struct SimulateCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "simulate", abstract: "(not built yet)")
  func run() throws {
    throw ValidationError("heappatrol simulate is not built yet")
  }
}
