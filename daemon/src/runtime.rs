//! The async runtime of the edge and the connector, sized to the CPUs the
//! process may use.

use tokio::runtime::{Builder, Runtime};

/// A runtime with one worker thread per CPU the process may run on
/// (`taskset`, cgroup quotas). On a single CPU that is the current-thread
/// runtime: the multi-thread scheduler's one worker would still pay for
/// its cross-thread machinery (an injection queue, a thread parked on a
/// futex between the runtime's own I/O driver and the main thread) with
/// nothing to share the work with.
pub fn build() -> std::io::Result<Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cpus == 1 {
        Builder::new_current_thread()
    } else {
        Builder::new_multi_thread()
    };
    builder.enable_all().build()
}
