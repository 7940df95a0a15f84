//! Where the binaries under test are, built once per test run with the same
//! profile as the tests, so a test never runs a stale binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// `target/<profile>` of the running test binary.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

const KEEP_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "CARGO_TARGET_DIR",
    "TMPDIR",
];

/// The path of a workspace binary, building the workspace's binaries first
/// (once per process) when they may be stale.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os("WARREN_SKIP_BUILD").is_some() {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // The same selection as `cargo test --workspace` (bins and tests of
        // every member), so features unify the same way and nothing is
        // compiled twice; and a clean environment, because the variables
        // cargo sets for a test would make build scripts rerun.
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace())
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| KEEP_ENV.contains(&k.as_str())))
            .args(["build", "--quiet", "--workspace", "--bins", "--tests"]);
        if profile_dir().file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
    });
    let path = profile_dir().join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path
}
