//! The recording file: the model serialized with prost (schema: `recording.proto` at the
//! repository root) behind a fixed header, so `profiler report` can regenerate every output
//! without the target and without root.
//!
//! Header, 24 bytes, integers little-endian:
//!
//! | bytes | what |
//! |---|---|
//! | 0..8 | magic `\x89PRFREC\n` |
//! | 8..12 | format version (`FORMAT_VERSION`) |
//! | 12..20 | payload length in bytes |
//! | 20..24 | CRC-32 (IEEE, as zlib and gzip) of the payload |
//!
//! A protobuf message has no end marker: a file cut at a message boundary decodes as a
//! complete, smaller recording, and its loss counters (stored after the samples) then read 0.
//! The length and checksum make every truncation and corruption a refusal instead.
use std::path::Path;

use prost::Message;

use crate::{
    error::{Error, Result},
    model::{FORMAT_VERSION, Recording},
};

/// The first byte is not ASCII, so a text-mode transfer or a text file never passes for one.
pub const MAGIC: &[u8; 8] = b"\x89PRFREC\n";
pub const HEADER_LEN: usize = 24;
/// What files of format 1 (before the header) began with.
const OLD_MAGIC: &[u8] = b"profiler-recording\n";

pub fn encode(rec: &Recording) -> Vec<u8> {
    let payload = rec.encode_to_vec();
    let mut out = Vec::with_capacity(HEADER_LEN.saturating_add(payload.len()));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

pub fn decode(bytes: &[u8], path: &Path) -> Result<Recording> {
    let bad = |reason: String| Error::BadRecording {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.starts_with(OLD_MAGIC) {
        return Err(bad(
            "it was written by an older profiler, without a checksum; record it again".into(),
        ));
    }
    let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(if MAGIC.starts_with(bytes) || bytes.starts_with(MAGIC) {
            bad(format!(
                "it is truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            ))
        } else {
            bad("it does not start with the recording header".into())
        });
    };
    let (magic, rest) = header.split_at(8);
    if magic != MAGIC {
        return Err(bad("it does not start with the recording header".into()));
    }
    let field = |range: std::ops::Range<usize>| rest.get(range).unwrap_or_default();
    let le32 = |b: &[u8]| b.try_into().map(u32::from_le_bytes).unwrap_or(0);
    let version = le32(field(0..4));
    let length = field(4..12)
        .try_into()
        .map(u64::from_le_bytes)
        .unwrap_or(u64::MAX);
    let stored_crc = le32(field(12..16));
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version} (this profiler reads version {FORMAT_VERSION})"
        )));
    }
    let have = payload.len() as u64;
    if have < length {
        return Err(bad(format!(
            "it is truncated: {have} of {length} payload bytes (the copy or the write was cut short); record again or use a complete copy"
        )));
    }
    if have > length {
        return Err(bad(format!(
            "it is corrupted: {} bytes follow the {length}-byte payload",
            have - length
        )));
    }
    let crc = crc32(payload);
    if crc != stored_crc {
        return Err(bad(format!(
            "it is corrupted: checksum {crc:08x} does not match the header's {stored_crc:08x}"
        )));
    }
    let rec = Recording::decode(payload)
        .map_err(|e| bad(format!("it is corrupted despite a valid checksum: {e}")))?;
    if rec.format_version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {} (this profiler reads version {FORMAT_VERSION})",
            rec.format_version
        )));
    }
    Ok(rec)
}

pub fn read(path: &Path) -> Result<Recording> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes, path)
}

/// CRC-32/IEEE (reflected, polynomial 0xEDB88320), the checksum of zlib, gzip and PNG, so a
/// file can be checked with common tools. A table-driven byte loop runs at several hundred
/// MB/s, far faster than the recording is encoded.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::sample_recording;

    #[test]
    fn round_trip() {
        let rec = sample_recording();
        let back = decode(&encode(&rec), Path::new("x")).expect("decodes");
        assert_eq!(back, rec);
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn rejects_foreign_old_and_future_files() {
        let p = Path::new("x");
        let e = decode(b"GIF89a", p).expect_err("foreign");
        assert!(e.to_string().contains("header"), "{e}");
        let e = decode(b"profiler-recording\n\x08\x01", p).expect_err("old");
        assert!(e.to_string().contains("record it again"), "{e}");
        let mut rec = sample_recording();
        rec.format_version = FORMAT_VERSION + 1;
        let e = decode(&encode(&rec), p).expect_err("newer format");
        assert!(e.to_string().contains("format version"), "{e}");
        let mut bytes = encode(&sample_recording());
        bytes[8] = bytes[8].wrapping_add(1);
        let e = decode(&bytes, p).expect_err("newer header");
        assert!(e.to_string().contains("format version"), "{e}");
    }

    #[test]
    fn every_truncation_is_refused() {
        let p = Path::new("x");
        let bytes = encode(&sample_recording());
        for len in 0..bytes.len() {
            let e = decode(&bytes[..len], p).expect_err("truncated");
            assert!(e.to_string().contains("truncated"), "at {len}: {e}");
        }
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let p = Path::new("x");
        let bytes = encode(&sample_recording());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(decode(&b, p).is_err(), "bit {bit} of byte {i} flipped");
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let e = decode(&longer, p).expect_err("trailing byte");
        assert!(e.to_string().contains("corrupted"), "{e}");
    }
}
