// The simulator against the kernel: seeded random page-operation sequences, compared step by step
// (return/errno, page accessibility, VMA count, fault deltas). The real side exists only on Linux.

import DifferentialHarness
import PageSimulator
import PageSpace
import Testing

#if canImport(Glibc)
  import Glibc
#endif

@Suite("Simulator against the kernel (differential)")
struct DifferentialTests {
  #if os(Linux)
    /// (arena pages, steps per sequence, seeds): small arenas make operations collide more often.
    static let shapes: [(Int, Int, Int)] = [(48, 60, 2000), (12, 120, 1000), (96, 150, 400)]

    @Test("random sequences agree with Linux", arguments: 0..<3, 0..<4)
    func randomSequences(shape: Int, batch: Int) {
      let (pages, steps, seeds) = Self.shapes[shape]
      // SIM_DIFFERENTIAL_SCALE=n runs n times as many seeds (the default keeps the suite short).
      let scale = getenv("SIM_DIFFERENTIAL_SCALE").flatMap { Int(String(cString: $0)) } ?? 1
      let perBatch = seeds * max(1, scale) / 4
      var failures = 0
      var noise = 0
      let first = UInt64(shape * 1_000_000 + batch * perBatch)
      for seed in first..<first + UInt64(perBatch) where failures < 2 {
        let run = DifferentialRun(
          seed: seed, steps: steps, arenaPages: pages,
          makeA: { SystemPageSpace(faultCounting: .thread) },
          makeB: { SimulatedPageSpace() })
        var quick = run
        quick.shrinks = false
        let report = quick.run()
        guard !report.passed else { continue }
        // The simulator is deterministic: a real disagreement comes back every time the sequence is
        // replayed. About once in 20,000 sequences, while a memory-hungry test ran in parallel, the
        // real side took one fault the sequence does not explain and the replay agreed; such a
        // one-off is counted as measurement noise (and printed), a reproducible one fails.
        if run.disagreementIsNoise(report) {
          noise += 1
          print("differential: seed \(seed) disagreed once and agreed on two replays (noise)")
        } else {
          failures += 1
          Issue.record("\(run.run())")
        }
      }
      #expect(noise <= 2, "\(noise) sequences of \(perBatch) had unreproducible real-side noise")
    }

    /// Near the real max_map_count: in a child process (the VMA count is process-wide), the real
    /// process is filled with VMAs to a few dozen below the limit, and the simulator is given the
    /// same count as its baseline and the same limit, so both meet the limit on the same step (mmap
    /// reaching L + 1, splits needing count < L, madvise's EAGAIN, the partial two-split mprotect).
    static let limitReportPath = "/tmp/heappatrol-simulator-limit-report.txt"

    static func appendToReport(_ text: String) {
      guard let file = fopen(limitReportPath, "a") else { return }
      fputs(text, file)
      fclose(file)
    }

    @Test("random sequences agree with Linux near max_map_count")
    func nearTheLimit() async {
      unlink(Self.limitReportPath)
      await #expect(processExitsWith: .success) {
        let real = SystemPageSpace(faultCounting: .thread)
        // The first caught SIGSEGV gives the thread an alternate signal stack (2 VMAs): take it now,
        // or the simulator's baseline would be 2 short from the first invalid access on.
        if let probe = try? real.map(at: nil, length: 4096, protection: .none, flags: []) {
          _ = try? real.load(probe)
          try? real.unmap(probe, length: 4096)
        }
        let limit = real.maxMapCount
        let count = real.vmaCount
        for _ in 0..<(limit - 12 - count) {
          _ = try? real.map(at: nil, length: 4096, protection: .readWrite, flags: .shared)
        }
        guard real.vmaCount == limit - 12 else {
          Self.appendToReport("could not fill: \(real.vmaCount) VMAs, limit \(limit)\n")
          exit(1)
        }
        var failures = 0
        var noise = 0
        for seed in UInt64(5_000_000)..<5_000_150 where failures < 2 {
          let run = DifferentialRun(
            seed: seed, steps: 80, arenaPages: 24,
            makeA: { SystemPageSpace(faultCounting: .thread) },
            makeB: { () -> SimulatedPageSpace in
              let space = SimulatedPageSpace()
              space.maxMapCount = limit
              space.vmaBaseline = SystemPageSpace().vmaCount
              return space
            })
          var quick = run
          quick.shrinks = false
          let report = quick.run()
          guard !report.passed else { continue }
          // Near the limit the real side occasionally takes one fault more than the sequence explains
          // (seen only in this crowded child, never in the runs above). A disagreement that does not
          // come back when the same sequence is replayed is counted as such noise; a reproducible one
          // is a failure.
          if run.disagreementIsNoise(report) {
            noise += 1
          } else {
            failures += 1
            Self.appendToReport("\(run.run())\n")
          }
        }
        if noise > 5 {
          Self.appendToReport("\(noise) of 150 sequences had unreproducible real-side noise\n")
        }
        if failures > 0 || noise > 5 { exit(1) }
      }
      if let file = fopen(Self.limitReportPath, "r") {
        var text = ""
        var buffer = [CChar](repeating: 0, count: 4096)
        while fgets(&buffer, 4096, file) != nil { text += String(cString: buffer) }
        fclose(file)
        Issue.record("near the limit: \(text)")
      }
    }
  #endif
}
