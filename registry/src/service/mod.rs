//! What each API call does: reads answer from the index, writes go to the log and, once acknowledged, into
//! the index. One write at a time (the `writer` lock), so ids and versions are assigned without races.
//!
//! By concern: registration, lookups and reads here; soft and permanent deletes in [`deletes`]; compatibility
//! configuration and checks in [`config`].

mod config;
mod deletes;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::api::{
    SchemaRequest, SchemaResponse, SubjectVersion, SubjectVersionResponse, VersionSpec,
    validate_subject,
};
use crate::avro::ParsedSchema;
use crate::compat::CompatibilityLevel;
use crate::error::Error;
use crate::index::Index;
use crate::log::Log;
use crate::metrics::Metrics;
use crate::records::{Record, Reference, SchemaValue};

/// The only schema type served.
const AVRO: &str = "AVRO";

/// The registry: an index rebuilt from the log, and the log it writes to.
pub struct Registry {
    index: RwLock<Index>,
    loaded: AtomicBool,
    writer: tokio::sync::Mutex<()>,
    log: Arc<dyn Log>,
    default_level: CompatibilityLevel,
    metrics: Metrics,
}

/// A submitted schema, parsed against the index.
struct Candidate {
    text: String,
    references: Vec<Reference>,
    parsed: ParsedSchema,
}

impl Registry {
    /// A registry that answers 503 until [`Registry::install`] hands it the replayed index.
    pub fn new(log: Arc<dyn Log>, default_level: CompatibilityLevel, metrics: Metrics) -> Self {
        Self {
            index: RwLock::new(Index::default()),
            loaded: AtomicBool::new(false),
            writer: tokio::sync::Mutex::new(()),
            log,
            default_level,
            metrics,
        }
    }

    /// Replaces the index with one replayed from the log and starts answering.
    pub fn install(&self, index: Index) {
        self.metrics.schemas.set(index.schema_count() as i64);
        match self.index.write() {
            Ok(mut guard) => *guard = index,
            Err(poisoned) => *poisoned.into_inner() = index,
        }
        self.loaded.store(true, Ordering::SeqCst);
    }

