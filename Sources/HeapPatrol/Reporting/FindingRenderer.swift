import PageSpace

/// Renders findings as the human text report and as JSON lines, into a `ReportBuffer`, without
/// allocating (the fault handler and the malloc path call it).
///
/// Text layout (the CLI renders the same layout with symbols):
/// ```
/// =================================================================
/// ==PID==ERROR: HeapPatrol: heap-buffer-overflow [ILLMEM] WRITE at 0x00007f2a1c3ff00d (thread TID)
///   0x00007f2a1c3ff00d is 0 bytes past the end of block #7 (13 bytes, malloc) at 0x00007f2a1c3ff000
///   accessed at:
///     #0 0x000055d0c0a011c9 (/path/to/module+0x11c9)
///   allocated by thread TID at:
///     #0 ...
///   freed by thread TID at:
///     #0 ...
/// SUMMARY: HeapPatrol: heap-buffer-overflow (/path/to/module+0x11c9)
/// ```
/// JSON: one object per line; see `renderJSON` for the fields.
public struct FindingRenderer {
  public static let schemaVersion = 1
  public static let separator: StaticString =
    "================================================================="

  /// Where stack ids are resolved; nil prints no frames.
  public var depot: StackDepot?
  /// Resolves PCs to modules; nil prints bare PCs (and JSON frames without module/offset).
  public var modules: ModuleResolver?
  public var pid: Int32

  public init(depot: StackDepot?, modules: ModuleResolver?, pid: Int32) {
    self.depot = depot
    self.modules = modules
    self.pid = pid
  }

  // MARK: Text

  public func renderText(_ finding: Finding, into out: inout ReportBuffer) {
    out.append(FindingRenderer.separator)
    out.append("\n==")
    out.append(decimal: pid)
    out.append("==ERROR: HeapPatrol: ")
    out.append(finding.kind.name)
    out.append(" [")
    out.append(finding.kind.mpatrolCode)
    out.append("] ")
    if finding.kind == .leak {
      out.append(decimal: finding.bytes)
      out.append(" bytes in ")
      out.append(decimal: finding.detail)
      out.append(finding.detail == 1 ? " block\n" : " blocks\n")
      out.append("  leak of ")
      out.append(decimal: finding.bytes)
      out.append(" bytes in ")
      out.append(decimal: finding.detail)
      out.append(finding.detail == 1 ? " block allocated" : " blocks allocated")
      if let block = finding.block {
        out.append(" (first: block #")
        out.append(decimal: block.index)
        out.append(", ")
        out.append(block.api.name)
        out.append(", thread ")
        out.append(decimal: block.allocationThread)
        out.append(")")
      }
      out.append(" at:\n")
      appendTextFrames(finding.block?.allocationStack ?? .none, into: &out)
    } else {
      if let access = finding.access {
        out.append(FindingRenderer.accessName(access))
        out.append(" ")
      }
      out.append("at ")
      out.append(address: finding.address)
      out.append(" (thread ")
      out.append(decimal: finding.thread)
      out.append(")\n  ")
      appendDescription(finding, into: &out)
      out.append("\n")
      if finding.operation != nil {
        out.append("  ")
        appendOperation(finding, into: &out)
        out.append("\n")
      }
      if finding.kind == .allocDeallocMismatch, let block = finding.block,
        let freeAPI = block.freeAPI
      {
        out.append("  allocated with ")
        out.append(block.api.name)
        out.append(", released with ")
        out.append(freeAPI.name)
        out.append("\n")
      }
      out.append("  ")
      out.append(FindingRenderer.accessStackLabel(finding.kind))
      out.append("\n")
      appendTextFrames(finding.accessStack, into: &out)
      if let block = finding.block {
        out.append("  allocated by thread ")
        out.append(decimal: block.allocationThread)
        out.append(" at:\n")
        appendTextFrames(block.allocationStack, into: &out)
        if block.state != .live {
          out.append("  freed by thread ")
          out.append(decimal: block.freeThread)
          out.append(" at:\n")
          appendTextFrames(block.freeStack, into: &out)
        }
      }
    }
    out.append("SUMMARY: HeapPatrol: ")
    out.append(finding.kind.name)
    let summaryStack =
      finding.kind == .leak ? (finding.block?.allocationStack ?? .none) : finding.accessStack
    if let pc = firstFrame(summaryStack) {
      out.append(" (")
      appendModule(pc, into: &out)
      out.append(")")
    }
    out.append("\n")
  }

