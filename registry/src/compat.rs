//! The seven compatibility levels and the check a new schema must pass against earlier versions.

use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a subject's schemas may evolve, with Confluent's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompatibilityLevel {
    /// No check.
    None,
    /// The new schema reads data written with the latest version.
    #[default]
    Backward,
    /// The new schema reads data written with every version.
    BackwardTransitive,
    /// The latest version reads data written with the new schema.
    Forward,
    /// Every version reads data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every version.
    FullTransitive,
}

/// Which way data must flow between two schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Backward,
    Forward,
    Both,
}

impl CompatibilityLevel {
    /// Every level, in Confluent's documentation order.
    pub const ALL: [CompatibilityLevel; 7] = [
        Self::None,
        Self::Backward,
        Self::BackwardTransitive,
        Self::Forward,
        Self::ForwardTransitive,
        Self::Full,
        Self::FullTransitive,
    ];

    /// The name used on the wire, e.g. `BACKWARD_TRANSITIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether the check covers every live version rather than only the latest.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    fn direction(self) -> Option<Direction> {
        match self {
            Self::None => None,
            Self::Backward | Self::BackwardTransitive => Some(Direction::Backward),
            Self::Forward | Self::ForwardTransitive => Some(Direction::Forward),
            Self::Full | Self::FullTransitive => Some(Direction::Both),
        }
    }

    /// Checks `new` against `previous` (oldest first; already narrowed to what the level covers).
    ///
    /// Returns one message per incompatibility; empty means compatible. Avro's "partial" compatibility
    /// (an enum symbol or union branch the reader lacks) counts as incompatible, as in Confluent, because
    /// reading some valid data would fail.
    pub fn check(self, new: &Schema, previous: &[(u32, &Schema)]) -> Vec<String> {
        let Some(direction) = self.direction() else {
            return Vec::new();
        };
        let mut messages = Vec::new();
        // Newest first, as Confluent reports them.
        for (version, old) in previous.iter().rev() {
            if matches!(direction, Direction::Backward | Direction::Both)
                && let Some(why) = can_read(old, new)
            {
                messages.push(format!(
                    "new schema cannot read data written with version {version}: {why}"
                ));
            }
            if matches!(direction, Direction::Forward | Direction::Both)
                && let Some(why) = can_read(new, old)
            {
                messages.push(format!(
                    "version {version} cannot read data written with the new schema: {why}"
                ));
            }
        }
        messages
    }
}

/// `None` when `reader` can read everything `writer` can write; otherwise why not.
fn can_read(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        Ok(Compatibility::Partial) => {
            Some("only partially compatible (an enum symbol or union branch is missing on the reading side)".into())
        }
        Err(e) => Some(e.to_string()),
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level name that is not one of the seven.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid compatibility level: {0}")]
pub struct UnknownLevel(pub String);

impl FromStr for CompatibilityLevel {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

impl Serialize for CompatibilityLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CompatibilityLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
        ))
        .expect("test schema parses")
    }

    fn v1() -> Schema {
        record(r#"{"name":"a","type":"int"}"#)
    }

    #[test]
    fn names_round_trip_case_insensitively() {
        for level in CompatibilityLevel::ALL {
            assert_eq!(level.as_str().parse::<CompatibilityLevel>(), Ok(level));
            assert_eq!(
                level.as_str().to_lowercase().parse::<CompatibilityLevel>(),
                Ok(level)
            );
        }
        assert!("SIDEWAYS".parse::<CompatibilityLevel>().is_err());
    }

    #[test]
    fn adding_a_field_with_default_is_backward_but_not_forward_breaking() {
        let v2 = record(r#"{"name":"a","type":"int"},{"name":"b","type":"string","default":"x"}"#);
        let prev = [(1, &v1())];
        assert!(CompatibilityLevel::Backward.check(&v2, &prev).is_empty());
        assert!(CompatibilityLevel::Forward.check(&v2, &prev).is_empty());
        assert!(CompatibilityLevel::Full.check(&v2, &prev).is_empty());
    }

    #[test]
    fn adding_a_field_without_default_breaks_backward_only() {
        let v2 = record(r#"{"name":"a","type":"int"},{"name":"b","type":"string"}"#);
        let prev = [(1, &v1())];
        assert_eq!(CompatibilityLevel::Backward.check(&v2, &prev).len(), 1);
        assert!(CompatibilityLevel::Forward.check(&v2, &prev).is_empty());
        assert_eq!(CompatibilityLevel::Full.check(&v2, &prev).len(), 1);
        assert!(CompatibilityLevel::None.check(&v2, &prev).is_empty());
    }

    #[test]
    fn removing_a_field_without_default_breaks_forward_only() {
        let v1 = record(r#"{"name":"a","type":"int"},{"name":"b","type":"string"}"#);
        let v2 = record(r#"{"name":"a","type":"int"}"#);
        let prev = [(1, &v1)];
        assert!(CompatibilityLevel::Backward.check(&v2, &prev).is_empty());
        assert_eq!(CompatibilityLevel::Forward.check(&v2, &prev).len(), 1);
    }

    #[test]
    fn changing_a_type() {
        let long = record(r#"{"name":"a","type":"long"}"#);
        let string = record(r#"{"name":"a","type":"string"}"#);
        // int widens to long: a long reader reads int data, not the other way round.
        assert!(
            CompatibilityLevel::Backward
                .check(&long, &[(1, &v1())])
                .is_empty()
        );
        assert_eq!(
            CompatibilityLevel::Forward
                .check(&long, &[(1, &v1())])
                .len(),
            1
        );
        assert_eq!(
            CompatibilityLevel::Backward
                .check(&string, &[(1, &v1())])
                .len(),
            1
        );
    }

    #[test]
    fn removing_an_enum_symbol_counts_as_incompatible() {
        let e = |symbols: &str| {
            Schema::parse_str(&format!(
                r#"{{"type":"enum","name":"E","symbols":[{symbols}]}}"#
            ))
            .expect("parses")
        };
        let (ab, a) = (e(r#""A","B""#), e(r#""A""#));
        assert_eq!(CompatibilityLevel::Backward.check(&a, &[(1, &ab)]).len(), 1);
        assert!(
            CompatibilityLevel::Backward
                .check(&ab, &[(1, &a)])
                .is_empty()
        );
    }
}
