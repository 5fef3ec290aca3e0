//! The Parquet lake beside ClickHouse, read back by readers Sluice did not write (pyarrow opens every file on its
//! own, DuckDB reads the Hive partitions): events sent over HTTP are in the lake exactly once with the values
//! ClickHouse holds; `sluice-consumer lake` SIGKILLed five times under load leaves no duplicate, no gap and no
//! partial file; storage that cannot be written for a while is waited out, nothing dead-lettered.

mod consumer_support;
mod producer_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use consumer_support::{InProcess, Process, Setup, metric, wait_ready};
use producer_support::{KEY, Producer, client};
use rdkafka::message::{Headers, Message};
use serde_json::{Value as Json, json};
use sluice_consumer::Config;
use sluice_consumer::lake::settings::Format;
use sluice_consumer::lake::store::Lake;
use sluice_tests::{clickhouse, eventually, init_tracing, unique};
use uuid::Uuid;

/// The Python with pyarrow and DuckDB (`scripts/test` makes the venv and sets `SLUICE_TEST_LAKE_PYTHON`).
fn python() -> String {
    std::env::var("SLUICE_TEST_LAKE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// What the readers see of `table` under `root`.
struct LakeView {
    files: Vec<String>,
    schema: BTreeMap<String, String>,
    rows: Vec<Json>,
    duckdb: Json,
}

impl LakeView {
    fn ids(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter_map(|r| r["event_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Every id of `want` exactly once, nothing else.
    fn assert_exactly(&self, want: &[Uuid]) {
        let ids = self.ids();
        let distinct: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(
            ids.len(),
            distinct.len(),
            "no row twice across {} files",
            self.files.len()
        );
        let want: BTreeSet<String> = want.iter().map(Uuid::to_string).collect();
        let got: BTreeSet<String> = ids.into_iter().collect();
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&want).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:?}, extra {extra:?}"
        );
    }
}

async fn read_lake(root: &str, table: &str, env: &[(String, String)]) -> anyhow::Result<LakeView> {
    let script = sluice_tests::kafka::project_root().join("tests/fixtures/python/lake_read.py");
    let run = tokio::process::Command::new(python())
        .arg(script)
        .args([root, table])
        .envs(env.iter().cloned())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .map_err(|_| anyhow::anyhow!("the lake reader did not finish within 120 s"))?
        .map_err(|e| anyhow::anyhow!("running {} (SLUICE_TEST_LAKE_PYTHON): {e}", python()))?;
    anyhow::ensure!(
        out.status.success(),
        "the reader failed (a partial or unreadable file?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Json = serde_json::from_slice(&out.stdout)?;
    let strings = |v: &Json| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(LakeView {
        files: strings(&v["files"]),
        schema: v["schema"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, t)| (k.clone(), t.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        rows: v["rows"].as_array().cloned().unwrap_or_default(),
        duckdb: v["duckdb"].clone(),
    })
}

/// Waits until the reader sees `n` rows.
async fn wait_lake_rows(
    root: &str,
    table: &str,
    n: usize,
    env: &[(String, String)],
    log: impl Fn() -> String,
) -> anyhow::Result<LakeView> {
    let view = eventually(
        &format!("{n} rows in the lake"),
        Duration::from_secs(120),
        || async {
            let v = read_lake(root, table, env).await?;
            Ok((v.rows.len() >= n).then_some(v))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", log()))?;
    Ok(view)
}

/// A lake directory of this test's own.
fn lake_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(unique(prefix))
}

/// The consumer config of `s` with a lake under `url`: small, quick files so a test sees many of them.
fn lake_config(s: &Setup, url: &str) -> Config {
    let mut c = s.config();
    c.lake.url = url.to_owned();
    c.lake.group_id = format!("{}_lake", s.group);
    c.lake.max_rows = 100;
    c.lake.max_age_ms = 500;
    c
}

/// A producer whose `events` stream writes to `s`'s topic.
async fn producer_for(s: &Setup) -> anyhow::Result<Producer> {
    producer_waiting_on(s, None).await
}

/// [`producer_for`], whose `?wait=lake` waits on `lake_group`.
async fn producer_waiting_on(s: &Setup, lake_group: Option<&str>) -> anyhow::Result<Producer> {
    let mut config = producer_support::config();
    if let Some(stream) = config.streams.get_mut("events") {
        stream.topic = s.topic.clone();
    }
    if let Some(g) = lake_group {
        config.wait.lake_group = g.to_owned();
    }
    Producer::ready(config).await
}

/// Posts `ids` as events whose times spread over three hours; every request must get its 202.
async fn post_events(p: &Producer, ids: &[Uuid]) -> anyhow::Result<()> {
    post_events_to(&p.events_url("events"), ids).await
}

async fn post_events_to(url: &str, ids: &[Uuid]) -> anyhow::Result<()> {
    post_events_answered(url, ids, 202).await
}

/// Posts `ids` as in [`post_events`]; every request must be answered `status`.
async fn post_events_answered(url: &str, ids: &[Uuid], status: u16) -> anyhow::Result<()> {
    let http = client();
    for chunk in ids.chunks(100) {
        let events: Vec<Json> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| {
                json!({
                    "event_id": id.to_string(),
                    "event_type": if i % 2 == 0 { "page_view" } else { "signup" },
                    "occurred_at": format!("2026-11-22T{:02}:{:02}:00.{:03}Z", 10 + (id.as_u128() % 3), i % 60, i % 1000),
                    "user_id": format!("user-{}", i % 7),
                    "properties": {"i": i.to_string(), "path": "/pricing"},
                })
            })
            .collect();
        let resp = http.post(url).bearer_auth(KEY).json(&events).send().await?;
        anyhow::ensure!(
            resp.status() == status,
            "{}: {}",
            resp.status(),
            resp.text().await?
        );
    }
    Ok(())
}

fn ids(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::now_v7()).collect()
}

/// Dead letters `group` wrote to `s`'s DLQ.
async fn letters_of(s: &Setup, group: &str) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
    Ok(s.dead_letters()
        .await?
        .into_iter()
        .filter(|m| {
            m.headers().is_some_and(|h| {
                h.iter()
                    .any(|x| x.key == "sluice.consumer.group" && x.value == Some(group.as_bytes()))
            })
        })
        .collect())
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct ChRow {
    event_id: String,
    tenant: String,
    event_type: String,
    occurred_at: u32,
    user_id: String,
    keys: Vec<String>,
    values: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_events_are_in_the_lake_once_with_the_values_clickhouse_holds() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("lake_http").await?;
    let dir = lake_dir("lake_http");
    let root = dir.display().to_string();
    let config = lake_config(&s, &root);
    let producer = producer_waiting_on(&s, Some(&config.lake.group_id)).await?;
    let ch = InProcess::start(config.clone()).await?;
    let lake = Process::start_lake(&config)?;
    wait_ready(lake.addr)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", lake.log()))?;
    ch.ready().await?;

    let sent = ids(600);
    post_events(&producer, &sent).await?;
    // One message no schema can read: the lake dead-letters it like the ClickHouse path does.
    consumer_support::send_raw(
        &consumer_support::producer()?,
        &s.topic,
        &[("poison".into(), b"not avro".to_vec())],
    )
    .await?;

    let table = "events";
    let view = wait_lake_rows(&root, table, sent.len(), &[], || lake.log()).await?;
    view.assert_exactly(&sent);
    assert_eq!(
        view.duckdb["rows"],
        json!(sent.len()),
        "DuckDB through the Hive partitions: {}",
        view.duckdb
    );
    assert_eq!(view.duckdb["distinct_event_ids"], json!(sent.len()));
    assert_eq!(
        view.duckdb["hours"],
        json!(3),
        "three hours of occurred_at, three directories"
    );
    assert!(
        view.files
            .iter()
            .all(|f| f.starts_with("events/date=2026-11-22/hour=1")),
        "{:?}",
        view.files
    );
    assert_eq!(
        view.schema.get("event_id").map(String::as_str),
        Some("extension<arrow.uuid>"),
        "{:?}",
        view.schema
    );
    assert_eq!(
        view.schema.get("occurred_at").map(String::as_str),
        Some("timestamp[ms, tz=UTC]")
    );
    let properties = view.schema.get("properties").cloned().unwrap_or_default();
    assert!(
        properties.starts_with("map<string, string"),
        "a map stays a map: {properties}"
    );
    assert_eq!(
        view.schema.get("user_id").map(String::as_str),
        Some("string")
    );

    s.wait_for_rows(sent.len() as u64, Duration::from_secs(60))
        .await?;
    let ch_rows: Vec<ChRow> = clickhouse()
        .query(&format!(
            "SELECT toString(event_id), tenant, event_type, toUInt32(occurred_at), assumeNotNull(user_id), \
             `properties.keys`, `properties.values` FROM {} FINAL",
            s.table
        ))
        .fetch_all()
        .await?;
    assert_eq!(ch_rows.len(), sent.len());
    let by_id: BTreeMap<&str, &Json> = view
        .rows
        .iter()
        .filter_map(|r| Some((r["event_id"].as_str()?, r)))
        .collect();
    for c in &ch_rows {
        let l = by_id[c.event_id.as_str()];
        assert_eq!(l["tenant"], json!(c.tenant));
        assert_eq!(l["event_type"], json!(c.event_type));
        assert_eq!(l["user_id"], json!(c.user_id));
        let ms = l["occurred_at"].as_i64().unwrap_or_default();
        assert_eq!(
            ms.div_euclid(1000),
            i64::from(c.occurred_at),
            "same second; the lake keeps the millis"
        );
        let map: BTreeMap<String, String> = c
            .keys
            .iter()
            .cloned()
            .zip(c.values.iter().cloned())
            .collect();
        assert_eq!(l["properties"], json!(map));
    }
    assert!(
        view.rows
            .iter()
            .any(|r| r["occurred_at"].as_i64().is_some_and(|ms| ms % 1000 != 0)),
        "milliseconds survive"
    );

    let lake_group = &config.lake.group_id;
    let letters = eventually(
        "the lake's dead letter",
        Duration::from_secs(30),
        || async {
            let l = letters_of(&s, lake_group).await?;
            Ok((!l.is_empty()).then_some(l))
        },
    )
    .await?;
    assert_eq!(letters.len(), 1);
    let class = letters[0].headers().and_then(|h| {
        h.iter()
            .find(|x| x.key == "sluice.error.class")
            .and_then(|x| x.value.map(<[u8]>::to_vec))
    });
    assert_eq!(class.as_deref(), Some(&b"undecodable"[..]));
    assert!(
        metric(lake.addr, "sluice_lake_files_total").await? >= 6.0,
        "files roll at 100 rows"
    );
    assert_eq!(
        metric(lake.addr, "sluice_lake_rows_total").await?,
        sent.len() as f64
    );
    // ?wait=lake: 200 once the lake's group committed past the events, so their files are there when it answers.
    let waited = ids(20);
    post_events_answered(
        &format!("{}?wait=lake", producer.events_url("events")),
        &waited,
        200,
    )
    .await?;
    let listed: BTreeSet<String> = read_lake(&root, table, &[])
        .await?
        .ids()
        .into_iter()
        .collect();
    assert!(
        waited.iter().all(|id| listed.contains(&id.to_string())),
        "every event of a ?wait=lake request is in a published file when it is answered"
    );
    wait_lake_committed(&s, lake_group).await?;
    drop(lake);
    ch.stop().await?;
    producer.stop().await?;
    s.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Waits until the lake's group has committed every partition to its end.
async fn wait_lake_committed(s: &Setup, group: &str) -> anyhow::Result<()> {
    eventually(
        "the lake group committed to the end",
        Duration::from_secs(30),
        || async {
            let g =
                sluice_tests::kafka::group_state(&sluice_tests::kafka_bootstrap(), group, &s.topic)
                    .await?;
            Ok(g.lag().values().all(|lag| *lag == 0).then_some(()))
        },
    )
    .await
}

/// Returns as soon as a segment is published but not committed: its manifest (deleted once its offsets are
/// committed) is there and so is one of its files.
async fn segment_in_flight(lake: &Lake, format: Format) -> anyhow::Result<()> {
    let layout = lake.layout();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let segments = layout.manifests_of("events");
    loop {
        let bounds: Vec<String> = lake
            .paths(&segments)
            .await?
            .iter()
            .filter_map(|p| p.filename()?.strip_suffix(".json").map(str::to_owned))
            .collect();
        if !bounds.is_empty() {
            let published = lake
                .paths(&layout.table_dir("events"))
                .await?
                .iter()
                .any(|p| {
                    let name = p.filename().unwrap_or_default();
                    bounds
                        .iter()
                        .any(|b| name.ends_with(&format!("-{b}.{}", format.extension())))
                });
            if published {
                return Ok(());
            }
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no published, uncommitted segment within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Nothing but whole data files (`.parquet`, `.ndjson.gz`) under the table: a crash mid-write leaves its staged
/// bytes under `_sluice/staging`, never beside the data.
fn assert_only_data_files(table_dir: &Path, format: Format) {
    let mut stack = vec![table_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                assert!(
                    name.ends_with(&format!(".{}", format.extension())),
                    "a stray file beside the data: {}",
                    p.display()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_five_times_under_load_leaves_every_row_once_and_no_partial_file()
-> anyhow::Result<()> {
    let dir = lake_dir("lake_kill");
    let target = Target {
        url: dir.display().to_string(),
        dir: Some(dir.clone()),
        options: BTreeMap::new(),
        env: Vec::new(),
        format: Format::Parquet,
    };
    kill_9_five_times("lake_kill", target).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The NDJSON sink is the lake's machinery with another file format: the same kill test, read back with Python's
/// gzip and json and with DuckDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_kill_9_five_times_under_load_leaves_every_row_once_and_no_partial_file()
-> anyhow::Result<()> {
    let dir = lake_dir("ndjson_kill");
    let target = Target {
        url: dir.display().to_string(),
        dir: Some(dir.clone()),
        options: BTreeMap::new(),
        env: Vec::new(),
        format: Format::Ndjson,
    };
    kill_9_five_times("ndjson_kill", target).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The S3-compatible server `scripts/test` starts (SeaweedFS, built from the Go module proxy).
fn s3_endpoint() -> anyhow::Result<String> {
    std::env::var("SLUICE_TEST_S3_ENDPOINT").map_err(|_| {
        anyhow::anyhow!(
            "SLUICE_TEST_S3_ENDPOINT is not set: run `make test`, which starts scripts/s3-server"
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_kill_9_five_times_under_load_leaves_every_row_once() -> anyhow::Result<()> {
    let endpoint = s3_endpoint()?;
    let url = format!("s3://sluice-lake/{}", unique("lake_s3"));
    let options = BTreeMap::from(
        [
            ("aws_endpoint", endpoint.as_str()),
            ("aws_access_key_id", "sluice"),
            ("aws_secret_access_key", "sluice-secret"),
            ("aws_region", "us-east-1"),
            ("aws_allow_http", "true"),
            ("aws_virtual_hosted_style_request", "false"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let env = [
        ("SLUICE_S3_ENDPOINT", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "sluice"),
        ("AWS_SECRET_ACCESS_KEY", "sluice-secret"),
        ("AWS_REGION", "us-east-1"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    kill_9_five_times(
        "lake_s3",
        Target {
            url,
            dir: None,
            options,
            env,
            format: Format::Parquet,
        },
    )
    .await
}

/// Where a kill test's lake is.
struct Target {
    /// `lake.url`, and the reader's root.
    url: String,
    /// The local directory, when it is one (then no stray file may sit beside the data).
    dir: Option<PathBuf>,
    /// `lake.options`.
    options: BTreeMap<String, String>,
    /// The reader's environment.
    env: Vec<(String, String)>,
    /// `lake.format`.
    format: Format,
}

async fn kill_9_five_times(prefix: &str, target: Target) -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new(prefix).await?;
    let root = target.url.clone();
    let env = target.env.clone();
    let mut config = lake_config(&s, &root);
    config.lake.options = target.options.clone();
    config.lake.format = target.format;
    // The test looks into the lake through the sink's own store: one code path for a directory and a bucket.
    let lake = Lake::open(&config.lake)?;
    // Files cut by age, not by count: after a restart the backlog would be cut elsewhere, so only the recorded
    // bounds of the segments in flight keep their rows from landing twice.
    config.lake.max_rows = 100_000;
    config.lake.max_age_ms = 200;
    let producer = producer_for(&s).await?;
    let ch = InProcess::start(config.clone()).await?;
    ch.ready().await?;

    // HTTP load at a steady rate until the last kill is done, so every kill lands mid-load.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (stop, url) = (stop.clone(), producer.events_url("events"));
        tokio::spawn(async move {
            let mut sent = Vec::new();
            while !stop.is_cancelled() {
                let chunk = ids(50);
                post_events_to(&url, &chunk).await?;
                sent.extend(chunk);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(sent)
        })
    };
    let mut redone = 0;
    for round in 0..5 {
        let mut p = Process::start_lake(&config)?;
        wait_ready(p.addr)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", p.log()))?;
        // Kill once it is writing (files published, more in flight), at a random moment after that.
        eventually("the lake writing", Duration::from_secs(60), || async {
            Ok((metric(p.addr, "sluice_lake_files_total")
                .await
                .unwrap_or(0.0)
                >= 1.0)
                .then_some(()))
        })
        .await
        .map_err(|e| anyhow::anyhow!("round {round}: {e}\n{}", p.log()))?;
        if round % 2 == 0 {
            // Right inside the window that matters: a segment's files are published, its offsets not committed.
            segment_in_flight(&lake, target.format)
                .await
                .map_err(|e| anyhow::anyhow!("round {round}: {e}\n{}", p.log()))?;
        } else {
            tokio::time::sleep(Duration::from_millis(rand::random_range(0..400))).await;
        }
        p.kill9()?;
        redone += p.log().matches("redoing segments").count();
        if let Some(dir) = &target.dir {
            assert_only_data_files(&dir.join("events"), target.format);
        }
        // Whatever the kill left, the files there now are whole (pyarrow opens each) and hold no row twice.
        let view = read_lake(&root, "events", &env).await?;
        let ids = view.ids();
        assert_eq!(
            ids.len(),
            ids.iter().collect::<BTreeSet<_>>().len(),
            "round {round}: a row twice"
        );
    }
    stop.cancel();
    let sent = load.await??;
    assert!(sent.len() >= 500, "a real load: {} events", sent.len());
    let last = Process::start_lake(&config)?;
    wait_ready(last.addr).await?;
    let view = wait_lake_rows(&root, "events", sent.len(), &env, || last.log()).await?;
    view.assert_exactly(&sent);
    if !view.duckdb.is_null() {
        assert_eq!(
            (
                view.duckdb["rows"].as_u64(),
                view.duckdb["distinct_event_ids"].as_u64()
            ),
            (Some(sent.len() as u64), Some(sent.len() as u64)),
            "DuckDB reads every row once through the Hive partitions"
        );
    }
    redone += last.log().matches("redoing segments").count();
    eprintln!(
        "lake kill -9 x5 ({root}): {} rows in {} files; {redone} restarts redid recorded segments",
        view.rows.len(),
        view.files.len()
    );
    s.wait_for_rows(sent.len() as u64, Duration::from_secs(60))
        .await?;
    s.assert_exactly(&sent).await?;
    wait_lake_committed(&s, &config.lake.group_id).await?;
    assert!(
        letters_of(&s, &config.lake.group_id).await?.is_empty(),
        "crashes are not poison"
    );
    drop(last);
    ch.stop().await?;
    producer.stop().await?;
    s.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_storage_is_waited_out_nothing_dead_lettered_or_lost() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("lake_ro").await?;
    let dir = lake_dir("lake_ro");
    let root = dir.display().to_string();
    let config = lake_config(&s, &root);
    let producer = producer_for(&s).await?;
    let lake = Process::start_lake(&config)?;
    wait_ready(lake.addr)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", lake.log()))?;
    let mut sent = ids(200);
    post_events(&producer, &sent).await?;
    wait_lake_rows(&root, "events", sent.len(), &[], || lake.log()).await?;

    // The directory becomes a file: every write under it fails (tests run as root, so a read-only mode would not
    // stop them).
    let away = dir.with_extension("away");
    std::fs::rename(&dir, &away)?;
    std::fs::write(&dir, b"not a directory")?;
    let during = ids(300);
    post_events(&producer, &during).await?;
    sent.extend(&during);
    eventually("storage retries", Duration::from_secs(30), || async {
        Ok(
            (metric(lake.addr, "sluice_consumer_retries_total{what=\"storage\"").await? >= 2.0)
                .then_some(()),
        )
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", lake.log()))?;
    let g = sluice_tests::kafka::group_state(
        &sluice_tests::kafka_bootstrap(),
        &config.lake.group_id,
        &s.topic,
    )
    .await?;
    assert!(
        g.lag().values().sum::<i64>() > 0,
        "nothing committed past what is not in a file: {:?}",
        g.lag()
    );
    std::fs::remove_file(&dir)?;
    std::fs::rename(&away, &dir)?;

    let view = wait_lake_rows(&root, "events", sent.len(), &[], || lake.log()).await?;
    view.assert_exactly(&sent);
    wait_lake_committed(&s, &config.lake.group_id).await?;
    assert!(
        letters_of(&s, &config.lake.group_id).await?.is_empty(),
        "an outage is not poison"
    );
    drop(lake);
    producer.stop().await?;
    s.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Waits until every partition but 0 is committed to its end while partition 0 still lags: one partition's
/// storage failing holds that partition alone.
async fn wait_only_partition_0_behind(
    s: &Setup,
    group: &str,
    log: impl Fn() -> String,
) -> anyhow::Result<()> {
    eventually(
        "partitions 1.. committed to their ends, partition 0 behind",
        Duration::from_secs(90),
        || async {
            let lag =
                sluice_tests::kafka::group_state(&sluice_tests::kafka_bootstrap(), group, &s.topic)
                    .await?
                    .lag();
            let others_done = lag.iter().filter(|(p, _)| **p != 0).all(|(_, l)| *l == 0);
            let zero_behind = lag.get(&0).is_some_and(|l| *l > 0);
            Ok((lag.len() > 1 && others_done && zero_behind).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", log()))
}

/// Partition 0's manifest directory made unusable (a file where the directory goes): its segments cannot be
/// recorded, so they wait, and so does its recovery after a restart; every other partition is published and
/// committed meanwhile. Once the directory is back, partition 0 catches up and every row is in the lake once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_partition_that_cannot_be_recorded_holds_back_only_itself() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("lake_one").await?;
    let dir = lake_dir("lake_one");
    let root = dir.display().to_string();
    let config = lake_config(&s, &root);
    let group = config.lake.group_id.clone();
    // Straight to Kafka, keyed by event id, so every partition gets events (the HTTP producer keys by tenant).
    let schema_id =
        consumer_support::register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let producer = consumer_support::producer()?;
    let mut lake = Process::start_lake(&config)?;
    wait_ready(lake.addr)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", lake.log()))?;
    let mut sent = ids(200);
    consumer_support::send_events(&producer, &s.topic, schema_id, &sent).await?;
    wait_lake_rows(&root, "events", sent.len(), &[], || lake.log()).await?;

    let manifests_of_0 = dir.join("_sluice/segments/events").join(&s.topic).join("0");
    let _ = std::fs::remove_dir_all(&manifests_of_0);
    std::fs::create_dir_all(manifests_of_0.parent().context("a parent")?)?;
    std::fs::write(&manifests_of_0, b"not a directory")?;
    let during = ids(400);
    consumer_support::send_events(&producer, &s.topic, schema_id, &during).await?;
    sent.extend(&during);
    wait_only_partition_0_behind(&s, &group, || lake.log()).await?;

    // A restart while it is still broken: partition 0's recovery cannot read its manifests and waits alone too.
    lake.kill9()?;
    let lake = Process::start_lake(&config)?;
    let after = ids(200);
    consumer_support::send_events(&producer, &s.topic, schema_id, &after).await?;
    sent.extend(&after);
    wait_only_partition_0_behind(&s, &group, || lake.log()).await?;

    std::fs::remove_file(&manifests_of_0)?;
    let view = wait_lake_rows(&root, "events", sent.len(), &[], || lake.log()).await?;
    view.assert_exactly(&sent);
    wait_lake_committed(&s, &group).await?;
    assert!(
        letters_of(&s, &group).await?.is_empty(),
        "storage that fails is not poison"
    );
    drop(lake);
    s.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
