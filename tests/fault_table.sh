#!/usr/bin/env bash
# The fault table of issue 13: bad inputs and faults run against the release binary, one
# markdown row each (what was done, the first line of the message, the exit status, what was
# left on disk, and whether that is what the profiler promises). Slow (5 to 10 minutes) and
# it mounts file systems, so it is not part of `cargo xtask test`.
#
#   sudo tests/fault_table.sh > docs/fault-table.md      (PROFILER_BIN=... to pick a binary)
#
# Needs root, gcc, util-linux (setpriv, unshare, flock), python3. Every run that attaches eBPF
# holds /tmp/profiler-itest.lock, as the integration tests do. Mounts are made under a scratch
# directory and undone by the exit trap; tracefs is unmounted only in a private mount
# namespace, and the trap remounts the host's if it were ever found missing.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
P=${PROFILER_BIN:-$ROOT/target/release/profiler}
LOCK=/tmp/profiler-itest.lock
SEED=${FAULT_SEED:-$(date +%s)}
[ "$(id -u)" = 0 ] || { echo "fault_table.sh: run as root (it attaches eBPF and mounts tmpfs)" >&2; exit 1; }
[ -x "$P" ] || { echo "fault_table.sh: no profiler at $P: cargo build --release -p profiler-user" >&2; exit 1; }

W=$(mktemp -d /tmp/profiler-faults.XXXXXX)
chmod 755 "$W"
MOUNTS=()
PIDS=()
TRACEFS_MOUNTED=0
mountpoint -q /sys/kernel/tracing && TRACEFS_MOUNTED=1
# The kernel lowers this on its own when samples take too long; the 100 kHz row may cause it.
MAX_RATE=$(cat /proc/sys/kernel/perf_event_max_sample_rate)
cleanup() {
    [ "$(cat /proc/sys/kernel/perf_event_max_sample_rate)" = "$MAX_RATE" ] ||
        echo "$MAX_RATE" >/proc/sys/kernel/perf_event_max_sample_rate
    exec 9>&- 2>/dev/null
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for m in "${MOUNTS[@]}"; do mountpoint -q "$m" && umount "$m"; done
    if [ "$TRACEFS_MOUNTED" = 1 ] && ! mountpoint -q /sys/kernel/tracing; then
        mount -t tracefs nodev /sys/kernel/tracing
    fi
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

log() { echo "fault_table: $*" >&2; }
lock() { exec 9>"$LOCK"; flock 9; }
unlock() { flock -u 9; exec 9>&-; }

N=0
ROWS=()
# row FAULT DONE MESSAGE STATUS DISK OK(yes|no) — markdown-escaped
esc() { printf '%s' "$1" | tr '\n' ' ' | sed 's/|/\\|/g'; }
row() {
    N=$((N + 1))
    local verdict="as promised"
    [ "$6" = yes ] || verdict="**DEFECT**"
    ROWS+=("| $N | $(esc "$1") | $(esc "$2") | $(esc "$3") | $(esc "$4") | $(esc "$5") | $verdict |")
    log "$N $1: status $4; $3"
}
# The first line the profiler printed on stderr, past the "recording pid" line (and its last
# line when it printed more, clap's "For more information, try '--help'." aside).
message() {
    local first last
    first=$(grep -v '^profiler: recording pid' "$1" | grep -v '^$' | head -1)
    last=$(grep -v '^profiler: recording pid' "$1" | grep -v '^$' | grep -v "^For more information, try '--help'.$" | tail -1)
    if [ -z "$first" ]; then
        printf '(nothing)'
    elif [ "$first" = "$last" ]; then
        printf '`` %s ``' "$first"
    else
        printf '`` %s `` … last line: `` %s ``' "$first" "$last"
    fi
}
# What a directory holds: the default outputs named as a set, anything else by name.
OUTPUTS="recording.pb profile.folded flamegraph.svg summary.txt summary.json trace.perfetto-trace spans.json profile-spans.folded profile.pb.gz offcpu.pb.gz flamegraph-spans.svg offcpu.folded offcpu.svg wall.folded wall.svg"
STD7="flamegraph.svg profile.folded profile.pb.gz recording.pb summary.json summary.txt trace.perfetto-trace"
disk() {
    local d=$1
    if [ ! -e "$d" ]; then echo "nothing (no directory)"; return; fi
    if [ -f "$d" ]; then echo "the file as it was"; return; fi
    local names
    names=$(ls -A "$d" | sort | tr '\n' ' ' | sed 's/ $//')
    if [ -z "$names" ]; then echo "empty directory"; return; fi
    if [ "$names" = "$STD7" ]; then echo "the 7 outputs"; return; fi
    echo "$(ls -A "$d" | wc -l) files: $(echo "$names" | sed 's/ /, /g')"
}
has() { [ -e "$1" ]; }
# No temporary file left: every regular file is one of the outputs.
no_tmp() {
    local f
    for f in $(find "$1" -maxdepth 1 -type f -printf '%f\n' 2>/dev/null); do
        case " $OUTPUTS " in *" $f "*) ;; *) return 1 ;; esac
    done
}

