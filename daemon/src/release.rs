//! Which release a process is: the version it reports in `*_build_info`, and
//! the fault-injection settings a test release may carry.
//!
//! A release folder holds the binary and a `release.json` manifest beside it.
//! The manifest's version is what the process reports, so the tests can make
//! a second release from the same build without compiling again. Without a
//! manifest (a development build) the crate version is reported.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The manifest's file name, in the same folder as the binary.
pub const MANIFEST: &str = "release.json";

/// A release manifest as written by `scripts/release`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `edge`, `connector` or `rollout`.
    pub component: String,
    /// The version this release reports.
    pub version: String,
    /// SHA-256 of the binary, for auditing what runs.
    #[serde(default)]
    pub binary_sha256: Option<String>,
    /// Deliberate misbehaviour for testing rollbacks. Off unless set.
    #[serde(default)]
    pub fault_injection: FaultInjection,
}

/// Deliberate misbehaviour, named plainly so nobody ships it by mistake.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultInjection {
    /// Fraction (0 to 1) of proxied requests the edge answers with a 500.
    #[serde(default)]
    pub http_500_ratio: f64,
    /// The process never reports ready.
    #[serde(default)]
    pub never_ready: bool,
    /// The process exits at once (status 3), as a release that cannot
    /// start does.
    #[serde(default)]
    pub exit_at_start: bool,
}

impl FaultInjection {
    /// Whether any fault is switched on.
    pub fn any(&self) -> bool {
        self.http_500_ratio > 0.0 || self.never_ready || self.exit_at_start
    }
}

/// What this process is.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// The version reported in `*_build_info`.
    pub version: String,
    /// Faults to inject.
    pub fault_injection: FaultInjection,
    /// Where the manifest came from, if any.
    pub manifest_path: Option<PathBuf>,
}

/// Reads the manifest beside the running binary, if there is one.
pub fn current(component: &str, built_version: &str) -> anyhow::Result<Release> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    from_dir(dir, component, built_version)
}

/// Reads `dir/release.json` if it exists; otherwise a development release.
pub fn from_dir(dir: &Path, component: &str, built_version: &str) -> anyhow::Result<Release> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Release {
                version: built_version.to_string(),
                fault_injection: FaultInjection::default(),
                manifest_path: None,
            });
        }
        Err(e) => anyhow::bail!("cannot read release manifest {}: {e}", path.display()),
    };
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("release manifest {} is invalid: {e}", path.display()))?;
    if m.component != component {
        anyhow::bail!(
            "release manifest {} is for `{}`, but this binary is `{component}`",
            path.display(),
            m.component
        );
    }
    if m.version.trim().is_empty() {
        anyhow::bail!("release manifest {} has an empty version", path.display());
    }
    if !(0.0..=1.0).contains(&m.fault_injection.http_500_ratio) {
        anyhow::bail!(
            "release manifest {}: fault_injection.http_500_ratio must be between 0 and 1",
            path.display()
        );
    }
    Ok(Release {
        version: m.version,
        fault_injection: m.fault_injection,
        manifest_path: Some(path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_sets_the_version_and_faults() {
        let dir = std::env::temp_dir().join(format!("warren-release-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(from_dir(&dir, "edge", "0.1.0").unwrap().version, "0.1.0");

        std::fs::write(
            dir.join(MANIFEST),
            r#"{"component":"edge","version":"v2","fault_injection":{"http_500_ratio":0.5}}"#,
        )
        .unwrap();
        let r = from_dir(&dir, "edge", "0.1.0").unwrap();
        assert_eq!(r.version, "v2");
        assert_eq!(r.fault_injection.http_500_ratio, 0.5);

        let err = from_dir(&dir, "connector", "0.1.0").unwrap_err();
        assert!(err.to_string().contains("is for `edge`"), "{err}");

        std::fs::write(
            dir.join(MANIFEST),
            r#"{"component":"edge","version":"v2","x":1}"#,
        )
        .unwrap();
        assert!(from_dir(&dir, "edge", "0.1.0").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
