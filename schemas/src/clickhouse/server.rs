//! Which ClickHouse types and settings a server has, from its version: the consumer asks the server at start-up
//! and maps new columns with the best types it accepts, while tables that exist keep the types they hold.
//!
//! | feature                                   | from   | why that version                                            |
//! |-------------------------------------------|--------|-------------------------------------------------------------|
//! | `DateTime64(P, 'UTC')`                    | 20.1   | the release that added the type                             |
//! | `Decimal(P, S)`, `LowCardinality(String)` | 20.1   | older servers had them, but 18.16 keeps its mapping as is   |
//! | `Bool`                                    | 21.12  | the release that added the type                             |
//! | `Map(String, T)`                          | 22.3   | first LTS where `Map` needs no experimental setting         |
//! | `insert_deduplication_token`              | 22.3   | added in 22.2; 22.3 is the first LTS that has it            |
//! | the `async_insert` setting                | 21.11  | added in 21.11; 26.x turns it on by default, so Sluice      |
//! |                                           |        | sends `async_insert = 0` with every insert it makes         |
//! | column comments on replicated tables      | 20.1   | 18.16 refuses the second replica of a table whose columns   |
//! |                                           |        | have comments ("structure in ZooKeeper is too different");  |
//! |                                           |        | tested only there, so the first release we map newer types  |
//!
//! Unions other than `[null, T]` stay `String` JSON on every server: `Variant` and `JSON` were experimental until
//! 24.x/25.x and their RowBinary shapes changed meanwhile.

/// What a server accepts beyond the types ClickHouse 18.16 has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// `DateTime64(P, 'UTC')` for timestamps.
    pub datetime64: bool,
    /// `Decimal(P, S)` for decimals, `LowCardinality(String)` for enums.
    pub decimal_and_low_cardinality: bool,
    /// `Bool` for booleans.
    pub bool_type: bool,
    /// `Map(String, T)` for top-level maps.
    pub map_type: bool,
    /// The `insert_deduplication_token` setting and `non_replicated_deduplication_window`.
    pub dedup_token: bool,
    /// `COMMENT` on the columns of a replicated table.
    pub replicated_comments: bool,
    /// The `async_insert` setting (a server may default it to on: Sluice's inserts turn it off).
    pub async_insert: bool,
}

impl Capabilities {
    /// ClickHouse 18.16's types only: the mapping every supported server accepts.
    pub const LEGACY: Self = Self {
        datetime64: false,
        decimal_and_low_cardinality: false,
        bool_type: false,
        map_type: false,
        dedup_token: false,
        replicated_comments: false,
        async_insert: false,
    };

    /// Everything this module knows of.
    pub const CURRENT: Self = Self {
        datetime64: true,
        decimal_and_low_cardinality: true,
        bool_type: true,
        map_type: true,
        dedup_token: true,
        replicated_comments: true,
        async_insert: true,
    };

    /// What a server of `major.minor` accepts.
    pub fn of_version(major: u32, minor: u32) -> Self {
        let at_least = |m: u32, n: u32| (major, minor) >= (m, n);
        Self {
            datetime64: at_least(20, 1),
            decimal_and_low_cardinality: at_least(20, 1),
            bool_type: at_least(21, 12),
            map_type: at_least(22, 3),
            dedup_token: at_least(22, 3),
            replicated_comments: at_least(20, 1),
            async_insert: at_least(21, 11),
        }
    }

    /// What a server answering `SELECT version()` with `text` (e.g. `26.9.1.1`) accepts; `None` if unparsable.
    pub fn of_version_text(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self::of_version(major, minor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_features() {
        assert_eq!(
            Capabilities::of_version_text("18.16.1"),
            Some(Capabilities::LEGACY)
        );
        assert_eq!(
            Capabilities::of_version_text("26.9.1.1"),
            Some(Capabilities::CURRENT)
        );
        assert_eq!(
            Capabilities::of_version_text("22.3.20.29"),
            Some(Capabilities::CURRENT)
        );
        let v21_8 = Capabilities::of_version(21, 8);
        assert!(v21_8.datetime64 && !v21_8.bool_type && !v21_8.map_type && !v21_8.dedup_token);
        assert!(!v21_8.async_insert && Capabilities::of_version(21, 11).async_insert);
        let v21_12 = Capabilities::of_version(21, 12);
        assert!(v21_12.bool_type && !v21_12.map_type);
        assert_eq!(Capabilities::of_version_text("garbage"), None);
        assert_eq!(Capabilities::of_version_text(""), None);
    }
}
