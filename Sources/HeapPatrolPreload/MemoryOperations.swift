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
  heappatrol_memops_configure(runtime?.options.checkMemoryOperations == true ? 1 : 0)
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
  finding.accessStack = runtime.captureStack(fromFrame: frame)
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
    thread: cshim_gettid(), accessStack: runtime.captureStack(fromFrame: frame),
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
