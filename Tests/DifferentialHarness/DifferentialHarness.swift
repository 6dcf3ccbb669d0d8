// The differential harness: one seeded random sequence of page operations, run against two page
// spaces, compared after every step.
//
// How to use it (e.g. the simulator against the kernel):
//
//     let run = DifferentialRun(
//       seed: 7, steps: 80, arenaPages: 64,
//       makeA: { SystemPageSpace(faultCounting: .thread) },
//       makeB: { SimulatedPageSpace() })
//     let report = run.run()
//     #expect(report.passed, "\(report)")   // a failure prints a shrunk, readable reproducer
//
// Both sides must conform to `PageAccessInspecting` (this file makes `SystemPageSpace` conform).
//
// The arena. Each side gets `arenaPages` pages, fenced below and above by a 1-page `MAP_SHARED`
// mapping (kernel-semantics.md §0: shared anonymous memory never merges with private memory), so
// VMA counts inside the arena cannot be disturbed by neighbours. The arena starts as one private
// `PROT_NONE | MAP_NORESERVE` reservation; operations address it by page index, so the two sides may
// sit at different addresses. Arenas are requested at hints far below the kernel's top-down mmap
// area, so that holes the sequence punches are not refilled by other threads' mmaps. Both arenas
// must have the same alignment modulo 2 MiB, because shmem fault-around (§2) depends on the virtual
// page index modulo 16: a simulator must honour a free hint, as the kernel does.
//
// What is compared after every step:
//   1. the outcome: success or the errno; the address `map` returned (relative to the arena); for a
//      touch, each byte read or the fault (relative si_addr, si_code); for residency, the vector;
//   2. the accessibility of every arena page for a one-byte read and a one-byte write, obtained
//      WITHOUT accessing the pages (`PageAccessInspecting`). Probing by load/store would itself change
//      what is compared (a read maps the zero page and costs a fault; a write dirties the page and
//      changes later merges), so the real side reads /proc/self/maps (the VMA protection) and
//      /proc/self/pagemap (bit 58: guard marker) instead; the simulator answers from its state.
//      The probe-based check of that oracle lives in PageSpaceTests (it compares the two on real
//      memory, where destroying the state is fine);
//   3. the VMA count inside the arena (`vmaCount(in:)`);
//   4. the minor and major fault deltas of the step, sampled just around the operation itself. On the
//      real side use `SystemPageSpace(faultCounting: .thread)`, so other test threads do not count.
//      The run executes both sides on the calling thread, one after the other, step by step.
//
// A run stops at the first step that disagrees, then shrinks the sequence (drops operations while
// some step still disagrees) and reports the shortest sequence it found as a numbered op list.
import PageSpace
import Synchronization

// MARK: - Inspection without access

/// How a one-byte read and a one-byte write to a page would end: nil if they would succeed, else the
/// `si_code` of the SIGSEGV.
public struct PageAccess: Hashable, Sendable, CustomStringConvertible {
  public var read: FaultCode?
  public var write: FaultCode?

  public init(read: FaultCode?, write: FaultCode?) {
    self.read = read
    self.write = write
  }

  /// Compact: `rw`, `r-`, `--`; a fault is shown as `M` (SEGV_MAPERR) or `A` (SEGV_ACCERR).
  public var description: String {
    Self.symbol(read, allowed: "r") + Self.symbol(write, allowed: "w")
  }

  static func symbol(_ fault: FaultCode?, allowed: String) -> String {
    switch fault {
    case nil: allowed
    case .mapError: "M"
    case .accessError: "A"
    case .kernel: "K"
    }
  }
}

/// A page space that can tell how accesses would end without performing them (no fault, no
/// zero-page mapping, no dirtying): what the harness compares the pages' accessibility with.
public protocol PageAccessInspecting: PageSpace {
  /// For each of `pages` pages from the page-aligned `start`: how a read and a write would end.
  func pageAccess(from start: UInt, pages: Int) -> [PageAccess]
}

extension SystemPageSpace: PageAccessInspecting {
  /// From /proc/self/maps (protection) and /proc/self/pagemap (guard markers); see `inspect`.
  public func pageAccess(from start: UInt, pages: Int) -> [PageAccess] {
    do {
      return try inspect(pagesFrom: start, count: pages).map {
        PageAccess(read: $0.readFault, write: $0.writeFault)
      }
    } catch {
      preconditionFailure("cannot read /proc/self/maps or /proc/self/pagemap: \(error)")
    }
  }
}

