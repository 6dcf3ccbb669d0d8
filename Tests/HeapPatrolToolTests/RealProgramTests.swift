import Foundation
import HeapPatrolTool
import Testing

/// Programs no one here wrote, under `heappatrol run`: the same output as a plain run, zero findings,
/// their normal exit status. Each is skipped when not installed. The slowdown against a plain run is
/// printed for the README.
@Suite(.serialized) struct RealProgramTests {
  /// Runs `arguments` plainly and under heappatrol; compares stdout and returns the two wall times.
  static func compare(
    _ name: String, _ arguments: [String], in directory: String? = nil,
    environment: [String: String] = [:]
  ) throws {
    let plainStart = Date()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    try process.run()
    let plainOutput = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let plainSeconds = Date().timeIntervalSince(plainStart)
    try #require(process.terminationStatus == 0, "\(name) fails even without HeapPatrol")

    let checked = try TestSupport.runHeapPatrol(
      ["run", "--"] + arguments, environment: environment, currentDirectory: directory)
    #expect(checked.status == 0, "\(name) under heappatrol:\n\(checked.standardError)")
    #expect(checked.findings.isEmpty, "\(checked.standardError)")
    #expect(
      checked.standardOutput == String(decoding: plainOutput, as: UTF8.self),
      "\(name): output differs")
    let slowdown = checked.seconds / max(plainSeconds, 0.001)
    print(
      "heappatrol slowdown: \(name): plain \(String(format: "%.2f", plainSeconds)) s, "
        + "under heappatrol \(String(format: "%.2f", checked.seconds)) s (\(String(format: "%.1f", slowdown))x)"
    )
  }

  static func installed(_ tool: String) -> Bool { ToolProcess.find(tool) != nil }

  @Test(.enabled(if: installed("python3"), "python3 is not installed"))
  func python3JSONRoundTripOf200000Objects() throws {
    let script = """
      import json
      data = [{"id": i, "name": "item%d" % i, "tags": ["a", "b", str(i % 7)], "value": i * 0.5} for i in range(200000)]
      text = json.dumps(data)
      back = json.loads(text)
      assert back == data
      print(len(text), len(back), sum(item["id"] for item in back))
      """
    try Self.compare("python3", ["python3", "-c", script])
  }

  @Test(.enabled(if: installed("perl"), "perl is not installed"))
  func perlHashesAndSorting() throws {
    let script = """
      my %h; for my $i (1..50000) { $h{"k$i"} = [$i, "v" x ($i % 50)] }
      my $n = 0; $n += length($h{$_}[1]) for keys %h; print "$n\\n";
      my $s = join(",", sort { $a <=> $b } map { $_ * 3 } 1..100000); print length($s), "\\n";
      """
    // By default perl exits without freeing its interpreter's arenas (perl_free drops the only
    // pointers to them): real unreachable blocks, which valgrind reports too. perlhacktips' advice for
    // leak checkers is PERL_DESTRUCT_LEVEL=2, which makes perl free everything.
    try Self.compare("perl", ["perl", "-e", script], environment: ["PERL_DESTRUCT_LEVEL": "2"])
  }

  @Test(.enabled(if: installed("git"), "git is not installed"))
  func gitLogOnARealRepository() throws {
    let directory = try TestSupport.makeTemporaryDirectory("git")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    // Built without HeapPatrol: 40 commits touching a few files.
    var script =
      "set -e; git init -q .; git config user.email t@example.com; git config user.name Tester;"
    script += "for i in $(seq 1 40); do echo \"line $i\" >> notes.txt; echo $i > counter.txt;"
    script += " git add -A; git commit -q -m \"commit $i\"; done"
    let setup = try ToolProcess.capture(
      "/bin/sh", ["-c", script], currentDirectory: directory, mergeStandardError: true)
    try #require(setup.status == 0, "could not create the repository: \(setup.text)")
    try Self.compare("git log", ["git", "log", "--stat", "-p"], in: directory)
  }

  @Test(.enabled(if: installed("sqlite3"), "sqlite3 is not installed"))
  func sqlite3QueriesInMemory() throws {
    let sql = """
      CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, value REAL);
      WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000)
      INSERT INTO t SELECT i, 'name' || (i % 1000), i * 0.25 FROM n;
      CREATE INDEX t_name ON t(name);
      SELECT count(*), sum(value) FROM t;
      SELECT name, count(*) FROM t GROUP BY name ORDER BY name LIMIT 5;
      """
    try Self.compare("sqlite3", ["sqlite3", ":memory:", sql])
  }
}
