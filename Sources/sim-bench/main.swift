// sim-bench: throughput of the page simulator (release build: scripts/sim-bench.sh).
// Prints one line per measurement: accesses or operations per second.

import PageSimulator
import PageSpace

let page: UInt = 4096

func measure(_ name: String, operations: Int, _ body: () throws -> Void) rethrows {
  let clock = ContinuousClock()
  let start = clock.now
  try body()
  let elapsed = clock.now - start
  let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
  let rate = Double(operations) / seconds
  let text =
    rate >= 1e6 ? "\((rate / 1e5).rounded() / 10) M/s" : "\((rate / 1e2).rounded() / 10) k/s"
  let padded = name + String(repeating: " ", count: max(0, 44 - name.count))
  print("\(padded) \(text)   (\(operations) in \(seconds) s)")
}

let scale = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 1 : 1

do {
  let space = SimulatedPageSpace()
  let hot = try space.map(at: nil, length: 32 * page, protection: .readWrite, flags: [])
  for index in 0..<32 { try space.store(1, at: hot + UInt(index) * page) }
  let accesses = 50_000_000 * scale
  var sum = 0
  try measure("TLB-hit loads (32 pages)", operations: accesses) {
    for index in 0..<accesses {
      sum &+= Int(try space.load(hot + UInt(index & 31) * page + UInt(index & 4095)))
    }
  }
  try measure("TLB-hit stores (32 pages)", operations: accesses) {
    for index in 0..<accesses {
      try space.store(UInt8(truncatingIfNeeded: index), at: hot + UInt(index & 31) * page)
    }
  }
  if sum == 42 { print("") }

  let resident = try space.map(at: nil, length: 65536 * page, protection: .readWrite, flags: [])
  let faults = 65536
  try measure("write faults (zero-fill, minor)", operations: faults) {
    for index in 0..<faults { try space.store(1, at: resident + UInt(index) * page) }
  }
  let walks = 10_000_000 * scale
  try measure("page-table walks (TLB misses, no fault)", operations: walks) {
    for index in 0..<walks {
      sum &+= Int(try space.load(resident + UInt((index &* 97) & 65535) * page))
    }
  }
  let zero = try space.map(at: nil, length: 65536 * page, protection: .read, flags: [])
  try measure("read faults (zero page)", operations: faults) {
    for index in 0..<faults { sum &+= Int(try space.load(zero + UInt(index) * page)) }
  }
  let many = 1_000_000 * scale
  let big = try space.map(
    at: nil, length: UInt(many) * page, protection: .readWrite, flags: .noReserve)
  try measure("write faults, 1M fresh pages", operations: many) {
    for index in 0..<many { try space.store(1, at: big + UInt(index) * page) }
  }
  try space.unmap(big, length: UInt(many) * page)

  let pairs = 200_000
  let target = try space.map(at: nil, length: 64 * page, protection: .readWrite, flags: [])
  try measure("mprotect NONE+RW pairs, middle page", operations: pairs) {
    for _ in 0..<pairs {
      try space.protect(target + 32 * page, length: page, to: .none)
      try space.protect(target + 32 * page, length: page, to: .readWrite)
    }
  }
  try measure("mmap+munmap pairs, 1 page", operations: pairs) {
    for _ in 0..<pairs {
      let p = try space.map(at: nil, length: page, protection: .readWrite, flags: [])
      try space.unmap(p, length: page)
    }
  }
}

for policy in ReplacementPolicy.allCases where policy != .optimal {
  let machine = SimulatedMachine(
    MachineConfiguration(frames: 1024, swapSlots: 4096, policy: policy))
  let space = SimulatedPageSpace(machine: machine)
  let p = try space.map(at: nil, length: 1100 * page, protection: .readWrite, flags: [])
  let accesses = 200_000
  try measure("thrashing, 1100 pages in 1024 frames, \(policy)", operations: accesses) {
    for index in 0..<accesses { try space.store(1, at: p + UInt(index % 1100) * page) }
  }
  print("  \(space.counters)")
}
