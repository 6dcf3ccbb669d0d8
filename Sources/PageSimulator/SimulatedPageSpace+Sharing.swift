// Shared objects (shared anonymous memory, files) and fork.

import PageSpace

extension SimulatedMachine {
  /// The page cache of `file` (created on first use; it outlives mappings, as a page cache does).
  func fileObject(_ file: SimulatedFile) -> MemoryObject {
    if let object = file.object, objects[object.id] != nil { return object }
    let object = makeObject(pages: file.pageCount, file: file)
    file.object = object
    return object
  }

  func canReclaimNow(_ frame: UInt32) -> Bool { evictableNow(frame) }

  /// Puts one object page in the cache without mapping it. Returns the frame and whether it needed I/O
  /// (a read from disk or swap: a major fault when a fault asked for it). Nil if `process` was killed.
  func bringIn(
    _ object: MemoryObject, page: Int, for process: SimulatedPageSpace, readAround: Int = 0
  )
    -> (frame: UInt32, major: Bool)?
  {
    switch object.pages[page] {
    case .resident(let frame, _):
      return (frame, false)
    case .swapped(let slot):
      guard let frame = allocateFrame(kind: .pageCache, for: process) else { return nil }
      frameOwner[Int(frame)] = UInt64(object.id) << 32 | UInt64(page)
      takeContents(slot: slot, into: frame)
      releaseSlotReference(slot)
      object.pages[page] = .resident(frame: frame, dirty: true)
      process.counters.swapIns += 1
      return (frame, true)
    case .absent:
      guard let frame = allocateFrame(kind: .pageCache, for: process) else { return nil }
      frameOwner[Int(frame)] = UInt64(object.id) << 32 | UInt64(page)
      object.pages[page] = .resident(frame: frame, dirty: false)
      guard let file = object.file else { return (frame, false) }
      if let data = file.disk[page] { writableData(frame).copyMemory(from: data, byteCount: 4096) }
      if readAround > 0 {
        // Read-around (do_sync_mmap_readahead): the window centred on the fault, already cached after.
        pinnedFrame = frame
        let first = max(0, page - readAround / 2)
        for other in first..<min(file.pageCount, first + readAround) where other != page {
          if case .absent = object.pages[other] { _ = bringIn(object, page: other, for: process) }
        }
        pinnedFrame = 0
      }
      return (frame, true)
    }
  }

  /// Drops a file's clean, unmapped pages from the page cache (POSIX_FADV_DONTNEED after fsync: a cold
  /// cache). Dirty pages are written back first.
  public func dropPageCache(of file: SimulatedFile) {
    guard let object = file.object, objects[object.id] != nil else { return }
    for page in object.pages.indices {
      guard case .resident(let frame, _) = object.pages[page], frameMapCount[Int(frame)] == 0 else {
        continue
      }
      object.writeBack(page: page, from: self, frame: frame)
      releaseFrame(frame)
      object.pages[page] = .absent
    }
  }

  /// Reads a whole file into the page cache (order-0 pages): a hot cache.
  public func loadPageCache(of file: SimulatedFile, for process: SimulatedPageSpace) {
    let object = fileObject(file)
    for page in object.pages.indices { _ = bringIn(object, page: page, for: process) }
  }

  /// The file's current contents as a reader would see them (page cache first, then disk).
  public func contents(of file: SimulatedFile, page: Int) -> [UInt8] {
    if let object = file.object, objects[object.id] != nil,
      case .resident(let frame, _) = object.pages[page]
    {
      guard let data = readableData(frame) else { return [UInt8](repeating: 0, count: 4096) }
      return Array(UnsafeRawBufferPointer(start: data, count: 4096))
    }
    return file.diskBytes(page: page)
  }
}

