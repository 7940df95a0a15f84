//! Config files checked whole. serde stops at the first problem, so a
//! misspelt key hides every other mistake in the file. Here a YAML value is
//! walked against a [`Shape`] (the known keys and a type check per value)
//! and every unknown key and every value of the wrong type is reported at
//! once, each with its path (`ingress[2].origin_request.conect_timeout`)
//! and, for a misspelling, the key that was probably meant. What is left
//! (the known, well-typed keys) can then be deserialized strictly and
//! validated, adding the remaining problems to the same list.
//!
//! [`strip`] is the lenient form for formats serde checks itself: it only
//! reports and removes unknown keys, leaving values of the wrong kind for
//! serde. [`unknown_field`] is the did-you-mean message on its own.
//!
//! ```
//! use daemon::config_check::{Field, Shape, check, typed};
//! static SHAPE: Shape = Shape::Map(&[
//!     Field::optional("name", Shape::Value(typed::<String>)),
//!     Field::optional("port", Shape::Value(typed::<u16>)),
//! ]);
//! let value = serde_yaml::from_str("nmae: x\nport: high\n").unwrap();
//! let (_, problems) = check(&value, &SHAPE);
//! let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
//! assert_eq!(text[0], "nmae: unknown field, did you mean name?");
//! assert!(text[1].starts_with("port: "));
//! ```

use std::fmt;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

/// One problem of a config file, at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `key`, `list[0].key`; empty for the file as a whole.
    pub path: String,
    /// What is wrong (and, where it can, how to fix it).
    pub message: String,
    /// Its line in the file, when known.
    pub line: Option<usize>,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            line: None,
        }
    }

    /// The same problem, at `line` of the file.
    pub fn at_line(self, line: Option<usize>) -> Self {
        Self { line, ..self }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, None) => write!(f, "{}", self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
        }
    }
}

/// Checks one value; the error says what was expected.
pub type Checker = fn(&Value) -> Result<(), String>;

/// What a YAML value must look like (`'static` for a format known at
/// compile time; shorter for one built at run time).
#[derive(Debug, Clone, Copy)]
pub enum Shape<'a> {
    /// A leaf, checked by the function (see [`typed`], [`duration`],
    /// [`anything`]).
    Value(Checker),
    /// A mapping with these keys and no others.
    Map(&'a [Field<'a>]),
    /// A list whose items all have one shape.
    List(&'a Shape<'a>),
}

/// A key of a mapping.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    /// The key.
    pub name: &'a str,
    /// Its value's shape.
    pub shape: Shape<'a>,
    /// Whether the key must be present.
    pub required: bool,
}

impl<'a> Field<'a> {
    /// A key that may be left out.
    pub const fn optional(name: &'a str, shape: Shape<'a>) -> Self {
        Self {
            name,
            shape,
            required: false,
        }
    }

    /// A key that must be present.
    pub const fn required(name: &'a str, shape: Shape<'a>) -> Self {
        Self {
            name,
            shape,
            required: true,
        }
    }
}

/// A leaf that deserializes as `T` (`null` passes: absent and empty are the
/// same to an optional field).
pub fn typed<T: DeserializeOwned>(v: &Value) -> Result<(), String> {
    if v.is_null() {
        return Ok(());
    }
    serde_yaml::from_value::<T>(v.clone())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A leaf whose inside is not checked here (serde checks it later).
pub fn anything(_: &Value) -> Result<(), String> {
    Ok(())
}

/// A leaf that is a duration written as text (`500ms`, `30s`).
pub fn duration(v: &Value) -> Result<(), String> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) => crate::duration::parse(s).map(|_| ()),
        Value::Number(n) => crate::duration::parse(&n.to_string()).map(|_| ()),
        _ => Err("expected a duration like `500ms`, `30s` or `5m`".into()),
    }
}

/// Walks `value` against `shape`. Returns the value without the keys that
/// have problems (so the rest deserializes strictly) and every problem.
pub fn check(value: &Value, shape: &Shape) -> (Value, Vec<Problem>) {
    let mut problems = Vec::new();
    let kept = walk(value, shape, "", Kinds::Report, &mut problems).unwrap_or(Value::Null);
    (kept, problems)
}

