//! Builds the eBPF programs for bpfel-unknown-none with the nightly toolchain and bpf-linker
//! (both installed by `cargo xtask setup`) so the object can be embedded in the binary.
use std::{error::Error, path::Path};

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = Path::new(&manifest)
        .parent()
        .ok_or("profiler-user has no parent directory")?
        .join("profiler-ebpf");
    let root = root.to_str().ok_or("non-UTF-8 path to profiler-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "profiler-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )?;
    Ok(())
}
