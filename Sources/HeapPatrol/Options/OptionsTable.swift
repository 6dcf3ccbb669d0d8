// The one table of HeapPatrol's options: names, types, defaults and help. The parser
// (RuntimeOptions+Parsing.swift) and `heappatrol options` both read it, so they cannot disagree.
//
// Everything the parser touches is StaticString and switch statements, never an Array or a String, so
// that parsing `HEAPPATROL_OPTIONS` inside the first `malloc` of a process allocates nothing.

/// The type of an option's value, as `heappatrol options` shows it.
public enum OptionType: UInt8, Sendable, Hashable, CustomStringConvertible {
  /// `1`/`0`, `true`/`false`, `yes`/`no`.
  case bool
  /// A decimal (or `0x` hex) integer.
  case int
  /// A byte count with an optional `k`/`m`/`g`/`t` suffix (powers of 1024).
  case size
  /// 0...255, decimal or `0x` hex (some accept `none`).
  case byte
  /// Free text.
  case string
  /// One of the words listed in the help.
  case `enum`

  public var description: String {
    switch self {
    case .bool: "bool"
    case .int: "int"
    case .size: "size"
    case .byte: "byte"
    case .string: "string"
    case .enum: "enum"
    }
  }
}

/// One row of the options table.
public struct OptionSpec: Sendable, Hashable {
  public var name: String
  public var type: OptionType
  public var defaultValue: String
  public var help: String

  public init(name: String, type: OptionType, defaultValue: String, help: String) {
    self.name = name
    self.type = type
    self.defaultValue = defaultValue
    self.help = help
  }
}

/// Every option HeapPatrol understands, in the order `heappatrol options` prints them.
public enum OptionsTable {
  public static let all: [OptionSpec] = OptionKey.allKeys.map { key in
    OptionSpec(
      name: key.name.description, type: key.type, defaultValue: key.defaultValue.description,
      help: key.help.description)
  }

  /// The spec named `name`, if any.
  public static func spec(named name: String) -> OptionSpec? {
    all.first { $0.name == name }
  }
}

/// The options as an allocation-free closed set. Raw values are dense from 0 so the parser can walk
/// them without an array.
public enum OptionKey: UInt8, Sendable, Hashable {
  // The heap (HeapConfiguration).
  case placement
  case align
  case guardMechanism
  case vmaHeadroom
  case vmaBudget
  case quarantineBytes
  case quarantineCount
  case noFree
  case allocByte
  case allocByteLimit
  case freeByte
  case canaryByte
  case slackCanary
  case redZone
  case limit
  case failEvery
  case failRate
  case failSeed
  case reservation
  case rememberedBlocks
  case maxRecords
  // Reporting and the process.
  case log
  case logFD
  case textReport
  case detectLeaks
  case showReachable
  case checkOnExit
  case fatalExitCode
  case haltOnError
  case leakExitCode
  case reportSizeOverflow
  case reportOutOfMemory
  case stackDepth
  case sample
  case sampleSeed
  case verbose
  // Memory-operation checks and allocation tracing (docs/depth.md).
  case checkMemoryOperations
  case trace

  /// The number of keys (raw values are 0..<count).
  public static let count = Int(OptionKey.trace.rawValue) + 1

  /// All keys in table order (allocates: not for the malloc path).
  public static var allKeys: [OptionKey] {
    (0..<UInt8(count)).map { OptionKey(rawValue: $0)! }
  }

  /// The name used in `HEAPPATROL_OPTIONS`.
  public var name: StaticString {
    switch self {
    case .placement: "placement"
    case .align: "align"
    case .guardMechanism: "guard"
    case .vmaHeadroom: "vma_headroom"
    case .vmaBudget: "vma_budget"
    case .quarantineBytes: "quarantine_bytes"
    case .quarantineCount: "quarantine_count"
    case .noFree: "nofree"
    case .allocByte: "alloc_byte"
    case .allocByteLimit: "alloc_byte_limit"
    case .freeByte: "free_byte"
    case .canaryByte: "canary_byte"
    case .slackCanary: "slack_canary"
    case .redZone: "redzone"
    case .limit: "limit"
    case .failEvery: "fail_every"
    case .failRate: "fail_rate"
    case .failSeed: "fail_seed"
    case .reservation: "reservation"
    case .rememberedBlocks: "remembered_blocks"
    case .maxRecords: "max_records"
    case .log: "log"
    case .logFD: "log_fd"
    case .textReport: "text_report"
    case .detectLeaks: "detect_leaks"
    case .showReachable: "show_reachable"
    case .checkOnExit: "check_on_exit"
    case .fatalExitCode: "fatal_exitcode"
    case .haltOnError: "halt_on_error"
    case .leakExitCode: "leak_exitcode"
    case .reportSizeOverflow: "report_size_overflow"
    case .reportOutOfMemory: "report_oom"
    case .stackDepth: "stack_depth"
    case .sample: "sample"
    case .sampleSeed: "sample_seed"
    case .verbose: "verbose"
    case .checkMemoryOperations: "check_memops"
    case .trace: "trace"
    }
  }

