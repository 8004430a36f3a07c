#!/usr/bin/env bash
# Load suite: 19 scenarios with wrk against the release binary and mock-provider, each on a
# fresh gateway so its peak RSS (VmHWM) is its own. Prints a table of RPS, p50/p95/p99, errors
# and peak RSS, and writes it to bench/results/load-latest.md (bench/load/RESULTS.md keeps a run with notes).
#
#   bench/load/run.sh                      # 10 s per scenario
#   DURATION=3 bench/load/run.sh           # a quick pass
#   ONLY="sse-10k-sim steady-chat" bench/load/run.sh
#
# Installs wrk from Debian if it is missing. Traffic stays on 127.0.0.1. This machine caps
# open files at 20000 per process, so streams through mock-provider (two sockets each in the
# gateway) stop at 9,000; 10,000 concurrent streams run against the built-in simulator.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
duration=${DURATION:-10}
only=${ONLY:-}
source "$root/bench/lib.sh"
bench_require wrk=wrk
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
lua=$root/bench/gateway/post.lua
bodies=$root/bench/gateway
upstream_key=sk-bench-upstream
admin=bench-admin-key

start_mock() { # port args...
  local port=$1; shift
  "$bin" mock-provider --listen 127.0.0.1:"$port" --api-key "$upstream_key" "$@" 2>>"$work/mock-$port.log" &
  pids+=($!)
  wait_port "$port"
}
fast_port=$(free_port); start_mock "$fast_port"
slow_port=$(free_port); start_mock "$slow_port" --tokens-per-second 20
late_port=$(free_port); start_mock "$late_port" --latency-ms 50
bad_port=$(free_port); start_mock "$bad_port" --profile failing

# A prompt of 1 MB.
python3 - "$work/large.json" <<'PY'
import json, sys
text = "lorem ipsum " * 87382
json.dump({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}, open(sys.argv[1], "w"))
PY
printf '{"model":"text-embedding-3-small","input":"lighthouses and watchtowers"}' > "$work/embed.json"
printf '{"model":"m","messages":[{"role":"user","content":"Give me one sentence about lighthouses."}]}' > "$work/failover.json"
printf '{"model":"sim-chat","stream":true,"messages":[{"role":"user","content":"Give me one sentence about lighthouses."}]}' > "$work/sim-stream.json"

provider() { # name port [type]
  # Leading newlines: $(...) strips trailing ones, and snippets are concatenated.
  printf '\n[[providers]]\nname = "%s"\ntype = "%s"\nbase_url = "http://127.0.0.1:%s%s"\napi_key = "%s"\nmodels = ["gpt-4o-mini", "text-embedding-3-small", "claude-haiku-4-5-20251001"]\n\n' \
    "$1" "${3:-openai-compatible}" "$2" "$([ "${3:-}" = anthropic ] && echo "" || echo /v1)" "$upstream_key"
}

gw_pid=""
start_gateway() { # config-text
  local dir=$work/gw-$RANDOM$RANDOM
  mkdir -p "$dir"
  printf '%s\n[telemetry]\nlog_dir = ""\n' "$1" > "$dir/atalaya.toml"
  gw_port=$(free_port)
  (cd "$dir" && ATALAYA_ADMIN_KEY=$admin RUST_LOG=warn \
    exec "$bin" serve --config atalaya.toml --listen 127.0.0.1:"$gw_port" --data-dir "$dir/data" 2>"$dir/log") &
  gw_pid=$!; pids+=($gw_pid)
  wait_port "$gw_port"
}
stop_gateway() { kill "$gw_pid" 2>/dev/null || true; wait "$gw_pid" 2>/dev/null || true; }

results=$work/results.txt
: > "$results"
scenario() { # name path body connections threads [keys] [note]
  local name=$1 path=$2 body=$3 conns=$4 threads=$5 keys=${6:-} note=${7:-}
  local url="http://127.0.0.1:$gw_port$path"
  export BENCH_BODY_FILE=$body BENCH_KEY=$admin BENCH_KEYS=$keys
  wrk -t1 -c"$(( conns < 64 ? conns : 64 ))" -d1s -s "$lua" "$url" >/dev/null 2>&1 || true
  local line
  line=$(wrk -t"$threads" -c"$conns" -d"${duration}s" --timeout 30s -s "$lua" "$url" 2>&1 | grep '^BENCH' || echo "BENCH rps=0 p50=0 p95=0 p99=0 requests=0 errors=0 non2xx=0")
  local rss; rss=$(awk '/VmHWM/ {print $2}' /proc/"$gw_pid"/status)
  echo "$name $line rss_kb=${rss:-0} note=${note// /_}" | tee -a "$results"
}
want() { [ -z "$only" ] || [[ " $only " == *" $1 "* ]]; }
openai=$(provider p0 "$fast_port")

