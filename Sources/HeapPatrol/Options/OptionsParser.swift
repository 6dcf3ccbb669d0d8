// Parsing `key=value,key=value` without allocating: every step works on the input's bytes, errors are
// plain values carrying a copy of the offending text, and messages are rendered into a ReportBuffer.
//
// The preload parses HEAPPATROL_OPTIONS inside the first malloc (or its constructor, whichever comes
// first); because nothing here allocates it does not matter that our own malloc is not ready yet.
// An unknown key or a bad value is fatal at start: the preload prints the message to stderr and exits
// with status 1 before the program's main runs. Nothing is ever silently ignored.

/// Why an options string was rejected.
public struct OptionsError: Error, Sendable, Hashable, CustomStringConvertible {
  public enum Reason: UInt8, Sendable, Hashable {
    /// A key that is not in `OptionsTable`.
    case unknownOption
    /// A known key with a value it does not accept.
    case badValue
    /// A known key without `=value`.
    case missingValue
  }

  public var reason: Reason
  /// The key, when known.
  public var key: OptionKey?
  /// The offending text (the key for `unknownOption`/`missingValue`, the value for `badValue`),
  /// truncated to 64 bytes.
  var textStorage = InlineArray<64, UInt8>(repeating: 0)
  public private(set) var textCount = 0

  init(_ reason: Reason, key: OptionKey?, text: UnsafeBufferPointer<UInt8>) {
    self.reason = reason
    self.key = key
    let count = min(text.count, 64)
    withUnsafeMutableBytes(of: &textStorage) { raw in
      for index in 0..<count { raw[index] = text[index] }
    }
    textCount = count
  }

  /// The offending text as a String (allocates).
  public var text: String {
    withUnsafeBytes(of: textStorage) { raw in
      String(decoding: UnsafeRawBufferPointer(rebasing: raw[0..<textCount]), as: UTF8.self)
    }
  }

  /// Writes the one-line message (without a newline), e.g.
  /// `heappatrol: unknown option 'foo' (see `heappatrol options`)`.
  public func render(into buffer: inout ReportBuffer) {
    buffer.append("heappatrol: ")
    switch reason {
    case .unknownOption:
      buffer.append("unknown option '")
      appendText(into: &buffer)
      buffer.append("' (see `heappatrol options`)")
    case .missingValue:
      buffer.append("option '")
      appendText(into: &buffer)
      buffer.append("' needs a value (key=value)")
    case .badValue:
      buffer.append("bad value '")
      appendText(into: &buffer)
      buffer.append("' for option '")
      if let key { buffer.append(key.name) }
      buffer.append("' (expected ")
      if let key { buffer.append(key.expectation) }
      buffer.append(")")
    }
  }

  private func appendText(into buffer: inout ReportBuffer) {
    withUnsafeBytes(of: textStorage) { raw in
      for index in 0..<textCount { buffer.append(byte: raw[index]) }
    }
  }

  public var description: String {
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 512) { scratch in
      var buffer = ReportBuffer(base: scratch.baseAddress!, capacity: scratch.count)
      render(into: &buffer)
      return String(decoding: buffer.bytes, as: UTF8.self)
    }
  }

  public static func == (lhs: OptionsError, rhs: OptionsError) -> Bool {
    lhs.reason == rhs.reason && lhs.key == rhs.key && lhs.text == rhs.text
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(reason)
    hasher.combine(key)
    hasher.combine(text)
  }
}

extension OptionKey {
  /// What a bad value should have looked like (the tail of the error message).
  public var expectation: StaticString {
    switch self {
    case .placement: "upper or lower"
    case .align: "a power of two or 'natural'"
    case .guardMechanism: "auto, markers, mprotect or canary"
    case .vmaHeadroom: "'auto' or a number of VMAs"
    case .fatalExitCode, .leakExitCode: "an exit status 0...255"
    case .stackDepth: "a frame count 1...64"
    case .sample: "a sampling interval 1...1000000000 (1 = guard everything)"
    case .sampleSeed: "a seed 0...2^64-1 (0 = random)"
    case .logFD: "a file descriptor, or -1 for none"
    case .failRate: "a probability between 0 and 1, like 0.01"
    case .allocByte, .freeByte: "a byte 0...255 (decimal or 0x hex) or 'none'"
    case .canaryByte: "a byte 0...255 (decimal or 0x hex)"
    case .log, .trace: "a path of at most 512 bytes"
    case .reservation: "a size between 1m and 64t, like 64g"
    case .redZone: "a size of at most 64k"
    case .maxRecords: "a number of records, at least 1"
    default:
      switch type {
      case .bool: "1, 0, true, false, yes or no"
      case .size: "a size: digits with an optional k, m, g or t suffix"
      case .int: "a non-negative integer"
      case .byte: "a byte 0...255"
      case .string, .enum: "a valid value"
      }
    }
  }
}

