//! The real `sluice-consumer` binary under abuse: SIGKILLed repeatedly in the middle of a load, and two replicas of
//! one group where one is SIGKILLed and the other takes its partitions over. Nothing may be lost, and FINAL shows
//! every event exactly once.

mod consumer_support;

use std::time::Duration;

use consumer_support::*;
use sluice_tests::{eventually, init_tracing};
use uuid::Uuid;

/// Waits until the process has consumed at least `n` more messages than `from` (per its own /metrics).
async fn consumed_at_least(p: &Process, n: f64) -> anyhow::Result<()> {
    eventually(
        "the consumer to make progress",
        Duration::from_secs(60),
        || async {
            Ok((metric(p.addr, "sluice_consumer_messages_consumed_total")
                .await
                .unwrap_or(0.0)
                >= n)
                .then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_five_times_mid_load_loses_nothing_classic_protocol() -> anyhow::Result<()> {
    kill_9_five_times_mid_load_loses_nothing_and_duplicates_collapse(GroupProtocol::Classic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_five_times_mid_load_loses_nothing_kip_848_protocol() -> anyhow::Result<()> {
    kill_9_five_times_mid_load_loses_nothing_and_duplicates_collapse(GroupProtocol::Consumer).await
}

async fn kill_9_five_times_mid_load_loses_nothing_and_duplicates_collapse(
    protocol: GroupProtocol,
) -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("cons_kill").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let mut config = s.config_with_protocol(protocol);
    // Small batches so every kill lands between inserts and commits of a busy consumer.
    config.batch.max_rows = 50;
    // The load keeps coming, at a steady rate, until the last kill is done: every kill lands mid-load.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (topic, stop) = (s.topic.clone(), stop.clone());
        tokio::spawn(async move {
            let producer = producer()?;
            let mut sent = Vec::new();
            while !stop.is_cancelled() {
                let chunk = ids(50);
                send_events(&producer, &topic, schema_id, &chunk).await?;
                sent.extend(chunk);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            anyhow::Ok(sent)
        })
    };

    for round in 0..5 {
        let mut p = Process::start(&config)?;
        wait_ready(p.addr)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", p.log()))?;
        // Kill only once it is really working: some messages read (and some batches likely in flight).
        consumed_at_least(&p, 100.0)
            .await
            .map_err(|e| anyhow::anyhow!("round {round}: {e}\n{}", p.log()))?;
        // A random moment within a few batch periods, so kills land before, during and after inserts and commits.
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..400))).await;
        p.kill9()?;
    }
    stop.cancel();
    let all = load.await??;
    assert!(all.len() >= 500, "a real load: {} events", all.len());

    let mut last = Process::start(&config)?;
    wait_ready(last.addr).await?;
    s.wait_for_rows(all.len() as u64, Duration::from_secs(120))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", last.log()))?;
    s.assert_exactly(&all).await?;
    let raw: u64 = sluice_tests::clickhouse()
        .query(&format!("SELECT count() FROM {}", s.table))
        .fetch_one()
        .await?;
    eprintln!(
        "kill -9 x5: {raw} rows before FINAL for {} events (redelivered copies collapse under FINAL)",
        all.len()
    );
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    assert!(s.dead_letters().await?.is_empty(), "crashes are not poison");
    let status = last.terminate()?;
    assert!(
        status.success(),
        "SIGTERM exits cleanly: {status:?}\n{}",
        last.log()
    );
    s.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hand_over_classic_protocol() -> anyhow::Result<()> {
    two_replicas_share_partitions_and_a_killed_one_hands_over(GroupProtocol::Classic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hand_over_kip_848_protocol() -> anyhow::Result<()> {
    two_replicas_share_partitions_and_a_killed_one_hands_over(GroupProtocol::Consumer).await
}

async fn two_replicas_share_partitions_and_a_killed_one_hands_over(
    protocol: GroupProtocol,
) -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("cons_pair").await?;
    let schema_id = register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let config = s.config_with_protocol(protocol);
    let mut a = Process::start(&config)?;
    let b = Process::start(&config)?;
    wait_ready(a.addr).await?;
    wait_ready(b.addr).await?;
    let producer = producer()?;

    // Keep producing until both replicas have read something: they share the partitions.
    let mut sent: Vec<Uuid> = Vec::new();
    eventually("both replicas consuming", Duration::from_secs(60), || {
        let batch = ids(40);
        sent.extend(&batch);
        let (producer, topic, a, b) = (&producer, &s.topic, a.addr, b.addr);
        async move {
            send_events(producer, topic, schema_id, &batch).await?;
            let ca = metric(a, "sluice_consumer_messages_consumed_total").await?;
            let cb = metric(b, "sluice_consumer_messages_consumed_total").await?;
            Ok((ca > 0.0 && cb > 0.0).then_some(()))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nA:\n{}\nB:\n{}", a.log(), b.log()))?;
    s.wait_for_rows(sent.len() as u64, Duration::from_secs(60))
        .await?;

    a.kill9()?;
    let after = ids(400);
    send_events(&producer, &s.topic, schema_id, &after).await?;
    sent.extend(&after);
    s.wait_for_rows(sent.len() as u64, Duration::from_secs(90))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nB:\n{}", b.log()))?;
    s.assert_exactly(&sent).await?;
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    drop(b);
    s.cleanup().await;
    Ok(())
}

/// Rows of the dead-letter table of `s` through FINAL, and how many distinct source offsets they name.
async fn dead_letter_rows(s: &Setup) -> anyhow::Result<(u64, u64)> {
    Ok(sluice_tests::clickhouse()
        .query(&format!(
            "SELECT count(), uniqExact(source_partition, source_offset) FROM {}.dead_letters FINAL",
            s.db
        ))
        .fetch_one()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_land_in_their_table_once_through_kill_9s() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("dl_table").await?;
    register(&s.subject, sluice_schemas::catalog::EVENT.text).await?;
    let mut config = s.config();
    // Small batches: the letters are copied in many inserts, so the kills land between some of them.
    config.batch.max_rows = 20;
    config.batch.min_rows = 1;
    // Garbage keeps coming, 20 messages every 100 ms, until the last kill is done.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (topic, stop) = (s.topic.clone(), stop.clone());
        tokio::spawn(async move {
            let producer = producer()?;
            let mut sent = 0usize;
            while !stop.is_cancelled() {
                let wave: Vec<(String, Vec<u8>)> = (sent..sent + 20)
                    .map(|i| (format!("k-{i}"), format!("not avro {i}").into_bytes()))
                    .collect();
                send_raw(&producer, &topic, &wave).await?;
                sent += 20;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(sent as u64)
        })
    };
    let mut seen = 0;
    for _ in 0..3 {
        let mut p = Process::start(&config)?;
        // Killed once it has copied more letters than before: mid-copy, with more arriving.
        eventually(
            "more dead letters in the table",
            Duration::from_secs(60),
            || async {
                let now = dead_letter_rows(&s).await.unwrap_or((0, 0)).0;
                Ok((now > seen).then_some(now))
            },
        )
        .await
        .map(|now| seen = now)?;
        p.kill9()?;
    }
    stop.cancel();
    let sent = load.await??;
    let last = Process::start(&config)?;
    eventually(
        "every dead letter in the table",
        Duration::from_secs(90),
        || async { Ok((dead_letter_rows(&s).await?.1 == sent).then_some(())) },
    )
    .await?;
    assert_eq!(
        dead_letter_rows(&s).await?,
        (sent, sent),
        "each letter once through FINAL"
    );
    // What the table says is what the letter says.
    let (class, topic, payload, size, key, trace): (String, String, String, u64, String, String) =
        sluice_tests::clickhouse()
            .query(&format!(
                "SELECT class, source_topic, payload, payload_size, key, header_values[indexOf(header_keys, 'trace')] \
                 FROM {}.dead_letters FINAL WHERE key = 'k-7'",
                s.db
            ))
            .fetch_one()
            .await?;
    assert_eq!(
        (
            class.as_str(),
            topic.as_str(),
            payload.as_str(),
            size,
            key.as_str(),
            trace.as_str()
        ),
        (
            "undecodable",
            s.topic.as_str(),
            "not avro 7",
            10,
            "k-7",
            "k-7"
        )
    );
    drop(last);
    s.cleanup().await;
    Ok(())
}
