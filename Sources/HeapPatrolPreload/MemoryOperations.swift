import CShims
import HeapPatrol
import HeapPatrolPreloadExports
import PageSpace

#if canImport(Glibc)
  import Glibc
#endif

// The Swift half of the checked memory operations (HeapPatrolPreloadExports/memops.c): the range
// checks against the heap's tables and the reports. Hot path: a pointer that is not the heap's
// costs the runtime lookup and a reservation range test; no lock is taken, nothing is allocated.

/// Called once from the library's start: resolves glibc's implementations and switches the checks
/// on unless `check_memops=0`.
func configureMemoryOperations(_ runtime: ProcessRuntime?) {
  var mapped: UnsafeMutableRawPointer? = nil
  // PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS: never freed.
  guard let runtime, runtime.options.checkMemoryOperations,
    cshim_mmap(nil, MemoryLayout<HeapView>.stride, 0x3, 0x02 | 0x20, -1, 0, &mapped) == 0,
    let memory = mapped
  else {
    heappatrol_memops_configure(0, nil)
    return
  }
  // The view is a few pointers into the heap's tables; a copy the C side can hand back saves the
  // runtime lookup on every operation.
  let view = memory.bindMemory(to: HeapView.self, capacity: 1)
  view.initialize(to: runtime.heap.view)
  heappatrol_memops_configure(1, UnsafeRawPointer(view))
}

@_cdecl("heappatrol_live_bounds")
public func heappatrolLiveBounds(
  _ view: UnsafeRawPointer?, _ address: UnsafeRawPointer?, _ start: UnsafeMutablePointer<Int>?,
  _ end: UnsafeMutablePointer<Int>?
) -> Int32 {
  var blockStart: UInt = 0
  var blockEnd: UInt = 0
  let found = view.unsafelyUnwrapped.assumingMemoryBound(to: HeapView.self).pointee.liveBounds(
    of: UInt(bitPattern: address), start: &blockStart, end: &blockEnd)
  if found == 1 {
    start.unsafelyUnwrapped.pointee = Int(bitPattern: blockStart)
    end.unsafelyUnwrapped.pointee = Int(bitPattern: blockEnd)
  }
  return Int32(found)
}

@_cdecl("heappatrol_check_range")
public func heappatrolCheckRange(
  _ start: UnsafeRawPointer?, _ length: UInt, _ access: UInt8, _ frame: UnsafeMutableRawPointer?
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
  _ frame: UnsafeMutableRawPointer?
) {
  guard let runtime = ProcessRuntime.current, cshim_enter() == 0 else { return }
  defer { cshim_leave() }
  let destinationAddress = UInt(bitPattern: destination)
  let sourceAddress = UInt(bitPattern: source)
  // The block (if any) is the destination's; `detail` keeps the source address, `bytes` the length.
  var finding = Finding(
    kind: .memcpyParamOverlap, access: .write, address: destinationAddress,
    thread: cshim_gettid(), accessStack: callStack(runtime, frame),
    detail: sourceAddress, bytes: length)
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
