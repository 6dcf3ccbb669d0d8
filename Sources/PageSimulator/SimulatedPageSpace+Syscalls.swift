// The system calls, with Linux's argument checks in Linux's order (kernel-semantics.md §4, §6).

import PageSpace

extension SimulatedPageSpace {
  // MARK: mmap / munmap

  public func map(at hint: UInt?, length: UInt, protection: PageProtection, flags: MapFlags)
    throws(PageError)
    -> UInt
  {
    try mapRegion(
      hint: hint ?? 0, length: length, protection: protection, flags: flags, file: nil, filePage: 0)
  }

  /// do_mmap for anonymous memory (`file == nil`) or a simulated file.
  func mapRegion(
    hint: UInt, length: UInt, protection: PageProtection, flags: MapFlags, file: SimulatedFile?,
    filePage: UInt64
  ) throws(PageError) -> UInt {
    requireAlive()
    guard length != 0 else { throw .invalidArgument }
    let fixed = flags.contains(.fixed) || flags.contains(.fixedNoReplace)
    var address = hint
    if !fixed {
      // round_hint_to_min: an unaligned hint is rounded down; one below mmap_min_addr is raised.
      address &= ~UInt(4095)
      if address != 0 && address < mmapMinAddress { address = mmapMinAddress }
    }
    let size = pageAlignUp(length)
    guard size != 0 else { throw .outOfMemory }
    guard vmaCount <= maxMapCount else { throw .outOfMemory }
    let shared = flags.contains(.shared)
    var vmFlags = VMFlags(protection: protection)
    if shared { vmFlags.insert(.shared) }
    if flags.contains(.growsDown) { vmFlags.insert(.growsDown) }
    if flags.contains(.locked) { vmFlags.insert(.locked) }
    if flags.contains(.stack) { vmFlags.insert(.noHugePage) }
    if flags.contains(.noReserve) { vmFlags.insert(.noReserve) }
    // accountable_mapping: private, writable, not NORESERVE.
    if !shared && vmFlags.contains(.write) && !vmFlags.contains(.noReserve) {
      vmFlags.insert(.account)
    }
    guard size <= taskSize else { throw .outOfMemory }
    if fixed {
      guard address <= taskSize - size else { throw .outOfMemory }
      guard address & 4095 == 0 else { throw .invalidArgument }
      guard address >= mmapMinAddress else { throw .notPermitted }
    } else {
      guard
        let found = placement(hint: address, length: size, privateAnonymous: file == nil && !shared)
      else {
        throw .outOfMemory
      }
      address = found
    }
    if flags.contains(.fixedNoReplace)
      && vmas.count(overlapping: AddressRange(start: address, length: size)) > 0
    {
      throw .exists
    }
    let charged =
      vmFlags.contains(.account) || (shared && file == nil && !vmFlags.contains(.noReserve))
    if charged && UInt(size >> 12) > machine.configuration.commitLimitPages { throw .outOfMemory }
    if fixed { try unmapRange(address, address + size) }

    var object: UInt32 = 0
    var pageOffset = UInt64(address >> 12)
    if let file {
      object = machine.fileObject(file).id
      pageOffset = filePage
    } else if shared {
      object = machine.makeObject(pages: Int(size >> 12), file: nil).id
      pageOffset = 0
    }
    if object != 0 { machine.objects[object]?.lastMapper = processID }
    insertVMA(
      VMA(
        start: address, end: address + size, flags: vmFlags, anonIdentity: 0, anonInherited: false,
        object: object,
        pageOffset: pageOffset))
    if flags.contains(.populate) || flags.contains(.locked) {
      // mm_populate with errors ignored: a PROT_NONE mapping is simply not populated.
      _ = populate(address, address + size, write: nil, force: true, skipHoles: true)
    }
    return address
  }

  public func unmap(_ address: UInt, length: UInt) throws(PageError) {
    requireAlive()
    guard address & 4095 == 0, address <= taskSize, length <= taskSize - address else {
      throw .invalidArgument
    }
    let end = address + pageAlignUp(length)
    guard end != address else { throw .invalidArgument }
    try unmapRange(address, end)
  }

