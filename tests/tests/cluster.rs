//! The cluster tier: Sluice on `scripts/stack cluster` — three Apache Kafka brokers (topics with replication
//! factor 3 and `min.insync.replicas=2`), ClickHouse 18.16 as two shards of two replicas, and ZooKeeper — with a
//! broker, a replica of each shard, ZooKeeper and the consumer killed in turn under load.
//!
//! These kill nodes every other test of the tier shares, so they are `#[ignore]`d in the main pass and
//! `scripts/test` runs them one at a time after starting the cluster (`cargo test --test cluster -- --ignored
//! --test-threads=1`).

mod consumer_support;
mod http_load;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use consumer_support::*;
use http_load::{Load, Service};
use rdkafka::producer::FutureProducer;
use sluice_consumer::config::{ClusterSettings, Config};
use sluice_runtime::kafka::KafkaSettings;
use sluice_tests::kafka::project_root;
use sluice_tests::{eventually, init_tracing};

const BROKERS: &str = "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094";
/// Shard by shard, as `remote_servers` lists them: 01/r1, 01/r2, 02/r1, 02/r2.
const NODES: [&str; 4] = [
    "http://127.0.0.1:8131",
    "http://127.0.0.1:8132",
    "http://127.0.0.1:8133",
    "http://127.0.0.1:8134",
];
const KEY: &str = "cluster-key";

/// A client of node `i` (0-based, in [`NODES`] order).
fn node(i: usize) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(NODES[i])
        .with_validation(false)
        .with_compression(clickhouse::Compression::None)
}

/// The cluster's brokers, creating topics the way a real deployment should.
fn kafka() -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: BROKERS.into(),
        replication_factor: 3,
        min_insync_replicas: Some(2),
        ..KafkaSettings::default()
    }
}

/// `scripts/stack cluster ARGS`, which must succeed; its stdout.
async fn stack(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(project_root().join("scripts/stack"))
        .arg("cluster")
        .args(args)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "scripts/stack cluster {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// SIGKILL to the cluster's process `name` (`kafka-2`, `clickhouse-3`, `zookeeper`, …).
async fn kill9(name: &str) -> anyhow::Result<()> {
    let pid = stack(&["pid", name]).await?;
    let status = tokio::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .await?;
    anyhow::ensure!(status.success(), "kill -9 {pid} ({name})");
    eprintln!("[cluster] kill -9 {name} (pid {pid})");
    Ok(())
}

/// Starts whatever of the cluster is not running and waits until it answers.
async fn restart() -> anyhow::Result<()> {
    stack(&["up"]).await?;
    eprintln!("[cluster] up again");
    Ok(())
}

/// One test's topics (replicated 3 ways), group and table names, on the cluster.
async fn setup(prefix: &str) -> anyhow::Result<Setup> {
    Setup::on(prefix, kafka()).await
}

/// A consumer config writing to the cluster: shards by partition, fast DDL timeouts for nodes that are down.
fn cluster_config(s: &Setup) -> Config {
    let mut c = s.config();
    c.clickhouse.timeout_ms = 10_000;
    c.clickhouse.cluster = Some(ClusterSettings {
        name: "sluice".into(),
        shards: vec![
            format!("{},{}", NODES[0], NODES[1]),
            format!("{},{}", NODES[2], NODES[3]),
        ],
        replica_path: "/clickhouse/tables/{shard}/{database}/{table}".into(),
        local_suffix: "_local".into(),
        ddl_timeout_ms: 5_000,
    });
    c
}

/// The first node that answers `sql` with rows of `T`.
async fn on_any<T>(sql: &str) -> anyhow::Result<Vec<T>>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    let mut last = None;
    for (i, url) in NODES.iter().enumerate() {
        match node(i).query(sql).fetch_all::<T>().await {
            Ok(rows) => return Ok(rows),
            Err(e) => last = Some(format!("{url}: {e}")),
        }
    }
    anyhow::bail!("no node answered {sql}: {last:?}")
}

/// Event ids through the `Distributed` table with FINAL.
async fn ids_final(table: &str) -> anyhow::Result<Vec<String>> {
    on_any::<String>(&format!("SELECT toString(event_id) FROM {table} FINAL")).await
}

/// Waits until every id of `want` is in the cluster through FINAL, and checks none is there twice.
async fn wait_landed_once(s: &Setup, want: &HashSet<String>) -> anyhow::Result<()> {
    let table = s.table.clone();
    eventually(
        "every accepted event in the cluster",
        Duration::from_secs(240),
        || async {
            let got = ids_final(&table).await.unwrap_or_default();
            let got_set: HashSet<&str> = got.iter().map(String::as_str).collect();
            anyhow::ensure!(
                got_set.len() == got.len(),
                "{} duplicated ids through FINAL",
                got.len() - got_set.len()
            );
            Ok(want
                .iter()
                .all(|id| got_set.contains(id.as_str()))
                .then_some(()))
        },
    )
    .await
}

