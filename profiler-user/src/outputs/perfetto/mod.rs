//! `trace.perfetto-trace`: a Perfetto protobuf trace with the process, its threads and every
//! CPU sample with its callstack, so selecting a time range in the Perfetto UI shows its flame
//! graph.
//!
//! The writer streams: each packet goes to the output as it is produced, and interned data
//! (function names, frames, callstacks, mappings) is sent with the first packet that needs it,
//! so memory grows with the number of distinct stacks, never with the number of samples.
//! Everything is on one trusted sequence whose first packet clears the incremental state.
//! Timestamps are CLOCK_BOOTTIME, Perfetto's default trace clock, as taken by the BPF side.
pub mod proto;

use std::{
    collections::{HashMap, HashSet},
    io::{self, Write},
};

use prost::Message;
use proto::*;

use crate::model::{FrameKind, OffCpuInterval, Recording, Sample, Span};

pub const SEQUENCE_ID: u32 = 1;

/// Track uuids: one namespace per kind so a pid and a tid never collide.
pub fn process_uuid(pid: u32) -> u64 {
    (1 << 32) | u64::from(pid)
}

pub fn thread_uuid(tid: u32) -> u64 {
    (2 << 32) | u64::from(tid)
}

/// Tracks that hold span lifetimes; concurrent spans that do not nest need separate lanes.
/// The kind takes the top byte and the lane the 24 bits under it: an async server with
/// 65,536 requests in flight has that many lanes, and 16 bits wrapped lane 65,536 onto lane
/// 0. 2^24 lanes would take more spans open at once than a recording holds in memory.
pub fn span_lane_uuid(pid: u32, lane: u32) -> u64 {
    (3 << 56) | (u64::from(lane & 0xff_ffff) << 32) | u64::from(pid)
}

/// `--perfetto-spans`: where spans appear in the trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SpanTracks {
    /// Enter→exit slices on the thread tracks (where each span ran).
    Thread,
    /// Each span's whole lifetime (begin→end, across threads) on tracks under the process.
    Async,
    #[default]
    Both,
}

pub struct TraceWriter<W: Write> {
    out: W,
    started: bool,
    function_names: HashMap<String, u64>,
    /// (location, inline depth) → frame iid.
    frames: HashMap<(u32, u32), u64>,
    /// Model stack index → callstack iid and the CPU mode of its leaf.
    callstacks: HashMap<u32, (u64, i32)>,
    /// Model module indices (one-based) already sent.
    mappings: HashSet<u32>,
    packets: u64,
}

