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
///
/// A block refused with an error ClickHouse calls transient is the table's outage when nothing of the table lands:
/// after a second block refused with nothing landed, the rest wait. A block the server refused (it answered, with
/// an exception) is probed in halves (`Step::probe`): a row that keeps failing on its own while the rows beside it
/// land is the row's doing, and after [`STRIKES`] attempts it is dead-lettered.
pub(super) async fn isolating<S: RowSink>(
    sink: &S,
    stream: &Stream,
    rows: &TopicRows,
    entries: &mut [Entry],
    judged: &mut Judged,
    plan: &BlockPlan,
    strikes: &mut Strikes,
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
    let indices: Vec<usize> = refs.iter().map(|r| r.index).collect();
    let columns = rows.reader.plan.insert_columns();
    let tokens = sink.capabilities().dedup_token;
    let routed = sink.routes_by_partition();
    let step = Step {
        sink,
        stream,
        columns: &columns,
        tokens,
    };
    let mut failed: Option<Failure> = None;
    let mut landed_any = false;
    let mut refused_blocks = Vec::new();
    let mut refused_with_nothing_landed = 0;
    for block in blocks(refs, entries, tokens || routed, plan) {
        // On a cluster the next block may be another shard's: one shard down does not hold back the others' rows.
        // On one server, two refused blocks and nothing landed is the table's outage: the rest wait for it.
        if !routed && !landed_any && refused_with_nothing_landed >= 2 {
            break;
        }
        let outcome = step.bisecting(&block, entries, judged).await;
        landed_any |= outcome.landed;
        if let Some((f, part)) = outcome.stopped {
            if !landed_any {
                refused_with_nothing_landed += 1;
            }
            if let Some(text) = refused_by_the_server(&f) {
                let refused =
                    Failure::Insert(clickhouse::error::Error::BadResponse(text.to_owned()));
                refused_blocks.push((refused, part));
            }
            failed.get_or_insert(f);
        }
    }
    // With nothing of the table landed only the first refused block is probed, and only one level unless a half
    // lands: an outage costs two more inserts per attempt, not a descent.
    let probes = if landed_any { refused_blocks.len() } else { 1 };
    for part in refused_blocks.into_iter().take(probes) {
        step.probe(part, entries, judged, strikes, landed_any).await;
    }
    // What the probes did not settle waits for the next attempt; rows they dead-lettered do not.
    let lettered: std::collections::HashSet<usize> =
        judged.letters.iter().map(|(i, _)| *i).collect();
    let pending = indices
        .iter()
        .any(|i| entries[*i].is_pending() && !lettered.contains(i));
    failed.filter(|_| pending)
}

/// The ClickHouse error code of an insert failure, if the server answered with one.
fn failure_code(f: &Failure) -> Option<u32> {
    match f {
        Failure::Insert(clickhouse::error::Error::BadResponse(text)) => {
            crate::verdict::clickhouse_code(text)
        }
        _ => None,
    }
}

/// What ClickHouse answered, when it answered with an exception it calls transient: only those can be a row's
/// doing. Connection errors and timeouts are the server's or the network's.
fn refused_by_the_server(f: &Failure) -> Option<&str> {
    match f {
        Failure::Insert(clickhouse::error::Error::BadResponse(text))
            if verdict(f) == Verdict::Retry =>
        {
            Some(text)
        }
        _ => None,
    }
}

/// How many attempts a row may be refused on its own, with an error ClickHouse calls transient while the row beside
/// it lands, before it is dead-lettered as [`crate::dlq::ErrorClass::Persistent`].
pub const STRIKES: u32 = 3;

/// Rows refused on their own so far, by topic, partition and offset: how often, and with which ClickHouse code.
#[derive(Debug, Default)]
pub struct Strikes(std::collections::HashMap<(String, i32, i64), (u32, Option<u32>)>);

impl Strikes {
    fn key(entry: &Entry) -> (String, i32, i64) {
        let m = &entry.received.message;
        (m.topic().to_owned(), m.partition(), m.offset())
    }

    /// Counts one more refusal of `entry` with `code`; returns how many it has had. A row with no strike yet gets
    /// its first only `beside_landed`; a suspect gets more whenever it is refused with the same code again, alone
    /// (its neighbours have landed by then).
    fn strike(&mut self, entry: &Entry, code: Option<u32>, beside_landed: bool) -> u32 {
        let key = Self::key(entry);
        match self.0.get_mut(&key) {
            Some((n, seen)) if *seen == code => {
                *n += 1;
                *n
            }
            Some((n, _)) => *n,
            None if beside_landed => {
                self.0.insert(key, (1, code));
                1
            }
            None => 0,
        }
    }

