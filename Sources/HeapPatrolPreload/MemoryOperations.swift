import CShims
import HeapPatrol
import HeapPatrolPreloadExports
import PageSpace

#if canImport(Glibc)
  import Glibc
#endif

// The Swift half of the checked memory operations (HeapPatrolPreloadExports/memops.c): the
// diagnosis and the reports. The hot path (inside one live block, or not the heap's) is C reading
// the heap's tables as `HeapTableLayout` describes them; only what it cannot settle comes here.
// Nothing here allocates; no lock is taken before a finding is certain.

/// Called once from the library's start: resolves glibc's implementations, hands the C lookup the
/// layout of the heap's tables, and switches the checks on unless `check_memops=0`.
func configureMemoryOperations(_ runtime: ProcessRuntime?) {
  guard let runtime, runtime.options.checkMemoryOperations else {
    heappatrol_memops_configure(0, nil)
    return
  }
  var layout = cLayout(runtime.heap.view.tableLayout)
  heappatrol_memops_configure(1, &layout)
}

/// The C header's copy of `HeapTableLayout`, field by field.
func cLayout(_ layout: HeapTableLayout) -> heappatrol_heap_layout {
  func field(_ field: HeapTableLayout.FieldLayout) -> heappatrol_field {
    heappatrol_field(offset: field.offset, size: field.size)
  }
  var result = heappatrol_heap_layout()
  result.reservations = layout.reservations
  result.reservation_count = layout.reservationCount
  result.dedicated_records = layout.dedicatedRecords
  result.records = layout.records
  result.reservation_count_size = layout.reservationCountSize
  result.record_capacity = layout.recordCapacity
  result.page_size = Int(layout.pageSize)
  result.record_number_stride = layout.recordNumberStride
  result.record_number_size = layout.recordNumberSize
  result.reservation_stride = layout.reservationEntryStride
  result.reservation_base = field(layout.reservationBase)
  result.reservation_length = field(layout.reservationLength)
  result.reservation_page_map = field(layout.reservationPageMap)
  result.reservation_dedicated = field(layout.reservationDedicated)
  result.record_stride = layout.recordStride
  result.record_address = field(layout.recordAddress)
  result.record_size = field(layout.recordSize)
  result.record_state = field(layout.recordState)
  result.record_reservation = field(layout.recordReservation)
  result.live_state = layout.liveState
  return result
}

/// The operation the C side names (a `heappatrol_memory_operation`).
func memoryOperation(_ raw: UInt8) -> MemoryOperation? {
  // Compared as integers: a switch over the imported C enum goes through its Equatable conformance,
  // which the runtime looks up by mangled name (a lock, on a path that must not take one).
  switch UInt32(raw) {
  case HEAPPATROL_OP_MEMCPY.rawValue: .memcpy
  case HEAPPATROL_OP_MEMMOVE.rawValue: .memmove
  case HEAPPATROL_OP_MEMSET.rawValue: .memset
  case HEAPPATROL_OP_MEMCMP.rawValue: .memcmp
  case HEAPPATROL_OP_MEMCHR.rawValue: .memchr
  case HEAPPATROL_OP_STRLEN.rawValue: .strlen
  case HEAPPATROL_OP_STRCPY.rawValue: .strcpy
  case HEAPPATROL_OP_STRNCPY.rawValue: .strncpy
  case HEAPPATROL_OP_STRCAT.rawValue: .strcat
  case HEAPPATROL_OP_STRNCAT.rawValue: .strncat
  case HEAPPATROL_OP_STRDUP.rawValue: .strdup
  case HEAPPATROL_OP_STRNDUP.rawValue: .strndup
  case HEAPPATROL_OP_BZERO.rawValue: .bzero
  case HEAPPATROL_OP_EXPLICIT_BZERO.rawValue: .explicitBzero
  case HEAPPATROL_OP_WMEMCPY.rawValue: .wmemcpy
  case HEAPPATROL_OP_WCSCPY.rawValue: .wcscpy
  case HEAPPATROL_OP_MEMCPY_CHK.rawValue: .memcpyChk
  case HEAPPATROL_OP_MEMMOVE_CHK.rawValue: .memmoveChk
  case HEAPPATROL_OP_MEMSET_CHK.rawValue: .memsetChk
  case HEAPPATROL_OP_EXPLICIT_BZERO_CHK.rawValue: .explicitBzeroChk
  case HEAPPATROL_OP_STRCPY_CHK.rawValue: .strcpyChk
  case HEAPPATROL_OP_STRNCPY_CHK.rawValue: .strncpyChk
  case HEAPPATROL_OP_STRCAT_CHK.rawValue: .strcatChk
  case HEAPPATROL_OP_STRNCAT_CHK.rawValue: .strncatChk
  case HEAPPATROL_OP_WMEMCPY_CHK.rawValue: .wmemcpyChk
  case HEAPPATROL_OP_WCSCPY_CHK.rawValue: .wcscpyChk
  default: nil
  }
}