# A CPU-bound target (70% hot_a, 30% hot_b) that prints "ready PID" once running.
gcc -O2 -g -fno-omit-frame-pointer -o "$W/split" "$ROOT/tests/targets/split.c" -lpthread -lm || exit 1
start_target() { # SECS [setpriv args...]; sets T. BIN overrides the program.
    local secs=$1
    shift
    local out=$W/target.$RANDOM
    if [ $# -gt 0 ]; then
        setpriv "$@" "${BIN:-$W/split}" "$secs" >"$out" 9>&- &
    else
        "${BIN:-$W/split}" "$secs" >"$out" 9>&- &
    fi
    T=$!
    PIDS+=("$T")
    for _ in $(seq 100); do grep -q ready "$out" 2>/dev/null && break; sleep 0.05; done
    sleep 0.1
}
stop_target() { kill "$T" 2>/dev/null; wait "$T" 2>/dev/null; }
# run OUTFILE_PREFIX CMD...: runs CMD, sets CODE; stderr in PREFIX.err
run() {
    local pre=$1
    shift
    "$@" >"$pre.out" 2>"$pre.err" 9>&-
    CODE=$?
}
# Background `profiler record` (stderr to PREFIX.err), returned once attached; sets BG.
bg_record() {
    local pre=$1
    shift
    "$P" record --quiet "$@" >"$pre.out" 2>"$pre.err" 9>&- &
    BG=$!
    for _ in $(seq 200); do grep -q 'recording pid' "$pre.err" 2>/dev/null && return 0; sleep 0.05; done
    return 1
}
bg_wait() { wait "$BG"; CODE=$?; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@" 2>/dev/null; }

start_target 600
MAIN=$T

# --- Links planted for every file name ------------------------------------------------------
for mode in 1777 0777; do
    S=$W/shared-$mode V=$W/victim-$mode
    mkdir -p "$S" "$V"
    chmod "$mode" "$S"
    echo precious >"$V/precious"
    i=0 links=0
    for n in $OUTPUTS .profiler-write-test $(for o in $OUTPUTS; do echo ".$o.tmp"; done); do
        if [ $((i % 2)) = 0 ]; then to=$V/precious; else to=$V/created-$n; fi
        ln -s "$to" "$S/$n" && chown -h 65534:65534 "$S/$n"
        i=$((i + 1)) links=$((links + 1))
    done
    lock
    run "$W/links" "$P" record --quiet --pid "$MAIN" --duration 1 --off-cpu --span-fn hot_a --output "$S"
    unlock
    regular=0
    for o in $OUTPUTS; do [ -f "$S/$o" ] && [ ! -L "$S/$o" ] && regular=$((regular + 1)); done
    left_links=$(find "$S" -maxdepth 1 -type l | wc -l)
    victim_ok=no
    [ "$(cat "$V/precious")" = precious ] && [ "$(ls -A "$V")" = precious ] && victim_ok=yes
    ok=no
    [ $CODE = 0 ] && [ $victim_ok = yes ] && [ $regular = 15 ] && [ "$left_links" = $((links - 15)) ] && no_tmp "$S" && ok=yes
    row "links planted for every file name ($mode dir)" \
        "in a mode-$mode directory, nobody's links under all 15 output names, the old write-test name and every old \`.NAME.tmp\`, half to a victim file, half to new files beside it; \`record --off-cpu --span-fn hot_a\`" \
        "$(message "$W/links.err")" "$CODE" \
        "$regular outputs as regular files; the $left_links other links left as they were; victim unchanged ($victim_ok), nothing created beside it" "$ok"
done

D=$W/foreign
mkdir -p "$D" && chown 65534:65534 "$D"
lock; run "$W/foreign" "$P" record --quiet --pid "$MAIN" --duration 1 --output "$D"; unlock
ok=no; [ $CODE = 1 ] && [ -z "$(ls -A "$D")" ] && grep -q "belongs to uid 65534" "$W/foreign.err" && ok=yes
row "output directory owned by another user" "\`--output\` a directory of nobody's" "$(message "$W/foreign.err")" "$CODE" "$(disk "$D")" "$ok"

mkdir -p "$W/elsewhere" && ln -s "$W/elsewhere" "$W/dirlink" && chown -h 65534:65534 "$W/dirlink"
lock; run "$W/dirlink" "$P" record --quiet --pid "$MAIN" --duration 1 --output "$W/dirlink/out"; unlock
ok=no; [ $CODE = 1 ] && [ -z "$(ls -A "$W/elsewhere")" ] && grep -q "is a link of uid 65534" "$W/dirlink.err" && ok=yes
row "output path through another user's link" "\`--output DIR/link/out\`, \`link\` nobody's, to another directory" "$(message "$W/dirlink.err")" "$CODE" "link target: $(disk "$W/elsewhere")" "$ok"

# --- Full and read-only file systems -------------------------------------------------------
lock; run "$W/ref" "$P" record --quiet --pid "$MAIN" --duration 2 --output "$W/ref-out"; unlock
PB=$(stat -c %s "$W/ref-out/recording.pb")
mount_tmpfs() { # NAME OPTIONS; sets M
    M=$W/$1
    mkdir -p "$M"
    mount -t tmpfs -o "$2" tmpfs "$M" && MOUNTS+=("$M")
}
fill_leaving() { # DIR BYTES
    dd if=/dev/zero of="$1/filler" bs=4k 2>/dev/null
    truncate -s "-$2" "$1/filler"
}
mount_tmpfs full size=4m
lock
bg_record "$W/full" --pid "$MAIN" --duration 2 --output "$M/out"
fill_leaving "$M" $(((PB + 4095) / 4096 * 4096 + 4096))
bg_wait
unlock
status=$CODE
run "$W/full-regen" "$P" report "$M/out" --output "$W/full-regen-out"
regen=$CODE CODE=$status
ok=no; [ $CODE = 1 ] && has "$M/out/recording.pb" && [ $regen = 0 ] && no_tmp "$M/out" && grep -q "profiler report" "$W/full.err" && ok=yes
row "disk full mid-write" "4 MiB tmpfs filled while recording, leaving room for recording.pb (${PB} B) and one page" \
    "$(message "$W/full.err")" "$CODE" "$(disk "$M/out"); \`profiler report\` regenerates the rest (exit $regen)" "$ok"
umount "$M"

mount_tmpfs full0 size=4m
lock
bg_record "$W/full0" --pid "$MAIN" --duration 1 --output "$M/out"
fill_leaving "$M" 0
bg_wait
unlock
ok=no; [ $CODE = 1 ] && [ -d "$M/out" ] && no_tmp "$M/out" && grep -q "cannot be regenerated" "$W/full0.err" && ok=yes
row "disk full, no room for the recording" "4 MiB tmpfs filled to the last byte while recording" \
    "$(message "$W/full0.err")" "$CODE" "$(disk "$M/out")" "$ok"
umount "$M"

mount_tmpfs ro ro,size=1m
lock; run "$W/ro" "$P" record --quiet --pid "$MAIN" --duration 1 --output "$M/out"; unlock
ok=no; [ $CODE = 1 ] && ! has "$M/out" && grep -q "Read-only file system" "$W/ro.err" && ok=yes
row "read-only output mount" "\`--output\` on a tmpfs mounted read-only" "$(message "$W/ro.err")" "$CODE" "$(disk "$M/out")" "$ok"
umount "$M"

mount_tmpfs rofs size=16m
lock
bg_record "$W/rofs" --pid "$MAIN" --duration 1 --output "$M/out"
mount -o remount,ro "$M"
bg_wait
unlock
ok=no; [ $CODE = 1 ] && [ -d "$M/out" ] && grep -q "Read-only file system" "$W/rofs.err" && ok=yes
row "output mount turning read-only" "tmpfs remounted read-only while recording" "$(message "$W/rofs.err")" "$CODE" "$(disk "$M/out")" "$ok"
umount "$M"

# --- Signals -------------------------------------------------------------------------------
for sig in HUP TERM INT; do
    lock
    bg_record "$W/sig$sig" --pid "$MAIN" --output "$W/sig$sig-out"
    sleep 0.7
    kill -"$sig" "$BG"
    bg_wait
    unlock
    reason=$(json "$W/sig$sig-out/summary.json" "d['stop_reason']")
    ok=no; [ $CODE = 0 ] && [ "$(disk "$W/sig$sig-out")" = "the 7 outputs" ] && [ "$reason" = "SIG$sig received" ] && ok=yes
    row "SIG$sig while recording" "\`kill -$sig\` 0.7 s into a recording without \`--duration\`" \
        "$(message "$W/sig$sig.err")" "$CODE" "$(disk "$W/sig$sig-out") (stop_reason \"$reason\")" "$ok"
done

# SIGHUP of an SSH drop: the terminal is gone too, so every later message fails to print
# (stderr is a pipe whose reader quits after the first line).
lock
"$P" record --quiet --pid "$MAIN" --output "$W/hup2-out" >/dev/null 2> >(head -1 >"$W/hup2.err") 9>&- &
BG=$!
for _ in $(seq 200); do grep -q 'recording pid' "$W/hup2.err" 2>/dev/null && break; sleep 0.05; done
sleep 0.7
kill -HUP "$BG"
bg_wait
unlock
ok=no; [ $CODE = 0 ] && [ "$(disk "$W/hup2-out")" = "the 7 outputs" ] && ok=yes
row "SIGHUP of an SSH drop" "as above, stderr a pipe whose reader has gone (every later message fails)" "(nothing more could be printed)" "$CODE" "$(disk "$W/hup2-out")" "$ok"

after_stop() { # NAME SIGNALS...: SIGINT stops, the others follow during post-processing
    local name=$1
    shift
    lock
    bg_record "$W/$name" --pid "$MAIN" --test-hold-after-stop-ms 2500 --output "$W/$name-out"
    sleep 0.5
    kill -INT "$BG"
    sleep 0.7
    for s in "$@"; do kill -"$s" "$BG"; sleep 0.2; done
    bg_wait
    unlock
}
after_stop term-sym TERM
status=$CODE
run "$W/term-sym-regen" "$P" report "$W/term-sym-out" --output "$W/term-sym-regen-out"
CODE=$status
ok=no; [ $CODE = 143 ] && [ "$(ls -A "$W/term-sym-out")" = recording.pb ] && [ "$(disk "$W/term-sym-regen-out")" = "the 7 outputs" ] && ok=yes
row "SIGTERM during symbolization" "Ctrl-C (SIGINT), then SIGTERM while symbols are resolved (held 2.5 s by \`--test-hold-after-stop-ms\`)" \
    "$(message "$W/term-sym.err")" "$CODE" "$(disk "$W/term-sym-out"); \`profiler report\` regenerates the outputs" "$ok"
after_stop int-int INT
ok=no; [ $CODE = 130 ] && [ "$(ls -A "$W/int-int-out")" = recording.pb ] && ok=yes
row "double Ctrl-C" "SIGINT stops the recording, a second SIGINT during post-processing" "$(message "$W/int-int.err")" "$CODE" "$(disk "$W/int-int-out")" "$ok"
after_stop int3 INT INT
ok=no; [ $CODE = 130 ] && [ -z "$(ls -A "$W/int3-out")" ] && grep -q "nothing of this recording was kept" "$W/int3.err" && ok=yes
row "triple Ctrl-C" "SIGINT, then two more before recording.pb is written (the user insists)" "$(message "$W/int3.err")" "$CODE" "$(disk "$W/int3-out")" "$ok"

# --- Damaged recordings --------------------------------------------------------------------
REC=$W/ref-out/recording.pb
LEN=$(stat -c %s "$REC")
report_of() { # NAME BYTES-FILE: profiler report on a copy; sets CODE
    mkdir -p "$W/$1-in"
    cp "$2" "$W/$1-in/recording.pb"
    run "$W/$1" "$P" report "$W/$1-in" --output "$W/$1-out"
}
refused() { [ $CODE = 1 ] && ! has "$W/$1-out" && [ "$(wc -l <"$W/$1.err")" = 1 ] && grep -q "$2" "$W/$1.err"; }
OFFSETS=$(python3 -c "
import random, sys
r = random.Random($SEED)
print(' '.join(str(o) for o in sorted([r.randrange(0, 24) for _ in range(2)] + [r.randrange(24, $LEN) for _ in range(10)])))")
for off in $OFFSETS; do
    head -c "$off" "$REC" >"$W/cut"
    report_of "cut$off" "$W/cut"
    ok=no; refused "cut$off" truncated && ok=yes
    row "recording.pb truncated at $off of $LEN B" "\`profiler report\` on the first $off bytes (offset drawn with seed $SEED)" \
        "$(message "$W/cut$off.err")" "$CODE" "$(disk "$W/cut$off-out")" "$ok"
done
flip() { # OFFSET: a copy of REC with one byte changed
    cp "$REC" "$W/flip"
    python3 -c "
import sys
f = open('$W/flip', 'r+b'); f.seek($1); b = f.read(1); f.seek($1); f.write(bytes([b[0] ^ 0x20]))"
}
for at in 0 8 12 20 $((LEN / 2)) $((LEN - 1)); do
    flip "$at"
    report_of "flip$at" "$W/flip"
    case $at in 0) what="magic" ;; 8) what="format version" ;; 12) what="payload length" ;; 20) what="checksum" ;; *) what="payload" ;; esac
    ok=no; refused "flip$at" "corrupted\|truncated\|header\|format version" && ok=yes
    row "corrupted byte ($what)" "byte $at of recording.pb xor 0x20, then \`profiler report\`" "$(message "$W/flip$at.err")" "$CODE" "$(disk "$W/flip$at-out")" "$ok"
