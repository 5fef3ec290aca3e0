//! The in-memory view of the log: subjects, versions, schemas by id and configs. Rebuilt by applying every
//! record in log order at start-up, then kept current by applying each record once the broker acknowledged it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::api::VersionSpec;
use crate::avro::{self, ParsedSchema};
use crate::compat::CompatibilityLevel;
use crate::error::Error;
use crate::records::{Record, Reference, SchemaValue};

/// One version of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionEntry {
    /// Schema id it points at.
    pub id: u32,
    /// Soft-deleted.
    pub deleted: bool,
}

/// A schema known by id.
#[derive(Debug, Clone)]
pub struct StoredSchema {
    /// Text as first registered.
    pub text: String,
    /// Its references.
    pub references: Vec<Reference>,
    /// The parse; `None` only for a record from another writer that no longer parses here.
    pub parsed: Option<Arc<ParsedSchema>>,
    /// Versions (soft-deleted included) pointing at it; at zero the id is forgotten.
    uses: usize,
}

/// Everything the registry answers from.
#[derive(Debug, Default)]
pub struct Index {
    subjects: BTreeMap<String, BTreeMap<u32, VersionEntry>>,
    schemas: BTreeMap<u32, StoredSchema>,
    by_identity: HashMap<String, u32>,
    configs: BTreeMap<String, CompatibilityLevel>,
    global: Option<CompatibilityLevel>,
    max_id: u32,
}

