//! `sluice-consumer dlq list | inspect | replay`: read a DLQ topic from its start to its current end, filter by
//! error class and source topic, and print or re-send the matching letters.
//!
//! Replay produces each letter's original key, value and headers back to its source topic, carrying the attempt
//! count, so a message that fails again lands in the DLQ with `sluice.attempts` one higher. The DLQ itself is
//! never modified: replaying twice sends twice (the table's ReplacingMergeTree collapses the copies by event id).

use std::io::Write;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sluice_runtime::kafka::KafkaSettings;

use super::{ErrorClass, header, header_str, original_headers, previous_attempts};
use crate::error::Error;

/// Which letters a command applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only letters of this error class.
    pub class: Option<ErrorClass>,
    /// Only letters read from this source topic.
    pub source_topic: Option<String>,
    /// Only this DLQ partition.
    pub partition: Option<i32>,
    /// Only this DLQ offset.
    pub offset: Option<i64>,
    /// Only these letters (DLQ topic, partition, offset): what a SQL condition on the dead-letter table selected.
    pub letters: Option<std::collections::HashSet<(String, i32, i64)>>,
}

impl Filter {
    /// Whether `msg` (read from the DLQ) matches.
    pub fn matches(&self, msg: &OwnedMessage) -> bool {
        self.class
            .is_none_or(|c| header_str(msg, header::CLASS) == Some(c.as_str()))
            && self
                .source_topic
                .as_deref()
                .is_none_or(|t| header_str(msg, header::TOPIC) == Some(t))
            && self.partition.is_none_or(|p| msg.partition() == p)
            && self.offset.is_none_or(|o| msg.offset() == o)
            && self.letters.as_ref().is_none_or(|l| {
                l.contains(&(msg.topic().to_owned(), msg.partition(), msg.offset()))
            })
    }
}

/// Counts a command prints at the end (and returns, for tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Letters read from the DLQ.
    pub scanned: usize,
    /// Letters that matched the filter.
    pub matched: usize,
    /// Letters re-sent to their source topic.
    pub replayed: usize,
    /// Letters that could not be re-sent.
    pub failed: usize,
}

/// Every letter currently in `topic`, in partition then offset order.
pub async fn read_all(settings: &KafkaSettings, topic: &str) -> Result<Vec<OwnedMessage>, Error> {
    let settings = settings.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_all_blocking(&settings, &topic))
        .await
        .map_err(|e| Error::Config(format!("reader task failed: {e}")))?
}

fn read_all_blocking(settings: &KafkaSettings, topic: &str) -> Result<Vec<OwnedMessage>, Error> {
    let timeout = Duration::from_secs(10);
    let consumer: BaseConsumer = settings
        .client_config()
        .set("group.id", "sluice-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
            ends.push((p, high));
        }
    }
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let mut remaining: std::collections::HashMap<i32, i64> = ends.into_iter().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !remaining.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(Error::Config(format!(
                "timed out reading {topic}; {} partitions unfinished",
                remaining.len()
            )));
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let p = m.partition();
                let next = m.offset() + 1;
                if remaining.get(&p).is_some_and(|high| m.offset() < *high) {
                    out.push(m.detach());
                }
                if remaining.get(&p).is_some_and(|high| next >= *high) {
                    remaining.remove(&p);
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    out.sort_by_key(|m| (m.partition(), m.offset()));
    Ok(out)
}

fn show_bytes(b: Option<&[u8]>) -> String {
    match b {
        None => "<null>".into(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) if s.chars().all(|c| !c.is_control() || c == '\n' || c == '\t') => {
                format!("{s:?}")
            }
            _ => {
                let hex: String = b.iter().take(64).map(|x| format!("{x:02x}")).collect();
                let more = if b.len() > 64 { "…" } else { "" };
                format!("0x{hex}{more} ({} bytes)", b.len())
            }
        },
    }
}

fn one_line(msg: &OwnedMessage) -> String {
    let h = |k| header_str(msg, k).unwrap_or("?");
    format!(
        "{}/{}@{} class={} source={}/{}@{} attempts={} key={} error={:?}",
        msg.topic(),
        msg.partition(),
        msg.offset(),
        h(header::CLASS),
        h(header::TOPIC),
        h(header::PARTITION),
        h(header::OFFSET),
        h(header::ATTEMPTS),
        show_bytes(msg.key()),
        h(header::MESSAGE),
    )
}

/// Prints one line per matching letter.
pub async fn list(
    settings: &KafkaSettings,
    topic: &str,
    filter: &Filter,
    out: &mut dyn Write,
) -> Result<Summary, Error> {
    let all = read_all(settings, topic).await?;
    let mut summary = Summary {
        scanned: all.len(),
        ..Summary::default()
    };
    for msg in all.iter().filter(|m| filter.matches(m)) {
        summary.matched += 1;
        writeln!(out, "{}", one_line(msg))?;
    }
    writeln!(
        out,
        "{topic}: {} letters, {} matching",
        summary.scanned, summary.matched
    )?;
    Ok(summary)
}

