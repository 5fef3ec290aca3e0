//! Sluice registry.