extension SimulatedPageSpace {
  /// A read or write fault on a shared object's page with no PTE. Read faults map the fault-around
  /// window of cached pages (kernel-semantics.md §2); write faults map one page.
  func objectFault(_ index: Int, _ address: UInt, slot: Int, write: Bool) -> ServiceResult {
    let vma = vmas.areas[index]
    guard let object = machine.objects[vma.object] else {
      preconditionFailure("mapping of a destroyed object")
    }
    let page = Int(vma.objectPage(address))
    let vpn = UInt64(address >> 12)
    let readAround = vma.flags.contains(.randomRead) ? 0 : (object.file?.readAroundPages ?? 0)
    if !write {
      if faultAround(index, vpn) {
        countMinor(address, write: false)
        return .frame(PTE.frame(table.pool[slot]))
      }
      guard
        let (frame, major) = machine.bringIn(object, page: page, for: self, readAround: readAround)
      else {
        return .killed
      }
      if major && object.file != nil {
        // The fault is retried after the I/O, and the retry maps the whole window.
        _ = faultAround(index, vpn)
        countMajor(address, write: false)
      } else {
        mapCachePage(index, vpn: vpn, slot: slot, frame: frame, write: false)
        if major { countMajor(address, write: false) } else { countMinor(address, write: false) }
      }
      return .frame(PTE.frame(table.pool[slot]))
    }
    guard
      let (frame, major) = machine.bringIn(object, page: page, for: self, readAround: readAround)
    else {
      return .killed
    }
    if vma.flags.contains(.shared) {
      mapCachePage(index, vpn: vpn, slot: slot, frame: frame, write: true)
      markObjectDirty(vma, address)
    } else {
      machine.pinnedFrame = frame
      let copy = machine.allocateFrame(kind: .anonymous, for: self)
      machine.pinnedFrame = 0
      guard let copy else { return .killed }
      machine.copyFrame(from: frame, to: copy)
      installAnonymousPage(copy, index: index, vpn: vpn, slot: slot)
      counters.copyOnWriteCopies += 1
    }
    if major { countMajor(address, write: true) } else { countMinor(address, write: true) }
    return .frame(PTE.frame(table.pool[slot]))
  }

  /// do_fault_around: maps the cached pages of the 16-page window around `vpn` that have no PTE yet.
  /// Returns whether `vpn` itself got mapped.
  private func faultAround(_ index: Int, _ vpn: UInt64) -> Bool {
    let vma = vmas.areas[index]
    guard let object = machine.objects[vma.object] else { return false }
    let pteOffset = Int(vpn & (hugePages - 1))
    let vmaOffset = Int(vpn - UInt64(vma.start >> 12))
    let from = max(pteOffset & ~15, pteOffset - min(pteOffset, vmaOffset))
    let to = min(from + 16, Int(hugePages), pteOffset + Int(vma.pageCount) - vmaOffset)
    let base = vpn & ~(hugePages - 1)
    var mappedFaulting = false
    for offset in from..<to {
      let target = base + UInt64(offset)
      let slot = table.pteSlot(target, create: true)!
      guard table.pool[slot] == 0 else { continue }
      let page = Int(vma.objectPage(UInt(target) << 12))
      guard page < object.pages.count, case .resident(let frame, _) = object.pages[page] else {
        continue
      }
      mapCachePage(index, vpn: target, slot: slot, frame: frame, write: false)
      if target == vpn { mappedFaulting = true }
    }
    return mappedFaulting
  }

  private func mapCachePage(_ index: Int, vpn: UInt64, slot: Int, frame: UInt32, write: Bool) {
    let vma = vmas.areas[index]
    let shmem = machine.objects[vma.object]?.isShmem ?? false
    var flags = PTE.present | PTE.accessible | PTE.pageCache | PTE.accessed
    // Shared shmem pages are writable at once; shared file pages only after a write (write notify).
    if vma.flags.contains(.shared) && vma.flags.contains(.write) && (write || shmem) {
      flags |= PTE.writable
    }
    if write { flags |= PTE.dirty }
    table.pool[slot] = PTE.make(frame: frame, flags: flags)
    machine.addMapper(frame, mapperKey(process: processID, vpn: vpn))
    counters.residentPages += 1
    tlbFlush(vpn: vpn)
  }

