// Page-table maintenance shared by the system calls: walking, zapping, re-protecting, VMA splits and
// merges, placement and population.

import PageSpace

extension SimulatedPageSpace {
  // MARK: Walking

  /// Calls `body` for every PMD slot that exists in `[startVPN, endVPN)` (skipping absent subtrees, so
  /// a 2^46-byte reservation costs nothing), with the first VPN the PMD covers.
  func forEachPMD(_ startVPN: UInt64, _ endVPN: UInt64, _ body: (Int, UInt64) -> Void) {
    var vpn = startVPN
    while vpn < endVPN {
      let top = table.pool[RadixPageTable.index(vpn, level: 3)]
      if top == 0 {
        vpn = (vpn | ((1 << 27) - 1)) + 1
        continue
      }
      let upperNode = Int(truncatingIfNeeded: top >> PTE.frameShift)
      let upper = table.pool[
        upperNode * RadixPageTable.fanOut + RadixPageTable.index(vpn, level: 2)]
      if upper == 0 {
        vpn = (vpn | ((1 << 18) - 1)) + 1
        continue
      }
      let middleNode = Int(truncatingIfNeeded: upper >> PTE.frameShift)
      let slot = middleNode * RadixPageTable.fanOut + RadixPageTable.index(vpn, level: 1)
      if table.pool[slot] != 0 { body(slot, vpn & ~(hugePages - 1)) }
      vpn = (vpn | (hugePages - 1)) + 1
    }
  }

  /// Releases one leaf entry's page (frame reference, or swap slot).
  func releaseEntry(_ entry: UInt64, vpn: UInt64, vma: VMA) {
    if entry & PTE.present != 0 {
      guard entry & PTE.zeroPage == 0 else { return }
      let frame = PTE.frame(entry)
      if entry & PTE.pageCache != 0 && entry & PTE.dirty != 0 {
        markObjectDirty(vma, UInt(vpn) << 12)
      }
      let remaining = machine.removeMapper(frame, mapperKey(process: processID, vpn: vpn))
      counters.residentPages -= 1
      if remaining == 0 && entry & PTE.pageCache == 0 { machine.releaseFrame(frame) }
    } else if entry & PTE.swapped != 0 {
      machine.releaseSlotReference(Int(PTE.frame(entry)))
      swappedPages -= 1
    }
  }

  /// Unmaps the pages of `[start, end)` (DONTNEED, munmap, MAP_FIXED, guard install). Guard markers
  /// stay when `keepGuards` (DONTNEED keeps them, munmap does not).
  func zap(_ vma: VMA, from start: UInt, to end: UInt, keepGuards: Bool) {
    let first = UInt64(start >> 12)
    let last = UInt64(end >> 12)
    forEachPMD(first, last) { pmdSlot, base in
      let low = max(first, base)
      let high = min(last, base + hugePages)
      let pmd = table.pool[pmdSlot]
      if pmd & PTE.huge != 0 {
        if low == base && high == base + hugePages {
          if pmd & PTE.zeroPage == 0 {
            let frame = PTE.frame(pmd)
            for i in 0..<hugePages {
              let remaining = machine.removeMapper(
                frame + UInt32(i), mapperKey(process: processID, vpn: base + i))
              if remaining == 0 { machine.releaseFrame(frame + UInt32(i)) }
            }
            counters.residentPages -= Int(hugePages)
          }
          table.pool[pmdSlot] = 0
          return
        }
        splitHuge(pmdSlot: pmdSlot, baseVPN: base)
      }
      let node =
        Int(truncatingIfNeeded: table.pool[pmdSlot] >> PTE.frameShift) * RadixPageTable.fanOut
      for vpn in low..<high {
        let slot = node + Int(truncatingIfNeeded: vpn & (hugePages - 1))
        let entry = table.pool[slot]
        guard entry != 0 else { continue }
        if entry & PTE.guardMarker != 0 {
          if !keepGuards { table.pool[slot] = 0 }
          continue
        }
        releaseEntry(entry, vpn: vpn, vma: vma)
        table.pool[slot] = 0
      }
    }
    tlbFlushAll()
  }

