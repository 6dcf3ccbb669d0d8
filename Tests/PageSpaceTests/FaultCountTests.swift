import PageSpace
import Testing

/// kernel-semantics.md §1, anonymous rows: minor-fault deltas of the calling thread (RUSAGE_THREAD,
/// so tests running in parallel do not disturb each other), for N = 1 and N = 16 pages.
@Suite struct FaultCountTests {
  func fresh(_ pages: Int, _ protection: PageProtection = .readWrite, flags: MapFlags = [])
    throws -> FencedRegion
  {
    // Warm up on the thread that measures: a suite's init may run on another thread than the body.
    try warmUpFaultPaths()
    return try FencedRegion(pages: pages, protection: protection, flags: flags)
  }

  @Test(arguments: [1, 16])
  func a_writeEachPageFaultsOnce(pages: Int) throws {
    let region = try fresh(pages)
    #expect(try minorFaults { try writeEach(region.base, pages) } == UInt64(pages))
    #expect(try minorFaults { try writeEach(region.base, pages) } == 0)
  }

  @Test(arguments: [1, 16])
  func b_readThenWriteCostsTwice(pages: Int) throws {
    var bytes = [UInt8](repeating: 0xFF, count: pages)  // sized outside every window
    let region = try fresh(pages)
    #expect(try minorFaults { try readEach(region.base, pages, into: &bytes) } == UInt64(pages))
    #expect(try minorFaults { try readEach(region.base, pages, into: &bytes) } == 0)
    #expect(try minorFaults { try writeEach(region.base, pages) } == UInt64(pages))
  }

