#!/usr/bin/env bash
# Routing benchmark, two parts, wrk against the release binary and mock-provider:
#
# 1. Failover under load: model `m` over three deployments — `ok` (healthy), `flaky` (fails
#    50 % of calls with a 500) and `slow` (+200 ms per answer). For each strategy: client
#    success rate, p50/p99, the share of answers each deployment served and the upstream
#    calls each one received (failed calls included), and retries.
# 2. Routing overhead: the same healthy simulator behind a model with 1 deployment and a
#    model with 50 deployments, per strategy; RPS and latency side by side.
#
#   bench/routing/run.sh                       # 20 s per failover run, 15 s per overhead run
#   DURATION=30 STRATEGIES="adaptive latency" bench/routing/run.sh
#
# Installs wrk from Debian if it is missing. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
here=$root/bench/routing
duration=${DURATION:-20}
overhead_duration=${OVERHEAD_DURATION:-15}
connections=${CONNECTIONS:-32}
strategies=${STRATEGIES-"adaptive latency least-connections round-robin"}
overhead_strategies=${OVERHEAD_STRATEGIES-"round-robin latency adaptive"}

source "$root/bench/lib.sh"
bench_require wrk=wrk

mock_calls() { curl -s "http://127.0.0.1:$1/_mock/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }

upstream_key=sk-bench-upstream
gateway_key=bench-admin-key
declare -A mock_port
start_mock() { # name args...
  local name=$1; shift
  local port; port=$(free_port)
  "$bin" mock-provider --listen 127.0.0.1:"$port" --api-key "$upstream_key" "$@" 2>"$work/mock-$name.log" &
  pids+=($!)
  mock_port[$name]=$port
  wait_port "$port"
}
start_mock ok
start_mock flaky --profile half-failing
start_mock slow --latency-ms 200

provider() { # name mock
  printf '[[providers]]\nname = "%s"\ntype = "openai-compatible"\nbase_url = "http://127.0.0.1:%s/v1"\napi_key = "%s"\nmodels = []\n\n' \
    "$1" "${mock_port[$2]}" "$upstream_key"
}

atalaya_pid=""
start_atalaya() { # config-file
  atalaya_port=$(free_port)
  (cd "$work" && ATALAYA_ADMIN_KEY=$gateway_key RUST_LOG=warn \
    exec "$bin" serve --listen 127.0.0.1:"$atalaya_port" --config "$1" --data-dir "$work/data-$atalaya_port" 2>"$work/atalaya-$atalaya_port.log") &
  atalaya_pid=$!
  wait_port "$atalaya_port"
  sleep 0.3
}
stop_atalaya() { kill "$atalaya_pid"; wait "$atalaya_pid" 2>/dev/null || true; }

bench() { # body duration
  BENCH_BODY_FILE=$here/$1 BENCH_KEY=$gateway_key \
    wrk -t2 -c"$connections" -d"$2s" --timeout 10s -s "$here/count.lua" "http://127.0.0.1:$atalaya_port/v1/chat/completions" | grep '^BENCH'
}

results=$work/results.txt
: > "$results"

for strategy in $strategies; do
  config=$work/failover-$strategy.toml
  { provider ok ok; provider flaky flaky; provider slow slow
    printf '[[models]]\nname = "m"\nstrategy = "%s"\n' "$strategy"
    for d in ok flaky slow; do printf '[[models.deployments]]\nprovider = "%s"\nmodel = "gpt-4o-mini"\n' "$d"; done
  } > "$config"
  start_atalaya "$config"
  before="$(mock_calls "${mock_port[ok]}") $(mock_calls "${mock_port[flaky]}") $(mock_calls "${mock_port[slow]}")"
  line=$(bench body.json "$duration")
  after="$(mock_calls "${mock_port[ok]}") $(mock_calls "${mock_port[flaky]}") $(mock_calls "${mock_port[slow]}")"
  retries=$(curl -s "http://127.0.0.1:$atalaya_port/metrics" | awk '/^atalaya_retries_total/ {s += $2} END {print s + 0}')
  echo "failover $strategy $line calls_before=${before// /,} calls_after=${after// /,} retries=$retries" | tee -a "$results"
  stop_atalaya
done

for strategy in $overhead_strategies; do
  config=$work/overhead-$strategy.toml
  { provider single ok
    for i in $(seq 0 49); do provider "d$i" ok; done
    printf '[[models]]\nname = "one"\nstrategy = "%s"\n[[models.deployments]]\nprovider = "single"\nmodel = "gpt-4o-mini"\n\n' "$strategy"
    printf '[[models]]\nname = "fifty"\nstrategy = "%s"\n' "$strategy"
    for i in $(seq 0 49); do printf '[[models.deployments]]\nprovider = "d%s"\nmodel = "gpt-4o-mini"\n' "$i"; done
  } > "$config"
  start_atalaya "$config"
  bench body-one.json 2 >/dev/null
  bench body-fifty.json 2 >/dev/null
  echo "overhead $strategy one $(bench body-one.json "$overhead_duration")" | tee -a "$results"
  echo "overhead $strategy fifty $(bench body-fifty.json "$overhead_duration")" | tee -a "$results"
  stop_atalaya
done

python3 - "$results" <<'PY'
import re, sys
failover, overhead = [], {}
for line in open(sys.argv[1]):
    words = line.split()
    fields = dict(re.findall(r"(\w+)=([\d.,]+)", line))
    served = dict(re.findall(r"served:([^=\s]+)=(\d+)", line))
    statuses = {int(k): int(v) for k, v in re.findall(r"status(\d+)=(\d+)", line)}
    if words[0] == "failover":
        failover.append((words[1], fields, served, statuses))
    else:
        overhead[(words[1], words[2])] = fields

print()
print("Failover: model m = ok + flaky (50 % HTTP 500) + slow (+200 ms); wrk -c32.")
print("served: share of client answers per deployment; calls: upstream calls each received (failures included).")
print(f"{'strategy':<18}{'rps':>8}{'success':>9}{'p50 ms':>8}{'p99 ms':>8}{'served ok/flaky/slow':>24}{'calls ok/flaky/slow':>22}{'retries':>9}")
for strategy, f, served, statuses in failover:
    total = int(f["requests"])
    ok = statuses.get(200, 0)
    success = 100.0 * ok / total if total else 0.0
    shares = "/".join(f"{100.0 * int(served.get(d + '/gpt-4o-mini', 0)) / max(ok, 1):.1f}" for d in ("ok", "flaky", "slow"))
    before = [int(x) for x in f["calls_before"].split(",")]
    after = [int(x) for x in f["calls_after"].split(",")]
    calls = "/".join(str(a - b) for a, b in zip(after, before))
    print(f"{strategy:<18}{float(f['rps']):>8.0f}{success:>8.3f}%{int(f['p50'])/1000:>8.2f}{int(f['p99'])/1000:>8.2f}{shares:>24}{calls:>22}{int(float(f['retries'])):>9}")
    others = {k: v for k, v in statuses.items() if k != 200}
    if others or int(f["errors"]):
        print(f"  not 200: {others} socket errors: {f['errors']}")

print()
print("Routing overhead: the same healthy simulator behind 1 deployment vs 50; wrk -c32.")
print(f"{'strategy':<18}{'rps 1':>9}{'rps 50':>9}{'50 vs 1':>9}{'p50 1':>8}{'p50 50':>8}{'p99 1':>8}{'p99 50':>8}")
for strategy in dict.fromkeys(s for s, _ in overhead):
    one, fifty = overhead.get((strategy, "one")), overhead.get((strategy, "fifty"))
    if not one or not fifty:
        continue
    ratio = float(fifty["rps"]) / float(one["rps"]) * 100
    print(f"{strategy:<18}{float(one['rps']):>9.0f}{float(fifty['rps']):>9.0f}{ratio:>8.1f}%"
          f"{int(one['p50'])/1000:>8.2f}{int(fifty['p50'])/1000:>8.2f}{int(one['p99'])/1000:>8.2f}{int(fifty['p99'])/1000:>8.2f}")
PY
mkdir -p "$root/bench/results"
cp "$results" "$root/bench/results/routing-latest.txt"
