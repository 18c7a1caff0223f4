/// An image as the API returns it (`GET images/`, `GET images/<id>/`, `PUT images/<srv>/save/`).
struct WireImage: Decodable, Sendable {
    struct ServerRef: Decodable, Sendable {
        var id: Int?
    }

    var id: Int
    var name: String?
    var desc: String?
    var status: String?
    var statusReason: String?
    var createTime: String?
    var isPublic: Bool?
    /// `null` for images not made from a server (public images).
    var server: ServerRef?

    enum CodingKeys: String, CodingKey {
        case id, name, desc, status, server
        case statusReason = "status_reason"
        case createTime = "create_time"
        case isPublic = "is_public"
    }
}

/// A VCS instance ("site").
struct WireSite: Decodable, Sendable {
    struct ServerRef: Decodable, Sendable {
        var id: Int
    }

    var id: Int
    var name: String?
    var status: String?
    /// The site's servers; a VCS site has one.
    var servers: [ServerRef]?
}

/// A server of a site; `os` and `os_version` go into the save request.
struct WireServer: Decodable, Sendable {
    var id: Int
    var os: String?
    var osVersion: String?

    enum CodingKeys: String, CodingKey {
        case id, os
        case osVersion = "os_version"
    }
}

/// The body of `PUT images/<server>/save/`, field for field what twccli sends.
struct WireSaveRequest: Encodable, Sendable {
    var name: String
    var desc: String
    var os: String
    var osVersion: String

    enum CodingKeys: String, CodingKey {
        case name, desc, os
        case osVersion = "os_version"
    }
}

/// An error body: DRF's `{"detail": ...}` or the gateway's `{"message": ...}`.
struct WireError: Decodable, Sendable {
    var detail: String?
    var message: String?
}
