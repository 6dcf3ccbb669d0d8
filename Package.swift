// swift-tools-version: 6.1
import PackageDescription

// The allocator's hot paths (malloc, the SIGSEGV handler) must never touch the Swift runtime's
// generic-metadata machinery, which allocates and locks. Optimising these modules even in debug
// builds, whole-module (a per-file build cannot specialise a generic defined in another file: the
// debug preload's malloc then ran the unspecialized heap), makes the compiler specialise generics, so
// the preload path stays allocation-free; HotPathCallGraphTests checks the built library. The
// threads of -num-threads give one object file per source file, as the debug index store expects.
let optimizedEvenInDebug: [SwiftSetting] = [
  .unsafeFlags(["-O", "-wmo", "-num-threads", "2", "-cross-module-optimization"], .when(configuration: .debug))
]

// The modules the preload library is made of import only the standard library (and Synchronization):
// without the implicit _Concurrency / _StringProcessing imports, a preloaded program does not load
// libswift_Concurrency, libdispatch, libstdc++ and the regex libraries (~1 ms of start-up each run).
let standardLibraryOnly: [SwiftSetting] = [
  .unsafeFlags([
    "-Xfrontend", "-disable-implicit-concurrency-module-import",
    "-Xfrontend", "-disable-implicit-string-processing-module-import",
  ])
]

let package = Package(
  name: "HeapPatrol",
  platforms: [.macOS(.v15)],
  products: [
    .library(name: "HeapPatrol", targets: ["HeapPatrol"]),
    .library(name: "PageSimulator", targets: ["PageSimulator"]),
    .library(name: "HeapPatrolPreload", type: .dynamic, targets: ["HeapPatrolPreload"]),
    .executable(name: "heappatrol", targets: ["heappatrol"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0")
  ],
  targets: [
    // Only what Swift cannot express: syscalls with errno, signals, sigsetjmp probes, glibc forwarding.
    .target(
      name: "CShims", path: "CShims",
      // Frame pointers through the C layer too, so backtraces from the fault handler stay whole.
      cSettings: [.unsafeFlags(["-fno-omit-frame-pointer"])]),
    // The seam: one protocol with Linux page semantics, and the real implementation over CShims.
    .target(
      name: "PageSpace", dependencies: ["CShims"],
      swiftSettings: optimizedEvenInDebug + standardLibraryOnly),
    // The simulated implementation: page table, VMAs, frames, swap, fork/COW, files.
    // Runtime exclusivity checks cost more than the TLB hit itself; the simulator is single-threaded
    // per machine and its state lives in unsafe buffers, so they are switched off for this module.
    .target(
      name: "PageSimulator", dependencies: ["PageSpace"],
      swiftSettings: [
        .unsafeFlags(["-enforce-exclusivity=unchecked"]),
        // Every heap test runs on the simulator: optimise it in debug builds too.
        .unsafeFlags(["-O"], .when(configuration: .debug)),
      ]),
    // The guarded heap, generic over PageSpace: blocks, guards, quarantine, diagnose, reports.
    .target(
      name: "HeapPatrol", dependencies: ["PageSpace", "CShims"],
      swiftSettings: optimizedEvenInDebug + standardLibraryOnly),
    // malloc & co. for LD_PRELOAD or for linking into a program.
    .target(
      name: "HeapPatrolPreload", dependencies: ["HeapPatrol", "CShims", "HeapPatrolPreloadExports"],
      swiftSettings: optimizedEvenInDebug + standardLibraryOnly),
    // The exported symbols (malloc family, C++ operators) forwarding to HeapPatrolPreload's entry points.
    .target(
      name: "HeapPatrolPreloadExports", dependencies: ["CShims"],
      cSettings: [.unsafeFlags(["-O2", "-fno-omit-frame-pointer"])]),
    // A Swift program with the preload linked in (tested: same protection without LD_PRELOAD).
    .executableTarget(name: "hp-preload-linked", dependencies: ["HeapPatrolPreload"]),
    // Page workloads: the trace language, its parser and an executor over any PageSpace.
    .target(name: "PageWorkloads", dependencies: ["PageSpace", "PageSimulator", "HeapPatrol"]),
    // The CLI's logic (a library so tests can reach it) and its thin executable.
    .target(
      name: "HeapPatrolTool",
      dependencies: [
        "HeapPatrol", "PageSimulator", "PageWorkloads", "PageSpace",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),
    .executableTarget(name: "heappatrol", dependencies: ["HeapPatrolTool"]),
    // The page simulator's throughput benchmark (scripts/sim-bench.sh runs it in release mode).
    .executableTarget(name: "sim-bench", dependencies: ["PageSimulator", "PageSpace"]),
    // Deliberately buggy (and deliberately tricky but correct) programs the tests and the demo run.
    .executableTarget(
      name: "hp-fixture-c", path: "Fixtures/CFixtures",
      cSettings: [.unsafeFlags(["-fno-omit-frame-pointer", "-g", "-O0", "-fno-builtin"])]),
    .executableTarget(
      name: "hp-fixture-swift", path: "Fixtures/SwiftFixtures",
      swiftSettings: [.unsafeFlags(["-g"])]),
    .executableTarget(
      name: "hp-fixture-cxx", path: "Fixtures/CXXFixtures",
      cxxSettings: [.unsafeFlags(["-fno-omit-frame-pointer", "-g", "-O0"])]),

    // Shared by the PageSpace and PageSimulator tests: runs one random page-operation sequence against
    // two page spaces and compares them step by step.
    .target(name: "DifferentialHarness", dependencies: ["PageSpace"], path: "Tests/DifferentialHarness"),
    .testTarget(name: "PageSpaceTests", dependencies: ["PageSpace", "CShims", "DifferentialHarness"]),
    .testTarget(name: "PageSimulatorTests", dependencies: ["PageSimulator", "PageSpace", "DifferentialHarness"]),
    .testTarget(name: "HeapPatrolTests", dependencies: ["HeapPatrol", "PageSimulator", "PageSpace", "CShims"]),
    .testTarget(name: "PageWorkloadsTests", dependencies: ["PageWorkloads", "PageSimulator", "PageSpace"]),
    .testTarget(
      name: "HeapPatrolToolTests",
      dependencies: ["HeapPatrolTool", "HeapPatrol"]),
  ]
)
