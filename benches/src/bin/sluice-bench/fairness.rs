//! Fair shares: a quiet tenant's latency alone, then beside a noisy tenant offered 10× its events/s quota, on a
//! fresh producer where the dev key has that quota and a second key is the quiet tenant. Met when the quiet tenant
//! sees no 429 and its p99 stays within [`P99_MARGIN_MS`] of its unloaded p99, while the noisy tenant is held to
//! its quota (429 `quota_exceeded`).

use sluice_benches::loadgen::{self, LoadConfig, LoadReport};
use sluice_benches::report::{Row, Verdict, per_s};

use crate::harness::{Bench, KEY};
use crate::say;

/// The quiet tenant's ingestion key, added to a copy of producer.toml for this phase only.
const QUIET_KEY: &str = "bench-quiet-tenant-key";
/// The quiet tenant's steady load: 20 requests/s of 10 events on 2 connections.
const QUIET_EVENTS_PER_S: f64 = 200.0;
/// How far above its unloaded p99 the quiet tenant's p99 may go, in ms: a small margin for what two tenants on
/// two cores (load generator included) share no matter what, the CPU and the broker.
const P99_MARGIN_MS: f64 = 5.0;

impl Bench {
    /// The fairness row.
    pub(crate) async fn fairness(&mut self) -> Row {
        match self.fairness_on_fresh_producer().await {
            Ok(row) => row,
            Err(e) => Row::failed(
                "Quiet tenant beside a tenant offered 10× its quota",
                "no 429, p99 within 5 ms of unloaded",
                &e,
            ),
        }
    }

    async fn fairness_on_fresh_producer(&mut self) -> anyhow::Result<Row> {
        let quota = self.args.fairness_quota;
        let topic = self.name("fairness");
        // A copy of the dev config with the quiet tenant's key appended (a new table may follow any other).
        let base = std::fs::read_to_string(self.args.config_dir.join("producer.toml"))?;
        let config = self.work_dir.join("producer-fairness.toml");
        std::fs::write(
            &config,
            format!(
                "{base}\n[keys.{}]\ntenant = \"quiet\"\nstreams = [\"events\"]\n",
                sluice_producer::auth::hash_key(QUIET_KEY)
            ),
        )?;
        let quota_var = format!(
            "SLUICE_KEYS__{}__EVENTS_PER_SECOND",
            sluice_producer::auth::hash_key(KEY)
        );
        let svc = self
            .start_producer_with(&topic, &config, vec![(quota_var, quota.to_string())])
            .await?;
        let secs = self.args.duration.max(5.0);
        let quiet = LoadConfig {
            key: QUIET_KEY.into(),
            connections: 2,
            batch: 10,
            progress: false,
            ..self.load(&svc, "events", Some(QUIET_EVENTS_PER_S), secs)
        };
        say(&format!(
            "fairness: the quiet tenant alone for {secs} s, then beside a tenant offered {} (10× its quota)",
            per_s(10.0 * quota, "events")
        ));
        let result = async {
            let alone = loadgen::run(quiet.clone(), None).await?;
            let noisy = LoadConfig {
                progress: false,
                ..self.load(&svc, "events", Some(10.0 * quota), secs)
            };
            let (beside, noisy) =
                tokio::join!(loadgen::run(quiet.clone(), None), loadgen::run(noisy, None));
            anyhow::Ok((alone, beside?, noisy?))
        }
        .await;
        svc.stop(std::time::Duration::from_secs(20)).await;
        let (alone, beside, noisy) = result?;
        Ok(self.fairness_row(quota, &alone, &beside, &noisy))
    }

    fn fairness_row(
        &mut self,
        quota: f64,
        alone: &LoadReport,
        beside: &LoadReport,
        noisy: &LoadReport,
    ) -> Row {
        let refused = |r: &LoadReport| r.statuses.get("429").copied().unwrap_or(0);
        let not_accepted =
            |r: &LoadReport| r.requests - r.statuses.get("202").copied().unwrap_or(0);
        self.notes.push(format!(
            "Fairness: quiet tenant alone {} requests, statuses {:?}, p50 {:.1} ms, p99 {:.1} ms; beside the noisy \
             one {} requests, statuses {:?}, p50 {:.1} ms, p99 {:.1} ms. Noisy tenant (quota {}): offered {}, \
             accepted {}, statuses {:?}.",
            alone.requests,
            alone.statuses,
            alone.ack_latency.p50_ms,
            alone.ack_latency.p99_ms,
            beside.requests,
            beside.statuses,
            beside.ack_latency.p50_ms,
            beside.ack_latency.p99_ms,
            per_s(quota, "events"),
            per_s(noisy.offered_per_s, "events"),
            per_s(noisy.accepted_per_s, "events"),
            noisy.statuses
        ));
        let within = beside.ack_latency.p99_ms <= alone.ack_latency.p99_ms + P99_MARGIN_MS;
        // A second's burst on top of the rate, as the token bucket allows.
        let held =
            refused(noisy) > 0 && noisy.accepted_per_s <= quota * 1.2 + quota / noisy.elapsed_s;
        Row {
            what: "Quiet tenant beside a tenant offered 10× its quota".into(),
            sluice: format!(
                "p99 {:.1} ms (alone {:.1} ms), {} of {} requests not accepted; the noisy one held to {} ({} × 429)",
                beside.ack_latency.p99_ms,
                alone.ack_latency.p99_ms,
                not_accepted(beside),
                beside.requests,
                per_s(noisy.accepted_per_s, "events"),
                refused(noisy)
            ),
            limit: "—".into(),
            ratio: None,
            target: format!("no 429, p99 ≤ alone + {P99_MARGIN_MS} ms"),
            verdict: if not_accepted(beside) == 0 && within && held {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        }
    }
}
