#!/usr/bin/env bash
# Gateway overhead benchmark: wrk against (a) mock-provider directly, (b) nginx as a plain
# reverse proxy in front of it, (c) atalaya in front of it — non-streaming and streaming, in
# one run — and (d) atalaya translating: an OpenAI client's request to a model served by an
# Anthropic upstream (the same simulator, speaking Anthropic's format). Prints RPS, p50/p99,
# CPU ms per request and atalaya's peak RSS, the ratios to nginx, and translated vs
# same-format.
#
#   bench/gateway/run.sh                 # defaults: 10 s per run, 32 and 1 connections, 3 rounds
#   DURATION=30 CONNECTIONS="64 32 1" ROUNDS=1 bench/gateway/run.sh
#
# Every round runs each target once, in turn; the tables show the median of each figure over
# the rounds, so a slow spell of the shared machine does not land on one target alone. nginx
# and atalaya run back to back, in swapped order every other round, and the median of the
# rounds' own ratios is printed too (steadier than a ratio of medians when the host drifts).
#
# Installs wrk and nginx from Debian if they are missing. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
here=$root/bench/gateway
duration=${DURATION:-10}
connections=${CONNECTIONS:-"32 1"}
rounds=${ROUNDS:-3}
threads=${THREADS:-2}

source "$root/bench/lib.sh"
bench_require wrk=wrk nginx=nginx-light
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

cpu_ticks() { local total=0; for pid in "$@"; do read -r -a f < /proc/"$pid"/stat; total=$((total + f[13] + f[14])); done; echo $total; }
hz=$(getconf CLK_TCK)

upstream_key=sk-bench-upstream
gateway_key=bench-admin-key
mock_port=$(free_port); nginx_port=$(free_port); atalaya_port=$(free_port)
"$bin" mock-provider --listen 127.0.0.1:"$mock_port" --api-key "$upstream_key" 2>"$work/mock.log" &
mock_pid=$!; pids+=($mock_pid)
mkdir -p "$work/nginx"
sed -e "s|@DIR@|$work/nginx|g" -e "s|@MOCK_PORT@|$mock_port|" -e "s|@NGINX_PORT@|$nginx_port|" \
  "$here/nginx.conf.template" > "$work/nginx/nginx.conf"
"$nginx_bin" -c "$work/nginx/nginx.conf" -p "$work/nginx" 2>"$work/nginx.log" &
nginx_pid=$!; pids+=($nginx_pid)
(cd "$work" && OPENAI_API_KEY=$upstream_key OPENAI_BASE_URL=http://127.0.0.1:$mock_port/v1 \
  ANTHROPIC_API_KEY=$upstream_key ANTHROPIC_BASE_URL=http://127.0.0.1:$mock_port \
  ATALAYA_ADMIN_KEY=$gateway_key RUST_LOG=warn \
  exec "$bin" serve --listen 127.0.0.1:"$atalaya_port" --data-dir "$work/atalaya-data" 2>"$work/atalaya.log") &
atalaya_pid=$!; pids+=($atalaya_pid)
wait_port "$mock_port"; wait_port "$nginx_port"; wait_port "$atalaya_port"
sleep 0.5
nginx_pids() { pgrep -P "$nginx_pid" | tr '\n' ' '; echo "$nginx_pid"; }

results=$work/results.txt
: > "$results"
# Peak RSS of atalaya during one scenario, sampled every 250 ms.
rss_sampler() { while :; do awk '/VmRSS/ {print $2}' /proc/"$atalaya_pid"/status; sleep 0.25; done; }
run() { # name url key body connections pids...
  local name=$1 url=$2 key=$3 body=$4 conns=$5; shift 5
  local wrk_threads=$(( threads < conns ? threads : conns ))
  # Warm up pools and caches, then measure.
  BENCH_BODY_FILE=$here/$body BENCH_KEY=$key wrk -t1 -c"$conns" -d2s -s "$here/post.lua" "$url" >/dev/null 2>&1 || true
  local before; before=$(cpu_ticks "$@")
  rss_sampler > "$work/rss" & local sampler=$!
  local line
  line=$(BENCH_BODY_FILE=$here/$body BENCH_KEY=$key \
    wrk -t"$wrk_threads" -c"$conns" -d"${duration}s" --timeout 10s -s "$here/post.lua" "$url" | grep '^BENCH')
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  local after; after=$(cpu_ticks "$@")
  local rss_kb; rss_kb=$(sort -n "$work/rss" | tail -1)
  local requests; requests=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line")
  local cpu_ms; cpu_ms=$(python3 -c "print(f'{($after-$before)*1000/$hz/max($requests,1):.3f}')")
  echo "$name $body c=$conns $line cpu_ms_per_req=$cpu_ms atalaya_rss_kb=${rss_kb:-0}" | tee -a "$results"
}

for round in $(seq "$rounds"); do
for conns in $connections; do
  for body in chat.json chat-stream.json; do
    run mock "http://127.0.0.1:$mock_port/v1/chat/completions" "$upstream_key" "$body" "$conns" "$mock_pid"
    # nginx and atalaya back to back, their order swapped every round (a drift over two
    # rounds cancels), so each round gives one ratio from runs seconds apart.
    if (( round % 2 )); then
      run nginx "http://127.0.0.1:$nginx_port/v1/chat/completions" "$upstream_key" "$body" "$conns" $(nginx_pids)
      run atalaya "http://127.0.0.1:$atalaya_port/v1/chat/completions" "$gateway_key" "$body" "$conns" "$atalaya_pid"
    else
      run atalaya "http://127.0.0.1:$atalaya_port/v1/chat/completions" "$gateway_key" "$body" "$conns" "$atalaya_pid"
      run nginx "http://127.0.0.1:$nginx_port/v1/chat/completions" "$upstream_key" "$body" "$conns" $(nginx_pids)
    fi
  done
  # Translation: the same Anthropic upstream, reached by an Anthropic client (same format,
  # passed through) and by an OpenAI client (translated both ways).
  for body in messages.json messages-stream.json; do
    run anthropic "http://127.0.0.1:$atalaya_port/v1/messages" "$gateway_key" "$body" "$conns" "$atalaya_pid"
  done
  for body in chat-translated.json chat-translated-stream.json; do
    run translated "http://127.0.0.1:$atalaya_port/v1/chat/completions" "$gateway_key" "$body" "$conns" "$atalaya_pid"
  done
