//! The `.avsc` files shipped with Sluice, embedded so a binary needs no schema folder at run time.

/// One schema file shipped in `schemas/avro/`.
#[derive(Debug, Clone, Copy)]
pub struct BundledSchema {
    /// File name without `.avsc`, as streams refer to it in config.
    pub name: &'static str,
    /// The schema's JSON text.
    pub text: &'static str,
}

/// The product-analytics event of the default `events` stream.
pub const EVENT: BundledSchema = BundledSchema {
    name: "event",
    text: include_str!("../avro/event.avsc"),
};

/// A Segment tracking-API message (the `segment` stream the `/v1/batch` family of routes writes to).
pub const SEGMENT: BundledSchema = BundledSchema {
    name: "segment",
    text: include_str!("../avro/segment.avsc"),
};

/// Every bundled schema.
pub const ALL: &[BundledSchema] = &[EVENT, SEGMENT];

/// Looks a bundled schema up by name.
pub fn bundled(name: &str) -> Option<BundledSchema> {
    ALL.iter().copied().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_schema_parses() {
        for schema in ALL {
            apache_avro::Schema::parse_str(schema.text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", schema.name));
        }
    }

    #[test]
    fn lookup_by_name() {
        assert!(bundled("event").is_some());
        assert!(bundled("nope").is_none());
    }
}