impl Index {
    /// Applies one record of the log.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Schema(value) => self.put_version(value),
            Record::SchemaTombstone { subject, version } => {
                let removed = self
                    .subjects
                    .get_mut(subject)
                    .and_then(|versions| versions.remove(version));
                if self.subjects.get(subject).is_some_and(BTreeMap::is_empty) {
                    self.subjects.remove(subject);
                }
                if let Some(entry) = removed {
                    self.release(entry.id);
                }
            }
            Record::Config {
                subject: None,
                level,
            } => self.global = Some(*level),
            Record::Config {
                subject: Some(s),
                level,
            } => {
                self.configs.insert(s.clone(), *level);
            }
            Record::ConfigTombstone { subject: None } => self.global = None,
            Record::ConfigTombstone { subject: Some(s) } => {
                self.configs.remove(s);
            }
            Record::DeleteSubject { subject, version } => {
                if let Some(versions) = self.subjects.get_mut(subject) {
                    for (_, entry) in versions.range_mut(..=*version) {
                        entry.deleted = true;
                    }
                }
            }
            Record::Noop => {}
        }
    }

    fn put_version(&mut self, value: &SchemaValue) {
        if !self.schemas.contains_key(&value.id) {
            let parsed = self.parse(&value.schema, &value.references);
            let parsed = match parsed {
                Ok(p) => Some(Arc::new(p)),
                Err(e) => {
                    tracing::error!(id = value.id, subject = %value.subject, error = %e, "stored schema does not parse");
                    None
                }
            };
            if let Some(p) = &parsed {
                let key = identity_key(&p.identity, &value.references);
                self.by_identity.entry(key).or_insert(value.id);
            }
            let stored = StoredSchema {
                text: value.schema.clone(),
                references: value.references.clone(),
                parsed,
                uses: 0,
            };
            self.schemas.insert(value.id, stored);
        }
        if let Some(s) = self.schemas.get_mut(&value.id) {
            s.uses += 1;
        }
        self.max_id = self.max_id.max(value.id);
        let entry = VersionEntry {
            id: value.id,
            deleted: value.deleted,
        };
        let previous = self
            .subjects
            .entry(value.subject.clone())
            .or_default()
            .insert(value.version, entry);
        if let Some(old) = previous {
            self.release(old.id);
        }
    }

    fn release(&mut self, id: u32) {
        let Some(schema) = self.schemas.get_mut(&id) else {
            return;
        };
        schema.uses = schema.uses.saturating_sub(1);
        if schema.uses == 0
            && let Some(gone) = self.schemas.remove(&id)
            && let Some(p) = gone.parsed
        {
            let key = identity_key(&p.identity, &gone.references);
            if self.by_identity.get(&key) == Some(&id) {
                self.by_identity.remove(&key);
            }
        }
    }

    /// Parses `text` with its references resolved from this index.
    pub fn parse(&self, text: &str, references: &[Reference]) -> Result<ParsedSchema, String> {
        let deps = self.dependencies(references)?;
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        avro::parse(text, &deps)
    }

    /// Texts of every schema `references` need, dependencies before dependants, each once.
    fn dependencies(&self, references: &[Reference]) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        self.collect(references, &mut out, &mut seen, 0)?;
        Ok(out)
    }

    fn collect(
        &self,
        references: &[Reference],
        out: &mut Vec<String>,
        seen: &mut Vec<(String, u32)>,
        depth: usize,
    ) -> Result<(), String> {
        // References form a DAG by construction; the bound only guards against a hand-made cyclic log.
        if depth > 32 {
            return Err("references nest deeper than 32 levels".into());
        }
        for r in references {
            if seen.iter().any(|(s, v)| *s == r.subject && *v == r.version) {
                continue;
            }
            seen.push((r.subject.clone(), r.version));
            let entry = self
                .subjects
                .get(&r.subject)
                .and_then(|versions| versions.get(&r.version))
                .ok_or_else(|| {
                    format!(
                        "reference {} not found: subject '{}' version {}",
                        r.name, r.subject, r.version
                    )
                })?;
            let schema = self
                .schemas
                .get(&entry.id)
                .ok_or_else(|| format!("schema {} not found", entry.id))?;
            self.collect(&schema.references, out, seen, depth + 1)?;
            out.push(schema.text.clone());
        }
        Ok(())
    }

    /// The schema with this id.
    pub fn schema(&self, id: u32) -> Option<&StoredSchema> {
        self.schemas.get(&id)
    }

    /// The id a parsed schema with these references already has anywhere in the registry.
    pub fn id_of(&self, parsed: &ParsedSchema, references: &[Reference]) -> Option<u32> {
        self.by_identity
            .get(&identity_key(&parsed.identity, references))
            .copied()
    }

    /// The id the next new schema gets.
    pub fn next_id(&self) -> u32 {
        self.max_id + 1
    }

    /// Subject names with a live version (or any version when `include_deleted`).
    pub fn subjects(&self, include_deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, versions)| include_deleted || versions.values().any(|e| !e.deleted))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Every version of `subject`, soft-deleted ones included, or `None` when it has none.
    pub fn all_versions(&self, subject: &str) -> Option<&BTreeMap<u32, VersionEntry>> {
        self.subjects.get(subject).filter(|v| !v.is_empty())
    }

    /// Live versions of `subject`, oldest first (soft-deleted too when `include_deleted`).
    pub fn versions(&self, subject: &str, include_deleted: bool) -> Vec<(u32, VersionEntry)> {
        self.subjects
            .get(subject)
            .map(|versions| {
                versions
                    .iter()
                    .filter(|(_, e)| include_deleted || !e.deleted)
                    .map(|(v, e)| (*v, *e))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Resolves a `{version}` among the versions visible with `include_deleted`: 40401 or 40402 when absent.
    pub fn resolve(
        &self,
        subject: &str,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<(u32, VersionEntry), Error> {
        let visible = self.versions(subject, include_deleted);
        if visible.is_empty() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let found = match spec {
            VersionSpec::Latest => visible.last().copied(),
            VersionSpec::Number(n) => visible.iter().find(|(v, _)| *v == n).copied(),
        };
        found.ok_or_else(|| {
            Error::VersionNotFound(match spec {
                VersionSpec::Latest => "latest".to_owned(),
                VersionSpec::Number(n) => n.to_string(),
            })
        })
    }

    /// The version of `subject` whose schema has this id, if visible.
    pub fn version_with_id(&self, subject: &str, id: u32, include_deleted: bool) -> Option<u32> {
        self.versions(subject, include_deleted)
            .into_iter()
            .find(|(_, e)| e.id == id)
            .map(|(v, _)| v)
    }

    /// Every (subject, version) using schema `id`, soft-deleted ones included.
    pub fn uses_of(&self, id: u32) -> Vec<(String, u32, bool)> {
        let mut out = Vec::new();
        for (subject, versions) in &self.subjects {
            for (v, e) in versions {
                if e.id == id {
                    out.push((subject.clone(), *v, e.deleted));
                }
            }
        }
        out
    }

    /// Ids of schemas, still registered somewhere, that reference `subject` `version`.
    pub fn referenced_by(&self, subject: &str, version: u32) -> Vec<u32> {
        self.schemas
            .iter()
            .filter(|(_, s)| {
                s.references
                    .iter()
                    .any(|r| r.subject == subject && r.version == version)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The subject's own level, if set.
    pub fn subject_config(&self, subject: &str) -> Option<CompatibilityLevel> {
        self.configs.get(subject).copied()
    }

    /// The global level, if set through the API.
    pub fn global_config(&self) -> Option<CompatibilityLevel> {
        self.global
    }

    /// Number of distinct schema ids.
    pub fn schema_count(&self) -> usize {
        self.schemas.len()
    }
}

/// Schemas with the same body but different references are different schemas.
fn identity_key(identity: &str, references: &[Reference]) -> String {
    if references.is_empty() {
        return identity.to_owned();
    }
    let refs: Vec<String> = references
        .iter()
        .map(|r| format!("{}={}/{}", r.name, r.subject, r.version))
        .collect();
    format!("{identity}\u{0}{}", refs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(index: &mut Index, subject: &str, version: u32, id: u32, schema: &str) {
        index.apply(&Record::Schema(SchemaValue {
            subject: subject.into(),
            version,
            id,
            schema_type: None,
            references: vec![],
            schema: schema.into(),
            deleted: false,
        }));
    }

    #[test]
    fn versions_ids_and_soft_deletes() {
        let mut ix = Index::default();
        put(&mut ix, "a", 1, 1, r#""int""#);
        put(&mut ix, "a", 2, 2, r#""long""#);
        put(&mut ix, "b", 1, 1, r#""int""#);
        assert_eq!(ix.subjects(false), vec!["a", "b"]);
        assert_eq!(ix.next_id(), 3);
        assert_eq!(
            ix.resolve("a", VersionSpec::Latest, false)
                .ok()
                .map(|(v, e)| (v, e.id)),
            Some((2, 2))
        );
        let parsed = ix.parse(r#" "int" "#, &[]).expect("parses");
        assert_eq!(ix.id_of(&parsed, &[]), Some(1));

        ix.apply(&Record::DeleteSubject {
            subject: "a".into(),
            version: 2,
        });
        assert_eq!(ix.subjects(false), vec!["b"]);
        assert_eq!(ix.subjects(true), vec!["a", "b"]);
        assert!(matches!(
            ix.resolve("a", VersionSpec::Number(1), false),
            Err(Error::SubjectNotFound(_))
        ));
        assert!(ix.resolve("a", VersionSpec::Number(1), true).is_ok());
        assert!(matches!(
            ix.resolve("a", VersionSpec::Number(7), true),
            Err(Error::VersionNotFound(_))
        ));
        // Soft-deleted schemas stay readable by id.
        assert!(ix.schema(2).is_some());
    }

    #[test]
    fn permanent_delete_forgets_an_id_once_nothing_uses_it() {
        let mut ix = Index::default();
        put(&mut ix, "a", 1, 1, r#""int""#);
        put(&mut ix, "b", 1, 1, r#""int""#);
        ix.apply(&Record::SchemaTombstone {
            subject: "a".into(),
            version: 1,
        });
        assert!(ix.schema(1).is_some(), "b still uses it");
        assert!(ix.all_versions("a").is_none());
        ix.apply(&Record::SchemaTombstone {
            subject: "b".into(),
            version: 1,
        });
        assert!(ix.schema(1).is_none());
        let parsed = ix.parse(r#""int""#, &[]).expect("parses");
        assert_eq!(ix.id_of(&parsed, &[]), None);
        assert_eq!(ix.next_id(), 2, "ids are not reused within a run");
    }

    #[test]
    fn configs() {
        let mut ix = Index::default();
        ix.apply(&Record::Config {
            subject: None,
            level: CompatibilityLevel::Full,
        });
        ix.apply(&Record::Config {
            subject: Some("a".into()),
            level: CompatibilityLevel::None,
        });
        assert_eq!(ix.global_config(), Some(CompatibilityLevel::Full));
        assert_eq!(ix.subject_config("a"), Some(CompatibilityLevel::None));
        ix.apply(&Record::ConfigTombstone {
            subject: Some("a".into()),
        });
        ix.apply(&Record::ConfigTombstone { subject: None });
        assert_eq!((ix.global_config(), ix.subject_config("a")), (None, None));
    }

    #[test]
    fn references_resolve_through_the_index() {
        let mut ix = Index::default();
        put(
            &mut ix,
            "inner",
            1,
            1,
            r#"{"type":"record","name":"ns.Inner","fields":[{"name":"x","type":"int"}]}"#,
        );
        let refs = vec![Reference {
            name: "ns.Inner".into(),
            subject: "inner".into(),
            version: 1,
        }];
        let outer =
            r#"{"type":"record","name":"ns.Outer","fields":[{"name":"i","type":"ns.Inner"}]}"#;
        assert!(ix.parse(outer, &refs).is_ok());
        let missing = vec![Reference {
            name: "ns.Inner".into(),
            subject: "inner".into(),
            version: 2,
        }];
        assert!(ix.parse(outer, &missing).is_err());
        ix.apply(&Record::Schema(SchemaValue {
            subject: "outer".into(),
            version: 1,
            id: 2,
            schema_type: None,
            references: refs,
            schema: outer.into(),
            deleted: false,
        }));
        assert_eq!(ix.referenced_by("inner", 1), vec![2]);
    }
}