// MARK: - Operations

/// A byte range of the arena: `offset` bytes into page `page`, `length` bytes long.
public struct ArenaSpan: Hashable, Sendable, CustomStringConvertible {
  public var page: Int
  public var offset: UInt
  public var length: UInt

  public init(page: Int, offset: UInt = 0, length: UInt) {
    self.page = page
    self.offset = offset
    self.length = length
  }

  public func address(in arena: UInt, pageSize: UInt) -> UInt {
    arena + UInt(page) * pageSize + offset
  }

  /// `p3 +2p` (2 whole pages from page 3), `p3+1 +4096`, `p5 +1p-100`, `p0 +0`.
  public var description: String {
    let start = offset == 0 ? "p\(page)" : "p\(page)+\(offset)"
    return "\(start) \(Self.lengthText(length))"
  }

  /// Texts count in 4 KiB pages (the x86-64 page size the generator is used with).
  static let pageSizeForText: UInt = 4096

  static func lengthText(_ length: UInt) -> String {
    let pages = length / pageSizeForText
    let rest = length % pageSizeForText
    if length == 0 { return "+0" }
    if rest == 0 { return "+\(pages)p" }
    if pageSizeForText - rest < 512 { return "+\(pages + 1)p-\(pageSizeForText - rest)" }
    return pages == 0 ? "+\(rest)" : "+\(pages)p+\(rest)"
  }
}

/// One step of a sequence. The textual form is what a reproducer prints.
public enum PageOperation: Hashable, Sendable, CustomStringConvertible {
  /// `mmap(arena + span, prot, MAP_ANONYMOUS | flags)`; flags always include `.fixed` or
  /// `.fixedNoReplace`, so mappings stay inside the arena.
  case map(ArenaSpan, PageProtection, MapFlags)
  case protect(ArenaSpan, PageProtection)
  case advise(ArenaSpan, PageAdvice)
  case unmap(ArenaSpan)
  case lock(ArenaSpan)
  case unlock(ArenaSpan)
  /// `mincore` over the span.
  case residency(ArenaSpan)
  /// One byte per page for `count` pages from `page`, at `touchOffset(page)` in each page: a load,
  /// or a store of `value &+ index`.
  case touch(page: Int, count: Int, write: Bool, value: UInt8)

  public var description: String {
    switch self {
    case .map(let span, let protection, let flags):
      "map \(span) \(protection) \(Self.flagsText(flags))"
    case .protect(let span, let protection):
      "protect \(span) \(protection)\(Self.extraBits(protection))"
    case .advise(let span, let advice): "advise \(span) \(advice)"
    case .unmap(let span): "unmap \(span)"
    case .lock(let span): "mlock \(span)"
    case .unlock(let span): "munlock \(span)"
    case .residency(let span): "mincore \(span)"
    case .touch(let page, let count, let write, let value):
      write ? "store p\(page) x\(count) value \(value)" : "load p\(page) x\(count)"
    }
  }

  static func extraBits(_ protection: PageProtection) -> String {
    let extra = protection.rawValue & ~0x7
    return extra == 0 ? "" : "|0x\(String(extra, radix: 16))"
  }

  static func flagsText(_ flags: MapFlags) -> String {
    var words: [String] = [flags.contains(.shared) ? "shared" : "private"]
    let names: [(MapFlags, String)] = [
      (.fixed, "fixed"), (.fixedNoReplace, "fixed_noreplace"), (.populate, "populate"),
      (.noReserve, "noreserve"), (.locked, "locked"),
    ]
    for (flag, name) in names where flags.contains(flag) { words.append(name) }
    return words.joined(separator: " ")
  }
}

/// The byte a touch accesses within page `page`: varies across the page so that data mix-ups show.
public func touchOffset(page: Int, pageSize: UInt) -> UInt {
  UInt(page &* 131 &+ 17) % pageSize
}

// MARK: - Generation

