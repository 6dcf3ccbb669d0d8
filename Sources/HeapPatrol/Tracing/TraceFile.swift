// The reader of `trace=` files (the format is described in AllocationTrace.swift). A trace cut short
// (the program was killed while a record was being written) reads up to its last whole record.

/// One allocation event of a trace.
public struct TraceEvent: Sendable, Hashable {
  public enum Kind: Sendable, Hashable { case allocation, free, reallocation }
  public var kind: Kind
  public var api: AllocationAPI
  public var thread: Int32
  /// 1 for the process's first traced event.
  public var index: UInt64
  /// Nanoseconds since the trace started.
  public var time: UInt64
  /// The block (0: the allocation failed; for a free: the pointer freed).
  public var address: UInt64
  public var size: UInt64
  public var alignment: UInt64
  /// realloc's argument.
  public var oldAddress: UInt64
  public var stack: UInt32

  public init(
    kind: Kind, api: AllocationAPI, thread: Int32, index: UInt64, time: UInt64, address: UInt64,
    size: UInt64, alignment: UInt64 = 0, oldAddress: UInt64 = 0, stack: UInt32 = 0
  ) {
    self.kind = kind
    self.api = api
    self.thread = thread
    self.index = index
    self.time = time
    self.address = address
    self.size = size
    self.alignment = alignment
    self.oldAddress = oldAddress
    self.stack = stack
  }
}

/// A frame of a traced stack: an offset in a module (for the symbolizer), or a raw pc.
public struct TraceFrame: Sendable, Hashable {
  /// Index into `TraceFile.modules`, nil when no module mapped the pc.
  public var module: Int?
  public var offset: UInt64
}

/// A whole trace in memory.
public struct TraceFile: Sendable {
  public var pid: Int32
  public var pageSize: UInt64
  public var events: [TraceEvent] = []
  public var stacks: [UInt32: [TraceFrame]] = [:]
  public var modules: [Int: String] = [:]
  /// Bytes at the end that did not form a whole record (a cut-off write).
  public var trailingBytes = 0

  public enum ReadError: Error, CustomStringConvertible {
    case notATrace
    case unsupportedVersion(UInt32)
    case badRecord(type: UInt8, offset: Int)

    public var description: String {
      switch self {
      case .notATrace: "not a HeapPatrol trace (no HPTRACE1 header)"
      case .unsupportedVersion(let version): "unsupported trace version \(version)"
      case .badRecord(let type, let offset): "unknown record type \(type) at byte \(offset)"
      }
    }
  }

  public init(bytes: [UInt8]) throws(ReadError) {
    guard bytes.count >= 32, Array(bytes[0..<8]) == Array("HPTRACE1".utf8) else {
      throw .notATrace
    }
    func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 }
    func u32(_ at: Int) -> UInt32 {
      var value: UInt32 = 0
      for index in 0..<4 { value |= UInt32(bytes[at + index]) << (8 * index) }
      return value
    }
    func u64(_ at: Int) -> UInt64 {
      var value: UInt64 = 0
      for index in 0..<8 { value |= UInt64(bytes[at + index]) << (8 * index) }
      return value
    }
    let version = u32(8)
    guard version == AllocationTrace.version else { throw .unsupportedVersion(version) }
    pid = Int32(bitPattern: u32(12))
    pageSize = u64(24)
    var offset = 32
    loop: while offset < bytes.count {
      let remaining = bytes.count - offset
      let type = bytes[offset]
      switch TraceRecordType(rawValue: type) {
      case .allocation?, .free?, .reallocation?:
        guard remaining >= 64 else { break loop }
        let kind: TraceEvent.Kind =
          type == 1 ? .allocation : type == 2 ? .free : .reallocation
        events.append(
          TraceEvent(
            kind: kind, api: AllocationAPI(rawValue: bytes[offset + 1]) ?? .malloc,
            thread: Int32(bitPattern: u32(offset + 4)), index: u64(offset + 8),
            time: u64(offset + 16), address: u64(offset + 24), size: u64(offset + 32),
            alignment: u64(offset + 40), oldAddress: u64(offset + 48), stack: u32(offset + 56)))
        offset += 64
      case .stack?:
        guard remaining >= 8 else { break loop }
        let count = Int(u16(offset + 2))
        guard remaining >= 8 + count * 16 else { break loop }
        var frames: [TraceFrame] = []
        for index in 0..<count {
          let at = offset + 8 + index * 16
          let module = u32(at + 8)
          frames.append(
            TraceFrame(module: module == UInt32.max ? nil : Int(module), offset: u64(at)))
        }
        stacks[u32(offset + 4)] = frames
        offset += 8 + count * 16
      case .module?:
        guard remaining >= 8 else { break loop }
        let length = Int(u16(offset + 2))
        let padded = (length + 7) / 8 * 8
        guard remaining >= 8 + padded else { break loop }
        modules[Int(u32(offset + 4))] = String(
          decoding: bytes[(offset + 8)..<(offset + 8 + length)], as: UTF8.self)
        offset += 8 + padded
      case nil:
        throw .badRecord(type: type, offset: offset)
      }
    }
    trailingBytes = bytes.count - offset
  }
}
