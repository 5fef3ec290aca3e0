//! The producer against the real broker and registry, served in-process: what a 202 puts on Kafka, that every error
//! path writes nothing, that a dead broker never yields a 202, and that the OpenAPI document matches what is served.

mod producer_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use apache_avro::types::Value;
use rdkafka::message::Message;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use serde_json::{Value as Json, json};
use sluice_tests::{registry_url, unique};

use producer_support::{
    KEY, OTHER_KEY, PARTITIONS, Producer, client, config, event, high_watermarks, key_of,
    partition_for, read_all,
};

fn field<'a>(fields: &'a [(String, Value)], name: &str) -> &'a Value {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or(&Value::Null)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Uuid(u) => Some(u.to_string()),
        Value::Union(_, inner) => text(inner),
        _ => None,
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data)?;
    Ok(gz.finish()?)
}

async fn registered_id(subject: &str) -> anyhow::Result<u32> {
    let url = format!("{}/subjects/{subject}/versions/latest", registry_url());
    let body: Json = client()
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["id"]
        .as_u64()
        .map(|id| id as u32)
        .context("no id in registry answer")
}

#[tokio::test]
async fn accepted_events_land_in_wire_format_on_the_keyed_partition() -> anyhow::Result<()> {
    let mut cfg = config();
    cfg.streams.get_mut("events").context("stream")?.key_field = "user_id".into();
    let p = Producer::ready(cfg).await?;
    let http = client();
    let before = now_millis();

    // A gzip batch, a zstd single event, and a plain event that brings its own id.
    let batch = Json::Array((0..10).map(event).collect());
    let r = http
        .post(p.events_url("events"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(batch.to_string().as_bytes())?)
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let mut sent_ids: Vec<String> =
        serde_json::from_value(r.json::<Json>().await?["event_ids"].clone())?;
    assert_eq!(sent_ids.len(), 10);

    let r = http
        .post(p.events_url("events"))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(zstd::encode_all(event(10).to_string().as_bytes(), 3)?)
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let ids: Vec<String> = serde_json::from_value(r.json::<Json>().await?["event_ids"].clone())?;
    sent_ids.extend(ids);

    let own_id = "0190b8a4-6c3e-7a1b-9c2d-3e4f5a6b7c8d";
    let mut own = event(11);
    own["event_id"] = json!(own_id);
    let r = http
        .post(p.events_url("events"))
        .bearer_auth(KEY)
        .json(&own)
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Json>().await?["event_ids"], json!([own_id]));
    sent_ids.push(own_id.to_owned());
    let after = now_millis();

    let topic = p.topic("events");
    let messages = read_all(&topic, 12).await?;
    let schema_id = registered_id(&format!("{topic}-value")).await?;
    let decoder = AvroDecoder::new(SrSettings::new(registry_url()));
    let mut seen_ids = BTreeSet::new();
    let mut partitions = BTreeSet::new();
    for m in &messages {
        let payload = m.payload().context("payload")?;
        let (id, _) = sluice_schemas::wire::unframe(payload)?;
        assert_eq!(id, schema_id, "Confluent header carries the registered id");
        let decoded = decoder.decode(Some(payload)).await?;
        let Value::Record(fields) = decoded.value else {
            anyhow::bail!("not a record")
        };
        let trace = text(field(&fields, "trace_id")).context("trace_id")?;
        let i: usize = trace.trim_start_matches("trace-").parse()?;
        let sent = event(i);
        assert_eq!(
            text(field(&fields, "event_type")).as_deref(),
            sent["event_type"].as_str()
        );
        assert_eq!(
            field(&fields, "occurred_at"),
            &Value::TimestampMillis(1_795_341_600_250)
        );
        assert_eq!(
            text(field(&fields, "user_id")).as_deref(),
            sent["user_id"].as_str()
        );
        assert_eq!(
            field(&fields, "source"),
            &Value::Union(0, Box::new(Value::Null)),
            "defaults fill omitted fields"
        );
        let Value::Map(props) = field(&fields, "properties") else {
            anyhow::bail!("properties not a map")
        };
        let props: BTreeMap<&str, Option<String>> =
            props.iter().map(|(k, v)| (k.as_str(), text(v))).collect();
        let want: BTreeMap<&str, Option<String>> = sent["properties"]
            .as_object()
            .context("props")?
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().map(str::to_owned)))
            .collect();
        assert_eq!(props, want);
        // Server-side fields.
        assert_eq!(text(field(&fields, "tenant")).as_deref(), Some("demo"));
        let Value::TimestampMillis(received) = field(&fields, "received_at") else {
            anyhow::bail!("received_at")
        };
        assert!(
            (before..=after).contains(received),
            "received_at {received} within the requests"
        );
        seen_ids.insert(text(field(&fields, "event_id")).context("event_id")?);
        // Keyed by the entity field, on the partition Kafka's default partitioner picks for that key.
        assert_eq!(key_of(m), sent["user_id"].as_str().unwrap_or_default());
        assert_eq!(
            m.partition(),
            partition_for(m.key().unwrap_or_default(), PARTITIONS)
        );
        partitions.insert(m.partition());
    }
    assert_eq!(
        seen_ids,
        sent_ids.iter().cloned().collect::<BTreeSet<_>>(),
        "the 202s carried exactly the ids written"
    );
    assert!(
        partitions.len() > 1,
        "5 users spread over several partitions"
    );
    assert_eq!(
        high_watermarks(&topic).await?,
        12,
        "nothing more was written"
    );
    p.stop().await
}

