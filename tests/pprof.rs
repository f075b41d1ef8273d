//! `profile.pb.gz` read by tools we did not write: `go tool pprof` (its -top, -traces and
//! -tagfocus totals against our summary, folded stacks and span report) and `protoc` with
//! pprof's official `profile.proto` (vendored in tests/proto).
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    process::{Command, Stdio},
};

use profiler_tests::*;

/// What pprof prints for a node: inlined functions carry ` (inline)`, and a function that is
/// inlined at some call sites only ` (partial-inline)`.
fn pprof_name(name: &str) -> String {
    name.trim_end_matches(" (inline)")
        .trim_end_matches(" (partial-inline)")
        .to_string()
}

/// What `go tool pprof -top` printed, in sample counts (or nanoseconds with `-unit=ns`).
struct Top {
    /// Per function: (flat, cum).
    rows: BTreeMap<String, (u64, u64)>,
    /// "Showing nodes accounting for N": the samples kept by the filters (all of them: no
    /// node is dropped with -nodefraction=0).
    shown: u64,
    /// "of N total": every sample of the profile, filters or not.
    total: u64,
}

/// A value of pprof's text reports: `120`, or `883767528ns` with `-unit=ns`.
fn pprof_value(v: &str) -> Option<u64> {
    v.strip_suffix("ns").unwrap_or(v).parse().ok()
}

fn pprof_top(file: &Path, extra: &[&str]) -> Top {
    let mut args = vec![
        "-top",
        "-sample_index=samples",
        "-nodecount=1000000",
        "-nodefraction=0",
        "-edgefraction=0",
    ];
    args.extend_from_slice(extra);
    let text = go_pprof(file, &args);
    let mut rows = BTreeMap::new();
    let mut totals = None;
    let mut in_table = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Showing nodes accounting for ") {
            // "Showing nodes accounting for 79, 24.01% of 329 total"
            let shown = rest.split(',').next().and_then(pprof_value);
            let total = rest
                .rsplit_once(" of ")
                .and_then(|(_, t)| t.strip_suffix(" total"))
                .and_then(pprof_value);
            totals = shown.zip(total);
            continue;
        }
        if line.trim_start().starts_with("flat  flat%") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        // flat flat% sum% cum cum% name…
        let mut parts = line.split_whitespace();
        let flat = parts
            .next()
            .and_then(pprof_value)
            .unwrap_or_else(|| panic!("flat in {line:?}"));
        let _flat_pct = parts.next();
        let _sum_pct = parts.next();
        let cum = parts
            .next()
            .and_then(pprof_value)
            .unwrap_or_else(|| panic!("cum in {line:?}"));
        let _cum_pct = parts.next();
        let name: Vec<&str> = parts.collect();
        let name = pprof_name(&name.join(" "));
        let e = rows.entry(name).or_insert((0, 0));
        e.0 += flat;
        e.1 += cum;
    }
    let (shown, total) = totals.expect("a `Showing nodes accounting for` line");
    Top { rows, shown, total }
}

/// A folded frame as pprof names the same frame at function granularity: no `_[k]`/`_[i]`
/// suffix (pprof marks inlining itself), an unsymbolized `module+0xOFF` as `[module]`, an
/// address outside every mapping as `<unknown>`.
fn as_pprof(frame: &str) -> String {
    let name = frame
        .strip_suffix("_[k]")
        .or_else(|| frame.strip_suffix("_[i]"))
        .unwrap_or(frame);
    if name == "[unknown]" {
        return "<unknown>".into();
    }
    if let Some((module, off)) = name.rsplit_once("+0x")
        && !off.is_empty()
        && off.chars().all(|c| c.is_ascii_hexdigit())
    {
        return format!("[{module}]");
    }
    name.to_string()
}

/// Per function (flat, cum) from folded stacks, counted as pprof counts them: the leaf
/// frame's function gets the flat count, every distinct function of a stack the cum count.
/// The root frame (the process) is not a function.
fn folded_per_function(folded: &[(Vec<String>, u64)]) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (frames, n) in folded {
        let funcs: Vec<String> = frames.iter().skip(1).map(|f| as_pprof(f)).collect();
        if let Some(leaf) = funcs.last() {
            out.entry(leaf.clone()).or_default().0 += n;
        }
        for f in funcs.iter().collect::<HashSet<_>>() {
            out.entry(f.clone()).or_default().1 += n;
        }
    }
    out
}

