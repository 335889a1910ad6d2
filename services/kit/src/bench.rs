//! Benchmark results in the project's format: every benchmark writes
//! `target/bench/<name>.json`, a JSON array of [`BenchResult`], and prints
//! the same as a table.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// One measured case.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub bench: String,
    pub case: String,
    pub value: f64,
    pub unit: String,
    /// What the value is compared with, measured in the same run.
    pub baseline: Option<String>,
    pub baseline_value: Option<f64>,
    /// `value / baseline_value`.
    pub ratio: Option<f64>,
    /// The target, in words (`ratio >= 0.5`).
    pub target: String,
    /// Whether the target holds.
    pub met: bool,
}

/// The workspace's target directory: `CARGO_TARGET_DIR` (relative to the
/// workspace root) or `<workspace root>/target`.
pub fn target_dir(workspace_root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if PathBuf::from(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace_root.join(dir),
        None => workspace_root.join("target"),
    }
}

/// Writes `results` to `<target>/bench/<name>.json` and prints a table.
pub fn report(
    workspace_root: &Path,
    name: &str,
    results: &[BenchResult],
) -> std::io::Result<PathBuf> {
    let root = workspace_root
        .canonicalize()
        .unwrap_or_else(|_| workspace_root.to_path_buf());
    let dir = target_dir(&root).join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(results).map_err(std::io::Error::other)?,
    )?;
    println!("{}", table(results));
    println!("written to {}", path.display());
    Ok(path)
}

/// The results as a plain-text table.
pub fn table(results: &[BenchResult]) -> String {
    let rows: Vec<[String; 7]> = results
        .iter()
        .map(|r| {
            [
                r.case.clone(),
                format!("{:.1} {}", r.value, r.unit),
                r.baseline.clone().unwrap_or_default(),
                r.baseline_value
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_default(),
                r.ratio.map(|v| format!("{v:.2}")).unwrap_or_default(),
                r.target.clone(),
                if r.met { "yes".into() } else { "NO".into() },
            ]
        })
        .collect();
    let header = [
        "case",
        "value",
        "baseline",
        "baseline value",
        "ratio",
        "target",
        "met",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 7]| {
        cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = line(&header);
    out.push('\n');
    out.push_str(&widths.map(|w| "-".repeat(w)).join("  "));
    for row in &rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

/// A benchmark setting from the environment (`BENCH_*`), or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Milliseconds from `from` to `to` (negative when `to` is earlier).
pub fn millis(from: std::time::SystemTime, to: std::time::SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// The `q` quantile (0..1) of `values`, nearest rank (sorts them); NaN for
/// none.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_line_per_result_and_says_when_a_target_is_missed() {
        let result = BenchResult {
            bench: "b".into(),
            case: "batch 1".into(),
            value: 10.0,
            unit: "events/s".into(),
            baseline: Some("raw".into()),
            baseline_value: Some(40.0),
            ratio: Some(0.25),
            target: "ratio >= 0.5".into(),
            met: false,
        };
        let table = table(&[result]);
        assert_eq!(table.lines().count(), 3);
        assert!(table.contains("0.25") && table.contains("NO"));
    }
}
