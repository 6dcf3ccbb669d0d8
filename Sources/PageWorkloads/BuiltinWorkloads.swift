/// The built-in workloads: every anonymous-memory row of kernel-semantics.md §1 (fault counts,
/// N = 1, 16, 1024 where the table has them) and §6 (VMA merges and splits), written in the workload
/// language. `heappatrol faults` with no argument runs them all, real against simulated.
public enum BuiltinWorkloads {
  public struct Entry: Sendable {
    public var name: String
    /// The kernel-semantics row it reproduces.
    public var row: String
    public var text: String
  }

  /// Every built-in workload, in a stable order.
  public static let all: [Entry] = faultRows + vmaRows + heapRows + fileRows

  public static func named(_ name: String) -> Entry? { all.first { $0.name == name } }

  public static func workload(_ entry: Entry) throws(WorkloadParseError) -> Workload {
    try Workload(name: entry.name, text: entry.text)
  }

  static let sizes = [1, 16, 1024]

  /// §1: fault counts of anonymous memory, one workload per row and N.
  static let faultRows: [Entry] =
    sizes.flatMap { n -> [Entry] in
      var rows: [Entry] = [
        Entry(
          name: "noise-floor-\(n)", row: "§1 noise floor",
          text: """
            map a \(n)p rw
            write a
            step "empty step"
            write a 0..0
            """),
        Entry(
          name: "a-write-\(n)", row: "§1 a",
          text: """
            map a \(n)p rw
            step "write each page"
            write a
            step "write again"
            write a
            """),
        Entry(
          name: "b-read-then-write-\(n)", row: "§1 b",
          text: """
            map a \(n)p rw
            step "read each page (zero page)"
            read a
            step "read again"
            read a
            step "then write each page"
            write a
            """),
        Entry(
          name: "c-populate-\(n)", row: "§1 c",
          text: """
            step "mmap(RW, MAP_POPULATE) call"
            map a \(n)p rw populate
            step "then write each page"
            write a
            step "mmap(PROT_READ, MAP_POPULATE) call"
            map b \(n)p r populate
            step "then read"
            read b
            """),
        Entry(
          name: "d-dontneed-\(n)", row: "§1 d",
          text: """
            map a \(n)p rw
            write a
            step "madvise(DONTNEED) call"
            advise a dontneed
            step "then write each page"
            write a
            step "DONTNEED again, then read each page"
            advise a dontneed
            read a
            """),
        Entry(
          name: "e-free-\(n)", row: "§1 e",
          text: """
            map a \(n)p rw
            write a
            step "madvise(FREE) call"
            advise a free
            step "then read"
            read a
            step "then write"
            write a
            """),
        Entry(
          name: "f-protect-round-trip-\(n)", row: "§1 f, f2",
          text: """
            map a \(n)p rw
            write a
            step "mprotect(NONE) call; mprotect(RW) call"
            protect a none
            protect a rw
            step "after NONE->RW: read, then write"
            read a
            write a
            step "read-only pages, NONE->RW, then write"
            map b \(n)p rw
            read b
            protect b none
            protect b rw
            write b
            step "written, READ->RW, then write"
            protect a r
            protect a rw
            write a
            step "mmap(PROT_NONE) untouched, ->RW, then write"
            map c \(n)p none
            protect c rw
            write c
            """),
        Entry(
          name: "g-read-only-\(n)", row: "§1 g",
          text: """
            map a \(n)p rw
            write a
            step "mprotect(READ) call on written pages, then read"
            protect a r
            read a
            step "mmap(PROT_READ) untouched, read each page"
            map b \(n)p r
            read b
            """),
        Entry(
          name: "i-shared-\(n)", row: "§1 i",
          text: """
            map a \(n)p rw shared
            step "shared anon: write each page"
            write a
            step "write again"
            write a
            step "shared anon: read each page first"
            map b \(n)p rw shared
            read b
            step "then write"
            write b
            """),
        Entry(
          name: "i2-shared-fault-around-\(n)", row: "§1 i2",
          text: """
            reserve arena 4m align 2m
            map s \(n)p rw shared at arena+5p
            write s
            step "DONTNEED call"
            advise s dontneed
            step "then read (fault-around, start at VA index 5 mod 16)"
            read s
            step "DONTNEED, then write"
            advise s dontneed
            write s
            """),
        Entry(
          name: "l-mlock-\(n)", row: "§1 l",
          text: """
            map a \(n)p rw
            step "mlock call on untouched RW"
            lock a
            step "then write"
            write a
            step "setup: write b"
            map b \(n)p rw
            write b
            step "mlock on already-written pages"
            lock b
            step "mmap(MAP_LOCKED) call"
            map c \(n)p rw locked
            """),
        Entry(
          name: "l2-populate-advice-\(n)", row: "§1 l2",
          text: """
            step "mlock on untouched PROT_NONE (ENOMEM)"
            map n \(n)p none
            lock n
            step "madvise(POPULATE_WRITE) call"
            map a \(n)p rw
            advise a populate_write
            step "then write"
            write a
            step "madvise(POPULATE_READ) call"
            map b \(n)p rw
            advise b populate_read
            """),
        Entry(
          name: "l3-willneed-\(n)", row: "§1 l3",
          text: """
            map a \(n)p rw
            step "madvise(WILLNEED) on untouched anon"
            advise a willneed
            step "then write"
            write a
            """),
        Entry(
          name: "m-remap-\(n)", row: "§1 m",
          text: """
            map a \(n)p rw
            write a
            step "munmap, mmap the same size again, write"
            unmap a
            map a \(n)p rw
            write a
            step "mmap(MAP_FIXED) over a written range: call"
            map b \(n)p rw at a
            step "then write"
            write b
            """),
      ]
      if n >= 16 {
        let quarter = n / 4
        rows.append(
          Entry(
            name: "l4-mlock-over-hole-\(n)", row: "§1 l4",
            text: """
              reserve arena \(n)p
              map a \(quarter)p rw at arena
              map hole \(quarter)p none at arena+\(quarter)p
              map b \(n / 2)p rw at arena+\(2 * quarter)p
              step "mlock over [RW N/4][NONE N/4][RW N/2] (ENOMEM)"
              lock arena
              step "write the first N/4"
              write a
              step "write the last N/2"
              write b
              """))
      }
      return rows
    } + [
      Entry(
        name: "h-fork-cow", row: "§1 h",
        text: """
          map a 64p rw
          map u 16p rw
          write a
          fork child
          in child {
            step "child: read all 64 pre-fork pages"
            read a
            step "child: write 16 pre-fork pages"
            write a 0..16
            step "child: write the same 16 again"
            write a 0..16
            step "child: write the 48 remaining pre-fork pages"
            write a 16..64
            step "child: write the 16 pages untouched before the fork"
            write u
          }
          exit child
          step "parent, after the child exited: read the 64 pages"
          read a
          step "parent: write all 64 pre-fork pages"
          write a
          step "parent: write them again"
          write a
          step "parent: write the 16 untouched pages"
          write u
          fork second
          step "parent, child alive: write 64"
          write a
          in second {
            step "child writes the same 64"
            write a
          }
          exit second
          """)
    ]

