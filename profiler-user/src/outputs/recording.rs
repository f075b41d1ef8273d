//! The recording file: the model serialized with prost behind a magic line, so `profiler
//! report` can regenerate every output without the target and without root.
use std::path::Path;

use prost::Message;

use crate::{
    error::{Error, Result},
    model::{FORMAT_VERSION, Recording},
};

const MAGIC: &[u8] = b"profiler-recording\n";

pub fn encode(rec: &Recording) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + rec.encoded_len());
    out.extend_from_slice(MAGIC);
    rec.encode(&mut out)
        .expect("a Vec grows to fit any message; encode only fails on a full fixed buffer");
    out
}

pub fn decode(bytes: &[u8], path: &Path) -> Result<Recording> {
    let bad = |reason: String| Error::BadRecording {
        path: path.to_path_buf(),
        reason,
    };
    let body = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("it does not start with the recording header".into()))?;
    let rec = Recording::decode(body).map_err(|e| bad(e.to_string()))?;
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
    fn rejects_foreign_and_future_files() {
        let p = Path::new("x");
        assert!(matches!(
            decode(b"GIF89a", p),
            Err(Error::BadRecording { .. })
        ));
        let mut rec = sample_recording();
        rec.format_version = FORMAT_VERSION + 1;
        let e = decode(&encode(&rec), p).expect_err("newer format");
        assert!(e.to_string().contains("format version"), "{e}");
        let mut bytes = encode(&sample_recording());
        bytes.truncate(bytes.len() / 2);
        assert!(decode(&bytes, p).is_err());
    }
}
