import PageSpace

// The contract between the heap core (which detects) and the reporting side (which renders).
// Plain values only: findings are built and rendered inside the SIGSEGV handler and the malloc path,
// so nothing here may allocate (no String, no Array, no class).

/// Every kind of bug HeapPatrol reports: one closed set, named as in the reports.
public enum FindingKind: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
  case heapBufferOverflow
  case heapBufferUnderflow
  case useAfterFree
  case doubleFree
  case invalidFree
  case interiorFree
  case allocDeallocMismatch
  case canaryCorruption
  case badAlignment
  case sizeOverflow
  case outOfMemory
  case leak
  case wildAccess
  /// A memory operation (memcpy, strcpy, ...) running past a block's bounds (mpatrol RNGOVF/STROVF).
  case memoryOperationOverflow
  /// Overlapping source and destination of memcpy/strcpy (mpatrol RNGOVL).
  case memcpyParamOverlap

  /// The name used in text and JSON reports.
  public var name: StaticString {
    switch self {
    case .heapBufferOverflow: "heap-buffer-overflow"
    case .heapBufferUnderflow: "heap-buffer-underflow"
    case .useAfterFree: "use-after-free"
    case .doubleFree: "double-free"
    case .invalidFree: "invalid-free"
    case .interiorFree: "interior-free"
    case .allocDeallocMismatch: "alloc-dealloc-mismatch"
    case .canaryCorruption: "canary-corruption"
    case .badAlignment: "bad-alignment"
    case .sizeOverflow: "size-overflow"
    case .outOfMemory: "out-of-memory"
    case .leak: "leak"
    case .wildAccess: "wild-access"
    case .memoryOperationOverflow: "memory-operation-overflow"
    case .memcpyParamOverlap: "memcpy-param-overlap"
    }
  }

  /// mpatrol's diagnostic code for the same condition, shown as an alias in text reports.
  public var mpatrolCode: StaticString {
    switch self {
    case .heapBufferOverflow: "ILLMEM"
    case .heapBufferUnderflow: "ILLMEM"
    case .useAfterFree: "FRDOPN"
    case .doubleFree: "PRVFRD"
    case .invalidFree: "NOTALL"
    case .interiorFree: "MISMAT"
    case .allocDeallocMismatch: "INCOMP"
    case .canaryCorruption: "ALLOVF"
    case .badAlignment: "BADALN"
    case .sizeOverflow: "RNGOVF"
    case .outOfMemory: "OUTMEM"
    case .leak: "SHOWUNFREED"
    case .wildAccess: "ILLMEM"
    case .memoryOperationOverflow: "RNGOVF"
    case .memcpyParamOverlap: "RNGOVL"
    }
  }

  public var description: String { name.description }
}

/// The allocation or deallocation function a block came from or went to.
public enum AllocationAPI: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
  case malloc, calloc, realloc, reallocarray, memalign, posixMemalign, alignedAlloc, valloc, pvalloc
  case free
  case new, newArray, delete, deleteArray
  case swift  // the Swift API (allocate/deallocate)
  case strdup  // strdup/strndup and friends (allocate with malloc semantics)

  public var name: StaticString {
    switch self {
    case .malloc: "malloc"
    case .calloc: "calloc"
    case .realloc: "realloc"
    case .reallocarray: "reallocarray"
    case .memalign: "memalign"
    case .posixMemalign: "posix_memalign"
    case .alignedAlloc: "aligned_alloc"
    case .valloc: "valloc"
    case .pvalloc: "pvalloc"
    case .free: "free"
    case .new: "operator new"
    case .newArray: "operator new[]"
    case .delete: "operator delete"
    case .deleteArray: "operator delete[]"
    case .swift: "Swift allocate"
    case .strdup: "strdup"
    }
  }

  /// The family that must release a block: malloc-family blocks with free, new with delete,
  /// new[] with delete[]. A release from another family is an alloc-dealloc-mismatch.
  public enum Family: UInt8, Sendable { case malloc, scalarNew, arrayNew, swift }

  public var family: Family {
    switch self {
    case .new, .delete: .scalarNew
    case .newArray, .deleteArray: .arrayNew
    case .swift: .swift
    default: .malloc
    }
  }

  public var description: String { name.description }
}

/// A handle into the stack depot (0 = no stack recorded).
public struct StackID: RawRepresentable, Sendable, Hashable {
  public var rawValue: UInt32
  @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
  public static let none = StackID(rawValue: 0)
}

/// The state of a block in the block table.
public enum BlockState: UInt8, Sendable, Hashable {
  case live
  /// Freed and in quarantine: its pages are inaccessible; accesses are use-after-free.
  case quarantined
  /// Freed, out of quarantine, its slot possibly reused: only the record remains.
  case released
}

/// What a report says about a block: a copy of its block-table record.
public struct BlockSnapshot: Sendable, Hashable {
  /// Allocation sequence number (1 for the first allocation of the process).
  public var index: UInt64
  /// The address handed to the program.
  public var address: UInt
  /// The size the program asked for.
  public var size: UInt
  public var alignment: UInt
  public var api: AllocationAPI
  public var state: BlockState
  public var allocationThread: Int32
  public var freeThread: Int32
  public var allocationStack: StackID
  public var freeStack: StackID
  /// The API that freed it (when freed).
  public var freeAPI: AllocationAPI?