if want steady-chat; then start_gateway "$openai"; scenario steady-chat /v1/chat/completions "$bodies/chat.json" 32 2; stop_gateway; fi
if want steady-stream; then start_gateway "$openai"; scenario steady-stream /v1/chat/completions "$bodies/chat-stream.json" 32 2; stop_gateway; fi
if want burst-256; then start_gateway "$openai"; scenario burst-256 /v1/chat/completions "$bodies/chat.json" 256 2; stop_gateway; fi
if want burst-2k; then start_gateway "$openai"; scenario burst-2k /v1/chat/completions "$bodies/chat.json" 2000 2; stop_gateway; fi
if want upstream-50ms; then start_gateway "$(provider p0 "$late_port")"; scenario upstream-50ms /v1/chat/completions "$bodies/chat.json" 256 2 "" "upstream_answers_after_50_ms"; stop_gateway; fi
if want sse-1k; then start_gateway "$(provider p0 "$slow_port")"; scenario sse-1k /v1/chat/completions "$bodies/chat-stream.json" 1000 2 "" "streams_at_20_tokens/s_through_mock-provider"; stop_gateway; fi
if want sse-9k; then start_gateway "$(provider p0 "$slow_port")"; scenario sse-9k /v1/chat/completions "$bodies/chat-stream.json" 9000 2 "" "streams_at_20_tokens/s_through_mock-provider"; stop_gateway; fi
if want sse-10k-h2; then start_gateway "$(provider p0 "$slow_port")$(printf '\nhttp2_prior_knowledge = true\n')"; scenario sse-10k-h2 /v1/chat/completions "$bodies/chat-stream.json" 10000 2 "" "streams_at_20_tokens/s_through_mock-provider,_upstream_over_h2c"; stop_gateway; fi
if want sse-10k-sim; then start_gateway "$(printf '[sim]\nenabled = true\ntokens_per_second = 20\n')"; scenario sse-10k-sim /v1/chat/completions "$work/sim-stream.json" 10000 2 "" "streams_at_20_tokens/s_from_the_built-in_simulator"; stop_gateway; fi
if want large-prompt; then start_gateway "$openai"; scenario large-prompt /v1/chat/completions "$work/large.json" 8 2 "" "1_MB_prompt"; stop_gateway; fi
if want many-keys; then start_gateway "$openai"; keys=$(create_keys "$gw_port" "$admin" 200); scenario many-keys /v1/chat/completions "$bodies/chat.json" 32 2 "$keys" "200_virtual_keys_in_turn"; stop_gateway; fi
if want rate-limited; then start_gateway "$openai"; keys=$(create_keys "$gw_port" "$admin" 10 0 ', "rpm_limit": 60'); scenario rate-limited /v1/chat/completions "$bodies/chat.json" 32 2 "$keys" "10_keys_at_60_rpm:_429s_expected"; stop_gateway; fi
if want failover; then
  start_gateway "$(provider p0 "$bad_port")$(provider p1 "$fast_port")$(printf '\n[[models]]\nname = "m"\nstrategy = "priority"\n[[models.deployments]]\nprovider = "p0"\nmodel = "gpt-4o-mini"\n[[models.deployments]]\nprovider = "p1"\nmodel = "gpt-4o-mini"\n[routing]\nretry_budget_ratio = 1.0\n')"
  scenario failover /v1/chat/completions "$work/failover.json" 32 2 "" "p0_answers_500,_p1_serves"; stop_gateway
fi
if want logging-on; then start_gateway "$openai"; scenario logging-on /v1/chat/completions "$bodies/chat.json" 32 2; stop_gateway; fi
if want logging-off; then start_gateway "$openai$(printf '\n[request_log]\nenabled = false\n')"; scenario logging-off /v1/chat/completions "$bodies/chat.json" 32 2; stop_gateway; fi
if want embeddings; then start_gateway "$openai"; scenario embeddings /v1/embeddings "$work/embed.json" 32 2; stop_gateway; fi
anthropic=$(provider a0 "$fast_port" anthropic)
if want anthropic; then start_gateway "$anthropic"; scenario anthropic /v1/messages "$bodies/messages.json" 32 2; stop_gateway; fi
if want anthropic-stream; then start_gateway "$anthropic"; scenario anthropic-stream /v1/messages "$bodies/messages-stream.json" 32 2; stop_gateway; fi
if want translated-stream; then start_gateway "$anthropic"; scenario translated-stream /v1/chat/completions "$bodies/chat-translated-stream.json" 32 2 "" "OpenAI_client,_Anthropic_upstream"; stop_gateway; fi

mkdir -p "$root/bench/results"
python3 - "$results" "$duration" "$root/bench/results/load-latest.md" <<'PY'
import re, sys, datetime, platform
rows = []
for line in open(sys.argv[1]):
    name = line.split()[0]
    fields = dict(re.findall(r"(\w+)=([^\s]+)", line))
    rows.append((name, fields))
header = f"| scenario | conns | rps | p50 ms | p95 ms | p99 ms | errors | non-2xx | peak RSS MB | note |"
out = [
    "# Load suite results",
    "",
    f"`bench/load/run.sh` on {datetime.date.today()}, {sys.argv[2]} s per scenario, release build, "
    f"2-core shared host; wrk, mock-provider and the gateway on the same machine. Peak RSS is the "
    "gateway's VmHWM over its whole life (each scenario starts a fresh gateway).",
    "",
    header,
    "|---|---|---|---|---|---|---|---|---|---|",
]
conns = {"steady-chat": 32, "steady-stream": 32, "burst-256": 256, "burst-2k": 2000, "upstream-50ms": 256,
         "sse-1k": 1000, "sse-9k": 9000, "sse-10k-h2": 10000, "sse-10k-sim": 10000, "large-prompt": 8, "many-keys": 32,
         "rate-limited": 32, "failover": 32, "logging-on": 32, "logging-off": 32, "embeddings": 32,
         "anthropic": 32, "anthropic-stream": 32, "translated-stream": 32}
for name, f in rows:
    ms = lambda k: f"{int(f.get(k, 0)) / 1000:.2f}"
    out.append(f"| {name} | {conns.get(name, '')} | {float(f['rps']):.0f} | {ms('p50')} | {ms('p95')} | {ms('p99')} | "
               f"{f['errors']} | {f['non2xx']} | {int(f['rss_kb']) / 1024:.1f} | {f.get('note', '').replace('_', ' ')} |")
text = "\n".join(out) + "\n"
print(text)
open(sys.argv[3], "w").write(text)
PY