done
cp "$REC" "$W/long" && printf tail >>"$W/long"
report_of long "$W/long"
ok=no; refused long corrupted && ok=yes
row "bytes appended to recording.pb" "4 bytes after the payload" "$(message "$W/long.err")" "$CODE" "$(disk "$W/long-out")" "$ok"
mkdir -p "$W/norec"
run "$W/norec" "$P" report "$W/norec" --output "$W/norec-out"
ok=no; [ $CODE = 1 ] && ! has "$W/norec-out" && ok=yes
row "report on a directory without a recording" "\`profiler report\` on an empty directory" "$(message "$W/norec.err")" "$CODE" "$(disk "$W/norec-out")" "$ok"

# --- Targets that go away ------------------------------------------------------------------
start_target 0.5
lock; run "$W/early" "$P" record --quiet --pid "$T" --duration 5 --test-hold-before-attach-ms 1500 --output "$W/early-out"; unlock
ok=no; [ $CODE = 1 ] && ! has "$W/early-out" && grep -q "exited before the profiler could attach" "$W/early.err" && ok=yes
row "target exiting during attach" "a target living 0.5 s; the profiler held 1.5 s between load and attach (\`--test-hold-before-attach-ms\`)" \
    "$(message "$W/early.err")" "$CODE" "$(disk "$W/early-out")" "$ok"