/// Generates random operation sequences over an arena of `arenaPages` pages.
public struct OperationGenerator: Sendable {
  public var arenaPages: Int
  public var pageSize: UInt
  /// Include MADV_GUARD_INSTALL / MADV_GUARD_REMOVE (only when both sides support them).
  public var guardMarkers: Bool

  public init(arenaPages: Int, pageSize: UInt, guardMarkers: Bool) {
    precondition(arenaPages >= 2)
    self.arenaPages = arenaPages
    self.pageSize = pageSize
    self.guardMarkers = guardMarkers
  }

  public func sequence(seed: UInt64, steps: Int) -> [PageOperation] {
    var random = SplitMix64(seed: seed)
    return (0..<steps).map { _ in operation(&random) }
  }

  static let protections: [PageProtection] = [
    .none, .read, .readWrite, .readWrite, .readWrite, .readWrite, .write, .exec,
    [.read, .write, .exec], [.read, .exec],
  ]

  static let advices: [PageAdvice] = [
    .dontNeed, .dontNeed, .dontNeed, .free, .free, .willNeed, .noHugePage, .hugePage, .normal,
    .random, .sequential, .dontDump, .doDump, .dontFork, .doFork, .wipeOnFork, .keepOnFork,
    .remove, .populateRead, .populateWrite, .mergeable, .unmergeable,
  ]

  func operation(_ random: inout SplitMix64) -> PageOperation {
    switch random.below(100) {
    case 0..<16: return .map(span(&random), protection(&random), mapFlags(&random))
    case 16..<34: return .protect(span(&random), protection(&random))
    case 34..<54: return .advise(span(&random), advice(&random))
    case 54..<62: return .unmap(span(&random))
    case 62..<66: return .lock(span(&random))
    case 66..<69: return .unlock(span(&random))
    case 69..<74: return .residency(span(&random))
    default:
      let page = random.below(arenaPages)
      let count = 1 + random.below(min(8, arenaPages - page))
      return .touch(
        page: page, count: count, write: random.chance(1, in: 2), value: UInt8(random.below(256)))
    }
  }

  func protection(_ random: inout SplitMix64) -> PageProtection {
    switch random.below(40) {
    case 0: PageProtection(rawValue: 0x40 | 0x3)  // an invalid bit: EINVAL
    case 1: [.readWrite, .growsDown]  // PROT_GROWSDOWN on a non-stack mapping: EINVAL
    default: random.pick(Self.protections)
    }
  }

  func mapFlags(_ random: inout SplitMix64) -> MapFlags {
    var flags: MapFlags = random.chance(4, in: 5) ? .fixed : .fixedNoReplace
    if random.chance(3, in: 20) { flags.insert(.shared) }
    if random.chance(3, in: 20) { flags.insert(.populate) }
    if random.chance(1, in: 10) { flags.insert(.noReserve) }
    if random.chance(1, in: 30) { flags.insert(.locked) }
    return flags
  }

  func advice(_ random: inout SplitMix64) -> PageAdvice {
    let roll = random.below(100)
    if roll < 3 { return PageAdvice(rawValue: random.pick([5, 6, 7, 12345])) }  // invalid: EINVAL
    if guardMarkers, roll < 15 { return roll < 10 ? .guardInstall : .guardRemove }
    return random.pick(Self.advices)
  }

  /// A range inside the arena: mostly whole pages; sometimes a length that is not a page multiple
  /// (rounded up by the kernel, never past the arena), zero, or an unaligned start.
  func span(_ random: inout SplitMix64) -> ArenaSpan {
    let page = random.below(arenaPages)
    let available = arenaPages - page
    let pages = 1 + random.below(min(available, random.chance(1, in: 5) ? arenaPages : 8))
    var length = UInt(pages) * pageSize
    var offset: UInt = 0
    switch random.below(100) {
    case 0..<8: length -= UInt(1 + random.below(Int(pageSize) - 1))  // rounds up to `pages`
    case 8..<11: length = 0
    case 11..<15:
      offset = UInt(1 + random.below(Int(pageSize) - 1))  // unaligned start
      length -= offset
    default: break
    }
    return ArenaSpan(page: page, offset: offset, length: length)
  }
}

// MARK: - Observations

