//! What only a real Apache Kafka shows: the consumer group as Kafka's own Admin client reports it (offsets, lag,
//! protocol, members), and a client no one here wrote (Debian's kcat, librdkafka 2.0.2) reading Sluice's topics and
//! feeding it garbage.

mod consumer_support;

use std::collections::BTreeMap;
use std::time::Duration;

use consumer_support::*;
use sluice_tests::kafka::{GroupState, group_state};
use sluice_tests::{eventually, init_tracing, kafka_bootstrap};

/// Sluice's per-partition `sluice_consumer_lag_messages` of `topic`.
async fn lag_metric(consumer: &InProcess, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut lag = BTreeMap::new();
    for p in 0..PARTITIONS {
        let line = format!("sluice_consumer_lag_messages{{partition=\"{p}\",topic=\"{topic}\"}}");
        lag.insert(p, consumer.metric(&line).await? as i64);
    }
    Ok(lag)
}

/// Waits until Kafka's view of the group and Sluice's lag metric agree, and `check` holds of Kafka's view.
async fn agreed(
    s: &Setup,
    consumer: &InProcess,
    what: &str,
    check: impl Fn(&GroupState) -> bool,
) -> anyhow::Result<GroupState> {
    let last = std::cell::RefCell::new(String::new());
    eventually(what, Duration::from_secs(60), || {
        let (last, check) = (&last, &check);
        async move {
            let kafka = group_state(&kafka_bootstrap(), &s.group, &s.topic).await?;
            let ours = lag_metric(consumer, &s.topic).await?;
            *last.borrow_mut() =
                format!("Kafka: {kafka:?}; sluice_consumer_lag_messages: {ours:?}");
            Ok((check(&kafka) && kafka.lag() == ours).then_some(kafka))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nlast seen: {}", last.borrow()))
}

async fn the_group_as_kafka_reports_it(protocol: GroupProtocol, kind: &str) -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("kafka_group").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let proxy = Proxy::start(&clickhouse_addr()).await?;
    let mut config = s.config_with_protocol(protocol);
    config.clickhouse.url = proxy.url.clone();
    let consumer = InProcess::start(config).await?;
    consumer.ready().await?;
    let producer = producer()?;

    let first = ids(120);
    send_events(&producer, &s.topic, schema_id, &first).await?;
    s.wait_for_rows(120, Duration::from_secs(60)).await?;
    let drained = agreed(&s, &consumer, "a drained group", |g| {
        g.offsets.len() == PARTITIONS as usize && g.offsets.values().all(|(c, e)| c == e)
    })
    .await?;
    assert_eq!(
        drained.protocol, kind,
        "the group speaks the configured protocol"
    );
    assert_eq!(
        drained.offsets.values().map(|(_, end)| end).sum::<i64>(),
        120,
        "every message committed: {drained:?}"
    );
    let owned: Vec<i32> = drained.members.values().flatten().copied().collect();
    assert_eq!(drained.members.len(), 1, "{drained:?}");
    assert_eq!(
        owned.len(),
        PARTITIONS as usize,
        "one member owns every partition: {drained:?}"
    );

    // With ClickHouse unreachable nothing is committed: Kafka sees the lag, and Sluice's metric says the same.
    proxy.cut();
    send_events(&producer, &s.topic, schema_id, &ids(80)).await?;
    let behind = agreed(&s, &consumer, "a lagging group", |g| {
        g.lag().values().sum::<i64>() == 80
    })
    .await?;
    assert!(
        behind.lag().values().filter(|l| **l > 0).count() > 1,
        "the lag spreads over partitions: {behind:?}"
    );

    proxy.restore();
    s.wait_for_rows(200, Duration::from_secs(60)).await?;
    agreed(&s, &consumer, "a drained group again", |g| {
        g.offsets.values().map(|(c, _)| c).sum::<i64>() == 200 && g.lag().values().all(|l| *l == 0)
    })
    .await?;
    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_as_kafka_reports_it_classic_protocol() -> anyhow::Result<()> {
    the_group_as_kafka_reports_it(GroupProtocol::Classic, "CLASSIC").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_as_kafka_reports_it_kip_848_protocol() -> anyhow::Result<()> {
    the_group_as_kafka_reports_it(GroupProtocol::Consumer, "CONSUMER").await
}

/// Runs kcat with `args` (and `input` on stdin); its stdout.
async fn kcat(args: &[&str], input: Option<&[u8]>) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("kcat")
        .args(["-b", &kafka_bootstrap()])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("kcat (Debian's package; scripts/stack installs it): {e}"))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("kcat stdin"))?;
    if let Some(input) = input {
        stdin.write_all(input).await?;
    }
    drop(stdin);
    let out = child.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "kcat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_reads_the_topics_and_its_garbage_is_dead_lettered() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("kafka_kcat").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let consumer = InProcess::start(s.config()).await?;
    consumer.ready().await?;
    let good = ids(30);
    send_events(&producer()?, &s.topic, schema_id, &good).await?;
    // A message from a client that knows nothing of Avro or the registry.
    kcat(
        &["-P", "-t", &s.topic, "-k", "from-kcat"],
        Some(b"not avro, not framed"),
    )
    .await?;

    s.wait_for_rows(30, Duration::from_secs(60)).await?;
    let letters = eventually(
        "kcat's message in the DLQ",
        Duration::from_secs(60),
        || async {
            let letters = s.dead_letters().await?;
            Ok((!letters.is_empty()).then_some(letters))
        },
    )
    .await?;
    assert_eq!(letters.len(), 1);
    s.wait_committed_at_end(Duration::from_secs(30)).await?;

    // kcat sees every message of the stream, with Sluice's keys, each framed in Confluent's wire format.
    let topic = kcat(&["-C", "-t", &s.topic, "-e", "-q", "-f", "%k\t%S\n"], None).await?;
    let keys: Vec<&str> = topic.lines().filter_map(|l| l.split('\t').next()).collect();
    assert_eq!(keys.len(), 31, "{topic}");
    for id in &good {
        assert!(
            keys.contains(&id.to_string().as_str()),
            "{id} on the topic as kcat reads it"
        );
    }
    // The DLQ, headers and all, as kcat prints them.
    let dlq = kcat(&["-C", "-t", &s.dlq, "-e", "-q", "-f", "%k|%s|%h\n"], None).await?;
    let line = dlq.lines().next().unwrap_or_default();
    assert!(line.starts_with("from-kcat|not avro, not framed|"), "{dlq}");
    for header in [
        format!("sluice.error.class={}", "undecodable"),
        format!("sluice.source.topic={}", s.topic),
        format!("sluice.consumer.group={}", s.group),
        "sluice.source.offset=".to_owned(),
    ] {
        assert!(line.contains(&header), "{header} in {line}");
    }
    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}
