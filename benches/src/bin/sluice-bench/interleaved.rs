//! The two headline ratios measured so they hold still: each limit and its Sluice phase run `--rounds` times,
//! interleaved (limit, Sluice, limit, Sluice, …), and the row reports the medians with their min–max, the ratio
//! being median over median. The raw limits swing more between runs than Sluice does (raw produce 295k–454k
//! events/s within one afternoon here), so one run's ratio says little.

use std::time::Duration;

use sluice_benches::loadgen::{self, LoadConfig};
use sluice_benches::payloads::Encoded;
use sluice_benches::report::{Row, Verdict, per_s};

use crate::Figures;
use crate::harness::Bench;
use crate::say;

/// Median, min and max of `xs` (not empty).
pub(crate) fn spread(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, v[0], v[v.len() - 1])
}

/// `median unit/s [min–max]` of `xs`.
pub(crate) fn spread_text(xs: &[f64], unit: &str) -> String {
    let (m, lo, hi) = spread(xs);
    format!("{} [{}–{}]", per_s(m, unit), per_s(lo, ""), per_s(hi, ""))
        .replace(" /s]", "]")
        .replace(" /s–", "–")
}

fn row(what: &str, sluice: &[f64], limit: &[f64], unit: &str, need: f64, target: &str) -> Row {
    if sluice.is_empty() || limit.is_empty() {
        return Row::failed(what, target, &anyhow::anyhow!("no complete round"));
    }
    let ratio = spread(sluice).0 / spread(limit).0.max(1e-9);
    Row {
        what: what.into(),
        sluice: spread_text(sluice, unit),
        limit: spread_text(limit, unit),
        ratio: Some(ratio),
        target: target.into(),
        verdict: if ratio >= need {
            Verdict::Met
        } else {
            Verdict::Missed
        },
    }
}

impl Bench {
    /// Waits until ClickHouse runs no merge in the benchmark's database, or `limit` passes.
    async fn wait_for_merges(&self, limit: Duration) {
        let sql = format!(
            "SELECT count() FROM system.merges WHERE database = '{}'",
            crate::harness::DATABASE
        );
        let end = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < end {
            match self.ch.query(&sql).await {
                Ok(n) if n.trim() == "0" => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                Err(e) => {
                    say(&format!("merges: {e:#}"));
                    return;
                }
            }
        }
        say("merges still running after the wait; draining beside them");
    }

    /// Raw produce vs HTTP ingest flat out, then raw insert vs the consumer's drain, `rounds` times each, interleaved.
    pub(crate) async fn interleaved(
        &mut self,
        payloads: &[Encoded],
        rounds: usize,
        figures: &mut Figures,
    ) -> Vec<Row> {
        let (mut produce, mut ingest, mut insert, mut drain) = (vec![], vec![], vec![], vec![]);
        let mut topics = Vec::new();
        match self.start_producer(&self.name("rounds_ingest")).await {
            Ok(svc) => {
                let warm = LoadConfig {
                    progress: false,
                    ..self.load(&svc, "events", None, 3.0)
                };
                let _ = loadgen::run(warm, None).await;
                for r in 0..rounds {
                    let topic = self.name(&format!("rounds_{r}"));
                    say(&format!(
                        "interleaved round {}/{rounds}: raw produce, then ingest",
                        r + 1
                    ));
                    match self.produce_limit(&topic, payloads).await {
                        Ok(t) => {
                            produce.push(t.per_second());
                            if t.count as usize >= self.args.events {
                                topics.push(topic);
                            }
                        }
                        Err(e) => say(&format!("round {r}: raw produce failed: {e:#}")),
                    }
                    let cfg = LoadConfig {
                        progress: false,
                        ..self.load(&svc, "events", None, self.args.duration)
                    };
                    match loadgen::run(cfg, None).await {
                        Ok(l) => ingest.push(l.accepted_per_s),
                        Err(e) => say(&format!("round {r}: ingest failed: {e:#}")),
                    }
                }
                svc.stop(Duration::from_secs(20)).await;
            }
            Err(e) => say(&format!("interleaved: producer did not start: {e:#}")),
        }
        for (r, topic) in topics.iter().enumerate() {
            say(&format!(
                "interleaved round {}/{rounds}: raw insert, then drain",
                r + 1
            ));
            match self.insert_limit(payloads, &format!("raw_round_{r}")).await {
                Ok(t) => insert.push(t.per_second()),
                Err(e) => say(&format!("round {r}: raw insert failed: {e:#}")),
            }
            // The insert's merges run on the same two cores: draining beside them measured 40% below a drain
            // on a quiet server in the first interleaved run.
            self.wait_for_merges(Duration::from_secs(60)).await;
            match self.drain_rate(topic, &format!("drain_round_{r}")).await {
                Ok(rate) => drain.push(rate),
                Err(e) => say(&format!("round {r}: drain failed: {e:#}")),
            }
        }
        figures.ingest_rounds.clone_from(&ingest);
        // The single-run phases already report CPU per row; the rounds' own would only repeat it.
        self.cpu_rows.clear();
        let n = rounds;
        vec![
            row(
                &format!("HTTP ingest vs raw produce, median of {n} interleaved runs [min–max]"),
                &ingest,
                &produce,
                "events",
                0.6,
                "≥ 60% of the produce limit",
            ),
            row(
                &format!("Consumer drain vs raw insert, median of {n} interleaved runs [min–max]"),
                &drain,
                &insert,
                "rows",
                1.0,
                "≥ 100% of the insert limit",
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spreads() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(spread(&[4.0, 1.0]), (2.5, 1.0, 4.0));
        assert_eq!(
            spread_text(&[178_100.0, 170_000.0, 185_200.0], "events"),
            "178.1k events/s [170.0k–185.2k]"
        );
        let r = row(
            "x",
            &[100.0, 120.0, 110.0],
            &[200.0, 400.0, 220.0],
            "rows",
            0.5,
            "t",
        );
        assert_eq!(r.ratio, Some(0.5));
        assert!(matches!(r.verdict, Verdict::Met));
        assert!(matches!(
            row("x", &[], &[1.0], "rows", 0.5, "t").verdict,
            Verdict::Failed(_)
        ));
    }
}
