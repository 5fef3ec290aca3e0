//! The lake's storage, through `object_store`: a local directory or a bucket, each write atomic, so a reader sees
//! a whole file or none. A cloud object is one PUT. A local file is written under `_sluice/staging/` and renamed
//! into place, so that what a crash mid-write leaves behind is never beside the data files, where a reader listing
//! a directory (Spark, pyarrow datasets) would trip over it; `sweep_staging` removes such leftovers.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::layout::{Bounds, Layout, manifest_bounds};
use super::settings::LakeSettings;

/// Why storage failed; always worth retrying, never the message's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store refused or could not be reached.
    #[error("{0}")]
    Store(#[from] object_store::Error),
    /// The URL or options do not name a store.
    #[error("lake.url {url}: {detail}")]
    Config {
        /// The configured URL.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// The store and the layout of the lake inside it.
#[derive(Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    /// Whether writes are staged and renamed (a local directory).
    staged: bool,
    /// The URL files are under, for logs and readers.
    pub location: String,
}

impl Lake {
    /// Opens the store `settings.url` names; a plain path is a local directory, created when missing.
    pub fn open(settings: &LakeSettings) -> Result<Self, StoreError> {
        let url = settings.url.trim();
        let config = |detail: String| StoreError::Config {
            url: url.to_owned(),
            detail,
        };
        let local = match url.strip_prefix("file://") {
            Some(path) => Some(path.to_owned()),
            None if !url.contains("://") => Some(url.to_owned()),
            None => None,
        };
        if let Some(path) = local {
            std::fs::create_dir_all(&path).map_err(|e| config(e.to_string()))?;
            let dir = std::fs::canonicalize(&path).map_err(|e| config(e.to_string()))?;
            // Synced before the offsets are committed, so a power loss cannot take a file the group moved past.
            let store = LocalFileSystem::new_with_prefix(&dir)?.with_fsync(true);
            return Ok(Self {
                store: Arc::new(store),
                layout: Layout::new(Path::from(""), settings.format),
                staged: true,
                location: format!("file://{}", dir.display()),
            });
        }
        let parsed = url::Url::parse(url).map_err(|e| config(e.to_string()))?;
        let (store, root) = object_store::parse_url_opts(&parsed, settings.options.iter())
            .map_err(|e| config(e.to_string()))?;
        Ok(Self {
            store: Arc::from(store),
            layout: Layout::new(root, settings.format),
            staged: false,
            location: url.to_owned(),
        })
    }

    /// Where things are.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Writes `bytes` to `path`, whole or not at all.
    pub async fn put(&self, path: &Path, bytes: bytes::Bytes) -> Result<(), StoreError> {
        if !self.staged {
            self.store.put(path, PutPayload::from(bytes)).await?;
            return Ok(());
        }
        let staging = self.layout.staging(&uuid::Uuid::new_v4().to_string());
        self.store.put(&staging, PutPayload::from(bytes)).await?;
        if let Err(e) = self.store.rename(&staging, path).await {
            let _ = self.store.delete(&staging).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Deletes staged writes older than `age` (left by a crash); younger ones may be another writer's in flight.
    pub async fn sweep_staging(&self, age: std::time::Duration) -> Result<usize, StoreError> {
        if !self.staged {
            return Ok(0);
        }
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or_default();
        let listed: Vec<_> = self
            .store
            .list(Some(&self.layout.staging_dir()))
            .try_collect()
            .await?;
        let mut removed = 0;
        for m in listed.iter().filter(|m| m.last_modified < cutoff) {
            self.delete(&m.location).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// The bounds of every manifest under `dir`.
    pub async fn manifests(&self, dir: &Path) -> Result<Vec<Bounds>, StoreError> {
        let listed: Vec<_> = self.store.list(Some(dir)).try_collect().await?;
        Ok(listed
            .iter()
            .filter_map(|m| manifest_bounds(&m.location))
            .collect())
    }

    /// Every object under `dir`.
    pub async fn paths(&self, dir: &Path) -> Result<Vec<Path>, StoreError> {
        let listed: Vec<_> = self.store.list(Some(dir)).try_collect().await?;
        Ok(listed.into_iter().map(|m| m.location).collect())
    }

    /// Deletes `path`; one already gone is fine.
    pub async fn delete(&self, path: &Path) -> Result<(), StoreError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the store answers: lists the root.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.list_with_delimiter(None).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> LakeSettings {
        LakeSettings {
            url: url.into(),
            ..LakeSettings::default()
        }
    }

    #[tokio::test]
    async fn a_directory_is_written_whole_and_listed_back() {
        let dir = std::env::temp_dir().join(format!("sluice-lake-{}", uuid::Uuid::new_v4()));
        let lake = Lake::open(&settings(&dir.display().to_string())).expect("opens");
        let b = Bounds { first: 3, last: 9 };
        let manifest = lake.layout().manifest("t", "topic", 0, b);
        lake.put(&manifest, bytes::Bytes::from_static(b"{}"))
            .await
            .expect("put");
        let dir_path = lake.layout().manifest_dir("t", "topic", 0);
        assert_eq!(lake.manifests(&dir_path).await.expect("lists"), vec![b]);
        assert!(
            lake.paths(&lake.layout().staging_dir())
                .await
                .expect("lists")
                .is_empty(),
            "staging renamed away"
        );
        assert_eq!(
            lake.sweep_staging(std::time::Duration::ZERO)
                .await
                .expect("sweeps"),
            0
        );
        lake.delete(&manifest).await.expect("deletes");
        lake.delete(&manifest)
            .await
            .expect("a second delete is fine");
        lake.ping().await.expect("answers");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unknown_scheme_is_a_configuration_error() {
        let err = Lake::open(&settings("ftp://host/x"))
            .err()
            .expect("refused");
        assert!(
            err.to_string().starts_with("lake.url ftp://host/x: "),
            "{err}"
        );
        assert!(
            LakeSettings {
                max_rows: 0,
                ..LakeSettings::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            LakeSettings {
                max_buffer_bytes: 1,
                ..LakeSettings::default()
            }
            .validate()
            .is_err()
        );
        assert!(LakeSettings::default().validate().is_ok());
    }
}
