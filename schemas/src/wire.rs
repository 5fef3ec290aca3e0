//! Confluent's wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro binary body.

/// Length of the Confluent header in front of every value.
pub const HEADER_LEN: usize = 5;
const MAGIC: u8 = 0;

/// Why bytes are not a Confluent-framed value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("value is {0} bytes, shorter than the 5-byte Confluent header")]
    TooShort(usize),
    #[error("magic byte is {0}, expected 0")]
    BadMagic(u8),
}

/// The Confluent header for `schema_id`, for writers that put the body straight after it.
pub fn header(schema_id: u32) -> [u8; HEADER_LEN] {
    let id = schema_id.to_be_bytes();
    [MAGIC, id[0], id[1], id[2], id[3]]
}

/// Prepends the Confluent header for `schema_id` to an Avro body.
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header(schema_id));
    out.extend_from_slice(body);
    out
}

/// Splits a framed value into its schema id and Avro body.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), FrameError> {
    if bytes.len() < HEADER_LEN {
        return Err(FrameError::TooShort(bytes.len()));
    }
    if bytes[0] != MAGIC {
        return Err(FrameError::BadMagic(bytes[0]));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let framed = frame(258, b"abc");
        assert_eq!(framed, vec![0, 0, 0, 1, 2, b'a', b'b', b'c']);
        assert_eq!(unframe(&framed), Ok((258, &b"abc"[..])));
    }

    #[test]
    fn rejects_short_and_bad_magic() {
        assert_eq!(unframe(&[0, 0, 1]), Err(FrameError::TooShort(3)));
        assert_eq!(unframe(&[1, 0, 0, 0, 1]), Err(FrameError::BadMagic(1)));
    }
}
