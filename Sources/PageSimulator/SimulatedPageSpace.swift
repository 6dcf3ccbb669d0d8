// A simulated process: a page table, a TLB, a memory map and counters, over a `SimulatedMachine`.
// Every operation follows the measured Linux behaviour in ../shared/kernel-semantics.md.

import PageSpace

/// Linux's user address-space top on x86-64 with 4-level paging (TASK_SIZE_MAX).
let taskSize: UInt = 0x7fff_ffff_f000
let pageSizeValue: UInt = 4096
let hugePages: UInt64 = 512

@inline(__always) func pageAlignUp(_ value: UInt) -> UInt { (value &+ 4095) & ~UInt(4095) }

/// A simulated process's address space with Linux's page semantics (see the module documentation).
///
/// Not thread-safe: like the real mm it would need a lock, and the access paths are kept lock-free for
/// speed; drive one machine (and its processes) from one thread at a time.
public final class SimulatedPageSpace: PageSpace {
  public let machine: SimulatedMachine
  public private(set) var processID: Int = 0
  /// The process's counters (faults, COW, swap, resident pages...).
  public internal(set) var counters = SimulatorCounters()
  /// `vm.max_map_count` for this process (Linux default 65530).
  public var maxMapCount: Int = 65530
  /// VMAs the model adds to `vmaCount` for mappings it does not simulate (a real process starts with
  /// ~24: text, heap, stack, libraries). 0 by default: the count is the simulated VMAs only.
  public var vmaBaseline: Int = 0
  /// Non-fixed mappings are placed top-down below this address, like Linux's mmap_base.
  public var mmapBase: UInt = 0x7f00_0000_0000
  /// `vm.mmap_min_addr`: MAP_FIXED below it fails with EPERM.
  public var mmapMinAddress: UInt = 0x10000
  /// Whether MADV_GUARD_INSTALL is offered (Linux 6.13+); false makes it EINVAL, as on older kernels.
  public var guardMarkersAvailable = true
  public private(set) var isKilled = false
  /// The process called `exit()`.
  public internal(set) var hasExited = false
  /// Pages of this process currently in swap.
  public internal(set) var swappedPages = 0

  var table = RadixPageTable()
  var vmas = VMASet()

  // A direct-mapped software TLB: tag = vpn + 1 (0 = empty), the frame, and whether a store may go
  // straight through (the PTE is writable and already dirty).
  static let tlbEntries = 64
  let tlbTag: UnsafeMutablePointer<UInt64>
  let tlbFrame: UnsafeMutablePointer<UInt32>
  let tlbWritable: UnsafeMutablePointer<Bool>

  /// A process on its own machine with unlimited memory and no swap (the heap's default substrate).
  public convenience init() {
    self.init(machine: SimulatedMachine())
  }

  /// A new, empty process on `machine`.
  public init(machine: SimulatedMachine) {
    self.machine = machine
    tlbTag = .allocate(capacity: Self.tlbEntries)
    tlbTag.initialize(repeating: 0, count: Self.tlbEntries)
    tlbFrame = .allocate(capacity: Self.tlbEntries)
    tlbFrame.initialize(repeating: 0, count: Self.tlbEntries)
    tlbWritable = .allocate(capacity: Self.tlbEntries)
    tlbWritable.initialize(repeating: false, count: Self.tlbEntries)
    processID = machine.register(self)
  }

  deinit {
    if !isKilled && !hasExited { tearDown() }
    machine.unregister(processID)
    table.deallocate()
    tlbTag.deallocate()
    tlbFrame.deallocate()
    tlbWritable.deallocate()
  }

  /// The VMAs, lowest first (for tests and tools).
  public var memoryMap: [VMA] { vmas.areas }

  // MARK: PageSpace: properties

