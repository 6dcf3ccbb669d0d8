import ArgumentParser

/// `heappatrol`: the checker CLI. Each subcommand lives in its own file under Commands/.
public struct HeapPatrolCommand: ParsableCommand {
  public static let configuration = CommandConfiguration(
    commandName: "heappatrol",
    abstract: "A memory-debugging allocator for Linux: catch heap bugs in any program, no recompiling.",
    subcommands: [
      RunCommand.self, SwiftTestCommand.self, DemoCommand.self, ReportCommand.self,
      OptionsCommand.self, FaultsCommand.self, SimulateCommand.self,
      TraceCommand.self, MleakCommand.self, ProfileCommand.self, MapCommand.self,
    ]
  )
  public init() {}
}
