//! Sluice's HTTP ingest on one producer process: after a short warm-up, closed-loop load flat out (accepted
//! events/s against the raw produce limit, since Kafka is what the producer waits on), then paced at half that rate
//! (ack latency where the producer is not saturated), then single-event requests ([`crate::single_event`]).
//! The flat-out figure is also the base of the seed peer's and the overload phases.

use std::time::Duration;

use sluice_benches::loadgen::{self, BodyFormat, LoadConfig, LoadReport};
use sluice_benches::report::{Row, Verdict, per_s};
use sluice_benches::services::Service;

use crate::Figures;
use crate::harness::{Bench, cpu_row};
use crate::report::ratio_row;
use crate::say;
use sluice_benches::cpu::CpuMeter;

impl Bench {
    /// Flat out, then half of it, then single events, on one producer; records the maximum in `figures` and adds
    /// the ingest rows only when the ingest phase is selected (the seed peer or the overload alone need just the
    /// maximum).
    pub(crate) async fn ingest(
        &mut self,
        rows: &mut Vec<Row>,
        figures: &mut Figures,
    ) -> anyhow::Result<()> {
        let svc = self.start_producer(&self.name("ingest")).await?;
        let result = self.ingest_with(&svc, rows, figures).await;
        let mem = svc.memory().ok();
        svc.stop(Duration::from_secs(20)).await;
        if let Some(m) = mem {
            self.notes.push(format!(
                "Producer after the ingest phases: RSS {:.0} MiB, peak {:.0} MiB.",
                m.rss_kib as f64 / 1024.0,
                m.hwm_kib as f64 / 1024.0
            ));
        }
        result
    }

    async fn ingest_with(
        &mut self,
        svc: &Service,
        rows: &mut Vec<Row>,
        figures: &mut Figures,
    ) -> anyhow::Result<()> {
        say("ingest: 3 s warm-up");
        loadgen::run(
            LoadConfig {
                progress: false,
                ..self.load(svc, "events", None, 3.0)
            },
            None,
        )
        .await?;
        say(&format!("ingest: flat out for {} s", self.args.duration));
        let perf = self.perf(svc, "producer-max");
        let mut processes = vec![("producer", svc.pid())];
        if let Some(pid) = self.stack_pid("broker") {
            processes.push(("broker", pid));
        }
        let cpu = CpuMeter::start(&processes);
        let max = loadgen::run(self.load(svc, "events", None, self.args.duration), None).await;
        let used = cpu.stop();
        if let Some(p) = perf {
            p.stop().await;
        }
        let max = max?;
        say(&format!("ingest max:\n{max}"));
        check_clean("max load", &max)?;
        let max_rate = max.accepted_per_s;
        figures.ingest_max = Some(max_rate);
        if self.phase("ingest") {
            rows.push(ratio_row(
                &format!(
                    "Sluice HTTP ingest, max ({} events/request)",
                    self.args.batch
                ),
                format!(
                    "{} (ack p50 {:.0} ms, p99 {:.0} ms)",
                    per_s(max_rate, "events"),
                    max.ack_latency.p50_ms,
                    max.ack_latency.p99_ms
                ),
                max_rate,
                figures.produce_limit,
                "events",
                0.6,
                "≥ 60% of the produce limit",
            ));
            rows.push(cpu_row(
                "CPU per accepted event at max ingest (the load generator not counted)",
                &used,
                max.events_accepted,
                3.5,
                "producer ≤ 3.5 µs",
            ));
            let half = max_rate / 2.0;
            say(&format!(
                "ingest: half load, {} for {} s",
                per_s(half, "events"),
                self.args.duration
            ));
            let h = loadgen::run(
                self.load(svc, "events", Some(half), self.args.duration),
                None,
            )
            .await?;
            say(&format!("ingest half:\n{h}"));
            rows.push(Row {
                what: "Sluice HTTP ingest, half load: ack latency".into(),
                sluice: format!(
                    "{}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    per_s(h.accepted_per_s, "events"),
                    h.ack_latency.p50_ms,
                    h.ack_latency.p90_ms,
                    h.ack_latency.p99_ms,
                    h.ack_latency.max_ms
                ),
                limit: "—".into(),
                ratio: None,
                target: "—".into(),
                verdict: if h.statuses.keys().all(|s| s.starts_with('2')) {
                    Verdict::Info
                } else {
                    Verdict::Missed
                },
            });
            rows.push(self.segment_batch(svc, max_rate).await?);
            let (row, single) = self.single_event(svc).await?;
            rows.push(row);
            self.notes.push(format!(
                "Ingest statuses: max {:?}; half {:?}; single-event {:?}.",
                max.statuses, h.statuses, single.statuses
            ));
        }
        Ok(())
    }
}

impl Bench {
    /// Segment's `/v1/batch` flat out with the same events as track messages, beside the native route's maximum.
    async fn segment_batch(&mut self, svc: &Service, native_max: f64) -> anyhow::Result<Row> {
        say(&format!(
            "ingest: Segment /v1/batch flat out for {} s",
            self.args.duration
        ));
        let cfg = LoadConfig {
            url: format!("{}/v1/batch", svc.base_url),
            format: BodyFormat::Segment,
            ..self.load(svc, "events", None, self.args.duration)
        };
        let r = loadgen::run(cfg, None).await?;
        say(&format!("segment /v1/batch:\n{r}"));
        check_clean("segment /v1/batch", &r)?;
        self.notes
            .push(format!("Segment /v1/batch statuses: {:?}.", r.statuses));
        Ok(ratio_row(
            &format!(
                "Sluice Segment API /v1/batch, max ({} track messages/request)",
                self.args.batch
            ),
            format!(
                "{} (ack p50 {:.0} ms, p99 {:.0} ms)",
                per_s(r.accepted_per_s, "events"),
                r.ack_latency.p50_ms,
                r.ack_latency.p99_ms
            ),
            r.accepted_per_s,
            Some(native_max),
            "events",
            0.8,
            "≥ 80% of the native batched route",
        ))
    }
}

/// Fails when a phase that should run clean saw anything but 2xx.
fn check_clean(what: &str, r: &LoadReport) -> anyhow::Result<()> {
    let bad: Vec<_> = r
        .statuses
        .iter()
        .filter(|(s, _)| !s.starts_with('2'))
        .collect();
    anyhow::ensure!(
        r.events_accepted > 0,
        "{what}: nothing accepted; statuses {:?}",
        r.statuses
    );
    if !bad.is_empty() {
        say(&format!("warning: {what} saw non-2xx answers: {bad:?}"));
    }
    Ok(())
}
