import Foundation
import HeapPatrolTool
import Testing

/// Symbolization against binaries built here with -g: a C program (llvm-symbolizer and addr2line)
/// and a Swift one (names demangled).
@Suite struct SymbolizerTests {
  static let cSource = """
    #include <stdio.h>
    __attribute__((noinline)) int alpha(int x) {
      return x * 3;
    }
    __attribute__((noinline)) int beta(int x) {
      return x + 1;
    }
    int main(void) {
      alpha(1);
      return beta(2);
    }
    """

  /// A -g PIE built from `cSource`, the offset of `alpha`, and the return address of the call to it.
  struct CProgram {
    var path: String
    var alpha: UInt64
    var returnFromAlpha: UInt64
  }

  static func buildCProgram(in directory: String) throws -> CProgram {
    let path = (directory as NSString).appendingPathComponent("symbolize-me")
    try TestSupport.compileC(
      cSource, to: path, arguments: ["-g", "-O0", "-fno-omit-frame-pointer", "-fPIE", "-pie"])
    let alpha = try TestSupport.symbolOffset("alpha", in: path)
    // The return address of `call alpha` in main: the address of the instruction after it.
    let objdump = try #require(ToolProcess.find("llvm-objdump") ?? ToolProcess.find("objdump"))
    let disassembly = try ToolProcess.capture(objdump, ["-d", "--no-show-raw-insn", path]).text
      .split(separator: "\n").map(String.init)
    let mainStart = try #require(disassembly.firstIndex { $0.hasSuffix("<main>:") })
    let call = try #require(
      disassembly[mainStart...].firstIndex { $0.contains("call") && $0.contains("<alpha>") })
    let next = disassembly[call + 1].trimmingCharacters(in: .whitespaces)
    let returnAddress = try #require(UInt64(next.prefix { $0 != ":" }, radix: 16))
    return CProgram(path: path, alpha: alpha, returnFromAlpha: returnAddress)
  }

  static func backends() -> [Symbolizer.Backend] {
    var backends: [Symbolizer.Backend] = []
    if let path = ToolProcess.find("llvm-symbolizer") {
      backends.append(.llvmSymbolizer(path: path))
    }
    if let path = ToolProcess.find("addr2line") { backends.append(.addr2line(path: path)) }
    return backends
  }

  @Test(arguments: backends())
  func symbolizesCFunctionsFilesAndLines(backend: Symbolizer.Backend) throws {
    let directory = try TestSupport.makeTemporaryDirectory("sym")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let program = try Self.buildCProgram(in: directory)
    let symbolizer = Symbolizer(backend: backend, demangler: nil)

    let found = symbolizer.locations(
      module: program.path, offsets: [program.alpha, program.returnFromAlpha - 1])
    let alpha = try #require(found[program.alpha]?.first)
    #expect(alpha.function == "alpha")
    #expect(alpha.file?.hasSuffix("symbolize-me.c") == true)
    #expect(alpha.line == 2)
    let call = try #require(found[program.returnFromAlpha - 1]?.first)
    #expect(call.function == "main")
    #expect(call.line == 9)
  }

  @Test func returnAddressesAreLookedUpOneByteEarlierExceptTheFaultingPC() throws {
    let directory = try TestSupport.makeTemporaryDirectory("sym")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let program = try Self.buildCProgram(in: directory)
    let backend = try #require(Self.backends().first, "no symbolizer installed")
    let symbolizer = Symbolizer(backend: backend, demangler: nil)

    // The instruction after `call alpha` is on line 10 (return beta(2)); the call is on line 9.
    let plain = symbolizer.locations(module: program.path, offsets: [program.returnFromAlpha])
    #expect(plain[program.returnFromAlpha]?.first?.line == 10)

    var finding = FindingRecord(kind: "heap-buffer-overflow")
    finding.access = "WRITE"
    let returnFrame = StackFrame(module: program.path, offset: HexNumber(program.returnFromAlpha))
    finding.accessStack = [
      StackFrame(module: program.path, offset: HexNumber(program.alpha)), returnFrame,
    ]
    finding.allocationStack = [returnFrame]
    var findings = [finding]
    symbolizer.symbolize(&findings)
    let symbolized = findings[0]
    #expect(symbolized.accessStack?[0].function == "alpha")
    #expect(symbolized.accessStack?[0].line == 2)
    #expect(symbolized.accessStack?[1].line == 9)
    #expect(symbolized.allocationStack?[0].function == "main")
    #expect(symbolized.allocationStack?[0].line == 9)
  }

  @Test func swiftNamesAreDemangled() throws {
    let swiftc = try #require(ToolProcess.find("swiftc"), "swiftc not found")
    let backend = try #require(Self.backends().first, "no symbolizer installed")
    let demangler = try #require(ToolProcess.find("swift-demangle"), "swift-demangle not found")
    let directory = try TestSupport.makeTemporaryDirectory("swiftsym")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let source = (directory as NSString).appendingPathComponent("greeter.swift")
    try """
    @inline(never) func greet(_ name: String, times: Int) -> Int {
      return name.utf8.count * times
    }
    print(greet("swift", times: 2))
    """.write(toFile: source, atomically: true, encoding: .utf8)
    let binary = (directory as NSString).appendingPathComponent("greeter")
    let compile = try ToolProcess.capture(
      swiftc, ["-g", "-Onone", "-module-name", "Greeter", source, "-o", binary],
      mergeStandardError: true)
    try #require(compile.status == 0, "swiftc failed: \(compile.text)")
    let mangled = "$s7Greeter5greet_5timesSiSS_SitF"
    let offset = try TestSupport.symbolOffset(mangled, in: binary)

    let symbolizer = Symbolizer(backend: backend, demangler: demangler)
    let location = try #require(
      symbolizer.locations(module: binary, offsets: [offset + 4])[offset + 4]?.first)
    #expect(location.function == "greet(_:times:)")
    #expect(location.file?.hasSuffix("greeter.swift") == true)
    #expect(location.line == 1 || location.line == 2)
    #expect(Symbolizer.isMangledSwift(mangled) && Symbolizer.isMangledSwift("_" + mangled))
    #expect(!Symbolizer.isMangledSwift("main"))
    let names = symbolizer.demangleSwift([mangled, "plain_c_name"])
    #expect(names[mangled] == "greet(_:times:)")
    #expect(names["plain_c_name"] == "plain_c_name")
  }

  @Test func withoutAToolFramesStayModuleAndOffset() throws {
    let symbolizer = Symbolizer(backend: .none, demangler: nil)
    var finding = FindingRecord(kind: "double-free")
    finding.accessStack = [
      StackFrame(pc: HexNumber(0x1234), module: "/bin/sh", offset: HexNumber(0x234))
    ]
    var findings = [finding]
    symbolizer.symbolize(&findings)
    #expect(findings[0].accessStack?[0].isSymbolized == false)
    let text = ReportRenderer(currentDirectory: "/").render(findings[0])
    #expect(text.contains("    #0 0x0000000000001234 (/bin/sh+0x234)\n"))
    #expect(text.hasSuffix("SUMMARY: HeapPatrol: double-free (/bin/sh+0x234)\n"))
  }

  @Test func theEnvironmentChoosesTheTool() {
    var environment = ProcessInfo.processInfo.environment
    environment["HEAPPATROL_SYMBOLIZER"] = "/usr/bin/addr2line"
    #expect(
      Symbolizer.discover(environment: environment).backend
        == .addr2line(path: "/usr/bin/addr2line"))
    environment["HEAPPATROL_SYMBOLIZER"] = "/opt/llvm/bin/llvm-symbolizer"
    #expect(
      Symbolizer.discover(environment: environment).backend
        == .llvmSymbolizer(path: "/opt/llvm/bin/llvm-symbolizer"))
    environment["HEAPPATROL_SYMBOLIZER"] = "none"
    #expect(Symbolizer.discover(environment: environment).backend == .none)
    // Without a choice: llvm-symbolizer from PATH or the toolchain when there is one.
    environment["HEAPPATROL_SYMBOLIZER"] = nil
    if let found = ToolProcess.find("llvm-symbolizer", environment: environment) {
      #expect(Symbolizer.discover(environment: environment).backend == .llvmSymbolizer(path: found))
    }
    // The toolchain directory next to swiftc is searched even when PATH lacks it.
    environment["PATH"] = "/nonexistent"
    #expect(ToolProcess.searchDirectories(environment: environment).contains("/opt/swift/usr/bin"))
  }

  @Test func missingModulesAreNotFatal() {
    let symbolizer = Symbolizer.discover()
    let found = symbolizer.locations(module: "/nonexistent/module.so", offsets: [0x10, 0x20])
    #expect(found[0x10] == [] && found[0x20] == [])
  }

  @Test func parsesAddr2lineGroupsWithInlinedFrames() {
    let output = """
      0x0000000000001139
      helper
      /src/t.c:2
      leaf
      /src/t.c:4 (discriminator 1)
      0x0000000000009999
      ??
      ??:0
      0x0000000000001140
      main
      /src/t.c:?

      """
    let parsed = Symbolizer.parseAddr2line(output)
    #expect(
      parsed[0x1139] == [
        SymbolLocation(function: "helper", file: "/src/t.c", line: 2),
        SymbolLocation(function: "leaf", file: "/src/t.c", line: 4),
      ])
    #expect(parsed[0x9999] == [])
    #expect(parsed[0x1140] == [SymbolLocation(function: "main", file: "/src/t.c", line: nil)])
  }
}
