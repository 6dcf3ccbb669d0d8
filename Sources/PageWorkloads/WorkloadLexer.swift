#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Bytes of a workload or trace, delivered in chunks so that a huge file is never held in memory.
public protocol ByteSource {
  /// Fills `buffer` from the start with the next bytes; returns how many (0 at the end).
  mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws(WorkloadParseError) -> Int
}

/// An in-memory source (built-in workloads, tests).
public struct StringByteSource: ByteSource {
  private let bytes: [UInt8]
  private var offset = 0
  public init(_ text: String) { bytes = Array(text.utf8) }
  public mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
    let count = min(buffer.count, bytes.count - offset)
    if count > 0 {
      bytes.withUnsafeBytes { source in
        buffer.baseAddress!.copyMemory(from: source.baseAddress! + offset, byteCount: count)
      }
    }
    offset += count
    return count
  }
}

/// A file read with `pread` at its own offset (a forked process reading the same descriptor does
/// not move this one's position).
public final class FileByteSource: ByteSource {
  private let descriptor: Int32
  private var offset: off_t = 0
  public let path: String

  public init(path: String) throws(WorkloadParseError) {
    self.path = path
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    if descriptor < 0 {
      let reason = String(cString: strerror(errno))
      throw WorkloadParseError(
        sourceName: path, location: SourceLocation(line: 0, column: 0),
        message: "cannot open the file: \(reason)", found: nil)
    }
    self.descriptor = descriptor
  }

  deinit { close(descriptor) }

  public func read(into buffer: UnsafeMutableRawBufferPointer) throws(WorkloadParseError) -> Int {
    while true {
      let count = pread(descriptor, buffer.baseAddress, buffer.count, offset)
      if count >= 0 {
        offset += off_t(count)
        return count
      }
      if errno == EINTR { continue }
      let reason = String(cString: strerror(errno))
      throw WorkloadParseError(
        sourceName: path, location: SourceLocation(line: 0, column: 0),
        message: "cannot read the file: \(reason)", found: nil)
    }
  }

  /// The file's size in bytes (for a progress bar), or nil if it is not a regular file.
  public var size: UInt64? {
    var info = stat()
    guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
    return UInt64(info.st_size)
  }

  /// How many bytes have been read so far.
  public var bytesRead: UInt64 { UInt64(offset) }
}

/// A bad workload: where, what was expected, and the offending token.
public struct WorkloadParseError: Error, Sendable, Hashable, CustomStringConvertible {
  public var sourceName: String
  public var location: SourceLocation
  /// What was wrong, e.g. "expected a protection (none, r, rw, rx, rwx)".
  public var message: String
  /// The offending token as written, or nil when the problem is not a token (I/O).
  public var found: String?

  public init(sourceName: String, location: SourceLocation, message: String, found: String?) {
    self.sourceName = sourceName
    self.location = location
    self.message = message
    self.found = found
  }

  public var description: String {
    var text = "\(sourceName):\(location.line):\(location.column): error: \(message)"
    if let found { text += ", found \(found)" }
    return text
  }
}

/// A token of the workload language.
struct Token: Sendable, Hashable {
  enum Kind: Sendable, Hashable {
    /// A word: keywords, names, protections (`rw-`), advice names.
    case word
    /// Starts with a digit: `16`, `16p`, `64k`, `0x7f00`.
    case number
    /// A double-quoted string; `text` holds its contents without the quotes.
    case string
    /// One of `{ } + ..`.
    case symbol
    /// End of a statement: a newline or `;`.
    case separator
    case end
  }
  var kind: Kind
  var text: String
  var location: SourceLocation

  /// How the token is shown in an error.
  var shown: String {
    switch kind {
    case .end: "end of input"
    case .separator: text == ";" ? "';'" : "end of line"
    case .string: "\"\(text)\""
    default: "'\(text)'"
    }
  }
}

/// Splits bytes into tokens, reading the source in fixed-size chunks: memory stays bounded by the
/// chunk and the longest token, whatever the length of the input.
struct WorkloadLexer {
  static let chunkSize = 64 * 1024
  static let maximumTokenLength = 4096

  private var source: any ByteSource
  let sourceName: String
  private var buffer: UnsafeMutableRawBufferPointer
  private var bufferCount = 0
  private var bufferOffset = 0
  private var exhausted = false
  private var line = 1
  private var column = 1
  /// Owns the chunk buffer; deallocates it when the last copy of the lexer goes away.
  private let storage: ChunkStorage

  init(source: any ByteSource, sourceName: String) {
    self.source = source
    self.sourceName = sourceName
    storage = ChunkStorage(size: Self.chunkSize)
    buffer = storage.buffer
  }

