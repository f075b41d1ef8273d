//! `profile.pb.gz` (and `offcpu.pb.gz`): pprof's gzipped `profile.proto`, the format `go tool
//! pprof`, Pyroscope, Parca, Grafana, Polar Signals and speedscope all read.
//!
//! Mapping from the recording:
//! - one pprof Sample per distinct (process, thread, stack, span), values `samples/count` and
//!   `cpu/nanoseconds` (count × the sampling period);
//! - one Location per sampled address, its inlined functions as several Lines (innermost
//!   first), as pprof wants them, rather than the separate `_[i]` frames of the folded output;
//!   an address that could not be symbolized keeps its Location without Lines, so pprof can
//!   symbolize it later from the Mapping's file and build id;
//! - one Mapping per module and load address (per process under ASLR), page-aligned with its
//!   file offset, as `/proc/PID/maps` had it, so pprof can symbolize from the file itself;
//! - labels: `pid`, `thread_id` (numbers), `process`, `thread`, and inside a span the
//!   innermost span's `span_name` and `span_id` (16 hex digits, the label names and id format
//!   of Pyroscope's span profiles; the id is the `id` of spans.json) plus `span_path`, the span
//!   names root first joined by `;` (as in profile-spans.folded).
use std::{
    collections::{BTreeMap, HashMap},
    io::{self, Write},
};

use prost::Message;

use crate::{
    model::{CURRENT, Generation, ModuleKind, ProcessIndex, Recording},
    spans::SpanPaths,
};

pub mod proto;

/// Separates the span names of the `span_path` label, root first.
pub const SPAN_PATH_SEPARATOR: &str = ";";

/// Pages mmap works in: a mapping starts on a page, at a page-aligned file offset.
const PAGE: u64 = 4096;

/// One Mapping: a module where it was loaded, known by its load bias (address − file offset,
/// the same for every address of one mapped segment), so a module loaded at several
/// addresses (processes under ASLR) gets one Mapping each, each exact.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct MappingKey {
    module: u32,
    bias: u64,
}

/// What the sampled locations of one Mapping tell about it.
struct Range {
    /// Order of first use, for stable ids.
    first_use: usize,
    lowest: u64,
    highest: u64,
    all_symbolized: bool,
    any_file: bool,
    any_line_number: bool,
}

struct Builder<'a> {
    rec: &'a Recording,
    spans: SpanPaths<'a>,
    p: proto::Profile,
    strings: HashMap<String, i64>,
    locations: HashMap<u32, u64>,
    functions: HashMap<u32, u64>,
    mappings: HashMap<MappingKey, Range>,
    /// Per `p.location`, its Mapping; ids are given once all are known.
    location_mappings: Vec<Option<MappingKey>>,
}

impl<'a> Builder<'a> {
    fn new(rec: &'a Recording) -> Self {
        let mut b = Self {
            rec,
            spans: SpanPaths::new(rec),
            p: proto::Profile::default(),
            strings: HashMap::new(),
            locations: HashMap::new(),
            functions: HashMap::new(),
            mappings: HashMap::new(),
            location_mappings: Vec::new(),
        };
        // The format requires string 0 to be "".
        b.str("");
        let m = rec.meta();
        b.p.time_nanos = i64::try_from(m.start_unix_ns).unwrap_or(i64::MAX);
        b.p.duration_nanos = i64::try_from(rec.duration_ns()).unwrap_or(i64::MAX);
        let command = format!("command: {}", rec.command_line());
        let how = format!(
            "profiler {}: pid {}, {} Hz, call graph {}",
            m.profiler_version,
            m.pid,
            m.frequency_hz,
            if m.call_graph.is_empty() {
                "fp"
            } else {
                &m.call_graph
            }
        );
        b.p.comment = vec![b.str(&command), b.str(&how)];
        b
    }

