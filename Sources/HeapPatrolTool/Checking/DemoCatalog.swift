/// One run of a bundled fixture program and the finding it must produce.
public struct FixtureDemo: Sendable {
  /// The fixture executable, built next to `heappatrol`.
  public var program: String
  /// Its subcommand: the case to run.
  public var argument: String
  /// The finding kind the run must report.
  public var expectedKind: String
  /// HeapPatrol options the case needs (e.g. `placement=lower` to catch underflows at once).
  public var options: String?
  /// The heading shown above the report.
  public var title: String

  public init(
    program: String, argument: String, expectedKind: String, options: String? = nil, title: String
  ) {
    self.program = program
    self.argument = argument
    self.expectedKind = expectedKind
    self.options = options
    self.title = title
  }
}

/// What `heappatrol demo` shows: one bug of each common kind, in C, C++ and Swift.
public enum DemoCatalog {
  public static let fixturePrograms = ["hp-fixture-c", "hp-fixture-cxx", "hp-fixture-swift"]

  public static let demos: [FixtureDemo] = [
    FixtureDemo(
      program: "hp-fixture-c", argument: "heap-buffer-overflow-write",
      expectedKind: "heap-buffer-overflow",
      title: "C: writing one byte past the end of a 32-byte malloc block"),
    FixtureDemo(
      program: "hp-fixture-c", argument: "heap-buffer-underflow",
      expectedKind: "heap-buffer-underflow",
      options: "placement=lower",
      title: "C: writing 4 bytes before a block (placement=lower guards the front)"),
    FixtureDemo(
      program: "hp-fixture-c", argument: "use-after-free-read", expectedKind: "use-after-free",
      title: "C: reading a block after free()"),
    FixtureDemo(
      program: "hp-fixture-c", argument: "double-free", expectedKind: "double-free",
      title: "C: freeing the same block twice"),
    FixtureDemo(
      program: "hp-fixture-c", argument: "invalid-free-stack", expectedKind: "invalid-free",
      title: "C: freeing a stack address"),
    FixtureDemo(
      program: "hp-fixture-c", argument: "interior-free", expectedKind: "interior-free",
      title: "C: freeing a pointer into the middle of a block"),
    FixtureDemo(
      program: "hp-fixture-c", argument: "canary-corruption", expectedKind: "canary-corruption",
      title:
        "C: overflowing into the alignment slack of a 64-byte aligned block (caught by the canary at free)"
    ),
    FixtureDemo(
      program: "hp-fixture-c", argument: "out-of-memory", expectedKind: "out-of-memory",
      options: "limit=16m",
      title: "C: malloc(64 MiB) under a 16 MiB heap limit"),
    FixtureDemo(
      program: "hp-fixture-c", argument: "leak", expectedKind: "leak",
      title: "C: losing the only pointers to three blocks"),
    FixtureDemo(
      program: "hp-fixture-cxx", argument: "malloc-delete", expectedKind: "alloc-dealloc-mismatch",
      title: "C++: malloc() released with delete"),
    FixtureDemo(
      program: "hp-fixture-swift", argument: "heap-buffer-overflow",
      expectedKind: "heap-buffer-overflow",
      title: "Swift: UnsafeMutablePointer subscript one past the end"),
    FixtureDemo(
      program: "hp-fixture-swift", argument: "use-after-free", expectedKind: "use-after-free",
      title: "Swift: reading through a pointer after deallocate()"),
    FixtureDemo(
      program: "hp-fixture-swift", argument: "double-free", expectedKind: "double-free",
      title: "Swift: deallocate() twice"),
  ]
}
