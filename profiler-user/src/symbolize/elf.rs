//! Just enough ELF reading to tell a stripped file from one with symbols: blazesym answers
//! "unknown" for both an address in a stripped binary and one between functions, and the user
//! must be told which it is.

/// Section names of an ELF64 little-endian file; None when it is not one.
pub fn section_names(bytes: &[u8]) -> Option<Vec<String>> {
    if bytes.get(..4)? != b"\x7fELF" || *bytes.get(4)? != 2 || *bytes.get(5)? != 1 {
        return None;
    }
    // Offsets come from the file: any value, so no overflow on the way.
    let field = |o: usize, n: usize| bytes.get(o..o.checked_add(n)?);
    let u16_at = |o: usize| Some(u16::from_le_bytes(field(o, 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(field(o, 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(field(o, 8)?.try_into().ok()?));
    let shoff = usize::try_from(u64_at(0x28)?).ok()?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    if shentsize < 0x40 || shstrndx >= shnum {
        return None;
    }
    let section = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let strtab = section(shstrndx)?;
    let str_off = usize::try_from(u64_at(strtab.checked_add(0x18)?)?).ok()?;
    let str_size = usize::try_from(u64_at(strtab.checked_add(0x20)?)?).ok()?;
    let strings = bytes.get(str_off..str_off.checked_add(str_size)?)?;
    let mut names = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let name_off = usize::try_from(u32_at(section(i)?)?).ok()?;
        let rest = strings.get(name_off..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        names.push(String::from_utf8_lossy(&rest[..end]).into_owned());
    }
    Some(names)
}

/// Whether an ELF image carries a symbol table or DWARF. Bytes that are not ELF64 count as
/// having symbols, so that no false "stripped" warning is printed.
pub fn bytes_have_symbols(bytes: &[u8]) -> bool {
    match section_names(bytes) {
        Some(names) => names
            .iter()
            .any(|n| n == ".symtab" || n == ".debug_info" || n == ".gnu_debugdata"),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_test_binary_has_symbols() {
        let exe = std::env::current_exe().expect("current exe");
        let bytes = std::fs::read(&exe).expect("read exe");
        let names = section_names(&bytes).expect("an ELF64 file");
        assert!(names.iter().any(|n| n == ".text"));
        assert!(bytes_have_symbols(&bytes));
    }

    #[test]
    fn garbage_is_not_elf() {
        assert_eq!(section_names(b"not an elf file at all"), None);
        assert_eq!(section_names(b"\x7fELF"), None);
        let mut truncated = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        truncated.truncate(0x40);
        assert_eq!(section_names(&truncated), None);
    }
}