  /// §6: VMA merges and splits, measured inside a hole of a known place (a reservation, unmapped).
  static let vmaRows: [Entry] = [
    Entry(
      name: "vma-alternate-protections", row: "§6 9 pages, 1/3/5/7 NONE",
      text: """
        map a 9p rw
        step "untouched: pages 1, 3, 5, 7 -> NONE"
        protect a 1 none
        protect a 3 none
        protect a 5 none
        protect a 7 none
        step "restore RW"
        protect a rw
        step "touched: pages 1, 3, 5, 7 -> NONE"
        write a
        protect a 1 none
        protect a 3 none
        protect a 5 none
        protect a 7 none
        step "restore RW"
        protect a rw
        """),
    Entry(
      name: "vma-adjacent-mmaps", row: "§6 mmap A touched, then B above or below",
      text: """
        reserve hole 32p
        unmap hole
        map a 4p rw at hole+12p
        write a
        step "B directly above touched A"
        map b 4p rw at hole+16p
        step "touch B"
        write b
        step "C directly below A"
        map c 4p rw at hole+8p
        """),
    Entry(
      name: "vma-fill-gap-one-touched", row: "§6 A gap B, C fills the gap: A touched, B untouched",
      text: """
        reserve hole 32p
        unmap hole
        map a 4p rw at hole+4p
        map b 4p rw at hole+12p
        write a
        step "A touched, B untouched, C fills the gap"
        map c 4p rw at hole+8p
        """),
    Entry(
      name: "vma-fill-gap-both-touched", row: "§6 A gap B, C fills the gap: both touched",
      text: """
        reserve hole 32p
        unmap hole
        map a 4p rw at hole+4p
        map b 4p rw at hole+12p
        write a
        write b
        step "both touched, C fills the gap"
        map c 4p rw at hole+8p
        """),
    Entry(
      name: "vma-read-only-neighbour", row: "§6 B PROT_READ read only, B -> RW",
      text: """
        reserve hole 32p
        unmap hole
        map a 4p rw at hole+4p
        write a
        map b 4p r at hole+8p
        read b
        step "A touched RW, B read-only (zero pages)"
        step "B -> RW"
        protect b rw
        """),
    Entry(
      name: "vma-none-neighbour", row: "§6 B PROT_NONE untouched, B -> RW",
      text: """
        reserve hole 32p
        unmap hole
        map a 4p rw at hole+4p
        write a
        map b 4p none at hole+8p
        step "A touched RW, B PROT_NONE untouched"
        step "B -> RW"
        protect b rw
        """),
    Entry(
      name: "vma-none-next-to-none", row: "§6 mmap(NONE) next to mmap(NONE)",
      text: """
        reserve hole 32p
        unmap hole
        map a 4p none at hole+4p
        step "mmap(NONE) next to mmap(NONE)"
        map b 4p none at hole+8p
        """),
    Entry(
      name: "vma-untouched-rw-to-none", row: "§6 untouched RW -> NONE, next to NONE",
      text: """
        reserve hole 32p
        unmap hole
        map c 4p rw at hole+4p
        map d 4p none at hole+8p
        step "untouched RW -> NONE, next to NONE"
        protect c none
        """),
    Entry(
      name: "vma-touched-rw-to-none", row: "§6 touched RW -> NONE, next to NONE, either order",
      text: """
        reserve hole 64p
        unmap hole
        map e 4p rw at hole+4p
        write e
        map f 4p none at hole+8p
        step "touched RW -> NONE, next to NONE"
        protect e none
        step "setup: NONE first, then RW touched"
        unmap e
        unmap f
        map g 4p none at hole+20p
        map h 4p rw at hole+24p
        write h
        step "touched RW -> NONE, NONE created first"
        protect h none
        """),
    Entry(
      name: "vma-two-step-protect", row: "§6 touched RW made NONE in two calls",
      text: """
        map a 8p rw
        write a
        step "NONE in two mprotect calls"
        protect a 0..4 none
        protect a 4..8 none
        """),
    Entry(
      name: "vma-none-to-rw-next-to-rw", row: "§6 mmap(NONE) -> RW next to mmap(RW)",
      text: """
        reserve hole 32p
        unmap hole
        map a 4p rw at hole+4p
        map b 4p none at hole+8p
        step "NONE next to RW"
        step "-> RW"
        protect b rw
        """),
    Entry(
      name: "vma-noreserve-split", row: "§6 RW next to RW MAP_NORESERVE",
      text: """
        reserve hole 32p
        unmap hole
        map a 4p rw at hole+4p
        step "RW next to RW MAP_NORESERVE"
        map b 4p rw noreserve at hole+8p
        """),
    Entry(
      name: "vma-stack-split", row: "§6 RW next to RW MAP_STACK",
      text: """
        reserve hole 32p
        unmap hole
        map a 4p rw at hole+4p
        step "RW next to RW MAP_STACK"
        map b 4p rw stack at hole+8p
        """),
    Entry(
      name: "vma-shared-split", row: "§6 shared anon next to shared anon",
      text: """
        reserve hole 32p
        unmap hole
        map a 4p rw shared at hole+4p
        step "shared anon next to shared anon"
        map b 4p rw shared at hole+8p
        """),
    Entry(
      name: "vma-advice-splits", row: "§4/§6 middle 2 of 8: flag advice splits, the rest does not",
      text: """
        map a 8p rw
        write a
        step "DONTNEED, WILLNEED, COLD on the middle 2 pages"
        advise a 3..5 dontneed
        advise a 3..5 willneed
        advise a 3..5 cold
        step "DONTDUMP on the middle 2 pages"
        advise a 3..5 dontdump
        step "DODUMP back"
        advise a 3..5 dodump
        step "mlock the middle 2; munlock"
        lock a 3..5
        unlock a 3..5
        """),
    Entry(
      name: "vma-guard-markers", row: "§6 GUARD_INSTALL on pages 1, 3, 5, 7 of 9",
      text: """
        map a 9p rw
        write a
        step "guard pages 1, 3, 5, 7"
        advise a 1 guard_install
        advise a 3 guard_install
        advise a 5 guard_install
        advise a 7 guard_install
        step "remove them, read (zero)"
        advise a guard_remove
        read a 1
        """),
  ]

