// A Swift program with HeapPatrolPreload linked in (no LD_PRELOAD): the exported malloc family is in
// this executable, so every allocation of the process — the Swift runtime's included — is guarded.
// The preload tests run it: `ok` must run clean, `overflow` must be caught.
import HeapPatrolPreload

let mode = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "ok"
var numbers: [Int] = []
for index in 0..<10_000 { numbers.append(index) }
var words: [String: Int] = [:]
for index in 0..<1_000 { words["word\(index)"] = index }
print("sum", numbers.reduce(0, +), "words", words.count)
if mode == "overflow" {
  // Swift asks for 16-byte alignment, so a 13-byte block ends 3 bytes before its guard page: the
  // first byte of the guard is bytes[16] (bytes[13...15] are canary, checked at exit).
  let bytes = UnsafeMutablePointer<UInt8>.allocate(capacity: 13)
  bytes[16] = 1
  print("not reached")
}
