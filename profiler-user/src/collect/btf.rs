//! Member offsets of kernel structures, from the kernel's own BTF
//! (`/sys/kernel/btf/vmlinux`).
//!
//! Raw tracepoints hand their programs the tracepoint's arguments (pointers to kernel
//! structures), not a formatted record: the programs read fields at offsets that differ
//! between kernel builds. This is the part of CO-RE the profiler needs, done once at load.
//! Only the type section is walked; nothing but struct/union members is decoded.

use crate::error::{Error, Result};

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// One type of the type section: its kind, name, `size_or_type` and where its trailing
/// data (members, params…) starts.
#[derive(Clone, Copy)]
struct Type {
    kind: u32,
    name: u32,
    vlen: usize,
    kind_flag: bool,
    size_or_type: u32,
    extra: usize,
}

pub struct Btf {
    data: Box<dyn AsRef<[u8]> + Send>,
    strings: std::ops::Range<usize>,
    /// Indexed by type id; id 0 is `void`.
    types: Vec<Type>,
}

impl Btf {
    pub fn vmlinux() -> Result<Self> {
        // Mapped where the kernel allows it (6.16 and later): read, the file comes 4 KiB per
        // read() into a fresh 5 MB buffer, most of this parse's time in every start-up.
        if let Ok(file) = std::fs::File::open(VMLINUX)
            // SAFETY: the kernel's BTF never changes while it runs; the mapping is private and
            // read-only (the kernel refuses shared or writable mappings of it).
            && let Ok(map) = unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) }
            && let Ok(btf) = Self::parse(map)
        {
            return Ok(btf);
        }
        let data = std::fs::read(VMLINUX).map_err(|e| {
            Error::io(
                format!(
                    "reading {VMLINUX} (the kernel's BTF; a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed)"
                ),
                e,
            )
        })?;
        Self::parse(data).map_err(|what| Error::Internal(format!("{VMLINUX}: {what}")))
    }

    pub fn parse(data: impl AsRef<[u8]> + Send + 'static) -> std::result::Result<Self, String> {
        let bytes = data.as_ref();
        let u32_at = |at: usize| -> std::result::Result<u32, String> {
            bytes
                .get(at..at.checked_add(4).ok_or("offset overflows")?)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| format!("truncated at byte {at}"))
        };
        let magic = bytes.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if magic != Some(MAGIC) {
            return Err("not little-endian BTF".into());
        }
        let hdr_len = u32_at(4)? as usize;
        let section =
            |off: usize, len: usize| -> std::result::Result<std::ops::Range<usize>, String> {
                let start = hdr_len.checked_add(off).ok_or("offset overflows")?;
                let end = start.checked_add(len).ok_or("length overflows")?;
                if end > bytes.len() {
                    return Err("a section runs past the end".into());
                }
                Ok(start..end)
            };
        let type_section = section(u32_at(8)? as usize, u32_at(12)? as usize)?;
        let strings = section(u32_at(16)? as usize, u32_at(20)? as usize)?;
        let mut types = vec![Type {
            kind: 0,
            name: 0,
            vlen: 0,
            kind_flag: false,
            size_or_type: 0,
            extra: 0,
        }];
        let mut at = type_section.start;
        while at < type_section.end {
            let info = u32_at(at + 4)?;
            let ty = Type {
                kind: (info >> 24) & 0x1f,
                name: u32_at(at)?,
                vlen: (info & 0xffff) as usize,
                kind_flag: info >> 31 != 0,
                size_or_type: u32_at(at + 8)?,
                extra: at + 12,
            };
            let trailing = match ty.kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * ty.vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * ty.vlen,
                _ => 0,
            };
            at = ty.extra + trailing;
            types.push(ty);
        }
        if at != type_section.end {
            return Err("the last type runs past its section".into());
        }
        Ok(Self {
            data: Box::new(data),
            strings,
            types,
        })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b = (*self.data).as_ref().get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn name(&self, offset: u32) -> &[u8] {
        let start = self.strings.start.saturating_add(offset as usize);
        let rest = (*self.data)
            .as_ref()
            .get(start..self.strings.end)
            .unwrap_or_default();
        rest.split(|&b| b == 0).next().unwrap_or_default()
    }

    /// The type behind typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type;
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous struct and union
    /// members (where randomized or grouped layouts put fields).
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32> {
        let found = self
            .types
            .iter()
            .filter(|t| t.kind == KIND_STRUCT && self.name(t.name) == name.as_bytes())
            .find_map(|t| self.find_member(t, member.as_bytes(), 0));
        found.ok_or_else(|| {
            Error::Internal(format!(
                "the kernel's BTF ({VMLINUX}) has no {name}.{member}: this kernel is not supported"
            ))
        })
    }

    fn find_member(&self, ty: &Type, member: &[u8], base_bits: u32) -> Option<u32> {
        for i in 0..ty.vlen {
            let at = ty.extra + 12 * i;
            let (name, type_id, raw) =
                (self.u32_at(at)?, self.u32_at(at + 4)?, self.u32_at(at + 8)?);
            // With kind_flag the high byte holds a bitfield size: only the low 24 bits are the
            // bit offset.
            let bits = base_bits.checked_add(if ty.kind_flag { raw & 0xff_ffff } else { raw })?;
            let member_name = self.name(name);
            if member_name == member {
                return (bits % 8 == 0).then_some(bits / 8);
            }
            if member_name.is_empty()
                && let Some(inner) = self.resolve(type_id)
                && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some(found) = self.find_member(inner, member, bits)
            {
                return Some(found);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_struct_pid_and_tgid_are_found_in_this_kernel() {
        let Ok(btf) = Btf::vmlinux() else {
            panic!("this machine has BTF ({VMLINUX}); the profiler needs it");
        };
        let pid = btf.member_offset("task_struct", "pid").expect("pid");
        let tgid = btf.member_offset("task_struct", "tgid").expect("tgid");
        // pid_t pid; pid_t tgid; are adjacent in every kernel since 2.6.
        assert_eq!(tgid, pid + 4);
        assert!(btf.member_offset("task_struct", "no_such_field").is_err());
        // The two CPU-time fields that close an interval whose return went unreported.
        let sum = btf
            .member_offset("sched_entity", "sum_exec_runtime")
            .expect("sum");
        let prev = btf
            .member_offset("sched_entity", "prev_sum_exec_runtime")
            .expect("prev");
        assert_ne!(sum, prev);
        assert!(btf.member_offset("task_struct", "se").is_ok());
    }

    #[test]
    fn malformed_btf_is_refused_not_panicked_on() {
        assert!(Btf::parse(vec![]).is_err());
        assert!(Btf::parse(vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut header = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        header.extend_from_slice(&[0; 8]);
        assert!(Btf::parse(header).is_err());
    }
}
