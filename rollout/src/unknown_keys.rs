//! Unknown keys of a YAML document, all at once.
//!
//! serde's `deny_unknown_fields` stops at the first unknown key and hides
//! every other problem of the file. This walks the parsed YAML against the
//! keys a format knows, reports every unknown key with its path and the
//! nearest known key, and removes them, so the rest can still be read and
//! checked in the same pass.

use serde_yaml::Value;

/// The keys a YAML format knows, nested.
#[derive(Debug)]
pub enum Shape {
    /// A value whose inside is not checked here (a scalar, a list of
    /// scalars, or anything serde checks by itself).
    Leaf,
    /// A mapping with these keys.
    Map(&'static [(&'static str, Shape)]),
    /// A sequence whose items have this shape.
    List(&'static Shape),
}

/// One unknown key: its path (`cohorts[0].bak`) and a message with a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// Where the key is.
    pub path: String,
    /// `unknown field `bak`; did you mean `bake`?`, or the keys allowed.
    pub message: String,
}

/// Reports and removes every key of `value` that `shape` does not know.
/// Values of the wrong kind (a scalar where a mapping is expected) are left
/// for serde to report.
pub fn strip(shape: &Shape, value: &mut Value) -> Vec<UnknownKey> {
    let mut found = Vec::new();
    walk(shape, value, "", &mut found);
    found
}

fn walk(shape: &Shape, value: &mut Value, path: &str, found: &mut Vec<UnknownKey>) {
    match (shape, value) {
        (Shape::Map(known), Value::Mapping(map)) => {
            let keys: Vec<Value> = map.keys().cloned().collect();
            for key in keys {
                let name = match &key {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let here = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                match known.iter().find(|(k, _)| *k == name) {
                    Some((_, inner)) => {
                        if let Some(v) = map.get_mut(&key) {
                            walk(inner, v, &here, found);
                        }
                    }
                    None => {
                        map.remove(&key);
                        found.push(UnknownKey {
                            path: here,
                            message: unknown_message(&name, known),
                        });
                    }
                }
            }
        }
        (Shape::List(item), Value::Sequence(items)) => {
            for (i, v) in items.iter_mut().enumerate() {
                walk(item, v, &format!("{path}[{i}]"), found);
            }
        }
        (_, Value::Tagged(tagged)) => walk(shape, &mut tagged.value, path, found),
        _ => {}
    }
}

fn unknown_message(name: &str, known: &[(&str, Shape)]) -> String {
    let names: Vec<&str> = known.iter().map(|(k, _)| *k).collect();
    match nearest(name, &names) {
        Some(k) => format!("unknown field `{name}`; did you mean `{k}`?"),
        None => format!(
            "unknown field `{name}`; expected one of {}",
            names
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The known name closest to `name`, when it is close enough to be a typo:
/// at most one edit in four characters, and at most 3.
fn nearest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, k)| *d <= (k.len().max(name.len()) / 4).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, with a swap of two neighbours counted as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const ITEM: Shape = Shape::Map(&[("name", Shape::Leaf), ("bake", Shape::Leaf)]);
    const DOC: Shape = Shape::Map(&[
        ("version", Shape::Leaf),
        ("items", Shape::List(&ITEM)),
        ("limits", Shape::Map(&[("max_failed_hosts", Shape::Leaf)])),
    ]);

    #[test]
    fn every_unknown_key_is_reported_with_its_path_and_removed() {
        let mut v: Value = serde_yaml::from_str(
            "verison: 1\nitems:\n  - name: a\n    bak: 2m\n  - name: b\nlimits:\n  max_faild_hosts: 1\nzzz: 0\n",
        )
        .unwrap();
        let found = strip(&DOC, &mut v);
        let got: Vec<(&str, &str)> = found
            .iter()
            .map(|u| (u.path.as_str(), u.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "verison",
                    "unknown field `verison`; did you mean `version`?"
                ),
                ("items[0].bak", "unknown field `bak`; did you mean `bake`?"),
                (
                    "limits.max_faild_hosts",
                    "unknown field `max_faild_hosts`; did you mean `max_failed_hosts`?"
                ),
                (
                    "zzz",
                    "unknown field `zzz`; expected one of `version`, `items`, `limits`"
                ),
            ]
        );
        let clean: Value =
            serde_yaml::from_str("items:\n  - name: a\n  - name: b\nlimits: {}\n").unwrap();
        assert_eq!(v, clean);
    }

    #[test]
    fn values_of_the_wrong_kind_are_left_for_serde() {
        let mut v: Value = serde_yaml::from_str("items: 3\nlimits: [1]\n").unwrap();
        assert!(strip(&DOC, &mut v).is_empty());
    }

    #[test]
    fn typos_are_near_and_others_are_not() {
        assert_eq!(edit_distance("bake", "bake"), 0);
        assert_eq!(edit_distance("bkae", "bake"), 1);
        assert_eq!(edit_distance("cohort", "cohorts"), 1);
        let known = ["component", "version", "cohorts", "gates"];
        assert_eq!(nearest("Version", &known), Some("version"));
        assert_eq!(nearest("cohrots", &known), Some("cohorts"));
        assert_eq!(nearest("gate", &known), Some("gates"));
        assert_eq!(nearest("owner", &known), None);
    }
}
