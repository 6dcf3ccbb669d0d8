// swift-tools-version: 6.1
// A small package whose tests `heappatrol swift-test` runs under the preload (the integration tests
// and the README use it). Its tests are correct; one of them commits a heap bug on request
// (HEAPPATROL_SAMPLE_BUG=1) so the checker's report of a test bundle can be tested too.
import PackageDescription

let package = Package(
  name: "SamplePackage",
  products: [.library(name: "SampleKit", targets: ["SampleKit"])],
  targets: [
    .target(name: "SampleKit"),
    .testTarget(name: "SampleKitTests", dependencies: ["SampleKit"]),
  ]
)