    /// Forgets the rows that are no longer pending in `entries`.
    pub fn forget_settled(&mut self, entries: &[Entry]) {
        if self.0.is_empty() {
            return;
        }
        let pending: std::collections::HashSet<(&str, i32, i64)> = entries
            .iter()
            .filter(|e| e.is_pending())
            .map(|e| {
                let m = &e.received.message;
                (m.topic(), m.partition(), m.offset())
            })
            .collect();
        self.0
            .retain(|(t, p, o), _| pending.contains(&(t.as_str(), *p, *o)));
    }
}

/// What one bisecting insert of a part did.
struct Bisected<'a> {
    /// Some of its rows landed.
    landed: bool,
    /// The transient failure that stopped it, and the part it stopped on (its rows stay pending).
    stopped: Option<(Failure, Vec<RowRef<'a>>)>,
}

/// One stream's insert: where, which columns, and whether blocks carry tokens.
struct Step<'s, S> {
    sink: &'s S,
    stream: &'s Stream,
    columns: &'s str,
    tokens: bool,
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

impl<S: RowSink> Step<'_, S> {
    /// Inserts `block`, splitting it in halves while ClickHouse refuses it as bad data or for its shape, so good rows
    /// land and only bad ones are judged; stops at the first transient failure.
    async fn bisecting<'a>(
        &self,
        block: &[RowRef<'a>],
        entries: &mut [Entry],
        judged: &mut Judged,
    ) -> Bisected<'a> {
        let (sink, stream, columns, tokens) = (self.sink, self.stream, self.columns, self.tokens);
        let mut landed = false;
        // Depth-first, left half first, so rows land roughly in their original order.
        let mut stack: Vec<&[RowRef<'a>]> = vec![block];
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
                    landed = true;
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
                Verdict::Retry => {
                    return Bisected {
                        landed,
                        stopped: Some((failure, part.to_vec())),
                    };
                }
                Verdict::DeadLetter(_) if part.len() == 1 => judged.judge(part[0].index, failure),
                Verdict::DeadLetter(_) => {
                    tracing::info!(table = %stream.table, rows = part.len(), error = %failure, "ClickHouse rejected a batch; bisecting");
                    let (left, right) = part.split_at(part.len() / 2);
                    stack.push(right);
                    stack.push(left);
                }
            }
        }
        Bisected {
            landed,
            stopped: None,
        }
    }

    /// A block ClickHouse refused with a transient error: its halves are tried. Where one half lands and the other
    /// is refused, the refused one is followed down; a single row refused while the half beside it landed gets a
    /// strike, and after [`STRIKES`] attempts it is dead-lettered. Where both halves are refused the server may be the
    /// cause: without `evidence` (rows of the table landing) the probe stops there; with it the left half is
    /// followed (the right waits) and no row at the bottom is blamed. At most two inserts per level.
    async fn probe<'a>(
        &self,
        (refused, mut part): (Failure, Vec<RowRef<'a>>),
        entries: &mut [Entry],
        judged: &mut Judged,
        strikes: &mut Strikes,
        mut evidence: bool,
    ) {
        let mut beside_landed = false;
        let mut last: Option<Failure> = Some(refused);
        loop {
            if part.len() == 1 {
                let i = part[0].index;
                let code = last.as_ref().and_then(failure_code);
                let n = if entries[i].is_pending() {
                    strikes.strike(&entries[i], code, beside_landed)
                } else {
                    0
                };
                if n > 0 {
                    let why = last.as_ref().map(ToString::to_string).unwrap_or_default();
                    tracing::warn!(table = %self.stream.table, strikes = n, of = STRIKES, error = %why, "a row refused on its own while the rows beside it landed");
                    if n >= STRIKES {
                        judged.letters.push((
                            i,
                            crate::dlq::Letter {
                                class: crate::dlq::ErrorClass::Persistent,
                                message: format!(
                                    "refused on its own in {n} attempts while the rows beside it landed: {why}"
                                ),
                            },
                        ));
                    }
                }
                return;
            }
            let (left, right) = part.split_at(part.len() / 2);
            let (left, right) = (left.to_vec(), right.to_vec());
            let l = self.bisecting(&left, entries, judged).await;
            let r = self.bisecting(&right, entries, judged).await;
            match (l.stopped, r.stopped) {
                (None, None) => return,
                (Some((f, stuck)), None) | (None, Some((f, stuck))) => {
                    beside_landed = true;
                    evidence = true;
                    last = Some(f);
                    part = stuck;
                }
                (Some(_), Some(_)) if !evidence => return,
                (Some((f, stuck)), Some(_)) => {
                    beside_landed = false;
                    last = Some(f);
                    part = stuck;
                }
            }
        }
    }
}