  /// Frees the page tables of whole 2 MiB blocks in `[start, end)` that no VMA covers any more (what
  /// free_pgtables does: a later fault there finds an empty PMD again, so THP may be used).
  func freePageTables(_ start: UInt, _ end: UInt) {
    let i = vmas.firstEndingAbove(start)
    let floor = i > 0 ? vmas.areas[i - 1].end : 0
    let ceiling = i < vmas.count ? vmas.areas[i].start : taskSize
    forEachPMD(UInt64(start >> 12), UInt64(pageAlignUp(end) >> 12)) { pmdSlot, base in
      let blockStart = UInt(base) << 12
      guard blockStart >= floor, blockStart + (UInt(hugePages) << 12) <= ceiling else { return }
      if table.pool[pmdSlot] & PTE.huge == 0 {
        table.freePTETable(pmdSlot: pmdSlot)
      } else {
        table.pool[pmdSlot] = 0
      }
    }
  }

  /// The PTE bits a present entry gets under `flags` (mprotect's change_pte_range): an exclusive
  /// anonymous page becomes writable again at once, so a protection round trip never re-faults it.
  func reprotect(_ entry: UInt64, flags: VMFlags, vma: VMA) -> UInt64 {
    guard entry & PTE.present != 0 else { return entry }
    var result = entry & ~(PTE.writable | PTE.accessible)
    if flags.isAccessible { result |= PTE.accessible }
    if flags.contains(.write) && entry & PTE.zeroPage == 0 {
      if entry & PTE.pageCache != 0 {
        let shmem = machine.objects[vma.object]?.isShmem ?? false
        if flags.contains(.shared) && (shmem || entry & PTE.dirty != 0) { result |= PTE.writable }
      } else if entry & PTE.exclusive != 0 {
        result |= PTE.writable
      }
    }
    return result
  }

  func applyProtection(_ start: UInt, _ end: UInt, flags: VMFlags, vma: VMA) {
    let first = UInt64(start >> 12)
    let last = UInt64(end >> 12)
    forEachPMD(first, last) { pmdSlot, base in
      let low = max(first, base)
      let high = min(last, base + hugePages)
      let pmd = table.pool[pmdSlot]
      if pmd & PTE.huge != 0 {
        if low == base && high == base + hugePages {
          table.pool[pmdSlot] = reprotect(pmd, flags: flags, vma: vma)
          return
        }
        splitHuge(pmdSlot: pmdSlot, baseVPN: base)
      }
      let node =
        Int(truncatingIfNeeded: table.pool[pmdSlot] >> PTE.frameShift) * RadixPageTable.fanOut
      for vpn in low..<high {
        let slot = node + Int(truncatingIfNeeded: vpn & (hugePages - 1))
        table.pool[slot] = reprotect(table.pool[slot], flags: flags, vma: vma)
      }
    }
    tlbFlushAll()
  }

  // MARK: VMAs

  /// Splits the VMA at `index` at `address` (strictly inside it); the upper part follows at index + 1.
  func splitVMA(_ index: Int, at address: UInt) {
    var upper = vmas.areas[index]
    upper.pageOffset = upper.objectPage(address)
    upper.start = address
    vmas.areas[index].end = address
    vmas.areas.insert(upper, at: index + 1)
  }

  /// Whether a split is allowed now (Linux: map_count must be below the limit).
  var splitAllowed: Bool { vmaCount < maxMapCount }

  /// Linux's vma_modify: gives `[start, end)` of the VMA at `index` the flags `newFlags`, merging with
  /// a neighbour when possible (no split, so merges succeed even at the limit), else splitting (each
  /// split needs count < limit; a second split failing leaves the first in place). Returns the index of
  /// the VMA that now covers `[start, end)`.
  func modifyVMA(_ index: Int, _ start: UInt, _ end: UInt, flags newFlags: VMFlags)
    throws(PageError) -> Int
  {
    let vma = vmas.areas[index]
    if newFlags == vma.flags { return index }
    var middle = vma
    middle.start = start
    middle.end = end
    middle.pageOffset = vma.objectPage(start)
    middle.flags = newFlags
    let prev = index > 0 ? vmas.areas[index - 1] : nil
    let next = index + 1 < vmas.count ? vmas.areas[index + 1] : nil
    let mergeLeft = start == vma.start && prev.map { canMerge($0, middle) } ?? false
    var mergeRight = end == vma.end && next.map { canMerge(middle, $0) } ?? false
    if mergeLeft && mergeRight && !anonCompatible(prev!, next!) { mergeRight = false }
    if mergeLeft {
      var merged = prev!
      if merged.anonIdentity == 0 {
        merged.anonIdentity = vma.anonIdentity
        merged.anonInherited = vma.anonInherited
      }
      if mergeRight {
        if merged.anonIdentity == 0 {
          merged.anonIdentity = next!.anonIdentity
          merged.anonInherited = next!.anonInherited
        }
        merged.end = next!.end
        vmas.areas[index - 1] = merged
        vmas.areas.removeSubrange(index...(index + 1))
        return index - 1
      }
      merged.end = end
      vmas.areas[index - 1] = merged
      if end == vma.end {
        vmas.areas.remove(at: index)
      } else {
        vmas.areas[index].pageOffset = vma.objectPage(end)
        vmas.areas[index].start = end
      }
      return index - 1
    }
    if mergeRight {
      var merged = next!
      if merged.anonIdentity == 0 {
        merged.anonIdentity = vma.anonIdentity
        merged.anonInherited = vma.anonInherited
      }
      merged.start = start
      merged.pageOffset = middle.pageOffset
      vmas.areas[index + 1] = merged
      if start == vma.start {
        vmas.areas.remove(at: index)
        return index
      }
      vmas.areas[index].end = start
      return index + 1
    }
    var target = index
    if start > vma.start {
      guard splitAllowed else { throw .outOfMemory }
      splitVMA(index, at: start)
      target = index + 1
    }
    if end < vmas.areas[target].end {
      guard splitAllowed else { throw .outOfMemory }
      splitVMA(target, at: end)
    }
    vmas.areas[target].flags = newFlags
    return target
  }

