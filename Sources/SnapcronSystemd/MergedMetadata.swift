internal import Logging

extension LogEvent {
    /// The metadata one entry carries, by precedence: the handler's own, then its provider's, then the event's
    /// error (as `error`), then the event's explicit metadata. Both handlers write exactly this.
    func mergedMetadata(handler: Logger.Metadata, provider: Logger.MetadataProvider?) -> Logger.Metadata {
        var merged = handler
        if let provided = provider?.get() {
            merged.merge(provided) { _, new in new }
        }
        if let error {
            merged["error"] = "\(error)"
        }
        if let explicit = metadata {
            merged.merge(explicit) { _, new in new }
        }
        return merged
    }
}