#[tokio::test]
async fn every_error_path_answers_its_status_and_produces_nothing() -> anyhow::Result<()> {
    let mut cfg = config();
    cfg.limits.max_body_bytes = 2048;
    cfg.limits.max_batch_events = 5;
    let p = Producer::ready(cfg).await?;
    let http = client();
    let url = p.events_url("events");
    let one = event(1).to_string();
    let json_post = |url: &str| http.post(url).header("content-type", "application/json");
    let mut bad_gzip = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    bad_gzip.extend_from_slice(b"definitely not deflate");
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "no key",
            json_post(&url).body(one.clone()),
            401,
            "missing_key",
        ),
        (
            "wrong key",
            json_post(&url).bearer_auth("wrong").body(one.clone()),
            401,
            "bad_key",
        ),
        (
            "key for another stream",
            json_post(&url).bearer_auth(OTHER_KEY).body(one.clone()),
            403,
            "forbidden",
        ),
        (
            "unknown stream",
            json_post(&p.events_url("nope"))
                .bearer_auth(KEY)
                .body(one.clone()),
            404,
            "unknown_stream",
        ),
        (
            "text/plain",
            http.post(&url)
                .bearer_auth(KEY)
                .header("content-type", "text/plain")
                .body(one.clone()),
            415,
            "unsupported_content_type",
        ),
        (
            "brotli",
            json_post(&url)
                .bearer_auth(KEY)
                .header("content-encoding", "br")
                .body(one.clone()),
            415,
            "unsupported_encoding",
        ),
        (
            "empty body",
            json_post(&url).bearer_auth(KEY),
            400,
            "empty_body",
        ),
        (
            "empty batch",
            json_post(&url).bearer_auth(KEY).body("[]"),
            400,
            "empty_batch",
        ),
        (
            "not json",
            json_post(&url).bearer_auth(KEY).body("{\"event_type\":"),
            400,
            "bad_json",
        ),
        (
            "invalid utf-8",
            json_post(&url)
                .bearer_auth(KEY)
                .body(b"{\"event_type\":\"\xc3\x28\",\"occurred_at\":1}".to_vec()),
            400,
            "bad_json",
        ),
        (
            "bad gzip",
            json_post(&url)
                .bearer_auth(KEY)
                .header("content-encoding", "gzip")
                .body(bad_gzip),
            400,
            "bad_body",
        ),
        (
            "too large",
            json_post(&url).bearer_auth(KEY).body(" ".repeat(4096)),
            413,
            "body_too_large",
        ),
        (
            "too many events",
            json_post(&url)
                .bearer_auth(KEY)
                .body(Json::Array((0..6).map(|_| json!({})).collect()).to_string()),
            413,
            "batch_too_large",
        ),
        (
            "one bad event in a batch",
            json_post(&url)
                .bearer_auth(KEY)
                .body(json!([event(1), {"event_type": 5, "occurred_at": 1}]).to_string()),
            400,
            "invalid_events",
        ),
    ];
    for (what, req, status, code) in cases {
        let r = req.send().await.with_context(|| what.to_owned())?;
        assert_eq!(r.status().as_u16(), status, "{what}");
        let body: Json = r
            .json()
            .await
            .with_context(|| format!("{what}: JSON error body"))?;
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        if code == "invalid_events" {
            assert_eq!(
                body["details"],
                json!([{"index": 1, "pointer": "/event_type", "message": "expected a string, got number"}])
            );
        }
    }
    assert_eq!(
        high_watermarks(&p.topic("events")).await?,
        0,
        "no error path wrote anything"
    );
    assert_eq!(high_watermarks(&p.topic("other")).await?, 0);
    p.stop().await
}