extension RuntimeOptions {
  /// Applies `key=value,key=value` over the current values. Empty items are skipped.
  public mutating func apply(_ input: UnsafeBufferPointer<UInt8>) throws(OptionsError) {
    var itemStart = 0
    while itemStart <= input.count {
      var itemEnd = itemStart
      while itemEnd < input.count && input[itemEnd] != UInt8(ascii: ",") { itemEnd += 1 }
      let item = UnsafeBufferPointer(rebasing: input[itemStart..<itemEnd])
      if item.count > 0 { try applyItem(item) }
      itemStart = itemEnd + 1
    }
  }

  /// Applies the NUL-terminated C string `text` (e.g. getenv's result).
  public mutating func apply(cString text: UnsafePointer<CChar>) throws(OptionsError) {
    var length = 0
    while text[length] != 0 { length += 1 }
    try text.withMemoryRebound(to: UInt8.self, capacity: length) { bytes throws(OptionsError) in
      try apply(UnsafeBufferPointer(start: bytes, count: length))
    }
  }

  private mutating func applyItem(_ item: UnsafeBufferPointer<UInt8>) throws(OptionsError) {
    var equals = 0
    while equals < item.count && item[equals] != UInt8(ascii: "=") { equals += 1 }
    let name = UnsafeBufferPointer(rebasing: item[0..<equals])
    guard let key = OptionKey.named(name) else {
      throw OptionsError(.unknownOption, key: nil, text: name)
    }
    guard equals < item.count else { throw OptionsError(.missingValue, key: key, text: name) }
    let value = UnsafeBufferPointer(rebasing: item[(equals + 1)...])
    guard set(key, to: value) else { throw OptionsError(.badValue, key: key, text: value) }
  }

