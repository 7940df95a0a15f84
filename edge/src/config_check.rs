//! Every problem of a flat YAML config file in one pass.
//!
//! serde stops at the first error, so a misspelt key would hide every other
//! mistake in the file. Here each top-level key is checked on its own:
//! unknown keys are named with a did-you-mean hint (by the shared
//! [`daemon::config_check`] walk), and each known key is
//! deserialized alone (every field of the target is optional), so each bad
//! value is named with its key and line. The known keys come from the
//! struct's own `Deserialize` derive, so a new field needs no list kept
//! beside it.

use daemon::config_check::{Field, Shape, anything, check};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Visitor};
use serde_yaml::{Mapping, Value};

pub use daemon::config_check::Problem;

/// Parses `text` into `T`, keeping every key that is valid and returning a
/// problem for each that is not, in file order. `Err` only when the text is
/// not YAML.
pub fn parse_all<T: DeserializeOwned + Default>(
    text: &str,
) -> Result<(T, Vec<Problem>), serde_yaml::Error> {
    let value: Value = serde_yaml::from_str(text)?;
    // Unknown keys (and a file that is not a mapping) by the shared walk;
    // each known key's value by `T` itself, below.
    let fields: Vec<Field> = field_names::<T>()
        .iter()
        .map(|name| Field::optional(name, Shape::Value(anything)))
        .collect();
    let (known, mut problems) = check(&value, &Shape::Map(&fields));
    let mut good = Mapping::new();
    for (key, value) in known.as_mapping().into_iter().flatten() {
        let alone = Mapping::from_iter([(key.clone(), value.clone())]);
        match serde_yaml::from_value::<T>(Value::Mapping(alone)) {
            Ok(_) => {
                good.insert(key.clone(), value.clone());
            }
            Err(e) => problems.push(Problem::new(
                key.as_str().unwrap_or_default(),
                e.to_string(),
            )),
        }
    }
    for p in problems.iter_mut().filter(|p| !p.path.is_empty()) {
        p.line = line_of(text, &p.path);
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    // Each key deserialized alone, so together they do too; if not, say so
    // rather than fail silently.
    let parsed = serde_yaml::from_value(Value::Mapping(good)).unwrap_or_else(|e| {
        problems.push(Problem::new("(file)", e.to_string()));
        T::default()
    });
    Ok((parsed, problems))
}

/// The 1-based line where top-level `key` is set.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
}

/// The field names a `#[derive(Deserialize)]` struct asks for, captured from
/// its `deserialize_struct` call.
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("only the field names were wanted"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        listen: Option<std::net::SocketAddr>,
        max_connections: Option<usize>,
        name: Option<String>,
    }

    #[test]
    fn every_problem_is_named_with_its_line_and_the_good_keys_are_kept() {
        let text = "lisen: 127.0.0.1:1\nname: ok\nmax_connections: lots\nmax_conections: 3\n";
        let (demo, problems) = parse_all::<Demo>(text).unwrap();
        assert_eq!(demo.name.as_deref(), Some("ok"));
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 3, "{shown:#?}");
        assert!(shown[0].starts_with("lisen (line 1): unknown field, did you mean listen?"));
        assert!(
            shown[1].starts_with("max_connections (line 3): "),
            "{}",
            shown[1]
        );
        assert!(shown[1].contains("lots"), "{}", shown[1]);
        assert!(
            shown[2].contains("did you mean max_connections?"),
            "{}",
            shown[2]
        );
    }

    #[test]
    fn far_off_keys_list_the_known_ones_and_empty_files_are_fine() {
        let (_, problems) = parse_all::<Demo>("colour: red\n").unwrap();
        assert_eq!(
            problems[0].message,
            "unknown field; known fields are listen, max_connections, name"
        );
        assert_eq!(parse_all::<Demo>("").unwrap(), (Demo::default(), vec![]));
        assert_eq!(parse_all::<Demo>("- a\n").unwrap().1.len(), 1);
        assert!(parse_all::<Demo>("a: [").is_err());
    }
}
