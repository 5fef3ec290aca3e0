//! A producer no one here wrote: Confluent's Python client and its AvroSerializer register the event schema in the
//! registry under test (Sluice's or Apicurio) and write straight to Kafka; Sluice's consumer lands every record.

mod consumer_support;

use std::time::Duration;

use consumer_support::*;
use sluice_tests::kafka::project_root;
use sluice_tests::{init_tracing, kafka_bootstrap, registry_url};
use uuid::Uuid;

/// The Python with confluent-kafka installed (`scripts/test` makes a venv and sets `SLUICE_TEST_PYTHON`).
fn python() -> String {
    std::env::var("SLUICE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_python_serializer_writes_what_the_consumer_lands() -> anyhow::Result<()> {
    init_tracing();
    let s = Setup::new("python_avro").await?;

    let script = project_root().join("tests/fixtures/python/confluent_avro_producer.py");
    let schema = project_root().join("schemas/avro/event.avsc");
    let run = tokio::process::Command::new(python())
        .arg(&script)
        .args([&kafka_bootstrap(), &registry_url(), &s.topic])
        .arg(&schema)
        .arg("50")
        .kill_on_drop(true)
        .output();
    // Bounded: a peer that hangs fails the test instead of the whole run.
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .map_err(|_| anyhow::anyhow!("the Confluent Python producer did not finish within 120 s"))?
        .map_err(|e| anyhow::anyhow!("running {} (SLUICE_TEST_PYTHON): {e}", python()))?;
    anyhow::ensure!(
        out.status.success(),
        "the Confluent Python producer failed (is confluent-kafka[avro,schemaregistry] installed for {}?): {}",
        python(),
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = String::from_utf8(out.stdout)?
        .lines()
        .map(Uuid::parse_str)
        .collect::<Result<Vec<_>, _>>()?;
    assert_eq!(ids.len(), 50);

    // The subject exists now, registered by the serializer: the consumer takes it as its reader schema.
    let consumer = InProcess::start(s.config()).await?;
    consumer.ready().await?;

    s.wait_for_rows(50, Duration::from_secs(60)).await?;
    s.assert_exactly(&ids).await?;
    let (tenant, source): (String, String) = sluice_tests::clickhouse()
        .query(&format!(
            "SELECT any(tenant), ifNull(any(source), '') FROM {} FINAL",
            s.table
        ))
        .fetch_one()
        .await?;
    assert_eq!(
        (tenant.as_str(), source.as_str()),
        ("python", "confluent-kafka-python")
    );
    s.wait_committed_at_end(Duration::from_secs(30)).await?;
    assert!(
        s.dead_letters().await?.is_empty(),
        "the serializer's records are not poison"
    );
    consumer.stop().await?;
    s.cleanup().await;
    Ok(())
}