    fn str(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.p.string_table.len() as i64;
        self.p.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.str(ty),
            unit: self.str(unit),
        }
    }

    fn function(&mut self, index: u32) -> u64 {
        if let Some(&id) = self.functions.get(&index) {
            return id;
        }
        let (name, file) = match self.rec.functions.get(index as usize) {
            Some(f) => (f.name.as_str(), f.file.as_str()),
            None => ("[unknown]", ""),
        };
        let name = self.str(name);
        let filename = self.str(file);
        let id = self.p.function.len() as u64 + 1;
        self.p.function.push(proto::Function {
            id,
            name,
            system_name: name,
            filename,
        });
        self.functions.insert(index, id);
        id
    }

    fn location(&mut self, index: u32) -> u64 {
        if let Some(&id) = self.locations.get(&index) {
            return id;
        }
        let id = self.p.location.len() as u64 + 1;
        let rec = self.rec;
        let mut out = proto::Location {
            id,
            ..Default::default()
        };
        let mut key = None;
        if let Some(loc) = rec.locations.get(index as usize) {
            out.address = loc.address;
            for line in &loc.lines {
                out.line.push(proto::Line {
                    function_id: self.function(line.function),
                    line: i64::from(line.line),
                });
            }
            if let Some(module) = loc.module.checked_sub(1)
                && rec.modules.get(module as usize).is_some()
            {
                // The model's offset is where the address was looked up: one byte before a
                // return address. An address and its file offset agree modulo the page
                // size, which recovers the offset of the address itself.
                let offset = loc
                    .offset
                    .saturating_add(loc.address.wrapping_sub(loc.offset) % PAGE);
                let k = MappingKey {
                    module,
                    bias: loc.address.wrapping_sub(offset),
                };
                let first_use = self.mappings.len();
                let r = self.mappings.entry(k).or_insert(Range {
                    first_use,
                    lowest: loc.address,
                    highest: loc.address,
                    all_symbolized: true,
                    any_file: false,
                    any_line_number: false,
                });
                r.lowest = r.lowest.min(loc.address);
                r.highest = r.highest.max(loc.address);
                r.all_symbolized &= !loc.lines.is_empty();
                r.any_line_number |= loc.lines.iter().any(|l| l.line != 0);
                r.any_file |= loc.lines.iter().any(|l| {
                    rec.functions
                        .get(l.function as usize)
                        .is_some_and(|f| !f.file.is_empty())
                });
                key = Some(k);
            }
        }
        self.p.location.push(out);
        self.location_mappings.push(key);
        self.locations.insert(index, id);
        id
    }

    fn stack(&mut self, stack: u32) -> Vec<u64> {
        let rec = self.rec;
        match rec.stacks.get(stack as usize) {
            Some(s) => s.locations.iter().map(|&l| self.location(l)).collect(),
            None => Vec::new(),
        }
    }

    fn str_label(&mut self, key: &str, value: &str) -> proto::Label {
        proto::Label {
            key: self.str(key),
            str: self.str(value),
            ..Default::default()
        }
    }

    fn num_label(&mut self, key: &str, value: u64) -> proto::Label {
        proto::Label {
            key: self.str(key),
            num: i64::try_from(value).unwrap_or(i64::MAX),
            ..Default::default()
        }
    }

    fn labels(
        &mut self,
        (pid, generation): (u32, Generation),
        tid: u32,
        span: u64,
    ) -> Vec<proto::Label> {
        let rec = self.rec;
        let mut labels = vec![
            self.num_label("pid", u64::from(pid)),
            self.str_label("process", rec.process_name_in(pid, generation)),
            self.num_label("thread_id", u64::from(tid)),
        ];
        if let Some(name) = rec.thread_name(tid) {
            labels.push(self.str_label("thread", name));
        }
        // Where a process ran, for tools that filter or group by it (`-tagfocus`, Pyroscope).
        if let Some(cgroup) = rec
            .processes
            .iter()
            .find(|p| p.pid == pid)
            .map(|p| p.cgroup.as_str())
            .filter(|c| !c.is_empty())
        {
            labels.push(self.str_label("cgroup", cgroup));
            if let Some(id) = crate::model::Process::container_id(cgroup) {
                labels.push(self.str_label("container_id", id));
            }
        }
        if span != 0 {
            labels.push(self.str_label("span_id", &format!("{span:016x}")));
            let path = self.spans.path(pid, span);
            // An id whose begin the recording never saw has no name.
            if let Some(name) = path.last() {
                labels.push(self.str_label("span_name", name));
                let path = path.join(SPAN_PATH_SEPARATOR);
                labels.push(self.str_label("span_path", &path));
            }
        }
        labels
    }

    /// Writes the Mappings, the target's executable first (pprof names the profile after its
    /// first mapping), each spanning the whole pages of its sampled addresses, as the
    /// process's own mapping would: pprof's symbolizer expects page-aligned mappings.
    fn finish(mut self) -> proto::Profile {
        let rec = self.rec;
        let exe = rec.meta().exe.as_str();
        let ranges = std::mem::take(&mut self.mappings);
        let mut keys: Vec<(&MappingKey, &Range)> = ranges.iter().collect();
        keys.sort_by_key(|(k, r)| {
            let not_exe = rec
                .modules
                .get(k.module as usize)
                .is_none_or(|m| m.path != exe);
            (not_exe, r.first_use)
        });
        let mut ids: HashMap<MappingKey, u64> = HashMap::new();
        let mut mappings = Vec::with_capacity(keys.len());
        for (i, (k, r)) in keys.into_iter().enumerate() {
            let Some(module) = rec.modules.get(k.module as usize) else {
                continue;
            };
            let id = i as u64 + 1;
            ids.insert(*k, id);
            let memory_start = r.lowest - r.lowest % PAGE;
            // What pprof may rely on instead of symbolizing the file again.
            let symbolized =
                r.all_symbolized && (module.has_symbols || module.kind != ModuleKind::File as i32);
            let build_id: String = module.build_id.iter().map(|b| format!("{b:02x}")).collect();
            mappings.push(proto::Mapping {
                id,
                memory_start,
                memory_limit: (r.highest | (PAGE - 1)).saturating_add(1),
                file_offset: memory_start.wrapping_sub(k.bias),
                filename: self.str(&module.path),
                build_id: self.str(&build_id),
                has_functions: symbolized,
                has_filenames: symbolized && r.any_file,
                has_line_numbers: symbolized && r.any_line_number,
                has_inline_frames: symbolized,
            });
        }
        self.p.mapping = mappings;
        for (loc, key) in self.p.location.iter_mut().zip(&self.location_mappings) {
            loc.mapping_id = key.and_then(|k| ids.get(&k)).copied().unwrap_or(0);
        }
        self.p
    }
}

