import Foundation
import SampleKit
import Testing

@Suite struct WordIndexTests {
  @Test func countsWords() {
    let index = WordIndex(text: "the cat and the hat and the bat")
    #expect(index.counts["the"] == 3)
    #expect(index.mostFrequent(2).map(\.word) == ["the", "and"])
  }

  @Test(arguments: [1, 10, 1_000])
  func manyWords(repetitions: Int) {
    var index = WordIndex()
    for number in 0..<repetitions { index.add("word\(number % 97) other\(number % 13)") }
    #expect(index.counts.count == min(repetitions, 97) + min(repetitions, 13))
  }

  @Test func ringBufferWraps() {
    let ring = ByteRing(capacity: 4)
    for byte in UInt8(1)...6 { ring.push(byte) }
    #expect(ring.count == 4)
    #expect(ring.pop() == 3)
  }

  // Off unless the checker's own tests ask for it: proves a bug inside a test bundle is reported.
  @Test(.enabled(if: ProcessInfo.processInfo.environment["HEAPPATROL_SAMPLE_BUG"] == "1"))
  func requestedHeapBug() {
    ByteRing(capacity: 16).writePastTheEnd()
  }
}