lock
unshare --pid --fork --mount-proc sh -c '
    "$1" 0.5 > /dev/null &
    x=$!
    "$2" record --pid "$x" --duration 2 --test-hold-before-attach-ms 2500 --output "$3" 2> "$4" &
    p=$!
    wait "$x"
    echo $((x - 1)) > /proc/sys/kernel/ns_last_pid
    "$1" 30 > /dev/null &
    y=$!
    wait "$p"
    code=$?
    kill "$y"
    echo "$x $y $code"' sh "$W/split" "$P" "$W/reuse-out" "$W/reuse.err" >"$W/reuse.out" 9>&-
unlock
read -r x y CODE <"$W/reuse.out"
ok=no; [ "$x" = "$y" ] && [ "$CODE" = 1 ] && ! has "$W/reuse-out" && grep -q "exited before the profiler could attach" "$W/reuse.err" && ok=yes
row "PID reuse" "in a PID namespace the target (pid $x) exits while the profiler loads, a new process gets pid $y (ns_last_pid)" \
    "$(message "$W/reuse.err")" "$CODE" "$(disk "$W/reuse-out")" "$ok"

run "$W/nopid" "$P" record --quiet --pid 4194305 --duration 1 --output "$W/nopid-out"
ok=no; [ $CODE = 1 ] && ! has "$W/nopid-out" && ok=yes
row "no such PID" "\`--pid 4194305\` (above pid_max)" "$(message "$W/nopid.err")" "$CODE" "$(disk "$W/nopid-out")" "$ok"

