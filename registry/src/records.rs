//! The records of the `_schemas` log, shaped like Confluent's so either registry can read the other's topic.
//!
//! | key                                                                 | value                                   |
//! |---------------------------------------------------------------------|-----------------------------------------|
//! | `{"keytype":"SCHEMA","subject":S,"version":V,"magic":1}`            | `{"subject","version","id","schema","schemaType"?,"references"?,"deleted"}` or null (permanent delete) |
//! | `{"keytype":"CONFIG","subject":S or null,"magic":0}`                | `{"compatibilityLevel":L}` or null (config removed) |
//! | `{"keytype":"DELETE_SUBJECT","subject":S,"magic":0}`                | `{"subject":S,"version":V}`: versions up to V soft-deleted (read, never written) |
//! | `{"keytype":"NOOP","magic":0}`                                      | null: start-up marker, read past to know the log is replayed |
//!
//! Keys are written with a fixed field order, so compaction keeps exactly the latest record of each.
//! Other key types (Confluent's `MODE`, `CONTEXT`, ...) are skipped on replay.

use serde::{Deserialize, Serialize};

use crate::compat::CompatibilityLevel;

/// A reference from one schema to a named type registered under another subject and version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reference {
    /// The name the referencing schema uses (for Avro, the type's full name).
    pub name: String,
    /// Subject the referenced schema is registered under.
    pub subject: String,
    /// Version of that subject.
    pub version: u32,
}

/// One version of one subject, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaValue {
    /// Subject name.
    pub subject: String,
    /// Version within the subject, from 1.
    pub version: u32,
    /// Registry-wide schema id.
    pub id: u32,
    /// Only `AVRO` here; omitted for Avro, as Confluent does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_type: Option<String>,
    /// Referenced schemas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    /// The schema text as first registered.
    pub schema: String,
    /// Soft-deleted: hidden from listings, still served by id.
    #[serde(default)]
    pub deleted: bool,
}

/// One entry of the log, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A version registered or soft-deleted.
    Schema(SchemaValue),
    /// A version permanently deleted.
    SchemaTombstone { subject: String, version: u32 },
    /// A compatibility level set, globally (`subject` `None`) or for one subject.
    Config {
        subject: Option<String>,
        level: CompatibilityLevel,
    },
    /// A compatibility level removed.
    ConfigTombstone { subject: Option<String> },
    /// Confluent's subject soft-delete: every version up to `version` is deleted.
    DeleteSubject { subject: String, version: u32 },
    /// Start-up marker.
    Noop,
}

#[derive(Serialize)]
struct SchemaKey<'a> {
    keytype: &'static str,
    subject: &'a str,
    version: u32,
    magic: u8,
}

#[derive(Serialize)]
struct ConfigKey<'a> {
    keytype: &'static str,
    subject: Option<&'a str>,
    magic: u8,
}

#[derive(Serialize)]
struct NoopKey {
    keytype: &'static str,
    magic: u8,
}

#[derive(Deserialize)]
struct AnyKey {
    keytype: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    version: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigValue {
    compatibility_level: CompatibilityLevel,
}

/// A config as read back, where the level may be absent.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredConfigValue {
    #[serde(default)]
    compatibility_level: Option<CompatibilityLevel>,
}

#[derive(Deserialize)]
struct DeleteSubjectValue {
    version: u32,
}

/// A log entry that could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("undecodable _schemas record: {0}")]
pub struct DecodeError(String);