/// `go tool pprof -traces`: each sample's frames, leaf first, with its count.
fn pprof_traces(file: &Path, extra: &[&str]) -> Vec<(Vec<String>, u64)> {
    let mut args = vec!["-traces", "-sample_index=samples"];
    args.extend_from_slice(extra);
    let text = go_pprof(file, &args);
    let mut out: Vec<(Vec<String>, u64)> = Vec::new();
    let mut current: Option<(Vec<String>, u64)> = None;
    for line in text.lines() {
        if line.starts_with("-----------+") {
            out.extend(current.take());
            continue;
        }
        // printTraces writes labels as `%10s:  %s` and frames as `%10s   %s`, the sample's
        // value in the first frame's column.
        if line.len() < 13 || !line.is_char_boundary(10) {
            continue;
        }
        let (head, rest) = line.split_at(10);
        let Some(frame) = rest.strip_prefix("   ") else {
            continue;
        };
        let frame = pprof_name(frame.trim());
        if let Ok(n) = head.trim().parse::<u64>() {
            out.extend(current.take());
            current = Some((vec![frame], n));
        } else if head.trim().is_empty()
            && let Some((frames, _)) = current.as_mut()
        {
            frames.push(frame);
        }
    }
    out.extend(current);
    out
}

/// `go tool pprof -raw`'s locations: id → (mapping id, function names innermost first).
fn pprof_raw_locations(file: &Path, symbolize: &str) -> BTreeMap<u64, (u64, Vec<String>)> {
    let out = Command::new("go")
        .args(["tool", "pprof", "-raw"])
        .arg(format!("-symbolize={symbolize}"))
        .arg(file)
        .output()
        .expect("go runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut locations = BTreeMap::new();
    let mut current: Option<u64> = None;
    let mut in_section = false;
    for line in text.lines() {
        match line {
            "Locations" => in_section = true,
            "Mappings" => in_section = false,
            // "     6: 0x564054d98384 M=1 hot_a /src/split.c:21 s=0", then one indented
            // line per function the first one was inlined into.
            _ if in_section => {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let Some(id) = words.first().and_then(|w| w.strip_suffix(':'))
                    && let Ok(id) = id.parse::<u64>()
                {
                    let mapping = words
                        .iter()
                        .find_map(|w| w.strip_prefix("M="))
                        .and_then(|m| m.parse().ok())
                        .unwrap_or(0);
                    let funcs: Vec<String> =
                        words.get(3).map(|f| f.to_string()).into_iter().collect();
                    locations.insert(id, (mapping, funcs));
                    current = Some(id);
                } else if let (Some(id), Some(f)) = (current, words.first())
                    && let Some(loc) = locations.get_mut(&id)
                {
                    loc.1.push(f.to_string());
                }
            }
            _ => {}
        }
    }
    locations
}

/// Decodes a gzipped pprof profile with protoc and the vendored official schema.
fn decode_pprof(file: &Path) -> TextMessage {
    let schema_dir = workspace_root().join("tests/proto");
    // The vendored copy must stay the official one.
    let official = workspace_root().join("../shared/validation/pprof_profile.proto");
    if let Ok(official) = std::fs::read_to_string(&official) {
        let vendored =
            std::fs::read_to_string(schema_dir.join("profile.proto")).expect("vendored schema");
        assert_eq!(vendored, official, "tests/proto/profile.proto drifted");
    }
    let gunzip = Command::new("gzip")
        .arg("-dc")
        .arg(file)
        .output()
        .expect("gzip runs");
    assert!(gunzip.status.success(), "{} is not gzip", file.display());
    let mut protoc = Command::new("protoc")
        .arg("--proto_path")
        .arg(&schema_dir)
        .args(["--decode=perftools.profiles.Profile", "profile.proto"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("protoc runs (cargo xtask setup installs protobuf-compiler)");
    {
        use std::io::Write;
        let mut stdin = protoc.stdin.take().expect("piped stdin");
        stdin.write_all(&gunzip.stdout).expect("protoc reads");
    }
    let out = protoc.wait_with_output().expect("protoc exits");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "protoc: {err}"
    );
    TextMessage::parse(&String::from_utf8_lossy(&out.stdout))
}

fn strings(p: &TextMessage) -> Vec<String> {
    p.scalars
        .iter()
        .filter(|(k, _)| k == "string_table")
        .map(|(_, v)| v.trim_matches('"').to_string())
        .collect()
}

fn string_at(table: &[String], p: &TextMessage, field: &str) -> String {
    let i = p.get_u64(field).unwrap_or(0) as usize;
    table.get(i).cloned().unwrap_or_default()
}

#[test]
fn pprof_top_and_traces_equal_the_summary_and_folded_stacks() {
    let bin = build_c("pprof-split", "split.c", C_FP);
    let target = Target::start(&bin, &["10"]);
    let dir = record_ok(
        &target,
        "pprof-split",
        &["--duration", "2", "--frequency", "499"],
    );
    let file = dir.join("profile.pb.gz");
    let s = summary(&dir);
    let folded = folded(&dir);
    let recorded = s["samples"]["recorded"].as_u64().expect("recorded");

    // Every function pprof lists has the folded stacks' totals, and nothing is missing.
    let Top {
        rows: top,
        shown,
        total,
    } = pprof_top(&file, &[]);
    assert_eq!(
        (shown, total),
        (recorded, recorded),
        "pprof's total is every sample"
    );
    let from_folded = folded_per_function(&folded);
    assert_eq!(top, from_folded, "pprof -top against profile.folded");

    // The summary's top functions, beside pprof's. A summary name that folds together with
    // another (a function both inlined and not) is not comparable one to one.
    let variants: HashMap<String, HashSet<&str>> = folded
        .iter()
        .flat_map(|(f, _)| f.iter().skip(1))
        .fold(HashMap::new(), |mut m, f| {
            m.entry(as_pprof(f)).or_default().insert(f.as_str());
            m
        });
    eprintln!(
        "{:<40} {:>12} {:>10} {:>13} {:>10}",
        "function", "summary self", "pprof flat", "summary total", "pprof cum"
    );
    let mut compared = 0;
    for (list, column) in [("top_self", 0), ("top_total", 1)] {
        for f in s[list].as_array().expect("list") {
            let name = f["name"].as_str().expect("name");
            let samples = f["samples"].as_u64().expect("samples");
            let key = as_pprof(name);
            if variants.get(&key).is_some_and(|v| v.len() > 1) {
                continue;
            }
            let (flat, cum) = top.get(&key).copied().unwrap_or_default();
            let pprof_value = if column == 0 { flat } else { cum };
            eprintln!(
                "{:<40} {:>12} {:>10} {:>13} {:>10}",
                name,
                if column == 0 {
                    samples.to_string()
                } else {
                    "".into()
                },
                if column == 0 {
                    flat.to_string()
                } else {
                    "".into()
                },
                if column == 1 {
                    samples.to_string()
                } else {
                    "".into()
                },
                if column == 1 {
                    cum.to_string()
                } else {
                    "".into()
                },
            );
            assert_eq!(pprof_value, samples, "{list} {name}");
            compared += 1;
        }
    }
    assert!(compared >= 10, "only {compared} summary rows compared");
    let hot_a = top.get("hot_a").map_or(0, |v| v.0);
    assert!(
        hot_a * 2 > recorded,
        "hot_a has most samples: {hot_a}/{recorded}"
    );

    // -traces: the same stacks with the same counts as profile.folded.
    let mut traces: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for (mut frames, n) in pprof_traces(&file, &[]) {
        frames.reverse();
        *traces.entry(frames).or_default() += n;
    }
    let mut stacks: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    // -traces prints no line for a sample without frames (both stack walks failed).
    for (frames, n) in folded.iter().filter(|(f, _)| f.len() > 1) {
        let frames = frames.iter().skip(1).map(|f| as_pprof(f)).collect();
        *stacks.entry(frames).or_default() += n;
    }
    assert_eq!(traces, stacks, "pprof -traces against profile.folded");

    // The official schema decodes it, with what the format asks for.
    let p = decode_pprof(&file);
    let table = strings(&p);
    assert_eq!(
        table.first().map(String::as_str),
        Some(""),
        "string 0 is empty"
    );
    let types: Vec<(String, String)> = p
        .all("sample_type")
        .map(|t| (string_at(&table, t, "type"), string_at(&table, t, "unit")))
        .collect();
    assert_eq!(
        types,
        [
            ("samples".to_string(), "count".to_string()),
            ("cpu".to_string(), "nanoseconds".to_string())
        ]
    );
    let period_type = p.child("period_type").expect("period_type");
    assert_eq!(string_at(&table, period_type, "type"), "cpu");
    let period = p.get_u64("period").expect("period");
    assert_eq!(period, 1_000_000_000 / 499);
    let (mut count, mut ns) = (0, 0);
    for sample in p.all("sample") {
        let values: Vec<u64> = sample
            .scalars
            .iter()
            .filter(|(k, _)| k == "value")
            .map(|(_, v)| v.parse().expect("value"))
            .collect();
        assert_eq!(values.len(), 2);
        assert_eq!(values[1], values[0] * period, "cpu = count × period");
        count += values[0];
        ns += values[1];
        let keys: HashSet<String> = sample
            .all("label")
            .map(|l| string_at(&table, l, "key"))
            .collect();
        for k in ["pid", "process", "thread", "thread_id"] {
            assert!(keys.contains(k), "label {k} on every sample");
        }
    }
    assert_eq!(count, recorded);
    assert_eq!(ns, recorded * period);
    assert!(p.get_u64("time_nanos").unwrap_or(0) > 1_600_000_000_000_000_000);
    let duration = p.get_u64("duration_nanos").unwrap_or(0);
    assert!(
        (1_500_000_000..3_000_000_000).contains(&duration),
        "{duration}"
    );
    let comments: Vec<String> = p
        .scalars
        .iter()
        .filter(|(k, _)| k == "comment")
        .map(|(_, v)| table[v.parse::<usize>().expect("index")].clone())
        .collect();
    assert!(
        comments
            .iter()
            .any(|c| c.starts_with("command: ") && c.contains("pprof-split")),
        "{comments:?}"
    );
    // The program's own mapping: its file, a build id, and symbols with files and lines.
    let exe = p
        .all("mapping")
        .find(|m| string_at(&table, m, "filename").ends_with(&*bin.to_string_lossy()))
        .expect("a mapping for the target binary");
    assert_eq!(
        string_at(&table, exe, "build_id").len(),
        40,
        "GNU build id in hex"
    );
    assert_eq!(exe.get("has_functions"), Some("true"));
    assert!(exe.get_u64("memory_limit") > exe.get_u64("memory_start"));
    // The mapping's range and file offset are right if pprof, symbolizing the executable's
    // addresses from the file itself (binutils), finds the functions we found.
    let exe_id: u64 = exe.get_u64("id").expect("mapping id");
    let ours = pprof_raw_locations(&file, "none");
    let theirs = pprof_raw_locations(&file, "force");
    let mut checked = 0;
    for (id, (mapping, funcs)) in ours.iter().filter(|(_, (m, _))| *m == exe_id) {
        let resolved = theirs.get(id).map(|(m, f)| (*m, f.last()));
        // pprof's symbolizer may leave out inlined functions: the outer one is compared.
        assert_eq!(resolved, Some((*mapping, funcs.last())), "location {id}");
        checked += 1;
    }
    assert!(checked >= 3, "{checked} locations of the executable");
    let hot_a = p
        .all("function")
        .find(|f| string_at(&table, f, "name") == "hot_a")
        .expect("hot_a");
    assert!(string_at(&table, hot_a, "filename").ends_with("split.c"));
    let hot_a_id = hot_a.get("id").expect("id");
    let located = p.all("location").any(|l| {
        l.get_u64("address").unwrap_or(0) != 0
            && l.all("line").any(|line| {
                line.get("function_id") == Some(hot_a_id) && line.get_u64("line").unwrap_or(0) > 0
            })
    });
    assert!(
        located,
        "a location of hot_a with its address and source line"
    );
}

/// The samples the span report gives span NAME.
fn span_report_samples(s: &serde_json::Value) -> HashMap<String, u64> {
    s["spans"]["by_name"]
        .as_array()
        .expect("by_name")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().expect("name").to_string(),
                n["samples"].as_u64().expect("samples"),
            )
        })
        .collect()
}