  /// Sets one option from its textual value; false if the value is not acceptable.
  public mutating func set(_ key: OptionKey, to value: UnsafeBufferPointer<UInt8>) -> Bool {
    switch key {
    case .placement:
      if bytesEqual(value, "upper") {
        heap.placement = .upper
      } else if bytesEqual(value, "lower") {
        heap.placement = .lower
      } else {
        return false
      }
    case .align:
      if bytesEqual(value, "natural") {
        heap.alignment = .natural
      } else {
        guard let number = parseUnsigned(value), number != 0, number & (number - 1) == 0,
          number <= 1 << 30
        else { return false }
        heap.alignment = .fixed(number)
      }
    case .guardMechanism:
      if bytesEqual(value, "auto") {
        heap.guardMechanism = .automatic
      } else if bytesEqual(value, "markers") {
        heap.guardMechanism = .markers
      } else if bytesEqual(value, "mprotect") {
        heap.guardMechanism = .mprotect
      } else if bytesEqual(value, "canary") {
        heap.guardMechanism = .canary
      } else {
        return false
      }
    case .vmaHeadroom:
      if bytesEqual(value, "auto") {
        heap.vmaHeadroom = nil
      } else {
        guard let number = parseUnsigned(value), number <= UInt(Int32.max) else { return false }
        heap.vmaHeadroom = Int(number)
      }
    case .vmaBudget:
      guard let number = parseUnsigned(value), number <= UInt(Int32.max) else { return false }
      heap.vmaBudgetLimit = number == 0 ? nil : Int(number)
    case .quarantineBytes:
      guard let number = parseSize(value) else { return false }
      heap.quarantineMaxBytes = number
    case .quarantineCount:
      guard let number = parseUnsigned(value), number <= UInt(Int32.max) else { return false }
      heap.quarantineMaxCount = Int(number)
    case .noFree:
      guard let flag = parseBool(value) else { return false }
      heap.noFree = flag
    case .allocByte:
      if bytesEqual(value, "none") {
        heap.allocationFill = nil
      } else {
        guard let byte = parseByte(value) else { return false }
        heap.allocationFill = byte
      }
    case .allocByteLimit:
      guard let number = parseSize(value) else { return false }
      heap.allocationFillLimit = number == 0 ? nil : number
    case .freeByte:
      if bytesEqual(value, "none") {
        heap.freeFill = nil
      } else {
        guard let byte = parseByte(value) else { return false }
        heap.freeFill = byte
      }
    case .canaryByte:
      guard let byte = parseByte(value) else { return false }
      heap.canaryByte = byte
    case .slackCanary:
      guard let number = parseSize(value) else { return false }
      heap.slackCanaryLimit = number == 0 ? nil : number
    case .redZone:
      guard let number = parseSize(value), number <= 64 << 10 else { return false }
      heap.redZoneSize = number
    case .limit:
      guard let number = parseSize(value) else { return false }
      heap.heapLimit = number == 0 ? nil : number
    case .failEvery:
      guard let number = parseUnsigned(value) else { return false }
      heap.faultInjection.failEvery = UInt64(number)
    case .failRate:
      guard let probability = parseProbability(value) else { return false }
      heap.faultInjection.probability = probability
    case .failSeed:
      guard let number = parseUnsigned(value) else { return false }
      heap.faultInjection.seed = UInt64(number)
    case .reservation:
      guard let number = parseSize(value), number >= 1 << 20, number <= 64 << 40 else {
        return false
      }
      heap.reservationSize = number
    case .rememberedBlocks:
      guard let number = parseUnsigned(value), number <= UInt(Int32.max) else { return false }
      heap.rememberedReleasedBlocks = Int(number)
    case .maxRecords:
      guard let number = parseUnsigned(value), number >= 1, number <= UInt(UInt32.max) else {
        return false
      }
      heap.maximumRecords = Int(number)
    case .log:
      guard value.count <= PathBuffer.capacity else { return false }
      logPath.set(value)
    case .logFD:
      guard let number = parseSigned(value), number >= -1, number <= Int(Int32.max) else {
        return false
      }
      logFD = Int32(number)
    case .textReport:
      guard let flag = parseBool(value) else { return false }
      textReport = flag
    case .detectLeaks:
      guard let flag = parseBool(value) else { return false }
      detectLeaks = flag
    case .showReachable:
      guard let flag = parseBool(value) else { return false }
      showReachable = flag
    case .checkOnExit:
      guard let flag = parseBool(value) else { return false }
      checkOnExit = flag
    case .fatalExitCode:
      guard let number = parseUnsigned(value), number <= 255 else { return false }
      fatalExitCode = Int32(number)
    case .haltOnError:
      guard let flag = parseBool(value) else { return false }
      haltOnError = flag
    case .leakExitCode:
      guard let number = parseUnsigned(value), number <= 255 else { return false }
      leakExitCode = Int32(number)
    case .reportSizeOverflow:
      guard let flag = parseBool(value) else { return false }
      reportSizeOverflow = flag
    case .reportOutOfMemory:
      guard let flag = parseBool(value) else { return false }
      reportOutOfMemory = flag
    case .stackDepth:
      guard let number = parseUnsigned(value), number >= 1, number <= UInt(StackDepot.maximumDepth)
      else { return false }
      stackDepth = Int(number)
    case .sample:
      guard let number = parseUnsigned(value), number >= 1, number <= 1_000_000_000 else {
        return false
      }
      sample = Int(number)
    case .sampleSeed:
      guard let number = parseUnsigned(value) else { return false }
      sampleSeed = UInt64(number)
    case .verbose:
      guard let flag = parseBool(value) else { return false }
      verbose = flag
    case .checkMemoryOperations:
      guard let flag = parseBool(value) else { return false }
      checkMemoryOperations = flag
    case .trace:
      guard value.count <= PathBuffer.capacity else { return false }
      tracePath.set(value)
    }
    return true
  }
}

// MARK: Value parsers (allocation-free)