  /// The heading of the stack where the finding happened, by kind.
  public static func accessStackLabel(_ kind: FindingKind) -> StaticString {
    switch kind {
    case .heapBufferOverflow, .heapBufferUnderflow, .useAfterFree, .wildAccess,
      .memoryOperationOverflow, .memcpyParamOverlap:
      "accessed at:"
    case .doubleFree, .invalidFree, .interiorFree, .allocDeallocMismatch: "released at:"
    case .canaryCorruption: "detected at:"
    case .badAlignment, .sizeOverflow, .outOfMemory: "requested at:"
    case .leak: "allocated at:"
    }
  }

  public static func accessName(_ access: MemoryAccess) -> StaticString {
    switch access {
    case .read: "READ"
    case .write: "WRITE"
    case .execute: "EXECUTE"
    }
  }

  public static func relationName(_ relation: BlockRelation) -> StaticString {
    switch relation {
    case .pastEnd: "past-end"
    case .beforeStart: "before-start"
    case .inside: "inside"
    }
  }

  public static func stateName(_ state: BlockState) -> StaticString {
    switch state {
    case .live: "live"
    case .quarantined: "quarantined"
    case .released: "released"
    }
  }

  /// The description line without indentation, e.g.
  /// `0x00007f2a1c3ff00d is 0 bytes past the end of block #7 (13 bytes, malloc) at 0x00007f2a1c3ff000`.
  public func appendDescription(_ finding: Finding, into out: inout ReportBuffer) {
    let subject =
      finding.kind == .canaryCorruption && finding.detail != 0 ? finding.detail : finding.address
    if let block = finding.block {
      if finding.kind == .canaryCorruption { out.append("first corrupted byte ") }
      out.append(address: subject)
      out.append(" is ")
      out.append(decimal: finding.distance)
      switch finding.relation {
      case .pastEnd:
        out.append(finding.distance == 1 ? " byte past the end of " : " bytes past the end of ")
      case .beforeStart:
        out.append(
          finding.distance == 1 ? " byte before the start of " : " bytes before the start of ")
      case .inside: out.append(finding.distance == 1 ? " byte inside of " : " bytes inside of ")
      }
      if block.state != .live { out.append("freed ") }
      out.append("block #")
      out.append(decimal: block.index)
      out.append(" (")
      out.append(decimal: block.size)
      out.append(block.size == 1 ? " byte, " : " bytes, ")
      out.append(block.api.name)
      out.append(") at ")
      out.append(address: block.address)
      return
    }
    out.append(address: subject)
    switch finding.kind {
    case .invalidFree:
      out.append(
        " was not allocated by HeapPatrol (not a heap block: a stack, global or foreign pointer)")
    case .wildAccess:
      out.append(" is in HeapPatrol's guarded address space but belongs to no block")
    case .sizeOverflow:
      out.append(": the requested size overflows (count x size does not fit in size_t)")
    case .outOfMemory:
      out.append(": allocation of ")
      out.append(decimal: finding.bytes)
      out.append(" bytes failed (limit, injected failure, or no address space left)")
    case .badAlignment:
      out.append(": bad alignment ")
      out.append(decimal: finding.detail)
      out.append(" for ")
      out.append(decimal: finding.bytes)
      out.append(" bytes")
    case .doubleFree, .interiorFree, .useAfterFree:
      out.append(" belongs to no block HeapPatrol still remembers")
    default:
      out.append(" is not inside any heap block")
    }
  }

  /// The memory operation a finding was made at, e.g. `operation: memcpy (WRITE of 17 bytes at
  /// 0x00007f2a1c3ff000)`, or for an overlap `operation: memcpy (17 bytes from 0x... to 0x...)`.
  public func appendOperation(_ finding: Finding, into out: inout ReportBuffer) {
    guard let operation = finding.operation else { return }
    out.append("operation: ")
    out.append(operation.name)
    out.append(" (")
    if finding.kind == .memcpyParamOverlap {
      out.append(decimal: finding.operationBytes)
      out.append(finding.operationBytes == 1 ? " byte from " : " bytes from ")
      out.append(address: finding.detail)
      out.append(" to ")
    } else {
      if let access = finding.access {
        out.append(FindingRenderer.accessName(access))
        out.append(" of ")
      }
      out.append(decimal: finding.operationBytes)
      out.append(finding.operationBytes == 1 ? " byte at " : " bytes at ")
    }
    out.append(address: finding.operationAddress)
    out.append(")")
  }