/// The CPU profile: every sample, `samples/count` and `cpu/nanoseconds`.
pub fn cpu_profile(rec: &Recording) -> proto::Profile {
    let mut b = Builder::new(rec);
    let samples = b.value_type("samples", "count");
    let cpu = b.value_type("cpu", "nanoseconds");
    b.p.sample_type = vec![samples, cpu];
    b.p.period_type = Some(cpu);
    let period = rec.sample_period_ns();
    b.p.period = i64::try_from(period).unwrap_or(i64::MAX);
    b.p.default_sample_type = cpu.r#type;
    let index = ProcessIndex::new(rec);
    let mut counts: BTreeMap<((u32, Generation), u32, u32, u64), u64> = BTreeMap::new();
    for s in &rec.samples {
        let process = (s.pid, index.generation(s.pid, s.timestamp_ns));
        *counts.entry((process, s.tid, s.stack, s.span)).or_default() += 1;
    }
    for ((process, tid, stack, span), n) in counts {
        let sample = proto::Sample {
            location_id: b.stack(stack),
            value: vec![
                i64::try_from(n).unwrap_or(i64::MAX),
                i64::try_from(n.saturating_mul(period)).unwrap_or(i64::MAX),
            ],
            label: b.labels(process, tid, span),
        };
        b.p.sample.push(sample);
    }
    b.finish()
}

