import CShims
import PageSpace
import Synchronization

// The heap's metadata, all in anonymous mmap'd memory of the real process (never malloc'd, never in the
// page space: a simulated space's addresses cannot be dereferenced). Zero-filled pages are a valid empty
// state for every table, so MAP_NORESERVE tables cost RSS only where they are used.
//
// Lock-free readers (the SIGSEGV handler, `HeapView.diagnose`) see these tables while an allocation on
// another thread may be changing them. The memory-ordering argument:
// - A reservation entry is written completely before `reservationCount` is raised with a releasing
//   store; readers load the count with acquiring ordering, so every entry they look at is complete.
//   Entries are never removed.
// - A block's record is written completely before the page-map entries that name it are stored with
//   releasing ordering; a reader that loads a page-map entry with acquiring ordering sees the record as
//   it was when the block was handed out. A fault on a block's pages can only come from a thread that
//   got the pointer after `allocate` returned, so it happens-after those stores.
// - The one benign race left: a record may be rewritten (a free changing its state, a recycled record)
//   while a handler reads it. The handler then reports a slightly stale or mixed snapshot for a block
//   that was being freed at that instant; it never reads unmapped memory (tables are never unmapped).

/// Maps `length` bytes of zero-filled, read-write, MAP_NORESERVE anonymous memory of the real process.
@usableFromInline
func mapTableMemory(_ length: UInt) -> UnsafeMutableRawPointer? {
  var result: UnsafeMutableRawPointer? = nil
  // PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE.
  let error = cshim_mmap(nil, Int(length), 0x3, 0x02 | 0x20 | 0x4000, -1, 0, &result)
  return error == 0 ? result : nil
}

/// How a block is protected.
public enum BlockProtection: UInt8, Sendable, Hashable {
  /// Guard pages are `MADV_GUARD_INSTALL` markers.
  case markers
  /// Guard pages are `PROT_NONE`; the block's pages were made read-write (2 VMAs).
  case mprotect
  /// No page protection: canary red zones around the block.
  case canary
}

/// One block in the block table. Record number 0 is never used (page-map entry 0 means "no block").
@usableFromInline
struct BlockRecord {
  @usableFromInline var sequence: UInt64 = 0
  @usableFromInline var address: UInt = 0
  @usableFromInline var size: UInt = 0
  @usableFromInline var alignment: UInt = 0
  /// The first page of the block's run.
  @usableFromInline var runBase: UInt = 0
  /// The first and one-past-last accessible byte: the pages made accessible for the block (guarded
  /// blocks) or the whole run (canary blocks). Everything in it outside the block is canary.
  @usableFromInline var accessibleStart: UInt = 0
  @usableFromInline var accessibleEnd: UInt = 0
  /// Pages of the run, not counting its trailing guard page.
  @usableFromInline var runPages: UInt32 = 0
  @usableFromInline var allocationStack: UInt32 = 0
  @usableFromInline var freeStack: UInt32 = 0
  @usableFromInline var allocationThread: Int32 = 0
  @usableFromInline var freeThread: Int32 = 0
  /// The next record in the quarantine FIFO, the released FIFO or the free-record list (0 = none).
  @usableFromInline var next: UInt32 = 0
  @usableFromInline var reservation: UInt16 = 0
  @usableFromInline var api: UInt8 = 0
  /// `AllocationAPI` raw value, or `noAPI`.
  @usableFromInline var freeAPI: UInt8 = BlockRecord.noAPI
  @usableFromInline var state: UInt8 = BlockRecord.unused
  @usableFromInline var protection: UInt8 = 0

  @usableFromInline static let noAPI: UInt8 = 0xFF
  /// `state` of a record that describes no block (never used, or recycled and not yet reused).
  @usableFromInline static let unused: UInt8 = 0xFF
  /// `state` of a block being freed: no longer live, its pages not yet closed, not yet in quarantine.
  @usableFromInline static let closing: UInt8 = 0xFE
  /// `state` of a block being reallocated: still accessible, but a second free of it is a double free.
  @usableFromInline static let moving: UInt8 = 0xFD

  @inlinable var blockState: BlockState? { BlockState(rawValue: state) }
  @inlinable var end: UInt { address &+ size }

