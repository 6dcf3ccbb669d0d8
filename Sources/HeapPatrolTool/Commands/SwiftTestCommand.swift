import ArgumentParser
import Foundation

/// `heappatrol swift-test`
struct SwiftTestCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "swift-test",
    abstract: "Build a Swift package's tests and run its test bundle under HeapPatrol.",
    discussion: """
      Runs `swift build --build-tests`, then the package's test bundle (.build/debug/*PackageTests.xctest) \
      the way `swift test` does on Linux: once for XCTest (no arguments) and once for Swift Testing \
      (`--testing-library swift-testing`), each under the preload. Arguments after -- go to each run of \
      the bundle. Findings, summary and exit status as for `heappatrol run`. Leaks allocated inside \
      libXCTest (its test-run objects, never freed before XCTest calls exit) are counted but not \
      reported unless --xctest-leaks is given.

      Example: heappatrol swift-test --package-path ../MyPackage --library swift-testing -- --filter Parser
      """)

  enum Library: String, ExpressibleByArgument, CaseIterable {
    case both, xctest
    case swiftTesting = "swift-testing"
  }

  @Option(name: .long, help: ArgumentHelp("The package to test.", valueName: "dir"))
  var packagePath: String = "."

  @Option(
    name: .long,
    help: ArgumentHelp("The package's scratch (build) path, if not DIR/.build.", valueName: "dir"))
  var scratchPath: String?

  @Option(name: .long, help: "Which test library to run: both, xctest or swift-testing.")
  var library: Library = .both

  @Flag(
    name: .customLong("xctest-leaks"),
    help: "Also report leaks allocated inside libXCTest (XCTest keeps its test objects until exit)."
  )
  var xctestLeaks = false

  @OptionGroup var checking: CheckingOptions

  @Argument(
    parsing: .postTerminator,
    help: ArgumentHelp("Arguments for the test bundle.", valueName: "args"))
  var bundleArguments: [String] = []

  func run() throws {
    try exitWithStatus {
      let layout = InstallLayout.current()
      _ = try layout.requirePreloadLibrary()
      guard let swift = ToolProcess.find("swift") else {
        throw CheckError("cannot find `swift` in PATH")
      }
      let packageDirectory = URL(fileURLWithPath: packagePath).standardizedFileURL.path
      var buildArguments = ["build", "--build-tests", "--package-path", packageDirectory]
      if let scratchPath { buildArguments += ["--scratch-path", scratchPath] }

      let environment = ProcessInfo.processInfo.environment
      let build = try ChildProcess.run(
        swift, arguments: buildArguments, displayName: "swift", environment: environment)
      guard build == .exited(0) else {
        throw CheckError(
          "`swift \(buildArguments.joined(separator: " "))` failed (\(build))",
          exitCode: build.shellStatus)
      }
      let binPath = try ToolProcess.capture(swift, buildArguments + ["--show-bin-path"]).text
        .trimmingCharacters(in: .whitespacesAndNewlines)
      let bundles = ((try? FileManager.default.contentsOfDirectory(atPath: binPath)) ?? [])
        .filter { $0.hasSuffix("PackageTests.xctest") }.sorted()
      guard let bundleName = bundles.first else {
        throw CheckError(
          "no test bundle (*PackageTests.xctest) in \(binPath): does the package have test targets?"
        )
      }
      let bundle = (binPath as NSString).appendingPathComponent(bundleName)

      var runs: [(arguments: [String], label: String)] = []
      if library != .swiftTesting { runs.append((bundleArguments, "\(bundleName) (XCTest)")) }
      if library != .xctest {
        runs.append(
          (
            ["--testing-library", "swift-testing"] + bundleArguments,
            "\(bundleName) (Swift Testing)"
          ))
      }

      let symbolizer = Symbolizer.discover()  // shared, so both runs use one symbol cache
      var worstStatus: Int32 = 0
      var findings = 0
      var jsonParts: [String] = []
      for (index, (arguments, label)) in runs.enumerated() {
        var settings = checking.settings
        if !xctestLeaks { settings.leakSuppressedModules = ["libXCTest.so"] }
        if let json = settings.jsonOutput, runs.count > 1 {
          settings.jsonOutput = json + ".part\(index)"
          jsonParts.append(settings.jsonOutput!)
        }
        let run = CheckedRun(layout: layout, settings: settings, symbolizer: symbolizer)
        let result = try run.run(
          program: bundle, arguments: arguments, displayName: label,
          currentDirectory: packageDirectory)
        findings += result.findings.count
        if worstStatus == 0, let exit = result.programExit { worstStatus = exit.shellStatus }
      }
      if let json = checking.json, !jsonParts.isEmpty {
        var combined = Data()
        for part in jsonParts {
          combined += FileManager.default.contents(atPath: part) ?? Data()
          try? FileManager.default.removeItem(atPath: part)
        }
        guard FileManager.default.createFile(atPath: json, contents: combined) else {
          throw CheckError("cannot write the JSON report to \(json)")
        }
      }
      return findings > 0 ? checking.errorExitCode : worstStatus
    }
  }
}
