import PageSpace
import Testing

@testable import PageWorkloads

@Suite("Workload parser")
struct WorkloadParserTests {
  func parse(_ text: String) throws -> Workload { try Workload(name: "t", text: text) }

  func parseError(_ text: String) -> WorkloadParseError? {
    do {
      _ = try parse(text)
      return nil
    } catch let error as WorkloadParseError {
      return error
    } catch {
      return nil
    }
  }

  @Test func everyConstruct() throws {
    let workload = try parse(
      """
      # comment
      step "first"
      map a 16p rw shared populate
      map b 64k r noreserve locked stack hugepage
      reserve arena 4m align 2m
      map c 2p rwx at arena+4p noreplace
      map d 0x2000 none at arena
      file f 1m r shared cold
      write a 0..16
      read a 3
      touch read a 2.. stride 3 reverse
      touch write a random 100 seed 7
      protect a 4..5 r--
      advise a dontneed
      advise a 1 guard-install
      lock a; unlock a 0..2
      unmap a 8..16
      repeat 3 { write a 0..1 }
      fork kid
      in kid {
        step "child"
        write a
      }
      exit kid
      """)
    let operations = workload.statements.map(\.operation)
    #expect(operations.count == 21)
    #expect(operations[0] == .step(label: "first"))
    #expect(
      operations[1]
        == .map(
          RegionID(0), size: .pages(16), protection: .readWrite,
          options: MapOptions(flags: [.shared, .populate]),
          at: nil))
    #expect(
      operations[2]
        == .map(
          RegionID(1), size: .bytes(65536), protection: .read,
          options: MapOptions(flags: [.noReserve, .locked, .stack], hugePage: true), at: nil))
    #expect(
      operations[3]
        == .map(
          RegionID(2), size: .bytes(4 << 20), protection: .none,
          options: MapOptions(flags: .noReserve, alignment: .bytes(2 << 20)), at: nil))
    #expect(
      operations[4]
        == .map(
          RegionID(3), size: .pages(2), protection: [.read, .write, .exec], options: MapOptions(),
          at: Placement(base: RegionID(2), offset: .pages(4), noReplace: true)))
    #expect(
      operations[6]
        == .mapFile(
          RegionID(5), size: .bytes(1 << 20), protection: .read, shared: true, cache: .cold))
    #expect(operations[7] == .touch(.write, RegionID(0), PageSelection(first: 0, end: 16)))
    #expect(operations[8] == .touch(.read, RegionID(0), PageSelection(first: 3, end: 4)))
    #expect(
      operations[9]
        == .touch(
          .read, RegionID(0), PageSelection(first: 2, end: nil, stride: 3, order: .descending)))
    #expect(
      operations[10]
        == .touch(.write, RegionID(0), PageSelection(order: .random(count: 100, seed: 7))))
    #expect(operations[11] == .protect(RegionID(0), PageSelection(first: 4, end: 5), .read))
    #expect(operations[12] == .advise(RegionID(0), .all, .dontNeed))
    #expect(operations[13] == .advise(RegionID(0), PageSelection(first: 1, end: 2), .guardInstall))
    #expect(operations[14] == .lock(RegionID(0), .all))
    #expect(operations[15] == .unlock(RegionID(0), PageSelection(first: 0, end: 2)))
    #expect(
      operations[17]
        == .repeat(
          count: 3,
          body: [
            WorkloadStatement(
              .touch(.write, RegionID(0), PageSelection(first: 0, end: 1)),
              at: SourceLocation(line: 18, column: 12))
          ]))
    #expect(operations[18] == .fork(ChildID(0)))
    guard case .inChild(ChildID(0), 0, let body) = operations[19] else {
      Issue.record("expected an in block, got \(operations[19])")
      return
    }
    #expect(body.count == 2)
    #expect(workload.symbols.regionNames == ["a", "b", "arena", "c", "d", "f"])
    #expect(workload.usesFiles)
  }

  @Test func errorsHaveLineColumnExpectationAndToken() {
    let cases: [(String, Int, Int, String, String?)] = [
      ("map a 16q rw", 1, 7, "expected a size", "'16q'"),
      ("map a 16p\nwrite b", 2, 7, "unknown region", "'b'"),
      ("map a 1p\nprotect a 0..1 rq", 2, 16, "expected a protection", "'rq'"),
      ("map a 1p\nprotect a", 2, 10, "expected a protection", "end of input"),
      ("step first", 1, 6, "expected a quoted step label", "'first'"),
      ("step \"x", 1, 6, "unterminated string", nil),
      ("map a 1p\nrepeat 2 {\n write a\n", 4, 1, "expected '}'", "end of input"),
      ("map a 1p\nrepeat 2 { step \"s\" }", 2, 12, "step is not allowed inside repeat", "'step'"),
      ("map a 1p\nin kid { write a }", 2, 4, "no running child", "'kid'"),
      ("map a 1p\nadvise a 0..1 sideways", 2, 15, "expected an advice", "'sideways'"),
      ("map a 1p\nwrite a 5..2", 2, 12, "expected a page index at least 5", "'2'"),
      ("map a 1p @", 1, 10, "unexpected character", "'@'"),
      ("frobnicate", 1, 1, "expected a statement", "'frobnicate'"),
      ("map a 1p\nwrite a 0.1", 2, 10, "expected '..'", "'.'"),
      ("fork k\nin k { fork j }", 2, 8, "fork is only allowed at the top level", "'fork'"),
    ]
    for (text, line, column, message, found) in cases {
      guard let error = parseError(text) else {
        Issue.record("no error for \(text)")
        continue
      }
      #expect(error.location == SourceLocation(line: line, column: column), "\(text): \(error)")
      #expect(error.message.hasPrefix(message), "\(text): \(error)")
      #expect(error.found == found, "\(text): \(error)")
      #expect(error.description.hasPrefix("t:\(line):\(column): error: "))
    }
  }

  @Test func randomGarbageNeverCrashes() {
    var generator = SplitMix64(seed: 42)
    let alphabet = Array(
      "map read write a b 0..16 16p rw { } + at \" ; \n # step repeat fork in exit .x@\u{0}é".utf8)
    for _ in 0..<3000 {
      let length = Int(generator.next() % 80)
      var bytes: [UInt8] = []
      for _ in 0..<length { bytes.append(alphabet[Int(generator.next() % UInt64(alphabet.count))]) }
      let text = String(decoding: bytes, as: UTF8.self)
      // Either a workload or an error with a position inside the text: never a trap.
      if let error = parseError(text) {
        #expect(
          error.location.line >= 1
            && error.location.line <= text.split(separator: "\n", omittingEmptySubsequences: false)
              .count + 1
        )
      }
    }
  }

  @Test func streamsInBoundedChunks() throws {
    // A source that counts what was asked of it: the parser must not read ahead of what it needs
    // by more than one chunk.
    final class Counting: ByteSource {
      var produced = 0
      let total: Int
      let line = Array("write a 0..1\n".utf8)
      init(lines: Int) { total = 9 + lines * line.count }
      func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var count = 0
        while count < buffer.count && produced < total {
          buffer[count] =
            produced < 9 ? Array("map a 1p\n".utf8)[produced] : line[(produced - 9) % line.count]
          produced += 1
          count += 1
        }
        return count
      }
    }
    let source = Counting(lines: 200_000)
    var parser = WorkloadParser(source: source, sourceName: "big")
    var statements = 0
    while (try parser.next()) != nil {
      statements += 1
      if statements == 10 { #expect(source.produced <= WorkloadLexer.chunkSize) }
    }
    #expect(statements >= 200_000)
  }

  @Test func builtinWorkloadsParse() throws {
    #expect(BuiltinWorkloads.all.count > 40)
    for entry in BuiltinWorkloads.all { _ = try BuiltinWorkloads.workload(entry) }
  }

  @Test func addressTraces() throws {
    var reader = AddressTraceReader(
      source: StringByteSource("R 0x1000\n# c\n\nW 8192\n"), sourceName: "t")
    #expect(try reader.next() == TraceAccess(access: .read, address: 0x1000))
    #expect(try reader.next() == TraceAccess(access: .write, address: 8192))
    #expect(try reader.next() == nil)
    var bad = AddressTraceReader(source: StringByteSource("R 0x1000\nX 0x2\n"), sourceName: "t")
    _ = try bad.next()
    #expect(throws: WorkloadParseError.self) { try bad.next() }
    #expect(AddressTraceReader.looksLikeAddressTrace("# trace\nR 0x7f00\n"))
    #expect(!AddressTraceReader.looksLikeAddressTrace("map a 1p\n"))
  }
}

