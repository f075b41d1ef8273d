use super::*;
use crate::model::{Meta, OffCpu, OffCpuInfo, Sample, Span, SpanRun, tests::sample_recording};

const MS: u64 = 1_000_000;

/// A span of pid 1 from `b` to `e` milliseconds.
fn span(id: u64, parent: u64, name: &str, b: u64, e: u64) -> Span {
    Span {
        id,
        parent,
        name: name.into(),
        begin_ns: b * MS,
        end_ns: e * MS,
        pid: 1,
        ..Default::default()
    }
}

fn run(span: u64, tid: u32, b: u64, e: u64) -> SpanRun {
    SpanRun {
        span,
        tid,
        begin_ns: b * MS,
        end_ns: e * MS,
        pid: 1,
    }
}

/// 1000 Hz: a sample stands for 1 ms.
fn recording(spans: Vec<Span>, runs: Vec<SpanRun>) -> Recording {
    Recording {
        meta: Some(Meta {
            frequency_hz: 1000,
            ..Default::default()
        }),
        spans,
        span_runs: runs,
        ..Default::default()
    }
}

fn of<'a>(t: &'a SpanTree, name: &str) -> &'a ExclusiveTime {
    t.by_name
        .iter()
        .find(|x| x.name == name)
        .unwrap_or_else(|| panic!("{name} in {t:?}"))
}

/// The server: `request` holds `parse`, an 80 ms async `db_query` and `render`.
fn request_tree() -> Recording {
    let mut parse = span(2, 1, "parse", 0, 10);
    parse.samples = 8;
    let mut render = span(4, 1, "render", 90, 100);
    render.samples = 9;
    recording(
        vec![
            span(1, 0, "request", 0, 100),
            parse,
            span(3, 1, "db_query", 10, 90),
            render,
        ],
        vec![
            run(1, 7, 0, 10),
            run(2, 7, 0, 10),
            // The query's future is polled when it starts and when its answer wakes it, on
            // another worker; in between no thread runs it.
            run(3, 7, 10, 11),
            run(3, 8, 89, 90),
            run(1, 8, 90, 100),
            run(4, 8, 90, 100),
        ],
    )
}

#[test]
fn nested_time_is_counted_once_and_the_waiting_child_is_the_bottleneck() {
    let rec = request_tree();
    let t = SpanTree::new(&rec).expect("spans");
    assert_eq!(t.top_level_ns, 100 * MS);
    let q = of(&t, "db_query");
    assert_eq!((q.exclusive_ns, q.top_level_ns), (80 * MS, 80 * MS));
    assert_eq!(q.top_level_share, 80.0);
    assert_eq!(q.no_thread_ns, 78 * MS);
    assert_eq!(q.on_thread_other_ns, 2 * MS);
    assert_eq!(q.parent.as_deref(), Some("request"));
    assert_eq!(q.parent_share, Some(80.0));
    let r = of(&t, "request");
    assert_eq!((r.exclusive_ns, r.top_level_ns), (0, 0));
    let critical = r.critical_child.as_ref().expect("critical child");
    assert_eq!((critical.name.as_str(), critical.share), ("db_query", 80.0));
    let p = of(&t, "parse");
    assert_eq!(
        (p.exclusive_ns, p.on_cpu_ns, p.no_thread_ns),
        (10 * MS, 8 * MS, 0)
    );
    assert_eq!(p.on_thread_other_ns, 2 * MS);
    // Every instant of the request belongs to one span: the parts add up to the whole.
    let sum: u64 = t.by_name.iter().map(|x| x.top_level_ns).sum();
    assert_eq!(sum, t.top_level_ns);
    assert_eq!(t.by_name[0].name, "db_query", "most top-level time first");

    let a = Analysis::new(&rec);
    let f = &a.findings[0];
    assert_eq!(
        (f.kind, f.subject.as_str(), f.share),
        ("span_waiting", "db_query", 80.0)
    );
    assert!(f.hint.starts_with("waiting, not computing"), "{f:?}");
    assert!(
        f.evidence
            .starts_with("request → db_query: 80.0ms of the top-level spans' 100.0ms, 1 spans"),
        "{f:?}"
    );
    assert!(
        f.evidence.contains("80.0% of its parent `request`"),
        "{f:?}"
    );
    assert!(
        f.evidence.contains("97.5% with no thread running it"),
        "{f:?}"
    );
}

