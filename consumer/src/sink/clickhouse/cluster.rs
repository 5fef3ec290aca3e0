//! A ClickHouse cluster as the sink sees it: shards of replicas, which shard a Kafka partition's rows go to, and
//! which replica of it to try first.
//!
//! The shard is a pure function of the partition, so a retried or rebuilt block always lands on the shard that
//! may already hold it, where the replicated table's block hashes (kept in ZooKeeper, shared by the shard's
//! replicas) drop the copy, whichever replica took the first one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_schemas::clickhouse::ClusterTable;

use crate::config::ClusterSettings;
use crate::error::Error;

/// How long a node may take to answer `SELECT 1` before the next one is asked (DDL and metadata queries).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One replica: its URL (for logs) and a client.
#[derive(Clone)]
pub struct Replica {
    /// The replica's HTTP URL.
    pub url: String,
    /// A client of it.
    pub client: clickhouse::Client,
}

/// A shard's replicas and the one that last took an insert.
pub struct Shard {
    /// Its place in `clickhouse.cluster.shards`, 0-based.
    pub index: usize,
    replicas: Vec<Replica>,
    preferred: AtomicUsize,
}

impl Shard {
    /// The replicas, starting with the one that last took an insert, then the others in their configured order.
    pub fn in_order(&self) -> impl Iterator<Item = (usize, &Replica)> {
        let first = self.preferred.load(Ordering::Relaxed) % self.replicas.len();
        (0..self.replicas.len())
            .map(move |i| (first + i) % self.replicas.len())
            .map(|i| (i, &self.replicas[i]))
    }

    /// Remembers that replica `i` took an insert, so the next one starts there.
    pub fn prefer(&self, i: usize) {
        self.preferred.store(i, Ordering::Relaxed);
    }
}

/// The cluster: its settings and its shards, in `remote_servers` order.
pub struct Topology {
    settings: ClusterSettings,
    shards: Vec<Shard>,
}

impl Topology {
    /// The shards of `settings`, each replica's client made by `client(url)`.
    pub fn new(settings: &ClusterSettings, client: impl Fn(&str) -> clickhouse::Client) -> Self {
        let shards = settings
            .replicas()
            .into_iter()
            .enumerate()
            .map(|(index, urls)| Shard {
                index,
                replicas: urls
                    .into_iter()
                    .map(|url| Replica {
                        client: client(&url),
                        url,
                    })
                    .collect(),
                preferred: AtomicUsize::new(0),
            })
            .collect();
        Self {
            settings: settings.clone(),
            shards,
        }
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// How many shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard that Kafka partition `partition`'s rows go to.
    pub fn shard_of(&self, partition: i32) -> &Shard {
        let n = self.shards.len() as i64;
        &self.shards[i64::from(partition).rem_euclid(n) as usize]
    }

    /// Where the stream table `table` (`database.table`) lives: its local table and that table's ZooKeeper path.
    pub fn table(&self, table: &str) -> ClusterTable {
        let local = format!("{table}{}", self.settings.local_suffix);
        let (db, name) = local.split_once('.').unwrap_or(("default", &local));
        ClusterTable {
            name: self.settings.name.clone(),
            zk_path: self
                .settings
                .replica_path
                .replace("{database}", db)
                .replace("{table}", name),
            local,
        }
    }

    /// Every node, shard by shard.
    pub fn nodes(&self) -> impl Iterator<Item = &Replica> {
        self.shards.iter().flat_map(|s| s.replicas.iter())
    }

    /// The first node, shard by shard, that answers `SELECT 1`: where DDL and metadata queries go.
    pub async fn live_node(&self) -> Result<&Replica, Error> {
        let mut last = String::from("no replica configured");
        for replica in self.nodes() {
            let probe = replica.client.query("SELECT 1").fetch_one::<u8>();
            match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                Ok(Ok(_)) => return Ok(replica),
                Ok(Err(e)) => last = format!("{}: {e}", replica.url),
                Err(_) => last = format!("{}: no answer within {PROBE_TIMEOUT:?}", replica.url),
            }
        }
        Err(Error::ClickHouse(clickhouse::error::Error::Custom(
            format!(
                "no node of cluster {} answers (last: {last})",
                self.settings.name
            ),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(shards: &[&str]) -> Topology {
        let settings = ClusterSettings {
            name: "sluice".into(),
            shards: shards.iter().map(|s| (*s).to_owned()).collect(),
            replica_path: "/clickhouse/tables/{shard}/{database}/{table}".into(),
            local_suffix: "_local".into(),
            ddl_timeout_ms: 20_000,
        };
        Topology::new(&settings, |url| clickhouse::Client::default().with_url(url))
    }

    #[test]
    fn a_partition_always_names_the_same_shard() {
        let t = topology(&["http://a:1, http://b:1", "http://c:1,http://d:1"]);
        let first = |p: i32| t.shard_of(p).in_order().next().map(|(_, r)| r.url.clone());
        assert_eq!(first(0).as_deref(), Some("http://a:1"));
        assert_eq!(first(1).as_deref(), Some("http://c:1"));
        assert_eq!(first(2), first(0));
        assert_eq!(first(7), first(1));
        assert_eq!(first(-1), first(1), "never out of range");
    }

    #[test]
    fn the_replica_that_took_the_last_insert_is_tried_first_then_the_rest() {
        let t = topology(&["http://a:1,http://b:1,http://c:1"]);
        let shard = t.shard_of(0);
        shard.prefer(1);
        let order: Vec<&str> = shard.in_order().map(|(_, r)| r.url.as_str()).collect();
        assert_eq!(order, ["http://b:1", "http://c:1", "http://a:1"]);
    }

    #[test]
    fn the_local_table_and_its_zookeeper_path_follow_the_settings() {
        let t = topology(&["http://a:1"]);
        let table = t.table("sluice.events");
        assert_eq!(table.local, "sluice.events_local");
        assert_eq!(
            table.zk_path,
            "/clickhouse/tables/{shard}/sluice/events_local"
        );
        assert_eq!(table.name, "sluice");
    }
}
