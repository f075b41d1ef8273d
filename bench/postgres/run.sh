#!/bin/bash
# Issue 15, must-show 1: `profiler record --all` while PostgreSQL serves pgbench (-S, 4
# clients) and a CPU-bound program runs, beside `perf record -a -g` over the same 10 s.
# Needs root, `apt-get install postgresql` (15 here) and a release build; then
# `python3 bench/postgres/compare.py` prints per-process shares of both.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PG=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
work=${WORK:-/tmp/profiler-pgbench}
mkdir -p "$work"
chown postgres "$work"
if [ ! -d "$work/data" ]; then
  su postgres -c "$PG/initdb -D $work/data" >/dev/null
fi
su postgres -c "$PG/pg_ctl -D $work/data -o \"-k $work -p 5499 -c listen_addresses=''\" -l $work/log start" >/dev/null
trap 'su postgres -c "$PG/pg_ctl -D $work/data stop" >/dev/null' EXIT
sleep 2
su postgres -c "$PG/pgbench -h $work -p 5499 -q -i -s 5 postgres" >/dev/null 2>&1
gcc -O2 -fno-omit-frame-pointer -o "$work/cpu" "$root/tests/targets/short.c"
su postgres -c "$PG/pgbench -h $work -p 5499 -c 4 -j 2 -T 25 -S postgres" > "$work/pgbench.out" 2>&1 &
bench=$!
"$work/cpu" 20000 &
cpu=$!
sleep 3
rm -rf "$work/ours" "$work/perf.data"
perf record -q -a -g -F 99 -o "$work/perf.data" -- sleep 10 >/dev/null 2>&1 &
perf=$!
"$root/target/release/profiler" record --quiet --all --duration 10 --frequency 99 \
  --group-by process --output "$work/ours" >/dev/null
wait $perf
kill $cpu 2>/dev/null || true
wait $bench || true
echo "$work"