  func firstFrame(_ stack: StackID) -> UInt? {
    guard let depot, stack != .none else { return nil }
    let frames = depot.frames(of: stack)
    return frames.isEmpty ? nil : frames[0]
  }

  func appendModule(_ pc: UInt, into out: inout ReportBuffer) {
    if let modules, let resolved = modules.resolve(pc) {
      out.append(resolved.path)
      out.append("+")
      out.append(hex: resolved.offset)
    } else {
      out.append("<unknown module>")
    }
  }

  func appendTextFrames(_ stack: StackID, into out: inout ReportBuffer) {
    guard let depot, stack != .none else {
      out.append("    <no stack recorded>\n")
      return
    }
    let frames = depot.frames(of: stack)
    for (number, pc) in frames.enumerated() {
      out.append("    #")
      out.append(decimal: number)
      out.append(" ")
      out.append(address: pc)
      out.append(" (")
      appendModule(pc, into: &out)
      out.append(")\n")
    }
  }

  // MARK: JSON lines

  /// One line: `{"heappatrol":1,"kind":...,"code":...,"access":...,"address":"0x...","pid":...,
  /// "thread":...,"offset":...,"relation":...,"distance":...,"block":{...},"accessStack":[...],
  /// "allocationStack":[...],"freeStack":[...],"message":...}` plus `count`/`bytes` for leaks,
  /// `bytes` for size-overflow/out-of-memory/bad-alignment (the request), `alignment` for
  /// bad-alignment, `firstBadByte` for canary corruption, and for findings of the checked memory
  /// operations `operation` (the C function's name), `operationAddress` and `operationBytes` (the
  /// range it was about to touch; for an overlap, the destination, and `operationSource`).
  /// `access` is absent when not applicable;
  /// `offset`/`relation`/`distance`/`block` are absent without a block.
  public func renderJSON(_ finding: Finding, into out: inout ReportBuffer) {
    out.append("{\"heappatrol\":")
    out.append(decimal: FindingRenderer.schemaVersion)
    out.append(",\"kind\":\"")
    out.append(finding.kind.name)
    out.append("\",\"code\":\"")
    out.append(finding.kind.mpatrolCode)
    out.append("\"")
    if let access = finding.access {
      out.append(",\"access\":\"")
      out.append(FindingRenderer.accessName(access))
      out.append("\"")
    }
    out.append(",\"address\":")
    out.appendJSONHex(finding.address)
    out.append(",\"pid\":")
    out.append(decimal: pid)
    out.append(",\"thread\":")
    out.append(decimal: finding.thread)
    if let block = finding.block {
      out.append(",\"offset\":")
      out.append(decimal: finding.offset)
      out.append(",\"relation\":\"")
      out.append(FindingRenderer.relationName(finding.relation))
      out.append("\",\"distance\":")
      out.append(decimal: finding.distance)
      out.append(",\"block\":{\"index\":")
      out.append(decimal: block.index)
      out.append(",\"address\":")
      out.appendJSONHex(block.address)
      out.append(",\"size\":")
      out.append(decimal: block.size)
      out.append(",\"alignment\":")
      out.append(decimal: block.alignment)
      out.append(",\"api\":\"")
      out.append(block.api.name)
      out.append("\",\"state\":\"")
      out.append(FindingRenderer.stateName(block.state))
      out.append("\",\"thread\":")
      out.append(decimal: block.allocationThread)
      if let freeAPI = block.freeAPI {
        out.append(",\"freeApi\":\"")
        out.append(freeAPI.name)
        out.append("\"")
      }
      if block.state != .live || block.freeThread != 0 {
        out.append(",\"freeThread\":")
        out.append(decimal: block.freeThread)
      }
      out.append("}")
    }
    out.append(",\"accessStack\":")
    appendJSONFrames(finding.accessStack, into: &out)
    out.append(",\"allocationStack\":")
    appendJSONFrames(finding.block?.allocationStack ?? .none, into: &out)
    out.append(",\"freeStack\":")
    appendJSONFrames(finding.block?.freeStack ?? .none, into: &out)
    switch finding.kind {
    case .leak:
      out.append(",\"count\":")
      out.append(decimal: finding.detail)
      out.append(",\"bytes\":")
      out.append(decimal: finding.bytes)
    case .canaryCorruption:
      out.append(",\"firstBadByte\":")
      out.appendJSONHex(finding.detail != 0 ? finding.detail : finding.address)
    case .sizeOverflow, .outOfMemory:
      out.append(",\"bytes\":")
      out.append(decimal: finding.bytes)
    case .badAlignment:
      out.append(",\"alignment\":")
      out.append(decimal: finding.detail)
      out.append(",\"bytes\":")
      out.append(decimal: finding.bytes)
    default: break
    }
    if let operation = finding.operation {
      out.append(",\"operation\":\"")
      out.append(operation.name)
      out.append("\",\"operationAddress\":")
      out.appendJSONHex(finding.operationAddress)
      out.append(",\"operationBytes\":")
      out.append(decimal: finding.operationBytes)
      if finding.kind == .memcpyParamOverlap {
        out.append(",\"operationSource\":")
        out.appendJSONHex(finding.detail)
      }
    }
    out.append(",\"message\":\"")
    appendMessage(finding, into: &out)
    out.append("\"}\n")
  }