/// The off-CPU profile (`--off-cpu`): `off_cpu/nanoseconds` and `intervals/count` per stack
/// where threads left the CPU, the `state` label `blocked` or `preempted` (runnable, waiting
/// for a CPU). None when the recording has no off-CPU data.
pub fn off_cpu_profile(rec: &Recording) -> Option<proto::Profile> {
    rec.off_cpu_info.as_ref()?;
    let mut b = Builder::new(rec);
    let intervals = b.value_type("intervals", "count");
    let off_cpu = b.value_type("off_cpu", "nanoseconds");
    b.p.sample_type = vec![intervals, off_cpu];
    b.p.period_type = Some(off_cpu);
    b.p.period = 1;
    b.p.default_sample_type = off_cpu.r#type;
    // (pid, tid, stack, span, runnable) → (ns, intervals)
    type Key = (u32, u32, u32, u64, bool);
    let mut sums: BTreeMap<Key, (u64, u64)> = BTreeMap::new();
    for o in &rec.off_cpu {
        let e = sums
            .entry((o.pid, o.tid, o.stack, o.span, o.runnable))
            .or_default();
        e.0 = e.0.saturating_add(o.total_ns);
        e.1 = e.1.saturating_add(o.count);
    }
    for ((pid, tid, stack, span, runnable), (ns, count)) in sums {
        // Summed in the kernel without times: the process's current name.
        let mut label = b.labels((pid, CURRENT), tid, span);
        label.push(b.str_label("state", if runnable { "preempted" } else { "blocked" }));
        let sample = proto::Sample {
            location_id: b.stack(stack),
            value: vec![
                i64::try_from(count).unwrap_or(i64::MAX),
                i64::try_from(ns).unwrap_or(i64::MAX),
            ],
            label,
        };
        b.p.sample.push(sample);
    }
    Some(b.finish())
}

/// The heap profile (`--alloc`), in the shape `go tool pprof` reads as one: sample types
/// `alloc_objects/count`, `alloc_space/bytes`, `inuse_objects/count`, `inuse_space/bytes`
/// (estimated from the byte sampling, scaled back), one sample per (process, thread, stack,
/// span); `inuse` is what was never freed while recorded. The `bytes` numeric label is the
/// size asked for, as Go's heap profiles carry it. None without allocation data.
pub fn alloc_profile(rec: &Recording) -> Option<proto::Profile> {
    let info = rec.alloc_info.as_ref()?;
    let mut b = Builder::new(rec);
    let alloc_objects = b.value_type("alloc_objects", "count");
    let alloc_space = b.value_type("alloc_space", "bytes");
    let inuse_objects = b.value_type("inuse_objects", "count");
    let inuse_space = b.value_type("inuse_space", "bytes");
    b.p.sample_type = vec![alloc_objects, alloc_space, inuse_objects, inuse_space];
    b.p.period_type = Some(alloc_space);
    b.p.period = i64::try_from(info.sample_bytes).unwrap_or(i64::MAX);
    b.p.default_sample_type = inuse_space.r#type;
    // (pid, generation, tid, stack, span, size) → [objects, bytes, inuse objects, inuse bytes]
    type Key = (u32, Generation, u32, u32, u64, u64);
    let index = ProcessIndex::new(rec);
    let mut sums: BTreeMap<Key, [f64; 4]> = BTreeMap::new();
    for a in &rec.allocs {
        let (n, bytes) = crate::alloc::scale(a.size, info.sample_bytes);
        let key = (
            a.pid,
            index.generation(a.pid, a.timestamp_ns),
            a.tid,
            a.stack,
            a.span,
            a.size,
        );
        let e = sums.entry(key).or_default();
        e[0] += n;
        e[1] += bytes;
        if a.live {
            e[2] += n;
            e[3] += bytes;
        }
    }
    for ((pid, generation, tid, stack, span, size), v) in sums {
        let mut label = b.labels((pid, generation), tid, span);
        let mut size_label = b.num_label("bytes", size);
        size_label.num_unit = b.str("bytes");
        label.push(size_label);
        let sample = proto::Sample {
            location_id: b.stack(stack),
            value: v.iter().map(|x| x.round() as i64).collect(),
            label,
        };
        b.p.sample.push(sample);
    }
    Some(b.finish())
}

