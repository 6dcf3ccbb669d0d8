import Foundation
import HeapPatrol

extension TraceFile {
  /// Reads a `trace=` file for a command, turning every failure into a one-line CheckError.
  static func load(_ path: String) throws -> TraceFile {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw CheckError("\(path): no such file or not readable")
    }
    do {
      return try TraceFile(bytes: [UInt8](data))
    } catch {
      throw CheckError("\(path): \(error)")
    }
  }
}

/// "1.234 ms" style durations for trace times (nanoseconds).
func formatDuration(_ nanoseconds: UInt64) -> String {
  if nanoseconds < 1_000_000 { return String(format: "%.1f us", Double(nanoseconds) / 1e3) }
  if nanoseconds < 1_000_000_000 { return String(format: "%.3f ms", Double(nanoseconds) / 1e6) }
  return String(format: "%.3f s", Double(nanoseconds) / 1e9)
}

/// Pads `text` to `width` columns, on the left when `right` (numbers).
func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
  let fill = String(repeating: " ", count: max(0, width - text.count))
  return right ? fill + text : text + fill
}
