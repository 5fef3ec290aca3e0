//! Soft and permanent deletes of subjects and versions, written to the log like every other change.

use crate::api::VersionSpec;
use crate::error::Error;
use crate::index::Index;
use crate::records::{Record, SchemaValue};

use super::Registry;

impl Registry {
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
}
