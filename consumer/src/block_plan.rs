//! Where a flush cuts each partition's rows into insert blocks, kept so that a retry, and a batch rebuilt by the
//! next owner after a crash, sends the very same blocks again.
//!
//! A server that deduplicates blocks (a replicated table's block hashes, or a current server's insert tokens)
//! drops a block only if it is identical to one it has. Messages that arrive while a batch is retried join it, and
//! a batch rebuilt after a crash is cut wherever the backlog is by then: without a plan either would merge rows
//! that already landed with new ones into a block nobody has seen. So before the first insert of a batch, the
//! ClickHouse step commits each partition's current position again with the plan as the offset's metadata (Kafka keeps
//! it with the group's offsets); the commit after the batch replaces it. A new owner that finds a plan at the
//! position it resumes from cuts its first blocks at the same offsets.

use std::collections::HashMap;

/// Tags the metadata of a committed offset that carries a plan, and its format.
const PREFIX: &str = "sluice-blocks:v1:";

/// A topic and partition.
pub type Key = (String, i32);

/// The offsets at which each partition's blocks end: a block holds a partition's rows after the previous end (or
/// from the batch's first) up to and including its end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockPlan {
    /// By topic, then partition: looked up per row without building a key.
    ends: HashMap<String, HashMap<i32, Vec<i64>>>,
}

/// A plan as read back from a committed offset: the offset it was committed with and the block ends after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The committed offset the plan belongs to: the batch's first offset of that partition.
    pub first: i64,
    /// The block ends, ascending.
    pub ends: Vec<i64>,
}

impl BlockPlan {
    /// The plan of a batch whose partitions hold `ranges` (first and last offset): one block per partition,
    /// except where `prior` (a crashed owner's plan, starting at the same first offset) cut it earlier.
    pub fn for_batch(ranges: &HashMap<Key, (i64, i64)>, prior: &HashMap<Key, Recorded>) -> Self {
        let mut plan = Self::default();
        for (key, &(first, last)) in ranges {
            let mut ends: Vec<i64> = prior
                .get(key)
                .filter(|r| r.first == first)
                .map(|r| {
                    r.ends
                        .iter()
                        .copied()
                        .filter(|e| (first..last).contains(e))
                        .collect()
                })
                .unwrap_or_default();
            ends.push(last);
            plan.ends
                .entry(key.0.clone())
                .or_default()
                .insert(key.1, ends);
        }
        plan
    }

    /// The block ends of `topic`'s partition `partition`; empty when the plan does not cover it (one block).
    pub fn ends(&self, topic: &str, partition: i32) -> &[i64] {
        self.ends
            .get(topic)
            .and_then(|p| p.get(&partition))
            .map_or(&[], Vec::as_slice)
    }

    /// Each planned partition with the metadata to commit at its first offset.
    pub fn metadata(&self, ranges: &HashMap<Key, (i64, i64)>) -> Vec<(Key, i64, String)> {
        let mut out: Vec<(Key, i64, String)> = self
            .ends
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions
                    .iter()
                    .map(move |(partition, ends)| ((topic.clone(), *partition), ends))
            })
            .filter_map(|(key, ends)| {
                let (first, _) = ranges.get(&key)?;
                let ends: Vec<String> = ends.iter().map(i64::to_string).collect();
                let metadata = format!("{PREFIX}{first}:{}", ends.join(","));
                Some((key, *first, metadata))
            })
            .collect();
        out.sort();
        out
    }
}

/// The plan in a committed offset's `metadata`, if it holds one Sluice wrote.
pub fn decode(metadata: &str) -> Option<Recorded> {
    let rest = metadata.strip_prefix(PREFIX)?;
    let (first, ends) = rest.split_once(':')?;
    let first = first.parse().ok()?;
    let ends: Vec<i64> = ends
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let ascending = ends.windows(2).all(|w| w[0] < w[1]);
    (ascending && ends.first().is_some_and(|e| *e >= first)).then_some(Recorded { first, ends })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> Key {
        ("t".to_owned(), p)
    }

    #[test]
    fn a_fresh_batch_is_one_block_per_partition() {
        let ranges = HashMap::from([(key(0), (10, 19)), (key(1), (5, 5))]);
        let plan = BlockPlan::for_batch(&ranges, &HashMap::new());
        assert_eq!(plan.ends("t", 0), [19]);
        assert_eq!(plan.ends("t", 1), [5]);
        assert!(plan.ends("t", 2).is_empty());
    }

    #[test]
    fn a_rebuilt_batch_is_cut_where_the_crashed_one_was() {
        // The crashed owner planned 10..=14 and 15..=19; the rebuilt batch reaches 30.
        let prior = HashMap::from([(
            key(0),
            Recorded {
                first: 10,
                ends: vec![14, 19],
            },
        )]);
        let ranges = HashMap::from([(key(0), (10, 30))]);
        assert_eq!(
            BlockPlan::for_batch(&ranges, &prior).ends("t", 0),
            [14, 19, 30]
        );
        // A shorter rebuilt batch keeps the cuts inside it.
        let ranges = HashMap::from([(key(0), (10, 16))]);
        assert_eq!(BlockPlan::for_batch(&ranges, &prior).ends("t", 0), [14, 16]);
        // A plan of another position (the partition moved on since) is ignored.
        let ranges = HashMap::from([(key(0), (20, 30))]);
        assert_eq!(BlockPlan::for_batch(&ranges, &prior).ends("t", 0), [30]);
    }

    #[test]
    fn plans_round_trip_through_commit_metadata() {
        let ranges = HashMap::from([(key(3), (100, 250))]);
        let prior = HashMap::from([(
            key(3),
            Recorded {
                first: 100,
                ends: vec![180],
            },
        )]);
        let plan = BlockPlan::for_batch(&ranges, &prior);
        let meta = plan.metadata(&ranges);
        assert_eq!(
            meta,
            [(key(3), 100, "sluice-blocks:v1:100:180,250".to_owned())]
        );
        assert_eq!(
            decode(&meta[0].2),
            Some(Recorded {
                first: 100,
                ends: vec![180, 250]
            })
        );
        for junk in [
            "",
            "other",
            "sluice-blocks:v1:",
            "sluice-blocks:v1:5:",
            "sluice-blocks:v1:5:9,7",
            "sluice-blocks:v1:5:3",
        ] {
            assert_eq!(decode(junk), None, "{junk:?}");
        }
    }
}