  @Test(arguments: [1, 16])
  func c_populateFaultsInsideMmap(pages: Int) throws {
    var bytes = [UInt8](repeating: 0xFF, count: pages)  // sized outside every window
    let region = try fresh(pages, .none)
    #expect(
      try minorFaults {
        try space.map(
          fixed: region.base, length: UInt(pages) * pageSize, protection: .readWrite,
          flags: .populate)
      } == UInt64(pages))
    #expect(try minorFaults { try writeEach(region.base, pages) } == 0)
    let readOnly = try fresh(pages, .none)
    #expect(
      try minorFaults {
        try space.map(
          fixed: readOnly.base, length: UInt(pages) * pageSize, protection: .read, flags: .populate)
      } == UInt64(pages))
    #expect(try minorFaults { try readEach(readOnly.base, pages, into: &bytes) } == 0)
  }

  @Test(arguments: [1, 16])
  func d_dontNeedDropsThePages(pages: Int) throws {
    var bytes = [UInt8](repeating: 0xFF, count: pages)  // sized outside every window
    let region = try fresh(pages)
    let length = UInt(pages) * pageSize
    try writeEach(region.base, pages)
    #expect(try minorFaults { try space.advise(region.base, length: length, .dontNeed) } == 0)
    #expect(try minorFaults { try writeEach(region.base, pages) } == UInt64(pages))
    try space.advise(region.base, length: length, .dontNeed)

    #expect(try minorFaults { try readEach(region.base, pages, into: &bytes) } == UInt64(pages))
    #expect(bytes == Array(repeating: 0, count: pages))
  }

  @Test(arguments: [1, 16])
  func e_freeWithoutPressureKeepsDataAndCostsNothing(pages: Int) throws {
    var bytes = [UInt8](repeating: 0xFF, count: pages)  // sized outside every window
    let region = try fresh(pages)
    try writeEach(region.base, pages, value: 0x77)
    #expect(
      try minorFaults { try space.advise(region.base, length: UInt(pages) * pageSize, .free) } == 0)

    #expect(try minorFaults { try readEach(region.base, pages, into: &bytes) } == 0)
    #expect(bytes == Array(repeating: 0x77, count: pages))
    #expect(try minorFaults { try writeEach(region.base, pages) } == 0)
  }

  @Test(arguments: [1, 16])
  func f_protectionRoundTripDoesNotRefault(pages: Int) throws {
    var bytes = [UInt8](repeating: 0xFF, count: pages)  // sized outside every window
    let region = try fresh(pages)
    let length = UInt(pages) * pageSize
    try writeEach(region.base, pages)
    #expect(try minorFaults { try space.protect(region.base, length: length, to: .none) } == 0)
    #expect(try minorFaults { try space.protect(region.base, length: length, to: .readWrite) } == 0)
    #expect(try minorFaults { try readEach(region.base, pages, into: &bytes) } == 0)
    #expect(try minorFaults { try writeEach(region.base, pages) } == 0)
  }

  @Test(arguments: [1, 16])
  func f2_onlyZeroPageAndUntouchedPagesRefaultAfterRoundTrips(pages: Int) throws {
    let length = UInt(pages) * pageSize
    let written = try fresh(pages)
    try writeEach(written.base, pages)
    try space.protect(written.base, length: length, to: .none)
    try space.protect(written.base, length: length, to: .readWrite)
    #expect(try minorFaults { try writeEach(written.base, pages) } == 0)

    let onlyRead = try fresh(pages)
    try readEach(onlyRead.base, pages)
    try space.protect(onlyRead.base, length: length, to: .none)
    try space.protect(onlyRead.base, length: length, to: .readWrite)
    #expect(try minorFaults { try writeEach(onlyRead.base, pages) } == UInt64(pages))

    let readOnly = try fresh(pages)
    try writeEach(readOnly.base, pages)
    try space.protect(readOnly.base, length: length, to: .read)
    try space.protect(readOnly.base, length: length, to: .readWrite)
    #expect(try minorFaults { try writeEach(readOnly.base, pages) } == 0)

    let untouched = try fresh(pages, .none)
    try space.protect(untouched.base, length: length, to: .readWrite)
    #expect(try minorFaults { try writeEach(untouched.base, pages) } == UInt64(pages))
  }

  @Test(arguments: [1, 16])
  func g_readOnlyPages(pages: Int) throws {
    var bytes = [UInt8](repeating: 0xFF, count: pages)  // sized outside every window
    let region = try fresh(pages)
    try writeEach(region.base, pages)
    #expect(
      try minorFaults { try space.protect(region.base, length: UInt(pages) * pageSize, to: .read) }
        == 0)
    #expect(try minorFaults { try readEach(region.base, pages, into: &bytes) } == 0)
    let untouched = try fresh(pages, .read)
    #expect(try minorFaults { try readEach(untouched.base, pages, into: &bytes) } == UInt64(pages))
  }

  @Test(arguments: [1, 16])
  func i_sharedAnonymousReadThenWriteCostsOnce(pages: Int) throws {
    var bytes = [UInt8](repeating: 0xFF, count: pages)  // sized outside every window
    let written = try fresh(pages, flags: .shared)
    #expect(try minorFaults { try writeEach(written.base, pages) } == UInt64(pages))
    #expect(try minorFaults { try writeEach(written.base, pages) } == 0)
    let readFirst = try fresh(pages, flags: .shared)
    #expect(try minorFaults { try readEach(readFirst.base, pages, into: &bytes) } == UInt64(pages))
    #expect(try minorFaults { try writeEach(readFirst.base, pages) } == 0)
  }

  @Test(arguments: [1, 16])
  func l_mlockAndMapLockedPopulate(pages: Int) throws {
    let length = UInt(pages) * pageSize
    let untouched = try fresh(pages)
    #expect(try minorFaults { try space.lock(untouched.base, length: length) } == UInt64(pages))
    #expect(try minorFaults { try writeEach(untouched.base, pages) } == 0)
    try space.unlock(untouched.base, length: length)

    let written = try fresh(pages)
    try writeEach(written.base, pages)
    #expect(try minorFaults { try space.lock(written.base, length: length) } == 0)
    try space.unlock(written.base, length: length)

    let region = try fresh(pages, .none)
    #expect(
      try minorFaults {
        try space.map(fixed: region.base, length: length, protection: .readWrite, flags: .locked)
      } == UInt64(pages))
    try space.unlock(region.base, length: length)
  }

  @Test(arguments: [1, 16])
  func l2_failedMlockAndPopulateAdvice(pages: Int) throws {
    let length = UInt(pages) * pageSize
    let none = try fresh(pages, .none)
    // The failing call once outside the window (its error path runs no deeper than this afterwards),
    // then only the call inside the window: the expectation machinery may fault on first use.
    do throws(PageError) { try space.lock(none.base, length: length) } catch {}
    var lockError: PageError? = nil
    let failedLockFaults = minorFaults {
      do throws(PageError) { try space.lock(none.base, length: length) } catch { lockError = error }
    }
    #expect(lockError == .outOfMemory)
    #expect(failedLockFaults == 0)
    let region = try fresh(pages)
    #expect(
      try minorFaults { try space.advise(region.base, length: length, .populateWrite) }
        == UInt64(pages))
    #expect(try minorFaults { try writeEach(region.base, pages) } == 0)
    let readRegion = try fresh(pages)
    #expect(
      try minorFaults { try space.advise(readRegion.base, length: length, .populateRead) }
        == UInt64(pages))
  }

  @Test(arguments: [1, 16])
  func m_remappedMemoryFaultsAgainAndReadsZero(pages: Int) throws {
    var bytes = [UInt8](repeating: 0xFF, count: pages)  // sized outside every window
    let length = UInt(pages) * pageSize
    let region = try fresh(pages)
    try writeEach(region.base, pages)
    try space.unmap(region.base, length: length)
    try space.map(fixed: region.base, length: length, protection: .readWrite)
    #expect(try minorFaults { try writeEach(region.base, pages) } == UInt64(pages))

    #expect(
      try minorFaults { try space.map(fixed: region.base, length: length, protection: .readWrite) }
        == 0)

    #expect(try minorFaults { try readEach(region.base, pages, into: &bytes) } == UInt64(pages))
    #expect(bytes == Array(repeating: 0, count: pages))
  }

  @Test func handledFaultsCostNothing() throws {
    let region = try fresh(2, .none)
    try space.unmap(region.page(1), length: pageSize)
    // Warm, as kernel-semantics §5 measured: on a thread that has never taken a signal, the kernel's
    // write of the first signal frame to a fresh alternate-stack page is itself a minor fault.
    _ = try? space.load(region.page(0))
    try? space.store(1, at: region.page(1))
    #expect(
      minorFaults {
        _ = try? space.load(region.page(0))
        try? space.store(1, at: region.page(1))
      } == 0)
  }

  @Test func processCountersIncludeThisThreadsFaults() throws {
    let processWide = SystemPageSpace(faultCounting: .process)
    let region = try fresh(16)
    let before = processWide.faultCounts
    try writeEach(region.base, 16)
    // Other test threads may add faults meanwhile, never remove them.
    #expect((processWide.faultCounts - before).minor >= 16)
  }
}
