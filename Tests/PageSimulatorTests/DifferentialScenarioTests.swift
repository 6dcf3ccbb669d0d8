// Hand-written sequences run against the kernel and the simulator with the differential harness:
// the corners random sequences reach rarely (anon_vma identity, guard markers and merging).

import DifferentialHarness
import PageSimulator
import PageSpace
import Testing

@Suite("Simulator against the kernel (scenarios)")
struct DifferentialScenarioTests {
  #if os(Linux)
    static func span(_ page: Int, _ pages: Int) -> ArenaSpan {
      ArenaSpan(page: page, length: UInt(pages) * 4096)
    }

    static let scenarios: [(String, [PageOperation])] = [
      (
        "guard markers on two untouched private regions, then the gap filled",
        [
          .map(span(0, 4), .readWrite, .fixed), .map(span(5, 4), .readWrite, .fixed),
          .advise(span(0, 1), .guardInstall), .advise(span(8, 1), .guardInstall),
          .map(span(4, 1), .readWrite, .fixed),
        ]
      ),
      (
        "guard markers on shared anonymous memory, then dump flags",
        [
          .map(span(6, 5), .write, [.fixed, .shared]), .advise(span(4, 6), .dontDump),
          .advise(span(7, 4), .guardInstall), .advise(span(8, 3), .doDump),
        ]
      ),
      (
        "two touched regions, gap filled",
        [
          .map(span(0, 4), .readWrite, .fixed), .map(span(5, 4), .readWrite, .fixed),
          .touch(page: 0, count: 1, write: true, value: 1),
          .touch(page: 5, count: 1, write: true, value: 1),
          .map(span(4, 1), .readWrite, .fixed),
        ]
      ),
      (
        "touched RW made NONE next to a fresh NONE",
        [
          .map(span(0, 4), .readWrite, .fixed), .touch(page: 0, count: 4, write: true, value: 1),
          .protect(span(0, 4), .none), .map(span(4, 4), .none, .fixed),
          .protect(span(0, 8), .readWrite),
        ]
      ),
      (
        "a page written next to a touched neighbour reuses its anon_vma",
        [
          .map(span(0, 4), .readWrite, .fixed), .touch(page: 0, count: 1, write: true, value: 1),
          .map(span(4, 4), .none, .fixed), .protect(span(4, 4), .readWrite),
          .touch(page: 5, count: 1, write: true, value: 2), .protect(span(5, 1), .none),
          .protect(span(5, 1), .readWrite),
        ]
      ),
    ]

    @Test("scenario agrees with Linux", arguments: 0..<scenarios.count)
    func scenario(index: Int) {
      let (name, operations) = Self.scenarios[index]
      let run = DifferentialRun(
        seed: 0, steps: 0, arenaPages: 16,
        makeA: { SystemPageSpace(faultCounting: .thread) },
        makeB: { SimulatedPageSpace() })
      let disagreements = run.replay(operations)
      #expect(disagreements.isEmpty, "\(name): \(disagreements)")
    }
  #endif
}