/// Decimal or `0x` hex, no sign; nil on overflow or any stray character.
func parseUnsigned(_ text: UnsafeBufferPointer<UInt8>) -> UInt? {
  var index = 0
  var radix: UInt = 10
  if text.count > 2 && text[0] == UInt8(ascii: "0") && (text[1] | 0x20) == UInt8(ascii: "x") {
    radix = 16
    index = 2
  }
  guard index < text.count else { return nil }
  var value: UInt = 0
  while index < text.count {
    guard let digit = digitValue(text[index], radix: radix) else { return nil }
    let (shifted, overflow1) = value.multipliedReportingOverflow(by: radix)
    let (sum, overflow2) = shifted.addingReportingOverflow(digit)
    if overflow1 || overflow2 { return nil }
    value = sum
    index += 1
  }
  return value
}

/// An optional `-` then `parseUnsigned`.
func parseSigned(_ text: UnsafeBufferPointer<UInt8>) -> Int? {
  if text.count > 1 && text[0] == UInt8(ascii: "-") {
    guard let magnitude = parseUnsigned(UnsafeBufferPointer(rebasing: text[1...])),
      magnitude <= UInt(Int.max)
    else { return nil }
    return -Int(magnitude)
  }
  guard let magnitude = parseUnsigned(text), magnitude <= UInt(Int.max) else { return nil }
  return Int(magnitude)
}

/// Digits with an optional k/m/g/t suffix (powers of 1024, either case, an optional trailing `b`).
func parseSize(_ text: UnsafeBufferPointer<UInt8>) -> UInt? {
  var end = text.count
  if end > 1 && (text[end - 1] | 0x20) == UInt8(ascii: "b")
    && digitValue(text[end - 2], radix: 10) == nil
  {
    end -= 1  // "64kb"
  }
  var shift: UInt = 0
  if end > 1 {
    switch text[end - 1] | 0x20 {
    case UInt8(ascii: "k"): shift = 10
    case UInt8(ascii: "m"): shift = 20
    case UInt8(ascii: "g"): shift = 30
    case UInt8(ascii: "t"): shift = 40
    default: break
    }
    if shift != 0 { end -= 1 }
  }
  guard let number = parseUnsigned(UnsafeBufferPointer(rebasing: text[0..<end])) else { return nil }
  guard number <= UInt.max >> shift else { return nil }
  return number << shift
}

func parseBool(_ text: UnsafeBufferPointer<UInt8>) -> Bool? {
  if bytesEqual(text, "1") || bytesEqual(text, "true") || bytesEqual(text, "yes") { return true }
  if bytesEqual(text, "0") || bytesEqual(text, "false") || bytesEqual(text, "no") { return false }
  return nil
}

func parseByte(_ text: UnsafeBufferPointer<UInt8>) -> UInt8? {
  guard let number = parseUnsigned(text), number <= 255 else { return nil }
  return UInt8(number)
}

/// `0`, `1`, `0.25`, `.5`: a decimal fraction in [0, 1].
func parseProbability(_ text: UnsafeBufferPointer<UInt8>) -> Double? {
  guard text.count > 0, text.count <= 24 else { return nil }
  var integerPart: UInt = 0
  var fraction: UInt = 0
  var scale: Double = 1
  var index = 0
  var digits = 0
  while index < text.count, let digit = digitValue(text[index], radix: 10) {
    integerPart = integerPart * 10 + digit
    index += 1
    digits += 1
  }
  if index < text.count {
    guard text[index] == UInt8(ascii: ".") else { return nil }
    index += 1
    while index < text.count {
      guard let digit = digitValue(text[index], radix: 10) else { return nil }
      fraction = fraction * 10 + digit
      scale *= 10
      index += 1
      digits += 1
    }
  }
  guard digits > 0, integerPart <= 1 else { return nil }
  let value = Double(integerPart) + Double(fraction) / scale
  return value <= 1 ? value : nil
}

@inline(__always)
func digitValue(_ byte: UInt8, radix: UInt) -> UInt? {
  let value: UInt
  switch byte {
  case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt(byte - UInt8(ascii: "0"))
  case UInt8(ascii: "a")...UInt8(ascii: "f"): value = UInt(byte - UInt8(ascii: "a") + 10)
  case UInt8(ascii: "A")...UInt8(ascii: "F"): value = UInt(byte - UInt8(ascii: "A") + 10)
  default: return nil
  }
  return value < radix ? value : nil
}
