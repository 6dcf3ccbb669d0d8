/// Counts words and remembers where each first appeared: Dictionary, Array and String churn, which is
/// what most Swift test suites do to the heap.
public struct WordIndex: Sendable {
  public private(set) var counts: [String: Int] = [:]
  public private(set) var firstPosition: [String: Int] = [:]
  public private(set) var order: [String] = []

  public init() {}

  public init(text: String) {
    self.init()
    add(text)
  }

  public mutating func add(_ text: String) {
    var position = order.count
    for word in text.lowercased().split(whereSeparator: { !$0.isLetter && !$0.isNumber }) {
      let key = String(word)
      if counts[key] == nil {
        firstPosition[key] = position
        order.append(key)
      }
      counts[key, default: 0] += 1
      position += 1
    }
  }

  /// The `limit` most frequent words, ties broken by first appearance.
  public func mostFrequent(_ limit: Int) -> [(word: String, count: Int)] {
    order.map { ($0, counts[$0]!) }
      .sorted { $0.1 != $1.1 ? $0.1 > $1.1 : firstPosition[$0.0]! < firstPosition[$1.0]! }
      .prefix(limit).map { (word: $0.0, count: $0.1) }
  }
}

/// A byte ring buffer over manually managed memory: the kind of code HeapPatrol is for.
public final class ByteRing {
  private let storage: UnsafeMutablePointer<UInt8>
  public let capacity: Int
  private var start = 0
  public private(set) var count = 0

  public init(capacity: Int) {
    precondition(capacity > 0)
    self.capacity = capacity
    storage = .allocate(capacity: capacity)
    storage.initialize(repeating: 0, count: capacity)
  }

  deinit { storage.deallocate() }

  public func push(_ byte: UInt8) {
    storage[(start + count) % capacity] = byte
    if count == capacity { start = (start + 1) % capacity } else { count += 1 }
  }

  public func pop() -> UInt8? {
    guard count > 0 else { return nil }
    defer {
      start = (start + 1) % capacity
      count -= 1
    }
    return storage[start]
  }

  /// The bug HeapPatrol should catch: writes one element past the storage.
  public func writePastTheEnd() {
    storage[capacity] = 0xEE
  }
}