  var currentLocation: SourceLocation { SourceLocation(line: line, column: column) }

  private mutating func peekByte() throws(WorkloadParseError) -> UInt8? {
    if bufferOffset == bufferCount {
      if exhausted { return nil }
      bufferCount = try source.read(into: buffer)
      bufferOffset = 0
      if bufferCount == 0 {
        exhausted = true
        return nil
      }
    }
    return buffer[bufferOffset]
  }

  private mutating func advance(over byte: UInt8) {
    bufferOffset += 1
    if byte == UInt8(ascii: "\n") {
      line += 1
      column = 1
    } else if byte & 0xC0 != 0x80 {
      // Columns count characters, not the continuation bytes of UTF-8.
      column += 1
    }
  }

  private func error(_ message: String, at location: SourceLocation, found: String?)
    -> WorkloadParseError
  {
    WorkloadParseError(sourceName: sourceName, location: location, message: message, found: found)
  }

  private static func isWordByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
      UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"):
      true
    default: false
    }
  }

  /// Reads the rest of a word or number whose first byte has been consumed.
  private mutating func continueWord(_ first: UInt8, at location: SourceLocation)
    throws(WorkloadParseError)
    -> String
  {
    var bytes: [UInt8] = [first]
    while let byte = try peekByte(), Self.isWordByte(byte) {
      if bytes.count == Self.maximumTokenLength {
        throw error(
          "token longer than \(Self.maximumTokenLength) characters", at: location,
          found: "'" + String(decoding: bytes.prefix(20), as: UTF8.self) + "...'")
      }
      bytes.append(byte)
      advance(over: byte)
    }
    return String(decoding: bytes, as: UTF8.self)
  }

  mutating func next() throws(WorkloadParseError) -> Token {
    while true {
      guard let byte = try peekByte() else {
        return Token(kind: .end, text: "", location: currentLocation)
      }
      let location = currentLocation
      switch byte {
      case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
        advance(over: byte)
      case UInt8(ascii: "#"):
        // A comment runs to the end of the line; the newline itself is still a separator.
        while let next = try peekByte(), next != UInt8(ascii: "\n") { advance(over: next) }
      case UInt8(ascii: "\n"), UInt8(ascii: ";"):
        advance(over: byte)
        return Token(
          kind: .separator, text: byte == UInt8(ascii: ";") ? ";" : "\n", location: location)
      case UInt8(ascii: "{"), UInt8(ascii: "}"), UInt8(ascii: "+"):
        advance(over: byte)
        return Token(kind: .symbol, text: String(UnicodeScalar(byte)), location: location)
      case UInt8(ascii: "."):
        advance(over: byte)
        guard try peekByte() == UInt8(ascii: ".") else {
          throw error("expected '..' (a page range such as 0..16)", at: location, found: "'.'")
        }
        advance(over: UInt8(ascii: "."))
        return Token(kind: .symbol, text: "..", location: location)
      case UInt8(ascii: "\""):
        advance(over: byte)
        var bytes: [UInt8] = []
        while true {
          guard let next = try peekByte(), next != UInt8(ascii: "\n") else {
            throw error(
              "unterminated string (a label ends with '\"' on the same line)", at: location,
              found: nil)
          }
          advance(over: next)
          if next == UInt8(ascii: "\"") { break }
          if bytes.count == Self.maximumTokenLength {
            throw error(
              "string longer than \(Self.maximumTokenLength) characters", at: location, found: nil)
          }
          bytes.append(next)
        }
        return Token(
          kind: .string, text: String(decoding: bytes, as: UTF8.self), location: location)
      case UInt8(ascii: "0")...UInt8(ascii: "9"):
        advance(over: byte)
        // A number may run into `..` (0..16): stop at the first byte that is not part of a word.
        return Token(kind: .number, text: try continueWord(byte, at: location), location: location)
      default:
        if Self.isWordByte(byte) {
          advance(over: byte)
          return Token(kind: .word, text: try continueWord(byte, at: location), location: location)
        }
        advance(over: byte)
        let shown: String
        if byte >= 0x20 && byte < 0x7F {
          shown = "'\(Character(UnicodeScalar(byte)))'"
        } else {
          shown = "byte 0x\(String(byte, radix: 16))"
        }
        throw error("unexpected character", at: location, found: shown)
      }
    }
  }
}

/// A heap buffer with a lifetime tied to the lexer (the lexer is a struct, so it cannot deinit).
final class ChunkStorage {
  let buffer: UnsafeMutableRawBufferPointer
  init(size: Int) { buffer = .allocate(byteCount: size, alignment: 16) }
  deinit { buffer.deallocate() }
}
