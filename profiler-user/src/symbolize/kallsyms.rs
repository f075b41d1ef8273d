//! The eBPF programs' entries of `/proc/kallsyms`, read while the programs are loaded.
//!
//! A sample taken while one of our programs runs in a target's context (a span uprobe, the
//! off-CPU or lock programs) has the program's JIT code in its kernel stack. kallsyms lists
//! such code as `bpf_prog_<tag>_<name> [bpf]` only while the program is loaded, and the
//! recording is symbolized after the programs are gone: the address then falls past the
//! kernel's last symbol and took its name (`__stop_runtime_ptr_USER_PTR_MAX` on 6.18).
//! So the entries are read before detaching and consulted first.

/// `[bpf]` entries of kallsyms, by address.
#[derive(Clone, Debug, Default)]
pub struct BpfPrograms(Vec<(u64, String)>);

/// A JIT image is a few KiB to a few hundred: an address further than this past the last
/// program's start is not taken as its code.
const MAX_IMAGE: u64 = 1 << 20;

impl BpfPrograms {
    /// Reads the loaded programs' entries; none where kallsyms cannot be read or hides its
    /// addresses (kptr_restrict shows them as 0).
    pub fn read() -> Self {
        std::fs::read_to_string("/proc/kallsyms")
            .map(|t| Self::parse(&t))
            .unwrap_or_default()
    }

    /// `ADDRESS TYPE NAME [bpf]` lines of a kallsyms text.
    pub fn parse(text: &str) -> Self {
        let mut programs: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let name = f.nth(1)?;
                (f.next() == Some("[bpf]") && addr != 0).then(|| (addr, name.to_string()))
            })
            .collect();
        programs.sort_unstable();
        programs.dedup_by_key(|p| p.0);
        Self(programs)
    }

    /// The program whose code `addr` is in, with its start: the last one starting at or
    /// below it. The caller still prefers a kernel symbol that starts nearer.
    pub fn find(&self, addr: u64) -> Option<(u64, &str)> {
        let i = self.0.partition_point(|p| p.0 <= addr).checked_sub(1)?;
        let (start, name) = self.0.get(i)?;
        (addr - start < MAX_IMAGE).then_some((*start, name.as_str()))
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
ffffffffa0100000 t some_module_fn\t[ext4]
0000000000000000 t bpf_prog_hidden\t[bpf]
";

    #[test]
    fn only_bpf_entries_are_kept_in_address_order_and_found_by_range() {
        let p = BpfPrograms::parse(TEXT);
        assert_eq!(p.0.len(), 2);
        assert_eq!(p.find(0xffff_ffff_a000_0fff), None);
        assert_eq!(
            p.find(0xffff_ffff_a000_1abc),
            Some((
                0xffff_ffff_a000_1000,
                "bpf_prog_0123456789abcdef_cpu_sample"
            ))
        );
        assert_eq!(
            p.find(0xffff_ffff_a000_2000),
            Some((
                0xffff_ffff_a000_2000,
                "bpf_prog_6deef7357e7b4530_sd_fw_egress"
            ))
        );
        assert_eq!(p.find(0xffff_ffff_a000_2000 + MAX_IMAGE), None);
        assert!(BpfPrograms::parse("garbage\n\n1 2\n").is_empty());
    }
}
