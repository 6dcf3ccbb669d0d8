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

    @Test("random sequences agree with Linux", arguments: 0..<8)
    func randomSequences(batch: Int) {
      var failures = 0
      for seed in UInt64(batch * 250)..<UInt64(batch * 250 + 250) where failures < 2 {
        let report = Self.run(seed: seed, steps: 60, pages: 48)
        if !report.passed { failures += 1 }
        #expect(report.passed, "\(report)")
      }
    }
  #endif
}