#[test]
fn a_span_that_computes_is_named_with_its_function() {
    let mut rec = sample_recording();
    let mut s = span(1, 0, "encode", 0, 10);
    s.pid = 42;
    s.samples = 10;
    rec.spans = vec![s];
    rec.span_runs = vec![SpanRun {
        pid: 42,
        ..run(1, 42, 0, 10)
    }];
    rec.meta.as_mut().expect("meta").frequency_hz = 1000;
    for sample in &mut rec.samples {
        sample.span = 1;
    }
    let f = &Analysis::new(&rec).findings[0];
    assert_eq!((f.kind, f.subject.as_str()), ("span_computing", "encode"));
    // Six of the ten samples are in hot_a (its inlined helper): the user function computing.
    assert_eq!(
        f.hint,
        "computing in inlined_helper_[i]: make it cheaper or call it less"
    );
}

#[test]
fn a_child_outliving_its_parent_is_not_part_of_the_parents_time() {
    let rec = recording(
        vec![span(1, 0, "handler", 0, 100), span(2, 1, "flush", 50, 150)],
        vec![],
    );
    let t = SpanTree::new(&rec).expect("spans");
    assert_eq!(t.top_level_ns, 100 * MS);
    let h = of(&t, "handler");
    assert_eq!((h.exclusive_ns, h.top_level_ns), (50 * MS, 50 * MS));
    let f = of(&t, "flush");
    assert_eq!(
        (f.exclusive_ns, f.top_level_ns, f.outside_parent_ns),
        (50 * MS, 50 * MS, 50 * MS)
    );
    assert_eq!(f.parent_share, Some(50.0));
}

#[test]
fn overlapping_siblings_share_the_time_they_overlap() {
    // a and b (joined futures) overlap from 40 to 60 ms; g runs inside that overlap.
    let rec = recording(
        vec![
            span(1, 0, "request", 0, 100),
            span(2, 1, "a", 0, 60),
            span(3, 1, "b", 40, 100),
            span(4, 2, "g", 40, 60),
        ],
        vec![],
    );
    let t = SpanTree::new(&rec).expect("spans");
    let top = |n: &str| of(&t, n).top_level_ns;
    assert_eq!(
        (top("request"), top("a"), top("b"), top("g")),
        (0, 40 * MS, 50 * MS, 10 * MS)
    );
    // Its own time is still its own: b alone covers 60 ms.
    assert_eq!(of(&t, "b").exclusive_ns, 60 * MS);
    assert_eq!(of(&t, "a").exclusive_ns, 40 * MS);
    let sum: u64 = t.by_name.iter().map(|x| x.top_level_ns).sum();
    assert_eq!(sum, 100 * MS);
    assert_eq!(of(&t, "a").parent_share, Some(50.0));
}

#[test]
fn an_async_span_hopping_threads_waits_where_no_thread_runs_it() {
    let mut s = span(1, 0, "task", 0, 100);
    s.samples = 20;
    let mut rec = recording(
        vec![s],
        vec![
            run(1, 7, 0, 20),
            // Resumed on another worker, then on the first one while the second still had it:
            // time on a thread is the union, 50..80.
            run(1, 8, 50, 70),
            run(1, 7, 60, 80),
        ],
    );
    let off = |runnable, ms: u64| OffCpu {
        pid: 1,
        tid: 7,
        stack: 0,
        span: 1,
        runnable,
        total_ns: ms * MS,
        count: 1,
    };
    rec.off_cpu = vec![off(false, 10), off(true, 5)];
    rec.off_cpu_info = Some(OffCpuInfo::default());
    let t = SpanTree::new(&rec).expect("spans");
    let x = of(&t, "task");
    assert_eq!(x.no_thread_ns, 50 * MS);
    assert_eq!(
        (
            x.on_cpu_ns,
            x.blocked_ns,
            x.preempted_ns,
            x.on_thread_other_ns
        ),
        (20 * MS, 10 * MS, 5 * MS, 15 * MS)
    );
    let f = &Analysis::new(&rec).findings[0];
    assert_eq!(f.kind, "span_waiting", "{f:?}");
    assert!(
        f.evidence.contains("10.0% blocked, 5.0% preempted"),
        "{f:?}"
    );
}

