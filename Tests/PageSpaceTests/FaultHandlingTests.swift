import CShims
import PageSpace
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Probes (recoverable accesses) and the installed fault handler: kernel-semantics.md §5.
@Suite struct ProbeTests {
  @Test func protNoneFaultsWithAccessErrorAtTheExactByte() throws {
    let region = try FencedRegion(pages: 1, protection: .none)
    for offset: UInt in [0, 5, 123] {
      expectFault(.accessError, at: region.base + offset, .read) { () throws(PageFault) in
        _ = try space.load(region.base + offset)
      }
    }
    for offset: UInt in [5, 123, 4095] {
      expectFault(.accessError, at: region.base + offset, .write) { () throws(PageFault) in
        try space.store(1, at: region.base + offset)
      }
    }
  }

  @Test func holesFaultWithMapError() throws {
    let region = try FencedRegion(pages: 3)
    try space.unmap(region.page(1), length: pageSize)
    expectFault(.mapError, at: region.page(1) + 9, .read) { () throws(PageFault) in
      _ = try space.load(region.page(1) + 9)
    }
    expectFault(.mapError, at: region.page(1) + 9, .write) { () throws(PageFault) in
      try space.store(1, at: region.page(1) + 9)
    }
    expectFault(.mapError, at: 16, .read) { () throws(PageFault) in _ = try space.load(16) }
  }

  @Test func x86PermissionQuirks() throws {
    let region = try FencedRegion(pages: 3)
    try writeEach(region.base, 3, value: 6)
    try space.protect(region.page(0), length: pageSize, to: .read)
    try space.protect(region.page(1), length: pageSize, to: .write)
    try space.protect(region.page(2), length: pageSize, to: .exec)
    expectFault(.accessError, at: region.page(0) + 1, .write) { () throws(PageFault) in
      try space.store(1, at: region.page(0) + 1)
    }
    #expect(try space.load(region.page(1) + 7) == 6)  // write-only is readable on x86
    #expect(try space.load(region.page(2) + 7) == 6)  // so is exec-only
    expectFault(.accessError, at: region.page(2) + 2, .write) { () throws(PageFault) in
      try space.store(1, at: region.page(2) + 2)
    }
  }

  @Test func nonCanonicalAddressesGiveSIKernelWithAddressZero() {
    for address: UInt in [0x8000_0000_0000, 0x1234_5678_1234_5678] {
      expectFault(.kernel, at: 0, .read) { () throws(PageFault) in _ = try space.load(address) }
    }
    expectFault(.mapError, at: 0x7FFF_FFFF_F000, .read) { () throws(PageFault) in
      _ = try space.load(0x7FFF_FFFF_F000)
    }
  }

  @Test func decodedErrorCodesTellReadsWritesAndPresence() throws {
    let region = try FencedRegion(pages: 3)
    try writeEach(region.page(1), 1)
    try space.protect(region.base, length: pageSize, to: .none)
    try space.protect(region.page(1), length: 2 * pageSize, to: .read)  // page 1 present, 2 not
    func probe(_ address: UInt, write: Bool) -> cshim_fault {
      var code: Int32 = 0
      var faultAddress: UInt = 0
      let faulted = cshim_probe(address, write ? 1 : 0, 0, nil, &code, &faultAddress)
      #expect(faulted == 1)
      var fault = cshim_fault()
      cshim_probe_last_fault(&fault)
      #expect(fault.address == address && fault.code == code && fault.signo == SIGSEGV)
      #expect(fault.pc != 0 && fault.sp != 0)
      return fault
    }
    let read = probe(region.base + 3, write: false)
    #expect(read.error == 0x4 && read.access == Int32(CSHIM_ACCESS_READ))
    let write = probe(region.base + 3, write: true)
    #expect(write.error == 0x6 && write.access == Int32(CSHIM_ACCESS_WRITE))
    let presentReadOnly = probe(region.page(1), write: true)
    #expect(presentReadOnly.error == 0x7 && presentReadOnly.access == Int32(CSHIM_ACCESS_WRITE))
    let absentReadOnly = probe(region.page(2), write: true)
    #expect(absentReadOnly.error == 0x6)
  }

  @Test func probesReadAndWriteWhenNothingFaults() throws {
    let region = try FencedRegion(pages: 1)
    try space.store(0xC3, at: region.base + 42)
    #expect(try space.load(region.base + 42) == 0xC3)
    var value: UInt8 = 0
    var code: Int32 = -1
    var address: UInt = 1
    #expect(cshim_probe(region.base + 42, 0, 0, &value, &code, &address) == 0)
    #expect(value == 0xC3 && code == -1 && address == 1)  // untouched on success
  }

