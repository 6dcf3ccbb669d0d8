import DifferentialHarness
import PageSpace
import Testing

/// The differential harness checked against itself: the kernel against the kernel must agree on
/// every step, a deliberately wrong space must be caught and shrunk, and the generated sequences
/// must actually reach the interesting outcomes.
@Suite struct DifferentialSelfCheckTests {
  static func realAgainstReal(seed: UInt64, steps: Int = 100) -> DifferentialRun<
    SystemPageSpace, SystemPageSpace
  > {
    DifferentialRun(
      seed: seed, steps: steps, arenaPages: 64,
      makeA: { SystemPageSpace(faultCounting: .thread) },
      makeB: { SystemPageSpace(faultCounting: .thread) })
  }

  @Test func realAgainstRealAgreesOnSeveralHundredSeeds() {
    var failures = 0
    for seed in UInt64(1)...300 where failures < 3 {
      let report = Self.realAgainstReal(seed: seed).run()
      if !report.passed { failures += 1 }
      #expect(report.passed, "\(report)")
    }
  }

  @Test func splitMix64IsTheReferenceGenerator() {
    var random = SplitMix64(seed: 0)
    // The published SplitMix64 sequence for seed 0.
    #expect(random.next() == 0xE220_A839_7B1D_CDAF)
    #expect(random.next() == 0x6E78_9E6A_A1B9_65F4)
    #expect(random.next() == 0x06C4_5D18_8009_454F)
    var bounded = SplitMix64(seed: 99)
    #expect((0..<1000).allSatisfy { _ in (0..<7).contains(bounded.below(7)) })
  }

  @Test func sequencesAreDeterministicAndPrintable() {
    let generator = OperationGenerator(arenaPages: 64, pageSize: 4096, guardMarkers: true)
    let first = generator.sequence(seed: 1234, steps: 200)
    #expect(first == generator.sequence(seed: 1234, steps: 200))
    #expect(first != generator.sequence(seed: 1235, steps: 200))
    #expect(first.allSatisfy { !$0.description.isEmpty })
    #expect(
      PageOperation.map(ArenaSpan(page: 3, length: 2 * 4096), .readWrite, [.fixed, .populate])
        .description == "map p3 +2p rw- private fixed populate")
    #expect(
      PageOperation.advise(ArenaSpan(page: 5, offset: 1, length: 4095), .dontNeed).description
        == "advise p5+1 +1p-1 dontneed")
    #expect(
      PageOperation.touch(page: 2, count: 3, write: true, value: 9).description
        == "store p2 x3 value 9")
  }

  /// Every generated span stays inside the arena once the kernel rounds it to pages.
  @Test func spansStayInsideTheArena() {
    let generator = OperationGenerator(arenaPages: 16, pageSize: 4096, guardMarkers: true)
    for operation in generator.sequence(seed: 7, steps: 5000) {
      let span: ArenaSpan
      switch operation {
      case .map(let s, _, _), .protect(let s, _), .advise(let s, _), .unmap(let s), .lock(let s),
        .unlock(let s), .residency(let s):
        span = s
      case .touch(let page, let count, _, _):
        #expect(page >= 0 && page + count <= 16)
        continue
      }
      let end = UInt(span.page) * 4096 + span.offset + span.length
      #expect(span.page >= 0 && (end + 4095) / 4096 <= 16, "\(operation)")
    }
  }

  @Test func sequencesReachTheInterestingOutcomes() {
    var outcomes: Set<String> = []
    var sawFaults = false
    var sawData = false
    var sawSplits = false
    for seed in UInt64(1)...20 {
      let run = Self.realAgainstReal(seed: seed)
      var previousVMAs = 1
      for observation in run.observeA(run.operations()) {
        switch observation.outcome {
        case .failure(let error): outcomes.insert(error.name)
        case .success, .mapped, .resident: outcomes.insert("ok")
        case .touched(let results):
          for result in results {
            if case .fault = result { sawFaults = true }
            if case .loaded(let value) = result, value != 0 { sawData = true }
          }
        }
        if observation.vmaCount > previousVMAs { sawSplits = true }
        previousVMAs = observation.vmaCount
        if observation.faults.minor > 0 { outcomes.insert("faults") }
      }
    }
    #expect(outcomes.isSuperset(of: ["ok", "EINVAL", "ENOMEM", "EEXIST", "faults"]), "\(outcomes)")
    #expect(sawFaults && sawData && sawSplits)
  }

  @Test func aWrongSpaceIsCaughtAndShrunk() throws {
    var caught: DifferentialReport? = nil
    for seed in UInt64(1)...30 {
      let run = DifferentialRun(
        seed: seed, steps: 100, arenaPages: 64,
        makeA: { SystemPageSpace(faultCounting: .thread) },
        makeB: { ForgetfulSpace(base: SystemPageSpace(faultCounting: .thread)) })
      let report = run.run()
      if !report.passed {
        caught = report
        let replayed = run.replay(report.reproducer)
        #expect(!replayed.isEmpty, "the reproducer reproduces")
        break
      }
    }
    let report = try #require(caught, "ignoring MADV_DONTNEED went unnoticed for 30 seeds")
    #expect(report.reproducer.count <= 4, "\(report)")
    #expect(
      report.reproducer.contains { if case .advise(_, .dontNeed) = $0 { true } else { false } })
    #expect(report.description.contains("1. "))
  }
}