  public var type: OptionType {
    switch self {
    case .placement, .guardMechanism: .enum
    case .align, .failRate, .log, .trace: .string
    case .vmaHeadroom, .vmaBudget, .quarantineCount, .failEvery, .failSeed, .rememberedBlocks,
      .maxRecords, .logFD, .fatalExitCode, .leakExitCode, .stackDepth, .sample, .sampleSeed:
      .int
    case .quarantineBytes, .redZone, .limit, .reservation, .allocByteLimit, .slackCanary: .size
    case .allocByte, .freeByte, .canaryByte: .byte
    case .noFree, .textReport, .detectLeaks, .showReachable, .checkOnExit, .haltOnError,
      .reportSizeOverflow, .reportOutOfMemory, .verbose, .checkMemoryOperations:
      .bool
    }
  }

  /// The default, written as the parser accepts it (matches `RuntimeOptions()`; a test checks that).
  public var defaultValue: StaticString {
    switch self {
    case .placement: "upper"
    case .align: "16"
    case .guardMechanism: "auto"
    case .vmaHeadroom: "auto"
    case .vmaBudget: "0"
    case .quarantineBytes: "256m"
    case .quarantineCount: "65536"
    case .noFree: "0"
    case .allocByte: "0xff"
    case .allocByteLimit: "1m"
    case .freeByte: "0x55"
    case .canaryByte: "0xaa"
    case .slackCanary: "64"
    case .redZone: "32"
    case .limit: "0"
    case .failEvery: "0"
    case .failRate: "0"
    case .failSeed: "0"
    case .reservation: "64g"
    case .rememberedBlocks: "65536"
    case .maxRecords: "16777216"
    case .log: ""
    case .logFD: "-1"
    case .textReport: "1"
    case .detectLeaks: "1"
    case .showReachable: "0"
    case .checkOnExit: "1"
    case .fatalExitCode: "0"
    case .haltOnError: "0"
    case .leakExitCode: "0"
    case .reportSizeOverflow: "0"
    case .reportOutOfMemory: "1"
    case .stackDepth: "32"
    case .sample: "1"
    case .sampleSeed: "0"
    case .verbose: "0"
    case .checkMemoryOperations: "1"
    case .trace: ""
    }
  }

