//! Interactive SVG flame graph (search, zoom) drawn by inferno from the folded stacks.
use std::io;

use inferno::flamegraph::{self, Options};

use crate::{
    error::{Error, Result},
    model::Recording,
};

pub fn title(rec: &Recording) -> String {
    let secs = rec.duration_ns() as f64 / 1e9;
    format!(
        "{} — {secs:.1} s, {} samples",
        rec.command_line(),
        rec.samples.len()
    )
}

pub fn write(rec: &Recording, lines: &[(String, u64)], w: &mut dyn io::Write) -> Result<()> {
    let mut opts = Options::default();
    opts.title = title(rec);
    let m = rec.meta();
    opts.subtitle = Some(format!(
        "pid {} at {} Hz; {} samples lost",
        m.pid,
        m.frequency_hz,
        rec.counters().lost()
    ));
    opts.count_name = "samples".to_string();
    let text: Vec<String> = lines.iter().map(|(s, n)| format!("{s} {n}")).collect();
    if text.is_empty() {
        // inferno refuses empty input; an empty recording still gets a valid, labelled SVG.
        return empty_svg(&opts.title, w).map_err(|e| Error::FlameGraph(e.to_string()));
    }
    flamegraph::from_lines(&mut opts, text.iter().map(String::as_str), w)
        .map_err(|e| Error::FlameGraph(e.to_string()))
}

fn empty_svg(title: &str, w: &mut dyn io::Write) -> io::Result<()> {
    let escaped = title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    write!(
        w,
        "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1200\" height=\"60\"><text x=\"600\" y=\"24\" text-anchor=\"middle\">{escaped}</text><text x=\"600\" y=\"48\" text-anchor=\"middle\">no samples were recorded</text></svg>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::tests::sample_recording, outputs::folded::folded_lines};

    fn render(rec: &Recording) -> String {
        let mut out = Vec::new();
        write(
            rec,
            &folded_lines(rec, crate::outputs::folded::GroupBy::Process),
            &mut out,
        )
        .expect("render");
        String::from_utf8(out).expect("utf-8 svg")
    }

    #[test]
    fn svg_has_title_frames_and_interactivity() {
        let svg = render(&sample_recording());
        assert!(svg.starts_with("<?xml"), "{}", &svg[..100]);
        assert!(svg.contains("/usr/bin/app --fast — 0.1 s, 10 samples"));
        assert!(svg.contains("hot_a"));
        // inferno's search and zoom are script-driven.
        assert!(svg.contains("<script"));
        assert!(svg.contains("search"));
    }

    #[test]
    fn empty_recording_still_renders() {
        let mut rec = sample_recording();
        rec.samples.clear();
        let svg = render(&rec);
        assert!(svg.contains("<svg"));
    }
}
