import PageSpace

extension HeapView {
  /// What a fault at `address` means, as a pure function of the heap's tables (lock-free, allocation-
  /// free: callable from the SIGSEGV handler). Nil: the address is not in the heap's address space (or
  /// the fault cannot be ours), and the fault handler must pass it on.
  ///
  /// Which block a fault is charged to:
  /// - Every page of a run, including its trailing guard page, belongs to the run's block, so an access
  ///   anywhere from the block's slack to the guard after its run is "N bytes past the end" (or before
  ///   the start, for the unused leading pages of an `upper` run) of that block, like AddressSanitizer's
  ///   "N bytes to the right of the region".
  /// - A guard page is also the lower guard of the next run. There the nearer block wins: the distance
  ///   past the end of the block before against the distance before the start of the block after; a tie
  ///   goes to the block before (an overflow is likelier than an underflow).
  /// - The kernel reports a straddling access (an 8-byte load starting 4 bytes before the guard) at the
  ///   guard's base, not at the access start (kernel-semantics §5): the distance is then measured from
  ///   the guard base ("0 bytes past the end" for an `upper` block that ends at its guard).
  /// - A freed block (quarantined, or released and not yet reused) is use-after-free with the same
  ///   relation; a live block is overflow/underflow; an address of ours that belongs to no block (a
  ///   reservation's uncarved part, a released run whose record was recycled) is a wild access.
  public func diagnose(
    address: UInt, access: MemoryAccess, code: FaultCode? = nil, thread: Int32 = 0,
    stack: StackID = .none
  ) -> Finding? {
    if code == .kernel { return nil }  // SI_KERNEL: si_addr is 0, nothing to say about it.
    guard let reservation = reservationIndex(containing: address) else { return nil }
    let entry = reservations[reservation]
    let page = address & ~(pageSize - 1)
    let guardPageSize: UInt = entry.hasGuardPages ? pageSize : 0

    // The block owning this page (the page map may still name a recycled record: check its run).
    var owner: BlockRecord? = nil
    let ownerNumber = recordNumber(at: address, reservation: reservation)
    if ownerNumber != 0 {
      let record = records[Int(ownerNumber)]
      if record.state != BlockRecord.unused, Int(record.reservation) == reservation,
        address >= record.runBase,
        address < record.runBase + UInt(record.runPages) * pageSize + guardPageSize
      {
        owner = record
      }
    }
    // The block after, when this page is the lower guard of the next run.
    var next: BlockRecord? = nil
    let inGuardPage =
      entry.hasGuardPages
      && (owner.map { page >= $0.runBase + UInt($0.runPages) * pageSize } ?? true)
    if inGuardPage && !entry.dedicated && page + pageSize < entry.end {
      let number = recordNumber(at: page + pageSize, reservation: reservation)
      if number != 0 {
        let record = records[Int(number)]
        if record.state != BlockRecord.unused, record.runBase == page + pageSize,
          Int(record.reservation) == reservation
        {
          next = record
        }
      }
    }
    var chosen: BlockRecord
    switch (owner, next) {
    case (nil, nil):
      return Finding(
        kind: .wildAccess, access: access, address: address, thread: thread, accessStack: stack)
    case (let before?, nil): chosen = before
    case (nil, let after?): chosen = after
    case (let before?, let after?):
      let pastBefore = address >= before.end ? address - before.end : 0
      let beforeAfter = after.address > address ? after.address - address : 0
      chosen = beforeAfter < pastBefore ? after : before
    }
    let relation: BlockRelation
    let distance: UInt
    if address < chosen.address {
      relation = .beforeStart
      distance = chosen.address - address
    } else if address >= chosen.address + chosen.size {
      relation = .pastEnd
      distance = address - (chosen.address + chosen.size)
    } else {
      relation = .inside
      distance = address - chosen.address
    }
    let kind: FindingKind
    if chosen.state == BlockState.live.rawValue {
      switch relation {
      case .pastEnd: kind = .heapBufferOverflow
      case .beforeStart: kind = .heapBufferUnderflow
      case .inside:
        // A live block's own bytes are accessible: a fault there is not one of ours (the program
        // changed the protection itself, or it is a bus error of another kind).
        return nil
      }
    } else {
      kind = .useAfterFree
    }
    return Finding(
      kind: kind, access: access, address: address, block: chosen.snapshot(), relation: relation,
      distance: distance, thread: thread, accessStack: stack)
  }

  /// Diagnoses a fault from a page space's access (the simulator's thrown `PageFault`, or a real probe).
  public func diagnose(_ fault: PageFault, thread: Int32 = 0, stack: StackID = .none) -> Finding? {
    diagnose(
      address: fault.address, access: fault.access, code: fault.code, thread: thread, stack: stack)
  }
}