  public var pageSize: UInt { pageSizeValue }
  public var vmaCount: Int { vmas.count + vmaBaseline }
  public func vmaCount(in range: AddressRange) -> Int { vmas.count(overlapping: range) }
  public var faultCounts: FaultCounts { counters.faultCounts }
  public var supportsGuardMarkers: Bool { guardMarkersAvailable }

  // MARK: TLB

  @inline(__always) func tlbFlushAll() {
    tlbTag.update(repeating: 0, count: Self.tlbEntries)
  }

  @inline(__always) func tlbFlush(vpn: UInt64) {
    let slot = Int(truncatingIfNeeded: vpn & 63)
    if tlbTag[slot] == vpn &+ 1 { tlbTag[slot] = 0 }
  }

  @inline(__always) func tlbFill(vpn: UInt64, frame: UInt32, writable: Bool) {
    let slot = Int(truncatingIfNeeded: vpn & 63)
    tlbTag[slot] = vpn &+ 1
    tlbFrame[slot] = frame
    tlbWritable[slot] = writable
  }

  // MARK: Accesses

  public func load(_ address: UInt) throws(PageFault) -> UInt8 {
    let vpn = UInt64(address >> 12)
    let slot = Int(truncatingIfNeeded: vpn & 63)
    let frame: UInt32
    if tlbTag[slot] == vpn &+ 1 {
      frame = tlbFrame[slot]
    } else {
      frame = try resolve(address, .read)
    }
    machine.frameStamp[Int(frame)] = machine.tick
    machine.tick &+= 1
    return machine.readByte(frame, Int(address & 4095))
  }

  public func store(_ value: UInt8, at address: UInt) throws(PageFault) {
    let vpn = UInt64(address >> 12)
    let slot = Int(truncatingIfNeeded: vpn & 63)
    let frame: UInt32
    if tlbTag[slot] == vpn &+ 1 && tlbWritable[slot] {
      frame = tlbFrame[slot]
    } else {
      frame = try resolve(address, .write)
    }
    machine.frameStamp[Int(frame)] = machine.tick
    machine.tick &+= 1
    machine.writeByte(frame, Int(address & 4095), value)
  }

  /// An instruction fetch at `address` (x86: needs PROT_EXEC); faults like the CPU would.
  public func execute(_ address: UInt) throws(PageFault) {
    _ = try resolve(address, .execute)
    machine.tick &+= 1
  }

  public func fill(_ address: UInt, count: UInt, with byte: UInt8) {
    var cursor = address
    let end = address + count
    while cursor < end {
      let pageEnd = (cursor | 4095) &+ 1
      let chunkEnd = min(end, pageEnd)
      let frame = ownerResolve(cursor, .write)
      let offset = Int(cursor & 4095)
      let length = Int(chunkEnd - cursor)
      if byte == 0 && length == 4096 {
        // A page of zeros needs no buffer.
        machine.frameData[Int(frame)]?.deallocate()
        machine.frameData[Int(frame)] = nil
        machine.frameSparse[Int(frame)] = 0
      } else if byte != 0 || machine.readableData(frame) != nil {
        (machine.writableData(frame) + offset).initializeMemory(
          as: UInt8.self, repeating: byte, count: length)
      }
      cursor = chunkEnd
    }
  }

  public func firstMismatch(_ address: UInt, count: UInt, expected byte: UInt8) -> UInt? {
    var cursor = address
    let end = address + count
    while cursor < end {
      let chunkEnd = min(end, (cursor | 4095) &+ 1)
      let frame = ownerResolve(cursor, .read)
      let offset = Int(cursor & 4095)
      let length = Int(chunkEnd - cursor)
      if let data = machine.readableData(frame) {
        let bytes = (data + offset).assumingMemoryBound(to: UInt8.self)
        for i in 0..<length where bytes[i] != byte { return cursor + UInt(i) }
      } else if byte != 0 {
        return cursor
      }
      cursor = chunkEnd
    }
    return nil
  }