#[tokio::test]
async fn broker_down_fails_readiness_and_never_answers_202() -> anyhow::Result<()> {
    // Nothing listens on a port we just released.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut cfg = config();
    cfg.kafka.bootstrap_servers = dead.to_string();
    cfg.produce.message_timeout_ms = 2000;
    cfg.limits.request_timeout_ms = 4000;
    let p = Producer::start(cfg).await?;
    let http = client();
    let r = http.get(p.url("/readyz")).send().await?;
    assert_eq!(r.status(), 503);
    let body = r.text().await?;
    assert!(
        body.lines()
            .any(|l| l.starts_with("kafka: ") && l != "kafka: ok"),
        "{body}"
    );

    let started = std::time::Instant::now();
    let batch = Json::Array((0..3).map(event).collect());
    let requests = (0..4).map(|_| {
        http.post(p.events_url("events"))
            .bearer_auth(KEY)
            .json(&batch)
            .send()
    });
    for r in futures::future::join_all(requests).await {
        let r = r?;
        assert_eq!(r.status(), 503, "never a 202 without the broker");
        assert!(r.headers().contains_key("retry-after"));
        let body: Json = r.json().await?;
        assert!(
            matches!(
                body["error"].as_str(),
                Some("broker_unavailable" | "timeout")
            ),
            "{body}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "requests fail within the delivery timeout, never hang"
    );
    p.stop().await
}

#[tokio::test]
async fn a_stopped_registry_leaves_the_producer_ready_and_ingesting() -> anyhow::Result<()> {
    // A registry of the test's own, so stopping it takes nothing from the other tests.
    let (mut registry, base) =
        sluice_tests::registry_node::start(&unique("_schemas_producer_readyz")).await?;
    let mut cfg = config();
    cfg.registry_url = base;
    let p = Producer::ready(cfg).await?;
    registry.kill().await?;

    let http = client();
    // The registry's state is a metric, seen within a few probes.
    sluice_tests::eventually("registry_up to read 0", Duration::from_secs(30), || {
        let http = http.clone();
        let url = p.url("/metrics");
        async move {
            let text = http.get(url).send().await?.text().await?;
            Ok(text
                .lines()
                .any(|l| l == "sluice_producer_schema_registry_up 0")
                .then_some(()))
        }
    })
    .await?;
    // Ingest never calls the registry after start-up: a registry rollout must not take producers out of service.
    let r = http.get(p.url("/readyz")).send().await?;
    let status = r.status();
    let body = r.text().await?;
    assert_eq!(status, 200, "{body}");
    let batch = Json::Array((0..3).map(event).collect());
    let r = http
        .post(p.events_url("events"))
        .bearer_auth(KEY)
        .json(&batch)
        .send()
        .await?;
    assert_eq!(r.status(), 202, "{}", r.text().await?);
    assert_eq!(high_watermarks(&p.topic("events")).await?, 3);
    p.stop().await
}

/// Reserved bytes in flight, keyed and unkeyed, from `/metrics`.
async fn bytes_in_flight(p: &Producer) -> anyhow::Result<i64> {
    let text = client().get(p.url("/metrics")).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("sluice_producer_in_flight_bytes ")
                || l.starts_with("sluice_producer_in_flight_unkeyed_bytes ")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
        .sum())
}

