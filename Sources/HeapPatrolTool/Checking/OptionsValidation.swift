import Foundation
import HeapPatrol

/// Checks a user's option string before the program starts, so a typo is a clear error from the CLI
/// instead of a program run without the intended setting. The preload checks again (it is the
/// authority on values); this catches malformed pairs up front.
public enum OptionsValidation {
  /// The option names the preload understands, when known to this build.
  public static let knownNames: Set<String>? = Set(OptionsTable.all.map(\.name))

  public static func validate(_ options: String?) throws {
    guard let options else { return }
    for part in options.split(separator: ",", omittingEmptySubsequences: true) {
      let pair = part.trimmingCharacters(in: .whitespaces)
      if pair.isEmpty { continue }
      guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
        throw CheckError(
          "bad option '\(pair)' in --options: expected key=value (see `heappatrol options`)")
      }
      let name = String(pair[..<equals])
      if let knownNames, !knownNames.contains(name) {
        throw CheckError("unknown option '\(name)' in --options (see `heappatrol options`)")
      }
    }
  }
}
