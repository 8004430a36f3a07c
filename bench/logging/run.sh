#!/usr/bin/env bash
# Request-log pipeline benchmark: the gateway under load with the request log on and off.
# Reports RPS and p50/p99 of each run, the RPS cost of logging (target: under 5 %), the
# gateway's CPU time per request on and off (steadier than RPS on a shared machine), the
# whole machine's CPU per request on and off (what RPS is at saturation, so the RPS cost
# without the run-to-run swings of RPS itself), and the
# sustained rate at which rows reached SQLite during the "on" runs, with rows pending and
# dropped.
#
#   bench/logging/run.sh                  # defaults: 6 s runs, 8 pairs, 32 connections, 20 keys
#   DURATION=30 PAIRS=5 CONNECTIONS=64 KEYS=1 bench/logging/run.sh
#   REQUEST_LOG=$'batch_size = 4096\n' bench/logging/run.sh   # more [request_log] settings
#
# The machine's speed drifts over a run (other tenants, turbo, page cache), by more than the
# effect measured. So runs are short and many, in pairs ordered on-off, off-on, on-off, ...
# (a drift that is linear over two pairs cancels), and the cost is the median of the pairs'
# own ratios: each compares two runs seconds apart, not two medians minutes apart.
#
# Requests take KEYS virtual keys in turn (each gateway creates its own), so the request log
# sees the spread of keys a shared gateway does.
#
# Installs wrk from Debian if it is missing. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
duration=${DURATION:-6}
pairs=${PAIRS:-8}
conns=${CONNECTIONS:-32}
threads=${THREADS:-2}
key_count=${KEYS:-20}

source "$root/bench/lib.sh"
bench_require wrk=wrk

upstream_key=sk-bench-upstream
gateway_key=bench-admin-key
start_mock "$upstream_key"

start_gateway() { # name enabled -> sets port and pid
  local name=$1 enabled=$2
  port=$(free_port)
  mkdir -p "$work/$name"
  # REQUEST_LOG: more [request_log] settings for both gateways, e.g. $'batch_size = 2048\n'.
  printf '[request_log]\nenabled = %s\n%s' "$enabled" "${REQUEST_LOG:-}" > "$work/$name/atalaya.toml"
  (cd "$work/$name" && OPENAI_API_KEY=$upstream_key OPENAI_BASE_URL=http://127.0.0.1:$mock_port/v1 \
    ATALAYA_ADMIN_KEY=$gateway_key RUST_LOG=warn \
    exec "$bin" serve --config atalaya.toml --listen 127.0.0.1:"$port" --data-dir "$work/$name/data" \
    2>"$work/$name/log") &
  pid=$!; pids+=($pid)
  wait_port "$port"
}
start_gateway on true; on_port=$port; on_pid=$pid; on_keys=$(create_keys "$on_port" "$gateway_key" "$key_count" 4)
start_gateway off false; off_port=$port; off_pid=$pid; off_keys=$(create_keys "$off_port" "$gateway_key" "$key_count" 4)
sleep 0.5

