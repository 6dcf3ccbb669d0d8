// hp-fixture-swift: heap bugs through Swift's unsafe pointer API (one subcommand per bug) and a
// correct program ("good") with Dictionary/Array/String churn that must run clean. Markers
// "hp:alloc CASE", "hp:free CASE", "hp:bug CASE" label the lines the integration tests look for.

#if canImport(Glibc)
  import Glibc
#endif

@inline(never)
func overflowUnsafePointer() -> Int32 {
  let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: 32)  // hp:alloc heap-buffer-overflow
  buffer.initialize(repeating: 0, count: 32)
  buffer[32] = 0x41  // hp:bug heap-buffer-overflow
  buffer.deallocate()
  return 0
}

@inline(never)
func useAfterDeallocate() -> Int32 {
  let buffer = UnsafeMutablePointer<Int>.allocate(capacity: 8)  // hp:alloc use-after-free
  buffer.initialize(repeating: 7, count: 8)
  buffer.deallocate()  // hp:free use-after-free
  return buffer[2] == 7 ? 0 : 1  // hp:bug use-after-free
}

@inline(never)
func doubleDeallocate() -> Int32 {
  let buffer = UnsafeMutableRawPointer.allocate(byteCount: 40, alignment: 8)  // hp:alloc double-free
  buffer.deallocate()  // hp:free double-free
  buffer.deallocate()  // hp:bug double-free
  return 0
}

final class Node {
  var name: String
  var children: [Node] = []
  init(name: String) { self.name = name }
}

@inline(never)
func good() -> Int32 {
  var counts: [String: Int] = [:]
  var words: [String] = []
  for index in 0..<20_000 {
    let word = "word-\(index % 1_500)-" + String(repeating: "x", count: index % 17)
    words.append(word)
    counts[word, default: 0] += 1
  }
  words.removeAll(where: { $0.count % 3 == 0 })
  words.sort()
  var root = Node(name: "root")
  for index in 0..<2_000 {
    let child = Node(name: "child \(index)")
    child.children = (0..<3).map { Node(name: "leaf \($0)") }
    root.children.append(child)
  }
  let total = root.children.reduce(0) { $0 + $1.children.count }
  root = Node(name: "replaced")
  var numbers = Array(0..<100_000)
  numbers.reserveCapacity(200_000)
  numbers.append(contentsOf: numbers.reversed())
  let sum = numbers.reduce(0, +)
  let joined = words.prefix(100).joined(separator: ",")
  print(
    "good: \(counts.count) distinct words, \(total) leaves, sum \(sum), \(joined.utf8.count) bytes, \(root.name)"
  )
  return counts.count == 20_000 && total == 6_000 && sum == 9_999_900_000 ? 0 : 1
}

let cases: [(name: String, run: () -> Int32)] = [
  ("heap-buffer-overflow", overflowUnsafePointer),
  ("use-after-free", useAfterDeallocate),
  ("double-free", doubleDeallocate),
  ("good", good),
]

let arguments = CommandLine.arguments
if arguments.count == 2, let fixture = cases.first(where: { $0.name == arguments[1] }) {
  exit(fixture.run())
}
let usage = "usage: \(arguments[0]) CASE\ncases: \(cases.map(\.name).joined(separator: " "))\n"
_ = usage.withCString { write(2, $0, strlen($0)) }
exit(2)
