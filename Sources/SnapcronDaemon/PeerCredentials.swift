import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Who is on the other end of a control connection, from the kernel (SO_PEERCRED).
public struct PeerCredentials: Sendable, Hashable, CustomStringConvertible {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
    /// The process's supplementary groups as the kernel saw them at connect time (SO_PEERGROUPS), without the
    /// root group; nil when they could not be read.
    public var groups: Set<UInt32>?

    public init(pid: Int32, uid: UInt32, gid: UInt32, groups: Set<UInt32>? = nil) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.groups = groups
    }

    /// `struct ucred` of <sys/socket.h>, which the Glibc module does not export.
    struct UCred: Sendable {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
    }

    /// SO_PEERGROUPS (Linux 4.13), which the Glibc module does not export.
    static let soPeerGroups: Int32 = 59

    /// Room for a peer's supplementary groups. The option's length is not returned to us and the rest stays zero,
    /// so group 0 cannot be told from padding and is dropped; more groups than fit make the read fail (then the
    /// user database alone decides).
    struct GroupList: Sendable {
        var gids = InlineArray<256, UInt32>(repeating: 0)

        func groups(besides primary: UInt32) -> Set<UInt32> {
            var result: Set<UInt32> = []
            for index in gids.indices where gids[index] != 0 { result.insert(gids[index]) }
            result.remove(primary)
            return result
        }
    }

    /// The user's name, or the number when the user database does not know it.
    public var userName: String {
        guard let entry = getpwuid(uid), let name = entry.pointee.pw_name else { return "uid \(uid)" }
        return String(cString: name)
    }

    public var description: String { "\(userName) (uid \(uid), gid \(gid), pid \(pid))" }
}

/// Who may call the methods that change state: root, the daemon's own user, and members of the socket's group.
public struct ControlAccess: Sendable {
    /// The daemon's effective user.
    public var ownUID: UInt32
    /// The socket's group; nil when it does not exist (then only root and the daemon's user may change state).
    public var groupID: UInt32?
    public var groupName: String

    public init(ownUID: UInt32 = geteuid(), groupName: String) {
        self.ownUID = ownUID
        self.groupName = groupName
        groupID = getgrnam(groupName).map { $0.pointee.gr_gid }
    }

    public init(ownUID: UInt32, groupID: UInt32?, groupName: String) {
        self.ownUID = ownUID
        self.groupID = groupID
        self.groupName = groupName
    }

    /// Whether `peer` may call the methods that change state.
    public func mayChangeState(_ peer: PeerCredentials) -> Bool {
        if peer.uid == 0 || peer.uid == ownUID { return true }
        guard let groupID else { return false }
        // The process's own groups (e.g. SupplementaryGroups= of a unit), else those the user database lists.
        if peer.gid == groupID || peer.groups?.contains(groupID) == true { return true }
        return Self.groups(of: peer).contains(groupID)
    }

    /// nil when `peer` may change state, else why not (for the JSON-RPC error).
    public func refusal(for peer: PeerCredentials?, method: String) -> String? {
        guard let peer else {
            return "\(method) changes state and the caller's credentials could not be read; refused"
        }
        if mayChangeState(peer) { return nil }
        let group =
            groupID == nil ? "group '\(groupName)' (which does not exist on this system)" : "group '\(groupName)'"
        return "\(method) changes state: only root, snapcrond's user and members of \(group) may call it; "
            + "you are \(peer.userName) (uid \(peer.uid)), not in that group"
    }

    /// The peer's primary group and every group the user database lists for the peer's user.
    static func groups(of peer: PeerCredentials) -> Set<UInt32> {
        var result: Set<UInt32> = [peer.gid]
        guard let entry = getpwuid(peer.uid), let name = entry.pointee.pw_name else { return result }
        let baseGroup = entry.pointee.pw_gid
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(name, baseGroup, &groups, &count) == -1 {
            groups = [gid_t](repeating: 0, count: Int(count))
            _ = getgrouplist(name, baseGroup, &groups, &count)
        }
        result.formUnion(groups.prefix(Int(max(0, count))))
        return result
    }
}
