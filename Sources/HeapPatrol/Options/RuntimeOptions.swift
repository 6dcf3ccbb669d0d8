#if canImport(Glibc)
  import Glibc
#endif

// The process-level configuration: the heap's knobs plus how findings are reported and how the
// process ends. One plain value (no String, no Array) so the preload can build it inside the first
// malloc without allocating, and a program that links HeapPatrol can build it in Swift.

/// A file path kept inline (no allocation), at most `PathBuffer.capacity` bytes.
public struct PathBuffer: Sendable, Hashable {
  public static let capacity = 512
  @usableFromInline var storage = InlineArray<512, UInt8>(repeating: 0)
  public private(set) var count = 0

  public init() {}

  /// Copies `bytes`; false (and unchanged) if they do not fit.
  @discardableResult
  public mutating func set(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    guard bytes.count <= PathBuffer.capacity else { return false }
    withUnsafeMutableBytes(of: &storage) { raw in
      for index in 0..<bytes.count { raw[index] = bytes[index] }
    }
    count = bytes.count
    return true
  }

  public var isEmpty: Bool { count == 0 }

  /// Calls `body` with the path's bytes.
  public func withBytes<R>(_ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
    withUnsafeBytes(of: storage) { raw in
      body(
        UnsafeBufferPointer(
          start: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), count: count))
    }
  }

  public static func == (lhs: PathBuffer, rhs: PathBuffer) -> Bool {
    lhs.count == rhs.count
      && lhs.withBytes { left in rhs.withBytes { right in left.elementsEqual(right) } }
  }

  public func hash(into hasher: inout Hasher) {
    withBytes { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
  }

  /// Whether the path holds the `%p` placeholder (each process after a fork writes a file of its own).
  public var hasPIDPlaceholder: Bool {
    withBytes { bytes in
      var index = 0
      while index + 1 < bytes.count {
        if bytes[index] == UInt8(ascii: "%") && bytes[index + 1] == UInt8(ascii: "p") {
          return true
        }
        index += 1
      }
      return false
    }
  }

  /// The path as a String (allocates: not for the malloc path).
  public var string: String { withBytes { String(decoding: $0, as: UTF8.self) } }
}

/// Everything `HEAPPATROL_OPTIONS` can set. `RuntimeOptions()` is the default of every option (the
/// `defaultValue` column of `OptionsTable`).
public struct RuntimeOptions: Sendable, Hashable {
  /// The guarded heap's configuration. One difference from `HeapConfiguration()`: blocks are
  /// 16-byte aligned (glibc's guarantee) unless `align=` says otherwise. The natural policy ends more
  /// odd-sized blocks exactly at their guard, but real programs assume malloc's 16 bytes: CPython
  /// dies at start-up ("error reading frozen getpath.py") under `align=natural` (measured).
  public var heap: HeapConfiguration = {
    var configuration = HeapConfiguration()
    configuration.alignment = .fixed(16)
    return configuration
  }()

  /// JSON lines go to this file (appended; `%p` is replaced by the pid when it is opened).
  public var logPath = PathBuffer()
  /// JSON lines go to this descriptor (-1 = none).
  public var logFD: Int32 = -1
  /// Human-readable reports on stderr.
  public var textReport = true
  /// Unreachable blocks at exit are reported as leaks.
  public var detectLeaks = true
  /// Reachable blocks at exit are listed too.
  public var showReachable = false
  /// Canaries of all live blocks are checked at exit.
  public var checkOnExit = true
  /// After a bad access: 0 re-raises the signal with its default action; N exits with status N.
  public var fatalExitCode: Int32 = 0
  /// After a non-fatal finding (bad free, mismatch, canary corruption): end the process too.
  /// Default false, as mpatrol: the bad free is ignored (never reused), so continuing is safe, and
  /// the program's later bugs are still seen. AddressSanitizer aborts instead (halt_on_error=1).
  public var haltOnError = false
  /// Exit status when leaks were reported (0 = keep the program's own status).
  public var leakExitCode: Int32 = 0
  /// calloc/reallocarray size overflow is reported as a size-overflow finding (it always fails).
  public var reportSizeOverflow = false
  /// A failed allocation is reported as an out-of-memory finding.
  public var reportOutOfMemory = true
  /// Frames kept per stack (1...StackDepot.maximumDepth).
  public var stackDepth = 32
  /// Guard 1 in `sample` allocations (`sample=N`); the others go to glibc. 1 = guard every allocation.
  public var sample = 1
  /// Seed of the sampling draws (`sample_seed`); 0 = a fresh choice each run.
  public var sampleSeed: UInt64 = 0
  /// Print the effective configuration at start.
  public var verbose = false
  /// memcpy, strcpy & co. are checked against heap block bounds before they run (preload only).
  public var checkMemoryOperations = true
  /// Every allocation event is recorded in this binary file (`%p` = pid); empty = no trace.
  public var tracePath = PathBuffer()

  public init() {}

  /// The options in `text` (`key=value,key=value`) applied over the defaults.
  public init(parsing text: String) throws(OptionsError) {
    self.init()
    var copy = text
    let result: OptionsError? = copy.withUTF8 { bytes in
      do throws(OptionsError) {
        try self.apply(bytes)
        return nil
      } catch {
        return error
      }
    }
    if let result { throw result }
  }

  /// The defaults with `HEAPPATROL_OPTIONS` applied (for programs that link HeapPatrol and want the
  /// same environment control as the preload, with the error thrown instead of exiting).
  public static func fromEnvironment() throws(OptionsError) -> RuntimeOptions {
    var options = RuntimeOptions()
    if let text = getenv("HEAPPATROL_OPTIONS") { try options.apply(cString: text) }
    return options
  }

  /// The log path as a String (allocates).
  public var logPathString: String {
    get { logPath.string }
    set {
      var copy = newValue
      _ = copy.withUTF8 { logPath.set($0) }
    }
  }
}
