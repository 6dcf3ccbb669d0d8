import CShims
import HeapPatrol
import PageSimulator
import PageSpace
import Testing

/// The page spaces the heap tests run on.
enum HeapSpaceKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
  /// Real pages of this process (guard markers where the kernel has them).
  case real
  /// Real pages with guard markers forced off: the mprotect path.
  case realMprotect
  /// The simulated page space (guard markers available).
  case simulated
  /// The simulated page space without guard markers: the mprotect path.
  case simulatedMprotect

  var testDescription: String { rawValue }
}

/// A small heap for tests: small reservations and tables, so that many heaps can coexist.
func testConfiguration(
  placement: HeapConfiguration.Placement = .upper,
  alignment: HeapConfiguration.AlignmentPolicy = .natural,
  mechanism: HeapConfiguration.GuardMechanism = .automatic
) -> HeapConfiguration {
  var configuration = HeapConfiguration()
  configuration.placement = placement
  configuration.alignment = alignment
  configuration.guardMechanism = mechanism
  configuration.reservationSize = 64 << 20
  configuration.maximumRecords = 1 << 14
  return configuration
}

/// Runs `body` with a heap over the page space of `kind`.
func withHeap(
  _ kind: HeapSpaceKind, _ configuration: HeapConfiguration,
  _ body: (any HeapUnderTest) throws -> Void
) throws {
  switch kind {
  case .real:
    let heap = try #require(GuardedHeap(space: SystemPageSpace(), configuration: configuration))
    try body(heap)
  case .realMprotect:
    var configuration = configuration
    if configuration.guardMechanism == .automatic { configuration.guardMechanism = .mprotect }
    let heap = try #require(
      GuardedHeap(space: SystemPageSpace(forceNoGuardMarkers: true), configuration: configuration))
    try body(heap)
  case .simulated, .simulatedMprotect:
    let space = SimulatedPageSpace()
    var configuration = configuration
    if kind == .simulatedMprotect {
      space.guardMarkersAvailable = false
      if configuration.guardMechanism == .automatic { configuration.guardMechanism = .mprotect }
    }
    let heap = try #require(GuardedHeap(space: space, configuration: configuration))
    try body(heap)
  }
}

/// The heap operations the tests use, erased over the page space (test code only: the heap itself is
/// generic and specialised).
protocol HeapUnderTest {
  var view: HeapView { get }
  var pageSize: UInt { get }
  var statistics: HeapStatistics { get }
  func allocate(byteCount: Int, alignment: Int, api: AllocationAPI, zeroed: Bool) -> HeapResult
  @discardableResult func deallocate(_ address: UInt, api: AllocationAPI) -> HeapResult
  func reallocate(_ address: UInt?, byteCount: Int, api: AllocationAPI) -> HeapResult
  func block(containing address: UInt) -> BlockSnapshot?
  func usableSize(of address: UInt) -> UInt?
  func check(stack: StackID) -> [Finding]
  var liveBlocks: [BlockSnapshot] { get }
  func load(_ address: UInt) throws(PageFault) -> UInt8
  func store(_ value: UInt8, at address: UInt) throws(PageFault)
  func vmaCount(in range: AddressRange) -> Int
  func setWarningHandler(_ handler: HeapWarningHandler?)
}

extension GuardedHeap: HeapUnderTest {
  func allocate(byteCount: Int, alignment: Int, api: AllocationAPI, zeroed: Bool) -> HeapResult {
    allocate(
      byteCount: byteCount, alignment: alignment, api: api, zeroed: zeroed, stack: .none,
      thread: nil)
  }
  @discardableResult func deallocate(_ address: UInt, api: AllocationAPI) -> HeapResult {
    deallocate(address, api: api, stack: .none, thread: nil)
  }
  func reallocate(_ address: UInt?, byteCount: Int, api: AllocationAPI) -> HeapResult {
    reallocate(address, byteCount: byteCount, api: api, stack: .none, thread: nil)
  }
  var pageSize: UInt { space.pageSize }
  func load(_ address: UInt) throws(PageFault) -> UInt8 { try space.load(address) }
  func store(_ value: UInt8, at address: UInt) throws(PageFault) {
    try space.store(value, at: address)
  }
  func vmaCount(in range: AddressRange) -> Int { space.vmaCount(in: range) }
  func setWarningHandler(_ handler: HeapWarningHandler?) { handle.setWarningHandler(handler) }
}

extension HeapUnderTest {
  func allocate(_ size: Int, alignment: Int = 0, api: AllocationAPI = .malloc, zeroed: Bool = false)
    throws -> UInt
  {
    let result = allocate(byteCount: size, alignment: alignment, api: api, zeroed: zeroed)
    return try #require(result.address, "allocation of \(size) failed: \(result.findings)")
  }

  /// Stores `value` at `address` expecting a fault; returns the diagnosed finding.
  func faultingStore(at address: UInt, sourceLocation: SourceLocation = #_sourceLocation)
    -> Finding?
  {
    do {
      try store(0x42, at: address)
      Issue.record(
        "store at 0x\(String(address, radix: 16)) did not fault", sourceLocation: sourceLocation)
      return nil
    } catch {
      return view.diagnose(error)
    }
  }

  func faultingLoad(at address: UInt, sourceLocation: SourceLocation = #_sourceLocation) -> Finding?
  {
    do {
      _ = try load(address)
      // Seen once in ~20 full parallel runs (a quarantined block's page readable): say what the
      // kernel and the heap think of the page, so the next occurrence explains itself.
      let page = address & ~(pageSize - 1)
      let kernel =
        (try? SystemPageSpace().inspect(pagesFrom: page, count: 1).first).map {
          "mapped \($0.mapped) protection \($0.protection) marker \($0.guardMarker) present \($0.present)"
        } ?? "not inspectable"
      Issue.record(
        "load at 0x\(String(address, radix: 16)) did not fault; page: \(kernel); block: \(String(describing: block(containing: address)))",
        sourceLocation: sourceLocation)
      return nil
    } catch {
      return view.diagnose(error)
    }
  }

  /// Whether a store at `address` faults (without diagnosing).
  func storeFaults(at address: UInt, value: UInt8 = 0x42) -> Bool {
    do {
      try store(value, at: address)
      return false
    } catch {
      return true
    }
  }

  var reservationRanges: [AddressRange] {
    var ranges: [AddressRange] = []
    view.forEachReservation { ranges.append($0) }
    return ranges
  }
}

extension FindingBuffer: CustomStringConvertible {
  public var description: String {
    var parts: [String] = []
    for index in 0..<count {
      let finding = self[index]
      parts.append(
        "\(finding.kind) at 0x\(String(finding.address, radix: 16)) \(finding.relation) \(finding.distance)"
      )
    }
    return "[" + parts.joined(separator: ", ") + "]"
  }
}
