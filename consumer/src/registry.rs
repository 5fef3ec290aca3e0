//! A small Confluent-compatible schema registry client: writer schemas by id (cached forever, ids are immutable)
//! and the latest version of a subject (the reader schema).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::Schema;
use serde::Deserialize;

/// Why a schema could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered that the id or subject does not exist: the message is poison, not the registry.
    #[error("not found: {0}")]
    NotFound(String),
    /// The registry could not be reached or failed: retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The registry returned a schema apache-avro cannot parse.
    #[error("unparsable schema {0}")]
    BadSchema(String),
}

/// The latest registered version of a subject.
#[derive(Debug, Clone)]
pub struct Latest {
    /// Global schema id.
    pub id: u32,
    /// Version within the subject.
    pub version: i32,
    /// The parsed schema.
    pub schema: Arc<Schema>,
}

#[derive(Deserialize)]
struct SchemaById {
    schema: String,
}

#[derive(Deserialize)]
struct SubjectVersion {
    id: u32,
    version: i32,
    schema: String,
}

/// Registry client with a cache of schemas by id.
#[derive(Clone)]
pub struct SchemaRegistry {
    http: reqwest::Client,
    base: String,
    by_id: Arc<Mutex<HashMap<u32, Arc<Schema>>>>,
}

impl SchemaRegistry {
    /// A client for the registry at `base_url`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            by_id: Arc::default(),
        })
    }

    fn cached(&self, id: u32) -> Option<Arc<Schema>> {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// The writer schema registered under `id`.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(s) = self.cached(id) {
            return Ok(s);
        }
        let body: SchemaById = self
            .get_json(
                &format!("{}/schemas/ids/{id}", self.base),
                &format!("schema id {id}"),
            )
            .await?;
        let schema = Arc::new(parse(&body.schema, &format!("id {id}"))?);
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, schema.clone());
        Ok(schema)
    }

    /// The latest version of `subject`, or `None` when the subject is not registered yet.
    pub async fn latest(&self, subject: &str) -> Result<Option<Latest>, RegistryError> {
        let url = format!("{}/subjects/{subject}/versions/latest", self.base);
        let body: SubjectVersion = match self.get_json(&url, &format!("subject {subject}")).await {
            Ok(b) => b,
            Err(RegistryError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let schema = Arc::new(parse(
            &body.schema,
            &format!("{subject} v{}", body.version),
        )?);
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(body.id, schema.clone());
        Ok(Some(Latest {
            id: body.id,
            version: body.version,
            schema,
        }))
    }

    /// `Ok` when the registry answers HTTP at all.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let resp = self
            .http
            .get(format!("{}/subjects", self.base))
            .send()
            .await
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        if resp.status().is_server_error() {
            return Err(RegistryError::Unavailable(format!(
                "HTTP {}",
                resp.status()
            )));
        }
        Ok(())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<T, RegistryError> {
        let resp = self
            .http
            .get(url)
            .header(
                "Accept",
                "application/vnd.schemaregistry.v1+json, application/json",
            )
            .send()
            .await
            .map_err(|e| RegistryError::Unavailable(format!("{what}: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound(what.to_owned()));
        }
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(RegistryError::Unavailable(format!(
                "{what}: HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            )));
        }
        resp.json::<T>()
            .await
            .map_err(|e| RegistryError::Unavailable(format!("{what}: bad body: {e}")))
    }
}

fn parse(text: &str, what: &str) -> Result<Schema, RegistryError> {
    Schema::parse_str(text).map_err(|e| RegistryError::BadSchema(format!("{what}: {e}")))
}
