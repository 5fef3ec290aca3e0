//! What each API call does: reads answer from the index, writes go to the log and, once acknowledged, into
//! the index. One write at a time (the `writer` lock), so ids and versions are assigned without races.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::api::{
    ConfigResponse, SchemaRequest, SchemaResponse, SubjectVersion, SubjectVersionResponse,
    VersionSpec, validate_subject,
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

    /// `DELETE /subjects/{subject}[?permanent=true]`: the versions deleted.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>, Error> {
        self.ensure_loaded()?;
        let _one_writer = self.writer.lock().await;
        let records = {
            let index = self.read()?;
            let all = index
                .all_versions(subject)
                .ok_or_else(|| Error::SubjectNotFound(subject.to_owned()))?;
            let live: Vec<u32> = all
                .iter()
                .filter(|(_, e)| !e.deleted)
                .map(|(v, _)| *v)
                .collect();
            if !permanent && live.is_empty() {
                return Err(Error::SubjectSoftDeleted(subject.to_owned()));
            }
            if permanent && !live.is_empty() {
                return Err(Error::SubjectNotSoftDeleted(subject.to_owned()));
            }
            for version in all.keys() {
                if !index.referenced_by(subject, *version).is_empty() {
                    return Err(Error::ReferenceExists(subject.to_owned(), *version));
                }
            }
            let mut records = Vec::new();
            if permanent {
                for version in all.keys() {
                    records.push((
                        *version,
                        Record::SchemaTombstone {
                            subject: subject.to_owned(),
                            version: *version,
                        },
                    ));
                }
                if index.subject_config(subject).is_some() {
                    records.push((
                        0,
                        Record::ConfigTombstone {
                            subject: Some(subject.to_owned()),
                        },
                    ));
                }
            } else {
                for version in &live {
                    let value = Self::stored_value(&index, subject, *version, true)?;
                    records.push((*version, Record::Schema(value)));
                }
            }
            records
        };
        let mut deleted = Vec::new();
        for (version, record) in records {
            // Each record is applied as soon as it is acknowledged, so a failure part-way leaves the index
            // matching the log; the client sees 50001 and may retry.
            self.commit(record).await?;
            if version > 0 {
                deleted.push(version);
            }
        }
        tracing::info!(subject, permanent, versions = ?deleted, "subject deleted");
        Ok(deleted)
    }

    /// `DELETE /subjects/{subject}/versions/{version}[?permanent=true]`: the version deleted.
    pub async fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<u32, Error> {
        self.ensure_loaded()?;
        let _one_writer = self.writer.lock().await;
        let (version, record) = {
            let index = self.read()?;
            let (version, entry) = index.resolve(subject, spec, true)?;
            if !permanent && entry.deleted {
                return Err(Error::VersionSoftDeleted(subject.to_owned(), version));
            }
            if permanent && !entry.deleted {
                return Err(Error::VersionNotSoftDeleted(subject.to_owned(), version));
            }
            if !index.referenced_by(subject, version).is_empty() {
                return Err(Error::ReferenceExists(subject.to_owned(), version));
            }
            let record = if permanent {
                Record::SchemaTombstone {
                    subject: subject.to_owned(),
                    version,
                }
            } else {
                Record::Schema(Self::stored_value(&index, subject, version, true)?)
            };
            (version, record)
        };
        self.commit(record).await?;
        tracing::info!(subject, version, permanent, "version deleted");
        Ok(version)
    }

    fn stored_value(
        index: &Index,
        subject: &str,
        version: u32,
        deleted: bool,
    ) -> Result<SchemaValue, Error> {
        let (_, entry) = index.resolve(subject, VersionSpec::Number(version), true)?;
        let schema = index
            .schema(entry.id)
            .ok_or_else(|| Error::SchemaNotFound(Some(entry.id.to_string())))?;
        Ok(SchemaValue {
            subject: subject.to_owned(),
            version,
            id: entry.id,
            schema_type: None,
            references: schema.references.clone(),
            schema: schema.text.clone(),
            deleted,
        })
    }

    /// `GET /config`.
    pub fn global_config(&self) -> Result<ConfigResponse, Error> {
        let index = self.read()?;
        Ok(ConfigResponse {
            compatibility_level: index.global_config().unwrap_or(self.default_level),
        })
    }

    /// `GET /config/{subject}[?defaultToGlobal=true]`.
    pub fn subject_config(
        &self,
        subject: &str,
        default_to_global: bool,
    ) -> Result<ConfigResponse, Error> {
        let index = self.read()?;
        let level = match index.subject_config(subject) {
            Some(level) => level,
            None if default_to_global => index.global_config().unwrap_or(self.default_level),
            None => return Err(Error::SubjectConfigNotFound(subject.to_owned())),
        };
        Ok(ConfigResponse {
            compatibility_level: level,
        })
    }

    /// `PUT /config` (subject `None`) and `PUT /config/{subject}`.
    pub async fn set_config(
        &self,
        subject: Option<&str>,
        level: &str,
    ) -> Result<CompatibilityLevel, Error> {
        if let Some(s) = subject {
            validate_subject(s)?;
        }
        let level: CompatibilityLevel = level
            .parse()
            .map_err(|e: crate::compat::UnknownLevel| Error::InvalidCompatibility(e.0))?;
        self.ensure_loaded()?;
        let _one_writer = self.writer.lock().await;
        self.commit(Record::Config {
            subject: subject.map(str::to_owned),
            level,
        })
        .await?;
        tracing::info!(subject = subject.unwrap_or("(global)"), %level, "compatibility set");
        Ok(level)
    }

    /// `DELETE /config` and `DELETE /config/{subject}`: the level in force before.
    pub async fn delete_config(&self, subject: Option<&str>) -> Result<ConfigResponse, Error> {
        self.ensure_loaded()?;
        let _one_writer = self.writer.lock().await;
        let old = {
            let index = self.read()?;
            match subject {
                None => index.global_config().unwrap_or(self.default_level),
                Some(s) => index
                    .subject_config(s)
                    .ok_or_else(|| Error::SubjectNotFound(s.to_owned()))?,
            }
        };
        self.commit(Record::ConfigTombstone {
            subject: subject.map(str::to_owned),
        })
        .await?;
        Ok(ConfigResponse {
            compatibility_level: old,
        })
    }

    /// `POST /compatibility/subjects/{subject}/versions[/{version}]`: why the schema would be rejected.
    ///
    /// Without a version it checks what registering would. `latest` under a transitive level covers every live
    /// version, as Confluent does; a numbered version is checked alone.
    pub fn check_compatibility(
        &self,
        subject: &str,
        spec: Option<VersionSpec>,
        request: &SchemaRequest,
    ) -> Result<Vec<String>, Error> {
        let index = self.read()?;
        let level = self.level_for(&index, subject);
        let targets = match spec {
            None => None,
            Some(VersionSpec::Latest) if level.is_transitive() => {
                index.resolve(subject, VersionSpec::Latest, false)?;
                Some(index.versions(subject, false))
            }
            Some(spec) => Some(vec![index.resolve(subject, spec, false)?]),
        };
        let candidate = Self::candidate(&index, request)?;
        Ok(match targets {
            None => Self::incompatibilities(&index, subject, level, &candidate.parsed),
            Some(versions) => Self::check_against(&index, level, &candidate.parsed, &versions),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::memory::MemoryLog;

    fn registry() -> (Registry, Arc<MemoryLog>) {
        let log = Arc::new(MemoryLog::default());
        let metrics = Metrics::new(&prometheus::Registry::new()).expect("metrics");
        let r = Registry::new(log.clone(), CompatibilityLevel::Backward, metrics);
        r.install(Index::default());
        (r, log)
    }

    fn req(schema: &str) -> SchemaRequest {
        SchemaRequest {
            schema: Some(schema.to_owned()),
            ..SchemaRequest::default()
        }
    }

    fn record(fields: &str) -> SchemaRequest {
        req(&format!(
            r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
        ))
    }

    const A: &str = r#"{"name":"a","type":"int"}"#;
    const B_DEFAULT: &str = r#"{"name":"b","type":"string","default":""}"#;
    const B: &str = r#"{"name":"b","type":"string"}"#;

    #[tokio::test]
    async fn not_ready_until_installed() {
        let log = Arc::new(MemoryLog::default());
        let metrics = Metrics::new(&prometheus::Registry::new()).expect("metrics");
        let r = Registry::new(log, CompatibilityLevel::Backward, metrics);
        assert!(matches!(r.subjects(false), Err(Error::NotReady)));
        assert!(matches!(
            r.register("s", &req(r#""int""#)).await,
            Err(Error::NotReady)
        ));
    }

    #[tokio::test]
    async fn same_schema_same_id_across_subjects_and_whitespace() {
        let (r, log) = registry();
        let id = r.register("a", &record(A)).await.expect("registers");
        let again = r
            .register(
                "a",
                &req(r#"{ "name" : "R", "type":"record", "fields":[{"type":"int","name":"a"}] }"#),
            )
            .await;
        assert_eq!(again.ok(), Some(id));
        assert_eq!(r.register("b", &record(A)).await.ok(), Some(id));
        assert_eq!(r.versions("a", false).ok(), Some(vec![1]));
        assert_eq!(log.records().len(), 2, "re-registering writes nothing");
        let other = r
            .register("a", &record(&format!("{A},{B_DEFAULT}")))
            .await
            .expect("compatible");
        assert_ne!(other, id);
        assert_eq!(r.versions("a", false).ok(), Some(vec![1, 2]));
    }

    #[tokio::test]
    async fn backward_rejects_a_field_without_default_and_none_allows_it() {
        let (r, _) = registry();
        r.register("s", &record(A)).await.expect("v1");
        let err = r
            .register("s", &record(&format!("{A},{B}")))
            .await
            .expect_err("incompatible");
        assert!(matches!(err, Error::Incompatible { .. }), "{err}");
        r.set_config(Some("s"), "NONE").await.expect("config");
        assert!(r.register("s", &record(&format!("{A},{B}"))).await.is_ok());
    }

    #[tokio::test]
    async fn transitive_checks_every_version() {
        let (r, _) = registry();
        // v1 {a}, v2 {} (drop a: backward fine), v3 {a:string default} (fine against v2, not v1's int a).
        r.register("s", &record(A)).await.expect("v1");
        r.register("s", &record("")).await.expect("v2");
        let v3 = record(r#"{"name":"a","type":"string","default":""}"#);
        assert!(
            r.check_compatibility("s", None, &v3)
                .expect("checks")
                .is_empty()
        );
        r.set_config(Some("s"), "BACKWARD_TRANSITIVE")
            .await
            .expect("config");
        assert_eq!(
            r.check_compatibility("s", None, &v3).expect("checks").len(),
            1
        );
        assert_eq!(
            r.check_compatibility("s", Some(VersionSpec::Latest), &v3)
                .expect("checks")
                .len(),
            1
        );
        assert!(
            r.check_compatibility("s", Some(VersionSpec::Number(2)), &v3)
                .expect("checks")
                .is_empty()
        );
        assert!(matches!(
            r.register("s", &v3).await,
            Err(Error::Incompatible { .. })
        ));
    }

    #[tokio::test]
    async fn soft_then_permanent_delete() {
        let (r, _) = registry();
        let id = r.register("s", &record(A)).await.expect("v1");
        r.register("s", &record(&format!("{A},{B_DEFAULT}")))
            .await
            .expect("v2");
        assert!(matches!(
            r.delete_subject("s", true).await,
            Err(Error::SubjectNotSoftDeleted(_))
        ));
        assert!(matches!(
            r.delete_version("s", VersionSpec::Number(1), true).await,
            Err(Error::VersionNotSoftDeleted(..))
        ));
        assert_eq!(
            r.delete_version("s", VersionSpec::Number(1), false)
                .await
                .ok(),
            Some(1)
        );
        assert!(matches!(
            r.delete_version("s", VersionSpec::Number(1), false).await,
            Err(Error::VersionSoftDeleted(..))
        ));
        assert_eq!(r.versions("s", false).ok(), Some(vec![2]));
        assert_eq!(r.versions("s", true).ok(), Some(vec![1, 2]));
        assert!(
            r.schema_by_id(id).is_ok(),
            "soft-deleted schemas still resolve by id"
        );
        assert_eq!(r.delete_subject("s", false).await.ok(), Some(vec![2]));
        assert!(matches!(
            r.delete_subject("s", false).await,
            Err(Error::SubjectSoftDeleted(_))
        ));
        assert!(matches!(
            r.versions("s", false),
            Err(Error::SubjectNotFound(_))
        ));
        assert_eq!(r.delete_subject("s", true).await.ok(), Some(vec![1, 2]));
        assert!(matches!(
            r.delete_subject("s", true).await,
            Err(Error::SubjectNotFound(_))
        ));
        assert!(matches!(r.schema_by_id(id), Err(Error::SchemaNotFound(_))));
    }

    #[tokio::test]
    async fn re_registering_a_soft_deleted_schema_makes_a_new_version_with_the_same_id() {
        let (r, _) = registry();
        let id = r.register("s", &record(A)).await.expect("v1");
        r.delete_subject("s", false).await.expect("soft delete");
        assert_eq!(r.register("s", &record(A)).await.ok(), Some(id));
        assert_eq!(r.versions("s", false).ok(), Some(vec![2]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_get_distinct_versions_and_one_id_per_schema() {
        let (r, log) = registry();
        r.set_config(Some("s"), "NONE").await.expect("config");
        let r = Arc::new(r);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let r = r.clone();
            // Ten distinct schemas, each registered twice at once.
            tasks.push(tokio::spawn(async move {
                r.register(
                    "s",
                    &req(&format!(
                        r#"{{"type":"fixed","name":"F","size":{}}}"#,
                        i % 10 + 1
                    )),
                )
                .await
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.expect("joins").expect("registers"));
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids, (1..=10).collect::<Vec<u32>>());
        assert_eq!(r.versions("s", false).ok(), Some((1..=10).collect()));
        assert_eq!(
            log.records().len(),
            11,
            "one config and one record per distinct schema"
        );
    }

    #[tokio::test]
    async fn lookup() {
        let (r, _) = registry();
        let id = r.register("s", &record(A)).await.expect("v1");
        let found = r.lookup("s", &record(A), false).expect("found");
        assert_eq!((found.version, found.id), (1, id));
        assert!(matches!(
            r.lookup("s", &record(B), false),
            Err(Error::SchemaNotFound(None))
        ));
        assert!(matches!(
            r.lookup("t", &record(A), false),
            Err(Error::SubjectNotFound(_))
        ));
        assert!(matches!(
            r.lookup("s", &req("{"), false),
            Err(Error::InvalidSchema(_))
        ));
    }

    #[tokio::test]
    async fn invalid_input() {
        let (r, _) = registry();
        assert!(matches!(
            r.register("s", &req("nope")).await,
            Err(Error::InvalidSchema(_))
        ));
        assert!(matches!(
            r.register("s", &SchemaRequest::default()).await,
            Err(Error::InvalidSchema(_))
        ));
        let proto = SchemaRequest {
            schema_type: Some("PROTOBUF".into()),
            ..req("syntax = \"proto3\";")
        };
        assert!(matches!(
            r.register("s", &proto).await,
            Err(Error::InvalidSchema(_))
        ));
        assert!(matches!(
            r.set_config(None, "SIDEWAYS").await,
            Err(Error::InvalidCompatibility(_))
        ));
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing() {
        let (r, log) = registry();
        log.set_failing(true);
        assert!(matches!(
            r.register("s", &record(A)).await,
            Err(Error::Store(_))
        ));
        assert!(matches!(
            r.versions("s", false),
            Err(Error::SubjectNotFound(_))
        ));
        log.set_failing(false);
        assert_eq!(r.register("s", &record(A)).await.ok(), Some(1));
    }

    #[tokio::test]
    async fn replaying_the_written_log_rebuilds_the_same_state() {
        let (r, log) = registry();
        r.register("s", &record(A)).await.expect("v1");
        r.register("s", &record(&format!("{A},{B_DEFAULT}")))
            .await
            .expect("v2");
        r.register("t", &req(r#""string""#)).await.expect("t");
        r.set_config(Some("s"), "FULL").await.expect("config");
        r.delete_version("s", VersionSpec::Number(1), false)
            .await
            .expect("delete");
        let mut replayed = Index::default();
        for rec in log.records() {
            let (k, v) = rec.encode();
            if let Ok(Some(decoded)) = Record::decode(Some(&k), v.as_deref()) {
                replayed.apply(&decoded);
            }
        }
        let (again, _) = registry();
        again.install(replayed);
        assert_eq!(again.versions("s", true).ok(), Some(vec![1, 2]));
        assert_eq!(again.versions("s", false).ok(), Some(vec![2]));
        assert_eq!(
            again
                .subject_config("s", false)
                .ok()
                .map(|c| c.compatibility_level),
            Some(CompatibilityLevel::Full)
        );
        assert_eq!(again.register("t", &req(r#""string""#)).await.ok(), Some(3));
    }

    #[tokio::test]
    async fn references_are_resolved_and_protected() {
        let (r, _) = registry();
        r.register(
            "inner",
            &req(r#"{"type":"record","name":"ns.Inner","fields":[{"name":"x","type":"int"}]}"#),
        )
        .await
        .expect("inner");
        let outer = SchemaRequest {
            references: Some(vec![crate::api::ReferenceRequest {
                name: "ns.Inner".into(),
                subject: "inner".into(),
                version: 1,
            }]),
            ..req(
                r#"{"type":"record","name":"ns.Outer","fields":[{"name":"i","type":"ns.Inner"}]}"#,
            )
        };
        let id = r.register("outer", &outer).await.expect("outer");
        assert_eq!(r.schema_by_id(id).map(|s| s.references.len()).ok(), Some(1));
        assert_eq!(
            r.referenced_by("inner", VersionSpec::Number(1)).ok(),
            Some(vec![id])
        );
        assert!(matches!(
            r.delete_version("inner", VersionSpec::Number(1), false)
                .await,
            Err(Error::ReferenceExists(..))
        ));
    }
}
