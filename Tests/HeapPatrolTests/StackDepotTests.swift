import CShims
import Foundation
import Testing

@testable import HeapPatrol

@Suite("Stack depot")
struct StackDepotTests {
  @Test("identical stacks share one id; different stacks get different ids; frames round-trip")
  func deduplication() throws {
    let depot = try #require(StackDepot(stackCapacity: 64, pcCapacity: 1024))
    defer { depot.destroy() }
    let a: [UInt] = [0x1000, 0x2000, 0x3000]
    let b: [UInt] = [0x1000, 0x2000, 0x3001]
    let idA = a.withUnsafeBufferPointer { depot.insert($0) }
    let idB = b.withUnsafeBufferPointer { depot.insert($0) }
    let idA2 = a.withUnsafeBufferPointer { depot.insert($0) }
    #expect(idA != .none && idB != .none)
    #expect(idA == idA2)
    #expect(idA != idB)
    #expect(depot.count == 2)
    #expect(Array(depot.frames(of: idA)) == a)
    #expect(Array(depot.frames(of: idB)) == b)
    #expect(depot.frames(of: .none).isEmpty)
    #expect(depot.frames(of: StackID(rawValue: 99)).isEmpty)
    // A prefix is a different stack.
    let prefix = a.withUnsafeBufferPointer {
      depot.insert(UnsafeBufferPointer(rebasing: $0[0..<2]))
    }
    #expect(prefix != idA && depot.count == 3)
    // Empty stacks are `.none`; over-long stacks are cut at maximumDepth.
    #expect([UInt]().withUnsafeBufferPointer { depot.insert($0) } == .none)
    let long = (1...100).map { UInt($0) }
    let longID = long.withUnsafeBufferPointer { depot.insert($0) }
    #expect(depot.frames(of: longID).count == StackDepot.maximumDepth)
  }

  @Test("a full depot drops new stacks but still finds the old ones")
  func capacity() throws {
    let depot = try #require(StackDepot(stackCapacity: 4, pcCapacity: 1024))
    defer { depot.destroy() }
    var ids: [StackID] = []
    for index in 1...4 {
      let frames: [UInt] = [UInt(index), 0xABC]
      ids.append(frames.withUnsafeBufferPointer { depot.insert($0) })
    }
    #expect(Set(ids).count == 4 && !ids.contains(.none))
    let fifth: [UInt] = [5, 0xABC]
    #expect(fifth.withUnsafeBufferPointer { depot.insert($0) } == .none)
    #expect(depot.droppedCount == 1)
    let first: [UInt] = [1, 0xABC]
    #expect(first.withUnsafeBufferPointer { depot.insert($0) } == ids[0])
    // The PC pool is a limit too.
    let small = try #require(StackDepot(stackCapacity: 64, pcCapacity: 8))
    defer { small.destroy() }
    let five: [UInt] = [1, 2, 3, 4, 5]
    let other: [UInt] = [6, 7, 8, 9]
    #expect(five.withUnsafeBufferPointer { small.insert($0) } != .none)
    #expect(other.withUnsafeBufferPointer { small.insert($0) } == .none)
  }

  @inline(never)
  func captureHere(_ depot: StackDepot) -> StackID { depot.capture(depth: 16) }

  @Test(
    "capture walks frame pointers: same call site, same id; the frames resolve to this test binary")
  func capture() throws {
    let depot = try #require(StackDepot())
    defer { depot.destroy() }
    var ids: [StackID] = []
    for _ in 0..<3 { ids.append(captureHere(depot)) }
    #expect(ids[0] != .none)
    #expect(ids[0] == ids[1] && ids[1] == ids[2])
    let frames = depot.frames(of: ids[0])
    #expect(frames.count >= 3)
    // Frame 0 is the return address into captureHere: inside this test executable.
    let memory = UnsafeMutableRawPointer.allocate(
      byteCount: ModuleResolver.memorySize, alignment: 16)
    defer { memory.deallocate() }
    let resolver = ModuleResolver(memory: memory)
    let resolved = try #require(resolver.resolve(frames[0]))
    let path = String(decoding: resolved.path, as: UTF8.self)
    #expect(
      path == CommandLine.arguments[0] || path.hasSuffix(".xctest") || path.contains("PackageTests")
    )
    // Cached second lookup gives the same answer.
    let again = try #require(resolver.resolve(frames[0]))
    #expect(again.offset == resolved.offset)
    #expect(resolver.resolve(0x10) == nil)
  }

  @Test("concurrent inserts of the same stacks agree on the ids")
  func concurrentInserts() async throws {
    let depot = try #require(StackDepot(stackCapacity: 4096, pcCapacity: 1 << 16))
    defer { depot.destroy() }
    let results = await withTaskGroup(of: [StackID].self) { group in
      for _ in 0..<4 {
        group.addTask {
          (0..<500).map { index in
            let frames: [UInt] = [UInt(index), UInt(index) * 7, 0x5000]
            return frames.withUnsafeBufferPointer { depot.insert($0) }
          }
        }
      }
      var all: [[StackID]] = []
      for await ids in group { all.append(ids) }
      return all
    }
    #expect(depot.count == 500)
    for ids in results.dropFirst() { #expect(ids == results[0]) }
  }

  @Test("capture cost (ns per capture, printed)")
  func captureCost() throws {
    let depot = try #require(StackDepot())
    defer { depot.destroy() }
    let iterations = 20_000
    _ = captureHere(depot)
    let start = cshim_monotonic_ns()
    for _ in 0..<iterations { _ = captureHere(depot) }
    let perCapture = Double(cshim_monotonic_ns() - start) / Double(iterations)
    print("stack capture (frame-pointer walk + depot lookup, depth 16): \(Int(perCapture)) ns")
    #expect(perCapture < 50_000)
  }
}
