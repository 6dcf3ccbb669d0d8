import PageSpace

// Lock-free range checks for the checked memory operations (memcpy, strcpy, ... in the preload):
// one page -> block lookup per range, no scan of the blocks, nothing allocated. Same reading rules
// as `diagnose` (see HeapTables.swift for the memory-ordering argument).

extension HeapView {
  /// The live block whose own bytes include `address`, if any.
  @inlinable
  func liveRecord(at address: UInt, reservation: Int) -> BlockRecord? {
    let number = recordNumber(at: address, reservation: reservation)
    guard number != 0 else { return nil }
    let record = records[Int(number)]
    guard record.state == BlockState.live.rawValue, Int(record.reservation) == reservation,
      address >= record.address, address < record.end
    else { return nil }
    return record
  }

  /// What is wrong with a memory operation touching `[start, start + length)`, or nil when every
  /// byte of it lies in one live block, or the range does not touch the heap at all.
  ///
  /// - A range starting in a live block and running past its end is a memory-operation-overflow at
  ///   the first byte past the block ("0 bytes past the end"), whatever lies beyond.
  /// - A range starting outside every live block is judged by its first byte, as a fault there
  ///   would be: use-after-free for a freed block, memory-operation-overflow for the slack or guard
  ///   of a live block, wild-access for heap address space no block owns.
  public func checkMemoryRange(start: UInt, length: UInt, access: MemoryAccess) -> Finding? {
    guard length != 0 else { return nil }
    let (sum, overflowed) = start.addingReportingOverflow(length - 1)
    let last = overflowed ? UInt.max : sum
    guard let reservation = reservationIndex(containing: start) else {
      // Starting below the heap and running into it: charge the first heap byte it reaches.
      guard let lastReservation = reservationIndex(containing: last) else { return nil }
      let base = reservations[lastReservation].base
      return diagnose(address: base, access: access).map(Self.asMemoryOperation)
        ?? Finding(kind: .wildAccess, access: access, address: base, thread: 0)
    }
    if let record = liveRecord(at: start, reservation: reservation) {
      if last < record.end { return nil }
      return Finding(
        kind: .memoryOperationOverflow, access: access, address: record.end,
        block: record.snapshot(), relation: .pastEnd, distance: 0, thread: 0)
    }
    guard let finding = diagnose(address: start, access: access) else { return nil }
    return Self.asMemoryOperation(finding)
  }

  /// Bytes from `address` to the end of its live block; 0 for a heap address outside every live
  /// block (any read there is wrong); nil when the address is not the heap's.
  @inlinable
  public func readableBytes(from address: UInt) -> UInt? {
    guard let reservation = reservationIndex(containing: address) else { return nil }
    guard let record = liveRecord(at: address, reservation: reservation) else { return 0 }
    return record.end &- address
  }

  /// An access-style finding restated for a memory operation: out of a live block's bounds is
  /// memory-operation-overflow (mpatrol RNGOVF); freed blocks and wild addresses keep their kind.
  static func asMemoryOperation(_ finding: Finding) -> Finding {
    var copy = finding
    switch finding.kind {
    case .heapBufferOverflow, .heapBufferUnderflow: copy.kind = .memoryOperationOverflow
    default: break
    }
    return copy
  }
}

extension HeapView {
  /// The hot-path lookup of the checked memory operations: 0 when `address` is not the heap's,
  /// 1 when it lies in a live block (its bounds in `start`/`end`), 2 for a heap address outside
  /// every live block. Reads only the fields it needs (no record copy).
  @inlinable
  public func liveBounds(of address: UInt, start: inout UInt, end: inout UInt) -> Int {
    guard let reservation = reservationIndex(containing: address) else { return 0 }
    let number = recordNumber(at: address, reservation: reservation)
    guard number != 0 else { return 2 }
    let record = records + Int(number)
    let blockStart = record.pointee.address
    let blockEnd = blockStart &+ record.pointee.size
    guard record.pointee.state == BlockState.live.rawValue,
      Int(record.pointee.reservation) == reservation, address >= blockStart, address < blockEnd
    else { return 2 }
    start = blockStart
    end = blockEnd
    return 1
  }
}

extension HeapView {
  /// Every address where the answer of an address -> block lookup can change, for tests comparing
  /// two lookups (the preload's C one against `liveBounds`): each reservation's first and last byte
  /// and the bytes just outside it; for every record ever used (live, freed or recycled), its
  /// block's first and last byte and the bytes just outside (canary slack), its accessible range's
  /// edges, the first byte of its run and of the guard page after it. Allocation-free.
  public func forEachBoundaryAddress(_ body: (UInt) -> Void) {
    let count = reservationCount.pointee.load(ordering: .acquiring)
    for index in 0..<count {
      let entry = reservations[index]
      body(entry.base &- 1)
      body(entry.base)
      body(entry.end &- 1)
      body(entry.end)
    }
    var number = 1
    // Records are handed out in order; the first never-used one (sequence 0) ends the used part.
    while number < recordCapacity && records[number].sequence != 0 {
      let record = records[number]
      body(record.address &- 1)
      body(record.address)
      body(record.end &- 1)
      body(record.end)
      body(record.accessibleStart &- 1)
      body(record.accessibleStart)
      body(record.accessibleEnd &- 1)
      body(record.accessibleEnd)
      body(record.runBase)
      body(record.runBase &+ UInt(record.runPages) &* pageSize)
      number += 1
    }
  }
}