/// What one access of a touch did.
public enum TouchResult: Hashable, Sendable, CustomStringConvertible {
  case loaded(UInt8)
  case stored
  /// A SIGSEGV: `si_addr` relative to the arena base, and `si_code`.
  case fault(relativeAddress: Int, MemoryAccess, FaultCode)

  public var description: String {
    switch self {
    case .loaded(let value): "read \(value)"
    case .stored: "stored"
    case .fault(let address, let access, let code): "\(access) fault at +\(address) \(code)"
    }
  }
}

/// The result of one operation on one side.
public enum Outcome: Hashable, Sendable, CustomStringConvertible {
  case success
  case failure(PageError)
  /// `map` returned the arena base plus this many bytes.
  case mapped(relativeAddress: Int)
  case touched([TouchResult])
  /// `mincore`'s vector, bit 0 of each byte.
  case resident([UInt8])

  public var description: String {
    switch self {
    case .success: "ok"
    case .failure(let error): "\(error)"
    case .mapped(let address): "mapped at +\(address)"
    case .touched(let results): results.map(\.description).joined(separator: ", ")
    case .resident(let vector): "resident " + vector.map { $0 == 0 ? "0" : "1" }.joined()
    }
  }
}

/// Everything compared after one step on one side.
public struct StepObservation: Hashable, Sendable {
  public var outcome: Outcome
  public var access: [PageAccess]
  public var vmaCount: Int
  public var faults: FaultCounts

  public var accessText: String { access.map(\.description).joined(separator: " ") }
}

/// One aspect of one step on which the two sides differ.
public struct Disagreement: Hashable, Sendable, CustomStringConvertible {
  /// 1-based step number; 0 for the arena set-up.
  public var step: Int
  public var operation: PageOperation?
  public var aspect: String
  public var a: String
  public var b: String

  public var description: String {
    let what = operation.map { "step \(step) (\($0))" } ?? "set-up"
    return "\(what): \(aspect) differs\n      A: \(a)\n      B: \(b)"
  }
}

/// The result of a run: empty `disagreements` means the two spaces agreed on every step.
public struct DifferentialReport: Sendable, CustomStringConvertible {
  public var seed: UInt64
  public var operations: [PageOperation]
  /// The disagreements of the first disagreeing step of the full sequence.
  public var disagreements: [Disagreement]
  /// The shortest sequence found that still disagrees (empty when the run passed).
  public var reproducer: [PageOperation]
  /// The disagreements of `reproducer`'s last step.
  public var reproducerDisagreements: [Disagreement]

  public var passed: Bool { disagreements.isEmpty }

  public var description: String {
    if passed { return "seed \(seed): \(operations.count) steps, no disagreement" }
    var lines = ["seed \(seed): disagreement; shrunk to \(reproducer.count) operation(s):"]
    for (index, operation) in reproducer.enumerated() {
      lines.append("  \(index + 1). \(operation)")
    }
    lines.append(contentsOf: reproducerDisagreements.map { "  " + $0.description })
    lines.append("first disagreement in the full sequence of \(operations.count) steps:")
    lines.append(contentsOf: disagreements.map { "  " + $0.description })
    return lines.joined(separator: "\n")
  }
}

// MARK: - The run

/// Runs one seeded sequence against a fresh `A` and a fresh `B` and compares them step by step.
public struct DifferentialRun<A: PageAccessInspecting, B: PageAccessInspecting> {
  public var seed: UInt64
  public var steps: Int
  public var arenaPages: Int
  public var makeA: () -> A
  public var makeB: () -> B
  /// Where each side asks for its fenced arena (a hint, not MAP_FIXED); keep the same alignment
  /// mod 2 MiB. nil (the default): a fresh pair of 1 GiB-aligned slots from 0x2000_0000_0000 per
  /// replay, so that runs on parallel test threads never ask for the same place.
  public var hintA: UInt? = nil
  public var hintB: UInt? = nil
  /// Compare fault deltas (switch off only to look at the other aspects of a known fault mismatch).
  public var comparesFaults = true
  /// Shrink a failing sequence to a minimal reproducer.
  public var shrinks = true

  public init(
    seed: UInt64, steps: Int, arenaPages: Int = 64, makeA: @escaping () -> A,
    makeB: @escaping () -> B
  ) {
    self.seed = seed
    self.steps = steps
    self.arenaPages = arenaPages
    self.makeA = makeA
    self.makeB = makeB
  }

