#!/usr/bin/env bash
# Instructions, not seconds: an A/B measure that a noisy machine cannot blur. On a shared VM
# the wall-clock figures of scripts/bench.sh drift (the same binary has measured anywhere
# from 55k to 105k events/s within an hour), while valgrind's callgrind counts the same
# instructions for the same binary and input whatever else runs.
#
# Replays the first N events of the bench corpus at full speed (`replay --from --until`,
# like bench.sh's scenarios) twice: once with redis-server under callgrind (Redis's cost),
# once with the ingestor under callgrind (the ingestor's cost, all threads). Prints both
# totals with the events landed and the EXEC count (batches), which must match between two
# binaries for their figures to compare.
#
#   BIN=path/to/jetstream-ingestor scripts/bench-instructions.sh [full|noverify] [N=30000]
#
#   full      verification on, the example buckets active_posters + portuguese_writers
#   noverify  verification off, no buckets
# BENCH_DIR as in bench.sh (the corpus is cut from corpus-500000.jsonl when present, else
# generated). Takes ~1-2 minutes for N=30000. Needs valgrind, redis-server, redis-cli, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-full}
N=${2:-30000}
BENCH_DIR=${BENCH_DIR:-target/bench}
die() { echo "bench-instructions: FAILED: $*" >&2; exit 1; }
[[ $MODE == full || $MODE == noverify ]] || die "mode must be full or noverify (got '$MODE')"
[[ $N =~ ^[0-9]+$ ]] && ((N > 0)) || die "N must be a positive integer (got '$N')"
[ -x "${BIN:-}" ] || die "set BIN to a release build of jetstream-ingestor"
for tool in valgrind redis-server redis-cli python3; do
  command -v "$tool" >/dev/null || die "$tool not found"
done

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

corpus=$work/corpus.jsonl
if [ -f "$BENCH_DIR/corpus-500000.jsonl" ] && ((N <= 500000)); then
  head -n "$N" "$BENCH_DIR/corpus-500000.jsonl" >"$corpus"
else
  "$BIN" generate-corpus --count "$N" --out "$corpus" --seed 1 --start-us 1700000000000000 2>/dev/null
fi
time_at() { python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["time_us"])'; }
first=$(head -n 1 "$corpus" | time_at)
last=$(tail -n 1 "$corpus" | time_at)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_redis() {
  for _ in $(seq 1 300); do redis-cli -p "$1" PING >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "redis on port $1 never answered"
}
wait_port() {
  for _ in $(seq 1 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done
  die "port $1 never opened"
}
ir() { awk '/^totals:/ {print $2}' "$1"; }

fport=$(free_port)
RUST_LOG=warn "$BIN" fake-jetstream --listen "127.0.0.1:$fport" --file "$corpus" 2>"$work/fake.log" &
pids+=($!)
wait_port "$fport"

# One replay; $1 = what runs under callgrind (redis | ingestor). Writes "landed execs Ir" to
# $work/result. Not run in a subshell, so its processes stay in `pids` for the exit trap.
one() {
  local under=$1 rport rpid out=$work/callgrind.$1
  rport=$(free_port)
  if [ "$under" = redis ]; then
    valgrind --tool=callgrind --callgrind-out-file="$out" \
      redis-server --port "$rport" --save "" --appendonly no >/dev/null 2>&1 &
  else
    redis-server --port "$rport" --save "" --appendonly no >/dev/null 2>&1 &
  fi
  rpid=$!
  pids+=("$rpid")
  wait_redis "$rport"
  local verify=true buckets=config/buckets.example.toml
  [ "$MODE" = noverify ] && verify=false buckets=""
  local cmd=("$BIN" replay --from "$first" --until "$last")
  [ "$under" = ingestor ] && cmd=(valgrind --tool=callgrind --callgrind-out-file="$out" "${cmd[@]}")
  JETSTREAM_INGESTOR__JETSTREAM__ENDPOINTS="ws://127.0.0.1:$fport/subscribe" \
    JETSTREAM_INGESTOR__REDIS__URL="redis://127.0.0.1:$rport" \
    JETSTREAM_INGESTOR__REDIS__RETENTION__MAX_LEN=0 \
    JETSTREAM_INGESTOR__LOG__LEVEL=warn \
    JETSTREAM_INGESTOR__ADMIN__LISTEN="127.0.0.1:$(free_port)" \
    JETSTREAM_INGESTOR__VERIFIER__ENABLED=$verify \
    JETSTREAM_INGESTOR__BUCKETS__FILE=$buckets \
    "${cmd[@]}" >/dev/null 2>"$work/ingestor-$under.log" || die "replay failed (log: $(tail -n 3 "$work/ingestor-$under.log"))"
  local landed execs
  landed=$(($(redis-cli -p "$rport" XLEN jsi:records) + $(redis-cli -p "$rport" XLEN jsi:identity)))
  execs=$(redis-cli -p "$rport" INFO commandstats | sed -n 's/^cmdstat_exec:calls=\([0-9]*\),.*/\1/p')
  redis-cli -p "$rport" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$rpid" 2>/dev/null || true
  echo "$landed ${execs:-0} $(ir "$out")" >"$work/result"
}

echo "binary: $BIN"
echo "mode:   $MODE, $N events ($first..$last)"
one redis
read -r landed execs redis_ir <"$work/result"
printf 'redis-server: %s instructions (%.0f per event); landed %s, %s EXECs\n' \
  "$redis_ir" "$(python3 -c "print($redis_ir / $N)")" "$landed" "$execs"
((landed == N)) || die "landed $landed of $N events"
one ingestor
read -r landed execs ing_ir <"$work/result"
printf 'ingestor:     %s instructions (%.0f per event); landed %s, %s EXECs\n' \
  "$ing_ir" "$(python3 -c "print($ing_ir / $N)")" "$landed" "$execs"
((landed == N)) || die "landed $landed of $N events"