  public var help: StaticString {
    switch self {
    case .placement:
      "upper: a block ends against the guard page after it (overflows fault at once); lower: a block starts right after the guard page before it (underflows fault at once, overflows are caught by the tail canary)"
    case .align:
      "default alignment of malloc/new blocks: a power of two (16 = glibc's guarantee; 1 = byte-exact end against the guard, unaligned pointers), or 'natural' (largest power of two dividing the size, at most 16: more overflows fault at once, but programs assuming 16 break, CPython among them)"
    case .guardMechanism:
      "auto: guard markers (MADV_GUARD_INSTALL, no VMA per block) where the kernel has them, else mprotect within the VMA budget, else canaries; markers; mprotect; canary: red zones only, no page protection"
    case .vmaHeadroom:
      "VMAs left to the program when the mprotect budget is computed; auto = max(1024, 25% of vm.max_map_count)"
    case .vmaBudget:
      "an extra cap on the VMAs the heap may create with mprotect (0 = only the headroom rule); past it blocks get canary red zones"
    case .quarantineBytes:
      "freed blocks stay inaccessible (use-after-free, double free caught) until the quarantine holds more than this many bytes"
    case .quarantineCount: "... or more than this many blocks (FIFO)"
    case .noFree:
      "keep every freed block in quarantine forever (mpatrol NOFREE): costs address space, not memory"
    case .allocByte: "fill byte for new malloc/new memory (mpatrol ALLOCBYTE); none = leave it"
    case .allocByteLimit:
      "blocks larger than this get alloc_byte only in their first and last half of it (filling a 3 GB buffer would make it all resident); 0 = fill everything"
    case .freeByte:
      "fill byte for freed memory that stays accessible (mpatrol FREEBYTE); none = leave it"
    case .canaryByte:
      "pattern byte of the slack between a block and its guard, and of red zones (mpatrol OFLOWBYTE)"
    case .slackCanary:
      "canary bytes on each side of a guarded block, in the page slack next to it; checked on free and realloc; 0 = the whole slack (up to a page: slower)"
    case .redZone:
      "red zone before and after a block without page protection, in bytes (mpatrol OFLOWSIZE)"
    case .limit:
      "fail allocations once live blocks total more than this many bytes (mpatrol LIMIT); 0 = no limit"
    case .failEvery: "fail every Nth allocation (mpatrol FAILFREQ); 0 = never"
    case .failRate: "fail each allocation with this probability, a decimal between 0 and 1"
    case .failSeed:
      "seed of the random failures of fail_rate (mpatrol FAILSEED): same seed, same failures"
    case .reservation:
      "address space reserved at a time for blocks (MAP_NORESERVE, costs no memory)"
    case .rememberedBlocks:
      "records of released blocks kept so late accesses still name their block"
    case .maxRecords: "the maximum number of block records (live + quarantined + remembered)"
    case .log:
      "append JSON lines (one per finding) to this file; %p is replaced by the process id; empty = none"
    case .logFD: "append JSON lines to this already open descriptor; -1 = none"
    case .textReport: "write human-readable reports to stderr"
    case .detectLeaks:
      "at exit, report live blocks no longer reachable from globals, stacks or reachable blocks"
    case .showReachable: "at exit, also list the blocks still reachable (not leaks)"
    case .checkOnExit: "at exit, check the canaries of every live block"
    case .fatalExitCode:
      "how the process ends after a bad access: 0 = re-raise the signal with its default action (as a crash, core dump compatible); N = exit with status N"
    case .haltOnError:
      "end the process (as fatal_exitcode says, with SIGABRT for non-faults) after a non-fatal finding (invalid/double free, mismatch, canary corruption); 0 = report and continue, ignoring the bad free"
    case .leakExitCode:
      "exit with this status when leaks were reported (0 = keep the program's status)"
    case .reportSizeOverflow:
      "report calloc/reallocarray size overflows (they always return NULL with ENOMEM)"
    case .reportOutOfMemory:
      "report allocations that fail (limit, fail_every, fail_rate, no address space)"
    case .stackDepth: "frames recorded per allocation, free and access stack (1...64)"
    case .sample:
      "guard 1 in N allocations (reported with stacks; the rest go to glibc's malloc untouched); 1 = guard every allocation; 5000 costs ~GWP-ASan's overhead (docs/performance.md)"
    case .sampleSeed:
      "seed of the sampling draws (0 = a different choice every run): a fixed seed picks the same allocations of each thread in every run"
    case .verbose: "print the effective configuration to stderr at start"
    case .checkMemoryOperations:
      "check memcpy, memset, strcpy, strlen & co. against the bounds of the heap blocks they touch before they run (mpatrol RNGOVF/RNGOVL); 0 = straight to glibc"
    case .trace:
      "record every allocation and free in this binary file for heappatrol trace/profile/map/mleak; %p is replaced by the process id; empty = none"
    }
  }

  /// The key whose name is exactly `bytes`, if any.
  public static func named(_ bytes: UnsafeBufferPointer<UInt8>) -> OptionKey? {
    var raw: UInt8 = 0
    while Int(raw) < count {
      let key = OptionKey(rawValue: raw)!
      if bytesEqual(bytes, key.name) { return key }
      raw += 1
    }
    return nil
  }
}

/// Byte-wise equality of a buffer and a static string, allocation-free.
@inline(__always)
func bytesEqual(_ bytes: UnsafeBufferPointer<UInt8>, _ text: StaticString) -> Bool {
  guard text.hasPointerRepresentation, bytes.count == text.utf8CodeUnitCount else { return false }
  let start = text.utf8Start
  for index in 0..<bytes.count where bytes[index] != start[index] { return false }
  return true
}