  /// The sequence this run's seed generates (guard markers only if both sides support them).
  public func operations() -> [PageOperation] {
    let a = makeA()
    let b = makeB()
    precondition(a.pageSize == b.pageSize, "the two spaces have different page sizes")
    let generator = OperationGenerator(
      arenaPages: arenaPages, pageSize: a.pageSize,
      guardMarkers: a.supportsGuardMarkers && b.supportsGuardMarkers)
    return generator.sequence(seed: seed, steps: steps)
  }

  public func run() -> DifferentialReport {
    let sequence = operations()
    let disagreements = replay(sequence)
    var report = DifferentialReport(
      seed: seed, operations: sequence, disagreements: disagreements, reproducer: [],
      reproducerDisagreements: [])
    if !disagreements.isEmpty {
      let reproducer = shrinks ? shrink(sequence) : sequence
      report.reproducer = reproducer
      report.reproducerDisagreements = replay(reproducer)
    }
    return report
  }

  /// What each step of `sequence` does on a fresh `makeA()` (for traces and coverage checks).
  public func observeA(_ sequence: [PageOperation]) -> [StepObservation] {
    Self.observe(sequence, on: makeA(), arenaPages: arenaPages, hint: hintA ?? Arena.nextSlot())
  }

  /// What each step of `sequence` does on `space`, in a fresh fenced arena.
  public static func observe<S: PageAccessInspecting>(
    _ sequence: [PageOperation], on space: S, arenaPages: Int, hint: UInt
  ) -> [StepObservation] {
    guard case .success(let arena) = Arena.setUp(space, pages: arenaPages, hint: hint) else {
      return []
    }
    defer { Arena.tearDown(space, base: arena, pages: arenaPages) }
    warmUp(space, arena: arena, pages: arenaPages)
    return sequence.map { step($0, on: space, arena: arena, pages: arenaPages) }
  }

  /// Whether a disagreement of `report` fails to come back on two replays of its sequence. When one
  /// side is deterministic (the simulator), such a one-off is measurement noise of the real side (an
  /// extra fault a parallel test caused); a reproducible disagreement is a real difference.
  public func disagreementIsNoise(_ report: DifferentialReport) -> Bool {
    replay(report.operations).isEmpty && replay(report.operations).isEmpty
  }

  /// Runs `sequence` on fresh arenas; returns the disagreements of the first step that has any.
  public func replay(_ sequence: [PageOperation]) -> [Disagreement] {
    let a = makeA()
    let b = makeB()
    let arenaA: UInt
    let arenaB: UInt
    let slot = Arena.nextSlot()
    let resultA = Arena.setUp(a, pages: arenaPages, hint: hintA ?? slot)
    let resultB = Arena.setUp(b, pages: arenaPages, hint: hintB ?? slot + Arena.slotSize)
    switch (resultA, resultB) {
    case (.success(let baseA), .success(let baseB)):
      arenaA = baseA
      arenaB = baseB
    case (let resultA, let resultB):
      if case .success(let base) = resultA { Arena.tearDown(a, base: base, pages: arenaPages) }
      if case .success(let base) = resultB { Arena.tearDown(b, base: base, pages: arenaPages) }
      return [
        Disagreement(
          step: 0, operation: nil, aspect: "arena set-up", a: "\(resultA)", b: "\(resultB)")
      ]
    }
    defer {
      Arena.tearDown(a, base: arenaA, pages: arenaPages)
      Arena.tearDown(b, base: arenaB, pages: arenaPages)
    }
    let twoMiB: UInt = 2 << 20
    if arenaA % twoMiB != arenaB % twoMiB {
      return [
        Disagreement(
          step: 0, operation: nil, aspect: "arena alignment mod 2 MiB",
          a: "0x\(String(arenaA % twoMiB, radix: 16))", b: "0x\(String(arenaB % twoMiB, radix: 16))"
        )
      ]
    }
    Self.warmUp(a, arena: arenaA, pages: arenaPages)
    Self.warmUp(b, arena: arenaB, pages: arenaPages)
    for (index, operation) in sequence.enumerated() {
      let observedA = Self.step(operation, on: a, arena: arenaA, pages: arenaPages)
      let observedB = Self.step(operation, on: b, arena: arenaB, pages: arenaPages)
      let differences = compare(observedA, observedB, step: index + 1, operation: operation)
      if !differences.isEmpty { return differences }
    }
    return []
  }

