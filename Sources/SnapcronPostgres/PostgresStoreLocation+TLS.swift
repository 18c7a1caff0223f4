import PostgresNIO

extension PostgresStoreLocation {
    /// The client TLS settings of `sslmode` (NIOSSL, which PostgresNIO brings).
    func tlsConfiguration() -> TLSConfiguration? {
        switch tls {
        case .disable:
            return nil
        case .require:
            // libpq's `require`: encrypted against eavesdropping, the server not authenticated.
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = .none
            return configuration
        case .verifyFull:
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = .fullVerification
            if let rootCertificates { configuration.trustRoots = .file(rootCertificates) }
            return configuration
        }
    }

    /// For the single connection that migrates and registers.
    func connectionTLS() throws -> PostgresConnection.Configuration.TLS {
        guard let configuration = tlsConfiguration() else { return .disable }
        do {
            return .require(try NIOSSLContext(configuration: configuration))
        } catch {
            throw PostgresStoreError(.cannotConnect, "store \(self): cannot set up TLS: \(error)")
        }
    }

    /// For the pool.
    var clientTLS: PostgresClient.Configuration.TLS {
        tlsConfiguration().map { .require($0) } ?? .disable
    }
}