# --- The machine ---------------------------------------------------------------------------
lock
run "$W/notracefs" unshare --mount --propagation private sh -c 'umount /sys/kernel/tracing && exec "$@"' sh \
    setpriv --inh-caps=-all --bounding-set=-sys_admin \
    "$P" record --quiet --follow-children --off-cpu --duration 1 --pid "$MAIN" --output "$W/notracefs-out"
unlock
host=no; mountpoint -q /sys/kernel/tracing && host=yes
ok=no; [ $CODE = 0 ] && [ -f "$W/notracefs-out/offcpu.folded" ] && [ $host = yes ] && ok=yes
row "tracefs unmounted" "\`umount /sys/kernel/tracing\` in a private mount namespace, no CAP_SYS_ADMIN to mount it again; \`record --follow-children --off-cpu\`" \
    "$(message "$W/notracefs.err")" "$CODE" "$(disk "$W/notracefs-out") (host tracefs still mounted: $host)" "$ok"

caps_row() { # NAME FAULT SETPRIV-ARGS EXPECTED-STATUS NEEDLE [warning]
    # A refusal (status 1) leaves nothing; a warning (status 0) is looked for in the summary.
    lock; run "$W/$1" setpriv $3 "$P" record --quiet --pid "${TARGET_PID:-$MAIN}" --duration 1 --output "$W/$1-out"; unlock
    local left ok=no
    left=$(disk "$W/$1-out")
    if [ "${6:-}" = warning ]; then
        local w
        w=$(json "$W/$1-out/summary.json" "'\n'.join(w for w in d['warnings'] if 'CAP_' in w)")
        [ $CODE = "$4" ] && printf '%s' "$w" | grep -q "$5" && ok=yes
        left="$left; summary.json warnings: $(printf '%s' "$w" | sed 's/^/`/; s/$/`/' | paste -sd ' ')"
    else
        [ $CODE = "$4" ] && grep -q "$5" "$W/$1.err" && ! has "$W/$1-out" && ok=yes
    fi
    row "$2" "\`setpriv $3\`" "$(message "$W/$1.err")" "$CODE" "$left" "$ok"
}
caps_row nobpf "no CAP_BPF" "--inh-caps=-bpf,-sys_admin --bounding-set=-bpf,-sys_admin" 1 "missing CAP_BPF:" ""
caps_row nocaps "no CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN" "--inh-caps=-all --bounding-set=-bpf,-perfmon,-sys_admin" 1 "missing CAP_BPF and CAP_PERFMON" ""
caps_row nobody "an unprivileged user" "--reuid=65534 --regid=65534 --clear-groups --inh-caps=-all" 1 "sudo" ""
# Another user's program in a directory only that user may enter.
mkdir -p "$W/private" && cp "$W/split" "$W/private/split" && chown -R 65534:65534 "$W/private" && chmod 700 "$W/private"
BIN=$W/private/split start_target 600 --reuid=65534 --regid=65534 --clear-groups
TARGET_PID=$T
caps_row noptrace "no CAP_SYS_PTRACE, target of another user" "--inh-caps=-sys_ptrace --bounding-set=-sys_ptrace" 0 "missing CAP_SYS_PTRACE" warning
caps_row nodac "no CAP_DAC_READ_SEARCH, target of another user in a private directory" "--inh-caps=-dac_read_search,-dac_override --bounding-set=-dac_read_search,-dac_override" 0 "missing CAP_DAC_READ_SEARCH: 1 mapped files" warning
stop_target
unset TARGET_PID
lock
run "$W/userns" unshare --user --map-root-user sh -c '"$1" 5 > /dev/null & exec "$2" record --pid $! --duration 1 --output "$3"' sh "$W/split" "$P" "$W/userns-out"
unlock
ok=no; [ $CODE = 1 ] && ! has "$W/userns-out" && grep -q "user namespace" "$W/userns.err" && ok=yes
row "root of a user namespace (rootless container)" "\`unshare --user --map-root-user\`" "$(message "$W/userns.err")" "$CODE" "$(disk "$W/userns-out")" "$ok"

