//! The lake sink draining the same pre-filled topic as the ClickHouse consumer: `sluice-consumer lake` writes it
//! as Parquet into a local directory of the run's own, its `sluice_lake_rows_total` is polled, and the rate is put
//! beside the ClickHouse drain's.

use std::time::Duration;

use sluice_benches::cpu::CpuMeter;
use sluice_benches::report::{Row, per_s};
use tokio::time::Instant;

use crate::harness::{Bench, cpu_row};
use crate::report::ratio_row;
use crate::say;

impl Bench {
    /// The lake row: its drain rate of `topic` against the ClickHouse consumer's `drain_rate`.
    pub(crate) async fn lake(
        &mut self,
        topic: &str,
        topic_filled: bool,
        drain_rate: Option<f64>,
    ) -> Row {
        let what = "Lake sink drain of the same topic (Parquet, local directory)";
        let target = "≥ the ClickHouse drain";
        if !topic_filled {
            return Row::failed(
                what,
                target,
                &anyhow::anyhow!("needs the produce phase to fill the topic"),
            );
        }
        match self.lake_rate(topic).await {
            Ok(rate) => ratio_row(
                what,
                per_s(rate, "rows"),
                rate,
                drain_rate,
                "rows",
                1.0,
                target,
            ),
            Err(e) => Row::failed(what, target, &e),
        }
    }

    async fn lake_rate(&mut self, topic: &str) -> anyhow::Result<f64> {
        let expected = self.args.events as f64;
        let lake_dir = self.work_dir.join("lake");
        let started = Instant::now();
        let mut svc = self.start_lake(topic, &lake_dir).await?;
        let cpu = CpuMeter::start(&[("lake", svc.pid())]);
        say(&format!(
            "lake: ready after {:.1} s; waiting for {expected} rows",
            started.elapsed().as_secs_f64()
        ));
        let deadline = Instant::now()
            + Duration::from_secs(60).max(Duration::from_millis(self.args.events as u64 / 2));
        let mut first: Option<(Instant, f64)> = None;
        let mut steady: Option<(Instant, f64)> = None;
        let mut last_print = Instant::now();
        let result = loop {
            let text = self.scrape(&svc).await.unwrap_or_default();
            let n = metric(&text, "sluice_lake_rows_total");
            let now = Instant::now();
            if n > 0.0 && first.is_none() {
                first = Some((now, n));
            }
            if n >= expected * 0.9 && steady.is_none() {
                steady = Some((now, n));
            }
            if n >= expected {
                break Ok((
                    now,
                    n,
                    metric(&text, "sluice_lake_files_total"),
                    metric(&text, "sluice_lake_bytes_total"),
                ));
            }
            if now >= deadline || !svc.running() {
                break Err(anyhow::anyhow!(
                    "only {n} of {expected} rows in the lake; see {}",
                    svc.log.display()
                ));
            }
            if now.duration_since(last_print) >= Duration::from_secs(1) {
                say(&format!("lake: {n} rows"));
                last_print = now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let used = cpu.stop();
        svc.stop(Duration::from_secs(20)).await;
        let _ = tokio::fs::remove_dir_all(&lake_dir).await;
        let (done, n, files, bytes) = result?;
        let (t0, c0) = first.unwrap_or((done, n));
        let (t1, c1) = steady.unwrap_or((done, n));
        let rate = if c0 < c1 && t1 > t0 {
            (c1 - c0) / t1.duration_since(t0).as_secs_f64()
        } else {
            n / done.duration_since(started).as_secs_f64()
        };
        say(&format!(
            "lake: {n} rows in {files} files, {}",
            per_s(rate, "rows")
        ));
        self.cpu_rows.push(cpu_row(
            "CPU per row while writing the lake (Avro → Parquet)",
            &used,
            n as u64,
            3.0,
            "≤ 3 µs",
        ));
        self.notes.push(format!(
            "Lake: {n} rows in {files} Parquet files of {:.1} MiB in all ({:.1} bytes/row, zstd); rate timed from the \
             first file to 90% of the rows.",
            bytes / 1048576.0,
            bytes / n.max(1.0)
        ));
        Ok(rate)
    }
}

/// Sum of the samples of `name` in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}