  /// MADV_REMOVE: frees the object's pages in the range for every process mapping them.
  func punchHole(_ vma: VMA, _ start: UInt, _ end: UInt) {
    guard let object = machine.objects[vma.object] else { return }
    zap(vma, from: start, to: end, keepGuards: true)
    for page in Int(
      vma.objectPage(start))..<min(object.pages.count, Int(vma.objectPage(end - 1)) + 1)
    {
      switch object.pages[page] {
      case .resident(let frame, _):
        for key in machine.mappers(of: frame) {
          machine.process(mapperProcess(key))?.dropMapping(vpn: mapperVPN(key), frame: frame)
        }
        machine.releaseFrame(frame)
      case .swapped(let slot): machine.releaseSlotReference(slot)
      case .absent: break
      }
      object.pages[page] = .absent
    }
  }

  /// munmap of a shared file mapping writes its dirty pages back (as msync would).
  func writeBackRemoved(_ removed: [VMA]) {
    for vma in removed where vma.flags.contains(.shared) {
      guard let object = machine.objects[vma.object], object.file != nil else { continue }
      writeBack(object, firstPage: Int(vma.pageOffset), pages: Int(vma.pageCount))
    }
  }

  private func writeBack(_ object: MemoryObject, firstPage: Int, pages: Int) {
    for page in firstPage..<min(object.pages.count, firstPage + pages) {
      if case .resident(let frame, true) = object.pages[page] {
        object.writeBack(page: page, from: machine, frame: frame)
      }
    }
  }

  /// Maps `length` bytes of `file` from page `offsetPages` (`mmap(fd)`); shared or private.
  public func mapFile(
    _ file: SimulatedFile, offsetPages: Int = 0, length: UInt, protection: PageProtection,
    shared: Bool,
    at hint: UInt? = nil, flags: MapFlags = []
  ) throws(PageError) -> UInt {
    // Pages past the end of the file would raise SIGBUS, which the PageSpace fault model lacks.
    guard offsetPages >= 0, UInt(offsetPages) + (pageAlignUp(length) >> 12) <= UInt(file.pageCount)
    else {
      throw .invalidArgument
    }
    var mapFlags = flags
    if shared { mapFlags.insert(.shared) } else { mapFlags.remove(.shared) }
    return try mapRegion(
      hint: hint ?? 0, length: length, protection: protection, flags: mapFlags, file: file,
      filePage: UInt64(offsetPages))
  }

  /// `msync(MS_SYNC)`: writes back the dirty pages of shared file mappings in the range.
  public func sync(_ address: UInt, length: UInt) throws(PageError) {
    guard address & 4095 == 0 else { throw .invalidArgument }
    let end = address &+ pageAlignUp(length)
    guard end >= address else { throw .outOfMemory }
    var cursor = address
    var unmapped = false
    while cursor < end {
      let index = vmas.firstEndingAbove(cursor)
      guard index < vmas.count, vmas.areas[index].start < end else {
        unmapped = true
        break
      }
      let vma = vmas.areas[index]
      if vma.start > cursor { unmapped = true }
      let from = max(cursor, vma.start)
      let to = min(end, vma.end)
      if vma.flags.contains(.shared), let object = machine.objects[vma.object], object.file != nil {
        // Dirty PTEs first make their pages dirty in the cache.
        var address = from
        while address < to {
          if table.entry(UInt64(address >> 12)) & PTE.dirty != 0 { markObjectDirty(vma, address) }
          address += pageSizeValue
        }
        writeBack(object, firstPage: Int(vma.objectPage(from)), pages: Int((to - from) >> 12))
      }
      cursor = to
    }
    if unmapped { throw .outOfMemory }
  }

  // MARK: fork / exit

