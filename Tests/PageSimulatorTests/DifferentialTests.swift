// The simulator against the kernel: seeded random page-operation sequences, compared step by step
// (return/errno, page accessibility, VMA count, fault deltas). The real side exists only on Linux.

import DifferentialHarness
import PageSimulator
import PageSpace
import Testing

@Suite("Simulator against the kernel (differential)")
struct DifferentialTests {
  #if os(Linux)
    static func run(seed: UInt64, steps: Int, pages: Int) -> DifferentialReport {
      DifferentialRun(
        seed: seed, steps: steps, arenaPages: pages,
        makeA: { SystemPageSpace(faultCounting: .thread) },
        makeB: { SimulatedPageSpace() }
      ).run()
    }

    /// (arena pages, steps per sequence, seeds): small arenas make operations collide more often.
    static let shapes: [(Int, Int, Int)] = [(48, 60, 2000), (12, 120, 1000), (96, 150, 400)]

    @Test("random sequences agree with Linux", arguments: 0..<3, 0..<4)
    func randomSequences(shape: Int, batch: Int) {
      let (pages, steps, seeds) = Self.shapes[shape]
      let perBatch = seeds / 4
      var failures = 0
      let first = UInt64(shape * 1_000_000 + batch * perBatch)
      for seed in first..<first + UInt64(perBatch) where failures < 2 {
        let report = Self.run(seed: seed, steps: steps, pages: pages)
        if !report.passed { failures += 1 }
        #expect(report.passed, "\(report)")
      }
    }
  #endif
}