  func compare(_ a: StepObservation, _ b: StepObservation, step: Int, operation: PageOperation)
    -> [Disagreement]
  {
    var differences: [Disagreement] = []
    func note(_ aspect: String, _ textA: String, _ textB: String) {
      differences.append(
        Disagreement(step: step, operation: operation, aspect: aspect, a: textA, b: textB))
    }
    if a.outcome != b.outcome { note("result", a.outcome.description, b.outcome.description) }
    if a.access != b.access {
      note("page access (read/write per page)", a.accessText, b.accessText)
    }
    if a.vmaCount != b.vmaCount { note("VMA count in the arena", "\(a.vmaCount)", "\(b.vmaCount)") }
    if comparesFaults, a.faults != b.faults {
      note(
        "fault delta (minor/major)", "\(a.faults.minor)/\(a.faults.major)",
        "\(b.faults.minor)/\(b.faults.major)")
    }
    return differences
  }

  /// Shrinks a failing sequence: cut after the first disagreeing step, then drop chunks of
  /// operations (halves, quarters, ..., single ones) while the sequence still disagrees somewhere.
  public func shrink(_ sequence: [PageOperation]) -> [PageOperation] {
    var current = sequence
    func failingPrefix(_ candidate: [PageOperation]) -> [PageOperation]? {
      guard let last = replay(candidate).first?.step else { return nil }
      return last == 0 ? candidate : Array(candidate.prefix(last))
    }
    guard let prefix = failingPrefix(current) else { return sequence }
    current = prefix
    var chunk = max(1, current.count / 2)
    while true {
      var removedAny = false
      var start = 0
      while start < current.count {
        var candidate = current
        candidate.removeSubrange(start..<min(start + chunk, current.count))
        if !candidate.isEmpty, let shorter = failingPrefix(candidate) {
          current = shorter
          removedAny = true
        } else {
          start += chunk
        }
      }
      if chunk == 1 && !removedAny { break }
      if !removedAny { chunk = max(1, chunk / 2) }
    }
    return current
  }

  // MARK: Executing one step on one side

  /// Runs every kind of operation once without changing the arena, outside any measured window: the
  /// first call of a libc function resolves its lazy PLT binding (a copy-on-write fault on the GOT)
  /// and the first signal delivery touches new stack — noise the kernel-semantics probes warmed up
  /// away too (§1, noise floor).
  static func warmUp<S: PageAccessInspecting>(_ space: S, arena: UInt, pages: Int) {
    let nothing = ArenaSpan(page: 0, length: 0)
    // The arena is still the untouched PROT_NONE reservation: these either do nothing or fault
    // without changing it.
    let harmless: [PageOperation] = [
      .map(nothing, .none, .fixedNoReplace), .protect(nothing, .none), .advise(nothing, .dontNeed),
      .unmap(nothing), .lock(nothing), .unlock(nothing), .residency(nothing),
      .touch(page: 0, count: 1, write: false, value: 0),
      .touch(page: 0, count: 1, write: true, value: 0),
    ]
    for _ in 0..<2 {
      for operation in harmless { _ = step(operation, on: space, arena: arena, pages: pages) }
    }
  }

  static func step<S: PageAccessInspecting>(
    _ operation: PageOperation, on space: S, arena: UInt, pages: Int
  ) -> StepObservation {
    let (outcome, faults) = execute(operation, on: space, arena: arena)
    let range = AddressRange(start: arena, length: UInt(pages) * space.pageSize)
    return StepObservation(
      outcome: outcome, access: space.pageAccess(from: arena, pages: pages),
      vmaCount: space.vmaCount(in: range), faults: faults)
  }

