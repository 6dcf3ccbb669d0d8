import PageSpace

/// Parses the workload language (grammar: docs/faults-and-simulate.md) one top-level statement at a
/// time, so a long workload streams: only the current statement (a `repeat` or `in` block with its
/// body) is held in memory.
///
/// Every problem is a `WorkloadParseError` with line and column, what was expected and the
/// offending token; the parser never traps on any input.
public struct WorkloadParser {
  private var lexer: WorkloadLexer
  private var lookahead: Token?
  public private(set) var symbols = WorkloadSymbols()
  private var regionIndex: [String: Int] = [:]
  private var childIndex: [String: Int] = [:]
  private var liveChildren: Set<Int> = []
  private var nextBlock = 0

  /// The deepest nesting of blocks accepted (a guard against stack exhaustion on hostile input).
  public static let maximumNesting = 32

  public init(source: any ByteSource, sourceName: String) {
    lexer = WorkloadLexer(source: source, sourceName: sourceName)
  }

  /// The next top-level statement, or nil at the end of the input.
  public mutating func next() throws(WorkloadParseError) -> WorkloadStatement? {
    try skipSeparators()
    if try peek().kind == .end { return nil }
    return try statement(context: .topLevel)
  }

  // MARK: Tokens

  private mutating func peek() throws(WorkloadParseError) -> Token {
    if let lookahead { return lookahead }
    let token = try lexer.next()
    lookahead = token
    return token
  }

  private mutating func take() throws(WorkloadParseError) -> Token {
    let token = try peek()
    lookahead = nil
    return token
  }

  private mutating func skipSeparators() throws(WorkloadParseError) {
    while try peek().kind == .separator { _ = try take() }
  }

  private func error(_ message: String, _ token: Token) -> WorkloadParseError {
    WorkloadParseError(
      sourceName: lexer.sourceName, location: token.location, message: message, found: token.shown)
  }

  private mutating func expectWord(_ what: String) throws(WorkloadParseError) -> Token {
    let token = try take()
    guard token.kind == .word else { throw error("expected \(what)", token) }
    return token
  }

  private mutating func expectSymbol(_ symbol: String) throws(WorkloadParseError) {
    let token = try take()
    guard token.kind == .symbol, token.text == symbol else {
      throw error("expected '\(symbol)'", token)
    }
  }

  /// Consumes `word` if it is next.
  private mutating func accept(_ word: String) throws(WorkloadParseError) -> Bool {
    let token = try peek()
    if token.kind == .word && token.text == word {
      _ = try take()
      return true
    }
    return false
  }

  private mutating func endOfStatement() throws(WorkloadParseError) {
    let token = try peek()
    switch token.kind {
    case .separator: _ = try take()
    case .end: break
    case .symbol where token.text == "}": break  // the block's closing brace ends the statement too
    default: throw error("expected the end of the statement", token)
    }
  }

  // MARK: Statements

  private enum Context: Equatable {
    case topLevel
    case child(depth: Int)
    case repeatBody(depth: Int, inChild: Bool)

    var depth: Int {
      switch self {
      case .topLevel: 0
      case .child(let depth), .repeatBody(let depth, _): depth
      }
    }
    var isInChild: Bool {
      switch self {
      case .topLevel: false
      case .child: true
      case .repeatBody(_, let inChild): inChild
      }
    }
  }

  private static let statementKeywords =
    "step, map, reserve, file, read, write, touch, protect, advise, unmap, lock, unlock, fork, in, exit, repeat, heap, churn"

