#!/usr/bin/env bash
# Three daemons on one PostgreSQL, 300 tasks submitted to one of them, and
# one daemon killed with kill -9 (its whole process group) halfway through.
# Every task logs each of its runs ("start PID", "end PID") and, before it
# starts, checks that no earlier run of it is still alive ("overlap PID").
# At the end: every task COMPLETED, no run overlapped another of its task,
# and only the tasks the kill interrupted ran twice.
#
# usage: examples/cluster/kill-one-of-three.sh postgres://USER[:PASSWORD]@HOST:PORT/DB
set -euo pipefail
store=${1:?usage: $0 postgres://USER[:PASSWORD]@HOST:PORT/DB}
here=$(cd "$(dirname "$0")/../.." && pwd)
tm() { node "$here/bin/task-manager" "$@"; }
work=$(mktemp -d)
mkdir "$work/runs"
ports=(3101 3102 3103)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

for port in "${ports[@]}"; do
  # setsid: each daemon in its own process group, as under systemd or a shell's job.
  setsid node "$here/bin/task-manager" serve --store "$store" --port "$port" --data-dir "$work/data" \
    --concurrency 8 --lease-ms 5000 >"$work/$port.log" 2>&1 &
  pids+=($!)
done
for port in "${ports[@]}"; do until tm health --port "$port" >/dev/null 2>&1; do sleep 0.1; done; done
echo "$(date +%T) three daemons up: $(tm nodes --port 3101 --json | grep -o '"name":"[^"]*"' | cut -d'"' -f4 | tr '\n' ' ')"

# 300 tasks, sent in one go to the first daemon as protocol lines.
node -e '
  const [runs] = process.argv.slice(1);
  for (let i = 1; i <= 300; i++) {
    const log = `${runs}/t${i}`;
    const cmd = `for p in $(awk '"'"'$1=="start"{print $2}'"'"' ${log} 2>/dev/null); do kill -0 $p 2>/dev/null && echo overlap $p >> ${log}; done; ` +
      `echo start $$ >> ${log}; sleep 0.5; echo end $$ >> ${log}`;
    console.log(JSON.stringify({ op: "submit", id: `t${i}`, cmd }));
  }' "$work/runs" >"$work/submits.ndjson"
acknowledged=$(nc -q 2 127.0.0.1 3101 <"$work/submits.ndjson" | grep -c '"ok":true')
echo "$(date +%T) acknowledged: $acknowledged"

completed() { tm count --port 3101 --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).counts.COMPLETED))'; }
until [ "$(completed)" -ge 100 ]; do sleep 0.2; done
echo "$(date +%T) $(completed) completed: kill -9 of the daemon on ${ports[2]} and its whole process group"
kill -KILL -- "-${pids[2]}"
start=$(date +%s)
until [ "$(completed)" -ge 300 ]; do sleep 0.5; done
echo "$(date +%T) all 300 COMPLETED $(( $(date +%s) - start )) s after the kill"

twice=0; overlaps=0; unexplained=0
interrupted=$(tm list --port 3101 --limit 1000 --json | node -e '
  let s=""; process.stdin.on("data",d=>s+=d).on("end",()=>{
    for (const t of JSON.parse(s).tasks) if (t.interrupted) console.log(t.id, t.interrupted);
  })')
for i in $(seq 1 300); do
  starts=$(grep -c '^start' "$work/runs/t$i")
  overlaps=$(( overlaps + $(grep -c '^overlap' "$work/runs/t$i" || true) ))
  if [ "$starts" -gt 1 ]; then
    twice=$(( twice + 1 ))
    # each run after the first is explained by an interruption recorded on the task
    recorded=$(awk -v id="t$i" '$1==id{print $2}' <<<"$interrupted")
    [ "${recorded:-0}" -ge $(( starts - 1 )) ] || unexplained=$(( unexplained + 1 ))
  fi
done
echo "$(date +%T) ran more than once: $twice (each recorded INTERRUPTED: $(( twice - unexplained )) of them); runs that overlapped: $overlaps"
[ "$overlaps" -eq 0 ] && [ "$unexplained" -eq 0 ]
