// kernel-semantics.md §5: the SIGSEGV an invalid access raises (si_code, si_addr), at byte granularity.

import PageSimulator
import PageSpace
import Testing

@Suite("§5 invalid accesses")
struct SignalTests {
  @Test func codesAndAddresses() throws {
    let space = SimulatedPageSpace()
    let p = try space.map(at: nil, length: 4 * page, protection: .readWrite, flags: [])
    try space.store(1, at: p + 2 * page)
    try space.protect(p, length: page, to: .none)
    try space.protect(p + page, length: page, to: .read)
    try space.protect(p + 2 * page, length: page, to: .read)
    try space.advise(p + 3 * page, length: page, .guardInstall)
    let before = space.faultCounts
    for offset: UInt in [0, 5, 123] {
      #expect(
        faultOf { () throws(PageFault) in _ = try space.load(p + offset) }
          == PageFault(address: p + offset, access: .read, code: .accessError))
      #expect(
        faultOf { () throws(PageFault) in try space.store(0, at: p + offset + 4000 - 123) }
          == PageFault(address: p + offset + 3877, access: .write, code: .accessError))
    }
    // Write to PROT_READ, untouched or present.
    #expect(
      faultOf { () throws(PageFault) in try space.store(0, at: p + page + 9) }?.code == .accessError
    )
    _ = try space.load(p + page)  // zero page mapped now
    #expect(
      faultOf { () throws(PageFault) in try space.store(0, at: p + page + 9) }
        == PageFault(address: p + page + 9, access: .write, code: .accessError))
    #expect(
      faultOf { () throws(PageFault) in try space.store(0, at: p + 2 * page) }?.code == .accessError
    )
    // Guard markers and holes: SEGV_MAPERR.
    #expect(
      faultOf { () throws(PageFault) in _ = try space.load(p + 3 * page + 1) }
        == PageFault(address: p + 3 * page + 1, access: .read, code: .mapError))
    #expect(
      faultOf { () throws(PageFault) in _ = try space.load(16) }
        == PageFault(address: 16, access: .read, code: .mapError))
    #expect(
      faultOf { () throws(PageFault) in try space.store(0, at: p + 4 * page) }
        == PageFault(address: p + 4 * page, access: .write, code: .mapError))
    // Kernel addresses and the last user page: MAPERR at the exact address; non-canonical: SI_KERNEL, 0.
    for address: UInt in [0xffff_ffff_8100_0000, 0x7fff_ffff_f000] {
      #expect(
        faultOf { () throws(PageFault) in _ = try space.load(address) }
          == PageFault(address: address, access: .read, code: .mapError))
    }
    for address: UInt in [0x8000_0000_0000, 0x1234_5678_1234_5678] {
      #expect(
        faultOf { () throws(PageFault) in _ = try space.load(address) }
          == PageFault(address: 0, access: .read, code: .kernel))
    }
    // Handled SIGSEGVs cost no page faults: the only fault was the deliberate zero-page read.
    #expect((space.faultCounts - before).minor == 1)
    #expect(space.counters.invalidAccesses == 16)
  }

  @Test func x86PermissionQuirks() throws {
    let space = SimulatedPageSpace()
    let w = try space.map(at: nil, length: page, protection: .write, flags: [])
    #expect(try space.load(w) == 0)
    try space.store(4, at: w)
    #expect(try space.load(w) == 4)
    let x = try space.map(at: nil, length: page, protection: .exec, flags: [])
    #expect(try space.load(x + 10) == 0)
    #expect(
      faultOf { () throws(PageFault) in try space.store(1, at: x + 10) }
        == PageFault(address: x + 10, access: .write, code: .accessError))
    #expect(
      faultOf { () throws(PageFault) in try space.execute(w + 1) }
        == PageFault(address: w + 1, access: .execute, code: .accessError))
    try space.execute(x)
  }

  @Test func eventsReportFaultsAndInvalidAccesses() throws {
    let space = SimulatedPageSpace()
    var events: [SimulatorEvent] = []
    space.machine.eventHandler = { events.append($0) }
    let p = try space.map(at: nil, length: page, protection: .read, flags: [])
    _ = try space.load(p)
    _ = faultOf { () throws(PageFault) in try space.store(1, at: p) }
    #expect(
      events == [
        .minorFault(process: space.processID, address: p, access: .read),
        .invalidAccess(
          process: space.processID, fault: PageFault(address: p, access: .write, code: .accessError)
        ),
      ])
  }
}