impl Record {
    /// Key and value bytes; a `None` value is a tombstone.
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            Record::Schema(value) => (
                json(&SchemaKey {
                    keytype: "SCHEMA",
                    subject: &value.subject,
                    version: value.version,
                    magic: 1,
                }),
                Some(json(value)),
            ),
            Record::SchemaTombstone { subject, version } => (
                json(&SchemaKey {
                    keytype: "SCHEMA",
                    subject,
                    version: *version,
                    magic: 1,
                }),
                None,
            ),
            Record::Config { subject, level } => (
                json(&ConfigKey {
                    keytype: "CONFIG",
                    subject: subject.as_deref(),
                    magic: 0,
                }),
                Some(json(&ConfigValue {
                    compatibility_level: *level,
                })),
            ),
            Record::ConfigTombstone { subject } => (
                json(&ConfigKey {
                    keytype: "CONFIG",
                    subject: subject.as_deref(),
                    magic: 0,
                }),
                None,
            ),
            Record::DeleteSubject { subject, version } => (
                json(&ConfigKey {
                    keytype: "DELETE_SUBJECT",
                    subject: Some(subject),
                    magic: 0,
                }),
                Some(json(
                    &serde_json::json!({ "subject": subject, "version": version }),
                )),
            ),
            Record::Noop => (
                json(&NoopKey {
                    keytype: "NOOP",
                    magic: 0,
                }),
                None,
            ),
        }
    }

    /// Decodes one log entry; `Ok(None)` for key types this registry does not use.
    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Option<Record>, DecodeError> {
        let key = key.ok_or_else(|| DecodeError("record without a key".into()))?;
        let key: AnyKey =
            serde_json::from_slice(key).map_err(|e| DecodeError(format!("key: {e}")))?;
        let missing = |what: &str| DecodeError(format!("{} key without {what}", key.keytype));
        let record = match key.keytype.as_str() {
            "SCHEMA" => {
                let subject = key.subject.clone().ok_or_else(|| missing("subject"))?;
                let version = key.version.ok_or_else(|| missing("version"))?;
                match value {
                    None => Record::SchemaTombstone { subject, version },
                    Some(v) => {
                        let value: SchemaValue = serde_json::from_slice(v)
                            .map_err(|e| DecodeError(format!("SCHEMA value: {e}")))?;
                        Record::Schema(value)
                    }
                }
            }
            "CONFIG" => match value {
                None => Record::ConfigTombstone {
                    subject: key.subject,
                },
                Some(v) => {
                    let value: StoredConfigValue = serde_json::from_slice(v)
                        .map_err(|e| DecodeError(format!("CONFIG value: {e}")))?;
                    // Newer Confluent versions also store configs that set only other keys (normalize, ...).
                    let Some(level) = value.compatibility_level else {
                        return Ok(None);
                    };
                    Record::Config {
                        subject: key.subject,
                        level,
                    }
                }
            },
            "DELETE_SUBJECT" => {
                let subject = key.subject.clone().ok_or_else(|| missing("subject"))?;
                match value {
                    None => return Ok(None),
                    Some(v) => {
                        let value: DeleteSubjectValue = serde_json::from_slice(v)
                            .map_err(|e| DecodeError(format!("DELETE_SUBJECT value: {e}")))?;
                        Record::DeleteSubject {
                            subject,
                            version: value.version,
                        }
                    }
                }
            }
            "NOOP" => Record::Noop,
            _ => return Ok(None),
        };
        Ok(Some(record))
    }
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail; the empty fallback keeps encoding free of panics.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(r: Record) {
        let (k, v) = r.encode();
        assert_eq!(
            Record::decode(Some(&k), v.as_deref()).expect("decodes"),
            Some(r)
        );
    }

    fn schema_value() -> SchemaValue {
        SchemaValue {
            subject: "s".into(),
            version: 2,
            id: 7,
            schema_type: None,
            references: vec![Reference {
                name: "ns.T".into(),
                subject: "t".into(),
                version: 1,
            }],
            schema: r#""string""#.into(),
            deleted: false,
        }
    }

    #[test]
    fn every_record_round_trips() {
        round_trip(Record::Schema(schema_value()));
        round_trip(Record::SchemaTombstone {
            subject: "s".into(),
            version: 3,
        });
        round_trip(Record::Config {
            subject: None,
            level: CompatibilityLevel::Full,
        });
        round_trip(Record::Config {
            subject: Some("s".into()),
            level: CompatibilityLevel::None,
        });
        round_trip(Record::ConfigTombstone {
            subject: Some("s".into()),
        });
        round_trip(Record::DeleteSubject {
            subject: "s".into(),
            version: 4,
        });
        round_trip(Record::Noop);
    }

    #[test]
    fn keys_match_confluent_byte_for_byte() {
        let (k, _) = Record::SchemaTombstone {
            subject: "s".into(),
            version: 3,
        }
        .encode();
        assert_eq!(
            String::from_utf8_lossy(&k),
            r#"{"keytype":"SCHEMA","subject":"s","version":3,"magic":1}"#
        );
        let (k, v) = Record::Config {
            subject: None,
            level: CompatibilityLevel::Backward,
        }
        .encode();
        assert_eq!(
            String::from_utf8_lossy(&k),
            r#"{"keytype":"CONFIG","subject":null,"magic":0}"#
        );
        assert_eq!(
            v.as_deref().map(String::from_utf8_lossy).as_deref(),
            Some(r#"{"compatibilityLevel":"BACKWARD"}"#)
        );
    }

    #[test]
    fn reads_a_confluent_schema_value() {
        let key = br#"{"keytype":"SCHEMA","subject":"orders-value","version":1,"magic":1}"#;
        let value = br#"{"subject":"orders-value","version":1,"id":21,"schema":"\"long\"","deleted":false}"#;
        match Record::decode(Some(key), Some(value)).expect("decodes") {
            Some(Record::Schema(v)) => assert_eq!((v.id, v.schema.as_str()), (21, r#""long""#)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_key_types_are_skipped_and_garbage_is_an_error() {
        assert_eq!(
            Record::decode(
                Some(br#"{"keytype":"MODE","subject":null,"magic":0}"#),
                Some(b"{}")
            )
            .expect("ok"),
            None
        );
        let config_key = br#"{"keytype":"CONFIG","subject":"s","magic":0}"#;
        let normalize_only = br#"{"normalize":true,"compatibilityLevel":null}"#;
        assert_eq!(
            Record::decode(Some(config_key), Some(normalize_only)).expect("ok"),
            None
        );
        assert!(Record::decode(Some(b"not json"), None).is_err());
        assert!(Record::decode(None, None).is_err());
    }
}
