import CShims
import Foundation
import HeapPatrol
import PageSimulator
import PageSpace
import Synchronization
import Testing

/// Warnings seen by the budget tests' handler (a C function cannot capture).
private let budgetWarnings = Atomic<Int>(0)
private let lastWarningKind = Atomic<UInt8>(0)

@Suite("Heap scale: VMA budget, a million blocks, throughput")
struct HeapScaleTests {
  /// The mprotect path with a small budget: the first blocks get guard pages (2 VMAs each), the rest
  /// red zones; one warning; the heap's VMAs never exceed the budget; red-zone overflows are caught.
  // Serialized: the warning handler is a C function, so both cases count into the same globals
  // (run in parallel, one case saw the other's warning).
  @Test(.serialized, arguments: [HeapSpaceKind.realMprotect, .simulatedMprotect])
  func budgetFallbackToCanaries(_ kind: HeapSpaceKind) throws {
    var configuration = testConfiguration(mechanism: .mprotect)
    configuration.vmaBudgetLimit = 100
    try withHeap(kind, configuration) { heap in
      budgetWarnings.store(0, ordering: .relaxed)
      heap.setWarningHandler { kind, _ in
        budgetWarnings.add(1, ordering: .relaxed)
        lastWarningKind.store(kind, ordering: .relaxed)
      }
      #expect(heap.statistics.vmaBudget == 100 && heap.statistics.mechanism == .mprotect)
      var blocks: [UInt] = []
      for _ in 0..<200 {
        blocks.append(try heap.allocate(24))
        let vmas = heap.reservationRanges.reduce(0) { $0 + heap.vmaCount(in: $1) }
        // Each reservation is one VMA of its own, plus the splits of the guarded blocks.
        #expect(vmas <= 100 + heap.reservationRanges.count)
      }
      let statistics = heap.statistics
      #expect(statistics.vmasUsed == 100 && statistics.budgetLeft == 0)
      #expect(statistics.canaryBlocks == 150 && statistics.liveBlocks == 200)
      #expect(budgetWarnings.load(ordering: .relaxed) == 1)
      #expect(lastWarningKind.load(ordering: .relaxed) == HeapWarning.vmaBudgetExhausted.rawValue)

      // A guarded block still faults; a canary block's overflow lands in its red zone.
      #expect(heap.faultingStore(at: blocks[0] + 24)?.kind == .heapBufferOverflow)
      let canaryBlock = blocks[199]
      try heap.store(0, at: canaryBlock + 24 + 5)
      try heap.store(0, at: canaryBlock - 3)
      let findings = heap.check(stack: .none)
      #expect(findings.count == 1)
      #expect(
        findings.first?.kind == .canaryCorruption && findings.first?.block?.address == canaryBlock)
      #expect(findings.first?.detail == canaryBlock - 3 && findings.first?.relation == .beforeStart)

      // Freeing guarded blocks gives budget back: the next blocks are guarded again.
      for block in blocks[0..<10] { heap.deallocate(block, api: .free) }
      #expect(heap.statistics.budgetLeft == 20)
      let again = try heap.allocate(24)
      #expect(heap.faultingStore(at: again + 24)?.kind == .heapBufferOverflow)
    }
  }

  /// The default headroom rule, and a kernel that refuses splits before the budget says so (the
  /// program's own mappings grew): the heap falls back instead of failing.
  @Test func kernelRefusalFallsBackWithoutFailing() throws {
    let space = SimulatedPageSpace()
    space.guardMarkersAvailable = false
    space.maxMapCount = 2000
    var configuration = testConfiguration(mechanism: .automatic)
    let heap = try #require(GuardedHeap(space: space, configuration: configuration))
    #expect(heap.statistics.mechanism == .mprotect)
    #expect(heap.statistics.vmaBudget == 2000 - 0 - 1024)

    let tight = SimulatedPageSpace()
    tight.guardMarkersAvailable = false
    tight.maxMapCount = 41
    configuration.vmaHeadroom = 0
    let refusing = try #require(GuardedHeap(space: tight, configuration: configuration))
    #expect(refusing.statistics.vmaBudget == 41)
    tight.vmaBaseline = 10  // the program maps 10 VMAs of its own after the budget was computed
    for _ in 0..<60 { _ = try refusing.allocate(24) }
    #expect(tight.vmaCount <= tight.maxMapCount + 1)  // a new mapping may reach L + 1 (§6)
    #expect(refusing.statistics.liveBlocks == 60 && refusing.statistics.failedAllocations == 0)
    #expect(refusing.statistics.canaryBlocks > 40)
  }

  /// A million live blocks with guard markers cost no VMA per block. Blocks of size 0 (unique
  /// pointers, guarded runs, no page touched) keep the simulated run cheap in memory.
  @Test func aMillionLiveBlocksSimulated() throws {
    let space = SimulatedPageSpace()
    var configuration = testConfiguration()
    configuration.reservationSize = 16 << 30
    configuration.maximumRecords = 1 << 21
    let heap = try #require(GuardedHeap(space: space, configuration: configuration))
    let start = Date()
    var last: UInt = 0
    for _ in 0..<1_000_000 {
      let result = heap.allocate(byteCount: 0, alignment: 0, api: .malloc, zeroed: false)
      last = try #require(result.address)
    }
    #expect(heap.statistics.liveBlocks == 1_000_000)
    #expect(space.vmaCount <= 2)
    #expect(heap.faultingLoad(at: last)?.block?.index == 1_000_000)
    print("heap: 1,000,000 live blocks on the simulator in \(Date().timeIntervalSince(start)) s")
  }

  /// A million live one-byte blocks on real pages with guard markers, in a child process (VMA and RSS
  /// counts are process-wide): never more than a handful of VMAs, a page of RSS per block.
  @Test func aMillionLiveBlocksOnRealPages() async throws {
    guard SystemPageSpace().supportsGuardMarkers else { return }
    await #expect(processExitsWith: .success) {
      let space = SystemPageSpace()
      var configuration = HeapConfiguration()
      configuration.maximumRecords = 1 << 21
      configuration.allocationFill = nil
      guard let heap = GuardedHeap(space: space, configuration: configuration) else { exit(2) }
      let vmasBefore = space.vmaCount
      let start = cshim_monotonic_ns()
      var last: UInt = 0
      for _ in 0..<1_000_000 {
        guard let address = heap.allocate(byteCount: 1, thread: 1).address else { exit(3) }
        space.fill(address, count: 1, with: 7)
        last = address
      }
      let seconds = Double(cshim_monotonic_ns() - start) / 1e9
      let vmasAfter = space.vmaCount
      var usage = rusage()
      getrusage(RUSAGE_SELF.rawValue, &usage)
      print(
        "heap: 1,000,000 live 1-byte blocks on real pages (guard markers) in \(seconds) s; VMAs \(vmasBefore) -> \(vmasAfter); max RSS \(usage.ru_maxrss / 1024) MiB"
      )
      guard vmasAfter - vmasBefore <= 4 else { exit(4) }
      guard heap.statistics.liveBlocks == 1_000_000 else { exit(5) }
      do throws(PageFault) {
        try space.store(1, at: last + 1)
        exit(6)
      } catch {
        guard heap.view.diagnose(error)?.kind == .heapBufferOverflow else { exit(7) }
      }
      exit(0)
    }
  }

  /// allocate+free pairs per second on real pages (printed for the report); the quarantine is the
  /// default, so this includes guarding and releasing every block's page.
  @Test(arguments: [HeapSpaceKind.real, .realMprotect])
  func throughput(_ kind: HeapSpaceKind) throws {
    var configuration = testConfiguration()
    configuration.quarantineMaxCount = 1024
    try withHeap(kind, configuration) { heap in
      let pairs = 50_000
      func threadCPUTime() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
      }
      let start = cshim_monotonic_ns()
      let cpuStart = threadCPUTime()
      for index in 0..<pairs {
        let result = heap.allocate(
          byteCount: 16 + index % 64, alignment: 0, api: .malloc, zeroed: false)
        let address = try #require(result.address)
        heap.deallocate(address, api: .free)
      }
      let seconds = Double(cshim_monotonic_ns() - start) / 1e9
      let cpu = threadCPUTime() - cpuStart
      // CPU time of this thread (user + system) is the honest figure on a shared, loaded machine.
      print(
        "heap: \(kind) \(Int(Double(pairs) / cpu)) allocate+free pairs per CPU second (\(Int(cpu / Double(pairs) * 1e9)) ns CPU, \(Int(seconds / Double(pairs) * 1e9)) ns wall per pair)"
      )
      #expect(heap.statistics.liveBlocks == 0)
    }
  }

  /// The measurement behind the default alignment policy: for sizes 1...256, how often does a 1-byte
  /// overflow fault at the instruction (rather than wait for the canary check)?
  @Test func alignmentPolicyMeasurement() throws {
    func immediateCatches(_ policy: HeapConfiguration.AlignmentPolicy) throws -> Int {
      var caught = 0
      try withHeap(.simulated, testConfiguration(alignment: policy)) { heap in
        for size in 1...256 {
          let address = try heap.allocate(size)
          if heap.storeFaults(at: address + UInt(size)) { caught += 1 }
        }
      }
      return caught
    }
    let natural = try immediateCatches(.natural)
    let fixed16 = try immediateCatches(.fixed(16))
    let fixed1 = try immediateCatches(.fixed(1))
    print(
      "heap: 1-byte overflows caught at once, sizes 1...256: natural \(natural), fixed(16) \(fixed16), fixed(1) \(fixed1)"
    )
    #expect(natural == 256 && fixed1 == 256 && fixed16 == 16)
  }

  @Test func concurrentThreads() async throws {
    let heap = try #require(
      GuardedHeap(space: SystemPageSpace(), configuration: testConfiguration()))
    await withTaskGroup(of: Int.self) { group in
      for worker in 0..<4 {
        group.addTask {
          var ok = 0
          for index in 0..<500 {
            guard let address = heap.allocate(byteCount: 8 + index % 100).address else { continue }
            heap.space.fill(address, count: 1, with: UInt8(worker))
            if heap.deallocate(address).findings.isEmpty { ok += 1 }
          }
          return ok
        }
      }
      var total = 0
      for await ok in group { total += ok }
      #expect(total == 2000)
    }
    #expect(heap.statistics.liveBlocks == 0 && heap.statistics.allocations == 2000)
  }
}
