// kernel-semantics.md §1: fault counts for anonymous memory, row by row, for N = 1, 16, 1024.

import PageSimulator
import PageSpace
import Testing

@Suite("§1 anonymous fault counts")
struct AnonymousFaultTests {
  @Test("a: write each page N, again 0", arguments: sizes)
  func writeTwice(pages: Int) throws {
    let space = SimulatedPageSpace()
    let p = try space.map(at: nil, length: UInt(pages) * page, protection: .readWrite, flags: [])
    #expect(try minorFaults(space) { try writeEach(space, p, pages: pages) } == UInt64(pages))
    #expect(try minorFaults(space) { try writeEach(space, p, pages: pages) } == 0)
  }

  @Test("b: read first (zero page) N, read again 0, then write N", arguments: sizes)
  func readThenWrite(pages: Int) throws {
    let space = SimulatedPageSpace()
    let p = try space.map(at: nil, length: UInt(pages) * page, protection: .readWrite, flags: [])
    do {
      let (bytes, faults) = try measured(space) { try readEach(space, p, pages: pages) }
      #expect(bytes.allSatisfy { $0 == 0 })
      #expect(faults == UInt64(pages))
    }
    #expect(space.counters.zeroPageMaps == UInt64(pages))
    #expect(space.counters.residentPages == 0)
    #expect(try minorFaults(space) { try readEach(space, p, pages: pages) } == 0)
    #expect(try minorFaults(space) { try writeEach(space, p, pages: pages) } == UInt64(pages))
    #expect(space.counters.residentPages == pages)
  }

