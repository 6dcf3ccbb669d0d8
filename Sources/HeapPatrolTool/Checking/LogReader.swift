import Foundation

/// Reads JSON-lines logs. Never throws on content: a line it cannot understand becomes a
/// `MalformedLine` (file:line and why) and the rest of the log is still read.
public enum LogReader {
  /// Reads one log file; an unreadable file is reported as a malformed line 0.
  public static func read(file path: String) -> LogContents {
    guard let data = FileManager.default.contents(atPath: path) else {
      var contents = LogContents()
      contents.malformed.append(MalformedLine(file: path, line: 0, reason: "cannot read the file"))
      return contents
    }
    return parse(data, file: path)
  }

  /// Reads every `*.jsonl` file in a directory (one per process: forked children write their own),
  /// ordered by the pid in the name so a parent's findings come before its children's.
  public static func read(directory: String) -> LogContents {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    let logs = names.filter { $0.hasSuffix(".jsonl") }.sorted { lhs, rhs in
      let left = Int(lhs.dropLast(6)) ?? Int.max
      let right = Int(rhs.dropLast(6)) ?? Int.max
      return left != right ? left < right : lhs < rhs
    }
    var contents = LogContents()
    for name in logs {
      contents.append(read(file: (directory as NSString).appendingPathComponent(name)))
    }
    return contents
  }

  /// Parses JSON-lines text; `file` only labels diagnostics.
  public static func parse(_ data: Data, file: String) -> LogContents {
    var contents = LogContents()
    let decoder = JSONDecoder()
    var lineNumber = 0
    for lineBytes in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
      lineNumber += 1
      let line = Data(lineBytes)
      if line.allSatisfy({
        $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\r")
      }) {
        continue
      }
      func malformed(_ reason: String) {
        contents.malformed.append(MalformedLine(file: file, line: lineNumber, reason: reason))
      }
      guard let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any] else {
        malformed("not a JSON object: \(preview(line))")
        continue
      }
      do {
        if object["kind"] is String {
          let record = try decoder.decode(FindingRecord.self, from: line)
          contents.findings.append(
            LoggedFinding(record: record, rawLine: line, file: file, line: lineNumber))
        } else if object["event"] is String {
          contents.events.append(try decoder.decode(EventRecord.self, from: line))
        } else {
          malformed("neither a finding (\"kind\") nor an event (\"event\"): \(preview(line))")
        }
      } catch let error as DecodingError {
        malformed(describe(error))
      } catch {
        malformed("\(error)")
      }
    }
    return contents
  }

  private static func preview(_ line: Data) -> String {
    let text = String(decoding: line.prefix(80), as: UTF8.self)
    return line.count > 80 ? text + "..." : text
  }

  /// "field block.size: expected an integer" rather than DecodingError's debug dump.
  static func describe(_ error: DecodingError) -> String {
    func path(_ codingPath: [any CodingKey]) -> String {
      codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
        .joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
    }
    switch error {
    case .typeMismatch(let type, let context):
      return "field \(path(context.codingPath)): expected \(type)"
    case .valueNotFound(let type, let context):
      return "field \(path(context.codingPath)): expected \(type), found null"
    case .keyNotFound(let key, let context):
      return "missing field \(path(context.codingPath + [key]))"
    case .dataCorrupted(let context):
      return "field \(path(context.codingPath)): \(context.debugDescription)"
    @unknown default:
      return "\(error)"
    }
  }
}
