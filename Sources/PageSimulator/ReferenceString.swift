// Replacement policies at the level of a textbook: a reference string, K frames, a policy -> faults.
// Independent of the machine (which applies the same policies to real page tables); the tests check
// that the two agree.

/// The outcome of replaying a page-reference string.
public struct ReferenceStringResult: Sendable, Hashable, CustomStringConvertible {
  public var references: Int
  public var faults: Int
  public var evictions: Int
  /// For each reference, whether it faulted.
  public var faultPattern: [Bool]
  public var hits: Int { references - faults }
  public var description: String {
    "\(faults) faults, \(evictions) evictions in \(references) references"
  }
}

public enum ReferenceString {
  /// Replays `references` (page numbers) with `frames` frames under `policy`. Frames fill in order;
  /// a victim's slot takes the new page. Clock gives a loaded or referenced page one second chance;
  /// OPT evicts the page used farthest in the future (never again first; ties: lowest slot).
  public static func simulate(_ references: [Int], frames: Int, policy: ReplacementPolicy)
    -> ReferenceStringResult
  {
    precondition(frames > 0, "at least one frame")
    var slots: [Int] = []
    var loadedAt: [Int] = []
    var usedAt: [Int] = []
    var referenced: [Bool] = []
    var hand = 0
    var faults = 0
    var evictions = 0
    var pattern: [Bool] = []
    pattern.reserveCapacity(references.count)
    // OPT: for each position, the next position of the same page.
    var nextUse = [Int](repeating: Int.max, count: references.count)
    if policy == .optimal {
      var last: [Int: Int] = [:]
      for position in stride(from: references.count - 1, through: 0, by: -1) {
        nextUse[position] = last[references[position]] ?? Int.max
        last[references[position]] = position
      }
    }
    var nextUseOfSlot: [Int] = []
    for (time, pageNumber) in references.enumerated() {
      if let slot = slots.firstIndex(of: pageNumber) {
        usedAt[slot] = time
        referenced[slot] = true
        if policy == .optimal { nextUseOfSlot[slot] = nextUse[time] }
        pattern.append(false)
        continue
      }
      faults += 1
      pattern.append(true)
      if slots.count < frames {
        slots.append(pageNumber)
        loadedAt.append(time)
        usedAt.append(time)
        referenced.append(true)
        nextUseOfSlot.append(nextUse[time])
        continue
      }
      evictions += 1
      let victim: Int
      switch policy {
      case .fifo: victim = loadedAt.indices.min { loadedAt[$0] < loadedAt[$1] }!
      case .lru: victim = usedAt.indices.min { usedAt[$0] < usedAt[$1] }!
      case .optimal: victim = nextUseOfSlot.indices.max { nextUseOfSlot[$0] < nextUseOfSlot[$1] }!
      case .clock:
        while referenced[hand] {
          referenced[hand] = false
          hand = (hand + 1) % frames
        }
        victim = hand
        hand = (hand + 1) % frames
      }
      slots[victim] = pageNumber
      loadedAt[victim] = time
      usedAt[victim] = time
      referenced[victim] = true
      nextUseOfSlot[victim] = nextUse[time]
    }
    return ReferenceStringResult(
      references: references.count, faults: faults, evictions: evictions, faultPattern: pattern)
  }
}
