import CShims
import PageSpace
import Testing

/// kernel-semantics.md §4: every errno row comes back as a typed `PageError`, with the partial
/// effects and VMA deltas the kernel shows. Each test works on its own fenced region.
@Suite struct SyscallResultTests {
  // MARK: mprotect

  @Test func mprotectRejectsUnalignedAddressAndInvalidBits() throws {
    let region = try FencedRegion(pages: 8)
    expectError(.invalidArgument) { () throws(PageError) in
      try space.protect(region.base + 1, length: pageSize, to: .none)
    }
    expectError(.invalidArgument) { () throws(PageError) in
      try space.protect(region.base, length: pageSize, to: PageProtection(rawValue: 0x40 | 0x1))
    }
    expectError(.invalidArgument) { () throws(PageError) in
      try space.protect(region.base, length: pageSize, to: [.read, .growsDown])
    }
    #expect(region.vmaCount == 1)
  }

  @Test func mprotectRoundsTheLengthUpToPages() throws {
    let region = try FencedRegion(pages: 8)
    try space.protect(region.base, length: 1, to: .none)
    #expect(try region.protections().prefix(2) == ["---", "rw-"])
    #expect(region.vmaCount == 2)
    try space.protect(region.base, length: pageSize + 1, to: .none)
    #expect(try region.protections().prefix(3) == ["---", "---", "rw-"])
    #expect(region.vmaCount == 2)
  }

  @Test func mprotectOfZeroLengthIsANoOpEvenOnAHole() throws {
    let region = try FencedRegion(pages: 8)
    try space.unmap(region.page(3), length: pageSize)
    try space.protect(region.base, length: 0, to: .none)
    try space.protect(region.page(3), length: 0, to: .none)
    #expect(try region.protections() == ["rw-", "rw-", "rw-", "hole", "rw-", "rw-", "rw-", "rw-"])
  }

  @Test func middlePageSplitsIntoThreeAndMergesBack() throws {
    let region = try FencedRegion(pages: 8)
    try writeEach(region.base, 8)
    try space.protect(region.page(3), length: pageSize, to: .none)
    #expect(region.vmaCount == 3)
    try space.protect(region.page(3), length: pageSize, to: .readWrite)
    #expect(region.vmaCount == 1)
    try space.protect(region.base, length: pageSize, to: .none)
    #expect(region.vmaCount == 2)
    try space.protect(region.base, length: 8 * pageSize, to: .readWrite)
    #expect(region.vmaCount == 1)
  }

  @Test func writeOnlyExecOnlyAndRWXAreAccepted() throws {
    let region = try FencedRegion(pages: 3)
    try space.protect(region.page(0), length: pageSize, to: .write)
    try space.protect(region.page(1), length: pageSize, to: .exec)
    try space.protect(region.page(2), length: pageSize, to: [.read, .write, .exec])
    #expect(try region.protections() == ["-w-", "--x", "rwx"])
  }

  @Test func mprotectStopsAtAHoleHavingChangedThePartBeforeIt() throws {
    let region = try FencedRegion(pages: 8)
    try writeEach(region.base, 8)
    try space.unmap(region.page(3), length: pageSize)
    #expect(region.vmaCount == 2)
    expectError(.outOfMemory) { () throws(PageError) in
      try space.protect(region.base, length: 8 * pageSize, to: .read)
    }
    #expect(try region.protections() == ["r--", "r--", "r--", "hole", "rw-", "rw-", "rw-", "rw-"])
    #expect(region.vmaCount == 2)
    // Starting inside the hole, or the hole alone: nothing changes.
    expectError(.outOfMemory) { () throws(PageError) in
      try space.protect(region.page(3), length: 5 * pageSize, to: .none)
    }
    expectError(.outOfMemory) { () throws(PageError) in
      try space.protect(region.page(3), length: pageSize, to: .none)
    }
    #expect(try region.protections() == ["r--", "r--", "r--", "hole", "rw-", "rw-", "rw-", "rw-"])
  }

