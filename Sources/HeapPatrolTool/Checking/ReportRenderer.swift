import Foundation

/// Renders findings as the human report, in the same layout the preload uses for its own stderr text,
/// but with symbols, and the one-line summary.
public struct ReportRenderer: Sendable {
  /// File paths under this directory are shown relative to it.
  public var currentDirectory: String

  public init(currentDirectory: String = FileManager.default.currentDirectoryPath) {
    self.currentDirectory = currentDirectory
  }

  public static let separator = String(repeating: "=", count: 65)

  public func render(_ finding: FindingRecord) -> String {
    var lines = [Self.separator, header(finding)]
    lines += description(finding)
    if finding.kind == "leak" {
      let count = finding.count ?? 1
      let bytes = finding.bytes ?? finding.block?.size ?? 0
      lines.append(
        "  leak of \(bytes) bytes in \(count) \(count == 1 ? "block" : "blocks") allocated at:")
      lines += frameLines(finding.allocationStack ?? [])
    } else {
      if let stack = finding.accessStack, !stack.isEmpty {
        lines.append("  \(accessLabel(finding)):")
        lines += frameLines(stack)
      }
      if let stack = finding.allocationStack, !stack.isEmpty {
        lines.append("  allocated by thread \(finding.block?.thread.map(String.init) ?? "?") at:")
        lines += frameLines(stack)
      }
      if let stack = finding.freeStack, !stack.isEmpty {
        lines.append("  freed by thread \(finding.block?.freeThread.map(String.init) ?? "?") at:")
        lines += frameLines(stack)
      }
    }
    lines.append(summary(finding))
    return lines.joined(separator: "\n") + "\n"
  }

  /// `==PID==ERROR: HeapPatrol: KIND [CODE] ACCESS at ADDRESS (thread TID)`
  func header(_ finding: FindingRecord) -> String {
    var text = "==\(finding.pid.map(String.init) ?? "?")==ERROR: HeapPatrol: \(finding.kind)"
    if let code = finding.code { text += " [\(code)]" }
    if let access = finding.access { text += " \(access)" }
    if finding.kind != "leak", let address = finding.address { text += " at \(address.paddedHex)" }
    if let thread = finding.thread { text += " (thread \(thread))" }
    return text
  }

  /// Where the address lies relative to its block, and kind-specific details.
  func description(_ finding: FindingRecord) -> [String] {
    var lines: [String] = []
    if let block = finding.block, finding.kind != "leak" {
      let subject = finding.address?.paddedHex ?? "the address"
      let size = block.size.map(String.init) ?? "?"
      let api = block.api ?? "?"
      let what =
        "\(block.isFreed ? "freed block" : "block") #\(block.index.map(String.init) ?? "?")"
      let start = block.address.map { " at \($0.paddedHex)" } ?? ""
      lines.append(
        "  \(subject) is \(relationText(finding, block: block)) \(what) (\(size) bytes, \(api))\(start)"
      )
      if let freeApi = block.freeApi,
        finding.kind == "alloc-dealloc-mismatch" || finding.kind == "double-free"
      {
        lines.append(
          "  the block was allocated with \(api) and \(block.isFreed ? "freed" : "released") with \(freeApi)"
        )
      }
    } else if let message = finding.message, !message.isEmpty, finding.kind != "leak" {
      lines.append("  \(message)")
    }
    if let firstBad = finding.firstBadByte {
      var text = "  first corrupted byte at \(firstBad.paddedHex)"
      if let block = finding.block, let start = block.address?.value, let size = block.size,
        firstBad.value >= start + size
      {
        text += " (\(firstBad.value - start - size) bytes past the end)"
      }
      lines.append(text)
    }
    if finding.block == nil, let bytes = finding.bytes,
      finding.kind == "size-overflow" || finding.kind == "out-of-memory"
    {
      lines.append("  requested \(bytes) bytes")
    }
    return lines
  }

  /// "N bytes past the end of", "N bytes before the start of", "N bytes inside".
  func relationText(_ finding: FindingRecord, block: BlockRecord) -> String {
    var relation = finding.relation
    var distance = finding.distance
    if relation == nil || distance == nil, let offset = finding.offset {
      let size = Int(clamping: block.size ?? 0)
      if offset < 0 {
        relation = relation ?? "before-start"
        distance = distance ?? UInt64(-offset)
      } else if offset >= size {
        relation = relation ?? "past-end"
        distance = distance ?? UInt64(offset - size)
      } else {
        relation = relation ?? "inside"
        distance = distance ?? UInt64(offset)
      }
    }
    let bytes = distance.map(String.init) ?? "?"
    switch relation {
    case "past-end": return "\(bytes) bytes past the end of"
    case "before-start": return "\(bytes) bytes before the start of"
    default: return "\(bytes) bytes inside"
    }
  }

