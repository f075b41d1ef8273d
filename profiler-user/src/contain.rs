//! Parsers we did not write read files a target chooses, and some panic on a malformed one:
//! blazesym 0.2.7 unwraps a line-table row's file index, which a damaged `.debug_line` puts
//! out of range (found by the fuzzer's `module` target). Such a panic must cost what that
//! file would have given, never the recording: [`contained`] turns it into an error, and the
//! hook [`install_hook`] keeps its message off the terminal, where it would read as the
//! profiler crashing.
use std::{
    cell::{Cell, RefCell},
    panic,
};

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Whether this thread is inside [`contained`]: a panic now is caught and reported there.
pub fn containing() -> bool {
    DEPTH.with(Cell::get) > 0
}

/// Keeps the message of a contained panic for [`contained`] instead of printing it; every
/// other panic goes to the hook installed before (the default one prints it).
pub fn install_hook() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if containing() {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", crate_path(l.file()), l.line()))
                .unwrap_or_default();
            let text = format!("{}{at}", info.payload_as_str().unwrap_or("a panic"));
            MESSAGE.with(|m| *m.borrow_mut() = Some(text));
        } else {
            previous(info);
        }
    }));
}

/// A dependency's source path from the crate on (`blazesym-0.2.7/src/…`), not from cargo's
/// registry on the machine that built the profiler.
fn crate_path(file: &str) -> &str {
    match file.split_once("/registry/src/") {
        Some((_, rest)) => rest.split_once('/').map_or(rest, |(_, path)| path),
        None => file,
    }
}

/// Runs `f`; a panic in it becomes `Err` with its message (and place, under [`install_hook`]).
/// Only for work whose state is thrown away or rebuilt when it fails: nothing `f` left half
/// done is looked at again.
pub fn contained<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    DEPTH.with(|d| d.set(d.get().saturating_add(1)));
    let result = panic::catch_unwind(panic::AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    result.map_err(|payload| {
        MESSAGE
            .with(|m| m.borrow_mut().take())
            .or_else(|| payload.downcast_ref::<&str>().map(ToString::to_string))
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message_and_the_depth_is_restored() {
        install_hook();
        let r: Result<(), String> = contained(|| panic!("bad file index {}", 43));
        let e = r.expect_err("the panic is caught");
        assert!(e.starts_with("bad file index 43 at "), "{e}");
        assert!(e.contains("contain.rs:"), "{e}");
        assert!(!containing());
        assert_eq!(contained(|| 7), Ok(7));
        // Nested: the inner one's panic is the inner one's error.
        let outer = contained(|| contained(|| -> u8 { panic!("inner") }).map(|_| ()));
        assert!(
            matches!(&outer, Ok(Err(m)) if m.starts_with("inner")),
            "{outer:?}"
        );
    }

    #[test]
    fn a_dependencys_place_is_told_from_its_crate_on() {
        assert_eq!(
            crate_path(
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/blazesym-0.2.7/src/dwarf/lines.rs"
            ),
            "blazesym-0.2.7/src/dwarf/lines.rs"
        );
        assert_eq!(
            crate_path("profiler-user/src/x.rs"),
            "profiler-user/src/x.rs"
        );
    }
}
