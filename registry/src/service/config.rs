//! Compatibility levels, global and per subject, and the compatibility check endpoint.

use crate::api::{ConfigResponse, SchemaRequest, VersionSpec, validate_subject};
use crate::compat::CompatibilityLevel;
use crate::error::Error;
use crate::records::Record;

use super::Registry;

impl Registry {
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