#[test]
fn tagfocus_on_span_name_totals_equal_the_span_report() {
    let bin = build_c("pprof-probes", "probes_c.c", &c_fp_probes());
    let mut target = Target::start(&bin, &[]);
    let (dir, _) = record_run(&mut target, "pprof-probes", &["--frequency", "999"]);
    let s = summary(&dir);
    let by_name = span_report_samples(&s);
    let file = dir.join("profile.pb.gz");
    for name in ["request", "db_query"] {
        let want = by_name.get(name).copied().unwrap_or(0);
        assert!(want > 20, "span report: {want} samples in {name}");
        let focus = format!("-tagfocus=span_name=^{name}$");
        let top = pprof_top(&file, &[&focus]);
        let flat: u64 = top.rows.values().map(|v| v.0).sum();
        let traced: u64 = pprof_traces(&file, &[&focus]).iter().map(|t| t.1).sum();
        eprintln!(
            "span {name}: span report {want} samples; pprof -tagfocus shows {} of {} total, flat sum {flat}, -traces sum {traced}",
            top.shown, top.total
        );
        assert_eq!(top.shown, want, "{name}: -top");
        assert_eq!(flat, want, "{name}: -top flat sum");
        assert_eq!(traced, want, "{name}: -traces");
    }
    // Inside db_query the CPU goes to run_query, and the span path names its parent.
    let top = pprof_top(&file, &["-tagfocus=span_name=^db_query$"]);
    let run_query = top.rows.get("run_query").map_or(0, |v| v.0);
    assert!(run_query * 10 >= by_name["db_query"] * 9, "{:?}", top.rows);
    let in_path = pprof_top(&file, &["-tagfocus=span_path=^request;db_query$"]).shown;
    assert_eq!(in_path, by_name["db_query"]);
    // Outside every span: what is left.
    let in_spans = s["spans"]["samples_in_spans"].as_u64().expect("in spans");
    let recorded = s["samples"]["recorded"].as_u64().expect("recorded");
    let outside = pprof_top(&file, &["-tagignore=span_id=."]);
    assert_eq!(outside.total, recorded);
    assert_eq!(outside.shown, recorded - in_spans);
}