  // MARK: mprotect

  public func protect(_ address: UInt, length: UInt, to protection: PageProtection)
    throws(PageError)
  {
    requireAlive()
    let growsUp: Int32 = 0x0200_0000
    let raw = protection.rawValue
    let grows = raw & (PageProtection.growsDown.rawValue | growsUp)
    guard grows != PageProtection.growsDown.rawValue | growsUp else { throw .invalidArgument }
    let prot = raw & ~(PageProtection.growsDown.rawValue | growsUp)
    guard address & 4095 == 0 else { throw .invalidArgument }
    guard length != 0 else { return }
    var start = address
    let end = address &+ pageAlignUp(length)
    guard end > start else { throw .outOfMemory }
    // arch_validate_prot: READ, WRITE, EXEC and SEM only.
    guard prot & ~0xF == 0 else { throw .invalidArgument }
    let first = vmas.firstEndingAbove(start)
    guard first < vmas.count, vmas.areas[first].start < end else { throw .outOfMemory }
    if grows != 0 {
      guard grows == PageProtection.growsDown.rawValue else { throw .invalidArgument }
      start = vmas.areas[first].start
      guard vmas.areas[first].flags.contains(.growsDown) else { throw .invalidArgument }
    } else {
      guard vmas.areas[first].start <= start else { throw .outOfMemory }
    }
    let access = VMFlags(protection: PageProtection(rawValue: prot))
    var expected = vmas.areas[first].start
    var cursor = start
    var index = first
    while index < vmas.count && vmas.areas[index].start < end {
      // mprotect stops at the first hole, having changed what came before it.
      // (The VMA found may start below `expected` when the previous piece merged into it.)
      guard vmas.areas[index].start <= expected else { throw .outOfMemory }
      let vma = vmas.areas[index]
      let pieceEnd = min(vma.end, end)
      var newFlags = vma.flags.subtracting(.access).union(access)
      if newFlags.contains(.write) {
        if vma.flags.isDisjoint(with: [.account, .write, .shared, .noReserve]) {
          guard UInt((pieceEnd - cursor) >> 12) <= machine.configuration.commitLimitPages else {
            throw .outOfMemory
          }
          newFlags.insert(.account)
        }
      } else if vma.flags.contains(.account) && vma.isPrivateAnonymous && vma.anonIdentity == 0 {
        newFlags.remove(.account)
      }
      if newFlags != vma.flags {
        let piece = try modifyVMA(index, cursor, pieceEnd, flags: newFlags)
        let updated = vmas.areas[piece]
        applyProtection(cursor, pieceEnd, flags: newFlags, vma: updated)
        // A locked private area that becomes writable is populated for writing (COW broken now).
        if vma.flags.intersection([.write, .shared, .locked]) == .locked
          && newFlags.contains(.write)
        {
          _ = populate(cursor, pieceEnd, write: true, force: true, skipHoles: true)
        }
      }
      expected = pieceEnd
      cursor = pieceEnd
      if cursor >= end { return }
      index = vmas.firstEndingAbove(cursor)
    }
    if expected < end { throw .outOfMemory }
  }

  // MARK: madvise

  private static let flagAdvice: Set<Int32> = [
    PageAdvice.normal.rawValue, PageAdvice.random.rawValue, PageAdvice.sequential.rawValue,
    PageAdvice.dontFork.rawValue, PageAdvice.doFork.rawValue, PageAdvice.mergeable.rawValue,
    PageAdvice.unmergeable.rawValue, PageAdvice.hugePage.rawValue, PageAdvice.noHugePage.rawValue,
    PageAdvice.dontDump.rawValue, PageAdvice.doDump.rawValue, PageAdvice.wipeOnFork.rawValue,
    PageAdvice.keepOnFork.rawValue,
  ]
  private static let otherAdvice: Set<Int32> = [
    PageAdvice.willNeed.rawValue, PageAdvice.dontNeed.rawValue, PageAdvice.free.rawValue,
    PageAdvice.remove.rawValue, PageAdvice.cold.rawValue, PageAdvice.pageOut.rawValue,
    PageAdvice.populateRead.rawValue, PageAdvice.populateWrite.rawValue,
  ]

