//! `diff.svg`: inferno's differential flame graph. Widths are NEW's samples; red frames took
//! a larger share in NEW, blue a smaller one (Brendan Gregg's differential flame graphs).
use inferno::{differential, flamegraph};

use crate::{
    diff::Diff,
    error::{Error, Result},
    model::Recording,
    outputs::folded::{self, GroupBy},
};

/// `absolute`: compare raw sample counts instead of scaling BASE to NEW's total first.
pub fn render(diff: &Diff, base: &Recording, new: &Recording, absolute: bool) -> Result<Vec<u8>> {
    // No process frame at the root: two builds of a program may carry different names, and
    // the comparison is about their code.
    let text = |rec: &Recording| -> Result<Vec<u8>> {
        let mut out = Vec::new();
        folded::write(&folded::folded_lines(rec, GroupBy::None), &mut out)
            .map_err(|e| Error::FlameGraph(e.to_string()))?;
        Ok(out)
    };
    let (before, after) = (text(base)?, text(new)?);
    let mut merged = Vec::new();
    let opts = differential::Options {
        normalize: !absolute,
        strip_hex: false,
    };
    differential::from_readers(opts, before.as_slice(), after.as_slice(), &mut merged)
        .map_err(|e| Error::FlameGraph(e.to_string()))?;
    let merged = String::from_utf8_lossy(&merged);
    let mut fopts = flamegraph::Options::default();
    fopts.title = format!("diff: {} → {}", diff.base.path, diff.new.path);
    fopts.subtitle = Some(format!(
        "widths: NEW's {} samples; red: larger share in NEW, blue: smaller{}",
        diff.new.samples,
        if absolute {
            " (raw sample counts, --absolute)"
        } else {
            " (BASE scaled to NEW's total)"
        }
    ));
    fopts.count_name = "samples".to_string();
    let mut svg = Vec::new();
    if diff.new.samples == 0 || merged.trim().is_empty() {
        svg.extend_from_slice(
            b"<?xml version=\"1.0\" standalone=\"no\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1200\" height=\"40\"><text x=\"600\" y=\"24\" text-anchor=\"middle\">NEW has no samples: nothing to draw</text></svg>\n",
        );
        return Ok(svg);
    }
    flamegraph::from_lines(&mut fopts, merged.lines(), &mut svg)
        .map_err(|e| Error::FlameGraph(e.to_string()))?;
    Ok(svg)
}
