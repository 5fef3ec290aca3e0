//! Sluice consumer.