  private mutating func statement(context: Context) throws(WorkloadParseError) -> WorkloadStatement
  {
    let keyword = try take()
    guard keyword.kind == .word else {
      throw error("expected a statement (\(Self.statementKeywords))", keyword)
    }
    let operation: WorkloadOperation
    switch keyword.text {
    case "step":
      if case .repeatBody = context {
        throw error("step is not allowed inside repeat (put the repeat inside the step)", keyword)
      }
      let label = try take()
      guard label.kind == .string else { throw error("expected a quoted step label", label) }
      operation = .step(label: label.text)
    case "map": operation = try mapStatement()
    case "reserve":
      let region = try declareRegion()
      let size = try size()
      var options = MapOptions(flags: .noReserve)
      if try accept("align") { options.alignment = try self.size() }
      let placement = try optionalPlacement()
      operation = .map(region, size: size, protection: .none, options: options, at: placement)
    case "file": operation = try fileStatement()
    case "heap": operation = try heapStatement()
    case "churn": operation = try churnStatement()
    case "read", "write":
      operation = try touchStatement(access: keyword.text == "read" ? .read : .write)
    case "touch":
      let access = try expectWord("'read' or 'write'")
      switch access.text {
      case "read": operation = try touchStatement(access: .read)
      case "write": operation = try touchStatement(access: .write)
      default: throw error("expected 'read' or 'write'", access)
      }
    case "protect":
      let region = try regionReference()
      let span = try contiguousSpan()
      operation = .protect(region, span, try protection(required: true)!)
    case "advise":
      let region = try regionReference()
      let span = try contiguousSpan()
      operation = .advise(region, span, try advice())
    case "unmap":
      let region = try regionReference()
      operation = .unmap(region, try contiguousSpan())
    case "lock":
      let region = try regionReference()
      operation = .lock(region, try contiguousSpan())
    case "unlock":
      let region = try regionReference()
      operation = .unlock(region, try contiguousSpan())
    case "fork", "exit", "in":
      guard context == .topLevel else {
        throw error(
          "\(keyword.text) is only allowed at the top level (no nested processes, not in repeat)",
          keyword)
      }
      operation = try processStatement(keyword)
    case "repeat":
      let countToken = try take()
      guard let count = Self.plainInteger(countToken), count >= 0, count <= 1_000_000_000 else {
        throw error("expected a repeat count (0...1000000000)", countToken)
      }
      let body = try block(
        context: .repeatBody(depth: context.depth + 1, inChild: context.isInChild), opener: keyword)
      operation = .repeat(count: count, body: body)
    default:
      throw error("expected a statement (\(Self.statementKeywords))", keyword)
    }
    try endOfStatement()
    return WorkloadStatement(operation, at: keyword.location)
  }

  private mutating func block(context: Context, opener: Token) throws(WorkloadParseError)
    -> [WorkloadStatement]
  {
    if context.depth > Self.maximumNesting {
      throw error("blocks nested deeper than \(Self.maximumNesting)", opener)
    }
    try expectSymbol("{")
    var body: [WorkloadStatement] = []
    while true {
      try skipSeparators()
      let token = try peek()
      if token.kind == .symbol && token.text == "}" {
        _ = try take()
        return body
      }
      if token.kind == .end {
        throw error("expected '}' to close the block opened at \(opener.location)", token)
      }
      body.append(try statement(context: context))
    }
  }

  private mutating func processStatement(_ keyword: Token) throws(WorkloadParseError)
    -> WorkloadOperation
  {
    let nameToken = try expectWord("a child process name")
    try validateName(nameToken)
    switch keyword.text {
    case "fork":
      let index: Int
      if let existing = childIndex[nameToken.text] {
        guard !liveChildren.contains(existing) else {
          throw error("child '\(nameToken.text)' is still running (exit it first)", nameToken)
        }
        index = existing
      } else {
        index = symbols.childNames.count
        symbols.childNames.append(nameToken.text)
        childIndex[nameToken.text] = index
      }
      liveChildren.insert(index)
      return .fork(ChildID(index))
    default:
      guard let index = childIndex[nameToken.text], liveChildren.contains(index) else {
        throw error("no running child named '\(nameToken.text)' (start it with fork)", nameToken)
      }
      if keyword.text == "exit" {
        liveChildren.remove(index)
        return .exitChild(ChildID(index))
      }
      let blockNumber = nextBlock
      nextBlock += 1
      let body = try block(context: .child(depth: 1), opener: keyword)
      return .inChild(ChildID(index), block: blockNumber, body: body)
    }
  }