  public func copy(from source: UInt, to destination: UInt, count: UInt) {
    guard count > 0, source != destination else { return }
    // memmove: when the destination overlaps the source from above, copy chunks from the end.
    let backwards = destination > source && destination < source + count
    let chunk: UInt = 4096
    var buffer = [UInt8](repeating: 0, count: Int(min(count, chunk)))
    var done: UInt = 0
    while done < count {
      let length = min(chunk, count - done)
      let offset = backwards ? count - done - length : done
      buffer.withUnsafeMutableBytes { raw in
        readBytes(source + offset, into: raw.baseAddress!, count: length)
        writeBytes(destination + offset, from: raw.baseAddress!, count: length)
      }
      done += length
    }
  }

  /// Reads bytes the owner knows to be readable (faults are counted as for the program's reads).
  public func readBytes(_ address: UInt, count: Int) -> [UInt8] {
    var result = [UInt8](repeating: 0, count: count)
    result.withUnsafeMutableBytes { readBytes(address, into: $0.baseAddress!, count: UInt(count)) }
    return result
  }

  /// Writes bytes the owner knows to be writable.
  public func writeBytes(_ address: UInt, _ bytes: [UInt8]) {
    bytes.withUnsafeBytes { writeBytes(address, from: $0.baseAddress!, count: UInt(bytes.count)) }
  }

  func readBytes(_ address: UInt, into target: UnsafeMutableRawPointer, count: UInt) {
    var cursor = address
    let end = address + count
    while cursor < end {
      let chunkEnd = min(end, (cursor | 4095) &+ 1)
      let frame = ownerResolve(cursor, .read)
      let length = Int(chunkEnd - cursor)
      let out = target + Int(cursor - address)
      if let data = machine.readableData(frame) {
        out.copyMemory(from: data + Int(cursor & 4095), byteCount: length)
      } else {
        out.initializeMemory(as: UInt8.self, repeating: 0, count: length)
      }
      cursor = chunkEnd
    }
  }

  func writeBytes(_ address: UInt, from source: UnsafeRawPointer, count: UInt) {
    var cursor = address
    let end = address + count
    while cursor < end {
      let chunkEnd = min(end, (cursor | 4095) &+ 1)
      let frame = ownerResolve(cursor, .write)
      (machine.writableData(frame) + Int(cursor & 4095)).copyMemory(
        from: source + Int(cursor - address), byteCount: Int(chunkEnd - cursor))
      cursor = chunkEnd
    }
  }

  /// The owner's accesses must not fault: a fault here is the caller's bug.
  private func ownerResolve(_ address: UInt, _ access: MemoryAccess) -> UInt32 {
    let vpn = UInt64(address >> 12)
    let slot = Int(truncatingIfNeeded: vpn & 63)
    let frame: UInt32
    if tlbTag[slot] == vpn &+ 1 && (access == .read || tlbWritable[slot]) {
      frame = tlbFrame[slot]
    } else {
      do throws(PageFault) {
        frame = try resolve(address, access)
      } catch {
        preconditionFailure("owner access to an inaccessible range: \(error)")
      }
    }
    machine.frameStamp[Int(frame)] = machine.tick
    machine.tick &+= 1
    return frame
  }

  // MARK: Faults

  private func invalid(_ address: UInt, _ access: MemoryAccess, _ code: FaultCode) -> PageFault {
    let fault = PageFault(address: code == .kernel ? 0 : address, access: access, code: code)
    counters.invalidAccesses += 1
    machine.eventHandler?(.invalidAccess(process: processID, fault: fault))
    return fault
  }

  /// The TLB-miss path: checks the VMA like the CPU and the kernel do, services the fault if any, fills
  /// the TLB and returns the frame (0 is the zero page).
  func resolve(_ address: UInt, _ access: MemoryAccess) throws(PageFault) -> UInt32 {
    requireAlive()
    guard let frame = try resolveUnlessKilled(address, access) else {
      preconditionFailure("process \(processID) was killed by the OOM killer during its access")
    }
    return frame
  }

