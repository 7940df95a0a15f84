//! The fleet as the controller saw it: hosts from Salt (minion ids and
//! grains) with the version each one runs (from Prometheus `*_build_info`).
//! The [`Inventory::fingerprint`] is how `apply` notices that the fleet
//! drifted since the plan was made.

use serde::{Deserialize, Serialize};

/// One host (one Salt minion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Salt minion id.
    pub id: String,
    /// Grain `datacenter`.
    pub datacenter: String,
    /// Grain `cohort`.
    pub cohort: String,
    /// Grain `role` (`edge`, `connector`).
    pub role: String,
    /// Version it runs, if known.
    pub version: Option<String>,
    /// Whether it answered Salt.
    pub reachable: bool,
}

/// Why an inventory could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InventoryError {
    /// Two hosts have the same minion id.
    #[error("minion id `{0}` appears more than once")]
    DuplicateHost(String),
    /// A host's minion id is not one the controller targets.
    #[error(transparent)]
    InvalidId(#[from] crate::minion::InvalidMinionId),
}

/// The hosts of the fleet, sorted by id, each id once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Host>", into = "Vec<Host>")]
pub struct Inventory {
    hosts: Vec<Host>,
}

impl TryFrom<Vec<Host>> for Inventory {
    type Error = InventoryError;
    fn try_from(hosts: Vec<Host>) -> Result<Self, InventoryError> {
        Inventory::new(hosts)
    }
}

impl From<Inventory> for Vec<Host> {
    fn from(inv: Inventory) -> Vec<Host> {
        inv.hosts
    }
}

impl Inventory {
    /// Sorts the hosts by id; refuses duplicate ids and ids that are not
    /// valid minion ids (so a plan file cannot carry one into a target).
    pub fn new(mut hosts: Vec<Host>) -> Result<Inventory, InventoryError> {
        for h in &hosts {
            crate::minion::check(&h.id)?;
        }
        hosts.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(w) = hosts.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(InventoryError::DuplicateHost(w[0].id.clone()));
        }
        Ok(Inventory { hosts })
    }

    /// The hosts, sorted by id.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there is no host.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The host with this minion id.
    pub fn get(&self, id: &str) -> Option<&Host> {
        self.hosts
            .binary_search_by(|h| h.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.hosts[i])
    }

    /// SHA-256 (hex) of the sorted `(id, version, reachable)` tuples. Grains
    /// are left out: what matters for drift is who runs what and who answers.
    pub fn fingerprint(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for h in &self.hosts {
            // Length-prefixed fields, so no two inventories share an encoding.
            ctx.update(&(h.id.len() as u64).to_be_bytes());
            ctx.update(h.id.as_bytes());
            match &h.version {
                None => ctx.update(&[0]),
                Some(v) => {
                    ctx.update(&[1]);
                    ctx.update(&(v.len() as u64).to_be_bytes());
                    ctx.update(v.as_bytes());
                }
            }
            ctx.update(&[u8::from(h.reachable)]);
        }
        hex(ctx.finish().as_ref())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn host(id: &str, dc: &str, version: Option<&str>, reachable: bool) -> Host {
        Host {
            id: id.into(),
            datacenter: dc.into(),
            cohort: "main".into(),
            role: "edge".into(),
            version: version.map(Into::into),
            reachable,
        }
    }

    #[test]
    fn sorted_and_unique() {
        let inv = Inventory::new(vec![
            host("b", "ams", None, true),
            host("a", "fra", Some("v1"), true),
        ])
        .unwrap();
        let ids: Vec<_> = inv.hosts().iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(inv.get("b").unwrap().datacenter, "ams");
        assert!(inv.get("c").is_none());
        assert_eq!(
            Inventory::new(vec![host("a", "x", None, true), host("a", "y", None, true)]),
            Err(InventoryError::DuplicateHost("a".into()))
        );
    }

    #[test]
    fn a_host_with_an_invalid_minion_id_is_refused() {
        let e = Inventory::new(vec![
            host("a", "ams", None, true),
            host("b,c", "ams", None, true),
        ])
        .unwrap_err();
        assert!(matches!(e, InventoryError::InvalidId(_)), "{e}");
        assert!(e.to_string().contains("\"b,c\""), "{e}");
        let json = r#"[{"id":"x y","datacenter":"d","cohort":"c","role":"edge","version":null,"reachable":true}]"#;
        assert!(serde_json::from_str::<Inventory>(json).is_err());
    }

    #[test]
    fn fingerprint_is_stable_and_sees_drift() {
        let a = Inventory::new(vec![
            host("a", "ams", Some("v1"), true),
            host("b", "fra", Some("v1"), true),
        ])
        .unwrap();
        let reordered = Inventory::new(vec![
            host("b", "fra", Some("v1"), true),
            host("a", "ams", Some("v1"), true),
        ])
        .unwrap();
        assert_eq!(a.fingerprint(), reordered.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        // Grains do not count.
        let regrained = Inventory::new(vec![
            host("a", "par", Some("v1"), true),
            host("b", "fra", Some("v1"), true),
        ])
        .unwrap();
        assert_eq!(a.fingerprint(), regrained.fingerprint());
        let drifts = [
            vec![
                host("a", "ams", Some("v2"), true),
                host("b", "fra", Some("v1"), true),
            ],
            vec![
                host("a", "ams", Some("v1"), false),
                host("b", "fra", Some("v1"), true),
            ],
            vec![
                host("a", "ams", None, true),
                host("b", "fra", Some("v1"), true),
            ],
            vec![host("a", "ams", Some("v1"), true)],
        ];
        for d in drifts {
            assert_ne!(a.fingerprint(), Inventory::new(d).unwrap().fingerprint());
        }
        // Empty inventory: SHA-256 of nothing.
        assert_eq!(
            Inventory::default().fingerprint(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn json_round_trip_refuses_duplicates() {
        let inv = Inventory::new(vec![host("a", "ams", Some("v1"), true)]).unwrap();
        let json = serde_json::to_string(&inv).unwrap();
        assert_eq!(serde_json::from_str::<Inventory>(&json).unwrap(), inv);
        let dup = format!("[{0},{0}]", serde_json::to_string(&inv.hosts()[0]).unwrap());
        assert!(serde_json::from_str::<Inventory>(&dup).is_err());
    }
}