  private mutating func mapStatement() throws(WorkloadParseError) -> WorkloadOperation {
    let region = try declareRegion()
    let size = try size()
    let protection = try protection(required: false) ?? .readWrite
    var options = MapOptions()
    var placement: Placement?
    var noReplace = false
    while true {
      let token = try peek()
      guard token.kind == .word else { break }
      switch token.text {
      case "private": _ = try take()
      case "shared":
        _ = try take()
        options.flags.insert(.shared)
      case "populate":
        _ = try take()
        options.flags.insert(.populate)
      case "noreserve":
        _ = try take()
        options.flags.insert(.noReserve)
      case "locked":
        _ = try take()
        options.flags.insert(.locked)
      case "stack":
        _ = try take()
        options.flags.insert(.stack)
      case "hugepage":
        _ = try take()
        options.hugePage = true
      case "noreplace":
        _ = try take()
        noReplace = true
      case "align":
        _ = try take()
        options.alignment = try self.size()
      case "at":
        placement = try optionalPlacement()
      default:
        throw error(
          "expected a map option (shared, private, populate, noreserve, locked, stack, hugepage, align, at, noreplace)",
          token)
      }
    }
    if noReplace {
      guard placement != nil else {
        throw error("noreplace needs a placement ('at REGION+OFFSET')", try peek())
      }
      placement!.noReplace = true
    }
    return .map(region, size: size, protection: protection, options: options, at: placement)
  }

  private mutating func optionalPlacement() throws(WorkloadParseError) -> Placement? {
    guard try accept("at") else { return nil }
    let base = try regionReference()
    var offset = WorkloadSize.bytes(0)
    let token = try peek()
    if token.kind == .symbol && token.text == "+" {
      _ = try take()
      offset = try size()
    }
    return Placement(base: base, offset: offset, noReplace: false)
  }

  private mutating func fileStatement() throws(WorkloadParseError) -> WorkloadOperation {
    let region = try declareRegion()
    let size = try size()
    let protection = try protection(required: false) ?? .read
    var shared = false
    var cache = FileCacheState.hot
    while true {
      let token = try peek()
      guard token.kind == .word else { break }
      switch token.text {
      case "shared":
        _ = try take()
        shared = true
      case "private":
        _ = try take()
        shared = false
      case "hot":
        _ = try take()
        cache = .hot
      case "cold":
        _ = try take()
        cache = .cold
      default: throw error("expected a file option (shared, private, hot, cold)", token)
      }
    }
    return .mapFile(region, size: size, protection: protection, shared: shared, cache: cache)
  }

  /// `heap NAME [markers|mprotect|canary]`.
  private mutating func heapStatement() throws(WorkloadParseError) -> WorkloadOperation {
    let heap = try declareRegion()
    var guarding = HeapGuarding.markers
    let token = try peek()
    if token.kind == .word {
      guard let chosen = HeapGuarding(rawValue: token.text) else {
        throw error("expected a guard mechanism (markers, mprotect, canary)", token)
      }
      _ = try take()
      guarding = chosen
    }
    return .heap(heap, guarding)
  }

  /// `churn HEAP COUNT [seed S] [max SIZE] [live N]`.
  private mutating func churnStatement() throws(WorkloadParseError) -> WorkloadOperation {
    let heap = try regionReference()
    let countToken = try take()
    guard let count = Self.plainInteger(countToken) else {
      throw error("expected how many malloc/free operations", countToken)
    }
    var churn = HeapChurn(operations: count)
    while true {
      let token = try peek()
      guard token.kind == .word else { break }
      _ = try take()
      switch token.text {
      case "seed":
        let value = try take()
        guard let seed = Self.plainInteger(value) else { throw error("expected a seed", value) }
        churn.seed = UInt64(seed)
      case "max":
        let sizeToken = try peek()
        let maximum = try size()
        guard maximum.bytes(pageSize: 1) >= 1 else {
          throw error("expected a block size of at least 1 byte", sizeToken)
        }
        churn.maximumSize = maximum
      case "live":
        let value = try take()
        guard let live = Self.plainInteger(value), live >= 1, live <= HeapChurn.maximumLive else {
          throw error("expected a live-block limit from 1 to \(HeapChurn.maximumLive)", value)
        }
        churn.liveLimit = live
      default:
        throw error("expected a churn option (seed, max, live) or the end of the statement", token)
      }
    }
    return .churn(heap, churn)
  }

