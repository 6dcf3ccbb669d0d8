/// Pointers the heap does not own: is this glibc's (hand it back) or nobody's (an invalid free)?
public enum ForeignPointers {
  /// Whether `address` plausibly is a pointer glibc's malloc handed out, checked without touching
  /// anything that could fault: it must be 16-byte aligned, lie in a private read-write anonymous
  /// mapping or `[heap]` (never a file's data/bss, never `[stack]`), and carry a sane chunk header —
  /// an mmapped chunk (IS_MMAPPED) whose page-aligned extent stays inside the mapping, or an in-use
  /// heap chunk whose size is a multiple of 16 and whose successor's header (inside the mapping)
  /// has PREV_INUSE set. Reads /proc/self/maps: only for the rare frees of pointers we do not own.
  public static func isPlausibleGlibcChunk(_ address: UInt, pageSize: UInt = 4096) -> Bool {
    guard address & 15 == 0, address >= 4096 else { return false }
    var verdict = false
    visitProcessMaps { line in
      if address < line.start { return false }
      guard address < line.end else { return true }
      guard line.readable && line.writable && !line.shared,
        line.isAnonymous || line.pathIs("[heap]"), address - 16 >= line.start
      else { return false }
      let header = UnsafeRawPointer(bitPattern: address - 16)!
      let previousSize = header.load(as: UInt.self)
      let sizeField = header.load(fromByteOffset: 8, as: UInt.self)
      let chunkSize = sizeField & ~7
      let chunkStart = address - 16
      if sizeField & 2 != 0 {
        // mmapped chunk: [chunkStart - previousSize, chunkStart + chunkSize) is whole pages.
        guard previousSize <= chunkStart - line.start, chunkSize <= line.end - chunkStart else {
          return false
        }
        let block = chunkStart - previousSize
        verdict = chunkSize >= 32 && (block | (previousSize + chunkSize)) & (pageSize - 1) == 0
      } else {
        guard chunkSize >= 32, chunkSize & 15 == 0, chunkSize <= line.end - chunkStart - 16 else {
          return false
        }
        let nextSize = UnsafeRawPointer(bitPattern: chunkStart + chunkSize + 8)!.load(as: UInt.self)
        verdict = nextSize & 1 == 1 && nextSize & ~7 >= 16
      }
      return false
    }
    return verdict
  }
}