#[test]
fn rust_release_inlined_functions_are_lines_of_one_location() {
    // `cargo build --release` as users build: no frame pointers (DWARF unwinding), debug info.
    let bin = build_rust_target_with("rust-split", false);
    let target = Target::start(&bin, &["10"]);
    let dir = record_ok(
        &target,
        "pprof-rust",
        &["--duration", "2", "--frequency", "499"],
    );
    let p = decode_pprof(&dir.join("profile.pb.gz"));
    let table = strings(&p);
    let function_names: HashMap<String, String> = p
        .all("function")
        .map(|f| {
            (
                f.get("id").expect("id").to_string(),
                string_at(&table, f, "name"),
            )
        })
        .collect();
    let exe_mappings: HashSet<String> = p
        .all("mapping")
        .filter(|m| string_at(&table, m, "filename").ends_with("/rust-split"))
        .map(|m| m.get("id").expect("id").to_string())
        .collect();
    assert!(!exe_mappings.is_empty(), "a mapping for rust-split");
    let inlined: Vec<Vec<&str>> = p
        .all("location")
        .filter(|l| {
            l.get("mapping_id")
                .is_some_and(|m| exe_mappings.contains(m))
        })
        .map(|l| {
            l.all("line")
                .map(|line| {
                    function_names
                        .get(line.get("function_id").expect("function_id"))
                        .map_or("?", String::as_str)
                })
                .collect::<Vec<&str>>()
        })
        .filter(|lines| lines.len() >= 2)
        .collect();
    eprintln!(
        "{} locations of rust-split with inlined lines, e.g. {:?}",
        inlined.len(),
        inlined.iter().take(5).collect::<Vec<_>>()
    );
    assert!(!inlined.is_empty(), "no location with inlined functions");
    // The folded output shows the same inlining as `_[i]` frames, called from the outer
    // function of the location.
    let folded = folded(&dir);
    let found = inlined.iter().any(|lines| {
        let (outer, inner) = lines.split_last().expect("two lines or more");
        folded.iter().any(|(frames, _)| {
            frames
                .windows(2)
                .any(|w| w[0] == *outer && inner.last().is_some_and(|i| w[1] == format!("{i}_[i]")))
        })
    });
    assert!(found, "the folded stacks have the same inlined frames");
    // A hot function of the program appears with inlined code of its own.
    assert!(
        inlined.iter().any(|l| l
            .last()
            .is_some_and(|f| f.contains("hot_a") || f.contains("hot_b"))),
        "hot_a or hot_b with inlined functions"
    );
}

