//! Writers, one module per format, and the output directory they share.
pub mod diff_flamegraph;
pub mod diff_json;
pub mod diff_text;
pub mod flamegraph;
pub mod folded;
pub mod perfetto;
pub mod pprof;
pub mod recording;
pub mod safe_dir;
pub mod summary;

use std::{
    io::{self, Write},
    os::fd::OwnedFd,
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

/// A directory the outputs go to, held open: every file is created relative to it (see
/// `safe_dir`). Created (and checked writable) before the recording starts, so a bad path
/// fails in a second, not after a long recording.
#[derive(Debug)]
pub struct OutputDir {
    path: PathBuf,
    dir: OwnedFd,
    /// Directories this run created, outermost first: removed again, while still empty, when
    /// the recording fails before anything was written.
    created: Vec<safe_dir::Created>,
    owner: Option<(u32, u32)>,
}

impl OutputDir {
    pub fn prepare(path: &Path) -> Result<Self> {
        let err = |source| Error::OutputDir {
            path: path.to_path_buf(),
            source,
        };
        let owner = sudo_owner();
        let trusted = safe_dir::Trusted::current();
        let opened = safe_dir::open_dir(path, owner, true, trusted).map_err(|e| match e {
            safe_dir::OpenError::Io(source) => err(source),
            safe_dir::OpenError::UntrustedLink { link, uid } => Error::OutputDirLink {
                path: path.to_path_buf(),
                link,
                uid,
            },
            safe_dir::OpenError::UntrustedOwner { uid } => Error::OutputDirOwner {
                path: path.to_path_buf(),
                uid,
            },
        })?;
        let dir = Self {
            path: path.to_path_buf(),
            dir: opened.dir,
            created: opened.created,
            owner,
        };
        // Another user's directory could be emptied and refilled with links by that user
        // while we write: only root's, ours and the sudo user's are safe to write into.
        let st = safe_dir::fstat(&dir.dir).map_err(err)?;
        if !trusted.trusts(st.st_uid) {
            dir.abandon();
            return Err(Error::OutputDirOwner {
                path: path.to_path_buf(),
                uid: st.st_uid,
            });
        }
        // Permission bits do not tell root the truth (read-only mounts, immutable dirs):
        // writing is the only reliable check.
        match safe_dir::create_temp(&dir.dir, "profiler-write-test") {
            Ok((file, name)) => {
                drop(file);
                safe_dir::unlink(&dir.dir, &name);
            }
            Err(e) => {
                dir.abandon();
                return Err(err(e));
            }
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` through a temporary file and a rename, so readers never see half a file.
    pub fn write_with(
        &self,
        name: &str,
        fill: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<PathBuf> {
        self.write_impl(name, false, fill)
    }

    /// `stoppable`: a signal received meanwhile (`interrupt`) cuts the write short.
    fn write_impl(
        &self,
        name: &str,
        stoppable: bool,
        fill: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<PathBuf> {
        let target = self.path.join(name);
        let werr = |source: io::Error| Error::Write {
            path: target.clone(),
            source,
        };
        let (file, tmp) = safe_dir::create_temp(&self.dir, name).map_err(werr)?;
        let result = (|| {
            if let Some((uid, gid)) = self.owner {
                safe_dir::fchown(&file, uid, gid).map_err(werr)?;
            }
            let mut w = io::BufWriter::new(file);
            if stoppable {
                fill(&mut crate::interrupt::StopWriter(&mut w))?;
            } else {
                fill(&mut w)?;
            }
            let file = w.into_inner().map_err(|e| werr(e.into_error()))?;
            file.sync_all().map_err(werr)?;
            safe_dir::rename(&self.dir, &tmp, name).map_err(werr)
        })();
        if result.is_err() {
            safe_dir::unlink(&self.dir, &tmp);
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

    /// Reads back a file this directory holds, never through a link (the agent's spool).
    pub fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut file = safe_dir::open_file_nofollow(&self.dir, name)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Removes a file of this directory (a link is removed, not followed).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        safe_dir::unlink_name(&self.dir, name)
    }

    /// Names of the entries of this directory, read through the descriptor it was opened as.
    pub fn list(&self) -> io::Result<Vec<String>> {
        use std::os::fd::AsRawFd;
        let own = format!("/proc/self/fd/{}", self.dir.as_raw_fd());
        std::fs::read_dir(own)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    /// Removes the directories this run created, innermost first, as long as they are empty:
    /// whatever was written into them stays.
    pub fn abandon(&self) {
        for c in self.created.iter().rev() {
            c.remove_if_empty();
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
    /// Kernel threads and the idle task stay in the outputs (`--kernel-threads`).
    pub kernel_threads: bool,
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
        group_by: folded::GroupBy::Comm,
        kernel_threads: false,
    };

    pub const ALL: Self = Self {
        recording: true,
        folded: true,
        flame_graph: true,
        summary: true,
        perfetto: true,
        pprof: true,
        perfetto_spans: perfetto::SpanTracks::Both,
        group_by: folded::GroupBy::Comm,
        kernel_threads: false,
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
pub const ALLOC_FOLDED_FILE: &str = "alloc.folded";
pub const ALLOC_FLAMEGRAPH_FILE: &str = "alloc.svg";
pub const INUSE_FOLDED_FILE: &str = "inuse.folded";
pub const INUSE_FLAMEGRAPH_FILE: &str = "inuse.svg";
pub const LOCKS_FOLDED_FILE: &str = "locks.folded";
pub const LOCKS_FLAMEGRAPH_FILE: &str = "locks.svg";
/// `--locks`: contentions/count and delay/nanoseconds, as Go's mutex profile.
pub const LOCKS_PPROF_FILE: &str = "locks.pb.gz";
/// `--alloc`: the heap profile (alloc_objects, alloc_space, inuse_objects, inuse_space).
pub const ALLOC_PPROF_FILE: &str = "alloc.pb.gz";
pub const PPROF_FILE: &str = "profile.pb.gz";
pub const OFFCPU_PPROF_FILE: &str = "offcpu.pb.gz";
pub const DIFF_JSON_FILE: &str = "diff.json";
pub const DIFF_TXT_FILE: &str = "diff.txt";
pub const DIFF_SVG_FILE: &str = "diff.svg";

/// What `write_outputs` did: every file it wrote, and every one it could not write, by name.
#[derive(Debug, Default)]
pub struct Written {
    pub written: Vec<PathBuf>,
    pub failed: Vec<(&'static str, Error)>,
    /// Outputs not written because a signal asked to stop.
    pub skipped: Vec<&'static str>,
}

impl Written {
    pub fn recording_written(&self) -> bool {
        self.written
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == RECORDING_FILE))
    }
}

/// The recording as the derived outputs show it: without kernel threads and the idle task
/// unless `--kernel-threads` asks for them, since a machine-wide profile is about programs,
/// and with what was left out, for the summary to say. `recording.pb` always keeps them.
pub struct Shown<'a> {
    pub rec: std::borrow::Cow<'a, Recording>,
    pub hidden: summary::KernelTasksHidden,
}

impl<'a> Shown<'a> {
    pub fn new(rec: &'a Recording, kernel_threads: bool) -> Self {
        let hide: std::collections::HashSet<u32> = if kernel_threads {
            Default::default()
        } else {
            rec.kernel_tasks().into_keys().collect()
        };
        if hide.is_empty() {
            return Self {
                rec: std::borrow::Cow::Borrowed(rec),
                hidden: Default::default(),
            };
        }
        let (shown, samples) = rec.without_pids(&hide);
        Self {
            rec: std::borrow::Cow::Owned(shown),
            hidden: summary::KernelTasksHidden {
                processes: hide.len() as u64,
                samples,
            },
        }
    }

    pub fn summary(&self) -> summary::Summary {
        let mut s = summary::Summary::new(&self.rec);
        s.kernel_tasks_hidden = self.hidden.clone();
        s
    }
}

/// Writes the selected outputs of `rec` into `dir`: the recording first, since every other
/// output can be regenerated from it, then each derived output on its own, so one that fails
/// (disk full, permissions) neither stops the others nor removes anything already written.
/// Derived outputs are skipped once a signal asks to stop (`interrupt`).
pub fn write_outputs(rec: &Recording, dir: &OutputDir, parts: Parts) -> Written {
    let mut out = Written::default();
    let put = |out: &mut Written, name: &'static str, r: Result<PathBuf>| match r {
        Ok(p) => out.written.push(p),
        Err(e) => out.failed.push((name, e)),
    };
    if parts.recording {
        let r = dir.write_with(RECORDING_FILE, |w| {
            w.write_all(&recording::encode(rec))
                .map_err(|source| Error::Write {
                    path: dir.path().join(RECORDING_FILE),
                    source,
                })
        });
        put(&mut out, RECORDING_FILE, r);
    }
    let shown = Shown::new(rec, parts.kernel_threads);
    let rec: &Recording = &shown.rec;
    let derived = |out: &mut Written,
                   name: &'static str,
                   fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>| {
        if crate::interrupt::stop_requested() {
            out.skipped.push(name);
            return;
        }
        let r = dir.write_impl(name, true, |w| fill(w));
        match r {
            Err(_) if crate::interrupt::stop_requested() => out.skipped.push(name),
            r => put(out, name, r),
        }
    };
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
    if rec.alloc_info.is_some() {
        flame_sets.push((
            ALLOC_FOLDED_FILE,
            ALLOC_FLAMEGRAPH_FILE,
            crate::alloc::alloc_lines(rec, parts.group_by),
            Weight::AllocBytes,
        ));
        flame_sets.push((
            INUSE_FOLDED_FILE,
            INUSE_FLAMEGRAPH_FILE,
            crate::alloc::inuse_lines(rec, parts.group_by),
            Weight::InuseBytes,
        ));
    }
    if rec.lock_info.is_some() {
        flame_sets.push((
            LOCKS_FOLDED_FILE,
            LOCKS_FLAMEGRAPH_FILE,
            crate::locks::lock_lines(rec, parts.group_by),
            Weight::LockWait,
        ));
    }
    for (folded_name, svg_name, lines, weight) in &flame_sets {
        if parts.folded {
            derived(&mut out, folded_name, &mut |w| {
                folded::write(lines, w).map_err(|source| Error::Write {
                    path: dir.path().join(folded_name),
                    source,
                })
            });
        }
        if parts.flame_graph {
            derived(&mut out, svg_name, &mut |w| {
                flamegraph::write_weighted(rec, lines, *weight, w)
            });
        }
    }
    let json_bytes = |name: &'static str, json: serde_json::Result<Vec<u8>>| {
        let bytes = json.map_err(|e| Error::Internal(format!("{name}: {e}")))?;
        Ok::<_, Error>(move |w: &mut dyn Write| {
            w.write_all(&bytes).map_err(|source| Error::Write {
                path: dir.path().join(name),
                source,
            })
        })
    };
    let json_output = |out: &mut Written, name: &'static str, json| match json_bytes(name, json) {
        Ok(mut fill) => derived(out, name, &mut fill),
        Err(e) => out.failed.push((name, e)),
    };
    if parts.summary && has_spans {
        json_output(
            &mut out,
            SPANS_JSON_FILE,
            serde_json::to_vec_pretty(&SpansFile::new(rec)),
        );
    }
    if parts.summary {
        let summary = shown.summary();
        let text = summary.to_text();
        derived(&mut out, SUMMARY_TXT_FILE, &mut |w| {
            w.write_all(text.as_bytes()).map_err(|source| Error::Write {
                path: dir.path().join(SUMMARY_TXT_FILE),
                source,
            })
        });
        json_output(
            &mut out,
            SUMMARY_JSON_FILE,
            serde_json::to_vec_pretty(&summary),
        );
    }
    if parts.perfetto {
        derived(&mut out, PERFETTO_FILE, &mut |w| {
            perfetto::write(rec, parts.perfetto_spans, w).map_err(|source| Error::Write {
                path: dir.path().join(PERFETTO_FILE),
                source,
            })
        });
    }
    if parts.pprof {
        let mut profiles = vec![(PPROF_FILE, pprof::cpu_profile(rec))];
        if let Some(off_cpu) = pprof::off_cpu_profile(rec) {
            profiles.push((OFFCPU_PPROF_FILE, off_cpu));
        }
        if let Some(heap) = pprof::alloc_profile(rec) {
            profiles.push((ALLOC_PPROF_FILE, heap));
        }
        if let Some(locks) = pprof::locks_profile(rec) {
            profiles.push((LOCKS_PPROF_FILE, locks));
        }
        for (name, profile) in profiles {
            derived(&mut out, name, &mut |w| {
                pprof::write(&profile, w).map_err(|source| Error::Write {
                    path: dir.path().join(name),
                    source,
                })
            });
        }
    }
    out
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
    let shown = Shown::new(rec, parts.kernel_threads);
    let rec: &Recording = &shown.rec;
    match format {
        Format::Folded => {
            folded::write(&folded::folded_lines(rec, parts.group_by), w).map_err(werr)
        }
        Format::Svg => flamegraph::write(rec, &folded::folded_lines(rec, parts.group_by), w),
        Format::Perfetto => perfetto::write(rec, parts.perfetto_spans, w).map_err(werr),
        Format::Pprof => pprof::write(&pprof::cpu_profile(rec), w).map_err(werr),
        Format::Json => {
            let json = serde_json::to_vec_pretty(&shown.summary())
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
    use std::fs;

    fn scratch(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("profiler-outputs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn abandon_removes_only_the_empty_directories_it_created() {
        let base = scratch("abandon");
        let dir = OutputDir::prepare(&base.join("a/b")).expect("writable temp dir");
        assert!(
            entries(&base.join("a/b")).is_empty(),
            "no write-test file left"
        );
        dir.abandon();
        assert!(!base.exists(), "created and still empty: removed");

        let dir = OutputDir::prepare(&base.join("a/b")).expect("writable temp dir");
        dir.write_bytes("x.txt", b"hello").expect("write");
        assert_eq!(
            fs::read(base.join("a/b/x.txt")).ok().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(
            entries(&base.join("a/b")),
            ["x.txt"],
            "no temporary file left"
        );
        dir.abandon();
        assert!(
            base.join("a/b/x.txt").exists(),
            "what was written is never removed"
        );

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
        let e = OutputDir::prepare(&base.join("f")).expect_err("a file is no directory");
        assert!(matches!(e, Error::OutputDir { .. }), "{e}");
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn failed_write_leaves_no_file() {
        let base = scratch("failed");
        let dir = OutputDir::prepare(&base).expect("dir");
        let r = dir.write_with("y.txt", |_| Err(Error::Internal("boom".into())));
        assert!(r.is_err());
        assert!(entries(&base).is_empty(), "{:?}", entries(&base));
        dir.abandon();
    }

    #[test]
    fn every_output_is_written_and_the_recording_first() {
        let base = scratch("all");
        let dir = OutputDir::prepare(&base).expect("dir");
        let rec = crate::model::tests::sample_recording();
        let w = write_outputs(&rec, &dir, Parts::ALL);
        assert!(w.failed.is_empty(), "{:?}", w.failed);
        assert!(w.recording_written());
        assert_eq!(
            w.written.first().and_then(|p| p.file_name()),
            Some(std::ffi::OsStr::new(RECORDING_FILE))
        );
        let _ = fs::remove_dir_all(&base);
    }
}
