//! The unprivileged user the Salt states create and run `edge` and
//! `connector` as, and what a running process really is.

/// Its name (pillar `warren:user`, default).
pub const NAME: &str = "warren";

/// The uid and gid of the system user `name`, from /etc/passwd.
pub fn ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next();
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

/// What a running process is, from /proc/PID/status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Real, effective, saved and filesystem uid.
    pub uids: Vec<u32>,
    /// Real, effective, saved and filesystem gid.
    pub gids: Vec<u32>,
    /// Effective capabilities (hex mask).
    pub cap_eff: String,
}

/// The credentials of process `pid`, if it is alive.
pub fn credentials(pid: u32) -> Option<Credentials> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<Vec<String>> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(
            line[name.len()..]
                .split_whitespace()
                .map(String::from)
                .collect(),
        )
    };
    let numbers = |v: Vec<String>| v.iter().filter_map(|n| n.parse().ok()).collect();
    Some(Credentials {
        uids: numbers(field("Uid:")?),
        gids: numbers(field("Gid:")?),
        cap_eff: field("CapEff:")?.into_iter().next()?,
    })
}
