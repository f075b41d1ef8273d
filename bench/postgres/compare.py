"""Per-process shares of bench/postgres/run.sh's two recordings: ours (summary.json) and
perf's (perf script), both over user processes (idle and kernel threads left out)."""
import json, os, subprocess, collections
W = os.environ.get('WORK', '/tmp/profiler-pgbench')
s = json.load(open(W + '/ours/summary.json'))
procs = s['processes']
ours = {}
for p in procs:
    ours[p['pid']] = (p['comm'], p['samples'])
# perf: samples per pid, excluding pid 0 (idle) and kernel threads (no user frames & comm in kthreads)
out = subprocess.run(['perf','script','-F','comm,pid','-i',W + '/perf.data'],capture_output=True,text=True).stdout
perf = collections.Counter(); pcomm = {}
for l in out.splitlines():
    parts = l.split()
    if len(parts) < 2: continue
    pid = int(parts[-1]); comm = ' '.join(parts[:-1])
    perf[pid] += 1; pcomm[pid] = comm
kth = set()
for pid in perf:
    try:
        st = open(f'/proc/{pid}/stat').read(); fl = int(st[st.rfind(')')+2:].split()[6])
        if fl & 0x200000: kth.add(pid)
    except Exception: pass
user_perf = {p:n for p,n in perf.items() if p != 0 and p not in kth}
tp = sum(user_perf.values()); to = sum(n for _,n in ours.values())
print('ours samples (user processes):', to, ' perf:', tp, ' perf idle:', perf.get(0,0), ' kthreads:', sum(perf[p] for p in kth))
rows = []
for pid in set(user_perf) | set(ours):
    o = ours.get(pid, ('', 0)); pn = user_perf.get(pid, 0)
    rows.append((pid, o[0] or pcomm.get(pid,'?'), 100*o[1]/max(to,1), 100*pn/max(tp,1)))
rows.sort(key=lambda r: -(r[2]+r[3]))
# by name too
byname = collections.defaultdict(lambda: [0.0,0.0])
for pid,name,a,b in rows:
    byname[name][0]+=a; byname[name][1]+=b
print('pid name ours% perf% diff')
for r in rows[:10]: print(r[0], r[1], f'{r[2]:.1f} {r[3]:.1f} {r[2]-r[3]:+.1f}')
print('by name:')
for n,(a,b) in sorted(byname.items(), key=lambda x:-x[1][0])[:6]: print(n, f'{a:.1f} {b:.1f} {a-b:+.1f}')
print('max |diff| per process:', max(abs(r[2]-r[3]) for r in rows))