  /// Executes one operation; the fault delta covers the page-space calls only (buffers are
  /// allocated before the first sample, so malloc's own page faults are not counted).
  static func execute<S: PageSpace>(_ operation: PageOperation, on space: S, arena: UInt)
    -> (Outcome, FaultCounts)
  {
    let pageSize = space.pageSize
    func address(_ span: ArenaSpan) -> UInt { span.address(in: arena, pageSize: pageSize) }
    func measured(_ body: () throws(PageError) -> Void) -> (Outcome, FaultCounts) {
      let before = space.faultCounts
      do throws(PageError) {
        try body()
        let after = space.faultCounts
        return (.success, after - before)
      } catch {
        let after = space.faultCounts
        return (.failure(error), after - before)
      }
    }
    switch operation {
    case .map(let span, let protection, let flags):
      var mapped: UInt = 0
      let (outcome, faults) = measured { () throws(PageError) in
        mapped = try space.map(
          at: address(span), length: span.length, protection: protection, flags: flags)
      }
      guard case .success = outcome else { return (outcome, faults) }
      return (.mapped(relativeAddress: Int(bitPattern: mapped &- arena)), faults)
    case .protect(let span, let protection):
      return measured { () throws(PageError) in
        try space.protect(address(span), length: span.length, to: protection)
      }
    case .advise(let span, let advice):
      return measured { () throws(PageError) in
        try space.advise(address(span), length: span.length, advice)
      }
    case .unmap(let span):
      return measured { () throws(PageError) in try space.unmap(address(span), length: span.length)
      }
    case .lock(let span):
      return measured { () throws(PageError) in try space.lock(address(span), length: span.length) }
    case .unlock(let span):
      return measured { () throws(PageError) in try space.unlock(address(span), length: span.length)
      }
    case .residency(let span):
      let count = Int((span.length + pageSize - 1) / pageSize)
      var vector = [UInt8](repeating: 0, count: max(count, 1))
      let (outcome, faults) = vector.withUnsafeMutableBufferPointer { buffer in
        measured { () throws(PageError) in
          try space.residency(address(span), length: span.length, into: buffer)
        }
      }
      guard case .success = outcome else { return (outcome, faults) }
      return (.resident(vector.prefix(count).map { $0 & 1 }), faults)
    case .touch(let first, let count, let write, let value):
      var results: [TouchResult] = []
      results.reserveCapacity(count)
      let before = space.faultCounts
      for index in 0..<count {
        let page = first + index
        let target = arena + UInt(page) * pageSize + touchOffset(page: page, pageSize: pageSize)
        do throws(PageFault) {
          if write {
            try space.store(value &+ UInt8(truncatingIfNeeded: index), at: target)
            results.append(.stored)
          } else {
            results.append(.loaded(try space.load(target)))
          }
        } catch {
          results.append(
            .fault(
              relativeAddress: Int(bitPattern: error.address &- arena), error.access, error.code))
        }
      }
      let after = space.faultCounts
      return (.touched(results), after - before)
    }
  }
}

/// The fenced arena: [shared fence][arena pages][shared fence], the arena a PROT_NONE reservation.
enum Arena {
  static let slotSize: UInt = 1 << 30
  private static let slotCounter = Atomic<UInt>(0)

  /// A hint far below the kernel's top-down mmap area (so holes stay holes), unique among the
  /// last 4096 replays; two consecutive slots per replay.
  static func nextSlot() -> UInt {
    let slot = slotCounter.add(1, ordering: .relaxed).newValue % 4096
    return 0x2000_0000_0000 + slot * 2 * slotSize
  }

  static func setUp<S: PageSpace>(_ space: S, pages: Int, hint: UInt) -> Result<UInt, PageError> {
    let pageSize = space.pageSize
    let total = UInt(pages + 2) * pageSize
    do throws(PageError) {
      let region = try space.map(at: hint, length: total, protection: .none, flags: .noReserve)
      do throws(PageError) {
        try space.map(fixed: region, length: pageSize, protection: .readWrite, flags: .shared)
        try space.map(
          fixed: region + UInt(pages + 1) * pageSize, length: pageSize, protection: .readWrite,
          flags: .shared)
      } catch {
        try? space.unmap(region, length: total)
        throw error
      }
      return .success(region + pageSize)
    } catch {
      return .failure(error)
    }
  }

  static func tearDown<S: PageSpace>(_ space: S, base: UInt, pages: Int) {
    let pageSize = space.pageSize
    try? space.unmap(base - pageSize, length: UInt(pages + 2) * pageSize)
  }
}
