import CShims
import Foundation
import PageSpace
import Testing

@testable import HeapPatrol

/// Renders with a real depot and resolver, into Strings.
final class RenderHarness {
  let depot: StackDepot
  let memory: UnsafeMutableRawPointer
  let resolver: ModuleResolver
  let renderer: FindingRenderer

  init() throws {
    depot = try #require(StackDepot(stackCapacity: 64, pcCapacity: 1024))
    memory = UnsafeMutableRawPointer.allocate(byteCount: ModuleResolver.memorySize, alignment: 16)
    resolver = ModuleResolver(memory: memory)
    renderer = FindingRenderer(depot: depot, modules: resolver, pid: 4242)
  }

  deinit {
    depot.destroy()
    memory.deallocate()
  }

  func stack(_ frames: [UInt]) -> StackID { frames.withUnsafeBufferPointer { depot.insert($0) } }

  func render(_ body: (inout ReportBuffer) -> Void) -> String {
    let capacity = 1 << 16
    let bytes = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
    defer { bytes.deallocate() }
    var out = ReportBuffer(base: bytes, capacity: capacity)
    body(&out)
    return String(decoding: out.bytes, as: UTF8.self)
  }

  func text(_ finding: Finding) -> String { render { renderer.renderText(finding, into: &$0) } }

  func json(_ finding: Finding) throws -> [String: Any] {
    let line = render { renderer.renderJSON(finding, into: &$0) }
    #expect(line.hasSuffix("\n") && line.filter { $0 == "\n" }.count == 1, "one line")
    let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
    return try #require(object as? [String: Any])
  }
}

/// A PC inside this test binary, and what the resolver says about it.
@inline(never)
func codeAddressInTestBinary() -> UInt {
  var frames = [UInt](repeating: 0, count: 1)
  _ = frames.withUnsafeMutableBufferPointer { cshim_backtrace($0.baseAddress, 1, 0) }
  return frames[0]
}

