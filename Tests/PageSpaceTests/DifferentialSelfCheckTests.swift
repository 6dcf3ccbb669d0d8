import DifferentialHarness
import PageSpace
import Testing

@Suite struct DifferentialSelfCheckTests {
  @Test func realAgainstRealAgrees() {
    for seed in UInt64(1)...400 {
      let run = DifferentialRun(
        seed: seed, steps: 100, arenaPages: 64,
        makeA: { SystemPageSpace(faultCounting: .thread) },
        makeB: { SystemPageSpace(faultCounting: .thread) })
      let report = run.run()
      #expect(report.passed, "\(report)")
    }
  }
}
