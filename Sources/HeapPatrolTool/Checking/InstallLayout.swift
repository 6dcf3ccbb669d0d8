import Foundation

/// Where the CLI's companions live: the preload library and the fixture programs are built into the
/// same directory as the `heappatrol` executable (SwiftPM's `.build/<triple>/<configuration>/`).
public struct InstallLayout: Sendable {
  public var directory: String

  public init(directory: String) {
    self.directory = directory
  }

  /// The directory of the running executable, resolved through /proc/self/exe (so a symlinked
  /// `heappatrol` still finds its real build directory). `HEAPPATROL_HOME` overrides it.
  public static func current(environment: [String: String] = ProcessInfo.processInfo.environment)
    -> InstallLayout
  {
    if let home = environment["HEAPPATROL_HOME"], !home.isEmpty {
      return InstallLayout(directory: home)
    }
    let executable =
      (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
      ?? CommandLine.arguments[0]
    let resolved = (URL(fileURLWithPath: executable).resolvingSymlinksInPath().path as NSString)
    return InstallLayout(directory: resolved.deletingLastPathComponent)
  }

  public static let preloadLibraryName = "libHeapPatrolPreload.so"

  public var preloadLibrary: String {
    (directory as NSString).appendingPathComponent(Self.preloadLibraryName)
  }

  public func product(_ name: String) -> String {
    (directory as NSString).appendingPathComponent(name)
  }

  public func hasProduct(_ name: String) -> Bool {
    FileManager.default.isExecutableFile(atPath: product(name))
  }

  /// The `swift build` command that builds `product` into this directory: the scratch path and
  /// configuration are read back from `<scratch>/<triple>/<configuration>`.
  public func buildCommand(product: String) -> String {
    let configuration = (directory as NSString).lastPathComponent
    let scratch = ((directory as NSString).deletingLastPathComponent as NSString)
      .deletingLastPathComponent
    var command = "swift build --product \(product)"
    if configuration == "release" { command += " -c release" }
    let scratchName = (scratch as NSString).lastPathComponent
    if scratchName.hasPrefix(".build"), scratchName != ".build" {
      command += " --scratch-path \(scratchName)"
    }
    return command
  }

  /// The preload library, or an error saying exactly how to build it.
  public func requirePreloadLibrary() throws -> String {
    let path = preloadLibrary
    guard FileManager.default.fileExists(atPath: path) else {
      throw CheckError(
        """
        the preload library is missing: \(path)
          build it (in the HeapPatrol package directory) with: \(buildCommand(product: "HeapPatrolPreload"))
        """)
    }
    return path
  }
}

/// An error the CLI reports as "heappatrol: MESSAGE" and exits non-zero for.
public struct CheckError: Error, CustomStringConvertible, Sendable {
  public var message: String
  public var exitCode: Int32

  public init(_ message: String, exitCode: Int32 = 2) {
    self.message = message
    self.exitCode = exitCode
  }

  public var description: String { message }
}