# --- Arguments -----------------------------------------------------------------------------
arg_row() { # NAME EXPECTED-STATUS ARGS...: refused in one line, nothing written (status 0: recorded)
    local name=$1 want=$2 ok=no
    shift 2
    lock; run "$W/$name" "$P" record --quiet --pid "$MAIN" --output "$W/$name-out" "$@"; unlock
    if [ "$want" = 0 ]; then
        [ $CODE = 0 ] && [ "$(disk "$W/$name-out")" = "the 7 outputs" ] && ok=yes
    else
        [ $CODE = "$want" ] && ! has "$W/$name-out" && [ "$(grep -c 'error' "$W/$name.err")" = 1 ] && ok=yes
    fi
    row "\`$*\`" "\`record --pid PID --output DIR $*\`" "$(message "$W/$name.err")" "$CODE" "$(disk "$W/$name-out")" "$ok"
}
arg_row freq0 2 --frequency 0
# perf_event_max_sample_rate is the limit: at it the recording is made, above it refused.
arg_row freq100k 0 --frequency "$MAX_RATE" --duration 1
arg_row freq100k1 1 --frequency "$((MAX_RATE + 1))"
arg_row freqabc 2 --frequency abc
arg_row durneg 2 --duration -1
arg_row spanfn 1 --duration 1 --span-fn no_such_function_xyz
echo keep >"$W/afile"
lock; run "$W/outfile" "$P" record --quiet --pid "$MAIN" --duration 1 --output "$W/afile"; unlock
ok=no; [ $CODE = 1 ] && [ "$(cat "$W/afile")" = keep ] && ok=yes
row "output path that is a file" "\`--output FILE\`, an existing regular file" "$(message "$W/outfile.err")" "$CODE" "$(disk "$W/afile")" "$ok"
lock; run "$W/underfile" "$P" record --quiet --pid "$MAIN" --duration 1 --output "$W/afile/out"; unlock
ok=no; [ $CODE = 1 ] && [ "$(cat "$W/afile")" = keep ] && ok=yes
row "output path under a file" "\`--output FILE/out\`" "$(message "$W/underfile.err")" "$CODE" "$(disk "$W/afile")" "$ok"

kill "$MAIN" 2>/dev/null

# --- The table -----------------------------------------------------------------------------
cat <<EOF
# Fault table

Bad inputs and faults run by \`tests/fault_table.sh\` (as root) against the release binary
on $(uname -sr) ($(nproc) CPUs), $(date -u +%Y-%m-%d). The target is \`tests/targets/split.c\`, CPU-bound.
*Message* is the first line the profiler printed on stderr, past its \`recording pid …\` line
(and its last line, when it printed more);
*status* is its exit status; *left on disk* is what the output directory held afterwards
(*the 7 outputs*: recording.pb, profile.folded, flamegraph.svg, summary.txt, summary.json,
trace.perfetto-trace, profile.pb.gz). Truncation offsets were drawn with seed $SEED
(\`FAULT_SEED=$SEED tests/fault_table.sh\` repeats them).

| # | fault | what was done | message (first line) | status | left on disk | verdict |
|---|---|---|---|---|---|---|
EOF
printf '%s\n' "${ROWS[@]}"
defects=$(printf '%s\n' "${ROWS[@]}" | grep -c 'DEFECT')
echo
echo "$N faults, $defects not as promised."
[ "$defects" = 0 ]
