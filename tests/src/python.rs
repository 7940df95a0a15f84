//! The Python clients and servers the tests drive (websockets, grpcio), from
//! the venv `scripts/setup` keeps in the cache folder; the scripts are in
//! `tests/py/`.

use std::path::PathBuf;

use crate::bins::workspace;

/// The cache folder (`$WARREN_CACHE`, default `~/.cache/warren`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("WARREN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/warren")
        })
}

/// The venv's Python; panics with the fix when `scripts/setup` has not run.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("WARREN_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("py-clients"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup (it installs websockets and grpcio there)",
        py.display()
    );
    py
}

/// A script in `tests/py/`.
pub fn script(name: &str) -> PathBuf {
    workspace().join("tests/py").join(name)
}