#[tokio::test]
async fn clients_without_a_key_in_their_headers_cannot_starve_those_with_one() -> anyhow::Result<()>
{
    use sluice_producer::config::StreamConfig;
    use tokio::io::AsyncWriteExt;
    let mut cfg = config();
    cfg.streams.insert(
        "segment".into(),
        StreamConfig {
            key_field: "message_id".into(),
            event_id_field: "message_id".into(),
            partitions: PARTITIONS,
            ..StreamConfig::new(&unique("producer_segment"), "segment")
        },
    );
    if let Some(k) = cfg.keys.get_mut(&producer_support::key_hash(KEY)) {
        k.streams.push("segment".into());
    }
    cfg.limits.max_body_bytes = 1 << 20;
    cfg.limits.max_in_flight_bytes = 2 << 20;
    cfg.limits.max_unkeyed_in_flight_bytes = 1 << 20;
    let p = Producer::ready(cfg).await?;

    // Twelve uploads of 500 KB with no key in their headers, trickled: they declare three times the whole budget.
    const DECLARED: usize = 500 * 1024;
    let addr = p.base.trim_start_matches("http://").to_owned();
    let mut tricklers = Vec::new();
    for _ in 0..12 {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(
            format!(
                "POST /v1/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {DECLARED}\r\n\r\n{{\"batch\":["
            )
            .as_bytes(),
        )
        .await?;
        tricklers.push(s);
    }
    // Two of them fit their own budget and hold it; the rest were refused.
    sluice_tests::eventually(
        "the keyless uploads admitted",
        Duration::from_secs(10),
        || async { Ok((bytes_in_flight(&p).await? >= 2 * DECLARED as i64).then_some(())) },
    )
    .await?;

    // An authenticated 160 KB batch on the native route is accepted meanwhile.
    let http = client();
    let batch = Json::Array(
        (0..40)
            .map(|i| {
                let mut e = event(i);
                e["properties"]["pad"] = json!("x".repeat(4000));
                e
            })
            .collect(),
    );
    let r = http
        .post(p.events_url("events"))
        .bearer_auth(KEY)
        .json(&batch)
        .send()
        .await?;
    assert_eq!(r.status(), 202, "{}", r.text().await?);
    // So is a Segment batch whose key is in its headers, as Segment's SDKs send it.
    let segment =
        json!({"batch": [{"type": "track", "event": "E", "userId": "u", "messageId": "m-1"}]});
    let r = http
        .post(p.url("/v1/batch"))
        .basic_auth(KEY, Some(""))
        .json(&segment)
        .send()
        .await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);
    // A wrong key in the headers is refused before its body is read.
    let r = http
        .post(p.url("/v1/batch"))
        .basic_auth("not-a-key", Some(""))
        .json(&segment)
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    drop(tricklers);
    p.stop().await
}