  /// `fork()`: a child process with a copy of the memory map. Private pages present before the fork
  /// are shared copy-on-write: the first write by either side costs one fault (§1h). Shared mappings
  /// stay shared (the child faults them in). MADV_DONTFORK areas are not inherited; WIPEONFORK areas
  /// come back empty; mlock is not inherited. Differences from Linux: a huge PMD is split at fork (Linux
  /// shares it and splits on the first write), and swapped-out pages shared by fork are each read from
  /// swap by every sharer (there is no swap cache).
  public func fork() -> SimulatedPageSpace {
    requireAlive()
    let child = SimulatedPageSpace(machine: machine)
    child.maxMapCount = maxMapCount
    child.vmaBaseline = vmaBaseline
    child.mmapBase = mmapBase
    child.mmapMinAddress = mmapMinAddress
    child.guardMarkersAvailable = guardMarkersAvailable
    for vma in vmas.areas where !vma.flags.contains(.dontCopy) {
      var copy = vma
      copy.flags.remove(.locked)
      let wipe = vma.flags.contains(.wipeOnFork)
      if vma.anonIdentity != 0 {
        copy.anonIdentity = wipe ? 0 : machine.newAnonIdentity()
        copy.anonInherited = !wipe
      }
      child.vmas.areas.append(copy)
      // vma_needs_copy: page tables are copied only where an anon_vma exists.
      if vma.anonIdentity != 0 && !wipe { copyPageTables(vma, to: child) }
    }
    tlbFlushAll()
    return child
  }

  private func copyPageTables(_ vma: VMA, to child: SimulatedPageSpace) {
    let first = UInt64(vma.start >> 12)
    let last = UInt64(vma.end >> 12)
    forEachPMD(first, last) { pmdSlot, base in
      if table.pool[pmdSlot] & PTE.huge != 0 { splitHuge(pmdSlot: pmdSlot, baseVPN: base) }
      let node =
        Int(truncatingIfNeeded: table.pool[pmdSlot] >> PTE.frameShift) * RadixPageTable.fanOut
      for vpn in max(first, base)..<min(last, base + hugePages) {
        let slot = node + Int(truncatingIfNeeded: vpn & (hugePages - 1))
        var entry = table.pool[slot]
        guard entry != 0 else { continue }
        if entry & PTE.present != 0 && entry & PTE.zeroPage == 0 {
          if entry & PTE.pageCache == 0 {
            entry &= ~(PTE.writable | PTE.exclusive)
            table.pool[slot] = entry
          }
          machine.addMapper(PTE.frame(entry), mapperKey(process: child.processID, vpn: vpn))
          child.counters.residentPages += 1
        } else if entry & PTE.swapped != 0 {
          machine.slotRefs[Int(PTE.frame(entry))] += 1
          child.swappedPages += 1
        }
        let childSlot = child.table.pteSlot(vpn, create: true)!
        child.table.pool[childSlot] = entry
      }
    }
  }

  /// The process exits: every mapping is released (COW partners keep their pages).
  public func exit() {
    requireAlive()
    tearDown()
    hasExited = true
  }

  /// After write-back: the PTE of a shared file page is clean and read-only again.
  func cleanMapping(vpn: UInt64) {
    guard let slot = table.pteSlot(vpn, create: false) else { return }
    if table.pool[slot] & PTE.pageCache != 0 { table.pool[slot] &= ~(PTE.dirty | PTE.writable) }
    tlbFlush(vpn: vpn)
  }

  /// Maps an anonymous frame (used by the file COW path).
  func installAnonymousPage(_ frame: UInt32, index: Int, vpn: UInt64, slot: Int) {
    prepareAnon(index)
    var flags = PTE.present | PTE.accessible | PTE.exclusive | PTE.accessed | PTE.dirty
    if vmas.areas[index].flags.contains(.write) { flags |= PTE.writable }
    table.pool[slot] = PTE.make(frame: frame, flags: flags)
    machine.addMapper(frame, mapperKey(process: processID, vpn: vpn))
    counters.residentPages += 1
    tlbFlush(vpn: vpn)
  }
}