  private mutating func touchStatement(access: MemoryAccess) throws(WorkloadParseError)
    -> WorkloadOperation
  {
    let region = try regionReference()
    var selection = try span()
    while true {
      let token = try peek()
      guard token.kind == .word else { break }
      switch token.text {
      case "stride":
        _ = try take()
        let strideToken = try take()
        guard let stride = Self.plainInteger(strideToken), stride >= 1 else {
          throw error("expected a stride of at least 1 page", strideToken)
        }
        selection.stride = stride
      case "reverse":
        _ = try take()
        selection.order = .descending
      case "random":
        _ = try take()
        let countToken = try take()
        guard let count = Self.plainInteger(countToken) else {
          throw error("expected how many random pages to touch", countToken)
        }
        var seed: UInt64 = 1
        if try accept("seed") {
          let seedToken = try take()
          guard let value = Self.plainInteger(seedToken) else {
            throw error("expected a seed", seedToken)
          }
          seed = UInt64(value)
        }
        selection.order = .random(count: count, seed: seed)
      default:
        throw error(
          "expected a touch modifier (stride, reverse, random) or the end of the statement", token)
      }
    }
    return .touch(access, region, selection)
  }

  // MARK: Pieces

  /// `all`, `N`, `N..M` or `N..` (to the end of the region); nothing means `all`.
  private mutating func span() throws(WorkloadParseError) -> PageSelection {
    let token = try peek()
    if token.kind == .word && token.text == "all" {
      _ = try take()
      return .all
    }
    guard token.kind == .number else { return .all }
    _ = try take()
    guard let first = Self.plainInteger(token) else {
      throw error("expected a page index (a plain number: pages count from 0 in the region)", token)
    }
    let dots = try peek()
    guard dots.kind == .symbol && dots.text == ".." else {
      return PageSelection(first: first, end: first + 1)
    }
    _ = try take()
    let endToken = try peek()
    guard endToken.kind == .number else { return PageSelection(first: first, end: nil) }
    _ = try take()
    guard let end = Self.plainInteger(endToken), end >= first else {
      throw error(
        "expected a page index at least \(first) (the range is first..end, end excluded)", endToken)
    }
    return PageSelection(first: first, end: end)
  }

  private mutating func contiguousSpan() throws(WorkloadParseError) -> PageSelection {
    try span()
  }

  /// Declares (or re-binds) a region name.
  private mutating func declareRegion() throws(WorkloadParseError) -> RegionID {
    let token = try expectWord("a region name")
    try validateName(token)
    if let index = regionIndex[token.text] { return RegionID(index) }
    let index = symbols.regionNames.count
    symbols.regionNames.append(token.text)
    regionIndex[token.text] = index
    return RegionID(index)
  }

  private mutating func regionReference() throws(WorkloadParseError) -> RegionID {
    let token = try expectWord("a region name")
    guard let index = regionIndex[token.text] else {
      throw error("unknown region (declare it first with map, reserve or file)", token)
    }
    return RegionID(index)
  }

  private func validateName(_ token: Token) throws(WorkloadParseError) {
    guard let first = token.text.utf8.first,
      first == UInt8(ascii: "_")
        || (first | 0x20 >= UInt8(ascii: "a") && first | 0x20 <= UInt8(ascii: "z"))
    else {
      throw error("expected a name (a letter or '_' first)", token)
    }
  }

  /// A size with a unit: `16p` (pages), `4096` or `4096b` (bytes), `64k`, `2m`, `1g` (KiB, MiB,
  /// GiB; `kib`, `mib`, `gib` too), or hexadecimal bytes `0x1000`.
  private mutating func size() throws(WorkloadParseError) -> WorkloadSize {
    let token = try take()
    guard token.kind == .number, let size = Self.parseSize(token.text) else {
      throw error("expected a size (16p pages, 4096 bytes, 64k, 2m, 1g, 0x1000)", token)
    }
    return size
  }