#[tokio::test]
async fn a_tenant_offered_ten_times_its_quota_gets_429s_and_the_other_none() -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const RATE: u64 = 500;
    let mut cfg = config();
    cfg.limits.max_batch_events = 50;
    cfg.limits.max_in_flight_events = 200;
    // Requests stay in flight a while, so a flood would hold the whole event budget without its share.
    cfg.produce.linger_ms = 50;
    if let Some(k) = cfg.keys.get_mut(&producer_support::key_hash(KEY)) {
        k.events_per_second = Some(RATE as u32);
    }
    let p = Arc::new(Producer::ready(cfg).await?);
    let http = client();
    let batch = |n: usize| Json::Array((0..n).map(event).collect());
    let started = std::time::Instant::now();
    let until = started + Duration::from_secs(3);

    // The noisy tenant: 16 connections sending 50-event batches as fast as they are answered.
    let (accepted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sample = Arc::new(std::sync::Mutex::new(None));
    let flood: Vec<_> = (0..16)
        .map(|_| {
            let (p, http, body) = (p.clone(), http.clone(), batch(50));
            let (accepted, refused, sample) = (accepted.clone(), refused.clone(), sample.clone());
            tokio::spawn(async move {
                while std::time::Instant::now() < until {
                    let r = http
                        .post(p.events_url("events"))
                        .bearer_auth(KEY)
                        .json(&body)
                        .send()
                        .await?;
                    match r.status().as_u16() {
                        202 => accepted.fetch_add(50, Ordering::Relaxed),
                        429 => {
                            let h = r.headers();
                            let got: Vec<Option<String>> = [
                                "retry-after",
                                "x-ratelimit-limit",
                                "x-ratelimit-remaining",
                                "x-ratelimit-reset",
                            ]
                            .iter()
                            .map(|n| h.get(*n).and_then(|v| v.to_str().ok()).map(str::to_owned))
                            .collect();
                            let body: Json = r.json().await?;
                            if let Ok(mut s) = sample.lock() {
                                s.get_or_insert((got, body));
                            }
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        other => anyhow::bail!("noisy tenant got {other}"),
                    };
                }
                anyhow::Ok(())
            })
        })
        .collect();
    // The quiet tenant meanwhile: one 10-event request at a time on its own stream.
    let mut quiet = Vec::new();
    while std::time::Instant::now() < until {
        let r = http
            .post(p.events_url("other"))
            .bearer_auth(OTHER_KEY)
            .json(&batch(10))
            .send()
            .await?;
        quiet.push(r.status().as_u16());
    }
    for f in flood {
        f.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        quiet.len() >= 10,
        "the quiet tenant kept going ({} requests)",
        quiet.len()
    );
    assert!(
        quiet.iter().all(|s| *s == 202),
        "the quiet tenant never waits on the noisy one: {quiet:?}"
    );
    let (accepted, refused) = (
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    assert!(refused > 0, "the noisy tenant was held to its quota");
    // A second's burst, then the rate.
    let most = RATE + (RATE as f64 * elapsed) as u64 + 50;
    assert!(
        accepted <= most,
        "accepted {accepted} events in {elapsed:.1} s, more than the {most} its quota allows"
    );
    let (headers, body) = sample
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .context("a 429 seen")?;
    assert_eq!(body["error"], "quota_exceeded", "{body}");
    assert!(
        headers.iter().all(Option::is_some),
        "Retry-After and X-RateLimit-*: {headers:?}"
    );
    assert_eq!(headers[2].as_deref(), Some("0"));
    Arc::try_unwrap(p)
        .map_err(|_| anyhow::anyhow!("producer still shared"))?
        .stop()
        .await
}

/// `sluice_producer_in_flight_events` from `/metrics`.
async fn events_in_flight(p: &Producer) -> anyhow::Result<i64> {
    let text = client().get(p.url("/metrics")).send().await?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix("sluice_producer_in_flight_events "))
        .and_then(|v| v.trim().parse().ok())
        .context("no in-flight gauge")
}

#[tokio::test]
async fn a_request_past_its_deadline_keeps_its_budget_until_librdkafka_lets_go()
-> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // No broker: records wait in librdkafka for its whole message timeout.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut cfg = config();
    cfg.kafka.bootstrap_servers = dead.to_string();
    cfg.produce.message_timeout_ms = 2500;
    cfg.limits.request_timeout_ms = 4000;
    let p = Producer::start(cfg).await?;

    // A body trickled over 3 s leaves the produce 1 s before the request's deadline, short of librdkafka's 2.5 s.
    let body = serde_json::to_vec(&Json::Array((0..5).map(event).collect()))?;
    let mut s = tokio::net::TcpStream::connect(p.base.trim_start_matches("http://")).await?;
    s.write_all(
        format!(
            "POST /v1/streams/events/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    let (first, rest) = body.split_at(body.len() / 2);
    s.write_all(first).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.write_all(rest).await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");
    // Answered, but librdkafka still holds the five events: the budget still counts them.
    assert_eq!(
        events_in_flight(&p).await?,
        5,
        "released while librdkafka holds the records"
    );
    sluice_tests::eventually(
        "the budget released once librdkafka let go",
        Duration::from_secs(10),
        || async { Ok((events_in_flight(&p).await? == 0).then_some(())) },
    )
    .await?;
    p.stop().await
}

#[tokio::test]
async fn openapi_document_matches_what_is_served() -> anyhow::Result<()> {
    let mut cfg = config();
    // The Segment API's stream, so its documented routes can answer too.
    cfg.streams.insert(
        "segment".into(),
        sluice_producer::config::StreamConfig {
            key_field: "message_id".into(),
            event_id_field: "message_id".into(),
            ..sluice_producer::config::StreamConfig::new(&unique("producer_segment"), "segment")
        },
    );
    for k in cfg.keys.values_mut() {
        k.streams.push("segment".into());
    }
    let p = Producer::ready(cfg).await?;
    let http = client();
    let doc: Json = http
        .get(p.url("/openapi.json"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().context("paths")?;
    assert!(!paths.is_empty());
    for (path, item) in paths {
        for (method, op) in item.as_object().context("path item")? {
            let url = p.url(&path.replace("{stream}", "events"));
            // Valid input for the route: an event, or a Segment message any of the six types accepts.
            let segment = json!({"userId": "u", "event": "E", "groupId": "g", "previousId": "p", "name": "n"});
            let body = match path.as_str() {
                "/v1/batch" => json!({"batch": [{"type": "track", "event": "E", "userId": "u"}]}),
                p if p.starts_with("/v1/streams/") => event(1),
                _ => segment,
            };
            let req = match method.as_str() {
                "get" => http.get(&url),
                "post" => http.post(&url).bearer_auth(KEY).json(&body),
                other => anyhow::bail!("unexpected method {other}"),
            };
            let status = req.send().await?.status();
            let documented = op["responses"].as_object().context("responses")?;
            assert!(
                documented.contains_key(status.as_str()),
                "{method} {path} answered {status}, not documented"
            );
            assert!(
                status.is_success(),
                "{method} {path} with valid input answered {status}"
            );
        }
    }
    // Nothing undocumented answers.
    assert_eq!(http.get(p.url("/v1/streams")).send().await?.status(), 404);
    assert_eq!(http.get(p.events_url("events")).send().await?.status(), 405);
    p.stop().await
}

#[tokio::test]
async fn incompatible_schema_is_a_clear_startup_error() -> anyhow::Result<()> {
    // The subject already holds a schema whose `event_type` is an int: ours (a string) cannot read that data.
    let topic = unique("producer_incompatible");
    let subject = format!("{topic}-value");
    let old = json!({"type": "record", "name": "Event", "namespace": "io.sluice",
        "fields": [{"name": "event_type", "type": "int"}]});
    // Registries differ in their default level (Confluent's and Sluice's BACKWARD, Apicurio's NONE): say it.
    let r = client()
        .put(format!("{}/config/{subject}", registry_url()))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({"compatibility": "BACKWARD"}))
        .send()
        .await?;
    assert!(
        r.status().is_success(),
        "setting the subject's compatibility: {}",
        r.status()
    );
    let r = client()
        .post(format!("{}/subjects/{subject}/versions", registry_url()))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({"schema": old.to_string()}))
        .send()
        .await?;
    assert!(
        r.status().is_success(),
        "registering the old schema: {}",
        r.status()
    );

    let mut cfg = config();
    cfg.streams.get_mut("events").context("stream")?.topic = topic;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        sluice_producer::serve(cfg, listener, tokio_util::sync::CancellationToken::new()),
    )
    .await
    .context("serve should fail fast")?;
    let err = result
        .err()
        .context("serve must refuse an incompatible schema")?
        .to_string();
    assert!(err.contains(&subject), "{err}");
    assert!(err.contains("409"), "{err}");
    Ok(())
}

#[test]
fn murmur2_matches_kafka() {
    // Vectors from Kafka's UtilsTest.
    for (input, want) in [
        ("21", -973_932_308i32),
        ("foobar", -790_332_482),
        ("a-little-bit-long-string", -985_981_536),
    ] {
        assert_eq!(
            producer_support::murmur2(input.as_bytes()) as i32,
            want,
            "{input}"
        );
    }
}
