import Foundation

/// Out-of-process symbolization: module offsets -> function, file:line (with inlined callers), Swift
/// names demangled. Each module is symbolized by ONE tool process per batch, and every answer is cached
/// per (module, offset), so a log with thousands of frames costs a handful of processes.
public final class Symbolizer {
  public enum Backend: Equatable, Sendable, CustomStringConvertible {
    /// `llvm-symbolizer --output-style=JSON --inlines`.
    case llvmSymbolizer(path: String)
    /// GNU `addr2line -a -f -C -i`.
    case addr2line(path: String)
    /// No tool: frames stay module+offset.
    case none

    public var description: String {
      switch self {
      case .llvmSymbolizer(let path): path
      case .addr2line(let path): path
      case .none: "none"
      }
    }
  }

  public let backend: Backend
  /// `swift-demangle`, or nil to leave Swift names mangled.
  public let demangler: String?

  private struct Key: Hashable {
    var module: String
    var offset: UInt64
  }
  private var cache: [Key: [SymbolLocation]] = [:]
  private var demangled: [String: String] = [:]

  public init(backend: Backend, demangler: String?) {
    self.backend = backend
    self.demangler = demangler
  }

  /// The best tools available. `HEAPPATROL_SYMBOLIZER` overrides the choice: a path to
  /// llvm-symbolizer or addr2line, or `none`.
  public static func discover(environment: [String: String] = ProcessInfo.processInfo.environment)
    -> Symbolizer
  {
    let demangler = ToolProcess.find("swift-demangle", environment: environment)
    if let choice = environment["HEAPPATROL_SYMBOLIZER"], !choice.isEmpty {
      if choice == "none" { return Symbolizer(backend: .none, demangler: demangler) }
      let isAddr2line = (choice as NSString).lastPathComponent.contains("addr2line")
      return Symbolizer(
        backend: isAddr2line ? .addr2line(path: choice) : .llvmSymbolizer(path: choice),
        demangler: demangler)
    }
    if let path = ToolProcess.find("llvm-symbolizer", environment: environment) {
      return Symbolizer(backend: .llvmSymbolizer(path: path), demangler: demangler)
    }
    if let path = ToolProcess.find("addr2line", environment: environment) {
      return Symbolizer(backend: .addr2line(path: path), demangler: demangler)
    }
    return Symbolizer(backend: .none, demangler: demangler)
  }

  // MARK: - Findings

  /// Fills `function`, `file`, `line` (and inlined callers) into every frame that lacks them.
  ///
  /// Stack frames are return addresses, which point just past the call; the call's own line is at
  /// offset - 1 (as ASan does). The one exception is the first frame of a fault's access stack: the
  /// faulting instruction itself (the preload captures it from the signal context).
  public func symbolize(_ findings: inout [FindingRecord]) {
    var wanted: [String: Set<UInt64>] = [:]
    forEachFrame(in: &findings) { frame, lookupOffset in
      guard !frame.isSymbolized, let module = frame.module, let lookupOffset else { return }
      wanted[module, default: []].insert(lookupOffset)
    }
    for (module, offsets) in wanted.sorted(by: { $0.key < $1.key }) {
      _ = locations(module: module, offsets: offsets.sorted())
    }
    forEachFrame(in: &findings) { frame, lookupOffset in
      guard !frame.isSymbolized, let module = frame.module, let lookupOffset,
        let found = cache[Key(module: module, offset: lookupOffset)], let innermost = found.first,
        innermost.function != nil || innermost.file != nil
      else { return }
      frame.function = innermost.function
      frame.file = innermost.file
      frame.line = innermost.line
      frame.column = innermost.column
      frame.inlinedInto = found.count > 1 ? Array(found.dropFirst()) : nil
    }
  }

  /// Kinds reported from a fault, whose access stack starts at the faulting instruction. Other kinds
  /// with an access (canary damage found at free, memory operations) start at a return address.
  static let faultKinds: Set<String> = [
    "heap-buffer-overflow", "heap-buffer-underflow", "use-after-free", "wild-access",
  ]

  private func forEachFrame(
    in findings: inout [FindingRecord], _ body: (inout StackFrame, _ lookupOffset: UInt64?) -> Void
  ) {
    func visit(_ stack: inout [StackFrame]?, firstIsExact: Bool) {
      guard var frames = stack else { return }
      for index in frames.indices {
        let offset = frames[index].offset?.value
        let isReturnAddress = !(index == 0 && firstIsExact)
        let lookup = offset.map { isReturnAddress && $0 > 0 ? $0 - 1 : $0 }
        body(&frames[index], lookup)
      }
      stack = frames
    }
    for index in findings.indices {
      let isFault = findings[index].access != nil && Self.faultKinds.contains(findings[index].kind)
      visit(&findings[index].accessStack, firstIsExact: isFault)
      visit(&findings[index].allocationStack, firstIsExact: false)
      visit(&findings[index].freeStack, firstIsExact: false)
    }
  }

  // MARK: - Module offsets

  /// Source locations (innermost first; empty when unknown) for offsets in one module, looked up in
  /// one tool process for everything not cached yet.
  public func locations(module: String, offsets: [UInt64]) -> [UInt64: [SymbolLocation]] {
    let missing = Array(Set(offsets.filter { cache[Key(module: module, offset: $0)] == nil }))
      .sorted()
    if !missing.isEmpty {
      var answers: [UInt64: [SymbolLocation]] = [:]
      if FileManager.default.isReadableFile(atPath: module) {
        switch backend {
        case .llvmSymbolizer(let path):
          answers = runLLVMSymbolizer(path, module: module, offsets: missing)
        case .addr2line(let path): answers = runAddr2line(path, module: module, offsets: missing)
        case .none: break
        }
      }
      demangle(&answers)
      for offset in missing {
        cache[Key(module: module, offset: offset)] = answers[offset] ?? []
      }
    }
    var result: [UInt64: [SymbolLocation]] = [:]
    for offset in offsets { result[offset] = cache[Key(module: module, offset: offset)] ?? [] }
    return result
  }

