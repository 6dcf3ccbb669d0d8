// The knobs of the guarded heap. Plain values only: the preload builds one from HEAPPATROL_OPTIONS before
// the first malloc returns, and the heap copies it into mmap'd memory.

/// How the guarded heap lays out, protects and recycles blocks. Every field has the default the preload
/// uses when no option is given; "reporting" maps the option strings (`HEAPPATROL_OPTIONS`) onto it.
public struct HeapConfiguration: Sendable, Hashable {
  /// Where a block sits in its page run.
  public enum Placement: UInt8, Sendable, Hashable, CaseIterable {
    /// The block ends against the guard page that follows its run (start aligned down to the effective
    /// alignment; the slack between the block's end and the guard is canary). Catches overflows at once.
    case upper
    /// The block starts right after the guard page before its run; the tail slack up to the end of the
    /// last page is canary. Catches underflows at once and overflows by the canary (or, past the slack,
    /// by the guard).
    case lower
  }

  /// Which alignment a block gets when the caller does not ask for more (`malloc`, `calloc`, `new`).
  /// A requested alignment (`memalign`, `posix_memalign`, `aligned_alloc`) is always honoured on top.
  public enum AlignmentPolicy: Sendable, Hashable {
    /// Every block starts at a multiple of the value (a power of two). `fixed(16)` is what glibc gives
    /// (`alignof(max_align_t)`): safe for every program, but in `upper` placement a block whose size is
    /// not a multiple of 16 leaves up to 15 bytes of slack before the guard; an overflow into that slack
    /// is found by the canary (on free, realloc, `check()`, exit), not at the faulting instruction.
    /// `fixed(1)` ends every block exactly at the guard (the classic Electric Fence `EF_ALIGNMENT=0`),
    /// but hands out unaligned pointers, which some programs do not tolerate.
    case fixed(UInt)
    /// The largest power of two dividing the size, capped at `maximum` (a power of two, 16 by default).
    /// This is the strictest alignment any C object of that size can need (an object's size is a
    /// multiple of its alignment), so it is safe for conforming programs, and it ends most odd-sized
    /// blocks exactly at the guard: a 1-byte overflow of a 13-byte block faults at the instruction.
    /// Because the alignment divides the size, an `upper` block always ends exactly at its guard (no
    /// slack) unless the caller asked for a larger alignment. This is GWP-ASan's choice. The cost: a
    /// program that assumes 16-byte alignment for an odd-sized buffer (SSE on a 24-byte struct with
    /// over-aligned members it did not declare) may misbehave.
    case natural(maximum: UInt)

    public static let natural = AlignmentPolicy.natural(maximum: 16)
  }

  /// How blocks are separated from each other, in order of preference.
  public enum GuardMechanism: UInt8, Sendable, Hashable, CaseIterable {
    /// Guard markers if the kernel has them, else mprotect within the VMA budget, then canaries.
    case automatic
    /// `MADV_GUARD_INSTALL` guard pages: no VMA per block. Falls back to mprotect where unsupported.
    case markers
    /// `mprotect(PROT_NONE)` guard pages: 2 VMAs per live block, within the VMA budget, then canaries.
    case mprotect
    /// No page protection at all: red zones of canary bytes around every block.
    case canary
  }

  /// Deterministic allocation failures for testing a program's out-of-memory paths (mpatrol's
  /// FAILFREQ / FAILSEED). A failed allocation returns nil with an out-of-memory finding.
  public struct FaultInjection: Sendable, Hashable {
    /// Fail every Nth allocation (counting every allocation of the heap from 1); 0 = never.
    public var failEvery: UInt64
    /// Fail each allocation with this probability (0 = never, 1 = always), drawn from a generator
    /// seeded with `seed`: the same seed gives the same failures in the same allocation sequence.
    public var probability: Double
    /// The seed of the random failures (mpatrol FAILSEED). 0 is replaced by a fixed non-zero constant.
    public var seed: UInt64