/// The lock contention profile (`--locks`), in the shape of Go's mutex profile:
/// `contentions/count` and `delay/nanoseconds` per waiting stack, the waited-on address as the
/// label `lock` (its symbol when it has one). None without lock data.
pub fn locks_profile(rec: &Recording) -> Option<proto::Profile> {
    rec.lock_info.as_ref()?;
    let mut b = Builder::new(rec);
    let contentions = b.value_type("contentions", "count");
    let delay = b.value_type("delay", "nanoseconds");
    b.p.sample_type = vec![contentions, delay];
    b.p.period_type = Some(contentions);
    b.p.period = 1;
    b.p.default_sample_type = delay.r#type;
    for w in &rec.lock_waits {
        let mut label = b.labels((w.pid, CURRENT), w.tid, w.span);
        label.push(b.str_label("lock", &crate::locks::lock_frame(w)));
        let sample = proto::Sample {
            location_id: b.stack(w.stack),
            value: vec![
                i64::try_from(w.count).unwrap_or(i64::MAX),
                i64::try_from(w.total_ns).unwrap_or(i64::MAX),
            ],
            label,
        };
        b.p.sample.push(sample);
    }
    Some(b.finish())
}

/// Writes `profile` gzipped, as every pprof reader expects it.
pub fn write(profile: &proto::Profile, w: &mut dyn Write) -> io::Result<()> {
    let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Location, Stack, tests::sample_recording};

    fn string(p: &proto::Profile, i: i64) -> &str {
        &p.string_table[i as usize]
    }

    fn label<'p>(p: &'p proto::Profile, s: &proto::Sample, key: &str) -> Option<&'p str> {
        s.label
            .iter()
            .find(|l| string(p, l.key) == key && l.str != 0)
            .map(|l| string(p, l.str))
    }

    #[test]
    fn cpu_profile_counts_samples_and_time() {
        let rec = sample_recording();
        let p = cpu_profile(&rec);
        assert_eq!(p.string_table[0], "");
        let types: Vec<(&str, &str)> = p
            .sample_type
            .iter()
            .map(|t| (string(&p, t.r#type), string(&p, t.unit)))
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        let period = rec.sample_period_ns() as i64;
        assert_eq!(p.period, period);
        let counts: i64 = p.sample.iter().map(|s| s.value[0]).sum();
        let ns: i64 = p.sample.iter().map(|s| s.value[1]).sum();
        assert_eq!(counts, 10);
        assert_eq!(ns, 10 * period);
        assert_eq!(p.duration_nanos, 100_000_000);
        assert_eq!(p.time_nanos, 1_795_467_600_000_000_000);
        // A window of the recording starts later, on the wall clock too.
        let w = cpu_profile(&rec.window(Some(std::time::Duration::from_millis(20)), None));
        assert_eq!(w.time_nanos, 1_795_467_600_020_000_000);
        assert_eq!(w.duration_nanos, 80_000_000);
        let comments: Vec<&str> = p.comment.iter().map(|&c| string(&p, c)).collect();
        assert_eq!(comments[0], "command: /usr/bin/app --fast");
    }

    #[test]
    fn inlined_functions_are_lines_of_one_location() {
        let p = cpu_profile(&sample_recording());
        // Location 2 of the model: hot_a with inlined_helper inlined into it.
        let loc = p
            .location
            .iter()
            .find(|l| l.address == 0x300)
            .expect("hot_a's location");
        let names: Vec<&str> = loc
            .line
            .iter()
            .map(|l| {
                let f = &p.function[l.function_id as usize - 1];
                string(&p, f.name)
            })
            .collect();
        assert_eq!(names, ["inlined_helper", "hot_a"]);
        // Unsymbolized: a Location without Lines, in a Mapping pprof may symbolize.
        let stripped = p
            .location
            .iter()
            .find(|l| l.address == 0x1234)
            .expect("stripped location");
        assert!(stripped.line.is_empty());
        let m = &p.mapping[stripped.mapping_id as usize - 1];
        assert_eq!(string(&p, m.filename), "/lib/libstripped.so");
        assert!(!m.has_functions);
        let app = p
            .mapping
            .iter()
            .find(|m| string(&p, m.filename) == "/usr/bin/app")
            .expect("app mapping");
        assert!(app.has_functions && app.has_inline_frames);
        assert_eq!((app.memory_start, app.memory_limit), (0, 0x1000));
        assert_eq!(app.file_offset, 0);
        // Every id a sample or line names exists.
        for s in &p.sample {
            for &id in &s.location_id {
                assert!(id >= 1 && id as usize <= p.location.len());
            }
        }
    }

    #[test]
    fn mappings_are_exact_per_load_address_and_the_executable_comes_first() {
        let mut rec = sample_recording();
        rec.meta.as_mut().expect("meta").exe = "/usr/bin/app".into();
        // app's text at file offset 0x1000 loaded at 0x5555_0000_1000 in one process and
        // 0x7777_0000_1000 in another; one location is a return address looked up a byte
        // before it.
        let loc = |address: u64, offset: u64| Location {
            module: 1,
            offset,
            address,
            lines: vec![crate::model::Line {
                function: 0,
                line: 0,
            }],
        };
        rec.locations = vec![
            loc(0x5555_0000_1234, 0x1234),
            loc(0x5555_0000_2001, 0x2000), // return address: looked up at 0x2000
            loc(0x7777_0000_1234, 0x1234),
            Location {
                module: 3,
                offset: 0xffff_ffff_8100_0000,
                address: 0xffff_ffff_8100_0000,
                lines: vec![],
            },
        ];
        rec.stacks = vec![
            Stack {
                locations: vec![3, 0, 1],
            },
            Stack { locations: vec![2] },
        ];
        for (i, s) in rec.samples.iter_mut().enumerate() {
            s.stack = (i % 2) as u32;
        }
        let p = cpu_profile(&rec);
        let ranges: Vec<(&str, u64, u64, u64)> = p
            .mapping
            .iter()
            .map(|m| {
                (
                    string(&p, m.filename),
                    m.memory_start,
                    m.memory_limit,
                    m.file_offset,
                )
            })
            .collect();
        assert_eq!(
            ranges,
            [
                ("/usr/bin/app", 0x5555_0000_1000, 0x5555_0000_3000, 0x1000),
                ("/usr/bin/app", 0x7777_0000_1000, 0x7777_0000_2000, 0x1000),
                (
                    "[kernel.kallsyms]",
                    0xffff_ffff_8100_0000,
                    0xffff_ffff_8100_1000,
                    0xffff_ffff_8100_0000
                ),
            ]
        );
        for l in &p.location {
            let m = &p.mapping[l.mapping_id as usize - 1];
            assert!((m.memory_start..m.memory_limit).contains(&l.address));
        }
    }

    #[test]
    fn span_labels_name_the_innermost_span_and_its_path() {
        let mut rec = sample_recording();
        let span = |id, parent, name: &str| crate::model::Span {
            id,
            parent,
            name: name.into(),
            pid: 42,
            ..Default::default()
        };
        rec.spans = vec![span(7, 0, "request"), span(9, 7, "db_query")];
        rec.samples[0].span = 9;
        rec.samples[1].span = 7;
        rec.samples[2].span = 1234; // began before the recording: id only
        let p = cpu_profile(&rec);
        let in_query: Vec<&proto::Sample> = p
            .sample
            .iter()
            .filter(|s| label(&p, s, "span_name") == Some("db_query"))
            .collect();
        assert_eq!(in_query.len(), 1);
        assert_eq!(in_query[0].value[0], 1);
        assert_eq!(
            label(&p, in_query[0], "span_path"),
            Some("request;db_query")
        );
        assert_eq!(label(&p, in_query[0], "span_id"), Some("0000000000000009"));
        assert_eq!(label(&p, in_query[0], "process"), Some("app"));
        assert_eq!(label(&p, in_query[0], "thread"), Some("app"));
        let unknown = p
            .sample
            .iter()
            .find(|s| label(&p, s, "span_id") == Some("00000000000004d2"))
            .expect("sample in an unknown span");
        assert_eq!(label(&p, unknown, "span_name"), None);
        let pid = p.string_table.iter().position(|s| s == "pid").unwrap_or(0) as i64;
        assert!(
            p.sample
                .iter()
                .all(|s| s.label.iter().any(|l| l.key == pid && l.num == 42))
        );
    }

    #[test]
    fn cgroup_and_container_labels_when_known() {
        let mut rec = sample_recording();
        let id = "c0".repeat(32);
        rec.processes[0].cgroup = format!("/system.slice/docker-{id}.scope");
        rec.processes.push(crate::model::Process {
            pid: 77,
            comm: "child".into(),
            ..Default::default()
        });
        rec.samples[0].pid = 77;
        let p = cpu_profile(&rec);
        let of = |pid: u32| {
            p.sample
                .iter()
                .find(|s| label(&p, s, "process") == Some(if pid == 42 { "app" } else { "child" }))
                .expect("a sample of the process")
        };
        assert_eq!(
            label(&p, of(42), "cgroup"),
            Some(rec.processes[0].cgroup.as_str())
        );
        assert_eq!(label(&p, of(42), "container_id"), Some(id.as_str()));
        assert_eq!(label(&p, of(77), "cgroup"), None, "unknown: no label");
        assert_eq!(label(&p, of(77), "container_id"), None);
    }

    #[test]
    fn off_cpu_profile_sums_time_with_its_state() {
        let mut rec = sample_recording();
        assert!(off_cpu_profile(&rec).is_none());
        rec.off_cpu_info = Some(Default::default());
        let off = |runnable, total_ns| crate::model::OffCpu {
            pid: 42,
            tid: 42,
            stack: 1,
            runnable,
            total_ns,
            count: 2,
            ..Default::default()
        };
        rec.off_cpu = vec![off(false, 5_000), off(true, 700), off(false, 300)];
        let p = off_cpu_profile(&rec).expect("off-CPU data");
        let mut by_state: Vec<(&str, i64, i64)> = p
            .sample
            .iter()
            .map(|s| (label(&p, s, "state").unwrap_or("?"), s.value[0], s.value[1]))
            .collect();
        by_state.sort();
        assert_eq!(by_state, [("blocked", 4, 5_300), ("preempted", 2, 700)]);
        assert_eq!(string(&p, p.sample_type[1].r#type), "off_cpu");
    }

    #[test]
    fn written_gzipped_and_decodes_back() {
        use std::io::Read;
        let p = cpu_profile(&sample_recording());
        let mut gz = Vec::new();
        write(&p, &mut gz).expect("in memory");
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut raw)
            .expect("gunzip");
        assert_eq!(proto::Profile::decode(raw.as_slice()).ok(), Some(p));
    }
}