@Suite("Reports")
struct ReportTests {
  @Test("the buffer formats decimals, hex, JSON escapes and flushes to a descriptor when full")
  func buffer() throws {
    let harness = try RenderHarness()
    let text = harness.render { out in
      out.append(decimal: 0)
      out.append(" ")
      out.append(decimal: -42)
      out.append(" ")
      out.append(decimal: UInt.max)
      out.append(" ")
      out.append(decimal: Int.min)
      out.append(" ")
      out.append(hex: 0)
      out.append(" ")
      out.append(hex: 0xdead_beef)
      out.append(" ")
      out.append(address: 0x7f2a_1c3f_f00d)
      out.append(" ")
      let raw: [UInt8] = Array("a\"b\\c\n\u{1}é".utf8)
      raw.withUnsafeBufferPointer { out.appendJSONEscaped($0) }
    }
    #expect(
      text
        == "0 -42 18446744073709551615 -9223372036854775808 0x0 0xdeadbeef 0x00007f2a1c3ff00d a\\\"b\\\\c\\n\\u0001é"
    )
    // Without a sink, a full buffer truncates and says so.
    let bytes = UnsafeMutablePointer<UInt8>.allocate(capacity: 64)
    defer { bytes.deallocate() }
    var small = ReportBuffer(base: bytes, capacity: 64)
    for _ in 0..<100 { small.append("x") }
    #expect(small.count == 64 && small.truncated)
    // With a sink (a pipe), everything arrives.
    var fds: [Int32] = [0, 0]
    #expect(pipe(&fds) == 0)
    var flushing = ReportBuffer(base: bytes, capacity: 64, sink: fds[1])
    for index in 0..<1000 { flushing.append(decimal: index % 10) }
    flushing.flush()
    close(fds[1])
    let received = FileHandle(fileDescriptor: fds[0], closeOnDealloc: true).readDataToEndOfFile()
    #expect(received.count == 1000 && !flushing.truncated)
    #expect(String(decoding: received.prefix(12), as: UTF8.self) == "012345678901")
  }

  func overflowFinding(_ harness: RenderHarness, pc: UInt) -> Finding {
    let block = BlockSnapshot(
      index: 7, address: 0x7f2a_1c3f_f000, size: 13, alignment: 1, api: .malloc, state: .live,
      allocationThread: 11, allocationStack: harness.stack([pc, 0x10]))
    return Finding(
      kind: .heapBufferOverflow, access: .write, address: 0x7f2a_1c3f_f00d, block: block,
      relation: .pastEnd, distance: 0, thread: 12, accessStack: harness.stack([pc]))
  }

  @Test("overflow: the exact text layout")
  func overflowText() throws {
    let harness = try RenderHarness()
    let pc = codeAddressInTestBinary()
    let module = try #require(harness.resolver.resolve(pc))
    let location =
      String(decoding: module.path, as: UTF8.self) + "+0x" + String(module.offset, radix: 16)
    let pcText =
      "0x" + String(repeating: "0", count: 16 - String(pc, radix: 16).count) + String(pc, radix: 16)
    let text = harness.text(overflowFinding(harness, pc: pc))
    let expected = """
      =================================================================
      ==4242==ERROR: HeapPatrol: heap-buffer-overflow [ILLMEM] WRITE at 0x00007f2a1c3ff00d (thread 12)
        0x00007f2a1c3ff00d is 0 bytes past the end of block #7 (13 bytes, malloc) at 0x00007f2a1c3ff000
        accessed at:
          #0 \(pcText) (\(location))
        allocated by thread 11 at:
          #0 \(pcText) (\(location))
          #1 0x0000000000000010 (<unknown module>)
      SUMMARY: HeapPatrol: heap-buffer-overflow (\(location))

      """
    #expect(text == expected)
  }

  @Test("overflow: every JSON field")
  func overflowJSON() throws {
    let harness = try RenderHarness()
    let pc = codeAddressInTestBinary()
    let module = try #require(harness.resolver.resolve(pc))
    let json = try harness.json(overflowFinding(harness, pc: pc))
    #expect(json["heappatrol"] as? Int == 1)
    #expect(json["kind"] as? String == "heap-buffer-overflow")
    #expect(json["code"] as? String == "ILLMEM")
    #expect(json["access"] as? String == "WRITE")
    #expect(json["address"] as? String == "0x7f2a1c3ff00d")
    #expect(json["pid"] as? Int == 4242)
    #expect(json["thread"] as? Int == 12)
    #expect(json["offset"] as? Int == 13)
    #expect(json["relation"] as? String == "past-end")
    #expect(json["distance"] as? Int == 0)
    let block = try #require(json["block"] as? [String: Any])
    #expect(block["index"] as? Int == 7)
    #expect(block["address"] as? String == "0x7f2a1c3ff000")
    #expect(block["size"] as? Int == 13)
    #expect(block["alignment"] as? Int == 1)
    #expect(block["api"] as? String == "malloc")
    #expect(block["state"] as? String == "live")
    #expect(block["thread"] as? Int == 11)
    #expect(block["freeApi"] == nil && block["freeThread"] == nil)
    let access = try #require(json["accessStack"] as? [[String: Any]])
    #expect(access.count == 1)
    #expect(access[0]["pc"] as? String == "0x" + String(pc, radix: 16))
    #expect(access[0]["module"] as? String == String(decoding: module.path, as: UTF8.self))
    #expect(access[0]["offset"] as? String == "0x" + String(module.offset, radix: 16))
    let allocation = try #require(json["allocationStack"] as? [[String: Any]])
    #expect(allocation.count == 2)
    #expect(allocation[1]["pc"] as? String == "0x10" && allocation[1]["module"] == nil)
    #expect((json["freeStack"] as? [Any])?.isEmpty == true)
    #expect(
      json["message"] as? String
        == "heap-buffer-overflow: WRITE 0x00007f2a1c3ff00d is 0 bytes past the end of block #7 (13 bytes, malloc) at 0x00007f2a1c3ff000"
    )
    #expect(json["count"] == nil && json["bytes"] == nil && json["firstBadByte"] == nil)
  }

  @Test("use-after-free of a freed block: text and JSON name the free")
  func useAfterFree() throws {
    let harness = try RenderHarness()
    let block = BlockSnapshot(
      index: 3, address: 0x5000_0000, size: 100, alignment: 16, api: .newArray, state: .quarantined,
      allocationThread: 1, freeThread: 2, allocationStack: harness.stack([0x10]),
      freeStack: harness.stack([0x20, 0x30]), freeAPI: .deleteArray)
    let finding = Finding(
      kind: .useAfterFree, access: .read, address: 0x5000_0005, block: block, relation: .inside,
      distance: 5, thread: 2, accessStack: harness.stack([0x40]))
    let text = harness.text(finding)
    #expect(
      text.contains(
        "==4242==ERROR: HeapPatrol: use-after-free [FRDOPN] READ at 0x0000000050000005 (thread 2)\n"
      ))
    #expect(
      text.contains(
        "  0x0000000050000005 is 5 bytes inside of freed block #3 (100 bytes, operator new[]) at 0x0000000050000000\n"
      ))
    #expect(
      text.contains(
        "  freed by thread 2 at:\n    #0 0x0000000000000020 (<unknown module>)\n    #1 0x0000000000000030"
      ))
    #expect(text.hasSuffix("SUMMARY: HeapPatrol: use-after-free (<unknown module>)\n"))
    let json = try harness.json(finding)
    #expect(json["relation"] as? String == "inside")
    #expect(json["offset"] as? Int == 5 && json["distance"] as? Int == 5)
    let jsonBlock = try #require(json["block"] as? [String: Any])
    #expect(jsonBlock["state"] as? String == "quarantined")
    #expect(jsonBlock["freeApi"] as? String == "operator delete[]")
    #expect(jsonBlock["freeThread"] as? Int == 2)
    #expect(
      (json["freeStack"] as? [[String: Any]])?.map { $0["pc"] as? String } == ["0x20", "0x30"])
  }

  @Test("underflow: negative offset, before-start")
  func underflow() throws {
    let harness = try RenderHarness()
    let block = BlockSnapshot(
      index: 1, address: 0x6000_0000, size: 8, alignment: 16, api: .calloc, state: .live,
      allocationThread: 1, allocationStack: .none)
    let finding = Finding(
      kind: .heapBufferUnderflow, access: .write, address: 0x6000_0000 - 1, block: block,
      relation: .beforeStart, distance: 1, thread: 1)
    #expect(
      harness.text(finding).contains("is 1 byte before the start of block #1 (8 bytes, calloc)"))
    #expect(harness.text(finding).contains("  accessed at:\n    <no stack recorded>\n"))
    let json = try harness.json(finding)
    #expect(json["offset"] as? Int == -1)
    #expect(json["relation"] as? String == "before-start")
  }

  @Test("leak: grouped text and count/bytes in JSON")
  func leak() throws {
    let harness = try RenderHarness()
    let block = BlockSnapshot(
      index: 9, address: 0x7000_0000, size: 20, alignment: 16, api: .malloc, state: .live,
      allocationThread: 5, allocationStack: harness.stack([0x99]))
    let finding = Finding(
      kind: .leak, address: 0x7000_0000, block: block, thread: 5, detail: 2, bytes: 40)
    let text = harness.text(finding)
    #expect(text.contains("==4242==ERROR: HeapPatrol: leak [SHOWUNFREED] 40 bytes in 2 blocks\n"))
    #expect(
      text.contains(
        "  leak of 40 bytes in 2 blocks allocated (first: block #9, malloc, thread 5) at:\n    #0 0x0000000000000099"
      ))
    #expect(text.hasSuffix("SUMMARY: HeapPatrol: leak (<unknown module>)\n"))
    let json = try harness.json(finding)
    #expect(json["kind"] as? String == "leak" && json["code"] as? String == "SHOWUNFREED")
    #expect(json["count"] as? Int == 2 && json["bytes"] as? Int == 40)
    #expect(json["access"] == nil)
    #expect((json["allocationStack"] as? [[String: Any]])?.first?["pc"] as? String == "0x99")
  }

  @Test("canary corruption carries the first bad byte; invalid free has no block")
  func canaryAndInvalidFree() throws {
    let harness = try RenderHarness()
    let block = BlockSnapshot(
      index: 2, address: 0x8000_0000, size: 13, alignment: 16, api: .malloc, state: .live,
      allocationThread: 1, allocationStack: .none)
    let canary = Finding(
      kind: .canaryCorruption, address: 0x8000_0000, block: block, relation: .pastEnd, distance: 1,
      thread: 1, detail: 0x8000_000E)
    #expect(
      harness.text(canary).contains(
        "  first corrupted byte 0x000000008000000e is 1 byte past the end of block #2"))
    #expect(try harness.json(canary)["firstBadByte"] as? String == "0x8000000e")
    let invalid = Finding(
      kind: .invalidFree, address: 0x7ffd_0000_1000, thread: 3, accessStack: harness.stack([0x1]))
    let text = harness.text(invalid)
    #expect(
      text.contains(
        "invalid-free [NOTALL] at 0x00007ffd00001000 (thread 3)\n  0x00007ffd00001000 was not allocated by HeapPatrol"
      ))
    #expect(text.contains("  released at:\n"))
    let json = try harness.json(invalid)
    #expect(
      json["block"] == nil && json["offset"] == nil && json["relation"] == nil
        && json["access"] == nil)
    #expect(json["address"] as? String == "0x7ffd00001000")
  }

  @Test("events: warning and exit lines")
  func events() throws {
    let harness = try RenderHarness()
    let message = Array("VMA budget spent: \"x\"".utf8)
    let warning = harness.render { out in
      message.withUnsafeBufferPointer { harness.renderer.renderWarningJSON($0, into: &out) }
    }
    let object = try #require(
      try JSONSerialization.jsonObject(with: Data(warning.utf8)) as? [String: Any])
    #expect(object["heappatrol"] as? Int == 1 && object["event"] as? String == "warning")
    #expect(object["message"] as? String == "VMA budget spent: \"x\"" && object["kind"] == nil)
    let exit = harness.render { harness.renderer.renderExitJSON(findings: 3, into: &$0) }
    #expect(exit == "{\"heappatrol\":1,\"event\":\"exit\",\"pid\":4242,\"findings\":3}\n")
  }

  @Test("every finding kind renders valid JSON and a text report", arguments: FindingKind.allCases)
  func everyKind(kind: FindingKind) throws {
    let harness = try RenderHarness()
    let block = BlockSnapshot(
      index: 1, address: 0x9000_0000, size: 4, alignment: 16, api: .new, state: .released,
      allocationThread: 1, freeThread: 1, allocationStack: .none, freeAPI: .free)
    let finding = Finding(
      kind: kind, access: .read, address: 0x9000_0004, block: block, relation: .pastEnd, thread: 1,
      detail: 1, bytes: 4)
    let json = try harness.json(finding)
    #expect(json["kind"] as? String == kind.name.description)
    #expect(json["code"] as? String == kind.mpatrolCode.description)
    let text = harness.text(finding)
    #expect(text.contains("ERROR: HeapPatrol: \(kind.name) [\(kind.mpatrolCode)]"))
    #expect(text.contains("SUMMARY: HeapPatrol: \(kind.name)"))
  }
}
