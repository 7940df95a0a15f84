//! A scratch folder per test, removed afterwards unless the test failed (then
//! its path is printed, with the processes' logs inside).

use std::path::{Path, PathBuf};

/// A test's scratch folder.
pub struct Workdir {
    path: PathBuf,
    keep: bool,
}

impl Workdir {
    /// A fresh folder named after the test.
    pub fn new(name: &str) -> Self {
        let base = std::env::var_os("WARREN_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("warren-tests"));
        let path = base.join(format!(
            "{name}-{}-{}",
            std::process::id(),
            crate::net::random_u32()
        ));
        std::fs::create_dir_all(&path).expect("create workdir");
        Self { path, keep: false }
    }

    /// A fresh folder with a short path (`/tmp/wf-XXXXXXXX`), for tools that
    /// put unix sockets inside it (their paths are limited to 108 bytes).
    pub fn short(name: &str) -> Self {
        let path = PathBuf::from(format!("/tmp/wf-{:08x}", crate::net::random_u32()));
        std::fs::create_dir_all(&path).expect("create workdir");
        std::fs::write(path.join("NAME"), name).expect("write name");
        Self { path, keep: false }
    }

    /// Keeps the folder when it is dropped (a run that failed without a
    /// panic, such as the demo returning an error), and says where it is.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside it.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("files and logs are kept in {}", self.path.display());
        } else if std::thread::panicking() {
            eprintln!(
                "test failed; its files and logs are kept in {}",
                self.path.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A folder for what a test leaves to look at afterwards, such as a
/// screenshot, kept whether the test passes or fails (a [`Workdir`] is
/// removed on success): `$WARREN_TEST_ARTIFACTS/<name>`, default
/// `<target>/test-artifacts/<name>`.
pub fn artifacts(name: &str) -> PathBuf {
    let base = std::env::var_os("WARREN_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let profile = crate::bins::profile_dir();
            profile.parent().unwrap_or(&profile).join("test-artifacts")
        });
    let path = base.join(name);
    std::fs::create_dir_all(&path).expect("create the artifacts folder");
    path
}