  @Test("c: MAP_POPULATE counts N inside mmap, then 0", arguments: sizes)
  func populate(pages: Int) throws {
    let space = SimulatedPageSpace()
    var p: UInt = 0
    #expect(
      try minorFaults(space) {
        p = try space.map(
          at: nil, length: UInt(pages) * page, protection: .readWrite, flags: .populate)
      } == UInt64(pages))
    #expect(try minorFaults(space) { try writeEach(space, p, pages: pages) } == 0)
    var r: UInt = 0
    #expect(
      try minorFaults(space) {
        r = try space.map(at: nil, length: UInt(pages) * page, protection: .read, flags: .populate)
      } == UInt64(pages))
    #expect(try minorFaults(space) { try readEach(space, r, pages: pages) } == 0)
  }

  @Test("d: DONTNEED call 0; then write N; then read N (zeros)", arguments: sizes)
  func dontNeed(pages: Int) throws {
    let space = SimulatedPageSpace()
    let p = try space.map(at: nil, length: UInt(pages) * page, protection: .readWrite, flags: [])
    try writeEach(space, p, pages: pages)
    #expect(
      try minorFaults(space) { try space.advise(p, length: UInt(pages) * page, .dontNeed) } == 0)
    #expect(try minorFaults(space) { try writeEach(space, p, pages: pages) } == UInt64(pages))
    try space.advise(p, length: UInt(pages) * page, .dontNeed)
    do {
      let (bytes, faults) = try measured(space) { try readEach(space, p, pages: pages) }
      #expect(bytes.allSatisfy { $0 == 0 })
      #expect(faults == UInt64(pages))
    }
  }

  @Test("e: FREE call 0; read keeps data; write 0", arguments: sizes)
  func free(pages: Int) throws {
    let space = SimulatedPageSpace()
    let p = try space.map(at: nil, length: UInt(pages) * page, protection: .readWrite, flags: [])
    try writeEach(space, p, pages: pages, value: 9)
    #expect(try minorFaults(space) { try space.advise(p, length: UInt(pages) * page, .free) } == 0)
    do {
      let (bytes, faults) = try measured(space) { try readEach(space, p, pages: pages) }
      #expect(bytes.allSatisfy { $0 == 9 })
      #expect(faults == 0)
    }
    #expect(try minorFaults(space) { try writeEach(space, p, pages: pages) } == 0)
  }

  @Test("f: NONE and back to RW: calls 0, then read 0 and write 0", arguments: sizes)
  func protectionRoundTrip(pages: Int) throws {
    let space = SimulatedPageSpace()
    let length = UInt(pages) * page
    let p = try space.map(at: nil, length: length, protection: .readWrite, flags: [])
    try writeEach(space, p, pages: pages)
    #expect(try minorFaults(space) { try space.protect(p, length: length, to: .none) } == 0)
    #expect(try minorFaults(space) { try space.protect(p, length: length, to: .readWrite) } == 0)
    #expect(try minorFaults(space) { try readEach(space, p, pages: pages) } == 0)
    #expect(try minorFaults(space) { try writeEach(space, p, pages: pages) } == 0)
  }

  @Test("f2: the four protection round trips", arguments: sizes)
  func protectionRoundTrips(pages: Int) throws {
    let space = SimulatedPageSpace()
    let length = UInt(pages) * page
    // written, NONE -> RW, write with no read first: 0
    let a = try space.map(at: nil, length: length, protection: .readWrite, flags: [])
    try writeEach(space, a, pages: pages)
    try space.protect(a, length: length, to: .none)
    try space.protect(a, length: length, to: .readWrite)
    #expect(try minorFaults(space) { try writeEach(space, a, pages: pages) } == 0)
    // only read (zero page), NONE -> RW, write: N
    let b = try space.map(at: nil, length: length, protection: .readWrite, flags: [])
    try readEach(space, b, pages: pages)
    try space.protect(b, length: length, to: .none)
    try space.protect(b, length: length, to: .readWrite)
    #expect(try minorFaults(space) { try writeEach(space, b, pages: pages) } == UInt64(pages))
    // written, READ -> RW, write: 0
    let c = try space.map(at: nil, length: length, protection: .readWrite, flags: [])
    try writeEach(space, c, pages: pages)
    try space.protect(c, length: length, to: .read)
    try space.protect(c, length: length, to: .readWrite)
    #expect(try minorFaults(space) { try writeEach(space, c, pages: pages) } == 0)
    // mmap(PROT_NONE) untouched, -> RW, write: N
    let d = try space.map(at: nil, length: length, protection: .none, flags: [])
    try space.protect(d, length: length, to: .readWrite)
    #expect(try minorFaults(space) { try writeEach(space, d, pages: pages) } == UInt64(pages))
  }

  @Test("g: READ on written pages: call 0, read 0; mmap(READ) untouched: read N", arguments: sizes)
  func readOnly(pages: Int) throws {
    let space = SimulatedPageSpace()
    let length = UInt(pages) * page
    let p = try space.map(at: nil, length: length, protection: .readWrite, flags: [])
    try writeEach(space, p, pages: pages)
    #expect(try minorFaults(space) { try space.protect(p, length: length, to: .read) } == 0)
    #expect(try minorFaults(space) { try readEach(space, p, pages: pages) } == 0)
    let r = try space.map(at: nil, length: length, protection: .read, flags: [])
    #expect(try minorFaults(space) { try readEach(space, r, pages: pages) } == UInt64(pages))
  }

  @Test("i: shared anonymous: write N then 0; read N then write 0", arguments: sizes)
  func sharedAnonymous(pages: Int) throws {
    let space = SimulatedPageSpace()
    let length = UInt(pages) * page
    let p = try space.map(at: nil, length: length, protection: .readWrite, flags: .shared)
    #expect(try minorFaults(space) { try writeEach(space, p, pages: pages) } == UInt64(pages))
    #expect(try minorFaults(space) { try writeEach(space, p, pages: pages) } == 0)
    let q = try space.map(at: nil, length: length, protection: .readWrite, flags: .shared)
    #expect(try minorFaults(space) { try readEach(space, q, pages: pages) } == UInt64(pages))
    #expect(try minorFaults(space) { try writeEach(space, q, pages: pages) } == 0)
  }

  @Test(
    "i2: shared anonymous, DONTNEED, then read: fault-around (start index ≡ 1 mod 16)",
    arguments: [(1, 1), (16, 1), (1024, 65)])
  func sharedFaultAround(pages: Int, expected: Int) throws {
    let space = SimulatedPageSpace()
    let length = UInt(pages) * page
    // A free hint at VA page index ≡ 1 (mod 16), as in the measurement.
    let p = try space.map(
      at: 0x4000_0000_0000 + page, length: length, protection: .readWrite, flags: .shared)
    #expect(p == 0x4000_0000_0000 + page)
    try writeEach(space, p, pages: pages)
    #expect(try minorFaults(space) { try space.advise(p, length: length, .dontNeed) } == 0)
    do {
      let (bytes, faults) = try measured(space) { try readEach(space, p, pages: pages) }
      #expect(bytes.allSatisfy { $0 == 7 })
      #expect(faults == UInt64(expected))
    }
    try space.advise(p, length: length, .dontNeed)
    #expect(try minorFaults(space) { try writeEach(space, p, pages: pages) } == UInt64(pages))
  }

  @Test("l: mlock populates (N inside), MAP_LOCKED N, mlock on written 0", arguments: sizes)
  func mlock(pages: Int) throws {
    let space = SimulatedPageSpace()
    let length = UInt(pages) * page
    let p = try space.map(at: nil, length: length, protection: .readWrite, flags: [])
    #expect(try minorFaults(space) { try space.lock(p, length: length) } == UInt64(pages))
    #expect(try minorFaults(space) { try writeEach(space, p, pages: pages) } == 0)
    let w = try space.map(at: nil, length: length, protection: .readWrite, flags: [])
    try writeEach(space, w, pages: pages)
    #expect(try minorFaults(space) { try space.lock(w, length: length) } == 0)
    #expect(
      try minorFaults(space) {
        _ = try space.map(at: nil, length: length, protection: .readWrite, flags: .locked)
      } == UInt64(pages))
  }

  @Test(
    "l2: mlock on PROT_NONE ENOMEM with 0 faults; POPULATE_WRITE N then 0; POPULATE_READ N",
    arguments: sizes)
  func populateAdvice(pages: Int) throws {
    let space = SimulatedPageSpace()
    let length = UInt(pages) * page
    let none = try space.map(at: nil, length: length, protection: .none, flags: [])
    let (lockError, lockFaults) = measured(space) {
      errorOf { () throws(PageError) in try space.lock(none, length: length) }
    }
    #expect(lockError == .outOfMemory)
    #expect(lockFaults == 0)
    let p = try space.map(at: nil, length: length, protection: .readWrite, flags: [])
    #expect(
      try minorFaults(space) { try space.advise(p, length: length, .populateWrite) }
        == UInt64(pages))
    #expect(try minorFaults(space) { try writeEach(space, p, pages: pages) } == 0)
    let r = try space.map(at: nil, length: length, protection: .readWrite, flags: [])
    #expect(
      try minorFaults(space) { try space.advise(r, length: length, .populateRead) } == UInt64(pages)
    )
  }

  @Test("l3: WILLNEED on untouched anonymous memory has no effect", arguments: sizes)
  func willNeed(pages: Int) throws {
    let space = SimulatedPageSpace()
    let length = UInt(pages) * page
    let p = try space.map(at: nil, length: length, protection: .readWrite, flags: [])
    #expect(try minorFaults(space) { try space.advise(p, length: length, .willNeed) } == 0)
    #expect(try minorFaults(space) { try writeEach(space, p, pages: pages) } == UInt64(pages))
  }

  @Test(
    "l4: mlock over [RW N/4][NONE N/4][RW N/2]: ENOMEM, only the first part populated",
    arguments: [16, 1024])
  func mlockStopsAtNone(pages: Int) throws {
    let space = SimulatedPageSpace()
    let p = try space.map(at: nil, length: UInt(pages) * page, protection: .readWrite, flags: [])
    let quarter = pages / 4
    try space.protect(p + UInt(quarter) * page, length: UInt(quarter) * page, to: .none)
    let (lockError, lockFaults) = measured(space) {
      errorOf { () throws(PageError) in try space.lock(p, length: UInt(pages) * page) }
    }
    #expect(lockError == .outOfMemory)
    #expect(lockFaults == UInt64(quarter))
    #expect(space.memoryMap.filter { $0.flags.contains(.locked) }.count == 3)
    #expect(try minorFaults(space) { try writeEach(space, p, pages: quarter) } == 0)
    #expect(
      try minorFaults(space) {
        try writeEach(space, p + UInt(2 * quarter) * page, pages: pages / 2)
      } == UInt64(pages / 2))
  }

  @Test(
    "m: munmap then mmap the same size: same address, N faults; MAP_FIXED over written: 0 then N zeros",
    arguments: sizes)
  func remap(pages: Int) throws {
    let space = SimulatedPageSpace()
    let length = UInt(pages) * page
    let p = try space.map(at: nil, length: length, protection: .readWrite, flags: [])
    try writeEach(space, p, pages: pages)
    try space.unmap(p, length: length)
    let q = try space.map(at: nil, length: length, protection: .readWrite, flags: [])
    #expect(q == p)
    #expect(try minorFaults(space) { try writeEach(space, q, pages: pages) } == UInt64(pages))
    #expect(
      try minorFaults(space) { try space.map(fixed: q, length: length, protection: .readWrite) }
        == 0)
    do {
      let (bytes, faults) = try measured(space) { try readEach(space, q, pages: pages) }
      #expect(bytes.allSatisfy { $0 == 0 })
      #expect(faults == UInt64(pages))
    }
  }

  @Test("h: fork, copy-on-write: the first write by either side to a pre-fork page costs one fault")
  func forkCopyOnWrite() throws {
    let parent = SimulatedPageSpace()
    let p = try parent.map(at: nil, length: 80 * page, protection: .readWrite, flags: [])
    try writeEach(parent, p, pages: 64, value: 3)
    let untouched = p + 64 * page
    let child = parent.fork()
    do {
      let (bytes, faults) = try measured(child) { try readEach(child, p, pages: 64) }
      #expect(bytes.allSatisfy { $0 == 3 })
      #expect(faults == 0)
    }
    #expect(try minorFaults(child) { try writeEach(child, p, pages: 16, value: 4) } == 16)
    #expect(try minorFaults(child) { try writeEach(child, p, pages: 16, value: 4) } == 0)
    #expect(
      try minorFaults(child) { try writeEach(child, p + 16 * page, pages: 48, value: 4) } == 48)
    #expect(try minorFaults(child) { try writeEach(child, untouched, pages: 16) } == 16)
    #expect(child.counters.copyOnWriteCopies == 64)
    child.exit()
    do {
      let (bytes, faults) = try measured(parent) { try readEach(parent, p, pages: 64) }
      #expect(bytes.allSatisfy { $0 == 3 })
      #expect(faults == 0)
    }
    #expect(try minorFaults(parent) { try writeEach(parent, p, pages: 64) } == 64)
    #expect(parent.counters.copyOnWriteCopies == 0)  // the child's copies left the parent sole owner
    #expect(try minorFaults(parent) { try writeEach(parent, p, pages: 64) } == 0)
    #expect(try minorFaults(parent) { try writeEach(parent, untouched, pages: 16) } == 16)
  }

  @Test("h: parent writes 64 while the child lives; then the child writes the same 64")
  func forkBothWrite() throws {
    let parent = SimulatedPageSpace()
    let p = try parent.map(at: nil, length: 64 * page, protection: .readWrite, flags: [])
    try writeEach(parent, p, pages: 64, value: 1)
    let child = parent.fork()
    #expect(try minorFaults(parent) { try writeEach(parent, p, pages: 64, value: 2) } == 64)
    #expect(try minorFaults(child) { try writeEach(child, p, pages: 64, value: 3) } == 64)
    #expect(try readEach(parent, p, pages: 64).allSatisfy { $0 == 2 })
    #expect(try readEach(child, p, pages: 64).allSatisfy { $0 == 3 })
  }

  @Test("noise floor: mmap and munmap of untouched pages cost nothing")
  func noiseFloor() throws {
    let space = SimulatedPageSpace()
    #expect(
      try minorFaults(space) {
        let p = try space.map(at: nil, length: 64 * page, protection: .readWrite, flags: [])
        try space.unmap(p, length: 64 * page)
      } == 0)
  }
}
