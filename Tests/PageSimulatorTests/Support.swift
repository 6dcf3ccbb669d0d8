import DifferentialHarness
import PageSimulator
import PageSpace
import Testing

let page: UInt = 4096

extension SimulatedPageSpace: PageAccessInspecting {
  public func pageAccess(from start: UInt, pages: Int) -> [PageAccess] {
    (0..<pages).map { index in
      let address = start + UInt(index) * page
      return PageAccess(read: wouldFault(address, .read), write: wouldFault(address, .write))
    }
  }
}

/// The minor faults `body` costs.
func minorFaults(_ space: SimulatedPageSpace, _ body: () throws -> Void) rethrows -> UInt64 {
  let before = space.faultCounts
  try body()
  return (space.faultCounts - before).minor
}

func majorFaults(_ space: SimulatedPageSpace, _ body: () throws -> Void) rethrows -> UInt64 {
  let before = space.faultCounts
  try body()
  return (space.faultCounts - before).major
}

/// Writes one byte per page, ascending.
func writeEach(_ space: SimulatedPageSpace, _ base: UInt, pages: Int, value: UInt8 = 7) throws {
  for index in 0..<pages { try space.store(value, at: base + UInt(index) * page + 5) }
}

/// Reads one byte per page, ascending; returns the bytes.
@discardableResult
func readEach(_ space: SimulatedPageSpace, _ base: UInt, pages: Int) throws -> [UInt8] {
  try (0..<pages).map { index in try space.load(base + UInt(index) * page + 5) }
}

/// A fenced region as in kernel-semantics.md §0: 1-page shared mappings on both sides.
func fenced(_ space: SimulatedPageSpace, pages: Int, protection: PageProtection = .readWrite) throws
  -> UInt
{
  let region = try space.map(
    at: nil, length: UInt(pages + 2) * page, protection: .none, flags: .noReserve)
  try space.map(fixed: region, length: page, protection: .readWrite, flags: .shared)
  try space.map(
    fixed: region + UInt(pages + 1) * page, length: page, protection: .readWrite, flags: .shared)
  try space.map(fixed: region + page, length: UInt(pages) * page, protection: protection)
  return region + page
}

/// The error a throwing page operation gives, or nil.
func errorOf(_ body: () throws(PageError) -> Void) -> PageError? {
  do throws(PageError) {
    try body()
    return nil
  } catch {
    return error
  }
}

func faultOf(_ body: () throws(PageFault) -> Void) -> PageFault? {
  do throws(PageFault) {
    try body()
    return nil
  } catch {
    return error
  }
}

let sizes = [1, 16, 1024]

/// `body`'s result and the minor faults it cost.
func measured<T>(_ space: SimulatedPageSpace, _ body: () throws -> T) rethrows -> (T, UInt64) {
  let before = space.faultCounts
  let result = try body()
  return (result, (space.faultCounts - before).minor)
}