@Suite("Heap churn statements")
struct HeapChurnParserTests {
  @Test func heapAndChurnParse() throws {
    let workload = try Workload(
      name: "t", text: "heap h mprotect\nchurn h 100 seed 3 max 1m live 8\nheap g\nchurn g 5")
    let operations = workload.statements.map(\.operation)
    var churn = HeapChurn(operations: 100)
    churn.seed = 3
    churn.maximumSize = .bytes(1 << 20)
    churn.liveLimit = 8
    #expect(operations[0] == .heap(RegionID(0), .mprotect))
    #expect(operations[1] == .churn(RegionID(0), churn))
    #expect(operations[2] == .heap(RegionID(1), .markers))
    #expect(operations[3] == .churn(RegionID(1), HeapChurn(operations: 5)))
  }

  @Test func heapErrorsHaveLineAndColumn() {
    let cases: [(String, Int, Int, String)] = [
      ("heap h sideways", 1, 8, "expected a guard mechanism"),
      ("churn h 5", 1, 7, "unknown region"),
      ("heap h\nchurn h many", 2, 9, "expected how many malloc/free operations"),
      ("heap h\nchurn h 5 live 0", 2, 16, "expected a live-block limit"),
      ("heap h\nchurn h 5 max 0", 2, 15, "expected a block size of at least 1 byte"),
      ("heap h\nchurn h 5 fast", 2, 11, "expected a churn option"),
    ]
    for (text, line, column, message) in cases {
      do {
        _ = try Workload(name: "t", text: text)
        Issue.record("no error for \(text)")
      } catch {
        #expect(error.location == SourceLocation(line: line, column: column), "\(text): \(error)")
        #expect(error.message.hasPrefix(message), "\(text): \(error)")
      }
    }
  }

  /// The churn through GuardedHeap on the simulator: deterministic, and its fault count is at least
  /// one per allocated page run (the allocation fill writes every block).
  @Test func simulatedChurnIsDeterministic() throws {
    let workload = try BuiltinWorkloads.workload(BuiltinWorkloads.named("heap-churn-mprotect")!)
    let first = FaultComparison.simulate(workload)
    let second = FaultComparison.simulate(workload)
    #expect(first == second)
    #expect(first.count == 4 && first.allSatisfy { $0.errors.isEmpty })
    #expect(first[1].minorFaults > 1000)
    // mprotect guards: 2 VMAs per live block on top of the reservation.
    #expect(first[1].vmaCount > 64)
  }
}