  /// The allocator's own churn: a seeded malloc/free sequence through GuardedHeap (module
  /// HeapPatrol), once per guard mechanism, on real memory and on the simulator.
  static let heapRows: [Entry] = ["markers", "mprotect", "canary"].map { mechanism in
    Entry(
      name: "heap-churn-\(mechanism)", row: "GuardedHeap churn, \(mechanism) guards",
      text: """
        heap h \(mechanism)
        step "2000 malloc/free, up to 64 live blocks of 1..16384 bytes"
        churn h 2000 seed 7 max 16k live 64
        step "2000 more (seed 8), quarantine filling"
        churn h 2000 seed 8 max 16k live 64
        step "500 large: 1..1 MiB, up to 8 live"
        churn h 500 seed 9 max 1m live 8
        """)
  }

  /// §2: file fault-around, simulated only — the real counts depend on the page cache's folio
  /// layout (one 256-page folio gives 1 fault where order-0 pages give 16), which the workload
  /// cannot control, so these steps are never compared (`sim-only`).
  static let fileRows: [Entry] = [
    Entry(
      name: "file-fault-around", row: "§2 1 MiB file, shared R (simulated only)",
      text: """
        step "hot order-0 page cache: read each page"
        file hot 1m r shared hot
        read hot
        step "cold cache: read each page"
        file cold 1m r shared cold
        read cold
        step "private RW on a hot file: write each page"
        file copy 1m rw private hot
        write copy
        """)
  ]
}
