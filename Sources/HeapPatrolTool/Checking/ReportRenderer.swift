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
    if finding.kind == "leak" {
      var text = "  leak of \(leakSize(finding)) allocated"
      if let block = finding.block {
        text += " (first: block #\(block.index.map(String.init) ?? "?"), \(block.api ?? "?")"
        text += ", thread \(block.thread.map(String.init) ?? "?"))"
      }
      lines.append(text + " at:")
      lines += frameLines(finding.allocationStack ?? [])
    } else {
      lines += description(finding)
      if let operation = operationLine(finding) { lines.append("  " + operation) }
      lines.append("  \(Self.accessStackLabel(finding.kind))")
      lines += frameLines(finding.accessStack ?? [])
      if let block = finding.block {
        lines.append("  allocated by thread \(block.thread.map(String.init) ?? "?") at:")
        lines += frameLines(finding.allocationStack ?? [])
        if block.state != "live" {
          lines.append("  freed by thread \(block.freeThread.map(String.init) ?? "?") at:")
          lines += frameLines(finding.freeStack ?? [])
        }
      }
    }
    lines.append(summary(finding))
    return lines.joined(separator: "\n") + "\n"
  }

  /// "N bytes in K blocks".
  func leakSize(_ finding: FindingRecord) -> String {
    let count = finding.count ?? 1
    let bytes = finding.bytes ?? finding.block?.size ?? 0
    return
      "\(bytes) \(bytes == 1 ? "byte" : "bytes") in \(count) \(count == 1 ? "block" : "blocks")"
  }

  /// `==PID==ERROR: HeapPatrol: KIND [CODE] ACCESS at ADDRESS (thread TID)`, for leaks
  /// `==PID==ERROR: HeapPatrol: leak [SHOWUNFREED] N bytes in K blocks`.
  func header(_ finding: FindingRecord) -> String {
    var text = "==\(finding.pid.map(String.init) ?? "?")==ERROR: HeapPatrol: \(finding.kind)"
    if let code = finding.code { text += " [\(code)]" }
    if finding.kind == "leak" { return text + " " + leakSize(finding) }
    if let access = finding.access { text += " \(access)" }
    if let address = finding.address { text += " at \(address.paddedHex)" }
    if let thread = finding.thread { text += " (thread \(thread))" }
    return text
  }

  /// Where the address lies relative to its block (or what is wrong without one).
  func description(_ finding: FindingRecord) -> [String] {
    var lines: [String] = []
    if let block = finding.block {
      let isCanary = finding.kind == "canary-corruption" && finding.firstBadByte != nil
      let subject = (isCanary ? finding.firstBadByte : finding.address)?.paddedHex ?? "the address"
      let size = block.size.map { "\($0) \($0 == 1 ? "byte" : "bytes")" } ?? "? bytes"
      let what =
        "\(block.isFreed ? "freed block" : "block") #\(block.index.map(String.init) ?? "?")"
      let start = block.address.map { " at \($0.paddedHex)" } ?? ""
      lines.append(
        "  \(isCanary ? "first corrupted byte " : "")\(subject) is \(relationText(finding, block: block)) "
          + "\(what) (\(size), \(block.api ?? "?"))\(start)")
      if finding.kind == "alloc-dealloc-mismatch", let freeApi = block.freeApi {
        lines.append("  allocated with \(block.api ?? "?"), released with \(freeApi)")
      }
    } else if let message = finding.message, !message.isEmpty {
      // The preload's message is "kind: [ACCESS ]description"; the header already says both.
      var text = Substring(message)
      if text.hasPrefix(finding.kind + ": ") { text = text.dropFirst(finding.kind.count + 2) }
      if let access = finding.access, text.hasPrefix(access + " ") {
        text = text.dropFirst(access.count + 1)
      }
      lines.append("  \(text)")
    } else if let address = finding.address {
      lines.append("  \(address.paddedHex) is not inside any heap block")
    }
    return lines
  }

  /// `operation: memcpy (WRITE of 17 bytes at 0x...)`, for an overlap `operation: memcpy (17 bytes
  /// from 0x... to 0x...)`: the preload's line for findings of the checked memory operations.
  func operationLine(_ finding: FindingRecord) -> String? {
    guard let operation = finding.operation else { return nil }
    let bytes = finding.operationBytes.map { "\($0) \($0 == 1 ? "byte" : "bytes")" } ?? "? bytes"
    let address = finding.operationAddress?.paddedHex ?? "?"
    if finding.kind == "memcpy-param-overlap" {
      return
        "operation: \(operation) (\(bytes) from \(finding.operationSource?.paddedHex ?? "?") to \(address))"
    }
    let access = finding.access.map { "\($0) of " } ?? ""
    return "operation: \(operation) (\(access)\(bytes) at \(address))"
  }

  /// "N bytes past the end of", "N bytes before the start of", "N bytes inside of".
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
    let bytes = distance.map { "\($0) \($0 == 1 ? "byte" : "bytes")" } ?? "? bytes"
    switch relation {
    case "past-end": return "\(bytes) past the end of"
    case "before-start": return "\(bytes) before the start of"
    default: return "\(bytes) inside of"
    }
  }

  /// The heading of the stack where the finding happened (the preload's own labels).
  static func accessStackLabel(_ kind: String) -> String {
    switch kind {
    case "double-free", "invalid-free", "interior-free", "alloc-dealloc-mismatch": "released at:"
    case "canary-corruption": "detected at:"
    case "bad-alignment", "size-overflow", "out-of-memory": "requested at:"
    case "leak": "allocated at:"
    default: "accessed at:"
    }
  }

  // MARK: - Frames

  /// The frames worth showing: HeapPatrol's own frames (the preload, or its code linked into the
  /// program) and the Swift runtime's allocation entry points are elided from the top, so "#0" is the
  /// first frame of the program, as in ASan.
  public static func visibleFrames(_ frames: [StackFrame]) -> [StackFrame] {
    let firstOwn = frames.firstIndex { !isHeapPatrolFrame($0) } ?? 0
    return Array(frames[firstOwn...])
  }

  static let allocatorEntryPoints: Set<String> = [
    "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
    "memalign",
    "valloc", "pvalloc", "malloc_usable_size", "cfree",
  ]

  /// The Swift runtime's own allocation entry points: like libc's malloc they only forward the
  /// program's request, so the frame that matters is the one that called them.
  static let swiftRuntimeAllocators: Set<String> = [
    "swift_slowAlloc", "swift_slowDealloc", "swift_allocObject", "swift_deallocObject",
    "swift_deallocClassInstance", "swift_deallocUninitializedObject", "swift_slowAllocTyped",
  ]

  static func isHeapPatrolFrame(_ frame: StackFrame) -> Bool {
    if let module = frame.module,
      (module as NSString).lastPathComponent.hasPrefix("libHeapPatrolPreload")
    {
      return true
    }
    guard let function = frame.function else { return false }
    if swiftRuntimeAllocators.contains(function) { return true }
    // The preload linked into a program: its exports and its Swift/C internals live in the executable.
    return function.hasPrefix("heappatrol_") || function.hasPrefix("cshim_")
      || function.hasPrefix("HeapPatrol.") || function.hasPrefix("HeapPatrolPreload.")
      || function.contains("GuardedHeap") || allocatorEntryPoints.contains(function)
      || (function.hasPrefix("operator new") || function.hasPrefix("operator delete"))
        && frame.module.map { !$0.contains("libstdc++") && !$0.contains("libc++") } ?? true
  }

  func frameLines(_ frames: [StackFrame]) -> [String] {
    if frames.isEmpty { return ["    <no stack recorded>"] }
    var lines: [String] = []
    var number = 0
    for frame in Self.visibleFrames(frames) {
      let pc = frame.pc?.paddedHex ?? "0x????????????????"
      let place = modulePlace(frame)
      if frame.isSymbolized {
        for location in frame.symbolLocations {
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
  func sourceText(_ location: SymbolLocation) -> String {
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
