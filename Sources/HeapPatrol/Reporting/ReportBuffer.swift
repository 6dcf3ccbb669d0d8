import CShims

/// An append-only byte writer over memory the caller owns, with the integer, hex and JSON-string
/// formatting the reports need. It never allocates, so it works inside the SIGSEGV handler and on the
/// malloc path.
///
/// When the buffer fills up it is flushed to `sink` (a file descriptor) and reused, so a report of any
/// length is written whole. Without a sink (`sink < 0`) it stops appending and sets `truncated`.
public struct ReportBuffer {
  public let base: UnsafeMutablePointer<UInt8>
  public let capacity: Int
  public private(set) var count: Int = 0
  /// The descriptor full buffers are flushed to; -1 keeps everything in memory.
  public var sink: Int32
  /// Whether bytes were dropped because the buffer was full and there was no sink.
  public private(set) var truncated = false

  public init(base: UnsafeMutablePointer<UInt8>, capacity: Int, sink: Int32 = -1) {
    precondition(capacity >= 64, "a report buffer needs room for at least one line")
    self.base = base
    self.capacity = capacity
    self.sink = sink
  }

  /// The bytes written so far (and not yet flushed).
  public var bytes: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: base, count: count) }

  /// Writes the pending bytes to the sink (if any) and empties the buffer.
  public mutating func flush() {
    if sink >= 0 && count > 0 {
      _ = cshim_write_all(sink, base, count)
    }
    count = 0
  }

  /// Forgets pending bytes without writing them.
  public mutating func reset() {
    count = 0
    truncated = false
  }

  @inline(__always)
  public mutating func append(byte: UInt8) {
    if count == capacity {
      guard sink >= 0 else {
        truncated = true
        return
      }
      flush()
    }
    base[count] = byte
    count += 1
  }

  public mutating func append(_ text: StaticString) {
    if text.hasPointerRepresentation {
      append(UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    } else {
      // A single Unicode scalar: only ASCII appears in our literals.
      append(byte: UInt8(truncatingIfNeeded: text.unicodeScalar.value))
    }
  }

  public mutating func append(_ raw: UnsafeBufferPointer<UInt8>) {
    for byte in raw { append(byte: byte) }
  }

  /// Appends a NUL-terminated C string, at most `limit` bytes.
  public mutating func append(cString: UnsafePointer<CChar>, limit: Int = 4096) {
    var index = 0
    while index < limit {
      let byte = UInt8(bitPattern: cString[index])
      if byte == 0 { break }
      append(byte: byte)
      index += 1
    }
  }

  /// Appends `value` in decimal.
  public mutating func append(decimal value: UInt) {
    var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: 20 digits fit
    withUnsafeMutableBytes(of: &digits) { scratch in
      var remaining = value
      var length = 0
      repeat {
        scratch[length] = UInt8(ascii: "0") + UInt8(remaining % 10)
        remaining /= 10
        length += 1
      } while remaining != 0
      while length > 0 {
        length -= 1
        append(byte: scratch[length])
      }
    }
  }

  public mutating func append(decimal value: Int) {
    if value < 0 {
      append(byte: UInt8(ascii: "-"))
      append(decimal: UInt(bitPattern: 0 &- value))
    } else {
      append(decimal: UInt(value))
    }
  }

  public mutating func append(decimal value: Int32) { append(decimal: Int(value)) }
  public mutating func append(decimal value: UInt64) { append(decimal: UInt(value)) }

  /// Appends a path template with every `%p` replaced by `pid` (the `log=` and `trace=` options).
  public mutating func append(pathTemplate bytes: UnsafeBufferPointer<UInt8>, pid: Int32) {
    var index = 0
    while index < bytes.count {
      if bytes[index] == UInt8(ascii: "%") && index + 1 < bytes.count
        && bytes[index + 1] == UInt8(ascii: "p")
      {
        append(decimal: pid)
        index += 2
      } else {
        append(byte: bytes[index])
        index += 1
      }
    }
  }

  /// Appends `0x` and `value` in lowercase hex, zero-padded to `width` digits (0: no padding).
  public mutating func append(hex value: UInt, width: Int = 0) {
    append("0x")
    var digitCount = 1
    while digitCount < 16 && (value >> (4 * UInt(digitCount))) != 0 { digitCount += 1 }
    if width > digitCount { digitCount = min(width, 16) }
    var shift = 4 * (digitCount - 1)
    while shift >= 0 {
      let nibble = UInt8((value >> UInt(shift)) & 0xF)
      append(byte: nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10)
      shift -= 4
    }
  }

  /// An address as reports print it: `0x` and 16 hex digits.
  public mutating func append(address value: UInt) { append(hex: value, width: 16) }

  /// Appends `value` as the body of a JSON string (without the quotes): escapes `"`, `\` and
  /// control characters; other bytes (UTF-8 included) pass through.
  public mutating func appendJSONEscaped(_ raw: UnsafeBufferPointer<UInt8>) {
    for byte in raw {
      switch byte {
      case UInt8(ascii: "\""): append("\\\"")
      case UInt8(ascii: "\\"): append("\\\\")
      case UInt8(ascii: "\n"): append("\\n")
      case UInt8(ascii: "\t"): append("\\t")
      case UInt8(ascii: "\r"): append("\\r")
      case 0..<0x20, 0x7F:
        append("\\u00")
        let high = byte >> 4
        let low = byte & 0xF
        append(byte: high < 10 ? UInt8(ascii: "0") + high : UInt8(ascii: "a") + high - 10)
        append(byte: low < 10 ? UInt8(ascii: "0") + low : UInt8(ascii: "a") + low - 10)
      default: append(byte: byte)
      }
    }
  }

  /// Appends a quoted JSON string of a hex number: `"0x1f"`.
  public mutating func appendJSONHex(_ value: UInt) {
    append(byte: UInt8(ascii: "\""))
    append(hex: value)
    append(byte: UInt8(ascii: "\""))
  }
}