  /// `resolve`, but nil when the OOM killer chose this very process while serving the fault.
  func resolveUnlessKilled(_ address: UInt, _ access: MemoryAccess) throws(PageFault) -> UInt32? {
    if address >= 1 << 47 {
      // The kernel half is canonical (a #PF with the protection bit forced); the rest is #GP.
      throw invalid(address, access, address >= 0xffff_8000_0000_0000 ? .mapError : .kernel)
    }
    guard let index = vmas.index(containing: address) else {
      throw invalid(address, access, .mapError)
    }
    let flags = vmas.areas[index].flags
    let permitted: Bool
    switch access {
    case .read: permitted = flags.isAccessible
    case .write: permitted = flags.contains(.write)
    case .execute: permitted = flags.contains(.exec)
    }
    guard permitted else { throw invalid(address, access, .accessError) }
    switch service(index, address, write: access == .write) {
    case .frame(let frame): return frame
    case .guardMarker: throw invalid(address, access, .mapError)
    case .killed: return nil
    }
  }

  /// How one access by the program ended, for replaying traces where memory may run out.
  public enum AccessOutcome: Sendable, Hashable {
    /// The access completed; for a load, the byte read.
    case completed(UInt8)
    /// SIGSEGV.
    case fault(PageFault)
    /// The OOM killer killed this process (now, or earlier).
    case killed
  }

  /// A load (`write == false`) or a store of `value`, reporting an OOM kill instead of trapping.
  public func access(_ address: UInt, write: Bool, value: UInt8 = 0) -> AccessOutcome {
    guard !isKilled else { return .killed }
    requireAlive()
    let frame: UInt32
    do throws(PageFault) {
      guard let resolved = try resolveUnlessKilled(address, write ? .write : .read) else {
        return .killed
      }
      frame = resolved
    } catch {
      return .fault(error)
    }
    machine.frameStamp[Int(frame)] = machine.tick
    machine.tick &+= 1
    if write {
      machine.writeByte(frame, Int(address & 4095), value)
      return .completed(value)
    }
    return .completed(machine.readByte(frame, Int(address & 4095)))
  }

  enum ServiceResult {
    case frame(UInt32)
    case guardMarker
    case killed
  }

  func countMinor(_ address: UInt, write: Bool) {
    counters.minorFaults += 1
    machine.eventHandler?(
      .minorFault(process: processID, address: address, access: write ? .write : .read))
  }

  func countMajor(_ address: UInt, write: Bool) {
    counters.majorFaults += 1
    machine.eventHandler?(
      .majorFault(process: processID, address: address, access: write ? .write : .read))
  }

  /// Whether an anonymous fault at `vpn` may use a PMD-sized page: MADV_HUGEPAGE, private anonymous,
  /// and the aligned 2 MiB around it inside the VMA (kernel-semantics.md §3).
  private func hugeEligible(_ vma: VMA, vpn: UInt64) -> Bool {
    guard vma.flags.contains(.hugePage), !vma.flags.contains(.noHugePage), vma.isPrivateAnonymous
    else {
      return false
    }
    let base = UInt(vpn & ~(hugePages - 1)) << 12
    return base >= vma.start && base + (UInt(hugePages) << 12) <= vma.end
  }

