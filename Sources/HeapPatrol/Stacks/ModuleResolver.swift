import CShims

/// Resolves return addresses to (module path, offset) for reports, at report time only. Each lookup
/// (`cshim_module_for_pc`) reads /proc/self/maps twice, so resolved PCs and module paths are cached in
/// caller-provided memory; the cache never allocates. `reset()` forgets everything (modules may have
/// been loaded or unloaded since the last report).
public struct ModuleResolver {
  public static let pcSlots = 512
  public static let pathSlots = 48
  public static let pathCapacity = 1024
  /// Bytes of memory `init(memory:)` needs.
  public static let memorySize =
    8 + pcSlots * MemoryLayout<CachedPC>.stride + pathSlots * (pathCapacity + 8)

  struct CachedPC {
    var pc: UInt
    var offset: UInt
    /// Path slot + 1; 0 = the slot is empty; -1 = no module contains this pc.
    var path: Int32
  }

  let state: UnsafeMutablePointer<Int>  // [0]: paths used
  let cachedPCs: UnsafeMutablePointer<CachedPC>
  let pathLengths: UnsafeMutablePointer<Int>
  let paths: UnsafeMutablePointer<UInt8>

  /// `memory` must hold `memorySize` bytes, 8-byte aligned, and outlive the resolver.
  public init(memory: UnsafeMutableRawPointer) {
    state = memory.bindMemory(to: Int.self, capacity: 1)
    cachedPCs = (memory + 8).bindMemory(to: CachedPC.self, capacity: ModuleResolver.pcSlots)
    let afterPCs = memory + 8 + ModuleResolver.pcSlots * MemoryLayout<CachedPC>.stride
    pathLengths = afterPCs.bindMemory(to: Int.self, capacity: ModuleResolver.pathSlots)
    paths = (afterPCs + ModuleResolver.pathSlots * 8).bindMemory(
      to: UInt8.self, capacity: ModuleResolver.pathSlots * ModuleResolver.pathCapacity)
    reset()
  }

  public func reset() {
    state[0] = 0
    for index in 0..<ModuleResolver.pcSlots {
      cachedPCs[index] = CachedPC(pc: 0, offset: 0, path: 0)
    }
  }

  /// The module containing `pc` and the offset to give a symbolizer, or nil when no file maps it.
  public func resolve(_ pc: UInt) -> (path: UnsafeBufferPointer<UInt8>, offset: UInt)? {
    let slot = Int((pc >> 2) % UInt(ModuleResolver.pcSlots))
    var cached = cachedPCs[slot]
    if cached.path == 0 || cached.pc != pc {
      cached = lookUp(pc)
      cachedPCs[slot] = cached
    }
    guard cached.path > 0 else { return nil }
    let pathSlot = Int(cached.path) - 1
    return (
      UnsafeBufferPointer(
        start: paths + pathSlot * ModuleResolver.pathCapacity, count: pathLengths[pathSlot]),
      cached.offset
    )
  }

  private func lookUp(_ pc: UInt) -> CachedPC {
    var scratch = InlineArray<1024, UInt8>(repeating: 0)
    var offset: UInt = 0
    let found = withUnsafeMutableBytes(of: &scratch) { raw -> Int in
      let text = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
      guard cshim_module_for_pc(pc, text, raw.count, &offset) == 0 else { return -1 }
      var length = 0
      while length < raw.count && raw[length] != 0 { length += 1 }
      let bytes = UnsafeBufferPointer(
        start: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), count: length)
      return internPath(bytes)
    }
    return CachedPC(pc: pc, offset: offset, path: found < 0 ? -1 : Int32(found + 1))
  }

  /// The slot holding `bytes`, adding it if new (when all slots are used the cache starts over, so
  /// no cached pc is left pointing at a reused slot).
  private func internPath(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
    var used = state[0]
    for slot in 0..<used {
      let stored = paths + slot * ModuleResolver.pathCapacity
      if pathLengths[slot] == bytes.count
        && (0..<bytes.count).allSatisfy({ stored[$0] == bytes[$0] })
      {
        return slot
      }
    }
    if used == ModuleResolver.pathSlots {
      reset()
      used = 0
    }
    let slot = used
    state[0] = used + 1
    let destination = paths + slot * ModuleResolver.pathCapacity
    let length = min(bytes.count, ModuleResolver.pathCapacity)
    for index in 0..<length { destination[index] = bytes[index] }
    pathLengths[slot] = length
    return slot
  }
}