    /// Whether the log has been replayed.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    fn ensure_loaded(&self) -> Result<(), Error> {
        if self.is_loaded() {
            Ok(())
        } else {
            Err(Error::NotReady)
        }
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, Index>, Error> {
        self.ensure_loaded()?;
        // A panic while applying a record would poison the lock; the index itself is still consistent
        // record by record, so keep serving.
        Ok(self.index.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn write_index(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `record`, then applies it: the index never holds what the broker has not acknowledged.
    async fn commit(&self, record: Record) -> Result<(), Error> {
        match self.log.append(&record).await {
            Ok(()) => {
                self.metrics.log_writes.with_label_values(&["ok"]).inc();
                let mut index = self.write_index();
                index.apply(&record);
                self.metrics.schemas.set(index.schema_count() as i64);
                Ok(())
            }
            Err(e) => {
                self.metrics.log_writes.with_label_values(&["error"]).inc();
                Err(Error::Store(e))
            }
        }
    }

    fn level_for(&self, index: &Index, subject: &str) -> CompatibilityLevel {
        index
            .subject_config(subject)
            .or(index.global_config())
            .unwrap_or(self.default_level)
    }

    /// Reads a request's schema, type and references and parses it with the references resolved.
    fn candidate(index: &Index, request: &SchemaRequest) -> Result<Candidate, Error> {
        let text = request.schema.as_deref().filter(|s| !s.trim().is_empty());
        let text = text.ok_or_else(|| Error::InvalidSchema("Empty schema".into()))?;
        if let Some(kind) = &request.schema_type
            && !kind.eq_ignore_ascii_case(AVRO)
        {
            return Err(Error::InvalidSchema(format!(
                "Invalid schema type {kind}: this registry serves AVRO only"
            )));
        }
        let mut references = Vec::new();
        for r in request.references.iter().flatten() {
            let version = match VersionSpec::parse(&r.version.to_string()) {
                Ok(VersionSpec::Number(n)) => n,
                Ok(VersionSpec::Latest) => index
                    .resolve(&r.subject, VersionSpec::Latest, false)
                    .map(|(v, _)| v)
                    .map_err(|e| Error::InvalidSchema(format!("reference {}: {e}", r.name)))?,
                Err(_) => {
                    return Err(Error::InvalidSchema(format!(
                        "reference {}: invalid version {}",
                        r.name, r.version
                    )));
                }
            };
            references.push(Reference {
                name: r.name.clone(),
                subject: r.subject.clone(),
                version,
            });
        }
        let parsed = index
            .parse(text, &references)
            .map_err(Error::InvalidSchema)?;
        Ok(Candidate {
            text: text.to_owned(),
            references,
            parsed,
        })
    }

    /// Incompatibilities of `new` with the versions `level` covers (all live ones, or the latest).
    fn incompatibilities(
        index: &Index,
        subject: &str,
        level: CompatibilityLevel,
        new: &ParsedSchema,
    ) -> Vec<String> {
        let live = index.versions(subject, false);
        let covered = if level.is_transitive() {
            &live[..]
        } else {
            &live[live.len().saturating_sub(1)..]
        };
        Self::check_against(index, level, new, covered)
    }

    fn check_against(
        index: &Index,
        level: CompatibilityLevel,
        new: &ParsedSchema,
        versions: &[(u32, crate::index::VersionEntry)],
    ) -> Vec<String> {
        let mut previous = Vec::new();
        let mut messages = Vec::new();
        for (version, entry) in versions {
            match index.schema(entry.id).and_then(|s| s.parsed.as_deref()) {
                Some(p) => previous.push((*version, &p.resolved)),
                None => messages.push(format!(
                    "version {version} has a schema this registry cannot parse"
                )),
            }
        }
        messages.extend(level.check(&new.resolved, &previous));
        messages
    }

    /// `POST /subjects/{subject}/versions`: the id of the schema, registering a new version if needed.
    pub async fn register(&self, subject: &str, request: &SchemaRequest) -> Result<u32, Error> {
        validate_subject(subject)?;
        self.ensure_loaded()?;
        let _one_writer = self.writer.lock().await;
        let (id, record) = {
            let index = self.read()?;
            let candidate = Self::candidate(&index, request)?;
            let existing = index.id_of(&candidate.parsed, &candidate.references);
            // Already a live version of this subject: same id, no new version, no compatibility check.
            if let Some(id) = existing
                && index.version_with_id(subject, id, false).is_some()
            {
                return Ok(id);
            }
            let level = self.level_for(&index, subject);
            let messages = Self::incompatibilities(&index, subject, level, &candidate.parsed);
            if !messages.is_empty() {
                return Err(Error::Incompatible {
                    subject: subject.to_owned(),
                    messages,
                });
            }
            let (id, text) = match existing {
                // The same schema elsewhere keeps its id and its first text, so every record of an id agrees.
                Some(id) => (
                    id,
                    index
                        .schema(id)
                        .map(|s| s.text.clone())
                        .unwrap_or(candidate.text),
                ),
                None => (index.next_id(), candidate.text),
            };
            let version = index
                .all_versions(subject)
                .and_then(|v| v.keys().next_back().copied())
                .unwrap_or(0)
                + 1;
            let record = Record::Schema(SchemaValue {
                subject: subject.to_owned(),
                version,
                id,
                schema_type: None,
                references: candidate.references,
                schema: text,
                deleted: false,
            });
            (id, record)
        };
        self.commit(record).await?;
        tracing::info!(subject, id, "schema registered");
        Ok(id)
    }

    /// `POST /subjects/{subject}`: the version of `subject` holding this schema.
    pub fn lookup(
        &self,
        subject: &str,
        request: &SchemaRequest,
        include_deleted: bool,
    ) -> Result<SubjectVersionResponse, Error> {
        let index = self.read()?;
        if index.versions(subject, include_deleted).is_empty() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let candidate = Self::candidate(&index, request)?;
        let id = index
            .id_of(&candidate.parsed, &candidate.references)
            .ok_or(Error::SchemaNotFound(None))?;
        let version = index
            .version_with_id(subject, id, include_deleted)
            .ok_or(Error::SchemaNotFound(None))?;
        Self::version_response(&index, subject, version, id)
    }

    fn version_response(
        index: &Index,
        subject: &str,
        version: u32,
        id: u32,
    ) -> Result<SubjectVersionResponse, Error> {
        let schema = index
            .schema(id)
            .ok_or_else(|| Error::SchemaNotFound(Some(id.to_string())))?;
        Ok(SubjectVersionResponse {
            subject: subject.to_owned(),
            version,
            id,
            schema_type: None,
            references: schema.references.clone(),
            schema: schema.text.clone(),
        })
    }

    /// `GET /schemas/ids/{id}`; soft-deleted schemas stay readable so old data still decodes.
    pub fn schema_by_id(&self, id: u32) -> Result<SchemaResponse, Error> {
        let index = self.read()?;
        let schema = index
            .schema(id)
            .ok_or_else(|| Error::SchemaNotFound(Some(id.to_string())))?;
        Ok(SchemaResponse {
            schema_type: None,
            schema: schema.text.clone(),
            references: schema.references.clone(),
        })
    }

    /// `GET /schemas/ids/{id}/versions`.
    pub fn versions_of_id(
        &self,
        id: u32,
        include_deleted: bool,
    ) -> Result<Vec<SubjectVersion>, Error> {
        let index = self.read()?;
        if index.schema(id).is_none() {
            return Err(Error::SchemaNotFound(Some(id.to_string())));
        }
        Ok(index
            .uses_of(id)
            .into_iter()
            .filter(|(_, _, deleted)| include_deleted || !deleted)
            .map(|(subject, version, _)| SubjectVersion { subject, version })
            .collect())
    }

    /// `GET /subjects`.
    pub fn subjects(&self, include_deleted: bool) -> Result<Vec<String>, Error> {
        Ok(self.read()?.subjects(include_deleted))
    }

    /// `GET /subjects/{subject}/versions`.
    pub fn versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<u32>, Error> {
        let versions = self.read()?.versions(subject, include_deleted);
        if versions.is_empty() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions.into_iter().map(|(v, _)| v).collect())
    }

    /// `GET /subjects/{subject}/versions/{version}`.
    pub fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<SubjectVersionResponse, Error> {
        let index = self.read()?;
        let (version, entry) = index.resolve(subject, spec, include_deleted)?;
        Self::version_response(&index, subject, version, entry.id)
    }

    /// `GET /subjects/{subject}/versions/{version}/referencedby`.
    pub fn referenced_by(&self, subject: &str, spec: VersionSpec) -> Result<Vec<u32>, Error> {
        let index = self.read()?;
        let (version, _) = index.resolve(subject, spec, true)?;
        Ok(index.referenced_by(subject, version))
    }
}

#[cfg(test)]
mod tests;
