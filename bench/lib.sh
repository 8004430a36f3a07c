# Shared by the bench/*/run.sh scripts: sourced after `cd` to the repository root.
# Installs missing Debian packages, builds the release binary, and provides a work dir whose
# processes are killed on exit, plus port helpers. Traffic stays on 127.0.0.1.

# bench_require COMMAND=PACKAGE ...: installs PACKAGE when COMMAND is missing.
bench_require() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null || [ -x "/usr/sbin/${pair%%=*}" ] || need+=("${pair#*=}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

target_dir=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --locked --bin atalaya
# BENCH_BIN=/path/to/atalaya measures another build (say, the one before a change) instead.
bin=${BENCH_BIN:-$target_dir/release/atalaya}

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# start_mock KEY: mock-provider on a free port taking KEY, killed on exit; sets mock_port.
start_mock() {
  mock_port=$(free_port)
  "$bin" mock-provider --listen 127.0.0.1:"$mock_port" --api-key "$1" 2>"$work/mock.log" &
  pids+=($!)
  wait_port "$mock_port"
}
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# create_keys PORT ADMIN_KEY COUNT [TEAMS] [JSON-FIELDS]: creates COUNT virtual keys named
# bench-1..COUNT, spread over TEAMS teams when TEAMS > 0, each with the extra JSON-FIELDS
# (e.g. ', "rpm_limit": 60'), and prints them comma-separated.
create_keys() {
  local port=$1 admin=$2 count=$3 teams=${4:-0} fields=${5:-} keys=() i team
  for i in $(seq "$count"); do
    team=""; [ "$teams" -gt 0 ] && team=", \"team\": \"team-$((i % teams))\""
    keys+=("$(curl -sf -X POST -H "Authorization: Bearer $admin" -H 'content-type: application/json' \
      -d "{\"name\": \"bench-$i\"$team$fields}" "http://127.0.0.1:$port/api/v1/keys" |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')")
  done
  (IFS=,; echo "${keys[*]}")
}