    public init(failEvery: UInt64 = 0, probability: Double = 0, seed: UInt64 = 0) {
      self.failEvery = failEvery
      self.probability = probability
      self.seed = seed
    }

    public static let none = FaultInjection()
    public var isEnabled: Bool { failEvery != 0 || probability > 0 }
  }

  /// Upper (default) or lower placement.
  public var placement: Placement = .upper
  /// The default alignment policy (see `AlignmentPolicy`).
  public var alignment: AlignmentPolicy = .natural
  /// The preferred guard mechanism.
  public var guardMechanism: GuardMechanism = .automatic
  /// VMAs left for the program when the mprotect budget is computed: nil = max(1024, 25% of
  /// `vm.max_map_count`). The budget is `maxMapCount - vmaCount(at start) - headroom`.
  public var vmaHeadroom: Int? = nil
  /// An extra cap on the VMAs the heap may create with mprotect (nil = only the headroom rule).
  /// Mostly for tests that want the canary fallback without creating 65,000 mappings.
  public var vmaBudgetLimit: Int? = nil
  /// Quarantine bound in bytes (requested sizes of the freed blocks it holds).
  public var quarantineMaxBytes: UInt = 256 << 20
  /// Quarantine bound in blocks.
  public var quarantineMaxCount: Int = 65536
  /// Keep freed blocks in quarantine forever (mpatrol NOFREE): use-after-free is caught for the whole
  /// run, at the cost of address space (never of RSS: quarantined pages are released).
  public var noFree: Bool = false
  /// Fill for new memory (malloc, new, memalign; not calloc, which is zero): mpatrol's ALLOCBYTE.
  /// nil leaves it as the pages give it (zero for fresh pages).
  public var allocationFill: UInt8? = 0xFF
  /// Blocks larger than this get the allocation fill only in their first and last `allocationFillLimit
  /// / 2` bytes: filling a 3 GiB buffer would make all of it resident. nil = fill everything.
  public var allocationFillLimit: UInt? = 1 << 20
  /// Fill for freed memory that stays accessible (canary-mode blocks in quarantine): mpatrol's FREEBYTE.
  /// Guarded blocks' pages become inaccessible on free, so their contents do not matter.
  public var freeFill: UInt8? = 0x55
  /// The canary pattern byte of slack and red zones (mpatrol OFLOWBYTE).
  public var canaryByte: UInt8 = 0xAA
  /// On each side of a guarded block, the canary covers only this many bytes of the page slack next
  /// to the block (nil = all of it): by default the cache line before the block. Filling and checking
  /// up to a page of slack per block cost 12% of the full-guard churn benchmark (the slack is cold by
  /// the time the block is freed), 256 bytes still 5%. Underflows past the bound land in slack nobody
  /// checks (as in Electric Fence, DUMA and GWP-ASan, which have no canary at all) or on the guard
  /// page of the run below.
  public var slackCanaryLimit: UInt? = 64
  /// The red zone before and after a canary-mode block (no page protection), in bytes; rounded up to a
  /// multiple of 16 (mpatrol OFLOWSIZE).
  public var redZoneSize: UInt = 32
  /// Total requested bytes of live blocks beyond which allocations fail with out-of-memory (mpatrol
  /// LIMIT). nil = no limit.
  public var heapLimit: UInt? = nil
  /// Deterministic allocation failures.
  public var faultInjection: FaultInjection = .none
  /// The address space reserved at a time for ordinary blocks (MAP_NORESERVE: costs no memory). Blocks
  /// of at least 1/16 of it get their own reservation. Rounded to whole pages.
  public var reservationSize: UInt = 64 << 30
  /// How many freed blocks' records are kept after they leave quarantine, so that a late use of a
  /// released block can still be named; past this the oldest records are recycled.
  public var rememberedReleasedBlocks: Int = 65536
  /// The maximum number of block records (live + quarantined + remembered). Each takes 80 bytes of
  /// MAP_NORESERVE memory, paid only when used.
  public var maximumRecords: Int = 1 << 24

  public init() {}

  /// The default configuration.
  public static let `default` = HeapConfiguration()
}
