#!/usr/bin/env bash
# End-to-end replay measurement. A deterministic corpus of N realistic events (real CIDs) is
# served at full speed by `fake-jetstream --file`, the release binary replays it into a
# private redis-server (no persistence), and we print events/s, ingestor CPU seconds, peak
# RSS, Redis CPU and fake-server CPU for the run, then check that every event landed exactly
# once. It also measures, in the same run, redis-benchmark's pipelined XADD ceiling on a
# payload of the same size. Extra env for the ingestor can be passed through, e.g.
# JETSTREAM_INGESTOR__VERIFIER__ENABLED=false scripts/bench-replay.sh
#
#   scripts/bench-replay.sh [N=200000] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
RUNS=${2:-3}
source scripts/ensure-deps.sh
cargo build --release --locked --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/jetstream-ingestor

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

corpus=$work/corpus.jsonl
"$BIN" generate-corpus --count "$N" --out "$corpus" --seed 1 --start-us 1700000000000000 2>/dev/null
first=$(head -1 "$corpus" | jq -r .time_us)
last=$(tail -1 "$corpus" | jq -r .time_us)
events=$(grep -c '"kind"' "$corpus")

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" --logfile "$work/redis.log" &
pids+=($!)
fport=$(free_port)
RUST_LOG=warn "$BIN" fake-jetstream --listen "127.0.0.1:$fport" --file "$corpus" &
pids+=($!)
wait_port "$rport"; wait_port "$fport"

echo "corpus: $events events, time_us $first..$last"
redis_cpu() { redis-cli -p "$rport" INFO cpu | awk -F: '/used_cpu_(sys|user):/ {s+=$2} END {printf "%.2f", s}'; }
proc_cpu() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$1/stat"; }
fake_pid=${pids[1]}
for run in $(seq 1 "$RUNS"); do
  redis-cli -p "$rport" FLUSHALL >/dev/null
  rc0=$(redis_cpu); fc0=$(proc_cpu "$fake_pid")
  JETSTREAM_INGESTOR__JETSTREAM__ENDPOINTS="ws://127.0.0.1:$fport/subscribe" \
  JETSTREAM_INGESTOR__REDIS__URL="redis://127.0.0.1:$rport" \
  JETSTREAM_INGESTOR__REDIS__RETENTION__MAX_LEN=0 \
  JETSTREAM_INGESTOR__LOG__LEVEL=warn \
    /usr/bin/time -f '%e %U %S %M' -o "$work/time.$run" "$BIN" replay --from "$first" --until "$last" </dev/null
  read -r wall user sys rss_kb < "$work/time.$run"
  rc1=$(redis_cpu); fc1=$(proc_cpu "$fake_pid")
  echo "  redis cpu $(python3 -c "print(round($rc1-$rc0,2))")s, fake-jetstream cpu $(python3 -c "print(round($fc1-$fc0,2))")s"
  written=$(( $(redis-cli -p "$rport" XLEN jsi:records) + $(redis-cli -p "$rport" XLEN jsi:identity) ))
  python3 - "$events" "$wall" "$user" "$sys" "$rss_kb" "$written" "$run" <<'PY'
import sys
events, wall, user, sys_, rss, written, run = sys.argv[1:]
events, wall, cpu, rss, written = int(events), float(wall), float(user) + float(sys_), int(rss), int(written)
print(f"run {run}: {events/wall:,.0f} events/s  wall {wall:.2f}s  ingestor cpu {cpu:.2f}s "
      f"({events/cpu:,.0f} events/cpu-s)  peak RSS {rss/1024:.1f} MiB  landed {written}/{events}")
if written != events:
    sys.exit(f"MISMATCH: {written} entries for {events} events")
PY
done

# The ceiling: pipelined XADD of a record-sized payload straight into Redis.
avg=$(( $(wc -c < "$corpus") / events ))
redis-cli -p "$rport" DEL bench:xadd >/dev/null
echo "redis-benchmark: pipelined (P=64) XADD with a ${avg}-byte field, 200000 requests:"
payload=$(head -c "$avg" < /dev/zero | tr '\0' x)
redis-benchmark -p "$rport" -q -n 200000 -P 64 -c 4 XADD bench:xadd '*' record "$payload" 2>/dev/null | tail -1
