import CLinuxShims

/// The daemon's own memory housekeeping.
public enum ProcessMemory {
    /// Hands freed heap pages back to the kernel. Loading a large schedule allocates far more temporaries than
    /// the jobs it keeps; without this, glibc holds on to them and the resident set stays high for good.
    public static func releaseFreedMemory() {
        _ = snapcron_malloc_trim()
    }

    /// Gives buffers of 1 MiB and more pages of their own, handed back when freed: a daemon that renders a 16 MB
    /// metrics exposition each second (or answers a 2.8 MB `jobs` list) would otherwise keep every freed copy
    /// resident in glibc's heaps. Called once at start.
    public static func returnLargeBuffersWhenFreed() {
        _ = snapcron_malloc_fix_mmap_threshold(1 << 20)
    }
}