impl<W: Write> TraceWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            started: false,
            function_names: HashMap::new(),
            frames: HashMap::new(),
            callstacks: HashMap::new(),
            mappings: HashSet::new(),
            packets: 0,
        }
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    fn write_packet(&mut self, mut packet: TracePacket) -> io::Result<()> {
        packet.trusted_packet_sequence_id = Some(SEQUENCE_ID);
        if !self.started {
            // Readers drop packets that need interned state until they see it cleared.
            packet.sequence_flags = Some(SEQ_INCREMENTAL_STATE_CLEARED);
            packet.first_packet_on_sequence = Some(true);
            self.started = true;
        }
        // Each packet is field 1 (`repeated TracePacket packet`) of the Trace message, so the
        // file is a valid Trace however many packets it has.
        let len = packet.encoded_len();
        let mut buf = Vec::with_capacity(len + 11);
        buf.push(0x0a);
        prost::encoding::encode_varint(len as u64, &mut buf);
        packet
            .encode(&mut buf)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.out.write_all(&buf)?;
        self.packets += 1;
        Ok(())
    }

    pub fn process(
        &mut self,
        ts: u64,
        pid: u32,
        name: &str,
        cmdline: &[String],
    ) -> io::Result<u64> {
        let uuid = process_uuid(pid);
        self.write_packet(TracePacket {
            timestamp: Some(ts),
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(uuid),
                process: Some(ProcessDescriptor {
                    pid: Some(pid as i32),
                    cmdline: cmdline.to_vec(),
                    process_name: Some(name.to_string()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })?;
        Ok(uuid)
    }

    pub fn thread(&mut self, ts: u64, pid: u32, tid: u32, name: &str) -> io::Result<u64> {
        let uuid = thread_uuid(tid);
        self.write_packet(TracePacket {
            timestamp: Some(ts),
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(uuid),
                parent_uuid: Some(process_uuid(pid)),
                thread: Some(ThreadDescriptor {
                    pid: Some(pid as i32),
                    tid: Some(i64::from(tid)),
                    thread_name: Some(name.to_string()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })?;
        Ok(uuid)
    }

    /// Interns what `stack` needs that was not sent yet into `data`; returns its iid and the
    /// CPU mode of its leaf.
    fn intern_stack(&mut self, rec: &Recording, stack: u32, data: &mut InternedData) -> (u64, i32) {
        if let Some(&known) = self.callstacks.get(&stack) {
            return known;
        }
        let frames = rec.frames(stack);
        let mode = match frames.first() {
            Some(f) if f.kind == FrameKind::Kernel => MODE_KERNEL,
            _ => MODE_USER,
        };
        let mut frame_ids = Vec::with_capacity(frames.len());
        // Perfetto wants the root first; the model lists the leaf first.
        for frame in frames.iter().rev() {
            let key = (frame.location.unwrap_or(u32::MAX), frame.inline_depth);
            let next_frame = self.frames.len() as u64 + 1;
            let iid = match self.frames.get(&key) {
                Some(&iid) => iid,
                None => {
                    let name = frame.name.to_string();
                    let next_name = self.function_names.len() as u64 + 1;
                    let name_iid = *self.function_names.entry(name).or_insert_with_key(|name| {
                        data.function_names.push(InternedString {
                            iid: Some(next_name),
                            str: Some(name.as_bytes().to_vec()),
                        });
                        next_name
                    });
                    let loc = frame.location.and_then(|l| rec.locations.get(l as usize));
                    let mapping = loc.map(|l| l.module).filter(|&m| m != 0);
                    if let Some(m) = mapping {
                        self.intern_mapping(rec, m, data);
                    }
                    data.frames.push(proto::Frame {
                        iid: Some(next_frame),
                        function_name_id: Some(name_iid),
                        mapping_id: mapping.map(u64::from),
                        rel_pc: loc.map(|l| l.offset),
                    });
                    self.frames.insert(key, next_frame);
                    next_frame
                }
            };
            frame_ids.push(iid);
        }
        let iid = u64::from(stack) + 1;
        data.callstacks.push(Callstack {
            iid: Some(iid),
            frame_ids,
        });
        self.callstacks.insert(stack, (iid, mode));
        (iid, mode)
    }

    /// Mapping, path and build id all use the model's one-based module index as iid.
    fn intern_mapping(&mut self, rec: &Recording, module: u32, data: &mut InternedData) {
        if !self.mappings.insert(module) {
            return;
        }
        let Some(m) = rec.modules.get(module as usize - 1) else {
            return;
        };
        let iid = u64::from(module);
        data.mapping_paths.push(InternedString {
            iid: Some(iid),
            str: Some(m.path.as_bytes().to_vec()),
        });
        let build_id = (!m.build_id.is_empty()).then(|| {
            let hex: String = m.build_id.iter().map(|b| format!("{b:02x}")).collect();
            data.build_ids.push(InternedString {
                iid: Some(iid),
                str: Some(hex.into_bytes()),
            });
            iid
        });
        data.mappings.push(Mapping {
            iid: Some(iid),
            build_id,
            path_string_ids: vec![iid],
        });
    }

    pub fn perf_sample(&mut self, rec: &Recording, s: &Sample) -> io::Result<()> {
        let mut data = InternedData::default();
        let (callstack, mode) = self.intern_stack(rec, s.stack, &mut data);
        self.write_packet(TracePacket {
            timestamp: Some(s.timestamp_ns),
            interned_data: (!data.is_empty()).then_some(data),
            sequence_flags: Some(SEQ_NEEDS_INCREMENTAL_STATE),
            perf_sample: Some(PerfSample {
                cpu: Some(s.cpu),
                pid: Some(s.pid),
                tid: Some(s.tid),
                callstack_iid: Some(callstack),
                cpu_mode: Some(mode),
                kernel_records_lost: None,
            }),
            ..Default::default()
        })
    }

    pub fn track(&mut self, ts: u64, uuid: u64, parent: u64, name: &str) -> io::Result<()> {
        self.write_packet(TracePacket {
            timestamp: Some(ts),
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(uuid),
                parent_uuid: Some(parent),
                name: Some(name.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    pub fn slice_begin(
        &mut self,
        ts: u64,
        track: u64,
        category: &str,
        name: &str,
        annotations: Vec<DebugAnnotation>,
    ) -> io::Result<()> {
        self.write_packet(TracePacket {
            timestamp: Some(ts),
            track_event: Some(TrackEvent {
                debug_annotations: annotations,
                r#type: Some(TYPE_SLICE_BEGIN),
                track_uuid: Some(track),
                categories: vec![category.to_string()],
                name: Some(name.to_string()),
            }),
            ..Default::default()
        })
    }

    pub fn slice_end(&mut self, ts: u64, track: u64) -> io::Result<()> {
        self.write_packet(TracePacket {
            timestamp: Some(ts),
            track_event: Some(TrackEvent {
                r#type: Some(TYPE_SLICE_END),
                track_uuid: Some(track),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Records that `lost` samples never reached userspace, so trace_processor's stats show it.
    pub fn lost_samples(&mut self, ts: u64, lost: u64) -> io::Result<()> {
        self.write_packet(TracePacket {
            timestamp: Some(ts),
            perf_sample: Some(PerfSample {
                kernel_records_lost: Some(lost),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Something on the timeline, in the order it must be written for its track.
enum Item<'a> {
    Sample(&'a Sample),
    Begin {
        track: u64,
        slice: Slice<'a>,
        lifetime: bool,
    },
    End {
        track: u64,
    },
}

/// What a slice shows: a span, or a thread off CPU (`--off-cpu`).
#[derive(Clone, Copy)]
enum Slice<'a> {
    Span(&'a Span),
    OffCpu(&'a OffCpuInterval),
}

/// Properly nested slices for one track: intervals sorted by (begin, longest first); one that
/// starts inside another but outlives it is clipped to it, since a track cannot show
/// overlapping slices that do not nest.
fn nest<'a>(
    mut intervals: Vec<(u64, u64, Slice<'a>)>,
    track: u64,
    lifetime: bool,
    out: &mut Vec<(u64, Item<'a>)>,
) {
    // A file can hold an interval that ends before it begins: as it is, its end would sort
    // before its begin and close whatever slice was open on the track.
    for i in &mut intervals {
        i.1 = i.1.max(i.0);
    }
    intervals.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut open: Vec<u64> = Vec::new();
    for (begin, end, slice) in intervals {
        while let Some(&top) = open.last() {
            if top > begin {
                break;
            }
            out.push((top, Item::End { track }));
            open.pop();
        }
        let end = open.last().map_or(end, |&top| end.min(top));
        out.push((
            begin,
            Item::Begin {
                track,
                slice,
                lifetime,
            },
        ));
        open.push(end);
    }
    while let Some(top) = open.pop() {
        out.push((top, Item::End { track }));
    }
}

/// Spreads span lifetimes over as few lanes as keep every lane properly nested.
fn lanes<'a>(spans: impl Iterator<Item = &'a Span>) -> Vec<Vec<&'a Span>> {
    let mut order: Vec<&Span> = spans.collect();
    order.sort_by(|a, b| a.begin_ns.cmp(&b.begin_ns).then(b.end_ns.cmp(&a.end_ns)));
    let mut lanes: Vec<(Vec<u64>, Vec<&Span>)> = Vec::new();
    for s in order {
        let fits = lanes.iter_mut().position(|(open, _)| {
            while open.last().is_some_and(|&end| end <= s.begin_ns) {
                open.pop();
            }
            open.last().is_none_or(|&end| end >= s.end_ns)
        });
        let lane = match fits {
            Some(l) => l,
            None => {
                lanes.push((Vec::new(), Vec::new()));
                lanes.len() - 1
            }
        };
        lanes[lane].0.push(s.end_ns);
        lanes[lane].1.push(s);
    }
    lanes.into_iter().map(|(_, spans)| spans).collect()
}

/// Slice name and full description of an off-CPU interval's stack.
fn off_cpu_slice_name(rec: &Recording, o: &OffCpuInterval) -> (String, String) {
    let stack = crate::offcpu::describe_stack(rec, o.stack);
    let leaf = stack.split(" ← ").next().unwrap_or("?");
    let what = if o.runnable { "preempted" } else { "off-CPU" };
    (format!("{what}: {leaf}"), stack)
}

fn annotations(s: &Span, lifetime: bool) -> Vec<DebugAnnotation> {
    let mut a = vec![DebugAnnotation::uint("span_id", s.id)];
    if lifetime {
        a.push(DebugAnnotation::uint("parent_id", s.parent));
        if !s.target.is_empty() {
            a.push(DebugAnnotation::string("target", s.target.clone()));
        }
        if !s.file.is_empty() {
            a.push(DebugAnnotation::string(
                "location",
                format!("{}:{}", s.file, s.line),
            ));
        }
        let tids: Vec<String> = s.tids.iter().map(u32::to_string).collect();
        a.push(DebugAnnotation::string("threads", tids.join(",")));
        a.push(DebugAnnotation::uint("cpu_samples", s.samples));
        a.push(DebugAnnotation::boolean("incomplete", s.incomplete));
    }
    a
}

/// Writes the whole recording: tracks first, then samples and span slices in time order.
pub fn write(rec: &Recording, span_tracks: SpanTracks, out: &mut dyn Write) -> io::Result<()> {
    let m = rec.meta();
    let ts0 = m.start_boottime_ns;
    let mut w = TraceWriter::new(out);
    let mut pids: Vec<u32> = rec.processes.iter().map(|p| p.pid).collect();
    pids.extend(rec.samples.iter().map(|s| s.pid));
    pids.extend(rec.spans.iter().map(|s| s.pid));
    pids.extend(rec.off_cpu_intervals.iter().map(|o| o.pid));
    // Every thread track below names its process's track as parent: it must exist.
    pids.extend(rec.threads.iter().map(|t| t.pid));
    pids.extend(rec.span_runs.iter().map(|r| r.pid));
    pids.sort_unstable();
    pids.dedup();
    for &pid in &pids {
        let cmdline = rec
            .processes
            .iter()
            .find(|p| p.pid == pid)
            .map(|p| p.command.as_slice())
            .unwrap_or_default();
        w.process(ts0, pid, rec.process_name(pid), cmdline)?;
    }
    let mut threads: Vec<(u32, u32)> = rec.samples.iter().map(|s| (s.tid, s.pid)).collect();
    threads.extend(rec.threads.iter().map(|t| (t.tid, t.pid)));
    threads.extend(rec.span_runs.iter().map(|r| (r.tid, r.pid)));
    threads.extend(rec.off_cpu_intervals.iter().map(|o| (o.tid, o.pid)));
    threads.sort_unstable();
    threads.dedup_by_key(|t| t.0);
    for &(tid, pid) in &threads {
        let name = rec.thread_name(tid).unwrap_or_default();
        w.thread(ts0, pid, tid, name)?;
    }

    let mut items: Vec<(u64, Item<'_>)> = rec
        .samples
        .iter()
        .map(|s| (s.timestamp_ns, Item::Sample(s)))
        .collect();
    let by_id: HashMap<(u32, u64), &Span> = rec.spans.iter().map(|s| ((s.pid, s.id), s)).collect();
    let mut per_thread: HashMap<u32, Vec<(u64, u64, Slice<'_>)>> = HashMap::new();
    // A thread runs no span code while off CPU, so its off-CPU intervals nest inside its
    // span runs on the same track.
    for o in &rec.off_cpu_intervals {
        per_thread
            .entry(o.tid)
            .or_default()
            .push((o.begin_ns, o.end_ns, Slice::OffCpu(o)));
    }
    if span_tracks != SpanTracks::Async {
        for r in &rec.span_runs {
            if let Some(s) = by_id.get(&(r.pid, r.span)) {
                per_thread
                    .entry(r.tid)
                    .or_default()
                    .push((r.begin_ns, r.end_ns, Slice::Span(s)));
            }
        }
    }
    for (tid, runs) in per_thread {
        nest(runs, thread_uuid(tid), false, &mut items);
    }
    if span_tracks != SpanTracks::Thread {
        for &pid in &pids {
            let spans = rec.spans.iter().filter(|s| s.pid == pid);
            for (lane, members) in lanes(spans).into_iter().enumerate() {
                let uuid = span_lane_uuid(pid, lane as u32);
                w.track(ts0, uuid, process_uuid(pid), "spans")?;
                let intervals = members
                    .into_iter()
                    .map(|s| (s.begin_ns, s.end_ns, Slice::Span(s)))
                    .collect();
                nest(intervals, uuid, true, &mut items);
            }
        }
    }
    // Stable: each track's own order (built above) survives equal timestamps.
    items.sort_by_key(|(ts, _)| *ts);
    let mut off_cpu_names: HashMap<(u32, bool), (String, String)> = HashMap::new();
    for (ts, item) in items {
        match item {
            Item::Sample(s) => w.perf_sample(rec, s)?,
            Item::Begin {
                track,
                slice: Slice::Span(span),
                lifetime,
            } => {
                let name = if lifetime && span.incomplete {
                    format!("{} [incomplete]", span.name)
                } else {
                    span.name.clone()
                };
                w.slice_begin(ts, track, "span", &name, annotations(span, lifetime))?;
            }
            Item::Begin {
                track,
                slice: Slice::OffCpu(o),
                ..
            } => {
                let (name, stack) = off_cpu_names
                    .entry((o.stack, o.runnable))
                    .or_insert_with(|| off_cpu_slice_name(rec, o));
                let annotations = vec![
                    DebugAnnotation::string("stack", stack.clone()),
                    DebugAnnotation::boolean("preempted", o.runnable),
                ];
                w.slice_begin(ts, track, "off-cpu", name, annotations)?;
            }
            Item::End { track } => w.slice_end(ts, track)?,
        }
    }
    let lost = rec.counters().lost();
    if lost > 0 {
        w.lost_samples(m.end_boottime_ns, lost)?;
    }
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_past_65536_keep_their_own_tracks() {
        let pid = 4_194_303;
        let uuids = [
            span_lane_uuid(pid, 0),
            span_lane_uuid(pid, 65_536),
            span_lane_uuid(pid, 0xff_ffff),
            process_uuid(pid),
            thread_uuid(pid),
        ];
        let distinct: std::collections::HashSet<u64> = uuids.iter().copied().collect();
        assert_eq!(distinct.len(), uuids.len(), "{uuids:x?}");
    }
    use crate::model::tests::sample_recording;

    /// Splits a trace into its packets (field 1, length-delimited).
    fn packets(bytes: &[u8]) -> Vec<TracePacket> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            assert_eq!(rest[0], 0x0a, "every record is Trace.packet");
            rest = &rest[1..];
            let len = prost::encoding::decode_varint(&mut rest).expect("length") as usize;
            out.push(TracePacket::decode(&rest[..len]).expect("packet decodes"));
            rest = &rest[len..];
        }
        out
    }

    #[test]
    fn interned_ids_are_defined_before_use_and_once() {
        let rec = sample_recording();
        let mut bytes = Vec::new();
        write(&rec, SpanTracks::Both, &mut bytes).expect("write to memory");
        let packets = packets(&bytes);
        assert_eq!(
            packets[0].sequence_flags,
            Some(SEQ_INCREMENTAL_STATE_CLEARED)
        );
        assert!(
            packets
                .iter()
                .all(|p| p.trusted_packet_sequence_id == Some(SEQUENCE_ID))
        );

        let (mut names, mut frames, mut stacks, mut maps) = (
            HashSet::new(),
            HashSet::new(),
            HashSet::new(),
            HashSet::new(),
        );
        let mut samples = 0;
        let mut thread_tracks = HashSet::new();
        let mut last_ts = 0;
        for p in &packets {
            if let Some(d) = &p.interned_data {
                for s in &d.function_names {
                    assert!(names.insert(s.iid), "function name interned twice");
                }
                for m in &d.mappings {
                    assert!(maps.insert(m.iid), "mapping interned twice");
                }
                for f in &d.frames {
                    assert!(names.contains(&f.function_name_id));
                    if f.mapping_id.is_some() {
                        assert!(maps.contains(&f.mapping_id));
                    }
                    assert!(frames.insert(f.iid), "frame interned twice");
                }
                for c in &d.callstacks {
                    for f in &c.frame_ids {
                        assert!(frames.contains(&Some(*f)), "frame before callstack");
                    }
                    assert!(stacks.insert(c.iid));
                }
            }
            if let Some(t) = &p.track_descriptor
                && let Some(th) = &t.thread
            {
                thread_tracks.insert(th.tid);
            }
            if let Some(s) = &p.perf_sample
                && s.callstack_iid.is_some()
            {
                assert!(stacks.contains(&s.callstack_iid), "callstack defined first");
                assert!(
                    thread_tracks.contains(&s.tid.map(i64::from)),
                    "thread described"
                );
                assert_eq!(p.sequence_flags, Some(SEQ_NEEDS_INCREMENTAL_STATE));
                let ts = p.timestamp.unwrap_or(0);
                assert!(ts >= last_ts, "samples in time order");
                last_ts = ts;
                samples += 1;
            }
        }
        assert_eq!(samples, rec.samples.len());
        // The lost-sample marker.
        let lost: u64 = packets
            .iter()
            .filter_map(|p| p.perf_sample.as_ref()?.kernel_records_lost)
            .sum();
        assert_eq!(lost, 2);
    }

    /// Process tracks (pid → name) of a trace.
    fn process_tracks(bytes: &[u8]) -> Vec<(u32, String)> {
        packets(bytes)
            .iter()
            .filter_map(|p| p.track_descriptor.as_ref()?.process.as_ref())
            .map(|p| {
                (
                    p.pid.unwrap_or(-1) as u32,
                    p.process_name.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn kernel_threads_and_idle_have_tracks_only_when_asked() {
        use crate::outputs::{Format, Parts, write_format};
        let rec = crate::model::tests::with_kernel_tasks();
        let trace = |kernel_threads| {
            let mut bytes = Vec::new();
            let parts = Parts {
                kernel_threads,
                ..Parts::NONE
            };
            write_format(
                &rec,
                Format::Perfetto,
                parts,
                std::path::Path::new("-"),
                &mut bytes,
            )
            .expect("write to memory");
            bytes
        };
        let shown = trace(false);
        let pids: Vec<u32> = process_tracks(&shown).into_iter().map(|t| t.0).collect();
        assert_eq!(pids, [2, 42, 901, 903]);
        let samples = packets(&shown)
            .iter()
            .filter(|p| {
                p.perf_sample
                    .as_ref()
                    .is_some_and(|s| s.callstack_iid.is_some())
            })
            .count();
        assert_eq!(samples, 13);
        let pids: Vec<u32> = process_tracks(&trace(true))
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(pids, [0, 2, 42, 900, 901, 902, 903]);
    }

    /// An interval that ends before it begins (a damaged file) is empty where it begins; the
    /// slice it sits in still ends at its own end.
    #[test]
    fn an_interval_ending_before_it_begins_closes_nothing_else() {
        let (outer, inner) = (Span::default(), Span::default());
        let mut out = Vec::new();
        nest(
            vec![
                (1000, 1050, Slice::Span(&outer)),
                (1030, 1020, Slice::Span(&inner)),
            ],
            7,
            false,
            &mut out,
        );
        let order: Vec<(u64, bool)> = out
            .iter()
            .map(|(t, item)| (*t, matches!(item, Item::Begin { .. })))
            .collect();
        assert_eq!(
            order,
            [(1000, true), (1030, true), (1030, false), (1050, false)]
        );
    }

    #[test]
    fn every_thread_track_has_its_process_track() {
        let mut rec = sample_recording();
        // Known as a thread only: no process entry, no sample.
        rec.threads.push(crate::model::Thread {
            tid: 601,
            pid: 600,
            name: "lonely".into(),
        });
        let mut bytes = Vec::new();
        write(&rec, SpanTracks::Both, &mut bytes).expect("write to memory");
        let mut described = HashSet::new();
        for p in packets(&bytes) {
            let Some(t) = p.track_descriptor else {
                continue;
            };
            if let Some(parent) = t.parent_uuid {
                assert!(described.contains(&parent), "parent of {:?} first", t.uuid);
            }
            described.insert(t.uuid.unwrap_or(0));
        }
        assert!(described.contains(&process_uuid(600)));
        assert!(described.contains(&thread_uuid(601)));
    }

    fn recording_with_spans() -> Recording {
        use crate::model::SpanRun;
        let mut rec = sample_recording();
        let span = |id, parent, name: &str, begin, end, incomplete| Span {
            id,
            parent,
            name: name.into(),
            begin_ns: begin,
            end_ns: end,
            incomplete,
            pid: 42,
            tids: vec![42],
            ..Default::default()
        };
        // Two overlapping requests (not nested: need two lanes), a child in the first, and
        // an incomplete one.
        rec.spans = vec![
            span(1, 0, "request", 1_000_000_000, 1_050_000_000, false),
            span(2, 1, "db_query", 1_010_000_000, 1_020_000_000, false),
            span(3, 0, "request", 1_040_000_000, 1_080_000_000, false),
            span(4, 0, "tail", 1_085_000_000, 1_100_000_000, true),
        ];
        let run = |span, begin, end| SpanRun {
            span,
            tid: 42,
            begin_ns: begin,
            end_ns: end,
            pid: 42,
        };
        // Span 3's run starts inside span 1's and outlives it: must be clipped to nest.
        rec.span_runs = vec![
            run(1, 1_000_000_000, 1_050_000_000),
            run(2, 1_010_000_000, 1_020_000_000),
            run(3, 1_045_000_000, 1_060_000_000),
        ];
        rec
    }

    /// Slice begins and ends per track, checking they balance and never go negative.
    fn slice_balance(packets: &[TracePacket]) -> HashMap<u64, (u32, u32)> {
        let mut depth: HashMap<u64, (i64, u32, u32)> = HashMap::new();
        let mut last_ts = 0;
        for p in packets {
            let Some(e) = &p.track_event else { continue };
            let ts = p.timestamp.unwrap_or(0);
            assert!(ts >= last_ts, "events in time order");
            last_ts = ts;
            let track = e.track_uuid.expect("track");
            let d = depth.entry(track).or_default();
            match e.r#type {
                Some(TYPE_SLICE_BEGIN) => {
                    d.0 += 1;
                    d.1 += 1;
                }
                Some(TYPE_SLICE_END) => {
                    d.0 -= 1;
                    d.2 += 1;
                    assert!(d.0 >= 0, "end without begin on track {track}");
                }
                other => panic!("unexpected type {other:?}"),
            }
        }
        depth
            .into_iter()
            .map(|(t, (open, b, e))| {
                assert_eq!(open, 0, "track {t} balanced");
                (t, (b, e))
            })
            .collect()
    }

    #[test]
    fn span_slices_nest_per_track_and_lanes_separate_overlaps() {
        let rec = recording_with_spans();
        let mut bytes = Vec::new();
        write(&rec, SpanTracks::Both, &mut bytes).expect("write");
        let all = packets(&bytes);
        let balance = slice_balance(&all);
        assert_eq!(balance[&thread_uuid(42)], (3, 3));
        let lane0 = balance[&span_lane_uuid(42, 0)];
        let lane1 = balance[&span_lane_uuid(42, 1)];
        assert_eq!(lane0.0 + lane1.0, 4, "every span once");
        assert!(
            !balance.contains_key(&span_lane_uuid(42, 2)),
            "two lanes suffice"
        );
        let names: Vec<&str> = all
            .iter()
            .filter_map(|p| p.track_event.as_ref()?.name.as_deref())
            .collect();
        assert!(names.contains(&"tail [incomplete]"));
        let lanes_described = all
            .iter()
            .filter(|p| {
                p.track_descriptor
                    .as_ref()
                    .is_some_and(|t| t.name.as_deref() == Some("spans"))
            })
            .count();
        assert_eq!(lanes_described, 2);

        for (mode, thread, lanes) in [
            (SpanTracks::Thread, true, false),
            (SpanTracks::Async, false, true),
        ] {
            let mut bytes = Vec::new();
            write(&rec, mode, &mut bytes).expect("write");
            let b = slice_balance(&packets(&bytes));
            assert_eq!(b.contains_key(&thread_uuid(42)), thread);
            assert_eq!(b.contains_key(&span_lane_uuid(42, 0)), lanes);
        }
    }

    #[test]
    fn callstacks_are_root_first_with_inlined_frames() {
        let rec = sample_recording();
        let mut bytes = Vec::new();
        write(&rec, SpanTracks::Both, &mut bytes).expect("write");
        let packets = packets(&bytes);
        let data: Vec<&InternedData> = packets
            .iter()
            .filter_map(|p| p.interned_data.as_ref())
            .collect();
        let name_of = |iid: u64| -> String {
            let frame = data
                .iter()
                .flat_map(|d| &d.frames)
                .find(|f| f.iid == Some(iid))
                .expect("frame");
            let name = data
                .iter()
                .flat_map(|d| &d.function_names)
                .find(|n| n.iid == frame.function_name_id)
                .expect("name");
            String::from_utf8_lossy(name.str.as_deref().unwrap_or_default()).into_owned()
        };
        let first = data
            .iter()
            .flat_map(|d| &d.callstacks)
            .find(|c| c.iid == Some(1))
            .expect("stack 0");
        let names: Vec<String> = first.frame_ids.iter().map(|&f| name_of(f)).collect();
        assert_eq!(names, ["main", "compute", "hot_a", "inlined_helper"]);
    }
}
