//! The allocator both binaries use, and how it is tuned.

// Batches allocate and free tensors of megabytes every step; the system allocator returns them
// to the OS each time and pays page faults to get them back.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps freed memory mapped instead of returning it to the OS after mimalloc's default 10 ms:
/// a forward pass frees and re-allocates the same tens of megabytes every batch, and zeroing
/// the re-faulted pages cost 8% of text-encoding time (perf). RSS stays at its peak instead.
pub fn keep_freed_memory() {
    extern "C" {
        fn mi_option_set(option: std::os::raw::c_int, value: std::os::raw::c_long);
    }
    // `mi_option_purge_delay` is entry 15 of `mi_option_e` in mimalloc v2 and v3
    const MI_OPTION_PURGE_DELAY: std::os::raw::c_int = 15;
    // SAFETY: sets an allocator option; callable at any time from any thread.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
