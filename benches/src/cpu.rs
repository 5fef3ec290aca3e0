//! CPU time of processes from `/proc/<pid>/stat` (user + system, all threads), so a phase can report µs of CPU per
//! event for each process involved: a figure that depends far less on what else the machine does than a rate.

use std::sync::OnceLock;

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The user + system CPU seconds `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: the fields that follow start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let tick = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    Ok((tick(11)? + tick(12)?) / ticks_per_second())
}

/// CPU seconds of named processes between [`CpuMeter::start`] and [`CpuMeter::stop`].
#[derive(Debug, Clone)]
pub struct CpuMeter {
    started: Vec<(String, u32, f64)>,
}

impl CpuMeter {
    /// Starts measuring `processes` (name, pid); one that cannot be read is left out.
    pub fn start(processes: &[(&str, u32)]) -> Self {
        Self {
            started: processes
                .iter()
                .filter_map(|(name, pid)| Some(((*name).to_owned(), *pid, cpu_seconds(*pid).ok()?)))
                .collect(),
        }
    }

    /// The CPU seconds each process used since the start.
    pub fn stop(&self) -> Vec<(String, f64)> {
        self.started
            .iter()
            .filter_map(|(name, pid, t0)| Some((name.clone(), cpu_seconds(*pid).ok()? - t0)))
            .collect()
    }
}

/// `name µs, …` of CPU per item: each process's seconds over `items`.
pub fn per_item(used: &[(String, f64)], items: u64) -> String {
    used.iter()
        .map(|(name, s)| format!("{name} {:.2} µs", s * 1e6 / items.max(1) as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu() {
        let pid = std::process::id();
        let meter = CpuMeter::start(&[("self", pid)]);
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = meter.stop();
        assert_eq!(used.len(), 1);
        assert!(used[0].1 > 0.0, "{used:?}");
        assert!(per_item(&used, 1_000).starts_with("self "));
    }
}
