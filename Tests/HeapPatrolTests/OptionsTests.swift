import Testing

@testable import HeapPatrol

@Suite("Options")
struct OptionsTests {
  @Test("the table's default column is exactly what RuntimeOptions() holds")
  func defaultsMatchTable() throws {
    let text = OptionsTable.all.map { "\($0.name)=\($0.defaultValue)" }.joined(separator: ",")
    let parsed = try RuntimeOptions(parsing: text)
    #expect(parsed == RuntimeOptions())
    #expect(OptionsTable.all.count == OptionKey.count)
    #expect(Set(OptionsTable.all.map(\.name)).count == OptionsTable.all.count)
    #expect(OptionsTable.all.allSatisfy { !$0.help.isEmpty })
  }

  @Test("the table names the options the design requires")
  func requiredNames() {
    let names = Set(OptionsTable.all.map(\.name))
    for name in [
      "placement", "align", "guard", "vma_headroom", "quarantine_bytes", "quarantine_count",
      "nofree",
      "alloc_byte", "free_byte", "canary_byte", "redzone", "limit", "fail_every", "fail_seed",
      "fail_rate", "log", "log_fd", "text_report", "detect_leaks", "show_reachable", "stack_depth",
      "sample", "fatal_exitcode", "halt_on_error",
    ] {
      #expect(names.contains(name), "missing option \(name)")
    }
  }

  @Test("every HeapConfiguration field has an option (a new field fails here until it gets one)")
  func heapFieldsCovered() {
    let fields = Mirror(reflecting: HeapConfiguration()).children.compactMap(\.label)
    let mapped: [String: String] = [
      "placement": "placement", "alignment": "align", "guardMechanism": "guard",
      "vmaHeadroom": "vma_headroom", "vmaBudgetLimit": "vma_budget",
      "quarantineMaxBytes": "quarantine_bytes", "quarantineMaxCount": "quarantine_count",
      "noFree": "nofree", "allocationFill": "alloc_byte", "allocationFillLimit": "alloc_byte_limit",
      "freeFill": "free_byte", "canaryByte": "canary_byte", "redZoneSize": "redzone",
      "heapLimit": "limit", "faultInjection": "fail_every", "reservationSize": "reservation",
      "rememberedReleasedBlocks": "remembered_blocks", "maximumRecords": "max_records",
      "slackCanaryLimit": "slack_canary",
    ]
    let names = Set(OptionsTable.all.map(\.name))
    for field in fields {
      #expect(mapped[field].map(names.contains) == true, "HeapConfiguration.\(field) has no option")
    }
  }

  /// One non-default value for every key, and how to read it back.
  static let settings: [(String, @Sendable (RuntimeOptions) -> Bool)] = [
    ("placement=lower", { $0.heap.placement == .lower }),
    ("align=1", { $0.heap.alignment == .fixed(1) }),
    ("align=4096", { $0.heap.alignment == .fixed(4096) }),
    ("align=natural", { $0.heap.alignment == .natural(maximum: 16) }),
    ("guard=markers", { $0.heap.guardMechanism == .markers }),
    ("guard=mprotect", { $0.heap.guardMechanism == .mprotect }),
    ("guard=canary", { $0.heap.guardMechanism == .canary }),
    ("vma_headroom=2000", { $0.heap.vmaHeadroom == 2000 }),
    ("vma_budget=100", { $0.heap.vmaBudgetLimit == 100 }),
    ("quarantine_bytes=1m", { $0.heap.quarantineMaxBytes == 1 << 20 }),
    ("quarantine_count=7", { $0.heap.quarantineMaxCount == 7 }),
    ("nofree=1", { $0.heap.noFree }),
    ("alloc_byte=none", { $0.heap.allocationFill == nil }),
    ("alloc_byte=0x11", { $0.heap.allocationFill == 0x11 }),
    ("alloc_byte_limit=0", { $0.heap.allocationFillLimit == nil }),
    ("alloc_byte_limit=4k", { $0.heap.allocationFillLimit == 4096 }),
    ("free_byte=none", { $0.heap.freeFill == nil }),
    ("free_byte=200", { $0.heap.freeFill == 200 }),
    ("canary_byte=0xcc", { $0.heap.canaryByte == 0xCC }),
    ("slack_canary=0", { $0.heap.slackCanaryLimit == nil }),
    ("slack_canary=128", { $0.heap.slackCanaryLimit == 128 }),
    ("redzone=64", { $0.heap.redZoneSize == 64 }),
    ("limit=2g", { $0.heap.heapLimit == 2 << 30 }),
    ("fail_every=10", { $0.heap.faultInjection.failEvery == 10 }),
    ("fail_rate=0.25", { $0.heap.faultInjection.probability == 0.25 }),
    ("fail_rate=1", { $0.heap.faultInjection.probability == 1 }),
    ("fail_seed=42", { $0.heap.faultInjection.seed == 42 }),
    ("reservation=1t", { $0.heap.reservationSize == 1 << 40 }),
    ("remembered_blocks=5", { $0.heap.rememberedReleasedBlocks == 5 }),
    ("max_records=4096", { $0.heap.maximumRecords == 4096 }),
    ("log=/tmp/hp.%p.json", { $0.logPathString == "/tmp/hp.%p.json" }),
    ("log_fd=3", { $0.logFD == 3 }),
    ("text_report=0", { !$0.textReport }),
    ("detect_leaks=false", { !$0.detectLeaks }),
    ("show_reachable=yes", { $0.showReachable }),
    ("check_on_exit=no", { !$0.checkOnExit }),
    ("fatal_exitcode=42", { $0.fatalExitCode == 42 }),
    ("halt_on_error=1", { $0.haltOnError }),
    ("leak_exitcode=23", { $0.leakExitCode == 23 }),
    ("report_size_overflow=1", { $0.reportSizeOverflow }),
    ("report_oom=0", { !$0.reportOutOfMemory }),
    ("stack_depth=64", { $0.stackDepth == 64 }),
    ("sample=5000", { $0.sample == 5000 }),
    ("sample_seed=5", { $0.sampleSeed == 5 }),
    ("verbose=true", { $0.verbose }),
    ("check_memops=0", { !$0.checkMemoryOperations }),
    ("trace=/tmp/hp.%p.trace", { $0.tracePath.string == "/tmp/hp.%p.trace" }),
  ]

