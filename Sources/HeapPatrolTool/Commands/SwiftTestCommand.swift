import ArgumentParser

// Placeholder until its issue lands: refuses clearly instead of pretending.
struct SwiftTestCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "swift-test", abstract: "(not built yet)")
  func run() throws {
    throw ValidationError("heappatrol swift-test is not built yet")
  }
}
