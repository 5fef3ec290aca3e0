//! What the dashboard shows, gathered once a second: the consumer's own metric families (the very numbers
//! `/metrics` serves, so the two never disagree), the producers' ingest counters scraped from their `/metrics`,
//! the group's partition owners, the last dead letters and the last rows landed.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::proto::{MetricFamily, MetricType};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Value as Json, json};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::sink::clickhouse::ClickHouseSink;

/// Every metric family of `registry` as JSON: counters and gauges as `{labels, value}`, histograms as
/// `{labels, count, sum, buckets: [[le, cumulative count]]}`.
pub fn families(registry: &prometheus::Registry) -> Json {
    let mut out = serde_json::Map::new();
    for family in registry.gather() {
        out.insert(family.name().to_owned(), family_json(&family));
    }
    Json::Object(out)
}

fn family_json(family: &MetricFamily) -> Json {
    let series: Vec<Json> = family
        .get_metric()
        .iter()
        .map(|m| {
            let labels: BTreeMap<&str, &str> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            match family.get_field_type() {
                MetricType::COUNTER => json!({"labels": labels, "value": m.get_counter().get_value()}),
                MetricType::GAUGE => json!({"labels": labels, "value": m.get_gauge().get_value()}),
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let buckets: Vec<Json> = h
                        .get_bucket()
                        .iter()
                        .map(|b| json!([b.upper_bound(), b.cumulative_count()]))
                        .collect();
                    json!({"labels": labels, "count": h.get_sample_count(), "sum": h.get_sample_sum(), "buckets": buckets})
                }
                _ => json!({"labels": labels}),
            }
        })
        .collect();
    Json::Array(series)
}

/// The counters of Prometheus text that the ingest panel needs: `(name, labels, value)` of every sample whose
/// name starts with `sluice_producer_`.
pub fn parse_producer_metrics(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with("sluice_producer_") {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some((s, v)) => (s, v),
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter_map(|pair| {
                let (k, v) = pair.split_once("=\"")?;
                Some((
                    k.trim_matches(',').to_owned(),
                    v.trim_end_matches('"').to_owned(),
                ))
            })
            .collect();
        out.push((name.to_owned(), labels, value));
    }
    out
}

/// Sums of the producers' accepted events by stream and requests by status.
pub async fn producers(http: &reqwest::Client, urls: &[String]) -> Json {
    let mut accepted: BTreeMap<String, f64> = BTreeMap::new();
    let mut statuses: BTreeMap<String, f64> = BTreeMap::new();
    let mut up = 0;
    for url in urls {
        let Ok(resp) = http.get(url).send().await else {
            continue;
        };
        let Ok(text) = resp.text().await else {
            continue;
        };
        up += 1;
        for (name, labels, value) in parse_producer_metrics(&text) {
            match name.as_str() {
                "sluice_producer_events_accepted_total" => {
                    let stream = labels.get("stream").cloned().unwrap_or_default();
                    *accepted.entry(stream).or_default() += value;
                }
                "sluice_producer_http_requests_total" => {
                    let route = labels.get("route").map(String::as_str).unwrap_or_default();
                    // Ingest routes only: probes and scrapes are not traffic.
                    if route.starts_with("/v1/") {
                        let status = labels.get("status").cloned().unwrap_or_default();
                        *statuses.entry(status).or_default() += value;
                    }
                }
                _ => {}
            }
        }
    }
    json!({"configured": urls.len(), "up": up, "accepted": accepted, "statuses": statuses})
}

/// Who in the group owns which partitions, from the group coordinator (classic protocol); `None` when the
/// coordinator does not describe the group that way (KIP-848 groups), and the caller shows its own assignment.
pub fn group_members(probe: &BaseConsumer, group: &str) -> Option<Json> {
    let list = probe
        .fetch_group_list(Some(group), Duration::from_secs(2))
        .ok()?;
    let info = list.groups().iter().find(|g| g.name() == group)?;
    if info.members().is_empty() {
        return None;
    }
    let members: Vec<Json> = info
        .members()
        .iter()
        .map(|m| {
            let partitions = m.assignment().map(decode_assignment).unwrap_or_default();
            json!({"member": m.client_id(), "host": m.client_host(), "partitions": partitions})
        })
        .collect();
    Some(Json::Array(members))
}

/// The `topic/partition`s of a classic consumer-protocol assignment: version (i16), then topics as (string with
/// an i16 length, i32 count of i32 partitions), then user data, which is ignored.
pub fn decode_assignment(bytes: &[u8]) -> Vec<String> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(head)
    }
    let mut b = bytes;
    let mut out = Vec::new();
    let parse = |b: &mut &[u8], out: &mut Vec<String>| -> Option<()> {
        take(b, 2)?;
        let topics = i32::from_be_bytes(take(b, 4)?.try_into().ok()?);
        for _ in 0..topics.max(0) {
            let len = i16::from_be_bytes(take(b, 2)?.try_into().ok()?);
            let topic = String::from_utf8_lossy(take(b, usize::try_from(len).ok()?)?).into_owned();
            let n = i32::from_be_bytes(take(b, 4)?.try_into().ok()?);
            for _ in 0..n.max(0) {
                let p = i32::from_be_bytes(take(b, 4)?.try_into().ok()?);
                out.push(format!("{topic}/{p}"));
            }
        }
        Some(())
    };
    let _ = parse(&mut b, &mut out);
    out
}

