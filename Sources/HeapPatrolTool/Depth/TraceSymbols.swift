import Foundation
import HeapPatrol

/// The stacks of a trace, symbolized once (one symbolizer process per module for the whole trace) and
/// reduced to the program's own frames: the preload's and the allocator entry points are dropped, so
/// the first frame is the call site that asked for the memory.
public final class TraceSymbols {
  /// Per stack id: the program's frames, innermost first; inlined calls expanded into frames.
  public private(set) var stacks: [UInt32: [TraceSite]] = [:]

  public init(_ trace: TraceFile, symbolizer: Symbolizer) {
    var wanted: [String: Set<UInt64>] = [:]
    for frames in trace.stacks.values {
      for frame in frames {
        guard let module = frame.module.flatMap({ trace.modules[$0] }) else { continue }
        // Every traced frame is a return address: the call's line is at offset - 1.
        wanted[module, default: []].insert(frame.offset > 0 ? frame.offset - 1 : 0)
      }
    }
    var located: [String: [UInt64: [SymbolLocation]]] = [:]
    for (module, offsets) in wanted.sorted(by: { $0.key < $1.key }) {
      located[module] = symbolizer.locations(module: module, offsets: offsets.sorted())
    }
    for (id, frames) in trace.stacks {
      var records: [StackFrame] = []
      for frame in frames {
        let module = frame.module.flatMap { trace.modules[$0] }
        var record = StackFrame(module: module, offset: HexNumber(frame.offset))
        if module == nil { record.pc = HexNumber(frame.offset) }
        if let module, let found = located[module]?[frame.offset > 0 ? frame.offset - 1 : 0],
          let innermost = found.first, innermost.function != nil || innermost.file != nil
        {
          record.function = innermost.function
          record.file = innermost.file
          record.line = innermost.line
          record.column = innermost.column
          record.inlinedInto = found.count > 1 ? Array(found.dropFirst()) : nil
        }
        records.append(record)
      }
      stacks[id] = ReportRenderer.visibleFrames(records).flatMap { frame -> [TraceSite] in
        guard frame.isSymbolized else {
          return [
            TraceSite(
              function: nil, file: nil, line: nil, module: frame.module,
              offset: frame.offset?.value ?? 0)
          ]
        }
        return frame.symbolLocations.map {
          TraceSite(
            function: $0.function, file: $0.file, line: $0.line, module: frame.module,
            offset: frame.offset?.value ?? 0)
        }
      }
    }
  }

  /// The frame that made the allocation (nil when the stack is empty or unknown).
  public func site(_ stack: UInt32) -> TraceSite? { stacks[stack]?.first }

  /// The allocation site's name, "function file:line", or "module+0xOFFSET" unsymbolized.
  public func siteName(_ stack: UInt32) -> String { site(stack)?.description ?? "<no stack>" }
}

/// One (logical) frame of a traced stack.
public struct TraceSite: Sendable, Hashable, CustomStringConvertible {
  public var function: String?
  public var file: String?
  public var line: Int?
  public var module: String?
  public var offset: UInt64

  /// The function's name, or module+offset when unknown (the call graph's node).
  public var functionName: String {
    function
      ?? "\((module.map { ($0 as NSString).lastPathComponent }) ?? "?")+0x\(String(offset, radix: 16))"
  }

  public var description: String {
    var text = functionName
    if let file {
      text += " \(Self.shortPath(file))" + (line.map { ":\($0)" } ?? "")
    }
    return text
  }

  /// A path relative to the current directory when it lies inside it.
  static func shortPath(_ path: String) -> String {
    let directory = FileManager.default.currentDirectoryPath
    let prefix = directory.hasSuffix("/") ? directory : directory + "/"
    return path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : path
  }
}
