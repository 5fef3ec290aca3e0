//! The run's table: rows that compare a Sluice figure with its limit, rows for criterion's hot-path figures, and
//! the finished [`Run`] printed to stdout and, with `--output`, inserted into BENCHMARKS.md by
//! [`sluice_benches::report::insert`].

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use sluice_benches::report::{self, Row, Run, Verdict, per_s};

use crate::harness::Bench;
use crate::say;

impl Bench {
    /// Prints the table with the run's settings and notes and, with `--output`, adds it to that file.
    pub(crate) fn publish(&mut self, rows: Vec<Row>) -> anyhow::Result<()> {
        let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
        let mut notes = vec![format!(
            "Settings: {} events for produce/insert/drain; HTTP phases {} s each over {} connections, {} events per request; \
             overload {}× for {} s over {} connections of {} events; producer and consumer at their default config.",
            self.args.events,
            self.args.duration,
            self.args.connections,
            self.args.batch,
            self.args.overload_factor,
            self.args.overload_duration,
            self.args.overload_connections,
            self.args.overload_batch
        )];
        notes.append(&mut self.notes);
        let run = Run {
            date,
            commit: self.args.commit.clone(),
            profile: self.profile.clone(),
            machine: sluice_benches::machine::describe(),
            rows,
            notes,
        };
        println!("\n{}", run.markdown());
        if let Some(path) = &self.args.output {
            report::insert(path, &run).with_context(|| format!("writing {}", path.display()))?;
            say(&format!("results added to {}", path.display()));
        }
        Ok(())
    }
}

/// A row comparing Sluice's `value` with `limit` (same `unit`): met when the ratio reaches `need`, failed when the
/// limit itself was not measured.
pub(crate) fn ratio_row(
    what: &str,
    sluice: String,
    value: f64,
    limit: Option<f64>,
    unit: &str,
    need: f64,
    target: &str,
) -> Row {
    let ratio = limit.filter(|l| *l > 0.0).map(|l| value / l);
    Row {
        what: what.into(),
        sluice,
        limit: limit.map_or_else(|| "not measured".into(), |l| per_s(l, unit)),
        ratio,
        target: target.into(),
        verdict: match ratio {
            Some(r) if r >= need => Verdict::Met,
            Some(_) => Verdict::Missed,
            None => Verdict::Failed("its limit was not measured".into()),
        },
    }
}

/// One row per criterion benchmark found under `dir`: median time per element and what that is on one core.
pub(crate) fn criterion_rows(dir: &Path) -> Vec<Row> {
    #[derive(serde::Deserialize)]
    struct Benchmark {
        full_id: String,
        throughput: Option<HashMap<String, u64>>,
    }
    #[derive(serde::Deserialize)]
    struct Estimate {
        point_estimate: f64,
    }
    #[derive(serde::Deserialize)]
    struct Estimates {
        median: Estimate,
    }
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    // Bounded walk: criterion's tree is a few levels deep.
    while let Some(d) = stack.pop() {
        if found.len() > 100 {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir()
                && path
                    .file_name()
                    .is_some_and(|n| n != "report" && n != "base" && n != "change")
            {
                stack.push(path);
            }
        }
        if d.file_name().is_some_and(|n| n == "new") {
            let read = |name: &str| std::fs::read_to_string(d.join(name)).ok();
            if let (Some(b), Some(e)) = (read("benchmark.json"), read("estimates.json"))
                && let (Ok(b), Ok(e)) = (
                    serde_json::from_str::<Benchmark>(&b),
                    serde_json::from_str::<Estimates>(&e),
                )
            {
                let per = b
                    .throughput
                    .and_then(|t| t.values().next().copied())
                    .unwrap_or(1)
                    .max(1);
                found.push((b.full_id, e.median.point_estimate / per as f64));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
        .into_iter()
        .map(|(id, ns)| Row {
            what: format!("Hot path `{id}` (criterion median)"),
            sluice: format!(
                "{:.2} µs/event = {} on one core",
                ns / 1000.0,
                per_s(1e9 / ns, "events")
            ),
            limit: "—".into(),
            ratio: None,
            target: "—".into(),
            verdict: Verdict::Info,
        })
        .collect()
}
