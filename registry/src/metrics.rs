//! The registry's metric handles, registered in a per-server Prometheus registry.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Every metric the registry exports on `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    /// Requests by route template, method and status.
    pub requests: IntCounterVec,
    /// Request latency by route template.
    pub duration: HistogramVec,
    /// Error answers by kind (see `Error::label`).
    pub errors: IntCounterVec,
    /// Log writes by outcome (`ok`, `error`).
    pub log_writes: IntCounterVec,
    /// Records applied while replaying the log at start-up.
    pub replayed: IntCounter,
    /// Records skipped at start-up because they did not decode.
    pub replay_skipped: IntCounter,
    /// Distinct schema ids held.
    pub schemas: IntGauge,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "sluice_registry_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_registry_http_request_duration_seconds",
                "HTTP request latency by route",
            ),
            &["route"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new("sluice_registry_errors_total", "Error answers by kind"),
            &["kind"],
        )?;
        let log_writes = IntCounterVec::new(
            Opts::new(
                "sluice_registry_log_writes_total",
                "Records written to the _schemas topic by outcome",
            ),
            &["outcome"],
        )?;
        let replayed = IntCounter::new(
            "sluice_registry_replayed_records_total",
            "Records applied from the log at start-up",
        )?;
        let replay_skipped = IntCounter::new(
            "sluice_registry_replay_skipped_records_total",
            "Undecodable records skipped at start-up",
        )?;
        let schemas = IntGauge::new("sluice_registry_schemas", "Distinct schema ids held")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(log_writes.clone()))?;
        registry.register(Box::new(replayed.clone()))?;
        registry.register(Box::new(replay_skipped.clone()))?;
        registry.register(Box::new(schemas.clone()))?;
        Ok(Self {
            requests,
            duration,
            errors,
            log_writes,
            replayed,
            replay_skipped,
            schemas,
        })
    }
}
