//! Writers, one module per format, and the output directory they share.
pub mod flamegraph;
pub mod folded;
pub mod perfetto;
pub mod pprof;
pub mod recording;
pub mod summary;

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use crate::{
    error::{Error, Result},
    model::Recording,
};

/// The user who ran `sudo`, who should own what we write for them.
pub fn sudo_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    Some((uid, gid))
}

/// A directory the outputs go to. Created (and checked writable) before the recording starts,
/// so a bad path fails in a second, not after a long recording; removed again if we created
/// it and then failed, so nothing half-written is left.
#[derive(Debug)]
pub struct OutputDir {
    path: PathBuf,
    /// The topmost directory we created, if any.
    created: Option<PathBuf>,
    owner: Option<(u32, u32)>,
}

impl OutputDir {
    pub fn prepare(path: &Path) -> Result<Self> {
        let err = |source| Error::OutputDir {
            path: path.to_path_buf(),
            source,
        };
        let owner = sudo_owner();
        // Find the first missing ancestor: that is what we create and may have to remove.
        let mut created = None;
        let mut p = path;
        while !p.as_os_str().is_empty() && !p.exists() {
            created = Some(p.to_path_buf());
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
        fs::create_dir_all(path).map_err(err)?;
        let dir = Self {
            path: path.to_path_buf(),
            created,
            owner,
        };
        if let Some(top) = &dir.created {
            let mut p = path;
            loop {
                dir.chown(p)?;
                if p == top {
                    break;
                }
                match p.parent() {
                    Some(parent) => p = parent,
                    None => break,
                }
            }
        }
        // Permission bits do not tell root the truth (read-only mounts, immutable dirs):
        // writing is the only reliable check.
        let probe = path.join(".profiler-write-test");
        if let Err(e) = fs::write(&probe, b"") {
            dir.abandon();
            return Err(err(e));
        }
        let _ = fs::remove_file(&probe);
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn chown(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| {
                Error::Write {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Writes `name` through a temporary file and a rename, so readers never see half a file.
    pub fn write_with(
        &self,
        name: &str,
        fill: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<PathBuf> {
        let target = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        let werr = |source: io::Error| Error::Write {
            path: target.clone(),
            source,
        };
        let result = (|| {
            let file = fs::File::create(&tmp).map_err(werr)?;
            let mut w = io::BufWriter::new(file);
            fill(&mut w)?;
            let file = w.into_inner().map_err(|e| werr(e.into_error()))?;
            file.sync_all().map_err(werr)?;
            self.chown(&tmp)?;
            fs::rename(&tmp, &target).map_err(werr)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| target)
    }

    pub fn write_bytes(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        self.write_with(name, |w| {
            w.write_all(bytes).map_err(|source| Error::Write {
                path: self.path.join(name),
                source,
            })
        })
    }

    /// Removes the directory if this run created it.
    pub fn abandon(&self) {
        if let Some(top) = &self.created {
            let _ = fs::remove_dir_all(top);
        }
    }
}

/// `spans.json`: every span, and how the events matched.
#[derive(serde::Serialize)]
struct SpansFile<'a> {
    schema: &'static str,
    info: Option<&'a crate::model::SpanInfo>,
    lost_events: u64,
    spans: &'a [crate::model::Span],
}

impl<'a> SpansFile<'a> {
    fn new(rec: &'a Recording) -> Self {
        Self {
            schema: "profiler-spans/1",
            info: rec.span_info.as_ref(),
            lost_events: rec.counters().span_events_lost_total(),
            spans: &rec.spans,
        }
    }
}

/// Which outputs `write_outputs` produces.
#[derive(Clone, Copy, Debug)]
pub struct Parts {
    pub recording: bool,
    pub folded: bool,
    pub flame_graph: bool,
    pub summary: bool,
    pub perfetto: bool,
    pub pprof: bool,
    pub perfetto_spans: perfetto::SpanTracks,
    pub group_by: folded::GroupBy,
}

impl Parts {
    pub const NONE: Self = Self {
        recording: false,
        folded: false,
        flame_graph: false,
        summary: false,
        perfetto: false,
        pprof: false,
        perfetto_spans: perfetto::SpanTracks::Both,
        group_by: folded::GroupBy::Process,
    };

    pub const ALL: Self = Self {
        recording: true,
        folded: true,
        flame_graph: true,
        summary: true,
        perfetto: true,
        pprof: true,
        perfetto_spans: perfetto::SpanTracks::Both,
        group_by: folded::GroupBy::Process,
    };
}

pub const RECORDING_FILE: &str = "recording.pb";
pub const FOLDED_FILE: &str = "profile.folded";
pub const FLAMEGRAPH_FILE: &str = "flamegraph.svg";
pub const SUMMARY_TXT_FILE: &str = "summary.txt";
pub const SUMMARY_JSON_FILE: &str = "summary.json";
pub const PERFETTO_FILE: &str = "trace.perfetto-trace";
pub const SPANS_JSON_FILE: &str = "spans.json";
pub const SPANS_FOLDED_FILE: &str = "profile-spans.folded";
pub const SPANS_FLAMEGRAPH_FILE: &str = "flamegraph-spans.svg";
pub const OFFCPU_FOLDED_FILE: &str = "offcpu.folded";
pub const OFFCPU_FLAMEGRAPH_FILE: &str = "offcpu.svg";
pub const WALL_FOLDED_FILE: &str = "wall.folded";
pub const WALL_FLAMEGRAPH_FILE: &str = "wall.svg";
pub const PPROF_FILE: &str = "profile.pb.gz";
pub const OFFCPU_PPROF_FILE: &str = "offcpu.pb.gz";

/// Writes the selected outputs of `rec` into `dir`; returns the files written.
pub fn write_outputs(rec: &Recording, dir: &OutputDir, parts: Parts) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    if parts.recording {
        written.push(dir.write_bytes(RECORDING_FILE, &recording::encode(rec))?);
    }
    // Span views exist when span probes were attached, even if no span happened.
    let has_spans = rec.span_info.is_some();
    use flamegraph::Weight;
    let mut flame_sets = vec![(
        FOLDED_FILE,
        FLAMEGRAPH_FILE,
        folded::folded_lines(rec, parts.group_by),
        Weight::Samples,
    )];
    if has_spans {
        flame_sets.push((
            SPANS_FOLDED_FILE,
            SPANS_FLAMEGRAPH_FILE,
            folded::span_folded_lines(rec, parts.group_by),
            Weight::Samples,
        ));
    }
    if rec.off_cpu_info.is_some() {
        flame_sets.push((
            OFFCPU_FOLDED_FILE,
            OFFCPU_FLAMEGRAPH_FILE,
            folded::off_cpu_lines(rec, parts.group_by),
            Weight::OffCpu,
        ));
        flame_sets.push((
            WALL_FOLDED_FILE,
            WALL_FLAMEGRAPH_FILE,
            folded::wall_lines(rec, parts.group_by),
            Weight::Wall,
        ));
    }
    for (folded_name, svg_name, lines, weight) in &flame_sets {
        if parts.folded {
            written.push(dir.write_with(folded_name, |w| {
                folded::write(lines, w).map_err(|source| Error::Write {
                    path: dir.path().join(folded_name),
                    source,
                })
            })?);
        }
        if parts.flame_graph {
            written.push(dir.write_with(svg_name, |w| {
                flamegraph::write_weighted(rec, lines, *weight, w)
            })?);
        }
    }
    if parts.summary && has_spans {
        let json = serde_json::to_vec_pretty(&SpansFile::new(rec))
            .map_err(|e| Error::Internal(format!("spans JSON: {e}")))?;
        written.push(dir.write_bytes(SPANS_JSON_FILE, &json)?);
    }
    if parts.summary {
        let summary = summary::Summary::new(rec);
        written.push(dir.write_bytes(SUMMARY_TXT_FILE, summary.to_text().as_bytes())?);
        let json = serde_json::to_vec_pretty(&summary)
            .map_err(|e| Error::Internal(format!("summary JSON: {e}")))?;
        written.push(dir.write_bytes(SUMMARY_JSON_FILE, &json)?);
    }
    if parts.perfetto {
        written.push(dir.write_with(PERFETTO_FILE, |w| {
            perfetto::write(rec, parts.perfetto_spans, w).map_err(|source| Error::Write {
                path: dir.path().join(PERFETTO_FILE),
                source,
            })
        })?);
    }
    if parts.pprof {
        let mut profiles = vec![(PPROF_FILE, pprof::cpu_profile(rec))];
        if let Some(off_cpu) = pprof::off_cpu_profile(rec) {
            profiles.push((OFFCPU_PPROF_FILE, off_cpu));
        }
        for (name, profile) in profiles {
            written.push(dir.write_with(name, |w| {
                pprof::write(&profile, w).map_err(|source| Error::Write {
                    path: dir.path().join(name),
                    source,
                })
            })?);
        }
    }
    Ok(written)
}

/// One output on its own (`profiler report --format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// profile.folded: folded stacks.
    Folded,
    /// flamegraph.svg: the CPU flame graph.
    Svg,
    /// trace.perfetto-trace: the Perfetto timeline.
    Perfetto,
    /// profile.pb.gz: pprof.
    Pprof,
    /// summary.json.
    Json,
    /// spans.json: every span.
    Spans,
}

impl Format {
    /// Formats a terminal would show as garbage.
    pub fn is_binary(self) -> bool {
        matches!(self, Format::Perfetto | Format::Pprof)
    }
}

/// Writes one output of `rec` to `w`; `dest` names where it goes, for errors.
pub fn write_format(
    rec: &Recording,
    format: Format,
    parts: Parts,
    dest: &Path,
    w: &mut dyn Write,
) -> Result<()> {
    let werr = |source| Error::Write {
        path: dest.to_path_buf(),
        source,
    };
    match format {
        Format::Folded => {
            folded::write(&folded::folded_lines(rec, parts.group_by), w).map_err(werr)
        }
        Format::Svg => flamegraph::write(rec, &folded::folded_lines(rec, parts.group_by), w),
        Format::Perfetto => perfetto::write(rec, parts.perfetto_spans, w).map_err(werr),
        Format::Pprof => pprof::write(&pprof::cpu_profile(rec), w).map_err(werr),
        Format::Json => {
            let json = serde_json::to_vec_pretty(&summary::Summary::new(rec))
                .map_err(|e| Error::Internal(format!("summary JSON: {e}")))?;
            w.write_all(&json)
                .and_then(|()| w.write_all(b"\n"))
                .map_err(werr)
        }
        Format::Spans => {
            if rec.span_info.is_none() {
                return Err(Error::InvalidArgument {
                    what: "--format spans",
                    reason: "no span probes were attached during this recording (the target has no span ABI, or --spans off)".into(),
                });
            }
            let json = serde_json::to_vec_pretty(&SpansFile::new(rec))
                .map_err(|e| Error::Internal(format!("spans JSON: {e}")))?;
            w.write_all(&json)
                .and_then(|()| w.write_all(b"\n"))
                .map_err(werr)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("profiler-outputs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn prepare_creates_and_abandon_removes_only_what_it_created() {
        let base = scratch("abandon");
        let dir = OutputDir::prepare(&base.join("a/b")).expect("writable temp dir");
        dir.write_bytes("x.txt", b"hello").expect("write");
        assert_eq!(
            fs::read(base.join("a/b/x.txt")).ok().as_deref(),
            Some(&b"hello"[..])
        );
        assert!(!base.join("a/b/.x.txt.tmp").exists());
        dir.abandon();
        assert!(!base.exists());

        fs::create_dir_all(&base).expect("mkdir");
        let dir = OutputDir::prepare(&base).expect("existing dir");
        dir.abandon();
        assert!(base.exists(), "an existing directory is never removed");
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn prepare_fails_under_a_file() {
        let base = scratch("file");
        fs::create_dir_all(&base).expect("mkdir");
        fs::write(base.join("f"), b"").expect("file");
        let e = OutputDir::prepare(&base.join("f/sub")).expect_err("cannot mkdir under a file");
        assert!(matches!(e, Error::OutputDir { .. }), "{e}");
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn failed_write_leaves_no_file() {
        let base = scratch("failed");
        let dir = OutputDir::prepare(&base).expect("dir");
        let r = dir.write_with("y.txt", |_| Err(Error::Internal("boom".into())));
        assert!(r.is_err());
        assert!(!base.join("y.txt").exists());
        assert!(!base.join(".y.txt.tmp").exists());
        dir.abandon();
    }
}
