//! The results table: printed after a run and added to BENCHMARKS.md, newest first, keeping every earlier run.

use std::fmt::Write as _;
use std::path::Path;

/// Line in BENCHMARKS.md below which runs are inserted, newest first.
pub const MARKER: &str = "<!-- results: newest first; scripts/bench inserts below this line -->";

/// Whether a figure meets its target.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Target met.
    Met,
    /// Target missed.
    Missed,
    /// A limit or reference figure, with no target of its own.
    Reference,
    /// A measured figure with no target of its own.
    Info,
    /// Could not be measured, and why.
    Failed(String),
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// Sluice's figure, formatted.
    pub sluice: String,
    /// The limit it is compared with, formatted.
    pub limit: String,
    /// Sluice ÷ limit, when both are throughputs.
    pub ratio: Option<f64>,
    /// The target, in words.
    pub target: String,
    /// How it went.
    pub verdict: Verdict,
}

impl Row {
    /// A row for a phase that failed.
    pub fn failed(what: &str, target: &str, why: &anyhow::Error) -> Self {
        Self {
            what: what.to_owned(),
            sluice: "—".into(),
            limit: "—".into(),
            ratio: None,
            target: target.to_owned(),
            verdict: Verdict::Failed(format!("{why:#}")),
        }
    }
}

/// One benchmark run.
#[derive(Debug, Clone)]
pub struct Run {
    /// When it ran (UTC).
    pub date: String,
    /// `git describe` of the code measured.
    pub commit: String,
    /// Cargo profile of the binaries (`release` for real figures).
    pub profile: String,
    /// [`crate::machine::describe`].
    pub machine: String,
    /// The table.
    pub rows: Vec<Row>,
    /// Settings and remarks printed under the table.
    pub notes: Vec<String>,
}

/// Formats an events-or-rows-per-second figure.
pub fn per_s(v: f64, unit: &str) -> String {
    if v >= 10_000.0 {
        format!("{:.1}k {unit}/s", v / 1000.0)
    } else {
        format!("{v:.0} {unit}/s")
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

impl Run {
    /// The run as a Markdown section.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## {} · {} · {} build\n",
            self.date, self.commit, self.profile
        );
        let _ = writeln!(
            out,
            "Machine: {}. Everything on 127.0.0.1; the load generator shares the cores.\n",
            self.machine
        );
        let _ = writeln!(
            out,
            "| Measure | Sluice | Limit | Sluice / limit | Target | Result |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for r in &self.rows {
            let ratio = r
                .ratio
                .map_or_else(|| "—".to_owned(), |x| format!("{:.0}%", x * 100.0));
            let verdict = match &r.verdict {
                Verdict::Met => "met".to_owned(),
                Verdict::Missed => "**missed**".to_owned(),
                Verdict::Reference => "limit".to_owned(),
                Verdict::Info => "measured".to_owned(),
                Verdict::Failed(why) => format!("not measured: {why}"),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {ratio} | {} | {} |",
                cell(&r.what),
                cell(&r.sluice),
                cell(&r.limit),
                cell(&r.target),
                cell(&verdict)
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

/// The file's head when BENCHMARKS.md does not exist yet.
const HEADER: &str = "# Benchmarks\n\nResults of `scripts/bench` (see its header for what each line measures), newest first.\n\n";

/// Inserts `run` at the top of the results in `path`, creating the file if needed and keeping earlier runs.
pub fn insert(path: &Path, run: &Run) -> std::io::Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let section = run.markdown();
    let updated = if let Some(at) = existing.find(MARKER) {
        let split = at + MARKER.len();
        format!(
            "{}\n\n{}{}",
            &existing[..split],
            section,
            &existing[split..]
        )
    } else if existing.is_empty() {
        format!("{HEADER}{MARKER}\n\n{section}")
    } else {
        format!("{}\n\n{MARKER}\n\n{section}", existing.trim_end())
    };
    std::fs::write(path, updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(date: &str) -> Run {
        Run {
            date: date.into(),
            commit: "abc".into(),
            profile: "release".into(),
            machine: "2 CPUs".into(),
            rows: vec![Row {
                what: "ingest".into(),
                sluice: per_s(12_345.0, "events"),
                limit: per_s(50_000.0, "events"),
                ratio: Some(0.2469),
                target: "≥ 50%".into(),
                verdict: Verdict::Missed,
            }],
            notes: vec!["batch 100".into()],
        }
    }

    #[test]
    fn newer_runs_go_on_top_and_older_ones_stay() {
        let dir =
            std::env::temp_dir().join(format!("sluice-report-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("BENCHMARKS.md");
        insert(&path, &run("day-1")).expect("first");
        insert(&path, &run("day-2")).expect("second");
        let text = std::fs::read_to_string(&path).expect("read");
        let d1 = text.find("day-1").expect("day-1 kept");
        let d2 = text.find("day-2").expect("day-2 added");
        assert!(d2 < d1, "newest first");
        assert!(text.contains("| ingest | 12.3k events/s | 50.0k events/s | 25% |"));
        assert_eq!(text.matches(MARKER).count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
