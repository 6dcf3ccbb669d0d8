import Foundation
import HeapPatrolTool
import Testing

@Suite struct LogReaderTests {
  static let fullFinding = """
    {"heappatrol":1,"kind":"use-after-free","code":"FRDOPN","access":"READ","address":"0x7f0000001008",\
    "pid":42,"thread":43,"offset":8,"relation":"inside","distance":8,"block":{"index":7,\
    "address":"0x7f0000001000","size":48,"alignment":16,"api":"malloc","state":"quarantined","thread":43,\
    "freeApi":"free","freeThread":44},"accessStack":[{"pc":"0x55d0c0a011c9","module":"/bin/x","offset":"0x11c9"}],\
    "allocationStack":[],"freeStack":[{"pc":"0x55d0c0a01200","module":"/bin/x","offset":"0x1200"}],\
    "message":"use-after-free: READ ...","futureField":{"nested":[1,2]}}
    """

  @Test func readsEveryFieldOfAFinding() throws {
    let contents = LogReader.parse(Data(Self.fullFinding.utf8), file: "log.jsonl")
    #expect(contents.malformed.isEmpty)
    let finding = try #require(contents.findings.first?.record)
    #expect(finding.kind == "use-after-free")
    #expect(finding.code == "FRDOPN")
    #expect(finding.access == "READ")
    #expect(finding.address?.value == 0x7f00_0000_1008)
    #expect(finding.pid == 42 && finding.thread == 43)
    #expect(finding.offset == 8 && finding.relation == "inside" && finding.distance == 8)
    let block = try #require(finding.block)
    #expect(block.index == 7 && block.size == 48 && block.alignment == 16 && block.api == "malloc")
    #expect(block.address?.value == 0x7f00_0000_1000)
    #expect(block.state == "quarantined" && block.isFreed)
    #expect(block.freeApi == "free" && block.freeThread == 44)
    #expect(finding.accessStack?.first?.offset?.value == 0x11c9)
    #expect(finding.accessStack?.first?.module == "/bin/x")
    #expect(finding.allocationStack?.isEmpty == true)
    #expect(finding.freeStack?.first?.pc?.value == 0x55d0_c0a0_1200)
  }

  @Test func numbersMayBeHexStringsDecimalStringsOrIntegers() throws {
    let line = #"{"kind":"leak","address":4096,"firstBadByte":"255","count":3,"bytes":48}"#
    let finding = try #require(LogReader.parse(Data(line.utf8), file: "f").findings.first?.record)
    #expect(finding.address?.value == 4096)
    #expect(finding.firstBadByte?.value == 255)
    #expect(finding.count == 3 && finding.bytes == 48)
    #expect(HexNumber.parse("0X1F") == 31)
    #expect(HexNumber.parse("zz") == nil)
  }

  @Test func malformedLinesAreReportedWithFileAndLineAndSkipped() {
    let text = """
      {"heappatrol":1,"kind":"double-free","address":"0x10"}

      this is not json
      {"heappatrol":1,"kind":"double-free","block":{"size":"large"}}
      {"heappatrol":1,"neither":true}
      [1,2,3]
      {"heappatrol":1,"event":"exit","pid":9,"findings":1}
      {"heappatrol":1,"kind":"leak","count":1,"byt
      """
    let contents = LogReader.parse(Data(text.utf8), file: "run.jsonl")
    #expect(contents.findings.map(\.record.kind) == ["double-free"])
    #expect(contents.findings.first?.line == 1)
    #expect(contents.events.map(\.event) == ["exit"])
    #expect(contents.events.first?.findings == 1)
    #expect(contents.malformed.map(\.line) == [3, 4, 5, 6, 8])
    #expect(contents.malformed.allSatisfy { $0.file == "run.jsonl" })
    #expect(contents.malformed[1].reason.contains("block.size"))
    #expect(contents.malformed[0].description.hasPrefix("run.jsonl:3: not a JSON object"))
  }

  @Test func readsEveryProcessLogOfADirectoryInPidOrder() throws {
    let directory = try TestSupport.makeTemporaryDirectory("logs")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    for (pid, kind) in [(1200, "leak"), (99, "double-free"), (1000, "invalid-free")] {
      try #"{"kind":"\#(kind)","pid":\#(pid)}"#.write(
        toFile: "\(directory)/\(pid).jsonl", atomically: true, encoding: .utf8)
    }
    try "ignored".write(toFile: "\(directory)/notes.txt", atomically: true, encoding: .utf8)
    let contents = LogReader.read(directory: directory)
    #expect(contents.findings.map(\.record.pid) == [99, 1000, 1200])
    #expect(contents.malformed.isEmpty)
  }

  @Test func anUnreadableFileIsReportedNotFatal() {
    let contents = LogReader.read(file: "/nonexistent/heappatrol.jsonl")
    #expect(contents.findings.isEmpty)
    #expect(contents.malformed.first?.reason == "cannot read the file")
  }
}