  /// Services an access the VMA permits: the page-table walk, and the fault if the PTE does not allow
  /// it. Counts faults exactly as Linux does.
  func service(_ index: Int, _ address: UInt, write: Bool) -> ServiceResult {
    let vpn = UInt64(address >> 12)
    let vma = vmas.areas[index]
    let pmdSlot = table.pmdSlot(vpn, create: true)!
    let pmd = table.pool[pmdSlot]
    if pmd & PTE.huge != 0 {
      let isZero = pmd & PTE.zeroPage != 0
      let frame = isZero ? 0 : PTE.frame(pmd) + UInt32(vpn & (hugePages - 1))
      if !write {
        counters.pageWalks += 1
        table.pool[pmdSlot] = pmd | PTE.accessed
        tlbFill(vpn: vpn, frame: frame, writable: pmd & PTE.writable != 0 && pmd & PTE.dirty != 0)
        return .frame(frame)
      }
      if pmd & PTE.writable != 0 {
        counters.pageWalks += 1
        table.pool[pmdSlot] = pmd | PTE.accessed | PTE.dirty
        tlbFill(vpn: vpn, frame: frame, writable: true)
        return .frame(frame)
      }
      if isZero, let base = machine.allocateHugeFrames() {
        // A write on the huge zero page allocates a THP: one fault (§3).
        installHuge(pmdSlot: pmdSlot, vpn: vpn, base: base, index: index)
        countMinor(address, write: true)
        return .frame(base + UInt32(vpn & (hugePages - 1)))
      }
      splitHuge(pmdSlot: pmdSlot, baseVPN: vpn & ~(hugePages - 1))
    } else if pmd == 0 && hugeEligible(vma, vpn: vpn) {
      if !write {
        table.pool[pmdSlot] = PTE.huge | PTE.present | PTE.accessible | PTE.zeroPage | PTE.accessed
        countMinor(address, write: false)
        counters.zeroPageMaps += 1
        tlbFill(vpn: vpn, frame: 0, writable: false)
        return .frame(0)
      }
      if let base = machine.allocateHugeFrames() {
        installHuge(pmdSlot: pmdSlot, vpn: vpn, base: base, index: index)
        countMinor(address, write: true)
        return .frame(base + UInt32(vpn & (hugePages - 1)))
      }
    }
    let slot = table.pteSlot(vpn, create: true)!
    let entry = table.pool[slot]
    if entry & PTE.guardMarker != 0 { return .guardMarker }
    if entry & PTE.present != 0 {
      let frame = PTE.frame(entry)
      if !write {
        counters.pageWalks += 1
        table.pool[slot] = entry | PTE.accessed
        tlbFill(
          vpn: vpn, frame: frame, writable: entry & PTE.writable != 0 && entry & PTE.dirty != 0)
        return .frame(frame)
      }
      if entry & PTE.writable != 0 {
        counters.pageWalks += 1
        if entry & PTE.dirty == 0 && entry & PTE.pageCache != 0 { markObjectDirty(vma, address) }
        table.pool[slot] = entry | PTE.accessed | PTE.dirty
        tlbFill(vpn: vpn, frame: frame, writable: true)
        return .frame(frame)
      }
      return writeProtectFault(index, address, slot: slot, entry: entry)
    }
    if entry & PTE.swapped != 0 {
      return swapIn(index, address, slot: slot, entry: entry, write: write)
    }
    if vma.object != 0 { return objectFault(index, address, slot: slot, write: write) }
    if !write {
      table.pool[slot] = PTE.present | PTE.accessible | PTE.zeroPage | PTE.accessed
      countMinor(address, write: false)
      counters.zeroPageMaps += 1
      tlbFill(vpn: vpn, frame: 0, writable: false)
      return .frame(0)
    }
    guard let frame = machine.allocateFrame(kind: .anonymous, for: self) else { return .killed }
    installAnonymous(frame, index: index, vpn: vpn, slot: slot)
    countMinor(address, write: true)
    return .frame(frame)
  }

  /// Maps a fresh (or freshly copied) anonymous frame writable and dirty at `slot`.
  private func installAnonymous(_ frame: UInt32, index: Int, vpn: UInt64, slot: Int) {
    prepareAnon(index)
    var flags = PTE.present | PTE.accessible | PTE.exclusive | PTE.accessed | PTE.dirty
    if vmas.areas[index].flags.contains(.write) { flags |= PTE.writable }
    table.pool[slot] = PTE.make(frame: frame, flags: flags)
    machine.addMapper(frame, mapperKey(process: processID, vpn: vpn))
    counters.residentPages += 1
    tlbFill(vpn: vpn, frame: frame, writable: flags & PTE.writable != 0)
  }

