//! Separate debug files, where distributions put them: `/usr/lib/debug/.build-id/xx/rest.debug`
//! (Debian's `-dbgsym` packages, Fedora's `-debuginfo`) and the `.gnu_debuglink` name beside
//! the binary, in its `.debug/` directory or under `/usr/lib/debug/`. A candidate counts only
//! when it is the module's: the same build id, or the CRC the link records.
use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use memmap2::Mmap;
use object::Object;

use super::modules::{DebugFile, ModuleFile};

const DEBUG_ROOT: &str = "/usr/lib/debug";

/// The open file and a view of it: the file checked is the file read, whoever later
/// replaces the path (a debuglink candidate sits in the module's own directory).
fn map(path: &Path) -> Option<(File, Arc<Mmap>)> {
    let f = super::modules::open_regular(path).ok()?;
    // SAFETY: a read-only view of a debug file nobody writes while we read it.
    let map = unsafe { Mmap::map(&f) }.ok().map(Arc::new)?;
    Some((f, map))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a build id's debug file would be.
pub fn build_id_path(build_id: &[u8]) -> Option<PathBuf> {
    let (first, rest) = build_id.split_first()?;
    Some(PathBuf::from(format!(
        "{DEBUG_ROOT}/.build-id/{:02x}/{}.debug",
        first,
        hex(rest)
    )))
}

fn has_debug_info(bytes: &[u8]) -> bool {
    crate::symbolize::elf::bytes_have_symbols(bytes)
}

pub fn find(module: &ModuleFile) -> Option<DebugFile> {
    let build_id = module.build_id();
    if let Some(path) = build_id_path(build_id)
        && let Some((file, map)) = map(&path)
    {
        let same = object::File::parse(&map[..])
            .ok()
            .and_then(|f| f.build_id().ok().flatten().map(|b| b == build_id))
            .unwrap_or(false);
        if same && has_debug_info(&map) {
            return Some(DebugFile {
                path,
                file,
                map,
                how: "build-id",
            });
        }
    }
    let file = object::File::parse(module.bytes()).ok()?;
    let (name, crc) = file.gnu_debuglink().ok().flatten()?;
    let name = std::str::from_utf8(name).ok()?;
    // A link is a plain file name; anything else would look outside the debug directories.
    if name.contains('/') || name.is_empty() {
        return None;
    }
    let dir = Path::new(&module.path).parent()?;
    let under_root = PathBuf::from(format!("{DEBUG_ROOT}{}", dir.display()));
    [
        dir.join(name),
        dir.join(".debug").join(name),
        under_root.join(name),
    ]
    .into_iter()
    .find_map(|path| {
        let (file, map) = map(&path)?;
        (crc32fast::hash(&map) == crc && has_debug_info(&map)).then_some(DebugFile {
            path,
            file,
            map,
            how: "debuglink",
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_id_paths_split_the_first_byte() {
        assert_eq!(
            build_id_path(&[0xab, 0xcd, 0x01]),
            Some(PathBuf::from("/usr/lib/debug/.build-id/ab/cd01.debug"))
        );
        assert_eq!(build_id_path(&[]), None);
    }
}