  public func advise(_ address: UInt, length: UInt, _ advice: PageAdvice) throws(PageError) {
    requireAlive()
    let isGuard = advice == .guardInstall || advice == .guardRemove
    guard
      Self.flagAdvice.contains(advice.rawValue) || Self.otherAdvice.contains(advice.rawValue)
        || (isGuard && guardMarkersAvailable)
    else { throw .invalidArgument }
    guard address & 4095 == 0 else { throw .invalidArgument }
    let size = pageAlignUp(length)
    guard length == 0 || size != 0 else { throw .invalidArgument }
    let end = address &+ size
    guard end >= address else { throw .invalidArgument }
    guard end != address else { return }
    if advice == .populateRead || advice == .populateWrite {
      // madvise_populate does not walk past holes: the first one ends it with ENOMEM.
      // Areas that do not allow the access are EINVAL here ("incompatible mappings / permissions").
      if let error = populate(
        address, end, write: advice == .populateWrite, force: false, skipHoles: false,
        permissionError: .invalidArgument)
      {
        throw error
      }
      return
    }
    // madvise_walk_vmas: carries on across holes and reports ENOMEM at the end.
    var unmapped = false
    var cursor = address
    while true {
      let index = vmas.firstEndingAbove(cursor)
      guard index < vmas.count else { throw .outOfMemory }
      if cursor < vmas.areas[index].start {
        unmapped = true
        cursor = vmas.areas[index].start
        if cursor >= end { break }
      }
      let pieceEnd = min(vmas.areas[index].end, end)
      try adviseOne(index, cursor, pieceEnd, advice)
      cursor = pieceEnd
      if cursor >= end { break }
    }
    if unmapped { throw .outOfMemory }
  }

  private func adviseOne(_ index: Int, _ start: UInt, _ end: UInt, _ advice: PageAdvice)
    throws(PageError)
  {
    let vma = vmas.areas[index]
    let locked = vma.flags.contains(.locked)
    switch advice {
    case .dontNeed:
      guard !locked else { throw .invalidArgument }
      zap(vma, from: start, to: end, keepGuards: true)
    case .free:
      guard !locked, vma.isPrivateAnonymous else { throw .invalidArgument }
      markLazyFree(vma, start, end)
    case .remove:
      guard !locked, vma.flags.contains(.shared), vma.object != 0 else { throw .invalidArgument }
      punchHole(vma, start, end)
    case .willNeed:
      if let object = machine.objects[vma.object], let file = object.file {
        let first = Int(vma.objectPage(start))
        let last = min(Int(vma.objectPage(end - 1)) + 1, file.pageCount)
        for page in first..<max(first, last) { _ = machine.bringIn(object, page: page, for: self) }
      }
    case .cold:
      guard !locked else { throw .invalidArgument }
    case .pageOut:
      guard !locked else { throw .invalidArgument }
      pageOut(start, end)
    case .guardInstall:
      guard !locked else { throw .invalidArgument }
      installGuards(index, start, end)
    case .guardRemove:
      removeGuards(start, end)
    default:
      var newFlags = vma.flags
      switch advice {
      case .normal: newFlags.subtract([.randomRead, .sequentialRead])
      case .random:
        newFlags.remove(.sequentialRead)
        newFlags.insert(.randomRead)
      case .sequential:
        newFlags.remove(.randomRead)
        newFlags.insert(.sequentialRead)
      case .dontFork: newFlags.insert(.dontCopy)
      case .doFork: newFlags.remove(.dontCopy)
      case .dontDump: newFlags.insert(.dontDump)
      case .doDump: newFlags.remove(.dontDump)
      case .wipeOnFork:
        guard vma.isPrivateAnonymous else { throw .invalidArgument }
        newFlags.insert(.wipeOnFork)
      case .keepOnFork: newFlags.remove(.wipeOnFork)
      case .mergeable:
        if !vma.flags.contains(.shared) { newFlags.insert(.mergeable) }
      case .unmergeable: newFlags.remove(.mergeable)
      case .hugePage:
        newFlags.remove(.noHugePage)
        newFlags.insert(.hugePage)
      case .noHugePage:
        newFlags.remove(.hugePage)
        newFlags.insert(.noHugePage)
      default: throw .invalidArgument
      }
      do {
        _ = try modifyVMA(index, start, end, flags: newFlags)
      } catch {
        // madvise reports a failed split as EAGAIN.
        throw .tryAgain
      }
    }
  }