#[test]
fn off_cpu_profile_totals_equal_the_summary() {
    let bin = build_c("pprof-offcpu", "offcpu.c", &c_fp_probes());
    let mut target = Target::start(&bin, &[]);
    let (dir, _) = record_run(&mut target, "pprof-offcpu", &["--off-cpu"]);
    let s = summary(&dir);
    let off = &s["off_cpu"];
    let file = dir.join("offcpu.pb.gz");
    let ns = |extra: &[&str]| {
        let mut args = vec!["-sample_index=off_cpu", "-unit=ns"];
        args.extend_from_slice(extra);
        pprof_top(&file, &args).shown
    };
    let field = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}"));
    let total = ns(&[]);
    let blocked = ns(&["-tagfocus=state=^blocked$"]);
    let preempted = ns(&["-tagfocus=state=^preempted$"]);
    eprintln!(
        "off-CPU ns: pprof total {total} blocked {blocked} preempted {preempted}; summary {} {} {}",
        off["total_ns"], off["blocked_ns"], off["preempted_ns"]
    );
    assert_eq!(total, field(off, "total_ns"));
    assert_eq!(blocked, field(off, "blocked_ns"));
    assert_eq!(preempted, field(off, "preempted_ns"));
    // Per span: the off-CPU time of `nap` is the span report's.
    let nap = off["by_span"]
        .as_array()
        .expect("by_span")
        .iter()
        .find(|n| n["name"] == "nap")
        .expect("nap in by_span");
    assert_eq!(ns(&["-tagfocus=span_name=^nap$"]), field(nap, "off_cpu_ns"));
}

