import Foundation

// A Codable mirror of the JSON lines the preload writes (schema version 1). Written from the schema's
// description, not shared with the preload, and deliberately liberal: every field is optional except a
// finding's `kind`, unknown fields are ignored, and numbers may arrive as hex strings or integers.

/// An unsigned number written either as a "0x..." hex string, a decimal string, or a JSON integer.
public struct HexNumber: Codable, Hashable, Sendable, Comparable, CustomStringConvertible {
  public var value: UInt64

  public init(_ value: UInt64) { self.value = value }

  public init(from decoder: any Decoder) throws {
    let container = try decoder.singleValueContainer()
    if let number = try? container.decode(UInt64.self) {
      value = number
      return
    }
    let text = try container.decode(String.self)
    guard let parsed = HexNumber.parse(text) else {
      throw DecodingError.dataCorruptedError(
        in: container, debugDescription: "'\(text)' is not a hex or decimal number")
    }
    value = parsed
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(hex)
  }

  /// Parses "0x1f", "0X1F" or "31".
  public static func parse(_ text: String) -> UInt64? {
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    if trimmed.hasPrefix("0x") || trimmed.hasPrefix("0X") {
      return UInt64(trimmed.dropFirst(2), radix: 16)
    }
    return UInt64(trimmed, radix: 10)
  }

  /// "0x1f": the short form symbolizers take.
  public var hex: String { "0x" + String(value, radix: 16) }

  /// "0x00007f2a1c3ff00d": the fixed-width form reports use for addresses.
  public var paddedHex: String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 16 - digits.count)) + digits
  }

  public var description: String { hex }
  public static func < (lhs: HexNumber, rhs: HexNumber) -> Bool { lhs.value < rhs.value }
}

/// One source location a frame maps to (several for inlined code).
public struct SymbolLocation: Codable, Hashable, Sendable {
  public var function: String?
  public var file: String?
  public var line: Int?
  public var column: Int?

  public init(function: String? = nil, file: String? = nil, line: Int? = nil, column: Int? = nil) {
    self.function = function
    self.file = file
    self.line = line
    self.column = column
  }
}

/// One stack frame: where the preload saw it (pc, module, module offset) and, once symbolized, what
/// source it is. `inlinedInto` lists the callers that were inlined at this pc, innermost first.
public struct StackFrame: Codable, Hashable, Sendable {
  public var pc: HexNumber?
  public var module: String?
  public var offset: HexNumber?
  public var function: String?
  public var file: String?
  public var line: Int?
  public var column: Int?
  public var inlinedInto: [SymbolLocation]?

  public init(
    pc: HexNumber? = nil, module: String? = nil, offset: HexNumber? = nil, function: String? = nil,
    file: String? = nil, line: Int? = nil, column: Int? = nil, inlinedInto: [SymbolLocation]? = nil
  ) {
    self.pc = pc
    self.module = module
    self.offset = offset
    self.function = function
    self.file = file
    self.line = line
    self.column = column
    self.inlinedInto = inlinedInto
  }

  public var isSymbolized: Bool { function != nil || file != nil }

  /// The innermost source location, then the callers inlined into it.
  public var symbolLocations: [SymbolLocation] {
    [SymbolLocation(function: function, file: file, line: line, column: column)]
      + (inlinedInto ?? [])
  }
}

/// The block a finding concerns, as the preload's block table had it.
public struct BlockRecord: Codable, Hashable, Sendable {
  public var index: UInt64?
  public var address: HexNumber?
  public var size: UInt64?
  public var alignment: UInt64?
  public var api: String?
  public var state: String?
  public var thread: Int?
  public var freeApi: String?
  public var freeThread: Int?

  public init(
    index: UInt64? = nil, address: HexNumber? = nil, size: UInt64? = nil, alignment: UInt64? = nil,
    api: String? = nil, state: String? = nil, thread: Int? = nil, freeApi: String? = nil,
    freeThread: Int? = nil
  ) {
    self.index = index
    self.address = address
    self.size = size
    self.alignment = alignment
    self.api = api
    self.state = state
    self.thread = thread
    self.freeApi = freeApi
    self.freeThread = freeThread
  }

  /// Freed blocks are reported as "freed block #N".
  public var isFreed: Bool { state == "quarantined" || state == "released" }
}

/// One finding line of the log.
public struct FindingRecord: Codable, Hashable, Sendable {
  public var heappatrol: Int?
  public var kind: String
  public var code: String?
  public var access: String?
  public var address: HexNumber?
  public var pid: Int?
  public var thread: Int?
  public var offset: Int?
  public var relation: String?
  public var distance: UInt64?
  public var block: BlockRecord?
  public var accessStack: [StackFrame]?
  public var allocationStack: [StackFrame]?
  public var freeStack: [StackFrame]?
  public var message: String?
  public var count: UInt64?
  public var bytes: UInt64?
  public var firstBadByte: HexNumber?
  /// Findings of the checked memory operations: the C function (e.g. "memcpy") and the range it was
  /// about to touch; for memcpy-param-overlap the destination, with the source in `operationSource`.
  public var operation: String?
  public var operationAddress: HexNumber?
  public var operationBytes: UInt64?
  public var operationSource: HexNumber?

  public init(kind: String) { self.kind = kind }

  /// Every stack of the finding, for symbolization.
  public var allStacks: [[StackFrame]] {
    [accessStack, allocationStack, freeStack].compactMap { $0 }
  }
}

/// A non-finding line: `{"heappatrol":1,"event":"exit","pid":..,"findings":N}`, warnings, errors.
public struct EventRecord: Codable, Hashable, Sendable {
  public var heappatrol: Int?
  public var event: String
  public var pid: Int?
  public var message: String?
  public var findings: Int?
}

/// A line that could not be understood, kept so the user learns which file and line it was.
public struct MalformedLine: Hashable, Sendable, CustomStringConvertible {
  public var file: String
  public var line: Int
  public var reason: String

  public var description: String { "\(file):\(line): \(reason)" }
}

/// A finding together with where it came from and its raw JSON (so `--json` keeps unknown fields).
public struct LoggedFinding: Sendable {
  public var record: FindingRecord
  public var rawLine: Data
  public var file: String
  public var line: Int
}

/// Everything read from a set of logs.
public struct LogContents: Sendable {
  public var findings: [LoggedFinding] = []
  public var events: [EventRecord] = []
  public var malformed: [MalformedLine] = []

  public init() {}

  public mutating func append(_ other: LogContents) {
    findings += other.findings
    events += other.events
    malformed += other.malformed
  }
}