/// Reports and removes every key of `value` that `shape` does not know.
/// Leaves are not checked, and values of the wrong kind (a scalar where a
/// mapping is expected) are kept for serde to report; nor are missing keys
/// reported here.
pub fn strip(shape: &Shape, value: &mut Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(kept) = walk(value, shape, "", Kinds::LeaveToSerde, &mut problems) {
        *value = kept;
    }
    problems
}

/// What the walk does with a value of the wrong kind.
#[derive(Clone, Copy, PartialEq)]
enum Kinds {
    /// Report it and drop it ([`check`]).
    Report,
    /// Keep it as it is, for serde ([`strip`]).
    LeaveToSerde,
}

/// `None` when the whole value must go.
fn walk(
    value: &Value,
    shape: &Shape,
    path: &str,
    kinds: Kinds,
    out: &mut Vec<Problem>,
) -> Option<Value> {
    if kinds == Kinds::LeaveToSerde {
        match (shape, value) {
            (Shape::Value(_), _)
            | (Shape::List(_), Value::Sequence(_))
            | (Shape::Map(_), Value::Mapping(_)) => {}
            _ => return Some(value.clone()),
        }
    }
    match shape {
        Shape::Value(checker) => match checker(value) {
            Ok(()) => Some(value.clone()),
            Err(e) => {
                out.push(Problem::new(path, e));
                None
            }
        },
        Shape::List(item) => match value {
            Value::Null => Some(Value::Null),
            Value::Sequence(items) => Some(Value::Sequence(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        walk(v, item, &format!("{path}[{i}]"), kinds, out).unwrap_or(Value::Null)
                    })
                    .collect(),
            )),
            _ => {
                out.push(Problem::new(path, "expected a list"));
                None
            }
        },
        Shape::Map(fields) => {
            let map = match value {
                Value::Null => return Some(Value::Mapping(Default::default())),
                Value::Mapping(m) => m,
                _ => {
                    out.push(Problem::new(path, "expected a mapping of keys to values"));
                    return None;
                }
            };
            let mut kept = serde_yaml::Mapping::new();
            for (k, v) in map {
                let Some(key) = k.as_str() else {
                    out.push(Problem::new(path, format!("key {k:?} is not text")));
                    continue;
                };
                let at = join(path, key);
                match fields.iter().find(|f| f.name == key) {
                    Some(field) => {
                        if let Some(v) = walk(v, &field.shape, &at, kinds, out) {
                            kept.insert(k.clone(), v);
                        }
                    }
                    None => {
                        let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
                        out.push(Problem::new(at, unknown_field(key, &names)));
                    }
                }
            }
            for field in fields
                .iter()
                .filter(|f| f.required && kinds == Kinds::Report)
            {
                if !map.contains_key(field.name) {
                    out.push(Problem::new(path, format!("missing field {}", field.name)));
                }
            }
            Some(Value::Mapping(kept))
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The message for an unknown `key` where `known` are the keys allowed:
/// the one probably meant, or else all of them.
pub fn unknown_field(key: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|name| (edit_distance(key, name), *name))
        .filter(|(d, name)| *d <= 3 && *d * 2 <= name.len().max(key.len()))
        .min();
    match best {
        Some((_, name)) => format!("unknown field, did you mean {name}?"),
        None => format!("unknown field; known fields are {}", known.join(", ")),
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    static INNER: Shape = Shape::Map(&[
        Field::optional("connect_timeout", Shape::Value(duration)),
        Field::optional("no_tls_verify", Shape::Value(typed::<bool>)),
    ]);
    static ITEM: Shape = Shape::Map(&[
        Field::required("service", Shape::Value(typed::<String>)),
        Field::optional("origin_request", INNER),
    ]);
    static ROOT: Shape = Shape::Map(&[
        Field::optional("port", Shape::Value(typed::<u16>)),
        Field::optional("grace_period", Shape::Value(duration)),
        Field::optional("ingress", Shape::List(&ITEM)),
    ]);

    fn problems(yaml: &str) -> (Value, Vec<String>) {
        let value: Value = serde_yaml::from_str(yaml).unwrap();
        let (kept, problems) = check(&value, &ROOT);
        (kept, problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let (kept, found) = problems(
            "prot: 1\ngrace_period: 30\ningress:\n  - service: a\n  - servce: b\n  - service: c\n    origin_request: { conect_timeout: 1s, no_tls_verify: maybe }\n",
        );
        assert_eq!(found.len(), 6, "{found:#?}");
        assert_eq!(found[0], "prot: unknown field, did you mean port?");
        assert!(
            found[1].starts_with("grace_period: `30` has no unit"),
            "{found:#?}"
        );
        assert_eq!(
            found[2],
            "ingress[1].servce: unknown field, did you mean service?"
        );
        assert_eq!(found[3], "ingress[1]: missing field service");
        assert_eq!(
            found[4],
            "ingress[2].origin_request.conect_timeout: unknown field, did you mean connect_timeout?"
        );
        assert!(
            found[5].starts_with("ingress[2].origin_request.no_tls_verify: "),
            "{found:#?}"
        );
        // What is left is only the good part.
        let left = serde_yaml::to_string(&kept).unwrap();
        assert!(!left.contains("prot") && !left.contains("conect"), "{left}");
        assert!(left.contains("service: c"), "{left}");
    }

    #[test]
    fn a_clean_file_has_no_problems_and_is_kept_whole() {
        let yaml = "port: 80\ngrace_period: 30s\ningress:\n- service: a\n  origin_request:\n    connect_timeout: 1s\n";
        let (kept, found) = problems(yaml);
        assert!(found.is_empty(), "{found:#?}");
        assert_eq!(kept, serde_yaml::from_str::<Value>(yaml).unwrap());
    }

    #[test]
    fn far_off_keys_list_the_known_ones_and_wrong_kinds_are_named() {
        let (_, found) = problems("zzzzzzzz: 1\ningress: {}\n");
        assert_eq!(
            found[0],
            "zzzzzzzz: unknown field; known fields are port, grace_period, ingress"
        );
        assert_eq!(found[1], "ingress: expected a list");
        let (_, found) = problems("- 1\n");
        assert_eq!(found, ["expected a mapping of keys to values"]);
    }

    static LENIENT: Shape = Shape::Map(&[
        Field::required("version", Shape::Value(anything)),
        Field::optional("ingress", Shape::List(&ITEM)),
        Field::optional(
            "limits",
            Shape::Map(&[Field::optional("max_failed_hosts", Shape::Value(anything))]),
        ),
    ]);

    #[test]
    fn strip_removes_every_unknown_key_and_leaves_the_rest_to_serde() {
        let mut v: Value = serde_yaml::from_str(
            "verison: 1\ningress:\n  - service: a\n    servce: 2m\n  - {}\nlimits:\n  max_faild_hosts: 1\nzzz: 0\n",
        )
        .unwrap();
        let found: Vec<String> = strip(&LENIENT, &mut v)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "verison: unknown field, did you mean version?",
                "ingress[0].servce: unknown field, did you mean service?",
                "limits.max_faild_hosts: unknown field, did you mean max_failed_hosts?",
                "zzz: unknown field; known fields are version, ingress, limits",
            ]
        );
        let clean: Value =
            serde_yaml::from_str("ingress:\n  - service: a\n  - {}\nlimits: {}\n").unwrap();
        assert_eq!(v, clean);
        // Wrong kinds and missing keys are serde's to report.
        let mut v: Value = serde_yaml::from_str("ingress: 3\nlimits: [1]\n").unwrap();
        let before = v.clone();
        assert_eq!(strip(&LENIENT, &mut v), vec![]);
        assert_eq!(v, before);
    }

    #[test]
    fn a_problem_can_name_its_line() {
        let p = Problem::new("port", "too high").at_line(Some(3));
        assert_eq!(p.to_string(), "port (line 3): too high");
        let p = Problem::new("", "not YAML").at_line(Some(1));
        assert_eq!(p.to_string(), "line 1: not YAML");
    }

    #[test]
    fn typos_are_near_and_others_are_not() {
        let known = ["component", "version", "cohorts", "gates"];
        for (key, meant) in [
            ("Version", "version"),
            ("cohrots", "cohorts"),
            ("gate", "gates"),
        ] {
            assert_eq!(
                unknown_field(key, &known),
                format!("unknown field, did you mean {meant}?")
            );
        }
        assert!(unknown_field("owner", &known).contains("known fields are"));
    }

    #[test]
    fn edit_distance_table() {
        for (a, b, d) in [
            ("", "", 0),
            ("abc", "abc", 0),
            ("conect", "connect", 1),
            ("tunels_file", "tunnels_file", 1),
            ("kitten", "sitting", 3),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} {b}");
        }
    }
}
