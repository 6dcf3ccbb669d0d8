import Foundation

/// Finding and running the helper tools the CLI needs (llvm-symbolizer, addr2line, swift-demangle,
/// swift). These are ordinary short-lived processes: their output is captured, their stderr dropped.
public enum ToolProcess {
  /// The directories searched for a tool, in order: PATH, the Swift toolchain that provides `swiftc`
  /// (resolved through symlinks), the default toolchain location, /usr/bin.
  public static func searchDirectories(
    environment: [String: String] = ProcessInfo.processInfo.environment
  )
    -> [String]
  {
    var directories = (environment["PATH"] ?? "").split(separator: ":").map(String.init)
    if let swiftc = findInDirectories("swiftc", directories: directories) {
      let resolved = (swiftc as NSString).resolvingSymlinksInPath
      directories.append((resolved as NSString).deletingLastPathComponent)
    }
    directories += ["/opt/swift/usr/bin", "/usr/bin"]
    var seen = Set<String>()
    return directories.filter { !$0.isEmpty && seen.insert($0).inserted }
  }

  /// The first executable named `name` in `searchDirectories`, or nil.
  public static func find(
    _ name: String, environment: [String: String] = ProcessInfo.processInfo.environment
  )
    -> String?
  {
    findInDirectories(name, directories: searchDirectories(environment: environment))
  }

  static func findInDirectories(_ name: String, directories: [String]) -> String? {
    for directory in directories {
      let candidate = (directory as NSString).appendingPathComponent(name)
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
  }

  public struct Output: Sendable {
    public var status: Int32
    public var standardOutput: Data
    public var text: String { String(decoding: standardOutput, as: UTF8.self) }
  }

  /// Runs `executable` with `input` on its stdin (through a temporary file, so a large input can
  /// never deadlock against an unread stdout) and returns its exit status and stdout.
  public static func capture(
    _ executable: String, _ arguments: [String], input: Data = Data(),
    currentDirectory: String? = nil,
    mergeStandardError: Bool = false
  ) throws -> Output {
    let inputURL = FileManager.default.temporaryDirectory
      .appendingPathComponent("heappatrol-input-\(UUID().uuidString)")
    try input.write(to: inputURL)
    defer { try? FileManager.default.removeItem(at: inputURL) }

    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
    let inputHandle = try FileHandle(forReadingFrom: inputURL)
    defer { try? inputHandle.close() }
    process.standardInput = inputHandle
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = mergeStandardError ? pipe : FileHandle.nullDevice
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return Output(status: process.terminationStatus, standardOutput: output)
  }
}
