//! `/proc/kallsyms`, parsed once for every reader: the ranges of the kernel functions the
//! off-CPU and lock stacks are trimmed at, the kernel locks' names, and the eBPF programs.
//!
//! A sample taken while one of our programs runs in a target's context (a span uprobe, the
//! off-CPU or lock programs) has the program's JIT code in its kernel stack. kallsyms lists
//! such code as `bpf_prog_<tag>_<name> [bpf]` only while the program is loaded, and the
//! recording is symbolized after the programs are gone: the address then falls past the
//! kernel's last symbol and took its name (`__stop_runtime_ptr_USER_PTR_MAX` on 6.18).
//! So the entries are read before the programs are unloaded, and an address inside one
//! takes its name.

/// One line of kallsyms.
#[derive(Clone, Debug)]
pub struct Entry {
    pub addr: u64,
    /// `T`, `t`, `D`, `b`…: text, data, bss, read-only; upper case when global.
    pub kind: char,
    pub name: String,
    /// Listed as `[bpf]`: an eBPF program's JIT code, or one of its functions.
    pub bpf: bool,
}

/// `/proc/kallsyms` as read once: the kernel's, its modules' and the loaded programs' symbols,
/// by address, without those it hides (kptr_restrict shows addresses as 0).
#[derive(Debug, Default)]
pub struct Kallsyms(Vec<Entry>);

impl Kallsyms {
    /// Empty where kallsyms cannot be read; ~40 ms for its ~120k lines.
    pub fn read() -> Self {
        std::fs::read_to_string("/proc/kallsyms")
            .map(|t| Self::parse(&t))
            .unwrap_or_default()
    }

    /// `ADDRESS TYPE NAME [MODULE]` lines.
    pub fn parse(text: &str) -> Self {
        let mut entries: Vec<Entry> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?.chars().next()?;
                let name = f.next()?.to_string();
                let bpf = f.next() == Some("[bpf]");
                (addr != 0).then_some(Entry {
                    addr,
                    kind,
                    name,
                    bpf,
                })
            })
            .collect();
        entries.sort_by_key(|e| e.addr);
        Self(entries)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.0
    }

    /// kallsyms gives no sizes: an entry ends where the next greater address begins.
    fn end_of(&self, i: usize) -> Option<u64> {
        let start = self.0.get(i)?.addr;
        self.0
            .get(i + 1..)?
            .iter()
            .map(|e| e.addr)
            .find(|&a| a > start)
    }

    /// Addresses of each of `names` kallsyms has: from its address to the next entry's.
    pub fn function_ranges(&self, names: &[&str]) -> Vec<std::ops::Range<u64>> {
        (0..self.0.len())
            .filter(|&i| names.contains(&self.0[i].name.as_str()))
            .filter_map(|i| Some(self.0[i].addr..self.end_of(i)?))
            .collect()
    }

    /// The loaded programs' entries, each ending at the next entry of any kind.
    pub fn bpf_programs(&self) -> BpfPrograms {
        let mut programs: Vec<(u64, u64, String)> = (0..self.0.len())
            .filter(|&i| self.0[i].bpf)
            .map(|i| {
                let start = self.0[i].addr;
                let end = self.end_of(i).unwrap_or(start.saturating_add(LAST_IMAGE));
                (start, end, self.0[i].name.clone())
            })
            .collect();
        programs.dedup_by_key(|p| p.0);
        BpfPrograms(programs)
    }
}

/// `[bpf]` entries of kallsyms, by address: (start, end, name).
#[derive(Clone, Debug, Default)]
pub struct BpfPrograms(Vec<(u64, u64, String)>);

/// The last entry of all is given this much (a JIT image is a few KiB to a few hundred).
const LAST_IMAGE: u64 = 1 << 20;

impl BpfPrograms {
    /// The `[bpf]` lines of a kallsyms text.
    pub fn parse(text: &str) -> Self {
        Kallsyms::parse(text).bpf_programs()
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

    #[test]
    fn a_function_ends_at_the_next_greater_address_whatever_the_line_order() {
        let k = Kallsyms::parse(
            "ffffffff81000200 T schedule\n\
             ffffffff81000100 t __schedule\n\
             ffffffff81000200 T schedule_alias\n\
             ffffffff81000300 T last\n\
             0000000000000000 T hidden\n",
        );
        assert_eq!(k.entries().len(), 4);
        assert_eq!(
            k.function_ranges(&["__schedule"]),
            vec![0xffff_ffff_8100_0100..0xffff_ffff_8100_0200]
        );
        // The last entry has no end: left out rather than guessed.
        assert_eq!(
            k.function_ranges(&["schedule", "last", "hidden"]),
            vec![0xffff_ffff_8100_0200..0xffff_ffff_8100_0300]
        );
    }
}
