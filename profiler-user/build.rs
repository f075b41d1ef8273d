//! Builds the eBPF programs for bpfel-unknown-none with the pinned nightly toolchain
//! (`ebpf-toolchain` at the workspace root) and bpf-linker (both installed by `cargo xtask
//! setup`) so the object can be embedded in the binary.
use std::{error::Error, path::Path};

// The same choice of toolchain as xtask's, from the same source.
#[path = "../xtask/src/ebpf_toolchain.rs"]
mod ebpf_toolchain;

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let workspace = Path::new(&manifest)
        .parent()
        .ok_or("profiler-user has no parent directory")?;
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("ebpf-toolchain").display()
    );
    println!(
        "cargo:rerun-if-env-changed={}",
        ebpf_toolchain::OVERRIDE_ENV
    );
    // An actionable line rather than a verifier failure at run time from another nightly.
    let toolchain = ebpf_toolchain::resolve(workspace)?;
    let root = workspace.join("profiler-ebpf");
    let root = root.to_str().ok_or("non-UTF-8 path to profiler-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "profiler-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )?;
    Ok(())
}
