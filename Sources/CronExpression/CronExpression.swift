// The cron engine: parser, normalizer, describer and next-fire search (no I/O).
