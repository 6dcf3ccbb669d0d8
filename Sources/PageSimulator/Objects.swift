// Shared memory objects: the shmem object behind a MAP_SHARED|MAP_ANONYMOUS mapping, and simulated
// files with a page cache. Order-0 page cache only: large folios (which let one read fault map a whole
// 256-page folio on the measured machine, kernel-semantics.md §2) are NOT modelled; read faults map the
// 16-page fault-around window of cached pages instead, which is exact for order-0 page cache.

/// One page of an object.
enum ObjectPage: Equatable {
  case absent
  case resident(frame: UInt32, dirty: Bool)
  case swapped(Int)
}

/// A simulated file on a simulated disk. Its page cache lives in the machine while it is mapped or
/// cached; `contents` is what is on disk.
public final class SimulatedFile {
  public let name: String
  /// What is on disk, page by page (nil: a page of zeros).
  var disk: [UnsafeMutableRawPointer?]
  /// Pages read around a major fault (read_ahead_kb / 4 on the measured machine: 2048). MADV_RANDOM
  /// mappings read only the faulting page.
  public var readAroundPages: Int
  /// Pages written back to disk (msync, munmap of a shared mapping, reclaim of a dirty page).
  public internal(set) var pagesWrittenBack = 0
  weak var object: MemoryObject?

  public init(name: String, bytes: [UInt8], readAroundPages: Int = 2048) {
    self.name = name
    self.readAroundPages = readAroundPages
    let pages = (bytes.count + 4095) / 4096
    disk = Array(repeating: nil, count: pages)
    for page in 0..<pages {
      let chunk = bytes[(page * 4096)..<min(bytes.count, (page + 1) * 4096)]
      guard chunk.contains(where: { $0 != 0 }) else { continue }
      let data = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)
      data.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
      chunk.withUnsafeBytes { data.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
      disk[page] = data
    }
  }

  deinit { for page in disk { page?.deallocate() } }

  public var pageCount: Int { disk.count }

  /// The bytes on disk (not including dirty page-cache pages not yet written back).
  public func diskBytes(page: Int) -> [UInt8] {
    guard let data = disk[page] else { return [UInt8](repeating: 0, count: 4096) }
    return Array(UnsafeRawBufferPointer(start: data, count: 4096))
  }
}

/// A page cache: shmem (swap-backed) or a file's (disk-backed).
final class MemoryObject {
  let id: UInt32
  var pages: [ObjectPage]
  let file: SimulatedFile?
  /// A process that mapped it, to charge swap-outs to when no page table maps a page.
  var lastMapper: Int?
  var isShmem: Bool { file == nil }

  init(id: UInt32, pages: Int, file: SimulatedFile?) {
    self.id = id
    self.pages = Array(repeating: .absent, count: pages)
    self.file = file
  }

  func writeBack(page: Int, from machine: SimulatedMachine, frame: UInt32) {
    guard let file, page < file.disk.count, case .resident(_, let dirty) = pages[page], dirty else {
      return
    }
    if let data = machine.readableData(frame) {
      let target =
        file.disk[page] ?? UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)
      target.copyMemory(from: data, byteCount: 4096)
      file.disk[page] = target
    } else {
      file.disk[page]?.deallocate()
      file.disk[page] = nil
    }
    file.pagesWrittenBack += 1
    pages[page] = .resident(frame: frame, dirty: false)
    // page_mkclean: every mapping becomes clean and write-protected, so the next write notifies again.
    for key in machine.mappers(of: frame) {
      machine.process(mapperProcess(key))?.cleanMapping(vpn: mapperVPN(key))
    }
  }
}
