//! The insert step: the pending rows of a topic in one INSERT, or one per partition on a server with insert
//! deduplication tokens; when ClickHouse refuses the data, the rows are split in halves until the ones at fault
//! stand alone, so good rows land and only bad ones are dead-lettered. A block refused for its shape (more
//! partitions than one INSERT may touch) is split the same way, and none of its rows is dead-lettered for it.
//!
//! A token names the rows of a block by their messages: `<topic>:<partition>:<first offset>-<last offset>:<digest>`,
//! the digest being of the messages' keys and values. The rows of a partition are sorted by offset and a block is
//! always a contiguous run of them, so the same messages give the same token whenever they are inserted again: a
//! retry after a timeout whose INSERT did land, or the same batch rebuilt after a crash; the messages of a topic
//! created again under the same name give another.

use std::hash::Hasher as _;

use rdkafka::message::Message;

use super::ports::RowSink;
use super::{Entry, Judged, Stream};
use crate::block_plan::BlockPlan;
use crate::offsets::Outcome;
use crate::rows::TopicRows;
use crate::sink::clickhouse::insert::RowRef;
use crate::verdict::{Failure, Verdict, is_block_shape, verdict};

/// Inserts the rows of `rows` whose entries are still pending, marking them inserted, and judging each row
/// ClickHouse refuses on its own. Returns the transient failure that stopped the work, if any (the rows not
/// reached stay pending).
pub(super) async fn isolating<S: RowSink>(
    sink: &S,
    stream: &Stream,
    rows: &TopicRows,
    entries: &mut [Entry],
    judged: &mut Judged,
    plan: &BlockPlan,
) -> Option<Failure> {
    let refs: Vec<RowRef<'_>> = rows
        .rows
        .iter()
        .filter(|(i, _)| entries.get(*i).is_some_and(Entry::is_pending))
        .map(|(i, range)| RowRef {
            index: *i,
            bytes: &rows.buf[range.clone()],
        })
        .collect();
    if refs.is_empty() {
        return None;
    }
    let columns = rows.reader.plan.insert_columns();
    let tokens = sink.capabilities().dedup_token;
    let routed = sink.routes_by_partition();
    let mut failed = None;
    for block in blocks(refs, entries, tokens || routed, plan) {
        if let Some(f) = bisecting(sink, stream, &columns, &block, tokens, entries, judged).await {
            // On a cluster the next block may be another shard's: one shard down does not hold back the others'
            // rows (nothing is committed until every row of the batch is in either way).
            if !routed {
                return Some(f);
            }
            failed.get_or_insert(f);
        }
    }
    failed
}

/// The rows in insert blocks: one block, or `per_partition` one per partition in offset order (for tokens, and
/// for a cluster's shards), cut further where `plan` says a block ends.
fn blocks<'a>(
    mut refs: Vec<RowRef<'a>>,
    entries: &[Entry],
    per_partition: bool,
    plan: &BlockPlan,
) -> Vec<Vec<RowRef<'a>>> {
    if !per_partition {
        return vec![refs];
    }
    let position = |r: &RowRef<'_>| {
        let m = &entries[r.index].received.message;
        (m.partition(), m.offset())
    };
    refs.sort_by_key(position);
    let mut out: Vec<Vec<RowRef<'a>>> = Vec::new();
    // The planned ends of the partition of the block being filled, looked up once per partition.
    let mut ends: &[i64] = &[];
    for r in refs {
        let (partition, offset) = position(&r);
        let prev = out.last().and_then(|b| b.last()).map(position);
        let same_block = match prev {
            Some((prev_partition, prev_offset)) if prev_partition == partition => {
                !ends.iter().any(|end| (prev_offset..offset).contains(end))
            }
            _ => {
                ends = plan.ends(entries[r.index].received.message.topic(), partition);
                false
            }
        };
        match out.last_mut() {
            Some(block) if same_block => block.push(r),
            _ => out.push(vec![r]),
        }
    }
    out
}

/// The token of a block: its topic, partition, first and last offsets, and a digest of its messages' keys and
/// values. The offsets alone would name the messages only within one life of the topic: a topic deleted and created
/// again numbers its messages from 0 once more, and the server would drop their first blocks as ones it already has.
/// With the digest only the very same messages are dropped, whose rows (the same event ids) were in the table anyway.
pub(super) fn token(entries: &[Entry], block: &[RowRef<'_>]) -> Option<String> {
    let first = &entries.get(block.first()?.index)?.received.message;
    let last = &entries.get(block.last()?.index)?.received.message;
    // XXH3 is a specified hash: the same messages give the same digest in every build and version of Sluice.
    let mut digest = twox_hash::XxHash3_64::new();
    for row in block {
        let message = &entries.get(row.index)?.received.message;
        for part in [message.key(), message.payload()] {
            let bytes = part.unwrap_or_default();
            digest.write_u64(bytes.len() as u64);
            digest.write(bytes);
        }
    }
    Some(format!(
        "{}:{}:{}-{}:{:016x}",
        first.topic(),
        first.partition(),
        first.offset(),
        last.offset(),
        digest.finish()
    ))
}

async fn bisecting<S: RowSink>(
    sink: &S,
    stream: &Stream,
    columns: &str,
    block: &[RowRef<'_>],
    tokens: bool,
    entries: &mut [Entry],
    judged: &mut Judged,
) -> Option<Failure> {
    // Depth-first, left half first, so rows land roughly in their original order.
    let mut stack: Vec<&[RowRef<'_>]> = vec![block];
    while let Some(part) = stack.pop() {
        if part.is_empty() {
            continue;
        }
        let token = if tokens { token(entries, part) } else { None };
        let partition = entries[part[0].index].received.message.partition();
        let failure = match sink
            .insert(&stream.table, columns, part, token.as_deref(), partition)
            .await
        {
            Ok(()) => {
                for row in part {
                    entries[row.index].outcome = Some(Outcome::Inserted);
                }
                continue;
            }
            Err(e) => Failure::Insert(e),
        };
        if part.len() > 1 && is_block_shape(&failure) {
            // Nothing of the block was written. Its halves are contiguous runs of offsets, so their tokens are as
            // deterministic as the block's: a rebuilt batch splits the same way and its landed halves are dropped.
            tracing::info!(table = %stream.table, rows = part.len(), error = %failure, "ClickHouse refused the block's shape; splitting it");
            let (left, right) = part.split_at(part.len() / 2);
            stack.push(right);
            stack.push(left);
            continue;
        }
        match verdict(&failure) {
            Verdict::Retry => return Some(failure),
            Verdict::DeadLetter(_) if part.len() == 1 => judged.judge(part[0].index, failure),
            Verdict::DeadLetter(_) => {
                tracing::info!(table = %stream.table, rows = part.len(), error = %failure, "ClickHouse rejected a batch; bisecting");
                let (left, right) = part.split_at(part.len() / 2);
                stack.push(right);
                stack.push(left);
            }
        }
    }
    None
}