  func accessLabel(_ finding: FindingRecord) -> String {
    if finding.access != nil { return "accessed at" }
    switch finding.kind {
    case "double-free": return "freed again at"
    case "invalid-free", "interior-free", "alloc-dealloc-mismatch": return "released at"
    case "canary-corruption": return "detected at"
    case "size-overflow", "out-of-memory", "bad-alignment": return "requested at"
    default: return "at"
    }
  }

  // MARK: - Frames

  /// The frames worth showing: HeapPatrol's own frames (the preload, or its code linked into the
  /// program) are elided from the top, so "#0" is the first frame of the program, as in ASan.
  public static func visibleFrames(_ frames: [StackFrame]) -> [StackFrame] {
    let firstOwn = frames.firstIndex { !isHeapPatrolFrame($0) } ?? 0
    return Array(frames[firstOwn...])
  }

  static let allocatorEntryPoints: Set<String> = [
    "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
    "memalign",
    "valloc", "pvalloc", "malloc_usable_size", "cfree",
  ]

  static func isHeapPatrolFrame(_ frame: StackFrame) -> Bool {
    if let module = frame.module,
      (module as NSString).lastPathComponent.hasPrefix("libHeapPatrolPreload")
    {
      return true
    }
    guard let function = frame.function else { return false }
    // The preload linked into a program: its exports and its Swift/C internals live in the executable.
    return function.hasPrefix("heappatrol_") || function.hasPrefix("cshim_")
      || function.hasPrefix("HeapPatrol.") || function.hasPrefix("HeapPatrolPreload.")
      || function.contains("GuardedHeap") || allocatorEntryPoints.contains(function)
      || (function.hasPrefix("operator new") || function.hasPrefix("operator delete"))
        && frame.module.map { !$0.contains("libstdc++") && !$0.contains("libc++") } ?? true
  }

  func frameLines(_ frames: [StackFrame]) -> [String] {
    var lines: [String] = []
    var number = 0
    for frame in Self.visibleFrames(frames) {
      let pc = frame.pc?.paddedHex ?? "0x????????????????"
      let place = modulePlace(frame)
      if frame.isSymbolized {
        for location in frame.sourceLocations {
          lines.append("    #\(number) \(pc)\(sourceText(location)) (\(place))")
          number += 1
        }
      } else {
        lines.append("    #\(number) \(pc) (\(place))")
        number += 1
      }
    }
    return lines
  }

  func modulePlace(_ frame: StackFrame) -> String {
    "\(frame.module ?? "<unknown module>")+\(frame.offset?.hex ?? "?")"
  }

  /// " in FUNCTION FILE:LINE", each part only when known.
  func sourceText(_ location: SourceLocation) -> String {
    var text = ""
    if let function = location.function { text += " in \(function)" }
    if let file = location.file {
      text += " \(displayPath(file))" + (location.line.map { ":\($0)" } ?? "")
    }
    return text
  }

  func displayPath(_ path: String) -> String {
    let prefix = currentDirectory.hasSuffix("/") ? currentDirectory : currentDirectory + "/"
    return path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : path
  }

  /// `SUMMARY: HeapPatrol: KIND FILE:LINE in FUNCTION` from the first visible frame.
  func summary(_ finding: FindingRecord) -> String {
    var text = "SUMMARY: HeapPatrol: \(finding.kind)"
    let stack =
      finding.kind == "leak"
      ? finding.allocationStack : finding.accessStack ?? finding.allocationStack
    guard let frame = Self.visibleFrames(stack ?? []).first else { return text }
    if frame.isSymbolized {
      if let file = frame.file {
        text += " \(displayPath(file))" + (frame.line.map { ":\($0)" } ?? "")
      }
      if let function = frame.function { text += " in \(function)" }
    } else {
      text += " (\(modulePlace(frame)))"
    }
    return text
  }

  // MARK: - Summary

  /// "heappatrol: 2 findings (1 heap-buffer-overflow, 1 leak) in PROGRAM" or "heappatrol: no findings".
  public static func summaryLine(_ findings: [FindingRecord], program: String?) -> String {
    guard !findings.isEmpty else { return "heappatrol: no findings" }
    var order: [String] = []
    var counts: [String: Int] = [:]
    for finding in findings {
      if counts[finding.kind] == nil { order.append(finding.kind) }
      counts[finding.kind, default: 0] += 1
    }
    let kinds = order.map { "\(counts[$0]!) \($0)" }.joined(separator: ", ")
    let noun = findings.count == 1 ? "finding" : "findings"
    return "heappatrol: \(findings.count) \(noun) (\(kinds))" + (program.map { " in \($0)" } ?? "")
  }
}
