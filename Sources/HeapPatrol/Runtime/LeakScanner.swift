import CShims
import PageSpace

#if canImport(Glibc)
  import Glibc
#endif

/// Finds the live blocks a program can no longer reach, as a conservative mark phase (like
/// LeakSanitizer and the Boehm collector):
///
/// - Roots: every private readable+writable mapping of the process (modules' .data/.bss, thread stacks
///   and TLS, glibc's heap, other anonymous memory), except HeapPatrol's own memory (the heap's
///   reservations and tables, the stack depot, the runtime's state, the scanner's scratch). The
///   scanning thread's own stack is scanned from its current stack pointer upwards only, so the
///   scanner's own locals do not keep blocks alive.
/// - Every aligned word that points into a live block (anywhere inside it: interior pointers count)
///   marks the block; marked blocks' contents are scanned in turn (words at multiples of 8 from the
///   block's start, so blocks handed out with `align=1` are scanned as the program laid them out).
/// - Live blocks left unmarked are leaks, grouped by allocation stack.
///
/// Every root page is probed before it is read (a page that faults is skipped, never a crash).
/// Limits: mappings of 64 MiB and more are scanned only where resident (mincore), so a pointer that
/// lives only in a swapped-out page of such a mapping is missed (a false leak); pointers hidden by the
/// program (xor-linked lists, pointers stored only in files) are not seen, as in every conservative
/// scanner. Everything runs allocation-free in mmap'd scratch memory with the heap lock held.
struct LeakScanner: ~Copyable {
  struct Group {
    var stack: UInt32
    var count: UInt32
    var bytes: UInt
    var firstRecord: UInt32
    var used: Bool
  }

  struct Range {
    var start: UInt
    var end: UInt
  }

  let core: UnsafeMutablePointer<HeapCore<SystemPageSpace>>
  let view: HeapView
  let recordLimit: UInt32
  let scratch: UnsafeMutableRawPointer
  let scratchLength: Int
  let marks: UnsafeMutablePointer<UInt8>
  let worklist: UnsafeMutablePointer<UInt32>
  var worklistCount = 0
  let exclusions: UnsafeMutablePointer<Range>
  var exclusionCount = 0
  static let exclusionCapacity = 4096
  let groups: UnsafeMutablePointer<Group>
  let groupCapacity: Int
  /// The quick filter: the lowest and highest address of any reservation.
  var heapLow: UInt = .max
  var heapHigh: UInt = 0
  /// Live blocks not marked yet. The scan stops as soon as it reaches 0: every block is reachable, so
  /// nothing is left to find (a sampled run's few blocks are usually found in the first pages, long
  /// before a large glibc heap has been read).
  var unmarked: Int

  init?(core: UnsafeMutablePointer<HeapCore<SystemPageSpace>>) {
    self.core = core
    view = core.pointee.view
    recordLimit = core.pointee.recordBump
    let records = Int(recordLimit)
    var live = 0
    var number = 1
    while number < records {
      if view.records[number].state == BlockState.live.rawValue { live += 1 }
      number += 1
    }
    unmarked = live
    var groupCapacity = 64
    while groupCapacity < live * 2 { groupCapacity <<= 1 }
    self.groupCapacity = groupCapacity
    let page = Int(cshim_page_size())
    func roundUp(_ value: Int) -> Int { (value + page - 1) / page * page }
    let markBytes = roundUp(records / 8 + 1)
    let worklistBytes = roundUp(records * 4 + 4)
    let exclusionBytes = roundUp(LeakScanner.exclusionCapacity * MemoryLayout<Range>.stride)
    let groupBytes = roundUp(groupCapacity * MemoryLayout<Group>.stride)
    scratchLength = markBytes + worklistBytes + exclusionBytes + groupBytes
    var raw: UnsafeMutableRawPointer?
    guard cshim_mmap(nil, scratchLength, 0x3, 0x02 | 0x20 | 0x4000, -1, 0, &raw) == 0,
      let base = raw
    else { return nil }
    scratch = base
    marks = base.bindMemory(to: UInt8.self, capacity: markBytes)
    worklist = (base + markBytes).bindMemory(to: UInt32.self, capacity: records + 1)
    exclusions = (base + markBytes + worklistBytes).bindMemory(
      to: Range.self, capacity: LeakScanner.exclusionCapacity)
    groups = (base + markBytes + worklistBytes + exclusionBytes).bindMemory(
      to: Group.self, capacity: groupCapacity)
  }

  deinit { _ = cshim_munmap(scratch, scratchLength) }