  /// The non-invasive inspector the differential harness relies on must predict what real accesses
  /// do, for every kind of page.
  @Test func inspectionPredictsRealAccesses() throws {
    let region = try FencedRegion(pages: 12)
    let protections: [PageProtection] = [
      .readWrite, .read, .none, .write, .exec, [.read, .write, .exec], .readWrite, .none,
      .readWrite,
      .readWrite, [.read, .exec], .read,
    ]
    for (index, protection) in protections.enumerated() {
      try space.protect(region.page(index), length: pageSize, to: protection)
    }
    if space.supportsGuardMarkers {
      try space.advise(region.page(6), length: pageSize, .guardInstall)
      try space.advise(region.page(7), length: pageSize, .guardInstall)
      try space.advise(region.page(11), length: pageSize, .guardInstall)
    }
    try space.unmap(region.page(8), length: pageSize)
    try space.map(fixed: region.page(9), length: pageSize, protection: .readWrite, flags: .shared)
    let views = try region.views()
    #expect(views[8].mapped == false)
    for index in 0..<12 {
      let address = region.page(index) + 11
      var readResult: FaultCode? = nil
      var writeResult: FaultCode? = nil
      do throws(PageFault) { _ = try space.load(address) } catch { readResult = error.code }
      do throws(PageFault) { try space.store(1, at: address) } catch { writeResult = error.code }
      #expect(views[index].readFault == readResult, "page \(index) read")
      #expect(views[index].writeFault == writeResult, "page \(index) write")
    }
  }
}

// MARK: - The installed handler (process-wide: exit tests only)

nonisolated(unsafe) private var recordedFault = cshim_fault()
nonisolated(unsafe) private var handledCount = 0
nonisolated(unsafe) private var previousHandlerCount = 0
nonisolated(unsafe) private var handlerRanOnAlternateStack = false
nonisolated(unsafe) private var faultBacktrace: [UInt] = []
nonisolated(unsafe) private var faultBacktraceCount: Int32 = 0
nonisolated(unsafe) private var declinedRange = AddressRange(start: 0, end: 0)

/// Records the fault, makes the page accessible, and retries — unless the address is in
/// `declinedRange`, which it passes on.
private let recordingHandler: cshim_fault_handler = { fault, _, _ in
  guard let fault else { return 0 }
  if declinedRange.contains(UInt(fault.pointee.address)) { return 0 }
  recordedFault = fault.pointee
  handledCount += 1
  var alternate = stack_t()
  sigaltstack(nil, &alternate)
  var local = 0
  let here = withUnsafeMutablePointer(to: &local) { UInt(bitPattern: $0) }
  let low = UInt(bitPattern: alternate.ss_sp)
  handlerRanOnAlternateStack = here >= low && here < low + UInt(alternate.ss_size)
  faultBacktraceCount = faultBacktrace.withUnsafeMutableBufferPointer {
    cshim_backtrace_from(fault.pointee.pc, fault.pointee.fp, $0.baseAddress, Int32($0.count))
  }
  let page = UInt(fault.pointee.address) & ~(UInt(cshim_page_size()) - 1)
  return cshim_mprotect(
    UnsafeMutableRawPointer(bitPattern: page), Int(cshim_page_size()), PROT_READ | PROT_WRITE) == 0
    ? 1 : 0
}

@inline(never) func readByte(_ address: UInt) -> UInt8 {
  UnsafePointer<UInt8>(bitPattern: address)!.pointee
}

@inline(never) func writeByte(_ value: UInt8, _ address: UInt) {
  UnsafeMutablePointer<UInt8>(bitPattern: address)!.pointee = value
}

private func setDefaultAction(_ signo: Int32) {
  var action = sigaction()
  action.__sigaction_handler.sa_handler = SIG_DFL
  sigaction(signo, &action, nil)
}

