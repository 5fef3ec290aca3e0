//! Ingestion keys that change without a restart: the config file is read again on SIGHUP and whenever it changes
//! (checked every [`CHECK_EVERY`]), and its `keys` are put in force; nothing else is taken from it. A file that
//! no longer parses or checks is refused with a log line, and the keys in force stay.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::auth::Keys;
use crate::config::Config;
use crate::handlers::AppState;

/// How often the config file's modification time and size are compared with the last ones read.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Reloads `state`'s keys from `path` until `shutdown`.
pub async fn watch_keys(path: PathBuf, state: Arc<AppState>, shutdown: CancellationToken) {
    let mut hangups = hangups();
    let mut seen = stamp(&path).await;
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                let now = stamp(&path).await;
                if now == seen {
                    continue;
                }
                seen = now;
            }
            () = next_hangup(&mut hangups) => {
                tracing::info!(path = %path.display(), "SIGHUP: reading the ingestion keys again");
                seen = stamp(&path).await;
            }
        }
        let file = path.clone();
        match tokio::task::spawn_blocking(move || Config::load(Some(&file))).await {
            Ok(Ok(config)) => {
                state.keys.replace(Keys::new(&config.keys, &state.limits));
                tracing::info!(keys = config.keys.len(), "ingestion keys reloaded");
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, path = %path.display(), "config not reloaded: the keys in force stay");
            }
            Err(e) => tracing::error!(error = %e, "config reload task failed"),
        }
    }
}

/// What tells a changed file: its modification time and size (`None` while it cannot be read).
async fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

/// SIGHUP from now on (registering it also keeps the signal from ending the process).
#[cfg(unix)]
fn hangups() -> Hangups {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the keys reload when the file changes");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangups() -> Hangups {}

/// The next SIGHUP; pending forever without a handler.
#[cfg(unix)]
async fn next_hangup(h: &mut Hangups) {
    let received = match h {
        Some(s) => s.recv().await.is_some(),
        None => false,
    };
    if !received {
        std::future::pending::<()>().await;
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) {
    std::future::pending().await
}