  mutating func exclude(_ start: UInt, _ length: UInt) {
    guard length > 0, exclusionCount < LeakScanner.exclusionCapacity else { return }
    exclusions[exclusionCount] = Range(start: start, end: start &+ length)
    exclusionCount += 1
  }

  /// HeapPatrol's own memory: never a root.
  mutating func excludeOwnMemory(runtime: RuntimeState.Regions) {
    exclude(UInt(bitPattern: scratch), UInt(scratchLength))
    exclude(runtime.state.base, runtime.state.length)
    exclude(runtime.depot.base, runtime.depot.length)
    let pageSize = view.pageSize
    // The heap's tables (HeapCore.init maps them; sizes as there).
    exclude(
      UInt(bitPattern: view.reservationCount),
      UInt(HeapHeader.maximumReservations * (MemoryLayout<ReservationEntry>.stride + 8) + 64))
    exclude(
      UInt(bitPattern: view.records), UInt(view.recordCapacity * MemoryLayout<BlockRecord>.stride))
    exclude(
      UInt(bitPattern: core.pointee.freeRuns),
      UInt(Int(core.pointee.freeRunCapacity) * MemoryLayout<FreeRun>.stride))
    exclude(UInt(bitPattern: core.pointee.classHeads), UInt(RunClass.count * 16))
    exclude(
      UInt(bitPattern: core) - 128, UInt(MemoryLayout<HeapCore<SystemPageSpace>>.stride + 256))
    let count = view.reservationCount.pointee.load(ordering: .acquiring)
    var index = 0
    while index < count {
      let entry = view.reservations[index]
      exclude(entry.base, entry.length)
      if entry.pageMap != 0 { exclude(entry.pageMap, entry.length / pageSize * 4) }
      heapLow = min(heapLow, entry.base)
      heapHigh = max(heapHigh, entry.end)
      index += 1
    }
    // Sort by start (insertion sort: a few dozen ranges, at most a few thousand).
    var outer = 1
    while outer < exclusionCount {
      let item = exclusions[outer]
      var inner = outer - 1
      while inner >= 0 && exclusions[inner].start > item.start {
        exclusions[inner + 1] = exclusions[inner]
        inner -= 1
      }
      exclusions[inner + 1] = item
      outer += 1
    }
  }

  /// The live record containing `address` (interior pointers count), or 0.
  @inline(__always)
  func liveRecord(containing address: UInt) -> UInt32 {
    guard address >= heapLow && address < heapHigh,
      let reservation = view.reservationIndex(containing: address)
    else { return 0 }
    let number = view.recordNumber(at: address, reservation: reservation)
    guard number != 0, number < recordLimit else { return 0 }
    let record = view.records[Int(number)]
    guard record.state == BlockState.live.rawValue, address >= record.address,
      address < record.address + max(record.size, 1)
    else { return 0 }
    return number
  }

  @inline(__always)
  mutating func consider(_ word: UInt) {
    let number = liveRecord(containing: word)
    guard number != 0 else { return }
    let byte = Int(number >> 3)
    let bit = UInt8(1) << UInt8(number & 7)
    if marks[byte] & bit != 0 { return }
    marks[byte] |= bit
    worklist[worklistCount] = number
    worklistCount += 1
    unmarked -= 1
  }

  /// Scans aligned words of [start, end), skipping excluded ranges.
  mutating func scanRoot(_ start: UInt, _ end: UInt) {
    var cursor = (start + 7) & ~7
    var index = 0
    while cursor < end && unmarked > 0 {
      // Skip exclusions that end before the cursor.
      while index < exclusionCount && exclusions[index].end <= cursor { index += 1 }
      var stop = end
      if index < exclusionCount && exclusions[index].start < end {
        if exclusions[index].start <= cursor {
          cursor = (exclusions[index].end + 7) & ~7
          continue
        }
        stop = exclusions[index].start
      }
      scanResidentWords(cursor, stop)
      cursor = (stop + 7) & ~7
    }
  }