  /// Inserts a new VMA over a free range, merging with its neighbours like vma_merge_new_range.
  @discardableResult
  func insertVMA(_ vma: VMA) -> Int {
    let index = vmas.firstEndingAbove(vma.start)
    let prev = index > 0 ? vmas.areas[index - 1] : nil
    let next = index < vmas.count ? vmas.areas[index] : nil
    let mergeLeft = prev.map { canMerge($0, vma) } ?? false
    var mergeRight = next.map { canMerge(vma, $0) } ?? false
    if mergeLeft && mergeRight && !anonCompatible(prev!, next!) { mergeRight = false }
    if mergeLeft {
      if mergeRight {
        vmas.areas[index - 1].end = next!.end
        if vmas.areas[index - 1].anonIdentity == 0 {
          vmas.areas[index - 1].anonIdentity = next!.anonIdentity
          vmas.areas[index - 1].anonInherited = next!.anonInherited
        }
        vmas.areas.remove(at: index)
      } else {
        vmas.areas[index - 1].end = vma.end
      }
      return index - 1
    }
    if mergeRight {
      vmas.areas[index].start = vma.start
      vmas.areas[index].pageOffset = vma.pageOffset
      return index
    }
    vmas.areas.insert(vma, at: index)
    return index
  }

  /// munmap's core (also MAP_FIXED's): splitting a VMA in the middle needs count < limit.
  func unmapRange(_ start: UInt, _ end: UInt) throws(PageError) {
    var index = vmas.firstEndingAbove(start)
    guard index < vmas.count, vmas.areas[index].start < end else { return }
    if start > vmas.areas[index].start {
      if end < vmas.areas[index].end && !splitAllowed { throw .outOfMemory }
      splitVMA(index, at: start)
      index += 1
    }
    var last = index
    while last + 1 < vmas.count && vmas.areas[last + 1].start < end { last += 1 }
    if end < vmas.areas[last].end && end > vmas.areas[last].start { splitVMA(last, at: end) }
    let removed = Array(vmas.areas[index...last])
    vmas.areas.removeSubrange(index...last)
    for vma in removed { zap(vma, from: vma.start, to: vma.end, keepGuards: false) }
    freePageTables(start, end)
    releaseObjects(of: removed)
    writeBackRemoved(removed)
  }

  /// Frees shmem objects no VMA of any process maps any more.
  func releaseObjects(of removed: [VMA]) {
    for vma in removed where vma.object != 0 {
      guard let object = machine.objects[vma.object], object.isShmem else { continue }
      var stillMapped = false
      for (_, reference) in machine.processes {
        let process = reference.takeUnretainedValue()
        if process.vmas.areas.contains(where: { $0.object == object.id }) {
          stillMapped = true
          break
        }
      }
      guard !stillMapped else { continue }
      machine.destroyObject(object)
    }
  }

  // MARK: Placement

  private func startGap(_ vma: VMA) -> UInt {
    // A MAP_GROWSDOWN area keeps the stack guard gap (256 pages) free below it.
    vma.flags.contains(.growsDown)
      ? (vma.start > 256 * 4096 ? vma.start - 256 * 4096 : 0) : vma.start
  }

