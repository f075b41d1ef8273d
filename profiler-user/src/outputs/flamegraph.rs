//! Interactive SVG flame graph (search, zoom) drawn by inferno from the folded stacks.
use std::io;

use inferno::flamegraph::{
    self, Options,
    color::{Color, PaletteMap},
};

use crate::{
    error::{Error, Result},
    model::Recording,
    outputs::folded,
};

pub fn title(rec: &Recording) -> String {
    let secs = rec.duration_ns() as f64 / 1e9;
    format!(
        "{} — {secs:.1} s, {} samples",
        rec.command_line(),
        rec.samples.len()
    )
}

/// What a flame graph's widths measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weight {
    Samples,
    /// Microseconds off CPU.
    OffCpu,
    /// Microseconds on and off CPU.
    Wall,
    /// Bytes allocated (`--alloc`, estimated from the samples).
    AllocBytes,
    /// Bytes allocated and never freed.
    InuseBytes,
    /// Microseconds waited for locks (`--locks`).
    LockWait,
}

/// Off-CPU markers stand out in blue against the warm palette of CPU frames.
fn off_cpu_palette() -> PaletteMap {
    let mut map = PaletteMap::default();
    map.insert(
        folded::OFF_CPU_FRAME,
        Color {
            r: 60,
            g: 110,
            b: 220,
        },
    );
    map.insert(
        folded::PREEMPTED_FRAME,
        Color {
            r: 150,
            g: 90,
            b: 210,
        },
    );
    map
}

pub fn write(rec: &Recording, lines: &[(String, u64)], w: &mut dyn io::Write) -> Result<()> {
    write_weighted(rec, lines, Weight::Samples, w)
}

pub fn write_weighted(
    rec: &Recording,
    lines: &[(String, u64)],
    weight: Weight,
    w: &mut dyn io::Write,
) -> Result<()> {
    let mut opts = Options::default();
    let m = rec.meta();
    let mut palette = off_cpu_palette();
    match weight {
        Weight::Samples => {
            opts.title = title(rec);
            // The kernel's loss counters carry no times: a window cannot cut them.
            opts.subtitle = Some(format!(
                "pid {} at {} Hz; {} samples lost{}",
                m.pid,
                m.frequency_hz,
                rec.counters().lost(),
                if m.window_cut {
                    " in the whole recording"
                } else {
                    ""
                }
            ));
            opts.count_name = "samples".to_string();
        }
        Weight::OffCpu | Weight::Wall => {
            let what = if weight == Weight::OffCpu {
                "off-CPU time"
            } else {
                "wall-clock time (on-CPU samples × period + off-CPU time)"
            };
            opts.title = format!("{} — {what}", rec.command_line());
            opts.subtitle = Some(format!(
                "pid {}; [off-cpu]: blocked, [preempted]: waiting for a CPU; {} off-CPU intervals lost",
                m.pid,
                rec.counters().off_cpu_events_lost
            ));
            opts.count_name = "µs".to_string();
            opts.palette_map = Some(&mut palette);
        }
        Weight::LockWait => {
            let info = rec.lock_info.clone().unwrap_or_default();
            opts.title = format!("{} — time waiting for locks", rec.command_line());
            opts.subtitle = Some(format!(
                "pid {}; futex waits, the lock as the leaf; {} waits lost",
                m.pid, info.lost
            ));
            opts.count_name = "µs".to_string();
        }
        Weight::AllocBytes | Weight::InuseBytes => {
            let what = if weight == Weight::AllocBytes {
                "bytes allocated"
            } else {
                "bytes allocated and never freed (leak candidates)"
            };
            let info = rec.alloc_info.clone().unwrap_or_default();
            opts.title = format!("{} — {what}", rec.command_line());
            opts.subtitle = Some(format!(
                "pid {}; estimated from samples 1 per {} bytes; {} samples lost",
                m.pid,
                info.sample_bytes,
                info.lost_ringbuf.saturating_add(info.threads_full)
            ));
            opts.count_name = "bytes".to_string();
            opts.colors = inferno::flamegraph::color::Palette::Basic(
                inferno::flamegraph::color::BasicPalette::Mem,
            );
        }
    }
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
            &folded_lines(rec, crate::outputs::folded::GroupBy::Comm),
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
