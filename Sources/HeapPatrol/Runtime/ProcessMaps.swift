import CShims

#if canImport(Glibc)
  import Glibc
#endif

/// One line of /proc/self/maps.
struct MappingLine {
  var start: UInt
  var end: UInt
  var readable: Bool
  var writable: Bool
  var shared: Bool
  /// The path column (empty for anonymous memory), valid only during the visit.
  var path: UnsafeBufferPointer<UInt8>

  var isAnonymous: Bool { path.count == 0 }
  func pathIs(_ text: StaticString) -> Bool { bytesEqual(path, text) }
}

/// Reads /proc/self/maps with a stack buffer (no malloc), line by line. The visitor returns false to
/// stop. Returns false if the file could not be read.
@discardableResult
func visitProcessMaps(_ visit: (MappingLine) -> Bool) -> Bool {
  let path: StaticString = "/proc/self/maps"  // a StaticString: passing it never allocates
  let fd = open(
    UnsafeRawPointer(path.utf8Start).assumingMemoryBound(to: CChar.self), O_RDONLY | O_CLOEXEC)
  guard fd >= 0 else { return false }
  defer { close(fd) }
  var storage = InlineArray<8192, UInt8>(repeating: 0)
  return withUnsafeMutableBytes(of: &storage) { raw -> Bool in
    let buffer = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
    let capacity = raw.count
    var filled = 0
    var finished = false
    while !finished {
      let got = read(fd, buffer + filled, capacity - filled)
      if got < 0 {
        if errno == EINTR { continue }
        return false
      }
      if got == 0 { finished = true }
      filled += got
      // Complete lines (the last line of the file may lack its newline).
      var lineStart = 0
      var index = 0
      while index < filled {
        if buffer[index] == UInt8(ascii: "\n") {
          if let line = parseMapsLine(
            UnsafeBufferPointer(start: buffer + lineStart, count: index - lineStart)),
            !visit(line)
          {
            return true
          }
          lineStart = index + 1
        }
        index += 1
      }
      if finished && lineStart < filled {
        if let line = parseMapsLine(
          UnsafeBufferPointer(start: buffer + lineStart, count: filled - lineStart))
        {
          _ = visit(line)
        }
        return true
      }
      // Keep the partial line at the front.
      let rest = filled - lineStart
      if rest == capacity { return false }  // a line longer than the buffer
      if lineStart > 0 {
        for offset in 0..<rest { buffer[offset] = buffer[lineStart + offset] }
      }
      filled = rest
    }
    return true
  }
}

/// `start-end perms offset dev inode   path`.
private func parseMapsLine(_ line: UnsafeBufferPointer<UInt8>) -> MappingLine? {
  var index = 0
  func hexField(terminator: UInt8) -> UInt? {
    var value: UInt = 0
    var digits = 0
    while index < line.count, line[index] != terminator {
      guard let digit = digitValue(line[index], radix: 16) else { return nil }
      value = value << 4 | digit
      digits += 1
      index += 1
    }
    index += 1
    return digits > 0 ? value : nil
  }
  guard let start = hexField(terminator: UInt8(ascii: "-")),
    let end = hexField(terminator: UInt8(ascii: " ")), index + 4 <= line.count
  else { return nil }
  let readable = line[index] == UInt8(ascii: "r")
  let writable = line[index + 1] == UInt8(ascii: "w")
  let shared = line[index + 3] == UInt8(ascii: "s")
  // Skip perms, offset, dev, inode: four space-separated fields.
  var fields = 0
  while index < line.count && fields < 4 {
    if line[index] == UInt8(ascii: " ") {
      fields += 1
      while index < line.count && line[index] == UInt8(ascii: " ") { index += 1 }
    } else {
      index += 1
    }
  }
  while index < line.count && line[index] == UInt8(ascii: " ") { index += 1 }
  let path = UnsafeBufferPointer(rebasing: line[index...])
  return MappingLine(
    start: start, end: end, readable: readable, writable: writable, shared: shared, path: path)
}
