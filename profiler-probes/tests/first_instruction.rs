//! The first instruction of each ABI function decides what a probe hit costs (README.md):
//! check it in what users actually link, whatever the build settings.
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

mod common;

use std::process::Command;

#[test]
fn rust_debug_build() {
    common::assert_abi_code(&common::rust_example(false));
}

#[test]
fn rust_release_build() {
    common::assert_abi_code(&common::rust_example(true));
}

#[test]
fn c_header_with_gcc_as_c11_and_gxx_as_cxx17() {
    for compiler in ["gcc", "g++"] {
        for opt in ["-O0", "-O2", "-O3"] {
            let bin = common::c_program(compiler, opt);
            common::assert_abi_code(&bin);
            // The program checks that ids from its two translation units are unique.
            let out = common::run(&mut Command::new(&bin));
            assert!(out.stdout.starts_with(b"ok "), "{compiler} {opt}: {out:?}");
        }
    }
}