/// Waits until both replicas of each shard hold the same rows (count and a hash of the ids), and every row of
/// `want` is on exactly one shard; returns the rows per shard.
async fn wait_replicas_agree(s: &Setup, want: usize) -> anyhow::Result<[u64; 2]> {
    let local = format!("{}_local", s.table);
    eventually(
        "both replicas of every shard with the same rows",
        Duration::from_secs(240),
        || async {
            let mut per_shard = [0u64; 2];
            for (shard, rows) in per_shard.iter_mut().enumerate() {
                let mut seen = Vec::new();
                for replica in 0..2 {
                    let q = format!(
                        "SELECT count(), sum(cityHash64(toString(event_id))) FROM {local} FINAL"
                    );
                    match node(shard * 2 + replica)
                        .query(&q)
                        .fetch_one::<(u64, u64)>()
                        .await
                    {
                        Ok(r) => seen.push(r),
                        Err(_) => return Ok(None),
                    }
                }
                if seen[0] != seen[1] {
                    return Ok(None);
                }
                *rows = seen[0].0;
            }
            Ok((per_shard.iter().sum::<u64>() as usize == want).then_some(per_shard))
        },
    )
    .await
}

/// The producer on the cluster's brokers, acks=all, with a message timeout that outlasts a leader election.
async fn producer_service(s: &Setup) -> anyhow::Result<Service> {
    Service::start(
        "sluice-producer",
        &format!(
            r#"listen = "127.0.0.1:{{port}}"
registry_url = "{registry}"
[kafka]
bootstrap_servers = "{BROKERS}"
replication_factor = 3
min_insync_replicas = 2
[produce]
message_timeout_ms = 20000
[limits]
request_timeout_ms = 25000
retry_after_secs = 1
[streams.events]
topic = "{topic}"
schema = "event"
partitions = {PARTITIONS}
key_field = "user_id"
[keys.{hash}]
tenant = "demo"
streams = ["events"]
"#,
            registry = sluice_tests::registry_url(),
            topic = s.topic,
            hash = sluice_producer::auth::hash_key(KEY),
        ),
    )
    .await
}

/// What the consumer went through during [`under_load`].
struct Weathered {
    /// Transient failures it retried (`sluice_consumer_retries_total`).
    retries: f64,
    /// Inserts it moved to a shard's next replica (`sluice_consumer_replica_failovers_total`).
    failovers: f64,
    /// Its log.
    log: String,
}