  private func installHuge(pmdSlot: Int, vpn: UInt64, base: UInt32, index: Int) {
    prepareAnon(index)
    let first = vpn & ~(hugePages - 1)
    for i in 0..<hugePages {
      machine.addMapper(base + UInt32(i), mapperKey(process: processID, vpn: first + i))
    }
    table.pool[pmdSlot] =
      PTE.make(
        frame: base,
        flags: PTE.huge | PTE.present | PTE.accessible | PTE.exclusive | PTE.accessed | PTE.dirty)
      | PTE.writable
    counters.residentPages += Int(hugePages)
    counters.hugePageFaults += 1
    tlbFlushAll()
    tlbFill(vpn: vpn, frame: base + UInt32(vpn & (hugePages - 1)), writable: true)
  }

  /// Splits a huge PMD into a table of 512 PTEs mapping the same pages (`thp_split_pmd`).
  func splitHuge(pmdSlot: Int, baseVPN: UInt64) {
    let pmd = table.pool[pmdSlot]
    guard pmd & PTE.huge != 0 else { return }
    let node = table.allocateNode()
    let keep =
      pmd
      & (PTE.present | PTE.writable | PTE.accessible | PTE.exclusive | PTE.zeroPage | PTE.accessed
        | PTE.dirty
        | PTE.lazyFree)
    let base = node * RadixPageTable.fanOut
    if pmd & PTE.zeroPage != 0 {
      for i in 0..<RadixPageTable.fanOut { table.pool[base + i] = keep }
    } else {
      let frame = PTE.frame(pmd)
      for i in 0..<RadixPageTable.fanOut {
        table.pool[base + i] = PTE.make(frame: frame + UInt32(i), flags: keep)
      }
    }
    table.pool[pmdSlot] = UInt64(node) << PTE.frameShift
    counters.hugePageSplits += 1
    tlbFlushAll()
  }

  /// A write to a present page that is not writable: the zero page, a shared (COW) page, or a
  /// page-cache page of a private or write-notified shared mapping. One fault.
  private func writeProtectFault(_ index: Int, _ address: UInt, slot: Int, entry: UInt64)
    -> ServiceResult
  {
    let vpn = UInt64(address >> 12)
    let vma = vmas.areas[index]
    let old = PTE.frame(entry)
    let key = mapperKey(process: processID, vpn: vpn)
    if entry & PTE.zeroPage != 0 {
      guard let frame = machine.allocateFrame(kind: .anonymous, for: self) else { return .killed }
      installAnonymous(frame, index: index, vpn: vpn, slot: slot)
      countMinor(address, write: true)
      return .frame(frame)
    }
    if entry & PTE.pageCache != 0 && vma.flags.contains(.shared) {
      // Write notification of a shared file page: the page becomes writable and dirty.
      markObjectDirty(vma, address)
      table.pool[slot] = entry | PTE.writable | PTE.dirty | PTE.accessed
      countMinor(address, write: true)
      tlbFill(vpn: vpn, frame: old, writable: true)
      return .frame(old)
    }
    if entry & PTE.pageCache == 0 && machine.frameMapCount[Int(old)] == 1 {
      // The last user of a once-shared page reuses it: still one fault (§1h).
      table.pool[slot] = entry | PTE.writable | PTE.exclusive | PTE.dirty | PTE.accessed
      countMinor(address, write: true)
      tlbFill(vpn: vpn, frame: old, writable: true)
      return .frame(old)
    }
    machine.pinnedFrame = old
    let copy = machine.allocateFrame(kind: .anonymous, for: self)
    machine.pinnedFrame = 0
    guard let copy else { return .killed }
    machine.copyFrame(from: old, to: copy)
    let remaining = machine.removeMapper(old, key)
    counters.residentPages -= 1
    if remaining == 0 && machine.frameKind[Int(old)] == .anonymous { machine.releaseFrame(old) }
    installAnonymous(copy, index: index, vpn: vpn, slot: slot)
    counters.copyOnWriteCopies += 1
    machine.eventHandler?(.copyOnWrite(process: processID, address: address))
    countMinor(address, write: true)
    return .frame(copy)
  }

