//! Salt minion ids as the controller accepts them.
//!
//! A minion picks its own id, and the controller puts ids in places where
//! text is code: salt-api targets, the URL the master asks for pillar, the
//! master's ext_pillar command line. Salt itself only refuses `/`, `\` and
//! NUL, so the controller checks every id it takes in against a narrow
//! alphabet (`A-Z a-z 0-9 . _ -`, not `.` or `..`) and refuses the rest by
//! name, instead of quoting them for each place they go.

use std::fmt;

/// The longest id taken (Salt's ids are hostnames in practice: 253).
pub const MAX_LEN: usize = 253;

/// Why a minion id is refused. The id is shown escaped (`{:?}`), so a
/// hostile one cannot forge log lines or terminal output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMinionId {
    /// The id as given.
    pub id: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for InvalidMinionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.id.chars().take(80).collect();
        write!(
            f,
            "minion id {shown:?} is not accepted: {}; ids may only hold \
             letters, digits, `.`, `_` and `-`",
            self.reason
        )
    }
}

impl std::error::Error for InvalidMinionId {}

/// Whether `id` is a minion id the controller will use.
pub fn check(id: &str) -> Result<(), InvalidMinionId> {
    let refuse = |reason| {
        Err(InvalidMinionId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return refuse("it is empty");
    }
    if id.len() > MAX_LEN {
        return refuse("it is longer than 253 bytes");
    }
    if id == "." || id == ".." {
        return refuse("`.` and `..` are path segments");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return refuse("it holds a character outside the allowed set");
    }
    Ok(())
}

/// Whether `id` is a minion id the controller will use.
pub fn is_valid(id: &str) -> bool {
    check(id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minion_ids_are_checked_against_a_narrow_alphabet() {
        let table: &[(&str, bool)] = &[
            ("edge-ams-1", true),
            ("edge_ams.1", true),
            ("EDGE01", true),
            ("a", true),
            ("...", true),
            (".hidden", true),
            ("", false),
            (".", false),
            ("..", false),
            ("edge ams", false),
            ("edge,ams", false),
            ("edge;reboot", false),
            ("x -o/etc/cron.d/evil", false),
            ("$(id)", false),
            ("`id`", false),
            ("a'b", false),
            ("a\"b", false),
            ("a/b", false),
            ("a\\b", false),
            ("a\nb", false),
            ("a\0b", false),
            ("a%2fb", false),
            ("a*", false),
            ("G@role:edge", false),
            ("édge", false),
            ("a:b", false),
        ];
        for (id, ok) in table {
            assert_eq!(is_valid(id), *ok, "{id:?}");
        }
        assert!(is_valid(&"a".repeat(MAX_LEN)));
        assert!(!is_valid(&"a".repeat(MAX_LEN + 1)));
    }

    #[test]
    fn the_refusal_names_the_id_escaped() {
        let e = check("a\nFAKE LOG LINE").unwrap_err().to_string();
        assert!(e.contains(r#""a\nFAKE LOG LINE""#), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("letters, digits"), "{e}");
    }
}
