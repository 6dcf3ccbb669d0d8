import PageSpace
import Testing

/// kernel-semantics.md §6: `vm.max_map_count` (L). mmap may reach L + 1; splits need a count below
/// L (mprotect and munmap: ENOMEM, madvise: EAGAIN); guard markers never need a VMA. Run in a child
/// process, which has the VMA count to itself.
@Suite struct MapCountLimitTests {
  @Test func limitRowsAtTheRealLimit() async {
    await #expect(processExitsWith: .success) {
      let limit = space.maxMapCount
      // Subjects, fenced so that they are VMAs of their own: a 3-page and a 4-page touched RW VMA.
      let three = try! FencedRegion(pages: 3)
      let four = try! FencedRegion(pages: 4)
      try! writeEach(three.base, 3)
      try! writeEach(four.base, 4)

      // Filler: RW pages carved into a PROT_NONE reservation, every other page, +2 VMAs each.
      let fillerPages = limit + 16
      let filler = try! space.map(
        at: nil, length: UInt(fillerPages) * pageSize, protection: .none, flags: .noReserve)
      var count = space.vmaCount
      var nextOddPage = 1
      var extraShared: [UInt] = []
      func fill(to target: Int) {
        while count + 2 <= target {
          try! space.protect(
            filler + UInt(nextOddPage) * pageSize, length: pageSize, to: .readWrite)
          nextOddPage += 2
          count += 2
        }
        if count < target {  // one more: a shared page never merges
          extraShared.append(
            try! space.map(at: nil, length: pageSize, protection: .readWrite, flags: .shared))
          count += 1
        }
        count = space.vmaCount
        require(count == target, "filled to \(count), wanted \(target)")
      }
      func expectCount(_ expected: Int, _ what: String, line: Int = #line) {
        let actual = space.vmaCount
        require(actual == expected, "\(what): count \(actual), expected \(expected)", line: line)
      }

      fill(to: limit)
      let middle = three.page(1)
      let results = [
        outcome { () throws(PageError) in try space.protect(middle, length: pageSize, to: .read) },
        outcome { () throws(PageError) in try space.unmap(middle, length: pageSize) },
        outcome { () throws(PageError) in
          try space.map(fixed: middle, length: pageSize, protection: .none)
        },
        outcome { () throws(PageError) in try space.advise(middle, length: pageSize, .dontDump) },
        outcome { () throws(PageError) in try space.advise(middle, length: pageSize, .dontNeed) },
      ]
      require(results == ["ENOMEM", "ENOMEM", "ENOMEM", "EAGAIN", "ok"], "splits at L: \(results)")
      expectCount(limit, "failed splits change nothing")
      if space.supportsGuardMarkers {
        let guarded = outcome { () throws(PageError) in
          try space.advise(middle, length: pageSize, .guardInstall)
        }
        require(guarded == "ok", "GUARD_INSTALL at L: \(guarded)")
        expectCount(limit, "guard markers need no VMA")
        try! space.advise(middle, length: pageSize, .guardRemove)
      }

      // A merging mprotect at L (3 VMAs -> 1), then splitting back up to L.
      let carved = filler + UInt(nextOddPage - 2) * pageSize
      try! space.protect(carved, length: pageSize, to: .none)
      expectCount(limit - 2, "merge at L")
      try! space.protect(carved, length: pageSize, to: .readWrite)
      expectCount(limit, "split back from L - 2")

      // New mappings: L -> L + 1 works, L + 1 -> L + 2 does not.
      let first = try! space.map(at: nil, length: pageSize, protection: .readWrite, flags: .shared)
      expectCount(limit + 1, "mmap reaches L + 1")
      let second = outcome { () throws(PageError) in
        _ = try space.map(at: nil, length: pageSize, protection: .readWrite, flags: .shared)
      }
      require(second == "ENOMEM", "mmap beyond L + 1: \(second)")
      try! space.unmap(first, length: pageSize)

      // Partial failure at L - 1: page 1 of a 4-page VMA needs two splits; one happens, then ENOMEM.
      try! space.unmap(carved, length: pageSize)
      expectCount(limit - 1, "unmapping a carved page")
      let partial = outcome { () throws(PageError) in
        try space.protect(four.page(1), length: pageSize, to: .read)
      }
      require(partial == "ENOMEM", "two splits at L - 1: \(partial)")
      expectCount(limit, "one split was left behind")
      require(four.vmaCount == 2, "split as [page 0][pages 1-3]")
      require(try! four.protections() == ["rw-", "rw-", "rw-", "rw-"], "protections unchanged")

      // Trimming a VMA at one end needs no split: fine at L.
      try! space.unmap(three.base, length: pageSize)
      expectCount(limit, "trim at L")
      try! space.unmap(filler, length: UInt(fillerPages) * pageSize)
      for page in extraShared { try! space.unmap(page, length: pageSize) }
    }
  }
}
