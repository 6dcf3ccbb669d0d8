import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// How a child process ended.
public enum ChildExit: Equatable, Sendable, CustomStringConvertible {
  case exited(Int32)
  case signaled(Int32)

  /// The shell's convention: the exit code, or 128 + the signal number.
  public var shellStatus: Int32 {
    switch self {
    case .exited(let code): code
    case .signaled(let signal): 128 + signal
    }
  }

  /// Decodes a `waitpid` status (the W* macros are not importable into Swift).
  public init(waitStatus status: Int32) {
    let signal = status & 0x7f
    self = signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
  }

  public var description: String {
    switch self {
    case .exited(let code): "exit status \(code)"
    case .signaled(let signal):
      "killed by signal \(signal)" + (strsignal(signal).map { " (\(String(cString: $0)))" } ?? "")
    }
  }
}

/// Spawns a program with stdin/stdout/stderr inherited and waits for it, the way `system()` does:
/// SIGINT and SIGQUIT are ignored by the waiting parent (a ^C goes to the child, and we still report).
public enum ChildProcess {
  /// The executable a program name refers to: a path as given, or the first match in PATH.
  public static func resolve(_ program: String, environment: [String: String]) throws -> String {
    if program.contains("/") {
      guard FileManager.default.fileExists(atPath: program) else {
        throw CheckError("cannot run \(program): no such file", exitCode: 127)
      }
      guard FileManager.default.isExecutableFile(atPath: program) else {
        throw CheckError("cannot run \(program): not executable", exitCode: 126)
      }
      return program
    }
    for directory in (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
      let candidate = (String(directory) as NSString).appendingPathComponent(program)
      var isDirectory: ObjCBool = false
      if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory),
        !isDirectory.boolValue,
        FileManager.default.isExecutableFile(atPath: candidate)
      {
        return candidate
      }
    }
    throw CheckError("cannot run \(program): command not found in PATH", exitCode: 127)
  }

  /// Runs `executable` with `arguments` (argv[0] is `displayName`) and `environment`; returns how it ended.
  public static func run(
    _ executable: String, arguments: [String], displayName: String? = nil,
    environment: [String: String],
    currentDirectory: String? = nil
  ) throws -> ChildExit {
    let argv = [displayName ?? executable] + arguments
    let envp = environment.map { "\($0.key)=\($0.value)" }.sorted()
    let cArguments = argv.map { strdup($0) } + [nil]
    let cEnvironment = envp.map { strdup($0) } + [nil]
    defer {
      cArguments.forEach { free($0) }
      cEnvironment.forEach { free($0) }
    }

    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var defaultSignals = sigset_t()
    sigemptyset(&defaultSignals)
    sigaddset(&defaultSignals, SIGINT)
    sigaddset(&defaultSignals, SIGQUIT)
    sigaddset(&defaultSignals, SIGPIPE)
    posix_spawnattr_setsigdefault(&attributes, &defaultSignals)
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

    var fileActions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&fileActions)
    defer { posix_spawn_file_actions_destroy(&fileActions) }
    // posix_spawn_file_actions_addchdir_np is not visible to Swift; the CLI is single-threaded here,
    // so it changes its own directory around the spawn instead.
    let previousDirectory = FileManager.default.currentDirectoryPath
    if let currentDirectory {
      guard FileManager.default.changeCurrentDirectoryPath(currentDirectory) else {
        throw CheckError("cannot change to directory \(currentDirectory)")
      }
    }
    defer {
      if currentDirectory != nil {
        _ = FileManager.default.changeCurrentDirectoryPath(previousDirectory)
      }
    }

    let oldInterrupt = signal(SIGINT, SIG_IGN)
    let oldQuit = signal(SIGQUIT, SIG_IGN)
    defer {
      signal(SIGINT, oldInterrupt)
      signal(SIGQUIT, oldQuit)
    }

    var pid: pid_t = 0
    let spawnError = posix_spawn(
      &pid, executable, &fileActions, &attributes, cArguments, cEnvironment)
    guard spawnError == 0 else {
      throw CheckError(
        "cannot run \(executable): \(String(cString: strerror(spawnError)))",
        exitCode: spawnError == ENOENT ? 127 : 126)
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
      guard errno == EINTR else {
        throw CheckError("waitpid failed: \(String(cString: strerror(errno)))")
      }
    }
    return ChildExit(waitStatus: status)
  }
}