# CPU time of a process, in clock ticks (user + system, all threads).
cpu_ticks() { local f; read -r -a f < /proc/"$1"/stat; echo $((f[13] + f[14])); }
# CPU time of the gateway's request workers (threads atalaya-http-N) only; the rest of the
# process is the request-log writer, the database pool and background tasks.
worker_ticks() {
  local total=0 task f
  for task in /proc/"$1"/task/*; do
    [[ $(cat "$task/comm" 2>/dev/null) == atalaya-http-* ]] || continue
    read -r -a f < "$task/stat" 2>/dev/null || continue
    # comm has no spaces here, so the fields are where proc(5) says.
    total=$((total + f[13] + f[14]))
  done
  echo $total
}
# CPU time the whole machine spent working (user, nice, system, irq, softirq; not idle, I/O
# wait or steal), in clock ticks: wrk, the mock and the gateway together. When the machine is
# saturated, RPS is its CPU divided by this per request, so what logging adds to it per
# request is what it costs in RPS — a steadier figure than RPS itself on a shared host.
machine_ticks() {
  local label user nice system idle iowait irq softirq rest
  read -r label user nice system idle iowait irq softirq rest < /proc/stat
  echo $((user + nice + system + irq + softirq))
}
hz=$(getconf CLK_TCK)
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v name="$2" '$1 == name {print $2}'; }
results=$work/results.txt
: > "$results"
run() { # name port keys pid
  local name=$1 port=$2 url="http://127.0.0.1:$2/v1/chat/completions" pid=$4
  export BENCH_KEYS=$3
  BENCH_BODY_FILE=$root/bench/gateway/chat.json BENCH_KEY=$gateway_key \
    wrk -t1 -c"$conns" -d2s -s "$root/bench/gateway/post.lua" "$url" >/dev/null 2>&1 || true
  local written_before; written_before=$(metric "$port" atalaya_request_log_rows_written_total)
  local line ticks_before ticks_after
  local workers_before workers_after
  local machine_before machine_after
  ticks_before=$(cpu_ticks "$pid"); workers_before=$(worker_ticks "$pid"); machine_before=$(machine_ticks)
  line=$(BENCH_BODY_FILE=$root/bench/gateway/chat.json BENCH_KEY=$gateway_key \
    wrk -t"$threads" -c"$conns" -d"${duration}s" --timeout 10s -s "$root/bench/gateway/post.lua" "$url" | grep '^BENCH')
  ticks_after=$(cpu_ticks "$pid"); workers_after=$(worker_ticks "$pid"); machine_after=$(machine_ticks)
  # Rows still buffered at the end of the run are written within a flush interval or two.
  sleep 1
  local written_after; written_after=$(metric "$port" atalaya_request_log_rows_written_total)
  local pending; pending=$(metric "$port" atalaya_request_log_rows_pending)
  local dropped; dropped=$(metric "$port" atalaya_request_log_rows_dropped_total)
  echo "$name $line written=$(( ${written_after:-0} - ${written_before:-0} )) pending=${pending:-0} dropped=${dropped:-0} cpu_ticks=$((ticks_after - ticks_before)) worker_ticks=$((workers_after - workers_before)) machine_ticks=$((machine_after - machine_before)) hz=$hz" | tee -a "$results"
}
for pair in $(seq "$pairs"); do
  if (( pair % 2 )); then
    run on "$on_port" "$on_keys" "$on_pid"
    run off "$off_port" "$off_keys" "$off_pid"
  else
    run off "$off_port" "$off_keys" "$off_pid"
    run on "$on_port" "$on_keys" "$on_pid"
  fi
done
rows=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COALESCE(SUM(rows), 0) FROM request_log_blocks").fetchone()[0])' \
  "$work/on/data/atalaya.db" 2>/dev/null || echo "?")

python3 - "$results" "$duration" "$rows" <<'PY'
import re, statistics, sys
runs = {"on": [], "off": []}
for line in open(sys.argv[1]):
    name = line.split()[0]
    runs[name].append({k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)})
duration = float(sys.argv[2])
print()
print(f"{'run':<6}{'rps':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'rows/s':>10}{'pending':>9}{'dropped':>9}{'cpu us/req':>12}{'machine us/req':>16}")
def cpu_us(r, ticks="cpu_ticks"):
    return r[ticks] / r["hz"] * 1e6 / max(r["requests"], 1)
for name in ("on", "off"):
    for r in runs[name]:
        rows_per_s = r["written"] / duration if name == "on" else 0
        errors = r["errors"] + r["non2xx"]
        print(f"{name:<6}{r['rps']:>9.0f}{r['p50'] / 1000:>9.2f}{r['p99'] / 1000:>9.2f}{errors:>8.0f}{rows_per_s:>10.0f}{r['pending']:>9.0f}{r['dropped']:>9.0f}{cpu_us(r):>12.1f}{cpu_us(r, 'machine_ticks'):>16.1f}")
on = statistics.median(r["rps"] for r in runs["on"])
off = statistics.median(r["rps"] for r in runs["off"])
# Runs alternate on/off, so the i-th of each form a pair taken seconds apart.
pair_costs = sorted((1 - a["rps"] / b["rps"]) * 100 for a, b in zip(runs["on"], runs["off"]))
written = sum(r["written"] for r in runs["on"])
requests = sum(r["requests"] for r in runs["on"])
print()
print(f"logging costs {statistics.median(pair_costs):.1f} % of RPS (median of {len(pair_costs)} pairs; target < 5 %); "
      f"pairs: {', '.join(f'{c:.1f}' for c in pair_costs)}")
print(f"median rps: logging on {on:.0f}, off {off:.0f} ({(1 - on / off) * 100:.1f} % apart)")
cpu_on = statistics.median(cpu_us(r) for r in runs["on"])
cpu_off = statistics.median(cpu_us(r) for r in runs["off"])
print(f"median gateway CPU per request (all threads): on {cpu_on:.1f} us, off {cpu_off:.1f} us; "
      f"logging adds {cpu_on - cpu_off:.1f} us ({(cpu_on / cpu_off - 1) * 100:.1f} % of the gateway's CPU)")
workers_on = statistics.median(cpu_us(r, "worker_ticks") for r in runs["on"])
workers_off = statistics.median(cpu_us(r, "worker_ticks") for r in runs["off"])
rest_on = statistics.median(cpu_us(r) - cpu_us(r, "worker_ticks") for r in runs["on"])
rest_off = statistics.median(cpu_us(r) - cpu_us(r, "worker_ticks") for r in runs["off"])
print(f"  of it, request workers: on {workers_on:.1f} us, off {workers_off:.1f} us; "
      f"other threads (log writer, database, background): on {rest_on:.1f} us, off {rest_off:.1f} us")
machine_on = statistics.median(cpu_us(r, "machine_ticks") for r in runs["on"])
machine_off = statistics.median(cpu_us(r, "machine_ticks") for r in runs["off"])
print(f"median machine CPU per request (wrk, mock and gateway): on {machine_on:.1f} us, off {machine_off:.1f} us; "
      f"logging costs {(1 - machine_off / machine_on) * 100:.1f} % of RPS at saturation (target < 5 %)")
print(f"rows written during 'on' runs: {written:.0f} of {requests:.0f} requests measured "
      f"(+ warm-ups), {written / (duration * len(runs['on'])):.0f} rows/s sustained; rows in the database: {sys.argv[3]}")
PY
mkdir -p "$root/bench/results"
cp "$results" "$root/bench/results/logging-latest.txt"