@_cdecl("heappatrol_check_range")
public func heappatrolCheckRange(
  _ start: UnsafeRawPointer?, _ length: UInt, _ access: UInt8, _ frame: UnsafeMutableRawPointer?,
  _ operation: UInt8
) {
  guard let runtime = ProcessRuntime.current else { return }
  let view = runtime.heap.view
  let address = UInt(bitPattern: start)
  guard
    let found = view.checkMemoryRange(
      start: address, length: length, access: MemoryAccess(rawValue: access) ?? .read)
  else { return }
  // HeapPatrol's own copies (a block's fill, a realloc's copy) are not the program's.
  if cshim_enter() != 0 { return }
  defer { cshim_leave() }
  var finding = found
  finding.thread = cshim_gettid()
  finding.accessStack = callStack(runtime, frame)
  finding.operation = memoryOperation(operation)
  finding.operationAddress = address
  finding.operationBytes = length
  runtime.report(finding)
  // The operation would fault inside glibc or silently corrupt the block's neighbourhood: the
  // report is the crash, as for a bad access (fatal_exitcode applies).
  runtime.endProcess(signal: SIGABRT)
}

@_cdecl("heappatrol_readable_bytes")
public func heappatrolReadableBytes(_ address: UnsafeRawPointer?) -> UInt {
  guard let runtime = ProcessRuntime.current,
    let bytes = runtime.heap.view.readableBytes(from: UInt(bitPattern: address)),
    cshim_is_inside() == 0
  else { return UInt.max }
  return bytes
}

@_cdecl("heappatrol_report_overlap")
public func heappatrolReportOverlap(
  _ destination: UnsafeRawPointer?, _ source: UnsafeRawPointer?, _ length: UInt,
  _ frame: UnsafeMutableRawPointer?, _ operation: UInt8
) {
  guard let runtime = ProcessRuntime.current, cshim_enter() == 0 else { return }
  defer { cshim_leave() }
  let destinationAddress = UInt(bitPattern: destination)
  let sourceAddress = UInt(bitPattern: source)
  // The block (if any) is the destination's; `detail` keeps the source address, `bytes` the length.
  var finding = Finding(
    kind: .memcpyParamOverlap, access: .write, address: destinationAddress,
    thread: cshim_gettid(), accessStack: callStack(runtime, frame),
    detail: sourceAddress, bytes: length, operation: memoryOperation(operation),
    operationAddress: destinationAddress, operationBytes: length)
  if let block = runtime.heap.block(containing: destinationAddress), block.state == .live {
    finding.block = block
    if destinationAddress >= block.address && destinationAddress < block.address + block.size {
      finding.relation = .inside
      finding.distance = destinationAddress - block.address
    }
  }
  var findings = FindingBuffer()
  findings.append(finding)
  runtime.report(findings)
  runtime.haltIfRequested(findings)
}

/// The program's stack at its call of a memory operation, from the exported function's `frame`.
/// Its first entry is the call instruction itself (return address - 1), not the return address:
/// symbolizers then name the call's line however they treat a report's first frame (a use-after-free
/// found here is reported like a fault, whose first frame is taken as exact).
func callStack(_ runtime: ProcessRuntime, _ frame: UnsafeMutableRawPointer?) -> StackID {
  guard let frame else { return .none }
  let record = frame.assumingMemoryBound(to: UInt.self)
  let callerFrame = record[0]
  let returnAddress = record[1]
  guard returnAddress > 1 else { return runtime.captureStack(fromFrame: frame) }
  return runtime.depot.capture(
    pc: returnAddress - 1, fp: callerFrame, depth: runtime.options.stackDepth)
}

/// For tests: compares the C lookup the checks use (heappatrol_memops_lookup) with
/// `HeapView.liveBounds` on every boundary address of the heap (`forEachBoundaryAddress`) and on
/// `extraCount` addresses the caller adds (stack, globals). Returns the number of disagreements;
/// `checked` receives the number of addresses compared. -1 when the checks (or the C lookup) are off.
@_cdecl("heappatrol_memops_verify_lookup")
public func heappatrolMemopsVerifyLookup(
  _ extra: UnsafePointer<UInt>?, _ extraCount: Int, _ checked: UnsafeMutablePointer<Int>?
) -> Int {
  guard let runtime = ProcessRuntime.current else { return -1 }
  var probeStart = 0
  var probeEnd = 0
  guard heappatrol_memops_lookup(nil, &probeStart, &probeEnd) >= 0 else { return -1 }
  let view = runtime.heap.view
  var compared = 0
  var disagreements = 0
  func compare(_ address: UInt) {
    var start: UInt = 0
    var end: UInt = 0
    let expected = view.liveBounds(of: address, start: &start, end: &end)
    var cStart = 0
    var cEnd = 0
    let found = Int(heappatrol_memops_lookup(UnsafeRawPointer(bitPattern: address), &cStart, &cEnd))
    compared += 1
    if found != expected
      || (found == 1 && (UInt(bitPattern: cStart) != start || UInt(bitPattern: cEnd) != end))
    {
      disagreements += 1
    }
  }
  view.forEachBoundaryAddress(compare)
  for index in 0..<max(extraCount, 0) { compare(extra.unsafelyUnwrapped[index]) }
  checked?.pointee = compared
  return disagreements
}
