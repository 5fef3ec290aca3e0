//! The insert step: one INSERT per topic of its pending rows; when ClickHouse refuses the data, the rows are split
//! in halves until the ones at fault stand alone, so good rows land and only bad ones are dead-lettered.

use super::ports::RowSink;
use super::{Entry, Judged, Stream};
use crate::offsets::Outcome;
use crate::rows::TopicRows;
use crate::sink::clickhouse::insert::RowRef;
use crate::verdict::{Failure, Verdict, verdict};

/// Inserts the rows of `rows` whose entries are still pending, marking them inserted, and judging each row
/// ClickHouse refuses on its own. Returns the transient failure that stopped the work, if any (the rows not
/// reached stay pending).
pub(super) async fn isolating<S: RowSink>(
    sink: &S,
    stream: &Stream,
    rows: &TopicRows,
    entries: &mut [Entry],
    judged: &mut Judged,
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
    // Depth-first, left half first, so rows land roughly in their original order.
    let mut stack: Vec<&[RowRef<'_>]> = vec![&refs];
    while let Some(part) = stack.pop() {
        if part.is_empty() {
            continue;
        }
        let failure = match sink.insert(&stream.table, &columns, part).await {
            Ok(()) => {
                for row in part {
                    entries[row.index].outcome = Some(Outcome::Inserted);
                }
                continue;
            }
            Err(e) => Failure::Insert(e),
        };
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