/// Prints every header, the key and the value of each matching letter.
pub async fn inspect(
    settings: &KafkaSettings,
    topic: &str,
    filter: &Filter,
    out: &mut dyn Write,
) -> Result<Summary, Error> {
    let all = read_all(settings, topic).await?;
    let mut summary = Summary {
        scanned: all.len(),
        ..Summary::default()
    };
    for msg in all.iter().filter(|m| filter.matches(m)) {
        summary.matched += 1;
        writeln!(
            out,
            "== {}/{}@{}",
            msg.topic(),
            msg.partition(),
            msg.offset()
        )?;
        if let Some(headers) = msg.headers() {
            for h in headers.iter() {
                writeln!(out, "  header {} = {}", h.key, show_bytes(h.value))?;
            }
        }
        writeln!(out, "  key    = {}", show_bytes(msg.key()))?;
        let framed = msg
            .payload()
            .and_then(|v| sluice_schemas::wire::unframe(v).ok())
            .map(|(id, body)| (id, body.len()));
        if let Some((id, len)) = framed {
            writeln!(
                out,
                "  value  = Confluent-framed, schema id {id}, {len} Avro bytes"
            )?;
        }
        writeln!(out, "  value  = {}", show_bytes(msg.payload()))?;
    }
    writeln!(
        out,
        "{topic}: {} letters, {} matching",
        summary.scanned, summary.matched
    )?;
    Ok(summary)
}

/// Re-sends each matching letter to its source topic, printing progress and a summary.
pub async fn replay(
    settings: &KafkaSettings,
    topic: &str,
    filter: &Filter,
    out: &mut dyn Write,
) -> Result<Summary, Error> {
    let all = read_all(settings, topic).await?;
    let matching: Vec<&OwnedMessage> = all.iter().filter(|m| filter.matches(m)).collect();
    let mut summary = Summary {
        scanned: all.len(),
        matched: matching.len(),
        ..Summary::default()
    };
    writeln!(
        out,
        "{topic}: {} letters, {} matching; replaying",
        summary.scanned, summary.matched
    )?;
    let producer: FutureProducer = super::producer_config(settings)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?;
    for (n, msg) in matching.iter().enumerate() {
        let Some(source) = header_str(msg, header::TOPIC) else {
            summary.failed += 1;
            writeln!(
                out,
                "  skip {}/{}@{}: no {} header",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                header::TOPIC
            )?;
            continue;
        };
        if super::is_cut(msg) {
            summary.failed += 1;
            writeln!(
                out,
                "  skip {}/{}@{}: cut for its size, no value to replay ({} bytes, sha256 {}; the source is at {}/{}@{} while its retention lasts)",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                header_str(msg, header::SIZE).unwrap_or("?"),
                header_str(msg, header::SHA256).unwrap_or("?"),
                source,
                header_str(msg, header::PARTITION).unwrap_or("?"),
                header_str(msg, header::OFFSET).unwrap_or("?"),
            )?;
            continue;
        }
        let attempts = previous_attempts(msg).to_string();
        let headers = original_headers(msg).insert(Header {
            key: header::ATTEMPTS,
            value: Some(attempts.as_str()),
        });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(source).headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(v) = msg.payload() {
            record = record.payload(v);
        }
        match producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => summary.replayed += 1,
            Err((e, _)) => {
                summary.failed += 1;
                writeln!(
                    out,
                    "  failed {}/{}@{}: {e}",
                    msg.topic(),
                    msg.partition(),
                    msg.offset()
                )?;
            }
        }
        if (n + 1) % 100 == 0 || n + 1 == matching.len() {
            writeln!(out, "  progress: {}/{} sent", n + 1, matching.len())?;
        }
    }
    writeln!(
        out,
        "replayed {} of {} matching letters ({} failed, {} scanned)",
        summary.replayed, summary.matched, summary.failed, summary.scanned
    )?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedHeaders;

    fn letter(class: &str, source: &str, partition: i32, offset: i64) -> OwnedMessage {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: header::CLASS,
                value: Some(class),
            })
            .insert(Header {
                key: header::TOPIC,
                value: Some(source),
            });
        OwnedMessage::new(
            None,
            None,
            "t.dlq".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            Some(headers),
        )
    }

    #[test]
    fn filters_combine() {
        let l = letter("rejected", "events", 0, 7);
        assert!(Filter::default().matches(&l));
        assert!(
            Filter {
                class: Some(ErrorClass::Rejected),
                ..Filter::default()
            }
            .matches(&l)
        );
        assert!(
            !Filter {
                class: Some(ErrorClass::Undecodable),
                ..Filter::default()
            }
            .matches(&l)
        );
        assert!(
            Filter {
                source_topic: Some("events".into()),
                offset: Some(7),
                ..Filter::default()
            }
            .matches(&l)
        );
        assert!(
            !Filter {
                source_topic: Some("other".into()),
                ..Filter::default()
            }
            .matches(&l)
        );
        assert!(
            !Filter {
                partition: Some(1),
                ..Filter::default()
            }
            .matches(&l)
        );
    }

    #[test]
    fn bytes_show_as_text_or_hex() {
        assert_eq!(show_bytes(None), "<null>");
        assert_eq!(show_bytes(Some(b"abc")), "\"abc\"");
        assert_eq!(show_bytes(Some(&[0, 1, 0xff])), "0x0001ff (3 bytes)");
    }
}