  /// Scans [start, end) (aligned start) page by page, each page only if a probe read of it does not
  /// fault: /proc/self/maps can be stale (another thread unmapping), and a private file mapping
  /// longer than its file raises SIGBUS past the end. Large ranges are scanned only where resident.
  mutating func scanResidentWords(_ start: UInt, _ end: UInt) {
    let pageSize = view.pageSize
    var vector = InlineArray<512, UInt8>(repeating: 0)
    let checkResidency = end - start >= 64 << 20
    var chunk = start & ~(pageSize - 1)
    while chunk < end && unmarked > 0 {
      let chunkEnd = min(end, chunk + 512 * pageSize)
      let pages = Int((chunkEnd - chunk + pageSize - 1) / pageSize)
      var resident = false
      if checkResidency {
        resident = withUnsafeMutableBytes(of: &vector) { raw -> Bool in
          cshim_mincore(
            UnsafeMutableRawPointer(bitPattern: chunk), Int(chunkEnd - chunk),
            raw.baseAddress!.assumingMemoryBound(to: UInt8.self)) == 0
        }
      }
      var page = 0
      while page < pages && unmarked > 0 {
        let pageStart = max(start, chunk + UInt(page) * pageSize)
        let pageEnd = min(chunkEnd, chunk + UInt(page + 1) * pageSize)
        if (!checkResidency || !resident || vector[page] & 1 != 0)
          && LeakScanner.readable(pageStart)
        {
          scanWords(pageStart, pageEnd)
        }
        page += 1
      }
      chunk = chunkEnd
    }
  }

  /// Whether reading the byte at `address` (and so its whole page) works, without a signal reaching
  /// the program.
  static func readable(_ address: UInt) -> Bool {
    var value: UInt8 = 0
    var code: Int32 = 0
    var faultAddress: UInt = 0
    return cshim_probe(address, 0, 0, &value, &code, &faultAddress) == 0
  }

  @inline(__always)
  mutating func scanWords(_ start: UInt, _ end: UInt) {
    guard end > start, end - start >= 8 else { return }
    var address = start
    let last = end - 8
    while address <= last {
      let word = UnsafeRawPointer(bitPattern: address)!.loadUnaligned(as: UInt.self)
      if word >= heapLow && word < heapHigh { consider(word) }
      address += 8
    }
  }

  /// Marks everything reachable from the roots; `stackPointer` bounds the scanning thread's stack.
  mutating func markReachable(stackPointer: UInt) {
    guard unmarked > 0 else { return }
    visitProcessMaps { line in
      guard line.readable && line.writable && !line.shared else { return true }
      if line.pathIs("[vvar]") || line.pathIs("[vsyscall]") || line.pathIs("[vvar_vclock]") {
        return true
      }
      var start = line.start
      if stackPointer >= line.start && stackPointer < line.end { start = stackPointer & ~7 }
      scanRoot(start, line.end)
      return unmarked > 0
    }
    // Transitively through reachable blocks.
    while worklistCount > 0 && unmarked > 0 {
      worklistCount -= 1
      let record = view.records[Int(worklist[worklistCount])]
      scanWords(record.address, record.address + record.size)
    }
  }

  func isMarked(_ number: UInt32) -> Bool {
    marks[Int(number >> 3)] & (UInt8(1) << UInt8(number & 7)) != 0
  }

  /// Groups live blocks with `marked == reachable` by allocation stack; returns the number of groups,
  /// compacted at the front of `groups` and sorted by bytes, largest first.
  mutating func group(reachable: Bool) -> Int {
    for index in 0..<groupCapacity {
      groups[index] = Group(stack: 0, count: 0, bytes: 0, firstRecord: 0, used: false)
    }
    let mask = UInt32(groupCapacity - 1)
    var number: UInt32 = 1
    while number < recordLimit {
      let record = view.records[Int(number)]
      if record.state == BlockState.live.rawValue && isMarked(number) == reachable {
        var slot = (record.allocationStack &* 0x9E37_79B1) & mask
        while groups[Int(slot)].used && groups[Int(slot)].stack != record.allocationStack {
          slot = (slot &+ 1) & mask
        }
        if groups[Int(slot)].used {
          groups[Int(slot)].count += 1
          groups[Int(slot)].bytes += record.size
        } else {
          groups[Int(slot)] = Group(
            stack: record.allocationStack, count: 1, bytes: record.size, firstRecord: number,
            used: true)
        }
      }
      number += 1
    }
    var count = 0
    for index in 0..<groupCapacity where groups[index].used {
      groups[count] = groups[index]
      count += 1
    }
    sortByBytesDescending(count)
    return count
  }

  /// Heapsort (in place, allocation-free): largest bytes first.
  func sortByBytesDescending(_ count: Int) {
    func less(_ a: Int, _ b: Int) -> Bool {
      // "Less" puts larger byte totals later in a max-heap sort, so reverse: smaller bytes are greater.
      groups[a].bytes > groups[b].bytes
        || (groups[a].bytes == groups[b].bytes && groups[a].firstRecord > groups[b].firstRecord)
    }
    func siftDown(_ start: Int, _ end: Int) {
      var root = start
      while 2 * root + 1 < end {
        var child = 2 * root + 1
        if child + 1 < end && less(child, child + 1) { child += 1 }
        guard less(root, child) else { return }
        let swapped = groups[root]
        groups[root] = groups[child]
        groups[child] = swapped
        root = child
      }
    }
    guard count > 1 else { return }
    var start = count / 2 - 1
    while start >= 0 {
      siftDown(start, count)
      start -= 1
    }
    var end = count - 1
    while end > 0 {
      let swapped = groups[0]
      groups[0] = groups[end]
      groups[end] = swapped
      siftDown(0, end)
      end -= 1
    }
  }
}