  @inlinable
  func snapshot() -> BlockSnapshot {
    BlockSnapshot(
      index: sequence, address: address, size: size, alignment: alignment,
      api: AllocationAPI(rawValue: api) ?? .malloc, state: BlockState(rawValue: state) ?? .released,
      allocationThread: allocationThread, freeThread: freeThread,
      allocationStack: StackID(rawValue: allocationStack), freeStack: StackID(rawValue: freeStack),
      freeAPI: AllocationAPI(rawValue: freeAPI))
  }
}

/// A region of address space the heap carves runs from.
@usableFromInline
struct ReservationEntry {
  @usableFromInline var base: UInt = 0
  @usableFromInline var length: UInt = 0
  /// The page -> record map (`Atomic<UInt32>` per page), or 0 for a dedicated reservation.
  @usableFromInline var pageMap: UInt = 0
  /// The next page that was never carved.
  @usableFromInline var bump: UInt = 0
  /// Markers mode: the end of the read-write part (the rest is PROT_NONE until carved).
  @usableFromInline var frontier: UInt = 0
  /// `BlockProtection` of the blocks carved here (`.canary` reservations have no guard pages).
  @usableFromInline var protection: UInt8 = 0
  /// One block of its own (a block of at least 1/16 of the reservation size): its record is in
  /// `HeapHeader.dedicatedRecords[index]` instead of a page map.
  @usableFromInline var dedicated: Bool = false

  @inlinable var end: UInt { base &+ length }
  @inlinable var hasGuardPages: Bool { protection != BlockProtection.canary.rawValue }
}

/// A free run of pages, waiting in its size class's FIFO for reuse.
@usableFromInline
struct FreeRun {
  @usableFromInline var base: UInt = 0
  @usableFromInline var next: UInt32 = 0
  @usableFromInline var reservation: UInt16 = 0
}

/// The fixed part of the tables: the reservation directory.
@usableFromInline
struct HeapHeader {
  @usableFromInline static let maximumReservations = 1024
}

/// Run sizes are rounded to size classes so that freed runs can be reused: exact page counts up to 32,
/// then 4 classes per power of two (at most 25% of address space wasted, never memory: the unused
/// pages of a run stay guarded).
@usableFromInline
enum RunClass {
  @usableFromInline static let count = 200

  /// The class index and the rounded page count for a run of at least `pages` pages.
  @inlinable
  static func of(pages: UInt) -> (index: Int, pages: UInt) {
    if pages <= 32 { return (Int(pages), pages) }
    let exponent = UInt.bitWidth - (pages &- 1).leadingZeroBitCount  // pages - 1 < 2^exponent
    let step: UInt = 1 << (exponent - 3)
    let rounded = (pages + step - 1) / step * step
    let index = 33 + (exponent - 6) * 4 + Int(rounded / step) - 5
    return (index, rounded)
  }
}

/// A read-only view of the heap's tables for lock-free readers: the fault handler and `diagnose`.
/// Copyable and allocation-free; valid for the life of the heap (tables are never unmapped).
public struct HeapView: @unchecked Sendable {
  @usableFromInline let reservations: UnsafeMutablePointer<ReservationEntry>
  @usableFromInline let reservationCount: UnsafeMutablePointer<Atomic<Int>>
  @usableFromInline let dedicatedRecords: UnsafeMutablePointer<Atomic<UInt32>>
  @usableFromInline let records: UnsafeMutablePointer<BlockRecord>
  @usableFromInline let recordCapacity: Int
  public let pageSize: UInt

  @inlinable
  func reservationIndex(containing address: UInt) -> Int? {
    let count = reservationCount.pointee.load(ordering: .acquiring)
    var index = 0
    while index < count {
      let entry = reservations[index]
      if address >= entry.base && address < entry.end { return index }
      index += 1
    }
    return nil
  }

  /// The record number the page-map says owns the page of `address` (0 = none).
  @inlinable
  func recordNumber(at address: UInt, reservation index: Int) -> UInt32 {
    let entry = reservations[index]
    if entry.dedicated { return dedicatedRecords[index].load(ordering: .acquiring) }
    let page = (address &- entry.base) / pageSize
    let map = UnsafeMutablePointer<Atomic<UInt32>>(bitPattern: entry.pageMap)!
    return map[Int(page)].load(ordering: .acquiring)
  }