@Suite struct FaultHandlerTests {
  @Test func handlerTellsReadsFromWritesAndRetries() async {
    await #expect(processExitsWith: .success) {
      faultBacktrace = Array(repeating: 0, count: 16)
      require(cshim_install_fault_handler(recordingHandler) == 0, "install")
      let region = try! FencedRegion(pages: 2, protection: .none)

      let read = readByte(region.base + 77)
      require(read == 0 && handledCount == 1, "the read was retried after the handler")
      require(recordedFault.access == Int32(CSHIM_ACCESS_READ), "READ, got \(recordedFault.access)")
      require(recordedFault.code == Int32(CSHIM_SEGV_ACCERR), "ACCERR")
      require(recordedFault.address == region.base + 77, "exact si_addr")
      require(recordedFault.signo == SIGSEGV && recordedFault.error == 0x4, "error code 0x4")
      require(handlerRanOnAlternateStack, "handler runs on the alternate stack")
      require(
        faultBacktraceCount >= 2 && faultBacktrace[0] == recordedFault.pc,
        "backtrace from the fault")

      writeByte(9, region.page(1) + 5)
      require(handledCount == 2, "the write was retried")
      require(
        recordedFault.access == Int32(CSHIM_ACCESS_WRITE), "WRITE, got \(recordedFault.access)")
      require(
        recordedFault.error == 0x6 && recordedFault.address == region.page(1) + 5, "write decoded")
      require(readByte(region.page(1) + 5) == 9, "the retried write landed")

      // A probe on this thread wins over the installed handler.
      try! space.protect(region.base, length: pageSize, to: .none)
      let probed = outcomeOfLoad(region.base)
      require(probed == "SEGV_ACCERR" && handledCount == 2, "probe won: \(probed), \(handledCount)")
      require(cshim_uninstall_fault_handler() == 0, "uninstall")
    }
  }

  @Test func declinedFaultsChainToThePreviousHandler() async {
    await #expect(processExitsWith: .success) {
      var previous = sigaction()
      previous.__sigaction_handler.sa_sigaction = { _, info, _ in
        previousHandlerCount += 1
        let address = UInt(bitPattern: info!.pointee._sifields._sigfault.si_addr)
        let page = address & ~(UInt(cshim_page_size()) - 1)
        _ = cshim_mprotect(
          UnsafeMutableRawPointer(bitPattern: page), Int(cshim_page_size()), PROT_READ | PROT_WRITE)
      }
      previous.sa_flags = SA_SIGINFO
      sigaction(SIGSEGV, &previous, nil)
      require(cshim_install_fault_handler(recordingHandler) == 0, "install")
      let region = try! FencedRegion(pages: 2, protection: .none)
      declinedRange = AddressRange(start: region.page(1), length: pageSize)
      _ = readByte(region.base)
      require(handledCount == 1 && previousHandlerCount == 0, "ours handled page 0")
      _ = readByte(region.page(1))
      require(handledCount == 1 && previousHandlerCount == 1, "page 1 went to the previous handler")
      require(cshim_uninstall_fault_handler() == 0, "uninstall")
      var restored = sigaction()
      sigaction(SIGSEGV, nil, &restored)
      require(restored.sa_flags & SA_SIGINFO != 0, "previous action restored")
    }
  }

  @Test func unhandledFaultsDieBySIGSEGV() async {
    await #expect(processExitsWith: .signal(SIGSEGV)) {
      setDefaultAction(SIGSEGV)
      _ = cshim_install_fault_handler(recordingHandler)
      let region = try! FencedRegion(pages: 1, protection: .none)
      declinedRange = region.range
      _ = readByte(region.base)
      exit(0)  // not reached
    }
  }

  @Test func dieWithSignalRaisesWithTheDefaultAction() async {
    await #expect(processExitsWith: .signal(SIGSEGV)) {
      var ignore = sigaction()
      ignore.__sigaction_handler.sa_handler = SIG_IGN
      sigaction(SIGSEGV, &ignore, nil)  // even an ignored SIGSEGV is restored to the default
      cshim_die_with_signal(SIGSEGV)
    }
    await #expect(processExitsWith: .signal(SIGBUS)) { cshim_die_with_signal(SIGBUS) }
  }

  @Test func alternateStackIsPerThreadAndIdempotent() async {
    await #expect(processExitsWith: .success) {
      var thread = pthread_t()
      let created = pthread_create(
        &thread, nil,
        { _ in
          var before = stack_t()
          sigaltstack(nil, &before)
          require(before.ss_flags & Int32(SS_DISABLE) != 0, "a new thread has no alternate stack")
          require(cshim_ensure_alternate_stack() == 0, "ensure")
          var after = stack_t()
          sigaltstack(nil, &after)
          require(after.ss_flags & Int32(SS_DISABLE) == 0 && after.ss_size >= 64 * 1024, "enabled")
          require(cshim_ensure_alternate_stack() == 0, "again")
          var again = stack_t()
          sigaltstack(nil, &again)
          require(again.ss_sp == after.ss_sp, "the second call keeps the same stack")
          return nil
        }, nil)
      require(created == 0, "pthread_create")
      pthread_join(thread, nil)
    }
  }
}

func outcomeOfLoad(_ address: UInt) -> String {
  do throws(PageFault) {
    _ = try space.load(address)
    return "ok"
  } catch {
    return error.code.description
  }
}
