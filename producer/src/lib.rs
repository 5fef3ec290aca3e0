//! Sluice producer.