#[test]
fn report_format_writes_one_output_to_a_file_or_stdout() {
    let bin = build_c("pprof-report", "split.c", C_FP);
    let target = Target::start(&bin, &["10"]);
    let dir = record_ok(&target, "pprof-report", &["--duration", "1"]);
    let out = scratch("pprof-report-out");
    std::fs::create_dir_all(&out).expect("mkdir");
    let file = out.join("cpu.pb.gz");
    let status = profiler()
        .arg("report")
        .arg(&*dir)
        .args(["--format", "pprof", "-o"])
        .arg(&file)
        .status()
        .expect("profiler runs");
    assert!(status.success());
    assert_eq!(
        std::fs::read(&file).expect("written"),
        std::fs::read(dir.join("profile.pb.gz")).expect("recorded"),
        "same profile as the recording's"
    );
    let folded = profiler()
        .arg("report")
        .arg(&*dir)
        .args(["--format", "folded", "-o", "-"])
        .output()
        .expect("profiler runs");
    assert!(folded.status.success());
    assert_eq!(
        String::from_utf8_lossy(&folded.stdout),
        std::fs::read_to_string(dir.join("profile.folded")).expect("folded")
    );
    let json = profiler()
        .arg("report")
        .arg(&*dir)
        .args(["--format", "json"])
        .output()
        .expect("profiler runs");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("summary JSON");
    assert_eq!(v["schema"], "profiler-summary/1");
    // No spans recorded: said in one line.
    let spans = profiler()
        .arg("report")
        .arg(&*dir)
        .args(["--format", "spans"])
        .output()
        .expect("profiler runs");
    assert!(!spans.status.success());
    let err = stderr_of(&spans);
    assert!(err.contains("no span probes"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let into_dir = profiler()
        .arg("report")
        .arg(&*dir)
        .args(["--format", "svg", "-o"])
        .arg(&out)
        .output()
        .expect("profiler runs");
    assert!(!into_dir.status.success());
    assert!(stderr_of(&into_dir).contains("is a directory"));
    let _ = std::fs::remove_dir_all(&out);
}
