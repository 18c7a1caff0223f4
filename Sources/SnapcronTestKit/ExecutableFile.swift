import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Writes `text` to `path` as an executable file (mode 0755), through a descriptor no spawned process inherits.
///
/// Foundation writes files through descriptors without close-on-exec, and its `Process` closes nothing in the
/// child: a daemon a test started meanwhile would keep the file open for writing as long as it lives, and every
/// exec of the script would fail with ETXTBSY ("text file busy"). CI saw exactly that.
public func writeExecutable(_ text: String, to path: String) throws {
    try writeExecutable(Data(text.utf8), to: path)
}

/// ``writeExecutable(_:to:)`` for bytes (a copy of a program).
public func writeExecutable(_ data: Data, to path: String) throws {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
    guard descriptor >= 0 else {
        throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, "errno": errno])
    }
    defer { close(descriptor) }
    var bytes = Array(data)[...]
    while !bytes.isEmpty {
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        if written < 0 {
            if errno == EINTR { continue }
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, "errno": errno])
        }
        bytes = bytes.dropFirst(written)
    }
    fchmod(descriptor, 0o755)  // O_CREAT's mode is masked by the umask
}