  /// The highest free `length` bytes ending at or below `high` and starting at or above `low`.
  private func topDownArea(length: UInt, low: UInt, high: UInt) -> UInt? {
    var i = vmas.firstEndingAbove(high)
    var gapEnd = i < vmas.count ? min(high, startGap(vmas.areas[i])) : high
    while true {
      let gapStart = max(i > 0 ? vmas.areas[i - 1].end : 0, low)
      if gapEnd >= gapStart && gapEnd - gapStart >= length { return gapEnd - length }
      if i == 0 { return nil }
      i -= 1
      gapEnd = min(high, startGap(vmas.areas[i]))
    }
  }

  private func bottomUpArea(length: UInt, low: UInt, high: UInt) -> UInt? {
    var i = vmas.firstEndingAbove(low)
    var gapStart = low
    while true {
      let gapEnd = i < vmas.count ? min(high, startGap(vmas.areas[i])) : high
      if gapEnd >= gapStart && gapEnd - gapStart >= length { return gapStart }
      if i >= vmas.count { return nil }
      gapStart = max(gapStart, vmas.areas[i].end)
      i += 1
    }
  }

  /// mm_get_unmapped_area (top-down): a free hint is used as is; otherwise the highest gap below
  /// mmap_base, falling back to a bottom-up search above TASK_UNMAPPED_BASE.
  private func unmappedArea(hint: UInt, length: UInt) -> UInt? {
    if hint != 0 && hint <= taskSize - length && hint >= mmapMinAddress {
      // find_vma_prev: the first VMA ending above the hint, and the one before it.
      let i = vmas.firstEndingAbove(hint)
      let prevEnd = i > 0 ? vmas.areas[i - 1].end : 0
      if hint >= prevEnd && (i >= vmas.count || hint + length <= startGap(vmas.areas[i])) {
        return hint
      }
    }
    if let area = topDownArea(length: length, low: pageSizeValue, high: min(mmapBase, taskSize)) {
      return area
    }
    return bottomUpArea(length: length, low: (taskSize / 3) & ~UInt(4095), high: taskSize)
  }

  /// Placement for a new mapping: private anonymous mappings whose length is a multiple of 2 MiB and
  /// that have no hint come back 2 MiB-aligned (thp_get_unmapped_area, §3).
  func placement(hint: UInt, length: UInt, privateAnonymous: Bool) -> UInt? {
    let huge: UInt = 2 << 20
    if privateAnonymous && hint == 0 && length % huge == 0 {
      let padded = length + huge
      if padded > length, let area = unmappedArea(hint: 0, length: padded) {
        let misalignment = (0 &- area) & (huge - 1)
        return misalignment == 0 ? area + huge : area + misalignment
      }
    }
    return unmappedArea(hint: hint, length: length)
  }

  // MARK: Population

  /// Faults in `[start, end)` as get_user_pages would: `write` breaks COW; reads on write-only or
  /// exec-only areas are allowed when `force`. Returns nil, or the error that stopped it (ENOMEM for
  /// a hole, EFAULT for an inaccessible area or a guard marker). Faults are counted as usual.
  func populate(
    _ start: UInt, _ end: UInt, write: Bool?, force: Bool, skipHoles: Bool,
    permissionError: PageError = .badAddress
  ) -> PageError? {
    var cursor = start
    while cursor < end {
      let index: Int
      if let found = vmas.index(containing: cursor) {
        index = found
      } else {
        guard skipHoles else { return .outOfMemory }
        let next = vmas.firstEndingAbove(cursor)
        guard next < vmas.count, vmas.areas[next].start < end else { return nil }
        cursor = vmas.areas[next].start
        continue
      }
      let vma = vmas.areas[index]
      let stop = min(vma.end, end)
      // populate_vma_page_range: private writable areas are written (COW broken), others read.
      let writeAccess = write ?? (vma.flags.contains(.write) && !vma.flags.contains(.shared))
      if writeAccess {
        if !vma.flags.contains(.write) { return permissionError }
      } else if !vma.flags.contains(.read) && !(force && vma.flags.isAccessible) {
        return permissionError
      }
      var address = cursor
      while address < stop {
        switch service(index, address, write: writeAccess) {
        case .frame: break
        case .guardMarker: return .badAddress
        case .killed: return .outOfMemory
        }
        address += pageSizeValue
      }
      cursor = stop
    }
    return nil
  }
}

extension SimulatedMachine {
  /// Frees every page of a shmem object (its last mapping is gone).
  func destroyObject(_ object: MemoryObject) {
    for page in object.pages.indices {
      switch object.pages[page] {
      case .resident(let frame, _): releaseFrame(frame)
      case .swapped(let slot): releaseSlotReference(slot)
      case .absent: break
      }
      object.pages[page] = .absent
    }
    objects[object.id] = nil
  }
}
