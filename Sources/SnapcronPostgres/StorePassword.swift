import Foundation
import SnapcronCore

#if canImport(Glibc)
    import Glibc
#endif

/// The `[store]` password, from its systemd credential or its file; never from the config itself.
public enum StorePassword {
    /// Why the password could not be read; the message names where it was looked for, never the password.
    public struct ReadError: Error, CustomStringConvertible {
        public var description: String
    }

    /// The password; nil when neither `password_credential` nor `password_file` is set (trust or peer
    /// authentication).
    public static func read(_ settings: SharedStoreSettings, environment: [String: String]) throws(ReadError)
        -> String?
    {
        let path: String
        if let credential = settings.passwordCredential {
            guard let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty else {
                throw ReadError(
                    description: "[store] password_credential '\(credential)' needs $CREDENTIALS_DIRECTORY (run "
                        + "under systemd with LoadCredential=\(credential):...)")
            }
            path = directory + "/" + credential
        } else if let file = settings.passwordFile {
            var info = stat()
            if stat(file, &info) == 0, info.st_mode & 0o004 != 0 {
                throw ReadError(description: "[store] password_file '\(file)' is readable by everyone; chmod o-rwx it")
            }
            path = file
        } else {
            return nil
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ReadError(description: "[store] cannot read the password from '\(path)'")
        }
        let password = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .newlines)
        guard !password.isEmpty else { throw ReadError(description: "[store] the password in '\(path)' is empty") }
        return password
    }
}
