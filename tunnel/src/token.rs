//! Tunnel tokens: what a connector presents to prove it may serve a tunnel.
//!
//! A token is `wrn1_` followed by the unpadded base64url encoding of the
//! 16-byte tunnel id and a 32-byte random secret. The edge keeps only the
//! SHA-256 of the secret ([`SecretHash`]) and compares in constant time, so a
//! leaked tunnels file does not leak a credential.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

const PREFIX: &str = "wrn1_";
const SECRET_LEN: usize = 32;

/// Why a token or a stored hash could not be read. The messages never echo the
/// input: it may be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The text does not start with the token prefix.
    #[error(
        "the token does not start with `{PREFIX}`: use the token printed by `edge tunnel create`"
    )]
    MissingPrefix,
    /// The text after the prefix is not base64url of the right length.
    #[error(
        "the token is damaged (bad encoding or length): copy it again from `edge tunnel create`"
    )]
    Malformed,
    /// A tunnel id is not 32 hex digits, with or without dashes.
    #[error("a tunnel id must be 32 hex digits (dashes allowed)")]
    BadTunnelId,
    /// A secret hash is not 64 hex digits.
    #[error("a secret hash must be 64 hex digits")]
    BadHash,
    /// The system random generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// The identifier of a tunnel: 16 random bytes, shown in UUID form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelId(pub [u8; 16]);

impl TunnelId {
    /// A fresh random id.
    pub fn generate() -> Result<Self, TokenError> {
        let mut id = [0u8; 16];
        SystemRandom::new()
            .fill(&mut id)
            .map_err(|_| TokenError::Random)?;
        Ok(Self(id))
    }
}

impl fmt::Display for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex(&self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl fmt::Debug for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TunnelId({self})")
    }
}

impl FromStr for TunnelId {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits: String = s.chars().filter(|c| *c != '-').collect();
        let bytes = unhex(&digits).ok_or(TokenError::BadTunnelId)?;
        Ok(Self(bytes.try_into().map_err(|_| TokenError::BadTunnelId)?))
    }
}

/// A tunnel secret. Its `Debug` output is masked so it cannot reach a log by
/// accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub [u8; SECRET_LEN]);

impl Secret {
    /// A fresh random secret.
    pub fn generate() -> Result<Self, TokenError> {
        let mut s = [0u8; SECRET_LEN];
        SystemRandom::new()
            .fill(&mut s)
            .map_err(|_| TokenError::Random)?;
        Ok(Self(s))
    }

    /// The hash the edge stores in place of the secret.
    pub fn hash(&self) -> SecretHash {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        SecretHash(out)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// SHA-256 of a tunnel secret, as stored in the tunnels file (hex).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    /// Whether `secret` hashes to this value, compared in constant time.
    pub fn verify(&self, secret: &Secret) -> bool {
        secret.hash().0.ct_eq(&self.0).into()
    }
}

impl fmt::Display for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({self})")
    }
}

impl FromStr for SecretHash {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = unhex(s).ok_or(TokenError::BadHash)?;
        Ok(Self(bytes.try_into().map_err(|_| TokenError::BadHash)?))
    }
}

/// A tunnel token: the tunnel it names and the secret that proves the right to
/// serve it. `Debug` masks the secret; `Display` prints the full token and is
/// only for `edge tunnel create` to hand it to the operator.
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelToken {
    /// The tunnel this token serves.
    pub tunnel_id: TunnelId,
    /// The shared secret.
    pub secret: Secret,
}

impl TunnelToken {
    /// A new token for a new tunnel.
    pub fn generate() -> Result<Self, TokenError> {
        Ok(Self {
            tunnel_id: TunnelId::generate()?,
            secret: Secret::generate()?,
        })
    }
}

impl fmt::Debug for TunnelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelToken")
            .field("tunnel_id", &self.tunnel_id)
            .field("secret", &self.secret)
            .finish()
    }
}

impl fmt::Display for TunnelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(16 + SECRET_LEN);
        raw.extend_from_slice(&self.tunnel_id.0);
        raw.extend_from_slice(&self.secret.0);
        write!(f, "{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
    }
}

impl FromStr for TunnelToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body = s
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(TokenError::MissingPrefix)?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        if raw.len() != 16 + SECRET_LEN {
            return Err(TokenError::Malformed);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&raw[..16]);
        let mut secret = [0u8; SECRET_LEN];
        secret.copy_from_slice(&raw[16..]);
        Ok(Self {
            tunnel_id: TunnelId(id),
            secret: Secret(secret),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_debug_masks_the_secret() {
        let token = TunnelToken::generate().unwrap();
        let text = token.to_string();
        assert!(text.starts_with(PREFIX));
        assert_eq!(text.parse::<TunnelToken>().unwrap(), token);
        let debug = format!("{token:?}");
        assert!(debug.contains("***"));
        assert!(!debug.contains(&text[PREFIX.len()..]));
    }

    #[test]
    fn bad_tokens_are_rejected_without_echoing_them() {
        for bad in ["", "wrn1_", "abc", "wrn1_!!!!", "wrn1_AAAA", "wrn2_AAAA"] {
            let err = bad.parse::<TunnelToken>().unwrap_err();
            if !bad.is_empty() {
                assert!(!err.to_string().contains(bad), "{err} echoes {bad}");
            }
        }
    }

    #[test]
    fn hash_verifies_only_its_secret() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        let h = a.hash();
        assert!(h.verify(&a));
        assert!(!h.verify(&b));
        assert_eq!(h.to_string().parse::<SecretHash>().unwrap(), h);
    }

    #[test]
    fn tunnel_id_parses_with_or_without_dashes() {
        let id = TunnelId::generate().unwrap();
        let shown = id.to_string();
        assert_eq!(shown.len(), 36);
        assert_eq!(shown.parse::<TunnelId>().unwrap(), id);
        assert_eq!(shown.replace('-', "").parse::<TunnelId>().unwrap(), id);
        assert!("xyz".parse::<TunnelId>().is_err());
    }
}
