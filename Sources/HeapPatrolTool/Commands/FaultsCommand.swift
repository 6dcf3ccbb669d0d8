import ArgumentParser

// Placeholder until its issue lands: refuses clearly instead of pretending.
struct FaultsCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "faults", abstract: "(not built yet)")
  func run() throws {
    throw ValidationError("heappatrol faults is not built yet")
  }
}
