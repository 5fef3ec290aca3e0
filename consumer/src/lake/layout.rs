//! Where things are in the lake: Hive-style data files named by what they hold, and the segment manifests that
//! record a segment's bounds before any of its files exist.
//!
//! ```text
//! <root>/<table>/date=2026-12-02/hour=16/<topic>-<partition>-<first offset>-<last offset>.parquet
//! <root>/_sluice/segments/<table>/<topic>/<partition>/<first offset>-<last offset>.json
//! (with `format = "ndjson"`: `….ndjson.gz` files, and their manifests under `_sluice/segments-ndjson/`)
//! <root>/_sluice/staging/<uuid>   (a local write before its rename into place)
//! ```
//! Offsets are zero-padded to 20 digits so names sort in offset order. Readers glob `<root>/<table>/**/*.parquet`;
//! `_sluice` is outside every table and starts with `_`, which Spark, pyarrow and DuckDB skip when listing.

use object_store::path::Path;

use super::settings::Format;

/// The Hive partition value for rows without a partition timestamp (what Hive itself writes).
pub const NO_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// A segment: one partition's messages from `first` to `last` offset, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bounds {
    /// First offset.
    pub first: i64,
    /// Last offset.
    pub last: i64,
}

/// The `date=…/hour=…` directory of a row, from its partition timestamp in milliseconds.
pub fn hour_dir(ts_ms: Option<i64>) -> String {
    match ts_ms.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => t.format("date=%Y-%m-%d/hour=%H").to_string(),
        None => format!("date={NO_PARTITION}/hour={NO_PARTITION}"),
    }
}

/// The lake's layout under one root.
#[derive(Debug, Clone)]
pub struct Layout {
    root: Path,
    format: Format,
}

impl Layout {
    /// The layout of `format` files under `root` (the URL's path in its store).
    pub fn new(root: Path, format: Format) -> Self {
        Self { root, format }
    }

    fn under(&self, rest: &str) -> Path {
        let joined = if self.root.as_ref().is_empty() {
            rest.to_owned()
        } else {
            format!("{}/{rest}", self.root.as_ref())
        };
        Path::from(joined)
    }

    /// A data file of segment `b` of `topic`'s `partition`, in `table`'s `hour` directory.
    pub fn data_file(
        &self,
        table: &str,
        hour: &str,
        topic: &str,
        partition: i32,
        b: Bounds,
    ) -> Path {
        self.under(&format!(
            "{table}/{hour}/{topic}-{partition}-{:020}-{:020}.{}",
            b.first,
            b.last,
            self.format.extension()
        ))
    }

    /// The directory of a table's files.
    pub fn table_dir(&self, table: &str) -> Path {
        self.under(table)
    }

    /// Where the manifests of every segment written to `table` are.
    pub fn manifests_of(&self, table: &str) -> Path {
        self.under(&format!("_sluice/{}/{table}", self.format.manifests()))
    }

    /// Where the manifests of `topic`'s `partition` (written to `table`) are.
    pub fn manifest_dir(&self, table: &str, topic: &str, partition: i32) -> Path {
        self.under(&format!(
            "_sluice/{}/{table}/{topic}/{partition}",
            self.format.manifests()
        ))
    }

    /// The manifest of segment `b`.
    pub fn manifest(&self, table: &str, topic: &str, partition: i32, b: Bounds) -> Path {
        self.under(&format!(
            "_sluice/{}/{table}/{topic}/{partition}/{:020}-{:020}.json",
            self.format.manifests(),
            b.first,
            b.last
        ))
    }
}

impl Layout {
    /// Where a local write is staged before its rename into place.
    pub fn staging(&self, name: &str) -> Path {
        self.under(&format!("_sluice/staging/{name}"))
    }

    /// The staging directory.
    pub fn staging_dir(&self) -> Path {
        self.under("_sluice/staging")
    }
}

/// The bounds a manifest's file name records; `None` for anything else.
pub fn manifest_bounds(path: &Path) -> Option<Bounds> {
    let name = path.filename()?.strip_suffix(".json")?;
    let (first, last) = name.split_once('-')?;
    let b = Bounds {
        first: first.parse().ok()?,
        last: last.parse().ok()?,
    };
    (b.first <= b.last && b.first >= 0).then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_offset_and_parse_back() {
        let l = Layout::new(Path::from("lake"), Format::Parquet);
        let b = Bounds {
            first: 7,
            last: 1_234,
        };
        let f = l.data_file("events", &hour_dir(Some(1_764_691_200_000)), "events", 3, b);
        assert_eq!(
            f.as_ref(),
            "lake/events/date=2025-12-02/hour=16/events-3-00000000000000000007-00000000000000001234.parquet"
        );
        let m = l.manifest("events", "events", 3, b);
        assert_eq!(manifest_bounds(&m), Some(b));
        assert!(
            m.as_ref()
                > l.manifest("events", "events", 3, Bounds { first: 6, last: 6 })
                    .as_ref()
        );
        assert_eq!(manifest_bounds(&Path::from("x/1-2.parquet")), None);
        let ndjson = Layout::new(Path::from("lake"), Format::Ndjson);
        assert_eq!(
            ndjson
                .data_file("events", "date=2025-12-02/hour=16", "events", 3, b)
                .as_ref(),
            "lake/events/date=2025-12-02/hour=16/events-3-00000000000000000007-00000000000000001234.ndjson.gz"
        );
        assert_eq!(
            ndjson.manifest("events", "events", 3, b).as_ref(),
            "lake/_sluice/segments-ndjson/events/events/3/00000000000000000007-00000000000000001234.json"
        );
        assert_eq!(manifest_bounds(&Path::from("x/9-2.json")), None);
    }

    #[test]
    fn rows_without_a_timestamp_go_to_hives_default_partition() {
        assert_eq!(
            hour_dir(None),
            "date=__HIVE_DEFAULT_PARTITION__/hour=__HIVE_DEFAULT_PARTITION__"
        );
        assert_eq!(
            Layout::new(Path::from(""), Format::Parquet)
                .table_dir("t")
                .as_ref(),
            "t"
        );
    }
}