  /// A major fault: the page comes back from swap into a private frame.
  private func swapIn(_ index: Int, _ address: UInt, slot: Int, entry: UInt64, write: Bool)
    -> ServiceResult
  {
    let swapSlot = Int(PTE.frame(entry))
    guard let frame = machine.allocateFrame(kind: .anonymous, for: self) else { return .killed }
    machine.takeContents(slot: swapSlot, into: frame)
    machine.releaseSlotReference(swapSlot)
    swappedPages -= 1
    let vpn = UInt64(address >> 12)
    prepareAnon(index)
    // do_swap_page maps an exclusive page writable even on a read fault.
    var flags = PTE.present | PTE.accessible | PTE.exclusive | PTE.accessed
    if vmas.areas[index].flags.contains(.write) { flags |= PTE.writable }
    if write { flags |= PTE.dirty }
    table.pool[slot] = PTE.make(frame: frame, flags: flags)
    machine.addMapper(frame, mapperKey(process: processID, vpn: vpn))
    counters.residentPages += 1
    counters.swapIns += 1
    machine.eventHandler?(.swapIn(process: processID, address: address, slot: swapSlot))
    countMajor(address, write: write)
    tlbFill(vpn: vpn, frame: frame, writable: write && flags & PTE.writable != 0)
    return .frame(frame)
  }

  /// Linux's anon_vma_prepare: the first anonymous page of a VMA gives it an anon_vma, reusing a
  /// directly adjacent compatible neighbour's (next first, then previous) if that one is not inherited.
  func prepareAnon(_ index: Int) {
    guard vmas.areas[index].anonIdentity == 0 else { return }
    let vma = vmas.areas[index]
    func reusable(_ old: VMA, _ a: VMA, _ b: VMA) -> UInt64? {
      guard a.end == b.start, a.object == b.object,
        a.flags.symmetricDifference(b.flags).isSubset(of: .access),
        b.pageOffset == a.pageOffset + UInt64(a.pageCount),
        old.anonIdentity != 0, !old.anonInherited
      else { return nil }
      return old.anonIdentity
    }
    var identity: UInt64? = nil
    if index + 1 < vmas.count {
      identity = reusable(vmas.areas[index + 1], vma, vmas.areas[index + 1])
    }
    if identity == nil && index > 0 {
      identity = reusable(vmas.areas[index - 1], vmas.areas[index - 1], vma)
    }
    vmas.areas[index].anonIdentity = identity ?? machine.newAnonIdentity()
    vmas.areas[index].anonInherited = false
  }

  // MARK: Eviction callbacks (the machine reclaims a frame this process maps)

  func reclaimState(vpn: UInt64) -> (locked: Bool, cleanLazyFree: Bool) {
    let address = UInt(vpn) << 12
    let locked =
      vmas.index(containing: address).map { vmas.areas[$0].flags.contains(.locked) } ?? false
    var entry: UInt64 = 0
    if let pmdSlot = table.pmdSlot(vpn, create: false), table.pool[pmdSlot] & PTE.huge != 0 {
      entry = table.pool[pmdSlot]
    } else {
      entry = table.entry(vpn)
    }
    return (locked, entry & PTE.lazyFree != 0 && entry & PTE.dirty == 0)
  }

  /// The PTE slot for `vpn`, splitting a huge PMD first (reclaim works on small pages).
  private func smallSlot(_ vpn: UInt64) -> Int? {
    guard let pmdSlot = table.pmdSlot(vpn, create: false) else { return nil }
    if table.pool[pmdSlot] & PTE.huge != 0 {
      splitHuge(pmdSlot: pmdSlot, baseVPN: vpn & ~(hugePages - 1))
    }
    return table.pteSlot(vpn, create: false)
  }

