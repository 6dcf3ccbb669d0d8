// Throughput of the simulator in the test build (debug): prints the figures and asserts only
// generous lower bounds. The release figures come from scripts/sim-bench.sh (see the README).

import PageSimulator
import PageSpace
import Testing

@Suite("Throughput (debug build)")
struct ThroughputTests {
  func rate(_ operations: Int, _ body: () throws -> Void) rethrows -> Double {
    let clock = ContinuousClock()
    let start = clock.now
    try body()
    let elapsed = clock.now - start
    let seconds =
      Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    return Double(operations) / max(seconds, 1e-9)
  }

  @Test func accessesWalksAndFaults() throws {
    let space = SimulatedPageSpace()
    let hot = try space.map(at: nil, length: 32 * page, protection: .readWrite, flags: [])
    try writeEach(space, hot, pages: 32)
    var sum = 0
    let hits = try rate(2_000_000) {
      for index in 0..<2_000_000 { sum &+= Int(try space.load(hot + UInt(index & 31) * page + 5)) }
    }
    let region = try space.map(at: nil, length: 100_000 * page, protection: .readWrite, flags: [])
    let faults = try rate(100_000) {
      for index in 0..<100_000 { try space.store(1, at: region + UInt(index) * page) }
    }
    let walks = try rate(1_000_000) {
      for index in 0..<1_000_000 {
        sum &+= Int(try space.load(region + UInt((index &* 97) % 100_000) * page))
      }
    }
    print(
      "simulator (debug build): \(Int(hits)) TLB-hit loads/s, \(Int(walks)) walks/s, \(Int(faults)) write faults/s"
    )
    #expect(sum == 2_000_000 * 7 + 1_000_000)
    #expect(hits > 200_000)
    #expect(walks > 20_000)
    #expect(faults > 10_000)
    // Touching a byte per page keeps no 4 KiB buffer per page: 100,000 pages fit in the sparse words.
    #expect(space.counters.residentPages == 100_032)
  }
}