  /// MADV_FREE: exclusive anonymous pages become clean and discardable; swap entries are freed.
  private func markLazyFree(_ vma: VMA, _ start: UInt, _ end: UInt) {
    let first = UInt64(start >> 12)
    let last = UInt64(end >> 12)
    forEachPMD(first, last) { pmdSlot, base in
      if table.pool[pmdSlot] & PTE.huge != 0 { splitHuge(pmdSlot: pmdSlot, baseVPN: base) }
      let node =
        Int(truncatingIfNeeded: table.pool[pmdSlot] >> PTE.frameShift) * RadixPageTable.fanOut
      for vpn in max(first, base)..<min(last, base + hugePages) {
        let slot = node + Int(truncatingIfNeeded: vpn & (hugePages - 1))
        let entry = table.pool[slot]
        if entry & PTE.swapped != 0 {
          releaseEntry(entry, vpn: vpn, vma: vma)
          table.pool[slot] = 0
        } else if entry & PTE.present != 0 && entry & PTE.zeroPage == 0
          && entry & PTE.pageCache == 0
          && machine.frameMapCount[Int(PTE.frame(entry))] == 1
        {
          table.pool[slot] = (entry | PTE.lazyFree) & ~(PTE.dirty | PTE.accessed)
        }
      }
    }
    tlbFlushAll()
  }

  private func installGuards(_ index: Int, _ start: UInt, _ end: UInt) {
    // Linux 6.13 gives the VMA an anon_vma so that fork copies the markers.
    // (Measured: shared mappings get none, so their pieces still merge.)
    if !vmas.areas[index].flags.contains(.shared) { prepareAnon(index) }
    zap(vmas.areas[index], from: start, to: end, keepGuards: true)
    var address = start
    while address < end {
      let vpn = UInt64(address >> 12)
      let slot = table.pteSlot(vpn, create: true)!
      table.pool[slot] = PTE.guardMarker
      address += pageSizeValue
    }
    tlbFlushAll()
  }

  private func removeGuards(_ start: UInt, _ end: UInt) {
    let first = UInt64(start >> 12)
    let last = UInt64(end >> 12)
    forEachPMD(first, last) { pmdSlot, base in
      guard table.pool[pmdSlot] & PTE.huge == 0 else { return }
      let node =
        Int(truncatingIfNeeded: table.pool[pmdSlot] >> PTE.frameShift) * RadixPageTable.fanOut
      for vpn in max(first, base)..<min(last, base + hugePages) {
        let slot = node + Int(truncatingIfNeeded: vpn & (hugePages - 1))
        if table.pool[slot] & PTE.guardMarker != 0 { table.pool[slot] = 0 }
      }
    }
    tlbFlushAll()
  }

  /// MADV_PAGEOUT: reclaims this range's exclusive private pages now (to swap; nothing without swap).
  private func pageOut(_ start: UInt, _ end: UInt) {
    var address = start
    while address < end {
      let vpn = UInt64(address >> 12)
      var entry = table.entry(vpn)
      if let pmdSlot = table.pmdSlot(vpn, create: false), table.pool[pmdSlot] & PTE.huge != 0 {
        let pmd = table.pool[pmdSlot]
        entry =
          pmd & PTE.zeroPage != 0
          ? pmd : PTE.make(frame: PTE.frame(pmd) + UInt32(vpn & 511), flags: pmd)
      }
      if entry & PTE.present != 0 && entry & (PTE.zeroPage | PTE.pageCache) == 0 {
        let frame = PTE.frame(entry)
        if machine.frameMapCount[Int(frame)] == 1 && machine.canReclaimNow(frame) {
          machine.reclaim(frame)
        }
      }
      address += pageSizeValue
    }
  }

