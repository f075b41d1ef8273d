//! The eBPF programs' entries of `/proc/kallsyms`, read while the programs are loaded.
//!
//! A sample taken while one of our programs runs in a target's context (a span uprobe, the
//! off-CPU or lock programs) has the program's JIT code in its kernel stack. kallsyms lists
//! such code as `bpf_prog_<tag>_<name> [bpf]` only while the program is loaded, and the
//! recording is symbolized after the programs are gone: the address then falls past the
//! kernel's last symbol and took its name (`__stop_runtime_ptr_USER_PTR_MAX` on 6.18).
//! So the entries are read before the programs are unloaded, and an address inside one
//! takes its name.

/// `[bpf]` entries of kallsyms, by address: (start, end, name).
#[derive(Clone, Debug, Default)]
pub struct BpfPrograms(Vec<(u64, u64, String)>);

/// kallsyms gives no sizes: a program's code ends where the next entry of any kind begins,
/// and the last entry of all is given this much (a JIT image is a few KiB to a few hundred).
const LAST_IMAGE: u64 = 1 << 20;

impl BpfPrograms {
    /// Reads the loaded programs' entries; none where kallsyms cannot be read or hides its
    /// addresses (kptr_restrict shows them as 0).
    pub fn read() -> Self {
        std::fs::read_to_string("/proc/kallsyms")
            .map(|t| Self::parse(&t))
            .unwrap_or_default()
    }

    /// The `ADDRESS TYPE NAME [bpf]` lines of a kallsyms text, each ending at the next
    /// greater address of any line (kernel text, module or program).
    pub fn parse(text: &str) -> Self {
        let mut entries: Vec<(u64, Option<&str>)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let name = f.nth(1)?;
                let bpf = f.next() == Some("[bpf]");
                (addr != 0).then_some((addr, bpf.then_some(name)))
            })
            .collect();
        entries.sort_unstable();
        let mut programs = Vec::new();
        for (i, &(start, name)) in entries.iter().enumerate() {
            let Some(name) = name else { continue };
            let end = entries[i + 1..]
                .iter()
                .map(|e| e.0)
                .find(|&a| a > start)
                .unwrap_or(start.saturating_add(LAST_IMAGE));
            programs.push((start, end, name.to_string()));
        }
        programs.dedup_by_key(|p| p.0);
        Self(programs)
    }

    /// The program whose code `addr` is in.
    pub fn find(&self, addr: u64) -> Option<&str> {
        let i = self.0.partition_point(|p| p.0 <= addr).checked_sub(1)?;
        let (_, end, name) = self.0.get(i)?;
        (addr < *end).then_some(name.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
ffffffff81000000 T _stext
ffffffff83b266f4 R __stop_runtime_ptr_USER_PTR_MAX
ffffffffa0002000 t bpf_prog_6deef7357e7b4530_sd_fw_egress\t[bpf]
ffffffffa0001000 t bpf_prog_0123456789abcdef_cpu_sample\t[bpf]
ffffffffa0001800 t some_module_fn\t[ext4]
0000000000000000 t bpf_prog_hidden\t[bpf]
";

    #[test]
    fn a_program_runs_from_its_entry_to_the_next_entry_of_any_kind() {
        let p = BpfPrograms::parse(TEXT);
        assert_eq!(p.0.len(), 2);
        assert_eq!(p.find(0xffff_ffff_a000_0fff), None);
        assert_eq!(
            p.find(0xffff_ffff_a000_1abc - 0x300),
            Some("bpf_prog_0123456789abcdef_cpu_sample")
        );
        // A module's function after the program is not the program's.
        assert_eq!(p.find(0xffff_ffff_a000_1800), None);
        assert_eq!(p.find(0xffff_ffff_a000_1fff), None);
        assert_eq!(
            p.find(0xffff_ffff_a000_2000),
            Some("bpf_prog_6deef7357e7b4530_sd_fw_egress")
        );
        assert!(p.find(0xffff_ffff_a000_2000 + LAST_IMAGE - 1).is_some());
        assert_eq!(p.find(0xffff_ffff_a000_2000 + LAST_IMAGE), None);
        assert_eq!(p.find(0xffff_ffff_8100_0010), None);
        assert!(BpfPrograms::parse("garbage\n\n1 2\n").is_empty());
    }
}