/// The last rows landed in each stream's table: only its sort-key and partition columns (tenant, type, id, time).
pub async fn tail(sink: &ClickHouseSink, config: &Config) -> Json {
    let mut out = serde_json::Map::new();
    for s in &config.streams {
        let table = s.qualified_table(&config.clickhouse.database);
        let mut columns: Vec<String> = s.order_by.clone();
        let time = s.partition_field().map(str::to_owned);
        if let Some(t) = &time
            && !columns.contains(t)
        {
            columns.push(t.clone());
        }
        let order = time.unwrap_or_else(|| columns.last().cloned().unwrap_or_default());
        let rows = sink
            .recent_rows(&table, &columns, &order, 5)
            .await
            .unwrap_or_default();
        out.insert(table, Json::Array(rows));
    }
    Json::Object(out)
}

/// The last dead letters of every replica and sink, newest first, from the dead-letter table, each with the command
/// line that replays exactly that letter; `None` when the table is off, unreadable or still empty (then the
/// replica's own recent letters are shown, [`letters`]).
pub async fn table_letters(sink: &ClickHouseSink, config: &Config) -> Option<Json> {
    let d = &config.dead_letters;
    if !d.enabled || config.clickhouse.cluster.is_some() {
        return None;
    }
    let table = d.qualified(&config.clickhouse.database);
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Letter {
        class: String,
        source_topic: String,
        source_partition: i32,
        source_offset: i64,
        error: String,
        at_ms: i64,
        dlq_topic: String,
        dlq_partition: i32,
        dlq_offset: i64,
    }
    let rows: Vec<Letter> = sink
        .node()
        .await
        .ok()?
        .query(&format!(
            "SELECT class, source_topic, source_partition, source_offset, substring(error, 1, 300), \
             toInt64(toUInt32(dead_lettered_at)) * 1000, dlq_topic, dlq_partition, dlq_offset \
             FROM {table} FINAL ORDER BY dead_lettered_at DESC, dlq_offset DESC LIMIT 20"
        ))
        .fetch_all()
        .await
        .ok()?;
    if rows.is_empty() {
        return None;
    }
    let list: Vec<Json> = rows
        .into_iter()
        .map(|l| {
            let replay = format!(
                "sluice-consumer dlq replay --topic {} --partition {} --offset {}",
                l.dlq_topic, l.dlq_partition, l.dlq_offset
            );
            json!({"class": l.class, "topic": l.source_topic, "partition": l.source_partition,
                "offset": l.source_offset, "message": l.error, "at_ms": l.at_ms, "replay": replay})
        })
        .collect();
    Some(Json::Array(list))
}

/// The dead letters this replica wrote since it started, newest first, each with the command line that replays it.
pub fn letters(metrics: &Metrics, config: &Config) -> Json {
    let dlq_of = |topic: &str| {
        config
            .streams
            .iter()
            .find(|s| s.topic == topic)
            .map(|s| s.dlq_topic())
            .unwrap_or_else(|| format!("{topic}.dlq"))
    };
    let list: Vec<Json> = metrics
        .recent_letters()
        .into_iter()
        .rev()
        .map(|l| {
            let replay = format!(
                "sluice-consumer dlq replay --topic {} --source-topic {} --partition {} --offset {}",
                dlq_of(&l.topic),
                l.topic,
                l.partition,
                l.offset
            );
            json!({"class": l.class, "topic": l.topic, "partition": l.partition, "offset": l.offset,
                "message": l.message, "at_ms": l.at_ms, "replay": replay})
        })
        .collect();
    Json::Array(list)
}

/// The partitions waiting on a failure, longest first, each with why and the command that dead-letters its oldest
/// held message by hand if the failure will not clear.
pub fn held(metrics: &Metrics, config: &Config) -> Json {
    let mut held = metrics.held_shown();
    held.sort_by(|a, b| b.waiting_s.total_cmp(&a.waiting_s));
    let list: Vec<Json> = held
        .into_iter()
        .map(|h| {
            let skip = format!(
                "sluice-consumer dlq skip --consumer http://{} --topic {} --partition {} --offset {} --reason '…'",
                config.listen, h.topic, h.partition, h.first_offset
            );
            json!({"topic": h.topic, "partition": h.partition, "first_offset": h.first_offset,
                "messages": h.messages, "waiting_s": h.waiting_s, "reason": h.reason, "error": h.error,
                "skip": skip})
        })
        .collect();
    Json::Array(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_counters_are_read_from_prometheus_text() {
        let text = "# HELP x\nsluice_producer_events_accepted_total{stream=\"events\"} 42\n\
                    sluice_producer_http_requests_total{route=\"/v1/batch\",status=\"429\"} 3\n\
                    other_metric 9\n";
        let parsed = parse_producer_metrics(text);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].0, "sluice_producer_events_accepted_total");
        assert_eq!(parsed[0].1["stream"], "events");
        assert_eq!(parsed[0].2, 42.0);
        assert_eq!(parsed[1].1["status"], "429");
        assert_eq!(parsed[1].1["route"], "/v1/batch");
    }

    #[test]
    fn classic_assignments_decode() {
        // version 0, one topic "t" with partitions 0 and 3, no user data.
        let bytes = [
            0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0,
        ];
        assert_eq!(decode_assignment(&bytes), ["t/0", "t/3"]);
        assert!(decode_assignment(&[1, 2]).is_empty());
    }
}