  // MARK: mlock / munlock

  public func lock(_ address: UInt, length: UInt) throws(PageError) {
    requireAlive()
    let start = address & ~UInt(4095)
    let end = start &+ pageAlignUp(length &+ (address & 4095))
    guard end >= start else { throw .invalidArgument }
    guard end != start else { return }
    try applyLock(start, end, locked: true)
    if let error = populate(start, end, write: nil, force: true, skipHoles: true) {
      // __mlock_posix_error_return: EFAULT becomes ENOMEM, ENOMEM becomes EAGAIN.
      throw error == .badAddress ? .outOfMemory : (error == .outOfMemory ? .tryAgain : error)
    }
  }

  public func unlock(_ address: UInt, length: UInt) throws(PageError) {
    requireAlive()
    let start = address & ~UInt(4095)
    let end = start &+ pageAlignUp(length &+ (address & 4095))
    guard end >= start else { throw .invalidArgument }
    guard end != start else { return }
    try applyLock(start, end, locked: false)
  }

  /// apply_vma_lock_flags: like mprotect, stops at a hole with ENOMEM having changed what came before.
  private func applyLock(_ start: UInt, _ end: UInt, locked: Bool) throws(PageError) {
    guard let first = vmas.index(containing: start) else { throw .outOfMemory }
    var expected = vmas.areas[first].start
    var cursor = start
    var index = first
    while index < vmas.count && vmas.areas[index].start < end {
      // (The VMA found may start below `expected` when the previous piece merged into it.)
      guard vmas.areas[index].start <= expected else { throw .outOfMemory }
      let vma = vmas.areas[index]
      let pieceEnd = min(vma.end, end)
      var newFlags = vma.flags
      if locked { newFlags.insert(.locked) } else { newFlags.remove(.locked) }
      _ = try modifyVMA(index, cursor, pieceEnd, flags: newFlags)
      expected = pieceEnd
      cursor = pieceEnd
      if cursor >= end { return }
      index = vmas.firstEndingAbove(cursor)
    }
    if expected < end { throw .outOfMemory }
  }

  // MARK: mincore

  public func residency(
    _ address: UInt, length: UInt, into vector: UnsafeMutableBufferPointer<UInt8>
  )
    throws(PageError)
  {
    guard address & 4095 == 0 else { throw .invalidArgument }
    guard address <= taskSize, length <= taskSize - address else { throw .outOfMemory }
    let pages = Int(length >> 12) + (length & 4095 != 0 ? 1 : 0)
    precondition(vector.count >= pages, "mincore vector too small")
    var page = 0
    while page < pages {
      let cursor = address + UInt(page) << 12
      guard let index = vmas.index(containing: cursor) else { throw .outOfMemory }
      let vma = vmas.areas[index]
      while page < pages && address + UInt(page) << 12 < vma.end {
        vector[page] = isResident(vma, address + UInt(page) << 12) ? 1 : 0
        page += 1
      }
    }
  }

  private func isResident(_ vma: VMA, _ address: UInt) -> Bool {
    let vpn = UInt64(address >> 12)
    if let pmdSlot = table.pmdSlot(vpn, create: false), table.pool[pmdSlot] & PTE.huge != 0 {
      return true
    }
    let entry = table.entry(vpn)
    if entry & PTE.present != 0 { return true }
    // A guard marker counts as no PTE (pte_none_mostly): the page cache still answers for shmem.
    if entry & PTE.swapped != 0 { return false }
    guard vma.object != 0, let object = machine.objects[vma.object] else { return false }
    let objectPage = Int(vma.objectPage(address))
    guard objectPage < object.pages.count, case .resident = object.pages[objectPage] else {
      return false
    }
    return true
  }
}
