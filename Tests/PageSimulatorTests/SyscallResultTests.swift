// kernel-semantics.md §4: syscall results, errno, partial effects and VMA deltas on an isolated,
// touched 8-page private RW VMA (fenced by shared pages, as measured).

import PageSimulator
import PageSpace
import Testing

@Suite("§4 syscall results")
struct SyscallResultTests {
  /// A touched, fenced 8-page RW VMA whose page i is filled with i + 1.
  func setUp(pages: Int = 8) throws -> (SimulatedPageSpace, UInt) {
    let space = SimulatedPageSpace()
    let p = try fenced(space, pages: pages)
    for index in 0..<pages {
      space.fill(p + UInt(index) * page, count: page, with: UInt8(index + 1))
    }
    return (space, p)
  }

  func protections(_ space: SimulatedPageSpace, _ p: UInt, pages: Int) -> String {
    (0..<pages).map { index in
      let address = p + UInt(index) * page
      let read = space.wouldFault(address, .read) == nil
      let write = space.wouldFault(address, .write) == nil
      return read ? (write ? "rw" : "r-") : (write ? "-w" : "--")
    }.joined(separator: " ")
  }

  @Test func mprotectArgumentsAndRounding() throws {
    let (space, p) = try setUp()
    let before = space.vmaCount
    #expect(
      errorOf { () throws(PageError) in try space.protect(p + 1, length: page, to: .none) }
        == .invalidArgument)
    #expect(space.vmaCount == before)
    try space.protect(p, length: 1, to: .none)
    #expect(space.vmaCount == before + 1)
    #expect(protections(space, p, pages: 3) == "-- rw rw")
    try space.protect(p, length: 8 * page, to: .readWrite)
    try space.protect(p, length: page + 1, to: .none)
    #expect(protections(space, p, pages: 3) == "-- -- rw")
    try space.protect(p, length: 8 * page, to: .readWrite)
    #expect(space.vmaCount == before)
    try space.protect(p, length: 0, to: .none)
    try space.protect(0x1000_0000, length: 0, to: .none)  // a hole, length 0: no-op
    #expect(space.vmaCount == before)
    #expect(
      errorOf { () throws(PageError) in
        try space.protect(p, length: page, to: PageProtection(rawValue: 0x40))
      } == .invalidArgument)
    #expect(
      errorOf { () throws(PageError) in try space.protect(p, length: page, to: [.read, .growsDown])
      } == .invalidArgument)
    for protection: PageProtection in [.write, .exec, [.read, .write, .exec]] {
      try space.protect(p, length: 8 * page, to: protection)
      #expect(space.vmaCount == before)
    }
    // x86: a write-only page and an exec-only page are readable.
    try space.protect(p, length: page, to: .write)
    #expect(try space.load(p) == 1)
    try space.protect(p, length: page, to: .exec)
    #expect(try space.load(p) == 1)
    #expect(
      faultOf { () throws(PageFault) in try space.store(0, at: p + 3) }
        == PageFault(address: p + 3, access: .write, code: .accessError))
  }

  @Test func mprotectSplitsAndMerges() throws {
    let (space, p) = try setUp()
    let before = space.vmaCount
    try space.protect(p + 3 * page, length: page, to: .none)
    #expect(space.vmaCount == before + 2)
    try space.protect(p + 3 * page, length: page, to: .readWrite)
    #expect(space.vmaCount == before)
    try space.protect(p, length: page, to: .none)
    #expect(space.vmaCount == before + 1)
    try space.protect(p, length: 8 * page, to: .readWrite)
    #expect(space.vmaCount == before)
  }

  @Test func mprotectStopsAtAHole() throws {
    let (space, p) = try setUp()
    try space.unmap(p + 3 * page, length: page)
    let before = space.vmaCount
    #expect(
      errorOf { () throws(PageError) in try space.protect(p, length: 8 * page, to: .read) }
        == .outOfMemory)
    #expect(space.vmaCount == before)
    #expect(protections(space, p, pages: 3) == "r- r- r-")
    #expect(protections(space, p + 4 * page, pages: 4) == "rw rw rw rw")
    // Starting inside a hole, or a hole only: nothing changes.
    #expect(
      errorOf { () throws(PageError) in try space.protect(p + 3 * page, length: 3 * page, to: .none)
      } == .outOfMemory)
    #expect(protections(space, p + 4 * page, pages: 2) == "rw rw")
    #expect(
      errorOf { () throws(PageError) in try space.protect(p + 3 * page, length: page, to: .none) }
        == .outOfMemory)
  }

  @Test func mprotectOutOfRange() throws {
    let (space, p) = try setUp()
    // len 2^62 changes the VMA up to its end, then meets the hole above: ENOMEM.
    #expect(
      errorOf { () throws(PageError) in try space.protect(p, length: 1 << 62, to: .readWrite) }
        == .outOfMemory)
    #expect(
      errorOf { () throws(PageError) in try space.protect(p, length: 0 &- page, to: .read) }
        == .outOfMemory)
    #expect(
      errorOf { () throws(PageError) in try space.protect(0x7fff_ffff_f000, length: page, to: .read)
      } == .outOfMemory)
    #expect(
      errorOf { () throws(PageError) in try space.protect(0x8000_0000_0000, length: page, to: .read)
      } == .outOfMemory)
  }

  @Test func munmapRules() throws {
    let (space, p) = try setUp()
    let before = space.vmaCount
    #expect(
      errorOf { () throws(PageError) in try space.unmap(p + 1, length: page) } == .invalidArgument)
    #expect(errorOf { () throws(PageError) in try space.unmap(p, length: 0) } == .invalidArgument)
    #expect(
      errorOf { () throws(PageError) in try space.unmap(p, length: 1 << 62) } == .invalidArgument)
    #expect(
      errorOf { () throws(PageError) in try space.unmap(0x8000_0000_0000, length: page) }
        == .invalidArgument)
    try space.unmap(p + 3 * page, length: page)
    #expect(space.vmaCount == before + 1)
    try space.unmap(p + 3 * page, length: page)  // already unmapped
    #expect(space.vmaCount == before + 1)
    try space.unmap(p, length: 1)  // the first page
    #expect(space.vmaCount == before + 1)
    #expect(space.wouldFault(p, .read) == .mapError)
    #expect(try space.load(p + page) == 2)
    try space.unmap(p, length: 8 * page)
    #expect(space.vmaCount == before - 1)
  }

  @Test func munmapAcrossProtections() throws {
    let (space, p) = try setUp()
    try space.protect(p + 4 * page, length: 4 * page, to: .none)
    let before = space.vmaCount
    try space.unmap(p + 3 * page, length: 2 * page)
    #expect(space.vmaCount == before)
  }

  @Test func mapFixedOverTheMiddle() throws {
    let (space, p) = try setUp()
    let before = space.vmaCount
    try space.map(fixed: p + 3 * page, length: 2 * page, protection: .readWrite)
    #expect(space.vmaCount == before)
    #expect(try readEach(space, p, pages: 8).isEmpty == false)
    #expect(try space.load(p + 3 * page) == 0)
    #expect(try space.load(p + 4 * page) == 0)
    #expect(try space.load(p + 2 * page) == 3)
    #expect(try space.load(p + 5 * page) == 6)
    try space.map(fixed: p + 3 * page, length: 2 * page, protection: .none)
    #expect(space.vmaCount == before + 2)
    #expect(
      errorOf { () throws(PageError) in
        try space.map(fixed: p + 1, length: page, protection: .readWrite)
      } == .invalidArgument)
  }

  @Test func mapFixedNoReplace() throws {
    let (space, p) = try setUp()
    let before = space.vmaCount
    for (offset, pages) in [(0, 8), (6, 4)] {
      let error = errorOf { () throws(PageError) in
        _ = try space.map(
          at: p + UInt(offset) * page, length: UInt(pages) * page, protection: .readWrite,
          flags: .fixedNoReplace)
      }
      #expect(error == .exists)
    }
    #expect(
      errorOf { () throws(PageError) in
        _ = try space.map(at: p + 1, length: page, protection: .readWrite, flags: .fixedNoReplace)
      } == .invalidArgument)
    // A free page next to a same-protection VMA: merges.
    let other = SimulatedPageSpace()
    let q = try other.map(at: nil, length: 4 * page, protection: .readWrite, flags: [])
    let count = other.vmaCount
    #expect(
      try other.map(at: q + 4 * page, length: page, protection: .readWrite, flags: .fixedNoReplace)
        == q + 4 * page)
    #expect(other.vmaCount == count)
    #expect(space.vmaCount == before)
  }

  @Test func mapHintsAndArguments() throws {
    let space = SimulatedPageSpace()
    let a = try space.map(at: nil, length: 4 * page, protection: .readWrite, flags: [])
    #expect(try space.map(at: a, length: page, protection: .readWrite, flags: []) != a)
    let free: UInt = 0x3000_0000_0000
    #expect(try space.map(at: free, length: page, protection: .readWrite, flags: []) == free)
    #expect(
      try space.map(at: free + 0x10_0123, length: page, protection: .readWrite, flags: []) == free
        + 0x10_0000)
    #expect(
      errorOf { () throws(PageError) in
        _ = try space.map(at: nil, length: 0, protection: .readWrite, flags: [])
      } == .invalidArgument)
    #expect(
      errorOf { () throws(PageError) in
        _ = try space.map(at: nil, length: 1 << 47, protection: .readWrite, flags: [])
      } == .outOfMemory)
    let count = space.vmaCount
    _ = try space.map(at: nil, length: 1 << 46, protection: .none, flags: .noReserve)
    #expect(space.vmaCount == count + 1)
  }

  @Test func madviseArgumentsAndHoles() throws {
    let (space, p) = try setUp()
    #expect(
      errorOf { () throws(PageError) in try space.advise(p + 1, length: page, .dontNeed) }
        == .invalidArgument)
    #expect(
      errorOf { () throws(PageError) in
        try space.advise(p, length: page, PageAdvice(rawValue: 12345))
      } == .invalidArgument)
    try space.advise(p, length: 0, .dontNeed)
    try space.advise(0x1000_0000, length: 0, .dontNeed)
    try space.advise(p, length: page + 1, .dontNeed)
    #expect(try readEach(space, p, pages: 3) == [0, 0, 3])
    // Both sides of a hole are zeroed (unlike mprotect), then ENOMEM.
    let (other, q) = try setUp()
    try other.unmap(q + 3 * page, length: page)
    #expect(
      errorOf { () throws(PageError) in try other.advise(q, length: 8 * page, .dontNeed) }
        == .outOfMemory)
    #expect(try readEach(other, q, pages: 3) == [0, 0, 0])
    #expect(try readEach(other, q + 4 * page, pages: 4) == [0, 0, 0, 0])
    for advice: PageAdvice in [.dontNeed, .free, .normal, .willNeed] {
      #expect(
        errorOf { () throws(PageError) in try other.advise(q + 3 * page, length: page, advice) }
          == .outOfMemory)
    }
  }

  @Test func madviseOnNoneLockedShared() throws {
    let (space, p) = try setUp()
    try space.protect(p, length: 8 * page, to: .none)
    try space.advise(p, length: 8 * page, .dontNeed)
    try space.advise(p, length: 8 * page, .free)
    try space.protect(p, length: 8 * page, to: .readWrite)
    #expect(try readEach(space, p, pages: 8).allSatisfy { $0 == 0 })
    try space.lock(p, length: 8 * page)
    #expect(
      errorOf { () throws(PageError) in try space.advise(p, length: page, .dontNeed) }
        == .invalidArgument)
    #expect(
      errorOf { () throws(PageError) in try space.advise(p, length: page, .free) }
        == .invalidArgument)
    #expect(
      errorOf { () throws(PageError) in try space.advise(p, length: page, .guardInstall) }
        == .invalidArgument)
    let shared = try space.map(at: nil, length: 2 * page, protection: .readWrite, flags: .shared)
    try space.store(5, at: shared)
    #expect(
      errorOf { () throws(PageError) in try space.advise(shared, length: page, .free) }
        == .invalidArgument)
    try space.advise(shared, length: page, .dontNeed)
    #expect(try space.load(shared) == 5)
    try space.advise(shared, length: page, .remove)
    #expect(try space.load(shared) == 0)
    let anonymous = try space.map(at: nil, length: page, protection: .readWrite, flags: [])
    #expect(
      errorOf { () throws(PageError) in try space.advise(anonymous, length: page, .remove) }
        == .invalidArgument)
  }

  @Test(
    "middle 2 of 8: advice that keeps one VMA",
    arguments: [
      PageAdvice.dontNeed, .free, .willNeed, .normal, .cold, .pageOut, .populateRead,
      .populateWrite, .guardInstall,
    ])
  func adviceWithoutSplit(advice: PageAdvice) throws {
    let (space, p) = try setUp()
    let before = space.vmaCount
    let (error, faults) = measured(space) {
      errorOf { () throws(PageError) in try space.advise(p + 3 * page, length: 2 * page, advice) }
    }
    #expect(error == nil)
    #expect(faults == (advice == .populateWrite ? 0 : 0))
    #expect(space.vmaCount == before)
    let middle = try? space.load(p + 3 * page)
    switch advice {
    case .dontNeed: #expect(middle == 0)
    case .guardInstall: #expect(middle == nil)
    default: #expect(middle == 4)
    }
  }

  @Test(
    "middle 2 of 8: flag advice splits (+2)",
    arguments: [
      PageAdvice.random, .sequential, .hugePage, .noHugePage, .dontFork, .dontDump, .wipeOnFork,
      .mergeable,
    ])
  func adviceWithSplit(advice: PageAdvice) throws {
    let (space, p) = try setUp()
    let before = space.vmaCount
    try space.advise(p + 3 * page, length: 2 * page, advice)
    #expect(space.vmaCount == before + 2)
  }

  @Test func mlockSplits() throws {
    let (space, p) = try setUp()
    let before = space.vmaCount
    try space.lock(p + 3 * page, length: 2 * page)
    #expect(space.vmaCount == before + 2)
    try space.unlock(p + 3 * page, length: 2 * page)
    #expect(space.vmaCount == before)
    let none = try space.map(at: nil, length: page, protection: .none, flags: [])
    #expect(errorOf { () throws(PageError) in try space.lock(none, length: page) } == .outOfMemory)
  }

  @Test func guardMarkers() throws {
    let (space, p) = try setUp()
    let before = space.vmaCount
    try space.advise(p + 2 * page, length: page, .guardInstall)
    #expect(space.vmaCount == before)
    #expect(
      space.memoryMap.contains {
        $0.start <= p && $0.end > p && $0.flags.contains([.read, .write])
      })
    var vector = [UInt8](repeating: 9, count: 3)
    try vector.withUnsafeMutableBufferPointer {
      try space.residency(p + page, length: 3 * page, into: $0)
    }
    #expect(vector == [1, 0, 1])
    #expect(
      faultOf { () throws(PageFault) in _ = try space.load(p + 2 * page + 9) }
        == PageFault(address: p + 2 * page + 9, access: .read, code: .mapError))
    #expect(
      faultOf { () throws(PageFault) in try space.store(1, at: p + 2 * page) }
        == PageFault(address: p + 2 * page, access: .write, code: .mapError))
    try space.advise(p, length: 8 * page, .dontNeed)
    #expect(space.wouldFault(p + 2 * page, .read) == .mapError)
    try space.advise(p + 2 * page, length: page, .guardRemove)
    #expect(try space.load(p + 2 * page) == 0)
    // On shared anonymous memory and PROT_NONE too.
    let shared = try space.map(at: nil, length: 2 * page, protection: .readWrite, flags: .shared)
    try space.advise(shared, length: page, .guardInstall)
    let none = try space.map(at: nil, length: 2 * page, protection: .none, flags: [])
    try space.advise(none, length: page, .guardInstall)
    // Nine pages with guards on 1, 3, 5, 7: still one VMA.
    let nine = try fenced(space, pages: 9)
    let count = space.vmaCount
    for index in [1, 3, 5, 7] {
      try space.advise(nine + UInt(index) * page, length: page, .guardInstall)
    }
    #expect(space.vmaCount == count)
    // Without guard-marker support (an older kernel): EINVAL.
    space.guardMarkersAvailable = false
    #expect(
      errorOf { () throws(PageError) in try space.advise(p, length: page, .guardInstall) }
        == .invalidArgument)
  }

  @Test func mincoreRows() throws {
    let space = SimulatedPageSpace()
    let p = try space.map(at: nil, length: 7 * page, protection: .readWrite, flags: [])
    _ = try space.load(p + page)  // zero page
    try space.store(1, at: p + 2 * page)
    try space.store(1, at: p + 3 * page)
    try space.advise(p + 3 * page, length: page, .dontNeed)
    try space.store(1, at: p + 4 * page)
    try space.advise(p + 4 * page, length: page, .free)
    try space.store(1, at: p + 5 * page)
    try space.protect(p + 5 * page, length: 2 * page, to: .none)
    var vector = [UInt8](repeating: 9, count: 7)
    try vector.withUnsafeMutableBufferPointer { try space.residency(p, length: 7 * page, into: $0) }
    #expect(vector == [0, 1, 1, 0, 1, 1, 0])
    #expect(residencyError(space, p + 1, page) == .invalidArgument)
    vector = [9, 9, 9]
    try vector.withUnsafeMutableBufferPointer {
      try space.residency(p + page, length: page + 1, into: $0)
    }
    #expect(vector == [1, 1, 9])
    try vector.withUnsafeMutableBufferPointer { try space.residency(p, length: 0, into: $0) }
    #expect(residencyError(space, p + 6 * page, 2 * page) == .outOfMemory)
    let shared = try space.map(at: nil, length: 2 * page, protection: .readWrite, flags: .shared)
    try space.store(1, at: shared)
    try space.advise(shared, length: page, .dontNeed)
    try vector.withUnsafeMutableBufferPointer {
      try space.residency(shared, length: 2 * page, into: $0)
    }
    #expect(Array(vector.prefix(2)) == [1, 0])
  }
}

func residencyError(_ space: SimulatedPageSpace, _ address: UInt, _ length: UInt) -> PageError? {
  var vector = [UInt8](repeating: 0, count: 16)
  return vector.withUnsafeMutableBufferPointer { buffer in
    errorOf { () throws(PageError) in try space.residency(address, length: length, into: buffer) }
  }
}
