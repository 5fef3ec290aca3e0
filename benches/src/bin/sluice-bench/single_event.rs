//! Sluice's HTTP ingest with one event per request: what a naive SDK does, and what the seeds' requests/s figure
//! counts. Runs flat out on the ingest phase's producer and reports requests/s against the seeds' 3.7k.

use sluice_benches::loadgen::{self, LoadConfig, LoadReport};
use sluice_benches::report::{Row, Verdict, per_s};
use sluice_benches::services::Service;

use crate::harness::Bench;
use crate::say;

impl Bench {
    /// Single-event requests flat out on `svc`: the table row, and the load report for the statuses note.
    pub(crate) async fn single_event(&self, svc: &Service) -> anyhow::Result<(Row, LoadReport)> {
        // Each request waits for its Kafka ack (linger.ms included), so a closed loop over few connections measures
        // latency, not capacity: this phase has its own, larger connection count.
        let single_secs = (self.args.duration / 2.0).max(3.0);
        let single_connections = self.args.single_connections;
        say(&format!(
            "ingest: single-event requests flat out for {single_secs} s"
        ));
        let single = loadgen::run(
            LoadConfig {
                batch: 1,
                connections: single_connections,
                ..self.load(svc, "events", None, single_secs)
            },
            None,
        )
        .await?;
        say(&format!("ingest single:\n{single}"));
        let req_s = single.requests as f64 / single.elapsed_s.max(1e-9);
        let row = Row {
            what: "Sluice HTTP ingest, one event per request".into(),
            sluice: format!(
                "{} over {single_connections} connections (p50 {:.1} ms, p99 {:.1} ms)",
                per_s(req_s, "requests"),
                single.ack_latency.p50_ms,
                single.ack_latency.p99_ms
            ),
            limit: "—".into(),
            ratio: None,
            target: "≥ 20k requests/s".into(),
            verdict: if req_s >= 20_000.0 && single.events_accepted == single.requests {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        };
        Ok((row, single))
    }
}
