//! Sluice's consumer draining the topic the raw produce limit filled: a real consumer process from the build reads
//! it into a fresh table while ClickHouse's row count is polled, and the rate is compared with the raw insert limit,
//! the ceiling any consumer writing to that ClickHouse has.

use std::time::Duration;

use sluice_benches::report::{Row, per_s};
use tokio::time::Instant;

use crate::harness::{Bench, DATABASE, cpu_row};
use crate::report::ratio_row;
use crate::say;
use sluice_benches::cpu::CpuMeter;

impl Bench {
    /// The drain row: the consumer's rate on `topic` against `insert_limit`, or why it was not measured; and the
    /// rate, for the lake row to compare with.
    pub(crate) async fn drain(
        &mut self,
        topic: &str,
        topic_filled: bool,
        insert_limit: Option<f64>,
    ) -> (Row, Option<f64>) {
        let target = "≥ 100% of the insert limit";
        let what = "Consumer drain of a pre-filled topic";
        let result = if topic_filled {
            self.drain_rate(topic, "drain").await
        } else {
            Err(anyhow::anyhow!("needs the produce phase to fill the topic"))
        };
        match result {
            Ok(rate) => (
                ratio_row(
                    what,
                    per_s(rate, "rows"),
                    rate,
                    insert_limit,
                    "rows",
                    1.0,
                    target,
                ),
                Some(rate),
            ),
            Err(e) => (Row::failed(what, target, &e), None),
        }
    }

    /// Starts a consumer on the pre-filled topic and times the rows arriving in ClickHouse; also reports the CPU the
    /// consumer and ClickHouse spent per row.
    pub(crate) async fn drain_rate(&mut self, topic: &str, what: &str) -> anyhow::Result<f64> {
        let table = format!("{DATABASE}.{}", self.name(what));
        let expected = self.args.events as u64;
        let started = Instant::now();
        let mut svc = self.start_consumer(topic, &table).await?;
        let perf = self.perf(&svc, "consumer-drain");
        let mut processes = vec![("consumer", svc.pid())];
        if let Some(pid) = self.stack_pid("clickhouse") {
            processes.push(("ClickHouse", pid));
        }
        let cpu = CpuMeter::start(&processes);
        say(&format!(
            "drain: consumer ready after {:.1} s; waiting for {expected} rows in {table}",
            started.elapsed().as_secs_f64()
        ));
        let limit = Duration::from_secs(60).max(Duration::from_millis(expected / 2));
        let deadline = Instant::now() + limit;
        let mut first: Option<(Instant, u64)> = None;
        // The last, partial batch waits batch.max_wait_ms by design (that is freshness, not throughput): the rate
        // is timed from the first visible batch to 90% of the rows.
        let mut steady: Option<(Instant, u64)> = None;
        let mut last_print = Instant::now();
        let result = loop {
            let n = self.ch.count(&table).await.unwrap_or(0);
            let now = Instant::now();
            if n > 0 && first.is_none() {
                first = Some((now, n));
            }
            if n * 10 >= expected * 9 && steady.is_none() {
                steady = Some((now, n));
            }
            if n >= expected {
                break Ok((now, n));
            }
            if now >= deadline {
                break Err(anyhow::anyhow!(
                    "only {n} of {expected} rows after {limit:?}; see {}",
                    svc.log.display()
                ));
            }
            if !svc.running() {
                break Err(anyhow::anyhow!(
                    "consumer exited with {n} of {expected} rows; see {}",
                    svc.log.display()
                ));
            }
            if now.duration_since(last_print) >= Duration::from_secs(1) {
                say(&format!("drain: {n} rows"));
                last_print = now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let used = cpu.stop();
        if let Some(p) = perf {
            p.stop().await;
        }
        let metrics = self.scrape(&svc).await.unwrap_or_default();
        svc.stop(Duration::from_secs(20)).await;
        let (done, n) = result?;
        let (t0, c0) = first.unwrap_or((done, n));
        let (t1, c1) = steady.unwrap_or((done, n));
        let rate = if c0 < c1 && t1 > t0 {
            (c1 - c0) as f64 / t1.duration_since(t0).as_secs_f64()
        } else {
            n as f64 / done.duration_since(started).as_secs_f64()
        };
        say(&format!(
            "drain: {n} rows, {} from the first visible batch to 90% of the rows",
            per_s(rate, "rows")
        ));
        self.cpu_rows.push(cpu_row(
            "CPU per row while draining (consumer; ClickHouse's insert work beside it)",
            &used,
            n,
            1.5,
            "consumer ≤ 1.5 µs",
        ));
        self.notes.push(format!(
            "Drain: {n} rows; first rows visible {:.1} s after the consumer started, all after {:.1} s (rate timed from the first batch to 90% of the rows; the last partial batch waits batch.max_wait_ms).",
            t0.duration_since(started).as_secs_f64(),
            done.duration_since(started).as_secs_f64()
        ));
        let (inserts, insert_secs) =
            metric_sum_count(&metrics, "sluice_consumer_insert_duration_seconds");
        let (batches, batch_rows) = metric_sum_count(&metrics, "sluice_consumer_batch_rows");
        if inserts > 0.0 && batches > 0.0 {
            let span = done.duration_since(t0).as_secs_f64().max(1e-9);
            self.notes.push(format!(
                "Drain, from the consumer's metrics: {batches:.0} batches of {:.0} rows on average; {inserts:.0} \
                 inserts of {:.0} ms on average, {:.0}% of the time from the first batch to the last.",
                batch_rows / batches,
                insert_secs / inserts * 1000.0,
                (insert_secs / span * 100.0).min(100.0)
            ));
        }
        Ok(rate)
    }
}

/// `(count, sum)` of a histogram in Prometheus text, over all its label sets.
fn metric_sum_count(text: &str, name: &str) -> (f64, f64) {
    let mut count = 0.0;
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let metric = key.split('{').next().unwrap_or(key);
        let v: f64 = value.parse().unwrap_or(0.0);
        if metric == format!("{name}_count") {
            count += v;
        } else if metric == format!("{name}_sum") {
            sum += v;
        }
    }
    (count, sum)
}