/// A page space with a planted bug: `MADV_DONTNEED` succeeds without dropping anything.
struct ForgetfulSpace: PageAccessInspecting {
  let base: SystemPageSpace
  var pageSize: UInt { base.pageSize }
  func map(at hint: UInt?, length: UInt, protection: PageProtection, flags: MapFlags)
    throws(PageError) -> UInt
  {
    try base.map(at: hint, length: length, protection: protection, flags: flags)
  }
  func unmap(_ address: UInt, length: UInt) throws(PageError) {
    try base.unmap(address, length: length)
  }
  func protect(_ address: UInt, length: UInt, to protection: PageProtection) throws(PageError) {
    try base.protect(address, length: length, to: protection)
  }
  func advise(_ address: UInt, length: UInt, _ advice: PageAdvice) throws(PageError) {
    if advice == .dontNeed { return }
    try base.advise(address, length: length, advice)
  }
  func lock(_ address: UInt, length: UInt) throws(PageError) {
    try base.lock(address, length: length)
  }
  func unlock(_ address: UInt, length: UInt) throws(PageError) {
    try base.unlock(address, length: length)
  }
  func residency(_ address: UInt, length: UInt, into vector: UnsafeMutableBufferPointer<UInt8>)
    throws(PageError)
  {
    try base.residency(address, length: length, into: vector)
  }
  var vmaCount: Int { base.vmaCount }
  func vmaCount(in range: AddressRange) -> Int { base.vmaCount(in: range) }
  var maxMapCount: Int { base.maxMapCount }
  var faultCounts: FaultCounts { base.faultCounts }
  var supportsGuardMarkers: Bool { base.supportsGuardMarkers }
  func load(_ address: UInt) throws(PageFault) -> UInt8 { try base.load(address) }
  func store(_ value: UInt8, at address: UInt) throws(PageFault) {
    try base.store(value, at: address)
  }
  func fill(_ address: UInt, count: UInt, with byte: UInt8) {
    base.fill(address, count: count, with: byte)
  }
  func firstMismatch(_ address: UInt, count: UInt, expected byte: UInt8) -> UInt? {
    base.firstMismatch(address, count: count, expected: byte)
  }
  func copy(from source: UInt, to destination: UInt, count: UInt) {
    base.copy(from: source, to: destination, count: count)
  }
  func pageAccess(from start: UInt, pages: Int) -> [PageAccess] {
    base.pageAccess(from: start, pages: pages)
  }
}
