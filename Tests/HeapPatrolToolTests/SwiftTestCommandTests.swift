import Foundation
import HeapPatrolTool
import Testing

/// `heappatrol swift-test` on the sample package (copied to a temporary directory so its build does
/// not land in the source tree): clean tests run clean; a heap bug inside a test is reported.
@Suite struct SwiftTestCommandTests {
  @Test func samplePackageTestsRunCleanAndABugInATestIsReported() throws {
    let directory = try TestSupport.makeTemporaryDirectory("sample")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let package = (directory as NSString).appendingPathComponent("SamplePackage")
    let source = (TestSupport.packageRoot as NSString).appendingPathComponent(
      "Fixtures/SamplePackage")
    try FileManager.default.createDirectory(atPath: package, withIntermediateDirectories: true)
    for item in ["Package.swift", "Sources", "Tests"] {
      try FileManager.default.copyItem(
        atPath: (source as NSString).appendingPathComponent(item),
        toPath: (package as NSString).appendingPathComponent(item))
    }

    let clean = try TestSupport.runHeapPatrol(["swift-test", "--package-path", package])
    #expect(clean.status == 0, "\(clean.standardOutput)\n\(clean.standardError)")
    #expect(clean.findings.isEmpty, "\(clean.standardError)")
    // Both libraries ran: XCTest's summary and Swift Testing's.
    #expect(clean.standardOutput.contains("Executed 1 test"), "\(clean.standardOutput)")
    #expect(clean.standardError.contains("Test run with"), "\(clean.standardError)")

    let buggy = try TestSupport.runHeapPatrol(
      ["swift-test", "--package-path", package, "--library", "swift-testing"],
      environment: ["HEAPPATROL_SAMPLE_BUG": "1"])
    #expect(buggy.status == 99, "\(buggy.standardError)")
    let finding = try #require(buggy.findings.first, "\(buggy.standardError)")
    #expect(finding.kind == "heap-buffer-overflow")
    #expect(finding.block?.size == 16)
    let frame = finding.visible(\.accessStack).first
    #expect(frame?.function?.contains("writePastTheEnd") == true, "\(buggy.standardError)")
    #expect(frame?.file?.hasSuffix("WordIndex.swift") == true)
  }
}
