//! `diff.json`: a comparison of two recordings, machine-readable (`"schema": "profiler-diff/1"`,
//! documented in the README).
use crate::{
    diff::Diff,
    error::{Error, Result},
};

pub fn to_bytes(diff: &Diff) -> Result<Vec<u8>> {
    let mut bytes =
        serde_json::to_vec_pretty(diff).map_err(|e| Error::Internal(format!("diff JSON: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}