  @Test("every key takes a valid value", arguments: 0..<settings.count)
  func everyKey(index: Int) throws {
    let (text, check) = OptionsTests.settings[index]
    let options = try RuntimeOptions(parsing: text)
    #expect(check(options), "\(text)")
    #expect(!check(RuntimeOptions()), "\(text) must differ from the default")
  }

  @Test("every key of the table is exercised by `settings`")
  func settingsCoverTable() {
    let covered = Set(OptionsTests.settings.map { String($0.0.split(separator: "=")[0]) })
    #expect(covered == Set(OptionsTable.all.map(\.name)))
  }

  @Test("align=natural is the natural policy capped at 16")
  func alignNatural() throws {
    #expect(
      try RuntimeOptions(parsing: "align=16,align=natural").heap.alignment == .natural(maximum: 16))
  }

  @Test("several options, empty items and later-wins")
  func combined() throws {
    let options = try RuntimeOptions(parsing: "placement=lower,,redzone=16,redzone=48,")
    #expect(options.heap.placement == .lower)
    #expect(options.heap.redZoneSize == 48)
    #expect(try RuntimeOptions(parsing: "") == RuntimeOptions())
  }

  @Test(
    "sizes",
    arguments: [
      ("0", UInt(0)), ("4096", 4096), ("64k", 64 << 10), ("64K", 64 << 10), ("64kb", 64 << 10),
      ("3m", 3 << 20), ("2G", 2 << 30), ("1t", 1 << 40), ("0x100", 256),
    ])
  func sizes(text: String, value: UInt) throws {
    #expect(
      try RuntimeOptions(parsing: "quarantine_bytes=\(text)").heap.quarantineMaxBytes == value)
  }

  @Test(
    "bad values are rejected with the key and the text",
    arguments: [
      ("placement=middle", "placement", "middle"),
      ("align=3", "align", "3"), ("align=0", "align", "0"), ("align=", "align", ""),
      ("guard=fence", "guard", "fence"),
      ("vma_headroom=-1", "vma_headroom", "-1"),
      ("quarantine_bytes=12q", "quarantine_bytes", "12q"),
      ("quarantine_bytes=99999999999999999999", "quarantine_bytes", "99999999999999999999"),
      ("quarantine_bytes=17179869184g", "quarantine_bytes", "17179869184g"),
      ("quarantine_bytes=k", "quarantine_bytes", "k"),
      ("nofree=2", "nofree", "2"), ("nofree=", "nofree", ""),
      ("alloc_byte=256", "alloc_byte", "256"), ("canary_byte=none", "canary_byte", "none"),
      ("redzone=1m", "redzone", "1m"),
      ("fail_rate=1.5", "fail_rate", "1.5"), ("fail_rate=abc", "fail_rate", "abc"),
      ("fail_rate=.", "fail_rate", "."),
      ("reservation=4k", "reservation", "4k"),
      ("max_records=0", "max_records", "0"),
      ("log_fd=-2", "log_fd", "-2"),
      ("fatal_exitcode=256", "fatal_exitcode", "256"),
      ("stack_depth=0", "stack_depth", "0"), ("stack_depth=65", "stack_depth", "65"),
      ("sample=0", "sample", "0"), ("sample=1000000001", "sample", "1000000001"),
      ("log=" + String(repeating: "x", count: 513), "log", String(repeating: "x", count: 64)),
    ])
  func badValues(text: String, key: String, value: String) {
    #expect {
      _ = try RuntimeOptions(parsing: text)
    } throws: { error in
      guard let error = error as? OptionsError else { return false }
      return error.reason == .badValue && error.key?.name.description == key && error.text == value
        && error.description.hasPrefix(
          "heappatrol: bad value '\(value)' for option '\(key)' (expected ")
    }
  }

  @Test("unknown keys are an error that names the key and the way out")
  func unknownKey() {
    #expect {
      _ = try RuntimeOptions(parsing: "redzone=16,foo=1")
    } throws: { error in
      (error as? OptionsError)?.description
        == "heappatrol: unknown option 'foo' (see `heappatrol options`)"
    }
    #expect {
      _ = try RuntimeOptions(parsing: "Placement=upper")
    } throws: { error in (error as? OptionsError)?.reason == .unknownOption }
  }

  @Test("a key without a value is an error")
  func missingValue() {
    #expect {
      _ = try RuntimeOptions(parsing: "nofree")
    } throws: { error in
      (error as? OptionsError)?.description
        == "heappatrol: option 'nofree' needs a value (key=value)"
    }
  }

  @Test("parsing a C string (as from getenv) matches parsing a String")
  func cString() throws {
    var options = RuntimeOptions()
    try "placement=lower,limit=1m".withCString { try options.apply(cString: $0) }
    #expect(options == (try RuntimeOptions(parsing: "placement=lower,limit=1m")))
  }
}
