#if os(Linux)
  import Glibc
  import PageSpace

  /// Makes a real process quiet enough that a measurement window sees only the workload's own page
  /// activity, and places the workload's mappings as they would be placed in a fresh process.
  ///
  /// Three kinds of noise were measured in the `heappatrol faults --child` process:
  /// * the first execution of a code page (or first read of a data page) of the executable or a
  ///   library is a minor fault — an error path run for the first time inside a window (a failing
  ///   `mlock`) cost 1–2 faults;
  /// * after `fork`, the first write to any page of the runner's own memory is a copy-on-write fault;
  /// * a call deeper than any before grows the stack by a fault.
  /// And one placement effect: the runtime leaves holes in the mmap area (a loader `munmap`, freed
  /// buffers), and the kernel's top-down search fills the highest hole that fits, so two successive
  /// `map` statements could land apart instead of adjacent (and not merge) — unlike a fresh process
  /// and the simulator.
  enum ProcessQuieting {
    struct Mapping {
      var range: AddressRange
      var readable: Bool
      var writable: Bool
      var isPrivate: Bool
      /// The path, or `[heap]`, `[stack]`, `[vdso]`...; empty for anonymous memory.
      var name: String
    }

    /// The lines of /proc/self/maps, ascending.
    static func mappings() -> [Mapping] {
      var result: [Mapping] = []
      let descriptor = open("/proc/self/maps", O_RDONLY | O_CLOEXEC)
      guard descriptor >= 0 else { return result }
      defer { close(descriptor) }
      var text: [UInt8] = []
      var chunk = [UInt8](repeating: 0, count: 65536)
      while true {
        let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break }
        text.append(contentsOf: chunk[0..<count])
      }
      for line in text.split(separator: UInt8(ascii: "\n")) {
        let fields = line.split(
          separator: UInt8(ascii: " "), maxSplits: 5, omittingEmptySubsequences: true)
        guard fields.count >= 5 else { continue }
        let permissions = Array(fields[1])
        let bounds = fields[0].split(separator: UInt8(ascii: "-"))
        guard permissions.count == 4, bounds.count == 2,
          let start = UInt(String(decoding: bounds[0], as: UTF8.self), radix: 16),
          let end = UInt(String(decoding: bounds[1], as: UTF8.self), radix: 16)
        else { continue }
        let name =
          fields.count == 6
          ? String(decoding: fields[5], as: UTF8.self).trimmingLeadingSpaces() : ""
        result.append(
          Mapping(
            range: AddressRange(start: start, end: end),
            readable: permissions[0] == UInt8(ascii: "r"),
            writable: permissions[1] == UInt8(ascii: "w"),
            isPrivate: permissions[3] == UInt8(ascii: "p"), name: name))
      }
      return result
    }

    /// Maps every page of the process's own mappings into its page table: code and read-only data
    /// with MADV_POPULATE_READ, private writable memory with MADV_POPULATE_WRITE (which also breaks
    /// copy-on-write after `fork`). `excluded` (the workload's regions) is left alone. Kernel special
    /// mappings ([vvar], [vdso], [vsyscall]) cannot be populated and are skipped.
    static func prefault(excluding excluded: [AddressRange]) {
      for mapping in mappings() where mapping.readable {
        if mapping.name.hasPrefix("["), mapping.name != "[heap]", mapping.name != "[stack]" {
          continue
        }
        let advice: PageAdvice =
          mapping.writable && mapping.isPrivate ? .populateWrite : .populateRead
        for piece in subtract(excluded, from: mapping.range) {
          // Failures (a file mapping past the end of its file) only leave pages unpopulated.
          _ = madvise(
            UnsafeMutableRawPointer(bitPattern: piece.start), Int(piece.length), advice.rawValue)
        }
      }
    }

    /// `range` less every excluded range, as ascending pieces.
    static func subtract(_ excluded: [AddressRange], from range: AddressRange) -> [AddressRange] {
      var pieces = [range]
      for cut in excluded where cut.overlaps(range) {
        pieces = pieces.flatMap { piece -> [AddressRange] in
          guard cut.overlaps(piece) else { return [piece] }
          var rest: [AddressRange] = []
          if cut.start > piece.start {
            rest.append(AddressRange(start: piece.start, end: cut.start))
          }
          if cut.end < piece.end { rest.append(AddressRange(start: cut.end, end: piece.end)) }
          return rest
        }
      }
      return pieces
    }

    /// Extends the main thread's stack by `bytes` below the current frame and makes it present, so
    /// that deeper calls inside a window do not grow it. Writing below the stack pointer is safe
    /// here: the process is single-threaded and the pages written are beyond any live frame.
    static func growStack(by bytes: UInt = 256 * 1024) {
      var marker: UInt8 = 0
      let pageSize = UInt(sysconf(Int32(_SC_PAGESIZE)))
      let here = withUnsafeMutablePointer(to: &marker) { UInt(bitPattern: $0) } & ~(pageSize - 1)
      let space = SystemPageSpace()
      // One write per page, top-down: the kernel grows the stack VMA one fault at a time. The first
      // pages below this frame are left to the callees (store, the probe) that do the writing.
      var page = here - 16 * pageSize
      while page >= here - bytes {
        try? space.store(0, at: page)
        page -= pageSize
      }
    }

    /// Fills every hole of the mmap area with a PROT_NONE shared anonymous fence and puts one more
    /// fence page below the lowest mapping. From then on the kernel's top-down search places each
    /// new mapping directly below the previous one, as in a fresh process, and the workload's first
    /// mapping cannot merge with the runtime's memory (shared anonymous memory never merges with
    /// private). The mmap area runs from the mapping above the largest gap (the one between the
    /// heap and the libraries) up to the last mapping below [stack]; the gap below the stack is
    /// above `mmap_base` and left alone.
    static func fenceHoles() {
      let all = mappings().filter { $0.range.start < 0x8000_0000_0000 }  // not [vsyscall]
      guard let stackIndex = all.firstIndex(where: { $0.name == "[stack]" }), stackIndex > 1 else {
        return
      }
      let below = all[0..<stackIndex]
      var largestGap = below.startIndex
      var largest: UInt = 0
      for index in below.indices.dropFirst() {
        let gap = below[index].range.start - below[index - 1].range.end
        if gap > largest {
          largest = gap
          largestGap = index
        }
      }
      let pageSize = UInt(sysconf(Int32(_SC_PAGESIZE)))
      let fenceFlags =
        MAP_SHARED | MAP_ANONYMOUS | MapFlags([.noReserve, .fixedNoReplace]).rawValue
      for index in (largestGap + 1)..<stackIndex {
        let start = below[index - 1].range.end
        let end = below[index].range.start
        guard end > start else { continue }
        _ = mmap(
          UnsafeMutableRawPointer(bitPattern: start), Int(end - start), PROT_NONE, fenceFlags, -1, 0
        )
      }
      _ = mmap(
        nil, Int(pageSize), PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MapFlags.noReserve.rawValue, -1,
        0)
    }
  }

  extension String {
    fileprivate func trimmingLeadingSpaces() -> String {
      String(drop { $0 == " " })
    }
  }
#endif
