#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: atalaya (request log on and off)
# and nginx, each in front of mock-provider, for a plain and a streamed chat completion.
#
#   bench/gateway/instructions.sh                       # 15 s of load per target and body
#   DURATION=30 BODIES=chat.json bench/gateway/instructions.sh
#   TARGETS=atalaya-nolog BODIES=chat.json KEEP_DUMPS=/tmp/cg bench/gateway/instructions.sh
#     (one target only; the callgrind dumps are copied to /tmp/cg for callgrind_annotate)
#
# Why: on a shared 2-core host, requests per second move 20–30 % between runs of the same
# binary, so a change of a few per cent cannot be seen in them. Callgrind counts the
# instructions a process executes in user space, which stay the same run after run whatever
# else the host is doing — a steady figure for comparing two builds (BENCH_BIN=…) and for
# the request log's share. It is not time: it leaves out the kernel (socket calls, TCP, which
# nginx and atalaya pay alike per request), cache misses and waiting. Under valgrind the
# process runs ~50x slower on one core, so these runs say nothing about throughput.
#
# Each target warms up for 5 s, its counters are zeroed, then wrk drives it for DURATION
# seconds at 8 connections; instructions between the zeroing and the dump, divided by the
# requests wrk completed, give the figure. Installs valgrind, wrk and nginx from Debian if
# they are missing. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
here=$root/bench/gateway
duration=${DURATION:-15}
bodies=${BODIES:-"chat.json chat-stream.json"}
conns=${CONNECTIONS:-8}
targets=${TARGETS:-"atalaya atalaya-nolog nginx"}
keep=${KEEP_DUMPS:-}

source "$root/bench/lib.sh"
bench_require wrk=wrk nginx=nginx-light valgrind=valgrind
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

upstream_key=sk-bench-upstream
gateway_key=bench-admin-key
start_mock "$upstream_key"

results=$work/results.txt
: > "$results"

# measure NAME BODY KEY PORT PID: warm up, zero the counters, load, dump; appends a result line.
measure() {
  local name=$1 body=$2 key=$3 port=$4 pid=$5
  local url=http://127.0.0.1:$port/v1/chat/completions
  BENCH_BODY_FILE=$here/$body BENCH_KEY=$key wrk -t1 -c"$conns" -d5s -s "$here/post.lua" "$url" >/dev/null 2>&1 || true
  callgrind_control --zero "$pid" >/dev/null 2>&1
  local line
  line=$(BENCH_BODY_FILE=$here/$body BENCH_KEY=$key \
    wrk -t1 -c"$conns" -d"${duration}s" --timeout 30s -s "$here/post.lua" "$url" | grep '^BENCH')
  local before; before=$(ls "$work"/callgrind.* 2>/dev/null || true)
  callgrind_control --dump "$pid" >/dev/null 2>&1
  # The dump is written asynchronously: wait for the new file.
  local file=""
  for _ in $(seq 100); do
    file=$(comm -13 <(echo "$before") <(ls "$work"/callgrind.* 2>/dev/null) | head -1)
    [ -n "$file" ] && grep -q '^totals:' "$file" 2>/dev/null && break
    file=""; sleep 0.2
  done
  [ -n "$file" ] || { echo "no callgrind dump for $name $body" >&2; exit 1; }
  local instructions; instructions=$(awk '/^summary:/ {print $2}' "$file")
  echo "$name $body instructions=$instructions $line" | tee -a "$results"
  if [ -n "$keep" ]; then mkdir -p "$keep"; cp "$file" "$keep/callgrind.$name.${body%.json}"; fi
}

# start_atalaya NAME ENABLED: atalaya under callgrind with the request log on or off.
start_atalaya() {
  local name=$1 enabled=$2 port; port=$(free_port)
  mkdir -p "$work/$name"
  # Under valgrind the gateway serves ~800 requests/s, so a 200 ms flush would write batches of
  # ~150 rows; at real load they are full (512). A 1 s flush keeps the writer's per-row cost
  # in the regime it has under load.
  printf '[request_log]\nenabled = %s\nflush_interval_ms = 1000\n' "$enabled" > "$work/$name/atalaya.toml"
  (cd "$work/$name" && OPENAI_API_KEY=$upstream_key OPENAI_BASE_URL=http://127.0.0.1:$mock_port/v1 \
    ATALAYA_ADMIN_KEY=$gateway_key RUST_LOG=warn \
    exec valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.$name.%p" \
      "$bin" serve --config atalaya.toml --listen 127.0.0.1:"$port" --data-dir "$work/$name/data" \
      2>"$work/$name/log") &
  target_pid=$!; target_port=$port
  for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return 0; sleep 0.1; done
  echo "atalaya ($name) never opened its port" >&2; exit 1
}

stop() { kill "$1" 2>/dev/null || true; for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.2; done; kill -9 "$1" 2>/dev/null || true; }

for target in atalaya atalaya-nolog; do
  [[ " $targets " == *" $target "* ]] || continue
  enabled=true; [ "$target" = atalaya-nolog ] && enabled=false
  start_atalaya "$target" "$enabled"
  for body in $bodies; do measure "$target" "$body" "$gateway_key" "$target_port" "$target_pid"; done
  stop "$target_pid"
done

# nginx: one worker, no master, so one process holds every request's instructions.
if [[ " $targets " == *" nginx "* ]]; then
nginx_port=$(free_port)
mkdir -p "$work/nginx"
sed -e "s|@DIR@|$work/nginx|g" -e "s|@MOCK_PORT@|$mock_port|" -e "s|@NGINX_PORT@|$nginx_port|" \
  -e 's|^worker_processes 2;|worker_processes 1; master_process off;|' \
  "$here/nginx.conf.template" > "$work/nginx/nginx.conf"
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.nginx.%p" \
  "$nginx_bin" -c "$work/nginx/nginx.conf" -p "$work/nginx" 2>"$work/nginx.log" &
nginx_pid=$!
wait_port "$nginx_port"
for body in $bodies; do measure nginx "$body" "$upstream_key" "$nginx_port" "$nginx_pid"; done
stop "$nginx_pid"
fi

python3 - "$results" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    name, body = line.split()[:2]
    fields = dict(re.findall(r"(\w+)=([\d.]+)", line))
    rows[(name, body)] = (int(fields["instructions"]), int(fields["requests"]), int(fields["errors"]) + int(fields["non2xx"]))
print()
print("User-space instructions per request (callgrind). Steady across runs; not time.")
print(f"{'body':<20}{'target':<16}{'requests':>10}{'errors':>8}{'instr/request':>15}{'vs nginx':>10}")
for (name, body), (instructions, requests, errors) in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    per = instructions / max(requests, 1)
    nginx = rows.get(("nginx", body))
    ratio = f"{per / (nginx[0] / max(nginx[1], 1)):.2f}x" if nginx else ""
    print(f"{body:<20}{name:<16}{requests:>10}{errors:>8}{per:>15,.0f}{ratio:>10}")
print()
for body in sorted({b for _, b in rows}):
    on, off = rows.get(("atalaya", body)), rows.get(("atalaya-nolog", body))
    if on and off:
        per_on, per_off = on[0] / on[1], off[0] / off[1]
        print(f"request log, {body}: {per_on - per_off:,.0f} instructions a request "
              f"({(per_on - per_off) / per_on * 100:.1f} % of atalaya's with it on)")
PY
