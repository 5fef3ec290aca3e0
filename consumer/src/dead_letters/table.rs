//! The dead-letter table: its DDL and one RowBinary row per letter, read from the letter's Kafka record (the DLQ
//! topic stays the source of truth; the table is a queryable copy of it).
//!
//! Keyed on the poison message's own place (source topic, partition, offset) and the group that gave up on it, in a
//! ReplacingMergeTree: a batch copied again after a crash collapses in `FINAL`, and so does a second letter for the
//! same message (a consumer killed after the DLQ acknowledged a letter but before it committed the source offset
//! writes the letter again on restart). A letter without Sluice's headers names its own place as its source.
//! Columns every supported server accepts (18.16 included); the TTL only where the server has TTLs (current
//! servers).

use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};
use sluice_schemas::clickhouse::{Capabilities, write_bytes, write_varint};

use crate::dlq::{self, header};

/// The columns, in the order [`row`] writes them.
pub const COLUMNS: &str = "dlq_topic, dlq_partition, dlq_offset, dead_lettered_at, class, error, \
    source_topic, source_partition, source_offset, source_timestamp_ms, consumer_group, attempts, schema_id, \
    key, payload, payload_size, payload_cut, header_keys, header_values";

/// `CREATE TABLE IF NOT EXISTS` for `table` on a server that accepts `caps`, rows kept `ttl_days` (0: forever).
pub fn ddl(table: &str, caps: Capabilities, ttl_days: u32) -> String {
    let ttl = if caps.datetime64 && ttl_days > 0 {
        format!("\nTTL dead_lettered_at + INTERVAL {ttl_days} DAY")
    } else {
        String::new()
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n\
         dlq_topic String, dlq_partition Int32, dlq_offset Int64,\n\
         dead_lettered_at DateTime,\n\
         class String, error String,\n\
         source_topic String, source_partition Int32, source_offset Int64, source_timestamp_ms Int64,\n\
         consumer_group String, attempts UInt32,\n\
         schema_id Nullable(UInt32),\n\
         key String, payload String, payload_size UInt64, payload_cut UInt8,\n\
         header_keys Array(String), header_values Array(String)\n\
         ) ENGINE = ReplacingMergeTree\n\
         PARTITION BY toYYYYMM(dead_lettered_at)\n\
         ORDER BY (source_topic, source_partition, source_offset, consumer_group){ttl}"
    )
}

/// Appends `letter`'s row to `out`.
pub fn row(letter: &OwnedMessage, out: &mut Vec<u8>) {
    let text = |name: &str| dlq::header_str(letter, name).unwrap_or_default();
    let number = |name: &str| text(name).parse::<i64>().ok();
    write_bytes(letter.topic().as_bytes(), out);
    out.extend_from_slice(&letter.partition().to_le_bytes());
    out.extend_from_slice(&letter.offset().to_le_bytes());
    // When the letter was written: its Kafka timestamp, in seconds (DateTime holds 1970..2106).
    let at = letter.timestamp().to_millis().unwrap_or(0).max(0) / 1000;
    out.extend_from_slice(&(at.min(i64::from(u32::MAX)) as u32).to_le_bytes());
    write_bytes(text(header::CLASS).as_bytes(), out);
    write_bytes(text(header::MESSAGE).as_bytes(), out);
    let source = match (
        dlq::header_str(letter, header::TOPIC),
        number(header::PARTITION).and_then(|p| i32::try_from(p).ok()),
        number(header::OFFSET),
    ) {
        (Some(t), Some(p), Some(o)) => (t, p, o),
        _ => (letter.topic(), letter.partition(), letter.offset()),
    };
    write_bytes(source.0.as_bytes(), out);
    out.extend_from_slice(&source.1.to_le_bytes());
    out.extend_from_slice(&source.2.to_le_bytes());
    out.extend_from_slice(&number(header::TIMESTAMP).unwrap_or(0).to_le_bytes());
    write_bytes(text(header::GROUP).as_bytes(), out);
    let attempts = number(header::ATTEMPTS)
        .unwrap_or(1)
        .clamp(0, i64::from(u32::MAX)) as u32;
    out.extend_from_slice(&attempts.to_le_bytes());
    let payload = letter.payload().unwrap_or_default();
    // Confluent framing (magic byte 0, then a big-endian id) names the writer schema; anything else has none.
    match payload {
        [0, a, b, c, d, ..] => {
            out.push(0);
            out.extend_from_slice(&u32::from_be_bytes([*a, *b, *c, *d]).to_le_bytes());
        }
        _ => out.push(1),
    }
    write_bytes(letter.key().unwrap_or_default(), out);
    write_bytes(payload, out);
    let cut = text(header::CUT) == "true";
    let size = if cut {
        number(header::SIZE).unwrap_or(0).max(0) as u64
    } else {
        payload.len() as u64
    };
    out.extend_from_slice(&size.to_le_bytes());
    out.push(u8::from(cut));
    // The message's own headers, in order (Kafka allows the same name twice), without Sluice's.
    let own: Vec<(&str, &[u8])> = letter
        .headers()
        .map(|h| {
            h.iter()
                .filter(|h| !header::ALL.contains(&h.key))
                .map(|h| (h.key, h.value.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    write_varint(own.len() as u64, out);
    for (k, _) in &own {
        write_bytes(k.as_bytes(), out);
    }
    write_varint(own.len() as u64, out);
    for (_, v) in &own {
        write_bytes(v, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders};

    #[test]
    fn the_ttl_is_only_asked_of_servers_that_have_ttls() {
        let legacy = ddl("sluice.dead_letters", Capabilities::LEGACY, 30);
        assert!(!legacy.contains("TTL"), "{legacy}");
        let current = Capabilities::of_version_text("26.9.2.1").expect("caps");
        let ddl = ddl("sluice.dead_letters", current, 30);
        assert!(
            ddl.ends_with("TTL dead_lettered_at + INTERVAL 30 DAY"),
            "{ddl}"
        );
        assert!(
            ddl.contains(
                "ORDER BY (source_topic, source_partition, source_offset, consumer_group)"
            )
        );
    }

    #[test]
    fn a_framed_letter_names_its_schema_and_keeps_its_own_headers() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: header::CLASS,
                value: Some("undecodable"),
            })
            .insert(Header {
                key: header::TOPIC,
                value: Some("events"),
            })
            .insert(Header {
                key: header::PARTITION,
                value: Some("2"),
            })
            .insert(Header {
                key: header::OFFSET,
                value: Some("41"),
            })
            .insert(Header {
                key: "trace",
                value: Some("t-1"),
            });
        let letter = OwnedMessage::new(
            Some(vec![0, 0, 0, 0, 7, 1, 2]),
            Some(b"acme".to_vec()),
            "events.dlq".into(),
            Timestamp::CreateTime(1_800_000_000_000),
            0,
            9,
            Some(headers),
        );
        let mut out = Vec::new();
        row(&letter, &mut out);
        let find = |needle: &[u8]| out.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"\x0aevents.dlq"));
        assert!(find(b"\x0bundecodable"));
        assert!(find(
            &[b"\x06events", &2i32.to_le_bytes()[..], &41i64.to_le_bytes()].concat()
        ));
        // Not null, schema id 7.
        assert!(find(&[0, 7, 0, 0, 0]));
        // One own header: "trace" = "t-1".
        assert!(find(b"\x01\x05trace\x01\x03t-1"));
    }
}