  private func runLLVMSymbolizer(_ tool: String, module: String, offsets: [UInt64]) -> [UInt64:
    [SymbolLocation]]
  {
    let input = offsets.map { "0x" + String($0, radix: 16) }.joined(separator: "\n") + "\n"
    guard
      let output = try? ToolProcess.capture(
        tool,
        [
          "--obj=\(module)", "--output-style=JSON", "--inlines", "--functions=linkage",
          "--demangle",
        ],
        input: Data(input.utf8))
    else { return [:] }
    var answers: [UInt64: [SymbolLocation]] = [:]
    for line in output.standardOutput.split(separator: UInt8(ascii: "\n")) {
      guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
        let addressText = object["Address"] as? String, let address = HexNumber.parse(addressText),
        let symbols = object["Symbol"] as? [[String: Any]]
      else { continue }
      answers[address] = symbols.compactMap { symbol in
        let function = (symbol["FunctionName"] as? String).flatMap { $0.isEmpty ? nil : $0 }
        var file = (symbol["FileName"] as? String).flatMap { $0.isEmpty ? nil : $0 }
        let line = (symbol["Line"] as? Int).flatMap { $0 > 0 ? $0 : nil }
        let column = (symbol["Column"] as? Int).flatMap { $0 > 0 ? $0 : nil }
        // Without line tables llvm-symbolizer may name the symbol table's STT_FILE entry ("Swift.o",
        // "crtstuff.c"): an object name, not a source location.
        if line == nil, let name = file, !name.hasPrefix("/") { file = nil }
        if function == nil && file == nil { return nil }
        return SymbolLocation(function: function, file: file, line: line, column: column)
      }
    }
    return answers
  }

  private func runAddr2line(_ tool: String, module: String, offsets: [UInt64]) -> [UInt64:
    [SymbolLocation]]
  {
    let input = offsets.map { "0x" + String($0, radix: 16) }.joined(separator: "\n") + "\n"
    guard
      let output = try? ToolProcess.capture(
        tool, ["-a", "-f", "-C", "-i", "-e", module], input: Data(input.utf8))
    else { return [:] }
    return Self.parseAddr2line(output.text)
  }

  /// Parses `addr2line -a -f -i` output: per address an "0x..." line, then (function, file:line)
  /// pairs, innermost first; "??" means unknown.
  public static func parseAddr2line(_ text: String) -> [UInt64: [SymbolLocation]] {
    var answers: [UInt64: [SymbolLocation]] = [:]
    var current: UInt64?
    var pendingFunction: String?
    for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
      let line = String(rawLine)
      if line.hasPrefix("0x"), pendingFunction == nil, let address = HexNumber.parse(line) {
        current = address
        answers[address] = answers[address] ?? []
        continue
      }
      guard let address = current else { continue }
      guard let function = pendingFunction else {
        pendingFunction = line
        continue
      }
      pendingFunction = nil
      // "file:line", "file:line (discriminator 2)", "??:0", "??:?"
      var location = line
      if let space = location.range(of: " (discriminator") {
        location = String(location[..<space.lowerBound])
      }
      var file: String?
      var lineNumber: Int?
      if let colon = location.lastIndex(of: ":") {
        file = String(location[..<colon])
        lineNumber = Int(location[location.index(after: colon)...])
      } else {
        file = location
      }
      if file == "??" { file = nil }
      if lineNumber == 0 { lineNumber = nil }
      let name = function == "??" ? nil : function
      if name == nil && file == nil { continue }
      answers[address, default: []].append(
        SymbolLocation(function: name, file: file, line: lineNumber))
    }
    return answers
  }

  // MARK: - Swift demangling

  /// Whether a symbol is a mangled Swift name (Swift 5+ `$s`, Swift 4 `$S`, embedded `$e`, older `_T0`).
  public static func isMangledSwift(_ name: String) -> Bool {
    let stripped = name.hasPrefix("_$") ? String(name.dropFirst()) : name
    return stripped.hasPrefix("$s") || stripped.hasPrefix("$S") || stripped.hasPrefix("$e")
      || stripped.hasPrefix("_T0")
  }

  /// Demangles Swift names in place, all in one `swift-demangle --simplified` process.
  private func demangle(_ answers: inout [UInt64: [SymbolLocation]]) {
    let names = Set(
      answers.values.flatMap { $0.compactMap(\.function) }.filter(Self.isMangledSwift))
    let unknown = names.filter { demangled[$0] == nil }.sorted()
    if !unknown.isEmpty { demangled.merge(demangleSwift(unknown)) { old, _ in old } }
    for key in answers.keys {
      answers[key] = answers[key]!.map { location in
        var location = location
        if let name = location.function, let plain = demangled[name] { location.function = plain }
        return location
      }
    }
  }

  /// Demangled forms of Swift names; a name that cannot be demangled maps to itself.
  public func demangleSwift(_ names: [String]) -> [String: String] {
    var result: [String: String] = [:]
    for name in names { result[name] = name }
    guard let demangler, !names.isEmpty,
      let output = try? ToolProcess.capture(
        demangler, ["--simplified"], input: Data((names.joined(separator: "\n") + "\n").utf8))
    else { return result }
    let lines = output.text.split(separator: "\n", omittingEmptySubsequences: false).map(
      String.init)
    guard lines.count >= names.count else { return result }
    for (name, line) in zip(names, lines) where !line.isEmpty {
      result[name] = line
    }
    return result
  }
}
