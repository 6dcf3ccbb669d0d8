// MARK: - Deterministic randomness

/// SplitMix64 (Steele, Lea, Flood): a tiny seeded generator whose output is identical on every
/// platform and Swift version (unlike `SystemRandomNumberGenerator` or any unspecified algorithm), so
/// a seeded sequence replays identically on the real and the simulated side. Shared by the workload
/// runner and the differential harness.
public struct SplitMix64: RandomNumberGenerator, Sendable {
  public private(set) var state: UInt64

  public init(seed: UInt64) { state = seed }

  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// A value in `0..<bound`, by rejection sampling (so every platform gets the same value; the
  /// standard library's `random(in:using:)` does not promise its algorithm).
  public mutating func below(_ bound: Int) -> Int {
    precondition(bound > 0)
    let limit = UInt64(bound)
    let zone = UInt64.max - UInt64.max % limit
    while true {
      let value = next()
      if value < zone { return Int(value % limit) }
    }
  }

  /// True with probability `numerator / denominator`.
  public mutating func chance(_ numerator: Int, in denominator: Int) -> Bool {
    below(denominator) < numerator
  }

  /// One of `choices`, uniformly.
  public mutating func pick<T>(_ choices: [T]) -> T { choices[below(choices.count)] }
}
