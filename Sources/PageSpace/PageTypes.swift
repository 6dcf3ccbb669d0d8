// Typed values for the PageSpace seam. They carry Linux's numeric values so that a
// simulator can be given exactly what the kernel is given, including invalid bits.

/// Page protection bits, with the values of `PROT_READ`, `PROT_WRITE`, `PROT_EXEC`.
/// Any other bit is passed through so that invalid protections reach the page space (Linux: EINVAL).
public struct PageProtection: OptionSet, Sendable, Hashable, CustomStringConvertible {
  public let rawValue: Int32
  @inlinable public init(rawValue: Int32) { self.rawValue = rawValue }

  public static let read = PageProtection(rawValue: 0x1)
  public static let write = PageProtection(rawValue: 0x2)
  public static let exec = PageProtection(rawValue: 0x4)
  /// `PROT_GROWSDOWN`: valid only on stack-like mappings.
  public static let growsDown = PageProtection(rawValue: 0x0100_0000)
  public static let none: PageProtection = []
  public static let readWrite: PageProtection = [.read, .write]

  /// `rwx`-style text as in `/proc/self/maps`.
  public var description: String {
    (contains(.read) ? "r" : "-") + (contains(.write) ? "w" : "-") + (contains(.exec) ? "x" : "-")
  }
}

/// mmap flags that matter to page semantics, with the Linux values. Anonymous memory is implied:
/// every mapping made through a PageSpace is `MAP_ANONYMOUS`; without `.shared` it is `MAP_PRIVATE`.
public struct MapFlags: OptionSet, Sendable, Hashable {
  public let rawValue: Int32
  @inlinable public init(rawValue: Int32) { self.rawValue = rawValue }

  public static let shared = MapFlags(rawValue: 0x01)  // MAP_SHARED
  public static let fixed = MapFlags(rawValue: 0x10)  // MAP_FIXED
  public static let growsDown = MapFlags(rawValue: 0x0100)  // MAP_GROWSDOWN
  public static let locked = MapFlags(rawValue: 0x2000)  // MAP_LOCKED
  public static let noReserve = MapFlags(rawValue: 0x4000)  // MAP_NORESERVE
  public static let populate = MapFlags(rawValue: 0x8000)  // MAP_POPULATE
  public static let stack = MapFlags(rawValue: 0x20000)  // MAP_STACK
  public static let fixedNoReplace = MapFlags(rawValue: 0x100000)  // MAP_FIXED_NOREPLACE
}

/// madvise advice, with the Linux values. A struct, not an enum, so that an unknown value
/// (advice 12345 -> EINVAL) can be expressed and tested.
public struct PageAdvice: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
  public let rawValue: Int32
  @inlinable public init(rawValue: Int32) { self.rawValue = rawValue }

  public static let normal = PageAdvice(rawValue: 0)
  public static let random = PageAdvice(rawValue: 1)
  public static let sequential = PageAdvice(rawValue: 2)
  public static let willNeed = PageAdvice(rawValue: 3)
  public static let dontNeed = PageAdvice(rawValue: 4)
  public static let free = PageAdvice(rawValue: 8)
  public static let remove = PageAdvice(rawValue: 9)
  public static let dontFork = PageAdvice(rawValue: 10)
  public static let doFork = PageAdvice(rawValue: 11)
  public static let mergeable = PageAdvice(rawValue: 12)
  public static let unmergeable = PageAdvice(rawValue: 13)
  public static let hugePage = PageAdvice(rawValue: 14)
  public static let noHugePage = PageAdvice(rawValue: 15)
  public static let dontDump = PageAdvice(rawValue: 16)
  public static let doDump = PageAdvice(rawValue: 17)
  public static let wipeOnFork = PageAdvice(rawValue: 18)
  public static let keepOnFork = PageAdvice(rawValue: 19)
  public static let cold = PageAdvice(rawValue: 20)
  public static let pageOut = PageAdvice(rawValue: 21)
  public static let populateRead = PageAdvice(rawValue: 22)
  public static let populateWrite = PageAdvice(rawValue: 23)
  /// Linux 6.13+: guard pages that create no VMA; access gives SIGSEGV with SEGV_MAPERR.
  public static let guardInstall = PageAdvice(rawValue: 102)
  public static let guardRemove = PageAdvice(rawValue: 103)

  public var description: String {
    switch self {
    case .normal: "normal"
    case .random: "random"
    case .sequential: "sequential"
    case .willNeed: "willneed"
    case .dontNeed: "dontneed"
    case .free: "free"
    case .remove: "remove"
    case .dontFork: "dontfork"
    case .doFork: "dofork"
    case .mergeable: "mergeable"
    case .unmergeable: "unmergeable"
    case .hugePage: "hugepage"
    case .noHugePage: "nohugepage"
    case .dontDump: "dontdump"
    case .doDump: "dodump"
    case .wipeOnFork: "wipeonfork"
    case .keepOnFork: "keeponfork"
    case .cold: "cold"
    case .pageOut: "pageout"
    case .populateRead: "populate_read"
    case .populateWrite: "populate_write"
    case .guardInstall: "guard_install"
    case .guardRemove: "guard_remove"
    default: "advice(\(rawValue))"
    }
  }
}