  static func parseSize(_ text: String) -> WorkloadSize? {
    let lowered = text.lowercased()
    if lowered.hasPrefix("0x") {
      return UInt(lowered.dropFirst(2), radix: 16).map { .bytes($0) }
    }
    let digits = lowered.prefix { $0.isASCII && $0.isNumber }
    guard let value = UInt(digits) else { return nil }
    let unit = lowered.dropFirst(digits.count)
    let multiplier: UInt
    switch unit {
    case "p": return .pages(value)
    case "", "b": multiplier = 1
    case "k", "kib", "kb": multiplier = 1 << 10
    case "m", "mib", "mb": multiplier = 1 << 20
    case "g", "gib", "gb": multiplier = 1 << 30
    default: return nil
    }
    let (bytes, overflow) = value.multipliedReportingOverflow(by: multiplier)
    return overflow ? nil : .bytes(bytes)
  }

  static func plainInteger(_ token: Token) -> Int? {
    guard token.kind == .number, token.text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
      return nil
    }
    return Int(token.text)
  }

  /// `none`, or r/w/x letters in that order (`r`, `rw`, `rx`, `rwx`), or the `/proc/self/maps`
  /// form (`r--`, `rw-`, `---`).
  private mutating func protection(required: Bool) throws(WorkloadParseError) -> PageProtection? {
    let token = try peek()
    if let protection = token.kind == .word ? Self.parseProtection(token.text) : nil {
      _ = try take()
      return protection
    }
    if required {
      throw error("expected a protection (none, r, rw, rx, rwx, or r--/rw-/---)", token)
    }
    return nil
  }

  static func parseProtection(_ text: String) -> PageProtection? {
    if text == "none" || text == "---" { return PageProtection.none }
    let letters = Array(text.utf8)
    if letters.count == 3 && letters.contains(UInt8(ascii: "-")) {
      var protection = PageProtection.none
      for (letter, (expected, bit)) in zip(
        letters,
        [
          (UInt8(ascii: "r"), PageProtection.read), (UInt8(ascii: "w"), .write),
          (UInt8(ascii: "x"), .exec),
        ])
      {
        if letter == expected {
          protection.insert(bit)
        } else if letter != UInt8(ascii: "-") {
          return nil
        }
      }
      return protection
    }
    var protection = PageProtection.none
    var remaining = letters[...]
    for (letter, bit) in [
      (UInt8(ascii: "r"), PageProtection.read), (UInt8(ascii: "w"), .write),
      (UInt8(ascii: "x"), .exec),
    ]
    where remaining.first == letter {
      protection.insert(bit)
      remaining = remaining.dropFirst()
    }
    return remaining.isEmpty && !letters.isEmpty ? protection : nil
  }

  static let adviceNames: [String: PageAdvice] = {
    var names: [String: PageAdvice] = [:]
    for advice in [
      PageAdvice.normal, .random, .sequential, .willNeed, .dontNeed, .free, .remove, .dontFork,
      .doFork,
      .mergeable, .unmergeable, .hugePage, .noHugePage, .dontDump, .doDump, .wipeOnFork,
      .keepOnFork, .cold,
      .pageOut, .populateRead, .populateWrite, .guardInstall, .guardRemove,
    ] {
      names[advice.description] = advice
    }
    return names
  }()

  private mutating func advice() throws(WorkloadParseError) -> PageAdvice {
    let token = try take()
    if token.kind == .word {
      let normalized = String(token.text.lowercased().map { $0 == "-" ? "_" : $0 })
      if let advice = Self.adviceNames[normalized] { return advice }
      if normalized.hasPrefix("advice_"), let raw = Int32(normalized.dropFirst(7)) {
        return PageAdvice(rawValue: raw)
      }
    }
    throw error(
      "expected an advice (dontneed, free, willneed, populate_read, populate_write, guard_install, ..., or advice_N)",
      token)
  }
}
