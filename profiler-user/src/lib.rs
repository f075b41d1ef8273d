//! The profiler as a library: collect (kernel → raw samples), symbolize (addresses → frames),
//! model (the recording every output reads) and outputs (one module per format). The
//! `profiler` binary is a thin CLI over it.
pub mod agent;
pub mod alloc;
pub mod cli;
pub mod collect;
pub mod contain;
pub mod diff;
pub mod error;
pub mod fail_if;
pub mod findings;
#[doc(hidden)]
pub mod fuzz;
pub mod heap;
pub mod interrupt;
pub mod locks;
pub mod model;
pub mod offcpu;
pub mod outputs;
pub mod secret;
pub mod server;
pub mod sigbus;
pub mod spans;
pub mod symbolize;
pub mod top;

pub use error::{Error, Result};