  /// The human one-liner of the JSON `message` field: `kind: ACCESS description` (ASCII only, so it
  /// needs no escaping).
  public func appendMessage(_ finding: Finding, into out: inout ReportBuffer) {
    out.append(finding.kind.name)
    out.append(": ")
    if finding.kind == .leak {
      out.append(decimal: finding.bytes)
      out.append(" bytes in ")
      out.append(decimal: finding.detail)
      out.append(finding.detail == 1 ? " block" : " blocks")
      if let block = finding.block {
        out.append(" (first: block #")
        out.append(decimal: block.index)
        out.append(" at ")
        out.append(address: block.address)
        out.append(")")
      }
      return
    }
    if let access = finding.access {
      out.append(FindingRenderer.accessName(access))
      out.append(" ")
    }
    appendDescription(finding, into: &out)
  }

  func appendJSONFrames(_ stack: StackID, into out: inout ReportBuffer) {
    out.append("[")
    if let depot, stack != .none {
      for (number, pc) in depot.frames(of: stack).enumerated() {
        if number > 0 { out.append(",") }
        out.append("{\"pc\":")
        out.appendJSONHex(pc)
        if let modules, let resolved = modules.resolve(pc) {
          out.append(",\"module\":\"")
          out.appendJSONEscaped(resolved.path)
          out.append("\",\"offset\":")
          out.appendJSONHex(resolved.offset)
        }
        out.append("}")
      }
    }
    out.append("]")
  }

  // MARK: Events (non-finding lines)

  /// `{"heappatrol":1,"event":"warning","pid":N,"message":"..."}`; `message` is escaped.
  public func renderWarningJSON(_ message: UnsafeBufferPointer<UInt8>, into out: inout ReportBuffer)
  {
    out.append("{\"heappatrol\":")
    out.append(decimal: FindingRenderer.schemaVersion)
    out.append(",\"event\":\"warning\",\"pid\":")
    out.append(decimal: pid)
    out.append(",\"message\":\"")
    out.appendJSONEscaped(message)
    out.append("\"}\n")
  }

  /// `==PID==WARNING: HeapPatrol: message`.
  public func renderWarningText(_ message: UnsafeBufferPointer<UInt8>, into out: inout ReportBuffer)
  {
    out.append("==")
    out.append(decimal: pid)
    out.append("==WARNING: HeapPatrol: ")
    out.append(message)
    out.append("\n")
  }

  /// `{"heappatrol":1,"event":"exit","pid":N,"findings":N}`.
  public func renderExitJSON(findings: Int, into out: inout ReportBuffer) {
    out.append("{\"heappatrol\":")
    out.append(decimal: FindingRenderer.schemaVersion)
    out.append(",\"event\":\"exit\",\"pid\":")
    out.append(decimal: pid)
    out.append(",\"findings\":")
    out.append(decimal: findings)
    out.append("}\n")
  }
}