done
done
peak_rss_kb=$(awk '/VmHWM/ {print $2}' /proc/"$atalaya_pid"/status)
logged=$(curl -s "http://127.0.0.1:$atalaya_port/metrics" | awk '/^atalaya_request_log_rows_written_total/ {print $2}')
dropped=$(curl -s "http://127.0.0.1:$atalaya_port/metrics" | awk '/^atalaya_request_log_rows_dropped_total/ {print $2}')

python3 - "$results" "$peak_rss_kb" "${logged:-0}" "${dropped:-0}" <<'PY'
import re, sys
import statistics
runs = {}
for line in open(sys.argv[1]):
    name, body, conns = line.split()[:3]
    fields = dict(re.findall(r"(\w+)=([\d.]+)", line))
    runs.setdefault((name, body, conns), []).append(fields)
# Each figure is the median over the rounds (the runs of a round alternate targets, so a
# slow spell of the shared machine hits them alike); errors are summed.
rows = {}
for key, taken in runs.items():
    merged = {}
    for field in taken[0]:
        values = [float(t[field]) for t in taken]
        merged[field] = sum(values) if field in ("errors", "non2xx") else statistics.median(values)
    rows[key] = merged
rounds = max(len(taken) for taken in runs.values())

def cells(f, direct):
    p50, p99 = f["p50"] / 1000, f["p99"] / 1000
    added50 = f"{p50 - direct['p50'] / 1000:.2f}" if direct else "-"
    added99 = f"{p99 - direct['p99'] / 1000:.2f}" if direct else "-"
    errors = int(f["errors"] + f["non2xx"])
    return (f"{float(f['rps']):>9.0f}{p50:>8.2f}{p99:>8.2f}{added50:>9}{added99:>9}"
            f"{float(f['cpu_ms_per_req']):>11.3f}{errors:>7}{f['atalaya_rss_kb'] / 1024:>9.1f}")

header = f"{'rps':>9}{'p50 ms':>8}{'p99 ms':>8}{'p50+ ms':>9}{'p99+ ms':>9}{'cpu ms/req':>11}{'errors':>7}{'RSS MB':>9}"
print()
print(f"Medians over {rounds} round(s).")
print("Proxy overhead. p50+/p99+: latency added over calling mock-provider directly; vs nginx: rps ratio.")
print(f"{'scenario':<24}{'target':<9}{header}{'vs nginx':>9}")
for (name, body, conns), f in rows.items():
    if name not in ("mock", "nginx", "atalaya"):
        continue
    nginx = rows.get(("nginx", body, conns))
    direct = rows.get(("mock", body, conns)) if name != "mock" else None
    ratio = f"{float(f['rps']) / float(nginx['rps']) * 100:.0f}%" if nginx else ""
    print(f"{body + ' ' + conns:<24}{name:<9}{cells(f, direct)}{ratio:>9}")

print()
print("atalaya vs nginx per round (the two runs back to back): median, and the rounds' range.")
for (name, body, conns), taken in runs.items():
    if name != "atalaya" or ("nginx", body, conns) not in runs:
        continue
    ratios = [float(a["rps"]) / float(n["rps"]) * 100 for a, n in zip(taken, runs[("nginx", body, conns)])]
    print(f"  {body + ' ' + conns:<24}{statistics.median(ratios):>5.0f}%   ({min(ratios):.0f}–{max(ratios):.0f} %)")

print()
print("Translation. anthropic: Anthropic client -> Anthropic upstream (passed through);")
print("translated: OpenAI client -> the same Anthropic upstream. p50+/p99+ and the ratio are against the anthropic row;")
print("'vs openai' compares with OpenAI client -> OpenAI upstream (atalaya rows above).")
pairs = {"chat-translated.json": ("messages.json", "chat.json"),
         "chat-translated-stream.json": ("messages-stream.json", "chat-stream.json")}
print(f"{'scenario':<34}{'target':<11}{header}{'vs same':>9}{'vs openai':>10}")
for (name, body, conns), f in rows.items():
    if name not in ("anthropic", "translated"):
        continue
    same, ratio, versus_openai, direct = None, "", "", None
    if name == "translated":
        same = rows.get(("anthropic", pairs[body][0], conns))
        openai = rows.get(("atalaya", pairs[body][1], conns))
        direct = same
        if same:
            ratio = f"{float(f['rps']) / float(same['rps']) * 100:.0f}%"
        if openai:
            versus_openai = f"{float(f['rps']) / float(openai['rps']) * 100:.0f}%"
    print(f"{body + ' ' + conns:<34}{name:<11}{cells(f, direct)}{ratio:>9}{versus_openai:>10}")
print()
print(f"atalaya peak RSS over the whole run: {int(sys.argv[2]) / 1024:.1f} MB; request-log rows written: {sys.argv[3]}, dropped: {sys.argv[4]}")
PY
mkdir -p "$root/bench/results"
cp "$results" "$root/bench/results/gateway-latest.txt"
