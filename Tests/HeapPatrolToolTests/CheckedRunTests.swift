import Foundation
import HeapPatrolTool
import Testing

/// The `run` pipeline end to end with a stand-in preload library built here: it writes a JSON line
/// from every process it is loaded into, to the log path the CLI passes in HEAPPATROL_OPTIONS. This
/// checks the CLI's half of the contract (environment, per-process logs, symbolization, report, exit
/// status) independently of the real preload.
@Suite struct CheckedRunTests {
  static let fakePreloadSource = #"""
    #define _GNU_SOURCE
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <unistd.h>

    __attribute__((constructor)) static void fake_preload(void) {
      const char *options = getenv("HEAPPATROL_OPTIONS");
      const char *log = options ? strstr(options, "log=") : NULL;
      if (!log || getenv("FAKE_SILENT")) return;
      char path[4096];
      size_t length = 0;
      for (const char *p = log + 4; *p && *p != ',' && length < sizeof path - 32; p++) {
        if (p[0] == '%' && p[1] == 'p') {
          length += (size_t)snprintf(path + length, sizeof path - length, "%d", (int)getpid());
          p++;
        } else {
          path[length++] = *p;
        }
      }
      path[length] = 0;
      FILE *file = fopen(path, "a");
      if (!file) return;
      const char *finding = getenv("FAKE_FINDING");
      if (finding) fprintf(file, "%s\n", finding);
      fprintf(file, "{\"heappatrol\":1,\"event\":\"exit\",\"pid\":%d,\"findings\":%d}\n", (int)getpid(), finding != NULL);
      fclose(file);
    }
    """#

  /// A program that forks a child which execs /bin/true: two processes load the preload.
  static let forkingProgramSource = """
    #include <sys/wait.h>
    #include <unistd.h>
    __attribute__((noinline)) int alpha(int x) {
      return x * 3;
    }
    int main(void) {
      pid_t child = fork();
      if (child == 0) { execl("/bin/true", "true", (char *)0); _exit(127); }
      int status = 0;
      waitpid(child, &status, 0);
      return alpha(1) == 3 ? 0 : 1;
    }
    """

  /// A temporary install directory holding the fake `libHeapPatrolPreload.so` and a forking program.
  final class Sandbox {
    let directory: String
    let program: String
    let alphaOffset: UInt64
    var output = ""

    init() throws {
      directory = try TestSupport.makeTemporaryDirectory("run")
      try TestSupport.compileC(
        CheckedRunTests.fakePreloadSource,
        to: (directory as NSString).appendingPathComponent(InstallLayout.preloadLibraryName),
        arguments: ["-shared", "-fPIC"])
      program = (directory as NSString).appendingPathComponent("forker")
      try TestSupport.compileC(
        CheckedRunTests.forkingProgramSource, to: program, arguments: ["-g", "-O0"])
      alphaOffset = try TestSupport.symbolOffset("alpha", in: program)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func checkedRun(
      _ settings: CheckSettings = CheckSettings(), environment extra: [String: String] = [:]
    ) -> CheckedRun {
      var environment = ProcessInfo.processInfo.environment
      environment.removeValue(forKey: "LD_PRELOAD")
      environment.removeValue(forKey: "HEAPPATROL_OPTIONS")
      environment.removeValue(forKey: "SWIFT_BACKTRACE")
      environment.merge(extra) { _, new in new }
      let run = CheckedRun(
        layout: InstallLayout(directory: directory), settings: settings, environment: environment)
      run.renderer = ReportRenderer(currentDirectory: directory)
      run.write = { [unowned self] text in self.output += text }
      return run
    }

    /// A double free "released at" a frame inside alpha: frames other than a fault's first are return
    /// addresses, looked up one byte earlier, so alpha + 1 names alpha's first instruction.
    var doubleFreeLine: String {
      #"{"heappatrol":1,"kind":"double-free","code":"PRVFRD","address":"0x5000","pid":1,"thread":1,"#
        + #""accessStack":[{"pc":"0x1","module":"\#(program)","offset":"0x\#(String(alphaOffset + 1, radix: 16))"}],"#
        + #""unknownField":"kept"}"#
    }
  }

  @Test func reportsFindingsFromEveryProcessSymbolizedWithTheErrorExitCode() throws {
    let sandbox = try Sandbox()
    let settings = CheckSettings(
      jsonOutput: (sandbox.directory as NSString).appendingPathComponent("out.jsonl"))
    let run = sandbox.checkedRun(settings, environment: ["FAKE_FINDING": sandbox.doubleFreeLine])
    let result = try run.run(program: sandbox.program, arguments: [], displayName: "forker")
    #expect(result.programExit == .exited(0))
    #expect(result.exitCode == 99)
    #expect(result.findings.count == 2, "one finding from the parent, one from the exec'd child")
    #expect(result.events.filter { $0.event == "exit" }.count == 2)
    #expect(result.findings.allSatisfy { $0.accessStack?.first?.function == "alpha" })
    #expect(
      sandbox.output.contains(
        "==1==ERROR: HeapPatrol: double-free [PRVFRD] at 0x0000000000005000 (thread 1)\n"))
    #expect(sandbox.output.contains(" in alpha forker.c:3 ("))
    #expect(sandbox.output.hasSuffix("heappatrol: 2 findings (2 double-free) in forker\n"))

    // --json: the preload's fields as logged (unknown ones kept) plus function/file/line per frame.
    let json = try String(contentsOfFile: settings.jsonOutput!, encoding: .utf8)
    let lines = json.split(separator: "\n")
    #expect(lines.count == 2)
    let object = try #require(
      JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
    #expect(object["unknownField"] as? String == "kept")
    #expect(object["kind"] as? String == "double-free")
    let frame = try #require((object["accessStack"] as? [[String: Any]])?.first)
    #expect(frame["function"] as? String == "alpha")
    #expect((frame["file"] as? String)?.hasSuffix("forker.c") == true)
    #expect(frame["line"] as? Int == 3)
    #expect(frame["offset"] as? String == "0x" + String(sandbox.alphaOffset + 1, radix: 16))
  }

  @Test func withoutFindingsTheProgramsOwnStatusIsKept() throws {
    let sandbox = try Sandbox()
    let clean = try sandbox.checkedRun().run(program: sandbox.program, arguments: [])
    #expect(clean.findings.isEmpty && clean.exitCode == 0)
    #expect(sandbox.output.hasSuffix("heappatrol: no findings\n"))

    let exited = try sandbox.checkedRun().run(program: "sh", arguments: ["-c", "exit 7"])
    #expect(exited.programExit == .exited(7) && exited.exitCode == 7)

    sandbox.output = ""
    let killed = try sandbox.checkedRun().run(program: "sh", arguments: ["-c", "kill -TERM $$"])
    #expect(killed.programExit == .signaled(SIGTERM) && killed.exitCode == 128 + SIGTERM)
    #expect(sandbox.output.contains("heappatrol: sh was killed by signal 15"))
  }

  @Test func leaksAllocatedInsideASuppressedModuleAreNotFindings() throws {
    let sandbox = try Sandbox()
    let leak =
      #"{"heappatrol":1,"kind":"leak","pid":5,"count":2,"bytes":48,"allocationStack":["#
      + #"{"pc":"0x10","module":"/opt/swift/usr/lib/swift/linux/libXCTest.so","offset":"0x10"}]}"#
    var settings = CheckSettings()
    settings.leakSuppressedModules = ["libXCTest.so"]
    let run = sandbox.checkedRun(settings, environment: ["FAKE_FINDING": leak])
    let result = try run.run(program: "/bin/true", arguments: [])
    #expect(result.findings.isEmpty && result.exitCode == 0)
    #expect(
      sandbox.output.contains(
        "heappatrol: not reporting 1 leak(s) (48 bytes) allocated inside libXCTest.so\n"))

    let unsuppressed = try sandbox.checkedRun(environment: ["FAKE_FINDING": leak]).run(
      program: "/bin/true", arguments: [])
    #expect(unsuppressed.findings.map(\.kind) == ["leak"] && unsuppressed.exitCode == 99)
  }

  @Test func aProgramThePreloadDidNotRunInIsFlagged() throws {
    let sandbox = try Sandbox()
    let result = try sandbox.checkedRun(environment: ["FAKE_SILENT": "1"]).run(
      program: "/bin/true", arguments: [])
    #expect(result.exitCode == 0)
    #expect(
      sandbox.output.contains(
        "heappatrol: warning: /bin/true was not checked: the preload did not run in it"))
    sandbox.output = ""
    _ = try sandbox.checkedRun().run(program: "/bin/true", arguments: [])
    #expect(!sandbox.output.contains("warning"))
  }

  @Test func errorExitCodeIsConfigurable() throws {
    let sandbox = try Sandbox()
    let run = sandbox.checkedRun(
      CheckSettings(errorExitCode: 42), environment: ["FAKE_FINDING": sandbox.doubleFreeLine])
    #expect(try run.run(program: "/bin/true", arguments: []).exitCode == 42)
  }

  @Test func theChildGetsThePreloadAppendedTheOptionsAndNoSwiftBacktracer() throws {
    let sandbox = try Sandbox()
    let capture = (sandbox.directory as NSString).appendingPathComponent("environment.txt")
    let existing = "/lib/x86_64-linux-gnu/libm.so.6"
    let run = sandbox.checkedRun(
      CheckSettings(userOptions: "quarantine_bytes=1m", detectLeaks: false),
      environment: ["LD_PRELOAD": existing])
    let script =
      #"printf '%s\n%s\n%s\n' "$LD_PRELOAD" "$HEAPPATROL_OPTIONS" "$SWIFT_BACKTRACE" > "$0""#
    _ = try run.run(program: "sh", arguments: ["-c", script, capture])
    let lines = try String(contentsOfFile: capture, encoding: .utf8).split(separator: "\n").map(
      String.init)
    #expect(
      lines[0] == existing + ":"
        + (sandbox.directory as NSString).appendingPathComponent(InstallLayout.preloadLibraryName))
    #expect(lines[1].hasPrefix("text_report=0,quarantine_bytes=1m,log=/"))
    #expect(lines[1].hasSuffix("/%p.jsonl,detect_leaks=0"))
    #expect(lines[2] == "enable=no")
  }

  @Test func clearErrorsForAMissingProgramABadOptionAndAMissingPreload() throws {
    let sandbox = try Sandbox()
    #expect {
      try sandbox.checkedRun().run(program: "/nonexistent/program", arguments: [])
    } throws: { error in
      (error as? CheckError)?.exitCode == 127 && "\(error)".contains("no such file")
    }
    #expect {
      try sandbox.checkedRun().run(program: "no-such-command-heappatrol", arguments: [])
    } throws: { error in
      "\(error)".contains("command not found")
    }
    #expect {
      try sandbox.checkedRun(CheckSettings(userOptions: "quarantine_bytes=1m,bogus=1")).run(
        program: "true", arguments: [])
    } throws: { error in
      "\(error)" == "unknown option 'bogus' in --options (see `heappatrol options`)"
    }
    #expect {
      try sandbox.checkedRun(CheckSettings(userOptions: "detect_leaks")).run(
        program: "true", arguments: [])
    } throws: { error in
      "\(error)".contains("expected key=value")
    }
    let empty = InstallLayout(directory: "/tmp/hp-nowhere/.build-x/x86_64-unknown-linux-gnu/debug")
    #expect {
      try CheckedRun(layout: empty, settings: CheckSettings()).run(program: "true", arguments: [])
    } throws: { error in
      "\(error)".contains("swift build --product HeapPatrolPreload --scratch-path .build-x")
    }
  }

  @Test func optionAndPreloadComposition() {
    #expect(
      CheckedRun.childOptions(inherited: nil, user: nil, logDirectory: "/t", detectLeaks: true)
        == "text_report=0,log=/t/%p.jsonl")
    #expect(
      CheckedRun.childOptions(
        inherited: "limit=1g", user: "text_report=1", logDirectory: "/t", detectLeaks: false)
        == "text_report=0,limit=1g,text_report=1,log=/t/%p.jsonl,detect_leaks=0")
    #expect(CheckedRun.childPreload(existing: nil, library: "/l.so") == "/l.so")
    #expect(
      CheckedRun.childPreload(existing: "/a.so /b.so", library: "/l.so") == "/a.so /b.so:/l.so")
    #expect(CheckedRun.childPreload(existing: "/l.so", library: "/l.so") == "/l.so")
  }

  @Test func waitStatusDecoding() {
    #expect(ChildExit(waitStatus: 0) == .exited(0))
    #expect(ChildExit(waitStatus: 3 << 8) == .exited(3))
    #expect(ChildExit(waitStatus: 11) == .signaled(11))
    #expect(ChildExit(waitStatus: 0x80 | 6) == .signaled(6))  // core dumped
    #expect(ChildExit.signaled(11).shellStatus == 139)
  }
}
