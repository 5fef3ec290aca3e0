//! The producer's memory under overload: a fresh producer, warmed at half the ingest maximum, is offered
//! `--overload-factor`× that maximum by many connections with large batches (so the events wanted in flight exceed
//! its bound) while VmRSS is sampled from /proc every 250 ms. Met when memory stays flat (the second half of the
//! overload peaks at most 10% + 16 MiB above the first), the excess is refused with 429s, the peak stays within
//! 300 MiB and the producer still accepts at least 90% of its maximum.

use std::time::Duration;

use anyhow::Context;
use sluice_benches::loadgen::{self, LoadConfig};
use sluice_benches::report::{Row, Verdict, per_s};
use sluice_benches::services::{Memory, Service};
use tokio::time::Instant;

use crate::harness::Bench;
use crate::say;

/// The producer's peak RSS under overload the target allows, in MiB.
const PEAK_MIB_TARGET: f64 = 300.0;

impl Bench {
    /// The overload row, on a fresh producer, relative to the ingest phase's maximum `max`.
    pub(crate) async fn overload(&mut self, max: Option<f64>) -> Row {
        match self.overload_on_fresh_producer(max).await {
            Ok(row) => row,
            Err(e) => Row::failed("Producer memory under overload", "flat, 429s", &e),
        }
    }

    /// A fresh producer, warmed at half load, then offered `factor`× its maximum by many connections with large
    /// batches (so events wanted in flight exceed its bound); samples VmRSS throughout.
    async fn overload_on_fresh_producer(&mut self, max: Option<f64>) -> anyhow::Result<Row> {
        let max = max.context("needs the ingest phase's maximum")?;
        let topic = self.name("overload");
        let svc = self.start_producer(&topic).await?;
        let result = self.overload_with(&svc, max).await;
        svc.stop(Duration::from_secs(20)).await;
        result
    }

    async fn overload_with(&mut self, svc: &Service, max: f64) -> anyhow::Result<Row> {
        say("overload: 5 s warm-up at half load");
        loadgen::run(
            LoadConfig {
                progress: false,
                ..self.load(svc, "events", Some(max / 2.0), 5.0)
            },
            None,
        )
        .await?;
        let before = svc.memory()?;
        let offered = max * self.args.overload_factor;
        say(&format!(
            "overload: offering {} for {} s",
            per_s(offered, "events"),
            self.args.overload_duration
        ));
        let cfg = LoadConfig {
            connections: self.args.overload_connections,
            batch: self.args.overload_batch,
            ..self.load(svc, "events", Some(offered), self.args.overload_duration)
        };
        let (load, samples) = tokio::join!(
            loadgen::run(cfg, None),
            sample_memory(svc, Duration::from_secs_f64(self.args.overload_duration))
        );
        let load = load?;
        let samples = samples?;
        let after = svc.memory()?;
        say(&format!("overload:\n{load}"));
        let half = samples.len() / 2;
        let peak = |s: &[Memory]| s.iter().map(|m| m.rss_kib).max().unwrap_or(0);
        let (first, second) = (peak(&samples[..half]), peak(&samples[half..]));
        let rejected = load.statuses.get("429").copied().unwrap_or(0);
        // Flat: the second half of the overload peaks no more than 10% (plus 16 MiB of noise) above the first.
        let flat = second as f64 <= first as f64 * 1.10 + 16.0 * 1024.0;
        let mib = |kib: u64| kib as f64 / 1024.0;
        self.notes.push(format!(
            "Overload: offered {} ({} requests), accepted {}; statuses {:?}; RSS before {:.0} MiB, peak in first half {:.0} MiB, \
             second half {:.0} MiB, after {:.0} MiB.",
            per_s(load.offered_per_s, "events"),
            load.requests,
            per_s(load.accepted_per_s, "events"),
            load.statuses,
            mib(before.rss_kib),
            mib(first),
            mib(second),
            mib(after.rss_kib)
        ));
        Ok(Row {
            what: format!(
                "Producer peak RSS under {}× overload",
                self.args.overload_factor
            ),
            sluice: format!(
                "VmHWM {:.0} MiB (RSS {:.0} → {:.0} MiB), {rejected} × 429 of {} requests",
                mib(after.hwm_kib),
                mib(before.rss_kib),
                mib(after.rss_kib),
                load.requests
            ),
            limit: "—".into(),
            ratio: None,
            target: format!(
                "flat, 429s, peak ≤ {PEAK_MIB_TARGET} MiB, accepting ≥ 90% of the maximum"
            ),
            verdict: if flat
                && rejected > 0
                && mib(after.hwm_kib) <= PEAK_MIB_TARGET
                && load.accepted_per_s >= 0.9 * max
            {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        })
    }
}

/// VmRSS of `svc` every 250 ms for `duration`; at least two samples, so the run can be split in halves.
async fn sample_memory(svc: &Service, duration: Duration) -> anyhow::Result<Vec<Memory>> {
    let mut samples = Vec::new();
    let end = Instant::now() + duration;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while Instant::now() < end {
        tick.tick().await;
        samples.push(svc.memory()?);
    }
    anyhow::ensure!(samples.len() >= 2, "too few memory samples");
    Ok(samples)
}