  func swapOutMapping(vpn: UInt64, frame: UInt32, slot: Int) {
    guard let pte = smallSlot(vpn) else { return }
    table.pool[pte] = PTE.make(frame: UInt32(slot), flags: PTE.swapped)
    machine.removeMapper(frame, mapperKey(process: processID, vpn: vpn))
    counters.residentPages -= 1
    counters.swapOuts += 1
    swappedPages += 1
    tlbFlush(vpn: vpn)
    machine.eventHandler?(.swapOut(process: processID, address: UInt(vpn) << 12, slot: slot))
  }

  func discardMapping(vpn: UInt64, frame: UInt32) {
    guard let pte = smallSlot(vpn) else { return }
    table.pool[pte] = 0
    machine.removeMapper(frame, mapperKey(process: processID, vpn: vpn))
    counters.residentPages -= 1
    counters.discardedPages += 1
    tlbFlush(vpn: vpn)
    machine.eventHandler?(.discard(process: processID, address: UInt(vpn) << 12))
  }

  /// Removes the mapping of a page-cache frame being reclaimed (its dirtiness goes to the cache).
  func dropMapping(vpn: UInt64, frame: UInt32) {
    guard let pte = smallSlot(vpn) else { return }
    let entry = table.pool[pte]
    if entry & PTE.dirty != 0, let index = vmas.index(containing: UInt(vpn) << 12) {
      markObjectDirty(vmas.areas[index], UInt(vpn) << 12)
    }
    table.pool[pte] = 0
    machine.removeMapper(frame, mapperKey(process: processID, vpn: vpn))
    counters.residentPages -= 1
    tlbFlush(vpn: vpn)
  }

  func markObjectDirty(_ vma: VMA, _ address: UInt) {
    guard let object = machine.objects[vma.object] else { return }
    let page = Int(vma.objectPage(address))
    if case .resident(let frame, _) = object.pages[page] {
      object.pages[page] = .resident(frame: frame, dirty: true)
    }
  }

  func requireAlive() {
    precondition(!isKilled, "process \(processID) was killed by the OOM killer")
    precondition(!hasExited, "process \(processID) has exited")
  }

  /// The OOM killer's SIGKILL: every mapping goes away and the process stops running.
  func killByOOM() {
    tearDown()
    isKilled = true
  }

  /// Releases every page and VMA (exit).
  func tearDown() {
    let areas = vmas.areas
    vmas.areas = []
    for vma in areas { zap(vma, from: vma.start, to: vma.end, keepGuards: false) }
    releaseObjects(of: areas)
    tlbFlushAll()
  }
}

extension SimulatedPageSpace {
  /// How an access at `address` would end, without performing it (no fault, no zero-page mapping):
  /// nil if it would succeed, else the SIGSEGV's si_code. Protection is checked before guard markers,
  /// as the CPU and the kernel do.
  public func wouldFault(_ address: UInt, _ access: MemoryAccess) -> FaultCode? {
    if address >= 1 << 47 { return address >= 0xffff_8000_0000_0000 ? .mapError : .kernel }
    guard let index = vmas.index(containing: address) else { return .mapError }
    let flags = vmas.areas[index].flags
    switch access {
    case .read: if !flags.isAccessible { return .accessError }
    case .write: if !flags.contains(.write) { return .accessError }
    case .execute: if !flags.contains(.exec) { return .accessError }
    }
    let vpn = UInt64(address >> 12)
    if let pmdSlot = table.pmdSlot(vpn, create: false), table.pool[pmdSlot] & PTE.huge != 0 {
      return nil
    }
    return table.entry(vpn) & PTE.guardMarker != 0 ? .mapError : nil
  }
}
