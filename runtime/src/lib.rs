//! What every Sluice service shares at run time: config loading, telemetry, the ops endpoints
//! (`/healthz`, `/readyz`, `/metrics`), shutdown signals, Kafka client settings and the retry backoff.

pub mod backoff;
pub mod config_file;
pub mod kafka;
pub mod ops;
pub mod shutdown;
pub mod telemetry;