#[test]
fn a_cycle_of_parent_ids_ends() {
    let rec = recording(vec![span(1, 2, "x", 0, 10), span(2, 1, "y", 2, 8)], vec![]);
    let t = SpanTree::new(&rec).expect("spans");
    let sum: u64 = t.by_name.iter().map(|x| x.top_level_ns).sum();
    assert_eq!(sum, t.top_level_ns);
    assert_eq!(t.by_name.len(), 2);
}

/// sample_recording's functions with `n` samples on each stack.
fn with_samples(counts: &[(u32, usize)]) -> Recording {
    let mut rec = sample_recording();
    rec.samples = counts
        .iter()
        .flat_map(|&(stack, n)| {
            (0..n).map(move |i| Sample {
                timestamp_ns: i as u64,
                pid: 42,
                tid: 42,
                stack,
                ..Default::default()
            })
        })
        .collect();
    rec
}

#[test]
fn one_function_over_half_the_profile_is_the_first_finding() {
    // Stack 0 ends in hot_a's inlined helper, stack 1 in hot_b.
    let a = Analysis::new(&with_samples(&[(0, 70), (1, 30)]));
    let f = &a.findings[0];
    assert_eq!(
        (f.kind, f.subject.as_str(), f.share),
        ("function", "inlined_helper_[i]", 70.0)
    );
    // 60/40 is over half too; 45/55 is hot_b's; 40/40/20 is nobody's.
    let a = Analysis::new(&with_samples(&[(0, 40), (1, 40), (2, 20)]));
    assert!(a.findings.iter().all(|f| f.kind != "function"), "{a:?}");
    // Too few samples to say anything.
    assert!(
        Analysis::new(&with_samples(&[(0, 7), (1, 2)]))
            .findings
            .is_empty()
    );
}

#[test]
fn kinds_of_work_are_found_by_their_frames() {
    let mut rec = with_samples(&[]);
    let names = [
        "malloc",
        "build_index",
        "__x64_sys_write",
        "do_syscall_64",
        "entry_SYSCALL_64_after_hwframe",
        "flush_log",
    ];
    let first_fn = rec.functions.len() as u32;
    for n in names {
        rec.functions.push(crate::model::Function {
            name: n.into(),
            file: String::new(),
        });
    }
    let first_loc = rec.locations.len() as u32;
    for (i, _) in names.iter().enumerate() {
        // Module 3 is the kernel: the system call frames are its.
        let module = if (2..5).contains(&i) { 3 } else { 1 };
        rec.locations.push(crate::model::Location {
            module,
            offset: 0x1000 + i as u64,
            address: 0x1000 + i as u64,
            lines: vec![crate::model::Line {
                function: first_fn + i as u32,
                line: 0,
            }],
        });
    }
    let l = |i: u32| first_loc + i;
    let stack = rec.stacks.len() as u32;
    // main → build_index → malloc; main → flush_log → write(2).
    rec.stacks.push(crate::model::Stack {
        locations: vec![l(0), l(1), 0],
    });
    rec.stacks.push(crate::model::Stack {
        locations: vec![l(2), l(3), l(4), l(5), 0],
    });
    let mut push = |stack: u32, n: usize| {
        for _ in 0..n {
            rec.samples.push(Sample {
                pid: 42,
                tid: 42,
                stack,
                ..Default::default()
            });
        }
    };
    push(stack, 20);
    push(stack + 1, 30);
    // Under half the profile each: no function finding.
    push(0, 40);
    push(1, 10);
    let a = Analysis::new(&rec);
    let kinds: Vec<(&str, &str, f64)> = a
        .findings
        .iter()
        .map(|f| (f.kind, f.subject.as_str(), f.share))
        .collect();
    assert_eq!(
        kinds,
        [
            ("syscalls", "write", 30.0),
            ("allocator", "build_index", 20.0)
        ]
    );
    let sys = &a.findings[0];
    assert!(
        sys.evidence.contains("issued from flush_log 100%"),
        "{sys:?}"
    );
}
