//! Present so that `profiler-user` can name this crate as a build dependency (aya-build reruns
//! when it changes); the programs themselves are in `main.rs`.
#![no_std]