  public init(
    index: UInt64, address: UInt, size: UInt, alignment: UInt, api: AllocationAPI,
    state: BlockState,
    allocationThread: Int32, freeThread: Int32 = 0, allocationStack: StackID,
    freeStack: StackID = .none, freeAPI: AllocationAPI? = nil
  ) {
    self.index = index
    self.address = address
    self.size = size
    self.alignment = alignment
    self.api = api
    self.state = state
    self.allocationThread = allocationThread
    self.freeThread = freeThread
    self.allocationStack = allocationStack
    self.freeStack = freeStack
    self.freeAPI = freeAPI
  }
}

/// Where an address lies relative to a block.
public enum BlockRelation: UInt8, Sendable, Hashable {
  /// `distance` bytes past the end (0 = the first byte after the block).
  case pastEnd
  /// `distance` bytes before the start (1 = the byte just before it).
  case beforeStart
  /// `distance` bytes from the start, inside the block.
  case inside
}

/// The C library function a memory-operation check was made for (the preload's checked memcpy,
/// strcpy, ...): named in the report of what it found.
public enum MemoryOperation: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
  case memcpy, memmove, memset, memcmp, memchr, strlen, strcpy, strncpy, strcat, strncat
  case strdup, strndup, bzero, explicitBzero, wmemcpy, wcscpy
  // The fortified forms -D_FORTIFY_SOURCE compiles the calls to.
  case memcpyChk, memmoveChk, memsetChk, explicitBzeroChk, strcpyChk, strncpyChk, strcatChk
  case strncatChk, wmemcpyChk, wcscpyChk

  /// The function's C name.
  public var name: StaticString {
    switch self {
    case .memcpy: "memcpy"
    case .memmove: "memmove"
    case .memset: "memset"
    case .memcmp: "memcmp"
    case .memchr: "memchr"
    case .strlen: "strlen"
    case .strcpy: "strcpy"
    case .strncpy: "strncpy"
    case .strcat: "strcat"
    case .strncat: "strncat"
    case .strdup: "strdup"
    case .strndup: "strndup"
    case .bzero: "bzero"
    case .explicitBzero: "explicit_bzero"
    case .wmemcpy: "wmemcpy"
    case .wcscpy: "wcscpy"
    case .memcpyChk: "__memcpy_chk"
    case .memmoveChk: "__memmove_chk"
    case .memsetChk: "__memset_chk"
    case .explicitBzeroChk: "__explicit_bzero_chk"
    case .strcpyChk: "__strcpy_chk"
    case .strncpyChk: "__strncpy_chk"
    case .strcatChk: "__strcat_chk"
    case .strncatChk: "__strncat_chk"
    case .wmemcpyChk: "__wmemcpy_chk"
    case .wcscpyChk: "__wcscpy_chk"
    }
  }

  public var description: String { name.description }
}

/// One diagnosed bug.
public struct Finding: Sendable, Hashable {
  public var kind: FindingKind
  /// READ/WRITE for faults and memory operations; nil for frees, leaks and the like.
  public var access: MemoryAccess?
  /// The faulting or offending address (for frees: the pointer passed).
  public var address: UInt
  /// The block concerned, if any.
  public var block: BlockSnapshot?
  public var relation: BlockRelation
  /// See `BlockRelation`.
  public var distance: UInt
  /// The thread that did it.
  public var thread: Int32
  /// Where it happened (the faulting context's stack, or the free/check call's).
  public var accessStack: StackID
  /// For canary corruption: the address of the first bad byte. For leaks: the number of blocks.
  public var detail: UInt
  /// For leaks: total bytes. For size-overflow/out-of-memory: the requested size.
  public var bytes: UInt
  /// For findings of the checked memory operations: the operation, and the range it was about to
  /// touch (`operationAddress`, `operationBytes`; for an overlap: the destination and the length).
  public var operation: MemoryOperation?
  public var operationAddress: UInt
  public var operationBytes: UInt

  public init(
    kind: FindingKind, access: MemoryAccess? = nil, address: UInt, block: BlockSnapshot? = nil,
    relation: BlockRelation = .inside, distance: UInt = 0, thread: Int32,
    accessStack: StackID = .none,
    detail: UInt = 0, bytes: UInt = 0, operation: MemoryOperation? = nil,
    operationAddress: UInt = 0, operationBytes: UInt = 0
  ) {
    self.kind = kind
    self.access = access
    self.address = address
    self.block = block
    self.relation = relation
    self.distance = distance
    self.thread = thread
    self.accessStack = accessStack
    self.detail = detail
    self.bytes = bytes
    self.operation = operation
    self.operationAddress = operationAddress
    self.operationBytes = operationBytes
  }

  /// The signed offset of `address` from the block start (the JSON `offset` field).
  public var offset: Int {
    guard let block else { return 0 }
    return Int(bitPattern: address &- block.address)
  }
}