  @Test func mprotectOfImpossibleRangesIsENOMEM() throws {
    let region = try FencedRegion(pages: 8)
    // A length that wraps, and addresses at or beyond the end of user space: nothing changes.
    expectError(.outOfMemory) { () throws(PageError) in
      try space.protect(region.base, length: 0 &- pageSize, to: .read)
    }
    for address: UInt in [0x7FFF_FFFF_F000, 0x8000_0000_0000] {
      expectError(.outOfMemory) { () throws(PageError) in
        try space.protect(address, length: pageSize, to: .read)
      }
    }
    #expect(try region.protections() == Array(repeating: "rw-", count: 8))
    // 2^62 does not wrap: like any range running into a hole, the mapped part before it changes.
    expectError(.outOfMemory) { () throws(PageError) in
      try space.protect(region.base, length: 1 << 62, to: .read)
    }
    #expect(try region.protections() == Array(repeating: "r--", count: 8))
  }

  // MARK: munmap

  @Test func munmapErrorsAndRounding() throws {
    let region = try FencedRegion(pages: 8)
    for (address, length) in [
      (region.base + 1, pageSize), (region.base, 0), (region.base, UInt(1) << 62),
      (0x8000_0000_0000, pageSize),
    ] {
      expectError(.invalidArgument) { () throws(PageError) in
        try space.unmap(address, length: length)
      }
    }
    try space.unmap(region.page(4), length: pageSize)  // middle page: +1
    #expect(region.vmaCount == 2)
    try space.unmap(region.page(4), length: pageSize)  // already unmapped: fine
    try space.unmap(region.base, length: 1)  // rounds up to the first page
    try space.unmap(region.page(6), length: pageSize + 1)  // pages 6 and 7
    #expect(
      try region.protections() == ["hole", "rw-", "rw-", "rw-", "hole", "rw-", "hole", "hole"])
    #expect(region.vmaCount == 2)
    try space.unmap(region.base, length: 8 * pageSize)  // across the holes
    #expect(region.vmaCount == 0)
  }

  @Test func munmapAcrossAProtectionBoundaryKeepsTheCount() throws {
    let region = try FencedRegion(pages: 8)
    try space.protect(region.page(4), length: 4 * pageSize, to: .none)
    #expect(region.vmaCount == 2)
    try space.unmap(region.page(3), length: 2 * pageSize)
    #expect(region.vmaCount == 2)
  }

  // MARK: mmap

  @Test func fixedMappingOverTheMiddleZeroesItAndMergesBack() throws {
    let region = try FencedRegion(pages: 8)
    try writeEach(region.base, 8, value: 0x5A)
    try space.map(fixed: region.page(3), length: 2 * pageSize, protection: .readWrite)
    #expect(region.vmaCount == 1)
    #expect(try readEach(region.base, 8) == [0x5A, 0x5A, 0x5A, 0, 0, 0x5A, 0x5A, 0x5A])
    try space.map(fixed: region.page(3), length: 2 * pageSize, protection: .none)
    #expect(region.vmaCount == 3)
    expectError(.invalidArgument) { () throws(PageError) in
      try space.map(fixed: region.page(3) + 8, length: pageSize, protection: .readWrite)
    }
  }

  @Test func fixedNoReplaceRefusesOccupiedRanges() throws {
    let region = try FencedRegion(pages: 8)
    try writeEach(region.base, 8)
    for (page, count) in [(0, 8), (2, 1), (7, 1)] {
      expectError(.exists) { () throws(PageError) in
        _ = try space.map(
          at: region.page(page), length: UInt(count) * pageSize, protection: .readWrite,
          flags: .fixedNoReplace)
      }
    }
    expectError(.invalidArgument) { () throws(PageError) in
      _ = try space.map(
        at: region.base + 1, length: pageSize, protection: .readWrite, flags: .fixedNoReplace)
    }
    // A free page next to a same-protection VMA: placed and merged.
    try space.unmap(region.page(7), length: pageSize)
    let placed = try space.map(
      at: region.page(7), length: pageSize, protection: .readWrite, flags: .fixedNoReplace)
    #expect(placed == region.page(7))
    #expect(region.vmaCount == 1)
  }

  @Test func mmapArgumentErrors() async throws {
    expectError(.invalidArgument) { () throws(PageError) in
      _ = try space.map(at: nil, length: 0, protection: .readWrite, flags: [])
    }
    expectError(.outOfMemory) { () throws(PageError) in
      _ = try space.map(at: nil, length: 1 << 47, protection: .readWrite, flags: [])
    }
    // A 2^46-byte reservation needs a 64 TiB gap: only a fresh process is sure to have one.
    await #expect(processExitsWith: .success) {
      let size: UInt = 1 << 46
      var huge: UInt = 0
      let mapped = outcome { () throws(PageError) in
        huge = try space.map(at: nil, length: size, protection: .none, flags: .noReserve)
      }
      require(mapped == "ok", "mmap(2^46, PROT_NONE, NORESERVE) gave \(mapped)")
      require(space.vmaCount(in: AddressRange(start: huge, length: size)) == 1, "one VMA")
      try! space.unmap(huge, length: size)
    }
  }

  @Test func mmapHintsAreHintsWithoutFixed() throws {
    let region = try FencedRegion(pages: 8)
    let elsewhere = try space.map(
      at: region.page(2), length: pageSize, protection: .readWrite, flags: [])
    #expect(elsewhere != region.page(2))
    try space.unmap(elsewhere, length: pageSize)
    try space.unmap(region.page(2), length: 2 * pageSize)
    let free = try space.map(at: region.page(2), length: pageSize, protection: .read, flags: [])
    #expect(free == region.page(2))
    let roundedDown = try space.map(
      at: region.page(3) + 100, length: pageSize, protection: .read, flags: [])
    #expect(roundedDown == region.page(3))
  }

  // MARK: madvise

  @Test func madviseArgumentErrorsAndNoOps() throws {
    let region = try FencedRegion(pages: 8)
    expectError(.invalidArgument) { () throws(PageError) in
      try space.advise(region.base + 1, length: pageSize, .dontNeed)
    }
    expectError(.invalidArgument) { () throws(PageError) in
      try space.advise(region.base, length: pageSize, PageAdvice(rawValue: 12345))
    }
    try space.unmap(region.page(7), length: pageSize)
    try space.advise(region.base, length: 0, .dontNeed)
    try space.advise(region.page(7), length: 0, .dontNeed)
    for advice: PageAdvice in [.dontNeed, .free, .normal, .willNeed] {
      expectError(.outOfMemory) { () throws(PageError) in
        try space.advise(region.page(7), length: pageSize, advice)
      }
    }
  }

  @Test func dontNeedRoundsUpAndCarriesOnAcrossAHole() throws {
    let region = try FencedRegion(pages: 8)
    try writeEach(region.base, 8, value: 9)
    try space.advise(region.base, length: pageSize + 1, .dontNeed)
    #expect(try readEach(region.base, 3) == [0, 0, 9])
    try writeEach(region.base, 8, value: 9)
    try space.unmap(region.page(3), length: pageSize)
    expectError(.outOfMemory) { () throws(PageError) in
      try space.advise(region.base, length: 8 * pageSize, .dontNeed)
    }
    #expect(try readEach(region.base, 3) == [0, 0, 0])
    #expect(try readEach(region.page(4), 4) == [0, 0, 0, 0])
    #expect(region.vmaCount == 2)
  }

  @Test func dontNeedOnProtNoneLosesTheData() throws {
    let region = try FencedRegion(pages: 2)
    try writeEach(region.base, 2, value: 3)
    try space.protect(region.base, length: 2 * pageSize, to: .none)
    try space.advise(region.base, length: 2 * pageSize, .dontNeed)
    try space.advise(region.base, length: 2 * pageSize, .free)
    try space.protect(region.base, length: 2 * pageSize, to: .readWrite)
    #expect(try readEach(region.base, 2) == [0, 0])
  }

  @Test func lockedSharedAndPrivateSpecificAdviceErrors() throws {
    let locked = try FencedRegion(pages: 4)
    try space.lock(locked.base, length: 4 * pageSize)
    expectError(.invalidArgument) { () throws(PageError) in
      try space.advise(locked.base, length: pageSize, .dontNeed)
    }
    expectError(.invalidArgument) { () throws(PageError) in
      try space.advise(locked.base, length: pageSize, .free)
    }
    if space.supportsGuardMarkers {
      expectError(.invalidArgument) { () throws(PageError) in
        try space.advise(locked.base, length: pageSize, .guardInstall)
      }
    }
    try space.unlock(locked.base, length: 4 * pageSize)

    let shared = try FencedRegion(pages: 2, flags: .shared)
    expectError(.invalidArgument) { () throws(PageError) in
      try space.advise(shared.base, length: pageSize, .free)
    }
    try writeEach(shared.base, 2, value: 4)
    try space.advise(shared.base, length: pageSize, .dontNeed)
    try space.advise(shared.page(1), length: pageSize, .remove)
    #expect(try readEach(shared.base, 2) == [4, 0])  // DONTNEED keeps shmem data; REMOVE drops it

    let privateRegion = try FencedRegion(pages: 1)
    expectError(.invalidArgument) { () throws(PageError) in
      try space.advise(privateRegion.base, length: pageSize, .remove)
    }
  }

  @Test(arguments: [
    (PageAdvice.dontNeed, 0), (.free, 0), (.willNeed, 0), (.normal, 0), (.cold, 0), (.pageOut, 0),
    (.populateRead, 0), (.populateWrite, 0), (.random, 2), (.sequential, 2), (.hugePage, 2),
    (.noHugePage, 2), (.dontFork, 2), (.dontDump, 2), (.wipeOnFork, 2), (.mergeable, 2),
  ])
  func adviceOnTheMiddleTwoPagesSplitsOnlyForFlagAdvice(advice: PageAdvice, vmaDelta: Int) throws {
    let region = try FencedRegion(pages: 8)
    try writeEach(region.base, 8, value: 1)
    try space.advise(region.page(3), length: 2 * pageSize, advice)
    #expect(region.vmaCount == 1 + vmaDelta)
    let expected: [UInt8] =
      advice == .dontNeed ? [1, 1, 1, 0, 0, 1, 1, 1] : Array(repeating: 1, count: 8)
    #expect(try readEach(region.base, 8) == expected)
  }

  @Test func mlockSplitsAndMunlockMerges() throws {
    let region = try FencedRegion(pages: 8)
    try space.lock(region.page(3), length: 2 * pageSize)
    #expect(region.vmaCount == 3)
    try space.unlock(region.page(3), length: 2 * pageSize)
    #expect(region.vmaCount == 1)
    try space.protect(region.page(2), length: pageSize, to: .none)
    expectError(.outOfMemory) { () throws(PageError) in
      try space.lock(region.page(2), length: pageSize)
    }
    expectError(.outOfMemory) { () throws(PageError) in
      try space.lock(region.base, length: 8 * pageSize)
    }
    try space.unlock(region.base, length: 8 * pageSize)
  }

  // MARK: Guard markers

  @Test(.enabled(if: space.supportsGuardMarkers))
  func guardMarkerFaultsWithoutAVMAAndIsRemovable() throws {
    let region = try FencedRegion(pages: 9)
    try writeEach(region.base, 9, value: 2)
    for page in [1, 3, 5, 7] {
      try space.advise(region.page(page), length: pageSize, .guardInstall)
    }
    #expect(region.vmaCount == 1)
    let views = try region.views()
    #expect(views.map(\.protection) == Array(repeating: PageProtection.readWrite, count: 9))
    #expect(
      views.map(\.guardMarker) == [false, true, false, true, false, true, false, true, false])
    var vector = [UInt8](repeating: 9, count: 2)
    try vector.withUnsafeMutableBufferPointer { buffer throws(PageError) in
      try space.residency(region.base, length: 2 * pageSize, into: buffer)
    }
    #expect(vector == [1, 0])
    expectFault(.mapError, at: region.page(1) + 7, .read) { () throws(PageFault) in
      _ = try space.load(region.page(1) + 7)
    }
    expectFault(.mapError, at: region.page(3) + 100, .write) { () throws(PageFault) in
      try space.store(1, at: region.page(3) + 100)
    }
    try space.advise(region.page(1), length: pageSize, .dontNeed)  // keeps the guard
    expectFault(.mapError, at: region.page(1), .read) { () throws(PageFault) in
      _ = try space.load(region.page(1))
    }
    try space.advise(region.page(1), length: pageSize, .guardRemove)
    #expect(try readEach(region.page(1), 1) == [0])
    // Also on shared anonymous memory and on PROT_NONE.
    let shared = try FencedRegion(pages: 1, flags: .shared)
    try space.advise(shared.base, length: pageSize, .guardInstall)
    let none = try FencedRegion(pages: 1, protection: .none)
    try space.advise(none.base, length: pageSize, .guardInstall)
    // The VMA's protection is checked first: a guard on PROT_NONE faults as SEGV_ACCERR.
    expectFault(.accessError, at: none.base, .read) { () throws(PageFault) in
      _ = try space.load(none.base)
    }
    #expect(try none.views().map(\.readFault) == [.accessError])
  }

  @Test func forcedFallbackReportsGuardMarkersUnsupported() throws {
    let noMarkers = SystemPageSpace(forceNoGuardMarkers: true)
    #expect(!noMarkers.supportsGuardMarkers)
    let region = try FencedRegion(pages: 2)
    expectError(.unsupported) { () throws(PageError) in
      try noMarkers.advise(region.base, length: pageSize, .guardInstall)
    }
    expectError(.unsupported) { () throws(PageError) in
      try noMarkers.advise(region.base, length: pageSize, .guardRemove)
    }
    try noMarkers.advise(region.base, length: pageSize, .dontNeed)  // everything else still works
  }

  @Test func processWideFallbackSwitch() async {
    await #expect(processExitsWith: .success) {
      require(cshim_guard_markers_supported() != 0, "this kernel (6.13+) supports guard markers")
      cshim_force_no_guard_markers(1)
      require(cshim_guard_markers_supported() == 0, "forced off")
      let forced = SystemPageSpace()
      require(!forced.supportsGuardMarkers, "the space sees the switch")
      let page = try! forced.map(at: nil, length: pageSize, protection: .readWrite, flags: [])
      let result = outcome { () throws(PageError) in
        try forced.advise(page, length: pageSize, .guardInstall)
      }
      require(result == "EOPNOTSUPP", "advise(.guardInstall) gave \(result)")
      cshim_force_no_guard_markers(0)
      require(cshim_guard_markers_supported() != 0, "switched back on")
    }
  }

  // MARK: mincore

  @Test func mincoreReportsResidencyPerState() throws {
    let region = try FencedRegion(pages: 7)
    try readEach(region.page(1), 1)  // zero page
    try writeEach(region.page(2), 4)  // pages 2...5 written
    try space.advise(region.page(3), length: pageSize, .dontNeed)
    try space.advise(region.page(4), length: pageSize, .free)
    try space.protect(region.page(5), length: 2 * pageSize, to: .none)  // 5 written, 6 untouched
    var vector = [UInt8](repeating: 0xFF, count: 7)
    try vector.withUnsafeMutableBufferPointer { buffer throws(PageError) in
      try space.residency(region.base, length: 7 * pageSize, into: buffer)
    }
    #expect(vector.map { $0 & 1 } == [0, 1, 1, 0, 1, 1, 0])
  }

  @Test func mincoreArgumentRows() throws {
    let region = try FencedRegion(pages: 4)
    try writeEach(region.base, 4)
    var vector = [UInt8](repeating: 0xEE, count: 4)
    try vector.withUnsafeMutableBufferPointer { buffer throws(PageError) in
      try space.residency(region.base, length: pageSize + 1, into: buffer)
    }
    #expect(vector == [1, 1, 0xEE, 0xEE])  // two entries written
    vector = [0xEE, 0xEE, 0xEE, 0xEE]
    try vector.withUnsafeMutableBufferPointer { buffer throws(PageError) in
      try space.residency(region.base, length: 0, into: buffer)
    }
    #expect(vector == [0xEE, 0xEE, 0xEE, 0xEE])
    vector.withUnsafeMutableBufferPointer { buffer in
      expectError(.invalidArgument) { () throws(PageError) in
        try space.residency(region.base + 1, length: pageSize, into: buffer)
      }
    }
    try space.unmap(region.page(3), length: pageSize)
    vector.withUnsafeMutableBufferPointer { buffer in
      expectError(.outOfMemory) { () throws(PageError) in
        try space.residency(region.base, length: 4 * pageSize, into: buffer)
      }
      expectError(.outOfMemory) { () throws(PageError) in
        try space.residency(region.page(3), length: pageSize, into: buffer)
      }
    }
  }

  @Test func mincoreOnSharedMemoryReportsThePageCache() throws {
    let region = try FencedRegion(pages: 2, flags: .shared)
    try writeEach(region.base, 1)
    try space.advise(region.base, length: pageSize, .dontNeed)
    var vector = [UInt8](repeating: 0xFF, count: 2)
    try vector.withUnsafeMutableBufferPointer { buffer throws(PageError) in
      try space.residency(region.base, length: 2 * pageSize, into: buffer)
    }
    #expect(vector.map { $0 & 1 } == [1, 0])
  }
}
