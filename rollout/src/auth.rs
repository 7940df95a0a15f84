//! Bearer tokens of `rollout serve`: the webhook's (Alertmanager sends it)
//! and the API's (the Salt master's pillar command and people reading the
//! status API send it), each read from a file so it never shows in a
//! process list.

use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// A bearer token. Only its SHA-256 digest is kept after startup, and
/// comparing two digests in constant time says nothing about the token's
/// length or about how much of a guess was right.
#[derive(Clone)]
pub struct BearerToken([u8; 32]);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(***)")
    }
}

/// Why a token file cannot be used; names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read (missing, unreadable, not UTF-8).
    #[error("cannot read the {what} token file {path}: {source}")]
    Unreadable {
        /// Whose token: `webhook`, `API`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds only whitespace.
    #[error("the {what} token file {path} is empty")]
    Empty {
        /// Whose token.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
}

impl BearerToken {
    /// The token in `path`, surrounding whitespace (the final newline)
    /// trimmed; `what` names it in errors.
    pub fn read(what: &'static str, path: &Path) -> Result<BearerToken, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Unreadable {
            what,
            path: path.to_path_buf(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenFileError::Empty {
                what,
                path: path.to_path_buf(),
            });
        }
        Ok(BearerToken(digest(token)))
    }

    /// Whether `presented` is the token, in time that does not depend on
    /// where they differ.
    pub fn accepts(&self, presented: &str) -> bool {
        self.0.ct_eq(&digest(presented)).into()
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Why a request's credentials were refused, as said to the client.
pub fn refusal(headers: &HeaderMap, token: &BearerToken) -> Option<&'static str> {
    match bearer(headers) {
        Some(presented) if token.accepts(presented) => None,
        Some(_) => Some("invalid bearer token"),
        None => Some("missing bearer token: send Authorization: Bearer <token>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_file(text: &str) -> (PathBuf, Result<BearerToken, TokenFileError>) {
        let path = std::env::temp_dir().join(format!(
            "warren-token-{}-{}",
            std::process::id(),
            crate::inventory::hex(&digest(text)[..4])
        ));
        std::fs::write(&path, text).unwrap();
        let token = BearerToken::read("webhook", &path);
        let _ = std::fs::remove_file(&path);
        (path, token)
    }

    #[test]
    fn the_token_is_read_trimmed_and_compared_whole() {
        let (_, token) = token_file("  s3cret-token\n");
        let token = token.unwrap();
        assert!(token.accepts("s3cret-token"));
        for wrong in [
            "",
            "s3cret",
            "s3cret-token2",
            "S3CRET-TOKEN",
            " s3cret-token",
        ] {
            assert!(!token.accepts(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{token:?}"), "BearerToken(***)");
    }

    #[test]
    fn an_empty_or_missing_token_file_is_refused_by_name() {
        let (path, token) = token_file(" \n\t");
        let e = token.unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("empty"),
            "{e}"
        );
        let missing = Path::new("/nonexistent/warren/api.token");
        let e = BearerToken::read("API", missing).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/warren/api.token"), "{e}");
        assert!(e.contains("API token file"), "{e}");
    }

    #[test]
    fn bearer_tokens_are_taken_from_the_authorization_header() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            h
        };
        assert_eq!(bearer(&with("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&with("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&with("Basic YWJjOmRlZg==")), None);
        assert_eq!(bearer(&with("Bearer ")), None);
        assert_eq!(bearer(&with("Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
