import SampleKit
import XCTest

/// XCTest still runs in the same bundle: both libraries must work under the preload.
final class LegacyTests: XCTestCase {
  func testStringChurn() {
    var text = ""
    for number in 0..<5_000 { text += "\(number) " }
    let index = WordIndex(text: text)
    XCTAssertEqual(index.counts.count, 5_000)
  }
}
