import CLinuxShims

/// The daemon's own memory housekeeping.
public enum ProcessMemory {
    /// Hands freed heap pages back to the kernel. Loading a large schedule allocates far more temporaries than
    /// the jobs it keeps; without this, glibc holds on to them and the resident set stays high for good.
    public static func releaseFreedMemory() {
        _ = snapcron_malloc_trim()
    }
}
