//! The profiler's error type: every variant is a one-line message a user can act on.
use std::{io, path::PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no process with PID {0}")]
    NoSuchProcess(u32),

    #[error("process {0} exited before the profiler could attach")]
    ExitedBeforeAttach(u32),

    #[error(
        "missing {missing}: loading eBPF programs and sampling need CAP_BPF and CAP_PERFMON; run with sudo"
    )]
    MissingCapabilities { missing: String },

    #[error(
        "cannot read /proc/{pid}/maps ({source}): the profiler needs CAP_SYS_PTRACE or the target's user; run with sudo"
    )]
    NoAccessToTarget { pid: u32, source: io::Error },

    #[error("output directory {path}: {source}")]
    OutputDir { path: PathBuf, source: io::Error },

    #[error(
        "output directory {path}: {link} is a link of uid {uid}, another user, who could point it anywhere; give a path without other users' links"
    )]
    OutputDirLink {
        path: PathBuf,
        link: PathBuf,
        uid: u32,
    },

    #[error(
        "output directory {path} belongs to uid {uid}, another user, who could swap its files for links while root writes; use a directory of your own"
    )]
    OutputDirOwner { path: PathBuf, uid: u32 },

    /// Each output that failed is printed before this, with how to regenerate it.
    #[error("{failed} output(s) could not be written to {dir}")]
    OutputsIncomplete { dir: PathBuf, failed: usize },

    /// A signal cut the outputs short; the exit status is 128 + the signal's number.
    #[error("stopped by {signal}: {kept}")]
    Interrupted {
        signal: &'static str,
        code: u8,
        kept: String,
    },

    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },

    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },

    #[error("{path} is not a recording this profiler can read: {reason}")]
    BadRecording { path: PathBuf, reason: String },

    /// The machine cannot run the profiler as it is: what is wrong and the fix, in one line.
    #[error("{0}")]
    Startup(String),

    #[error("invalid {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },

    #[error("loading the eBPF programs failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),

    /// Carries the verifier log when the kernel rejected a program.
    #[error("the kernel rejected eBPF program `{program}`: {source}")]
    Program {
        program: &'static str,
        source: Box<aya::programs::ProgramError>,
    },

    #[error("eBPF map `{map}`: {source}")]
    Map {
        map: &'static str,
        source: Box<aya::maps::MapError>,
    },

    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },

    /// A mismatch between the embedded eBPF object and this loader: a bug, not a user error.
    #[error("internal error: {0}")]
    Internal(String),

    #[error("flame graph: {0}")]
    FlameGraph(String),

    /// `--fail-if` rules were violated; each is printed before this.
    #[error("{0} --fail-if rule(s) violated")]
    RulesViolated(usize),
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<aya::EbpfError> for Error {
    fn from(e: aya::EbpfError) -> Self {
        Self::Load(Box::new(e))
    }
}