/// HTTP load through the producer into the consumer on the cluster while `fault` runs; then every 202 is in the
/// cluster once through FINAL, nothing is dead-lettered, the group committed to the end, and both replicas of each
/// shard agree.
async fn under_load<F, Fut>(prefix: &str, fault: F) -> anyhow::Result<Weathered>
where
    F: FnOnce(Load, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Load>>,
{
    init_tracing();
    let s = setup(prefix).await?;
    let producer = producer_service(&s).await?;
    let consumer = Process::start(&cluster_config(&s))?;
    wait_ready(consumer.addr)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", consumer.log()))?;
    let load = Load::start(
        &format!("{}/v1/streams/events/events", producer.base),
        KEY,
        4,
    );
    load.wait_more(300, Duration::from_secs(60)).await?;
    let load = fault(load, s.table.clone()).await?;
    load.wait_more(300, Duration::from_secs(120))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nproducer:\n{}", producer.log()))?;
    let want = load
        .stop()
        .await?
        .accepted_ids(&format!("[cluster] {prefix}"));
    wait_landed_once(&s, &want)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nconsumer:\n{}", consumer.log()))?;
    s.wait_committed_at_end(Duration::from_secs(120)).await?;
    assert!(
        s.dead_letters().await?.is_empty(),
        "a cluster fault is not poison"
    );
    let rows = ids_final(&s.table).await?.len();
    let per_shard = wait_replicas_agree(&s, rows).await?;
    let retries = metric(consumer.addr, "sluice_consumer_retries_total").await?;
    let failovers = metric(consumer.addr, "sluice_consumer_replica_failovers_total").await?;
    eprintln!(
        "[cluster] {prefix}: {rows} rows, {per_shard:?} per shard, replicas agree; {retries} retries, {failovers} failovers"
    );
    assert!(
        per_shard.iter().all(|n| *n > 0),
        "both shards took rows: {per_shard:?}"
    );
    Ok(Weathered {
        retries,
        failovers,
        log: consumer.log(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "cluster tier: needs `scripts/stack cluster up`; scripts/test runs it"]
async fn a_broker_killed_under_load_loses_no_202_and_the_quorum_keeps_answering()
-> anyhow::Result<()> {
    let _ = under_load("cl_broker", |load, _| async move {
        kill9("kafka-2").await?;
        // Two of three replicas are in sync: acks=all still completes, so 202s keep coming while it is down.
        load.wait_more(200, Duration::from_secs(60))
            .await
            .context("202s while one broker of three is down")?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        restart().await?;
        Ok(load)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "cluster tier: needs `scripts/stack cluster up`; scripts/test runs it"]
async fn a_replica_of_each_shard_killed_under_load_fails_over_and_catches_up() -> anyhow::Result<()>
{
    let weathered = under_load("cl_replica", |load, table| async move {
        // The first replicas: the ones the consumer writes to and asks metadata of while all are up.
        kill9("clickhouse-1").await?;
        kill9("clickhouse-3").await?;
        // Rows keep landing, on the second replicas, while the first are down (read through node 2).
        let count = || async {
            node(1)
                .query(&format!("SELECT count() FROM {table}"))
                .fetch_one::<u64>()
                .await
                .unwrap_or(0)
        };
        let before = count().await;
        eventually(
            "rows landing on the other replicas",
            Duration::from_secs(60),
            || async { Ok((count().await >= before + 500).then_some(())) },
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        restart().await?;
        Ok(load)
    })
    .await?;
    assert!(
        weathered.failovers >= 2.0,
        "the consumer failed over to the second replica of each shard ({} failovers):\n{}",
        weathered.failovers,
        weathered.log
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "cluster tier: needs `scripts/stack cluster up`; scripts/test runs it"]
async fn zookeeper_down_for_20_s_under_load_is_waited_out() -> anyhow::Result<()> {
    let weathered = under_load("cl_zookeeper", |load, _| async move {
        kill9("zookeeper").await?;
        // Replicated tables turn read-only: inserts fail and are retried, nothing is committed past them.
        tokio::time::sleep(Duration::from_secs(20)).await;
        restart().await?;
        Ok(load)
    })
    .await?;
    assert!(
        weathered.retries > 0.0,
        "inserts failed while ZooKeeper was down, and were retried:\n{}",
        weathered.log
    );
    Ok(())
}

/// Registers v2 of the event schema (a new optional `plan` field), produces with it, and returns the ids sent.
async fn send_v2(p: &FutureProducer, s: &Setup, n: usize) -> anyhow::Result<Vec<uuid::Uuid>> {
    let v2_text = event_schema_v2_text();
    let v2 = apache_avro::Schema::parse_str(&v2_text)?;
    let id = register(&s.subject, &v2_text).await?;
    let ids = ids(n);
    let items = ids
        .iter()
        .map(|u| {
            let value = event(
                *u,
                "upgrade",
                vec![(
                    "plan".into(),
                    apache_avro::types::Value::Union(
                        1,
                        Box::new(apache_avro::types::Value::String("pro".into())),
                    ),
                )],
            );
            Ok((u.to_string(), framed(id, &v2, value)?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    send_raw(p, &s.topic, &items).await?;
    Ok(ids)
}

fn cluster_producer() -> anyhow::Result<FutureProducer> {
    Ok(kafka()
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "cluster tier: needs `scripts/stack cluster up`; scripts/test runs it"]
async fn a_new_optional_field_adds_the_column_on_every_node() -> anyhow::Result<()> {
    init_tracing();
    let s = setup("cl_evolve").await?;
    let p = cluster_producer()?;
    let v1 = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let first = ids(200);
    send_events(&p, &s.topic, v1, &first).await?;
    let consumer = Process::start(&cluster_config(&s))?;
    let want: HashSet<String> = first.iter().map(ToString::to_string).collect();
    wait_landed_once(&s, &want)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", consumer.log()))?;

    let second = send_v2(&p, &s, 200).await?;
    let (db, name) = s.table.split_once('.').context("qualified")?;
    for (i, url) in NODES.iter().enumerate() {
        for table in [name.to_owned(), format!("{name}_local")] {
            let q = format!(
                "SELECT type FROM system.columns WHERE database = '{db}' AND table = '{table}' AND name = 'plan'"
            );
            let ty = eventually(
                &format!("column plan on {url} {table}"),
                Duration::from_secs(90),
                || async {
                    Ok(node(i)
                        .query(&q)
                        .fetch_all::<String>()
                        .await?
                        .into_iter()
                        .next())
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", consumer.log()))?;
            assert_eq!(ty, "Nullable(String)", "{url} {table}");
        }
    }
    let want: HashSet<String> = first
        .iter()
        .chain(&second)
        .map(ToString::to_string)
        .collect();
    wait_landed_once(&s, &want).await?;
    let pro: Vec<u64> = on_any(&format!(
        "SELECT count() FROM {} FINAL WHERE plan = 'pro'",
        s.table
    ))
    .await?;
    assert_eq!(
        pro,
        [200],
        "the new field's values, through the Distributed table"
    );
    wait_replicas_agree(&s, 400).await?;
    assert!(s.dead_letters().await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "cluster tier: needs `scripts/stack cluster up`; scripts/test runs it"]
async fn a_shard_down_holds_only_its_partitions_and_a_consumer_kill_lands_nothing_twice()
-> anyhow::Result<()> {
    init_tracing();
    let s = setup("cl_rebuild").await?;
    let p = cluster_producer()?;
    let v1 = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let sent = ids(4_000);
    send_events(&p, &s.topic, v1, &sent).await?;
    // One batch holds the whole backlog.
    let mut config = cluster_config(&s);
    config.batch.max_rows = 100_000;
    config.batch.min_rows = 100_000;
    config.batch.max_bytes = 64 << 20;
    config.batch.max_wait_ms = 3_000;

    // Shard 2 down: the flush lands the blocks of partitions 0 and 2 on shard 1 and commits them; only partitions 1
    // and 3, whose shard is down, are held and retried.
    kill9("clickhouse-3").await?;
    kill9("clickhouse-4").await?;
    let mut consumer = Process::start(&config)?;
    let local = format!("{}_local", s.table);
    // Partitions 0 and 2 are shard 1's: all their messages, and nothing else, land there.
    // A fresh cluster's group coordinator may still be loading (NotCoordinator): asked until it answers.
    let ends = eventually(
        "the partitions' end offsets",
        Duration::from_secs(60),
        || async { Ok(Some(s.committed_and_ends().await?)) },
    )
    .await?;
    let shard1: i64 = ends
        .iter()
        .filter(|(p, _, _)| p % 2 == 0)
        .map(|(_, _, high)| high)
        .sum();
    let landed = eventually(
        "shard 1 holding both its partitions' rows while shard 2 is down",
        Duration::from_secs(120),
        || async {
            let n: u64 = node(0)
                .query(&format!("SELECT count() FROM {local}"))
                .fetch_one()
                .await
                .unwrap_or(0);
            Ok((n as i64 == shard1).then_some(n))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", consumer.log()))?;
    // Shard 1's partitions are committed to their ends; shard 2's stay where they were while it is down, however
    // often the consumer retries them.
    let committed = eventually(
        "shard 1's partitions committed to their ends",
        Duration::from_secs(60),
        || async {
            let now = s.committed_and_ends().await?;
            Ok(now
                .iter()
                .filter(|(p, _, _)| p % 2 == 0)
                .all(|(_, committed, high)| *committed == Some(*high))
                .then_some(now))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", consumer.log()))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held: i64 = s
        .committed_and_ends()
        .await?
        .iter()
        .filter(|(p, _, _)| p % 2 == 1)
        .map(|(_, committed, _)| committed.unwrap_or(0))
        .sum();
    assert_eq!(
        held, 0,
        "nothing committed past a shard that is down: {committed:?}"
    );
    consumer.kill9()?;
    eprintln!(
        "[cluster] consumer killed with {landed} rows on shard 1 committed and shard 2's partitions held"
    );
    // More arrives meanwhile: the rebuilt batch of the held partitions reaches further than the first, and the
    // block plan the first owner committed with their offsets cuts it where it was cut.
    let later = ids(2_000);
    send_events(&p, &s.topic, v1, &later).await?;

    restart().await?;
    let consumer = Process::start(&config)?;
    let want: HashSet<String> = sent.iter().chain(&later).map(ToString::to_string).collect();
    wait_landed_once(&s, &want)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", consumer.log()))?;
    s.wait_committed_at_end(Duration::from_secs(60)).await?;
    // Without FINAL and before any merge: nothing that landed was written again.
    let plain: Vec<u64> = on_any(&format!("SELECT count() FROM {}", s.table)).await?;
    eprintln!(
        "[cluster] after the restart: {} rows without FINAL",
        plain[0]
    );
    assert_eq!(plain, [6_000], "count() without FINAL: no copy was written");
    wait_replicas_agree(&s, 6_000).await?;
    Ok(())
}
