// Replacement policies: textbook reference strings with known answers, the machine against the
// policy-level simulation, OPT never worse, swap and major faults, thrashing, the OOM killer.

import PageSimulator
import PageSpace
import Testing

@Suite("Replacement, swap and OOM")
struct ReplacementTests {
  static let belady = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5]

  @Test func beladysAnomalyWithFIFO() {
    #expect(ReferenceString.simulate(Self.belady, frames: 3, policy: .fifo).faults == 9)
    #expect(ReferenceString.simulate(Self.belady, frames: 4, policy: .fifo).faults == 10)
  }

  @Test func textbookAnswers() {
    // Silberschatz's string with 3 frames: FIFO 15, LRU 12, OPT 9.
    let string = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1]
    #expect(ReferenceString.simulate(string, frames: 3, policy: .fifo).faults == 15)
    #expect(ReferenceString.simulate(string, frames: 3, policy: .lru).faults == 12)
    #expect(ReferenceString.simulate(string, frames: 3, policy: .optimal).faults == 9)
    #expect(ReferenceString.simulate(Self.belady, frames: 3, policy: .optimal).faults == 7)
    #expect(ReferenceString.simulate(Self.belady, frames: 3, policy: .lru).faults == 10)
    // Clock on the Belady string with 3 frames degenerates to FIFO here (every page referenced once
    // before the hand comes round): 9.
    #expect(ReferenceString.simulate(Self.belady, frames: 3, policy: .clock).faults == 9)
  }

  @Test func optimalIsNeverWorse() {
    var random = SplitMixForTests(seed: 42)
    for _ in 0..<300 {
      let length = 10 + random.below(60)
      let pages = 2 + random.below(9)
      let string = (0..<length).map { _ in random.below(pages) }
      for frames in 1...5 {
        let optimal = ReferenceString.simulate(string, frames: frames, policy: .optimal).faults
        for policy in [ReplacementPolicy.fifo, .lru, .clock] {
          #expect(
            optimal <= ReferenceString.simulate(string, frames: frames, policy: policy).faults)
        }
        // LRU is a stack algorithm: more frames never cost more faults.
        #expect(
          ReferenceString.simulate(string, frames: frames + 1, policy: .lru).faults
            <= ReferenceString.simulate(string, frames: frames, policy: .lru).faults)
      }
    }
  }

  /// Writes the reference string (one store per reference) into a process on a machine with `frames`
  /// frames and enough swap; returns minor + major faults.
  func machineFaults(_ string: [Int], frames: Int, policy: ReplacementPolicy) throws -> (
    UInt64, SimulatedPageSpace
  ) {
    let machine = SimulatedMachine(
      MachineConfiguration(frames: frames, swapSlots: 64, policy: policy))
    let space = SimulatedPageSpace(machine: machine)
    let base = try space.map(at: nil, length: 64 * page, protection: .readWrite, flags: [])
    if policy == .optimal {
      machine.setFutureReferences(pages: string.map { UInt64((base >> 12) + UInt($0)) })
    }
    for (index, number) in string.enumerated() {
      try space.store(UInt8(index & 0xff), at: base + UInt(number) * page)
    }
    return (space.faultCounts.minor + space.faultCounts.major, space)
  }

  @Test(
    "the machine agrees with the policy-level simulation", arguments: ReplacementPolicy.allCases)
  func machineMatchesReferenceString(policy: ReplacementPolicy) throws {
    var random = SplitMixForTests(seed: 7)
    for _ in 0..<60 {
      let string = (0..<(20 + random.below(40))).map { _ in random.below(8) }
      for frames in [2, 3, 5] {
        let expected = ReferenceString.simulate(string, frames: frames, policy: policy).faults
        let (faults, _) = try machineFaults(string, frames: frames, policy: policy)
        #expect(faults == UInt64(expected), "\(policy) \(frames) frames: \(string)")
      }
    }
    let (belady3, _) = try machineFaults(Self.belady, frames: 3, policy: .fifo)
    let (belady4, _) = try machineFaults(Self.belady, frames: 4, policy: .fifo)
    if policy == .fifo {
      #expect(belady3 == 9)
      #expect(belady4 == 10)
    }
  }

  @Test func swappedPagesComeBackWithTheirDataAsMajorFaults() throws {
    let machine = SimulatedMachine(MachineConfiguration(frames: 4, swapSlots: 16, policy: .lru))
    let space = SimulatedPageSpace(machine: machine)
    let base = try space.map(at: nil, length: 8 * page, protection: .readWrite, flags: [])
    for index in 0..<8 {
      space.fill(base + UInt(index) * page, count: page, with: UInt8(index + 1))
    }
    #expect(space.counters.minorFaults == 8)
    #expect(space.counters.swapOuts == 4)
    #expect(space.counters.residentPages == 4)
    #expect(space.swappedPages == 4)
    #expect(machine.swapSlotsInUse == 4)
    var vector = [UInt8](repeating: 9, count: 8)
    try vector.withUnsafeMutableBufferPointer {
      try space.residency(base, length: 8 * page, into: $0)
    }
    #expect(vector == [0, 0, 0, 0, 1, 1, 1, 1])
    let major = majorFaults(space) {
      #expect(space.firstMismatch(base, count: page, expected: 1) == nil)
    }
    #expect(major == 1)
    #expect(space.counters.swapIns == 1)
    // A swapped-in exclusive page is mapped writable: writing it costs nothing more.
    #expect(try minorFaults(space) { try space.store(1, at: base) } == 0)
  }

  @Test func thrashingShowsInTheCounters() throws {
    let machine = SimulatedMachine(MachineConfiguration(frames: 8, swapSlots: 16, policy: .lru))
    let space = SimulatedPageSpace(machine: machine)
    let base = try space.map(at: nil, length: 9 * page, protection: .readWrite, flags: [])
    for _ in 0..<10 { try writeEach(space, base, pages: 9) }
    // A loop over one page more than memory under LRU: every access after the first pass is major.
    #expect(space.counters.minorFaults == 9)
    #expect(space.counters.majorFaults == 81)
    #expect(space.counters.swapOuts == 82)
  }

  @Test func cleanFreedPagesAreDiscardedUnderPressure() throws {
    let machine = SimulatedMachine(MachineConfiguration(frames: 4, swapSlots: 0, policy: .fifo))
    let space = SimulatedPageSpace(machine: machine)
    let base = try space.map(at: nil, length: 8 * page, protection: .readWrite, flags: [])
    try writeEach(space, base, pages: 4, value: 5)
    try space.advise(base, length: 2 * page, .free)
    try writeEach(space, base + 4 * page, pages: 2)  // needs 2 frames: the freed pages go, no swap
    #expect(space.counters.discardedPages == 2)
    #expect(space.counters.swapOuts == 0)
    #expect(try readEach(space, base, pages: 2) == [0, 0])  // discarded: zero-fill on next touch
    #expect(try readEach(space, base + 2 * page, pages: 2) == [5, 5])
  }

  @Test func outOfMemoryKillsTheBiggestProcess() throws {
    let machine = SimulatedMachine(MachineConfiguration(frames: 8, swapSlots: 2, policy: .lru))
    var events: [SimulatorEvent] = []
    machine.eventHandler = { events.append($0) }
    let small = SimulatedPageSpace(machine: machine)
    let big = SimulatedPageSpace(machine: machine)
    let s = try small.map(at: nil, length: 2 * page, protection: .readWrite, flags: [])
    try writeEach(small, s, pages: 2)
    let b = try big.map(at: nil, length: 32 * page, protection: .readWrite, flags: [])
    var outcome = SimulatedPageSpace.AccessOutcome.completed(0)
    var written = 0
    for index in 0..<32 {
      outcome = big.access(b + UInt(index) * page, write: true, value: 1)
      if outcome == .killed { break }
      written += 1
    }
    // 8 frames + 2 swap slots: LRU swaps the small process out first; the 9th page of the big one
    // finds no frame and no slot, and the big process (8 resident pages) is the victim.
    #expect(outcome == .killed)
    #expect(written == 8)
    #expect(big.isKilled)
    #expect(machine.killedProcesses == [big.processID])
    #expect(events.contains(.outOfMemoryKill(process: big.processID, residentPages: 8)))
    #expect(!small.isKilled)
    #expect(try readEach(small, s, pages: 2) == [7, 7])
    #expect(big.access(b, write: false) == .killed)
  }

  @Test func mlockedPagesAreNotEvicted() throws {
    let machine = SimulatedMachine(MachineConfiguration(frames: 4, swapSlots: 16, policy: .fifo))
    let space = SimulatedPageSpace(machine: machine)
    let base = try space.map(at: nil, length: 8 * page, protection: .readWrite, flags: [])
    try space.lock(base, length: 2 * page)
    try writeEach(space, base + 2 * page, pages: 6)
    var vector = [UInt8](repeating: 9, count: 2)
    try vector.withUnsafeMutableBufferPointer {
      try space.residency(base, length: 2 * page, into: $0)
    }
    #expect(vector == [1, 1])
  }
}

/// SplitMix64, for reproducible random strings in these tests.
struct SplitMixForTests {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
  mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}
