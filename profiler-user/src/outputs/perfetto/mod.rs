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

use crate::model::{FrameKind, Recording, Sample};

pub const SEQUENCE_ID: u32 = 1;

/// Track uuids: one namespace per kind so a pid and a tid never collide.
pub fn process_uuid(pid: u32) -> u64 {
    (1 << 32) | u64::from(pid)
}

pub fn thread_uuid(tid: u32) -> u64 {
    (2 << 32) | u64::from(tid)
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

/// Writes the whole recording: process and thread tracks first, then samples in time order.
pub fn write(rec: &Recording, out: &mut dyn Write) -> io::Result<()> {
    let m = rec.meta();
    let mut w = TraceWriter::new(out);
    let mut pids: Vec<u32> = rec.processes.iter().map(|p| p.pid).collect();
    pids.extend(rec.samples.iter().map(|s| s.pid));
    pids.sort_unstable();
    pids.dedup();
    for &pid in &pids {
        let cmdline = rec
            .processes
            .iter()
            .find(|p| p.pid == pid)
            .map(|p| p.command.as_slice())
            .unwrap_or_default();
        w.process(m.start_boottime_ns, pid, rec.process_name(pid), cmdline)?;
    }
    let mut threads: Vec<(u32, u32)> = rec.samples.iter().map(|s| (s.tid, s.pid)).collect();
    threads.extend(rec.threads.iter().map(|t| (t.tid, t.pid)));
    threads.sort_unstable();
    threads.dedup_by_key(|t| t.0);
    for (tid, pid) in threads {
        let name = rec.thread_name(tid).unwrap_or_default();
        w.thread(m.start_boottime_ns, pid, tid, name)?;
    }
    let mut order: Vec<&Sample> = rec.samples.iter().collect();
    order.sort_by_key(|s| s.timestamp_ns);
    for s in order {
        w.perf_sample(rec, s)?;
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
        write(&rec, &mut bytes).expect("write to memory");
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

    #[test]
    fn callstacks_are_root_first_with_inlined_frames() {
        let rec = sample_recording();
        let mut bytes = Vec::new();
        write(&rec, &mut bytes).expect("write");
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