extension RuntimeState {
  /// HeapPatrol's own mappings outside the heap.
  struct Regions {
    var state: (base: UInt, length: UInt)
    var depot: (base: UInt, length: UInt)
  }
}

extension ProcessRuntime {
  /// At exit: canaries of live blocks, then leaks, then the exit event. Exits with `leak_exitcode`
  /// when leaks were found and it is set.
  func finishAtExit() {
    var stackMarker: UInt = 0
    let stackPointer = withUnsafeMutablePointer(to: &stackMarker) { UInt(bitPattern: $0) }
    let thread = cshim_gettid()
    if options.checkOnExit {
      heap.check(thread: thread, stack: .none) { finding in report(finding) }
    }
    var leaks = 0
    if options.detectLeaks {
      leaks = reportLeaks(stackPointer: stackPointer)
    }
    writeExitEvent()
    if leaks > 0 && options.leakExitCode != 0 {
      // Later atexit handlers are skipped, but the program's buffered output is not lost.
      fflush(nil)
      _exit(options.leakExitCode)
    }
  }

  /// Scans for unreachable blocks and reports them (and reachable ones with `show_reachable`).
  /// Returns the number of leak findings.
  @discardableResult
  public func reportLeaks(stackPointer: UInt? = nil) -> Int {
    var marker: UInt = 0
    let sp = stackPointer ?? withUnsafeMutablePointer(to: &marker) { UInt(bitPattern: $0) }
    heap.lock.lock()
    defer { heap.lock.unlock() }
    guard var scanner = LeakScanner(core: heap.core) else { return 0 }
    scanner.excludeOwnMemory(
      runtime: RuntimeState.Regions(state: state.pointee.region, depot: depot.region))
    scanner.markReachable(stackPointer: sp)
    let groupCount = scanner.group(reachable: false)
    var index = 0
    while index < groupCount {
      let group = scanner.groups[index]
      let first = scanner.view.records[Int(group.firstRecord)].snapshot()
      report(
        Finding(
          kind: .leak, address: first.address, block: first, thread: first.allocationThread,
          detail: UInt(group.count), bytes: group.bytes))
      index += 1
    }
    if options.showReachable {
      let reachableCount = scanner.group(reachable: true)
      var reachable = 0
      while reachable < reachableCount {
        reportReachable(
          scanner.groups[reachable],
          first: scanner.view.records[Int(scanner.groups[reachable].firstRecord)].snapshot())
        reachable += 1
      }
    }
    return groupCount
  }

  /// Still-reachable blocks (not findings): a text note and a JSON `reachable` event.
  func reportReachable(_ group: LeakScanner.Group, first: BlockSnapshot) {
    guard acquireReportLock() else { return }
    defer { releaseReportLock() }
    let renderer = FindingRenderer(
      depot: depot, modules: state.pointee.modules, pid: state.pointee.pid)
    if options.textReport {
      withReportBuffer(sink: 2) { out in
        out.append("==")
        out.append(decimal: state.pointee.pid)
        out.append("==HeapPatrol: still reachable: ")
        out.append(decimal: group.bytes)
        out.append(" bytes in ")
        out.append(decimal: UInt(group.count))
        out.append(group.count == 1 ? " block allocated at:\n" : " blocks allocated at:\n")
        renderer.appendTextFrames(StackID(rawValue: group.stack), into: &out)
      }
    }
    let logFD = state.pointee.logFD
    if logFD >= 0 {
      withReportBuffer(sink: logFD) { out in
        out.append("{\"heappatrol\":1,\"event\":\"reachable\",\"pid\":")
        out.append(decimal: state.pointee.pid)
        out.append(",\"count\":")
        out.append(decimal: UInt(group.count))
        out.append(",\"bytes\":")
        out.append(decimal: group.bytes)
        out.append(",\"block\":{\"index\":")
        out.append(decimal: first.index)
        out.append(",\"address\":")
        out.appendJSONHex(first.address)
        out.append(",\"size\":")
        out.append(decimal: first.size)
        out.append("},\"allocationStack\":")
        renderer.appendJSONFrames(StackID(rawValue: group.stack), into: &out)
        out.append("}\n")
      }
    }
  }
}
