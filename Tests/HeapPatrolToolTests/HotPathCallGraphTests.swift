import Foundation
import Testing

/// The malloc path and the checked memory operations, read from the built library's machine code:
/// every function reachable by direct calls from the exported entry points must stay clear of the
/// Swift runtime's locking and allocating services (generic metadata instantiation, type lookup by
/// mangled name, object allocation, retain/release) and of unspecialized generic heap code, which
/// needs metadata. A run-time counter (PerfHotPathTests) only sees what a workload happens to reach;
/// this sees every path, the first-call and the error paths included. Start-up is exempt: it runs once,
/// from the library's constructor, before the program's code.
@Suite("Hot path call graph")
struct HotPathCallGraphTests {
  static let entryPoints: Set<String> = [
    "malloc", "free", "calloc", "realloc", "reallocarray", "malloc_usable_size", "posix_memalign",
    "memalign", "aligned_alloc", "valloc", "pvalloc", "_Znwm", "_ZdlPv", "_Znam", "_ZdaPv",
    "memcpy", "memmove", "memset", "memcmp", "strlen", "strcpy", "strcat", "strdup", "__memcpy_chk",
  ]

  /// Callees that must never be reachable.
  static func forbidden(_ name: String) -> Bool {
    let runtime = [
      "swift_getGenericMetadata", "swift_allocObject", "swift_allocBox", "swift_retain",
      "swift_release", "swift_once", "swift_getTypeByMangledName", "swift_instantiate",
      "__swift_instantiate", "swift_bridgeObjectRetain", "swift_bridgeObjectRelease",
    ]
    if runtime.contains(where: { name.hasPrefix($0) }) { return true }
    // A type metadata accessor (`...Ma`) of a generic type instantiates it on first use.
    if name.hasPrefix("$s") && name.hasSuffix("Ma") { return true }
    // An unspecialized method of the generic heap (`$s10HeapPatrol0A4CoreV...F`) takes metadata.
    for generic in ["$s10HeapPatrol0A4CoreV", "$s10HeapPatrol0A6HandleV"]
    where name.hasPrefix(generic) && name.hasSuffix("F") {
      return true
    }
    return false
  }

  /// Run once, before the program's code: allowed to set things up the expensive way.
  static func startUp(_ name: String) -> Bool {
    ["heappatrolStart", "startOnce", "RuntimeState", "heappatrol_constructor"].contains {
      name.contains($0)
    }
  }

  /// Direct calls and tail jumps between the library's functions, from llvm-objdump's disassembly.
  static func callGraph(of library: String) throws -> [String: Set<String>] {
    let objdump = try #require(
      PreloadTests.find("llvm-objdump") ?? PreloadTests.find("objdump"),
      "llvm-objdump ships with the Swift toolchain")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: objdump)
    process.arguments = ["-d", "--no-show-raw-insn", library]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    try #require(process.terminationStatus == 0)
    var graph: [String: Set<String>] = [:]
    var current: String? = nil
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
      // "0000000000037300 <name>:" starts a function.
      if line.hasSuffix(">:"), let open = line.firstIndex(of: "<") {
        current = String(line[line.index(after: open)..<line.index(line.endIndex, offsetBy: -2)])
        continue
      }
      guard let caller = current,
        line.contains("call") || line.contains("\tjmp"),
        let open = line.lastIndex(of: "<"), let close = line.lastIndex(of: ">"), open < close
      else { continue }
      var callee = String(line[line.index(after: open)..<close])
      if let plus = callee.lastIndex(of: "+") { callee = String(callee[..<plus]) }
      if callee.hasSuffix("@plt") { callee.removeLast(4) }
      if callee != caller { graph[caller, default: []].insert(callee) }
    }
    return graph
  }

  /// Paths from an entry point to a forbidden callee; start-up functions are not entered when
  /// `exemptingStartUp`.
  static func violations(
    in graph: [String: Set<String>], from entries: Set<String> = entryPoints, exemptingStartUp: Bool
  ) -> (paths: [String], reached: Int) {
    let roots = entries.filter { graph[$0] != nil }
    var parent: [String: String] = [:]
    var seen = roots
    var queue = Array(roots)
    var paths: [String] = []
    while let function = queue.popLast() {
      for callee in graph[function] ?? [] where !seen.contains(callee) {
        seen.insert(callee)
        parent[callee] = function
        if forbidden(callee) {
          var path = [callee]
          var step = function
          while let up = parent[step] {
            path.append(step)
            step = up
          }
          path.append(step)
          paths.append(path.reversed().joined(separator: " -> "))
        } else if !(exemptingStartUp && startUp(callee)) {
          queue.append(callee)
        }
      }
    }
    return (paths, seen.count)
  }

  /// The library the tests use, and the release one beside it when it was built (the two are
  /// compiled differently: whole-module in both, but release also across modules).
  static func libraries() throws -> [String] {
    let debug = try PreloadTests.library()
    let release = debug.replacingOccurrences(of: "/debug/", with: "/release/")
    return release != debug && FileManager.default.fileExists(atPath: release)
      ? [debug, release] : [debug]
  }

  @Test("no entry point reaches the runtime's locking or allocating services")
  func entryPointsStayClear() throws {
    for library in try Self.libraries() {
      let graph = try Self.callGraph(of: library)
      let roots = Self.entryPoints.filter { graph[$0] != nil }
      #expect(roots.count >= 15, "\(library): entry points found: \(roots.sorted())")
      let (paths, reached) = Self.violations(in: graph, exemptingStartUp: true)
      #expect(reached > 100, "\(library): the walk found too little: \(reached) functions")
      #expect(paths.isEmpty, "\(library):\n\(paths.joined(separator: "\n"))")
    }
  }

  @Test("the walk finds a violation where there is one")
  func theCheckCanFail() throws {
    #expect(Self.forbidden("swift_retain"))
    #expect(Self.forbidden("$s10HeapPatrol0A4CoreVMa"))
    #expect(Self.forbidden("$s10HeapPatrol0A4CoreV11validRecord2ats6UInt32VSgSu_tF"))
    #expect(
      !Self.forbidden(
        "$s10HeapPatrol0A4CoreV11validRecord2ats6UInt32VSgSu_tF9PageSpace06SystemhI0V_Tg5"))
    // Code that does use the runtime (an enum's `allCases` builds an array) is reported by the
    // same walk.
    let graph = try Self.callGraph(of: PreloadTests.library())
    let allCases = Set(graph.keys.filter { $0.hasSuffix("8allCasesSayACGvgZ") })
    #expect(!allCases.isEmpty)
    #expect(!Self.violations(in: graph, from: allCases, exemptingStartUp: true).paths.isEmpty)
  }
}