/// A failed page operation: the errno the kernel returned (or would return).
public struct PageError: Error, Sendable, Hashable, CustomStringConvertible {
  public let errno: Int32
  @inlinable public init(errno: Int32) { self.errno = errno }

  public static let invalidArgument = PageError(errno: 22)  // EINVAL
  public static let outOfMemory = PageError(errno: 12)  // ENOMEM
  public static let tryAgain = PageError(errno: 11)  // EAGAIN
  public static let exists = PageError(errno: 17)  // EEXIST
  public static let badAddress = PageError(errno: 14)  // EFAULT
  public static let notPermitted = PageError(errno: 1)  // EPERM
  public static let accessDenied = PageError(errno: 13)  // EACCES
  /// The page space does not offer this operation (e.g. guard markers on a kernel before 6.13).
  public static let unsupported = PageError(errno: 95)  // EOPNOTSUPP

  public var name: String {
    switch errno {
    case 22: "EINVAL"
    case 12: "ENOMEM"
    case 11: "EAGAIN"
    case 17: "EEXIST"
    case 14: "EFAULT"
    case 1: "EPERM"
    case 13: "EACCES"
    case 95: "EOPNOTSUPP"
    default: "errno \(errno)"
    }
  }
  public var description: String { name }
}

/// The kind of a memory access.
public enum MemoryAccess: UInt8, Sendable, Hashable, CustomStringConvertible {
  case read = 0
  case write = 1
  case execute = 2
  public var description: String {
    switch self {
    case .read: "READ"
    case .write: "WRITE"
    case .execute: "EXECUTE"
    }
  }
}

/// Why an access faulted, with the `si_code` values of SIGSEGV.
public enum FaultCode: Int32, Sendable, Hashable, CustomStringConvertible {
  /// No mapping at the address (holes, guard markers): `SEGV_MAPERR`.
  case mapError = 1
  /// A mapping exists but its protection forbids the access: `SEGV_ACCERR`.
  case accessError = 2
  /// Non-canonical address (#GP): `SI_KERNEL`, and `si_addr` is 0.
  case kernel = 128
  public var description: String {
    switch self {
    case .mapError: "SEGV_MAPERR"
    case .accessError: "SEGV_ACCERR"
    case .kernel: "SI_KERNEL"
    }
  }
}

/// An invalid access as the program would see it: SIGSEGV with `si_addr` and `si_code`.
public struct PageFault: Error, Sendable, Hashable, CustomStringConvertible {
  /// `si_addr`: where the CPU faulted (the guard page base for a straddling access; 0 for SI_KERNEL).
  public var address: UInt
  public var access: MemoryAccess
  public var code: FaultCode
  @inlinable public init(address: UInt, access: MemoryAccess, code: FaultCode) {
    self.address = address
    self.access = access
    self.code = code
  }
  public var description: String {
    "\(access) fault at 0x\(String(address, radix: 16)) (\(code))"
  }
}

/// Cumulative page-fault counts, like `ru_minflt` / `ru_majflt`.
public struct FaultCounts: Sendable, Hashable {
  public var minor: UInt64
  public var major: UInt64
  @inlinable public init(minor: UInt64 = 0, major: UInt64 = 0) {
    self.minor = minor
    self.major = major
  }
  @inlinable public static func - (lhs: FaultCounts, rhs: FaultCounts) -> FaultCounts {
    FaultCounts(minor: lhs.minor &- rhs.minor, major: lhs.major &- rhs.major)
  }
}

/// A half-open range of addresses `[start, end)`.
public struct AddressRange: Sendable, Hashable, CustomStringConvertible {
  public var start: UInt
  public var end: UInt
  @inlinable public init(start: UInt, end: UInt) {
    self.start = start
    self.end = end
  }
  @inlinable public init(start: UInt, length: UInt) {
    self.start = start
    self.end = start &+ length
  }
  @inlinable public var length: UInt { end &- start }
  @inlinable public var isEmpty: Bool { end <= start }
  @inlinable public func contains(_ address: UInt) -> Bool { address >= start && address < end }
  @inlinable public func overlaps(_ other: AddressRange) -> Bool {
    start < other.end && other.start < end
  }
  public var description: String {
    "0x\(String(start, radix: 16))-0x\(String(end, radix: 16))"
  }
}