  /// Calls `body` with the address range of every reservation (for per-range VMA counts, maps).
  public func forEachReservation(_ body: (AddressRange) -> Void) {
    let count = reservationCount.pointee.load(ordering: .acquiring)
    var index = 0
    while index < count {
      body(AddressRange(start: reservations[index].base, length: reservations[index].length))
      index += 1
    }
  }

  /// Whether `address` lies in the heap's address space (a reservation), block or not.
  @inlinable
  public func owns(_ address: UInt) -> Bool { reservationIndex(containing: address) != nil }
}

/// Where the tables a lock-free `address -> live block` lookup reads are, and how they are laid out:
/// what a reader written in another language (the preload's C memory-operation checks) needs to
/// read them without a copy of the Swift declarations. Offsets, strides and field sizes come from
/// `MemoryLayout` of the real types, so a change to them changes this descriptor, never the meaning
/// of a byte on the reader's side. Readers follow the memory-ordering rules at the top of this file.
public struct HeapTableLayout: Sendable {
  /// The reservation directory (`reservationEntryStride` bytes per entry, never removed).
  public var reservations: UInt
  /// The number of entries in use: a machine word, loaded with acquiring ordering.
  public var reservationCount: UInt
  public var reservationCountSize: Int
  /// One record number (`UInt32`, acquiring loads) per reservation, for dedicated reservations.
  public var dedicatedRecords: UInt
  /// The block records (`recordStride` bytes each; record number 0 is never used).
  public var records: UInt
  public var recordCapacity: Int
  public var pageSize: UInt
  /// Stride of the page map's and the dedicated records' entries (`Atomic<UInt32>`).
  public var recordNumberStride: Int
  public var recordNumberSize: Int

  public var reservationEntryStride: Int
  public var reservationBase: FieldLayout
  public var reservationLength: FieldLayout
  /// The page map's address (0 for a dedicated reservation).
  public var reservationPageMap: FieldLayout
  /// A `Bool`: the reservation holds one block whose record number is in `dedicatedRecords`.
  public var reservationDedicated: FieldLayout

  public var recordStride: Int
  public var recordAddress: FieldLayout
  public var recordSize: FieldLayout
  public var recordState: FieldLayout
  public var recordReservation: FieldLayout
  /// The `state` value of a live block.
  public var liveState: UInt8

  /// A stored field: its byte offset in its struct and its size.
  public struct FieldLayout: Sendable {
    public var offset: Int
    public var size: Int
  }
}

extension HeapTableLayout.FieldLayout {
  static func of<Root, Value>(_ field: WritableKeyPath<Root, Value>) -> Self {
    // Stored properties of a struct always have an offset; nil would mean a computed property.
    Self(offset: MemoryLayout<Root>.offset(of: field)!, size: MemoryLayout<Value>.size)
  }
}

extension HeapView {
  /// The layout descriptor of this heap's tables (see `HeapTableLayout`).
  public var tableLayout: HeapTableLayout {
    HeapTableLayout(
      reservations: UInt(bitPattern: reservations),
      reservationCount: UInt(bitPattern: reservationCount),
      reservationCountSize: MemoryLayout<Atomic<Int>>.size,
      dedicatedRecords: UInt(bitPattern: dedicatedRecords),
      records: UInt(bitPattern: records),
      recordCapacity: recordCapacity,
      pageSize: pageSize,
      recordNumberStride: MemoryLayout<Atomic<UInt32>>.stride,
      recordNumberSize: MemoryLayout<Atomic<UInt32>>.size,
      reservationEntryStride: MemoryLayout<ReservationEntry>.stride,
      reservationBase: .of(\ReservationEntry.base),
      reservationLength: .of(\ReservationEntry.length),
      reservationPageMap: .of(\ReservationEntry.pageMap),
      reservationDedicated: .of(\ReservationEntry.dedicated),
      recordStride: MemoryLayout<BlockRecord>.stride,
      recordAddress: .of(\BlockRecord.address),
      recordSize: .of(\BlockRecord.size),
      recordState: .of(\BlockRecord.state),
      recordReservation: .of(\BlockRecord.reservation),
      liveState: BlockState.live.rawValue)
  }
}
