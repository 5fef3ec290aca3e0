//! A log in memory, for unit tests of the request logic.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Log;
use crate::records::Record;

/// Keeps appended records; can be told to fail like a broker that is down.
#[derive(Debug, Default)]
pub struct MemoryLog {
    records: Mutex<Vec<Record>>,
    failing: AtomicBool,
}

impl MemoryLog {
    /// Every record appended so far.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Makes later appends fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl Log for MemoryLog {
    fn append<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<(), String>> {
        async move {
            if self.failing.load(Ordering::SeqCst) {
                return Err("broker unavailable".to_owned());
            }
            self.records
                .lock()
                .map_err(|e| e.to_string())?
                .push(record.clone());
            Ok(())
        }
        .boxed()
    }
}
