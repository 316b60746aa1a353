#!/usr/bin/env bash
# One command for the performance figures docs/performance.md quotes, with their targets, so a change
# can be judged against the same numbers every time (supersedes scripts/bench-replay.sh).
#
# Everything runs on this machine against a private redis-server (free port, no persistence)
# and `fake-jetstream` serving a deterministic generated corpus (seed 1, real CIDs):
#
#   full       full-speed `replay --from first --until last`, verification ON and two example
#              buckets (config/buckets.example.toml: active_posters, portuguese_writers).
#              Per run: events/s, wall, ingestor CPU-s, events per CPU-s, peak RSS, Redis
#              CPU-s, fake-server CPU-s, first-commit latency (process start -> `jsi:cursor`
#              exists, polled every 1 ms over raw RESP), and an exactly-once check: XLEN of
#              records + identity must equal the corpus events and the stored cursor must
#              equal the last time_us (the script fails otherwise).
#   noverify   the same with verification off and no buckets (target >= 250,000 events per
#              ingestor CPU-second).
#   ceiling    in the same Redis: redis-benchmark pipelined (P=64, c=4) XADD with one field
#              of the corpus's average line size, and with 13 fields named like our record
#              entries whose values add up to that size; ratio of `full` to each.
#   paced2000  `run` (live mode; verification on, no buckets) against fake-jetstream
#              --rate 2000 (same corpus, from its start) for PACED_SECONDS, then p50/p99 of
#              jetstream_ingestor_receive_to_commit_seconds from /metrics (a summary, per
#              batch, timed from the batch's first frame: the worst event of each batch, so
#              conservative; includes the 5 ms batch_linger; target p99 <= 10 ms), events
#              landed, CPU.
#   paced350   the same at 350 events/s; ingestor CPU over the steady window (after
#              PACED_WARMUP s) as % of one core (target <= 1%).
#
# Results are medians of RUNS runs per scenario, printed at the end as a markdown table
# together with the machine (nproc, CPU model, load average at start and end; a 1-min load
# above 1.0 at start means the figures are not clean).
#
#   scripts/bench.sh [N=500000] [RUNS=3]
#
# Environment:
#   BIN             binary to measure; when unset, `cargo build --release --locked` is run
#                   and ${CARGO_TARGET_DIR:-target}/release/jetstream-ingestor is used
#   BENCH_DIR       where the corpus is cached (default target/bench; corpus-<N>.jsonl)
#   SCENARIOS       subset to run (default "full noverify ceiling paced2000 paced350"; they
#                   always run in that order)
#   PACED_SECONDS   length of each paced run (default 20); PACED_WARMUP (default 5) is
#                   skipped before the CPU window starts. The latency summary is the
#                   exporter's rolling window (3 x 20 s): up to 40 s it covers the whole run
#   CEILING_REQUESTS  redis-benchmark requests per ceiling measurement (default 200000)
#   KEEP_WORK=1     keep the temporary directory (logs, metrics scrapes) and print its path
#
# Expected runtime with the defaults on 2 cores: ~3 min (measured 3m03s: corpus generation
# ~5 s, first time only; full 3 x ~8 s; noverify 3 x ~7 s; ceilings ~10 s; paced 2 scenarios
# x 3 runs x ~21 s = ~130 s). Needs redis-server, redis-cli, redis-benchmark, python3, curl,
# setsid (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-500000}
RUNS=${2:-3}
SCENARIOS=${SCENARIOS:-full noverify ceiling paced2000 paced350}
PACED_SECONDS=${PACED_SECONDS:-20}
PACED_WARMUP=${PACED_WARMUP:-5}
CEILING_REQUESTS=${CEILING_REQUESTS:-200000}
BENCH_DIR=${BENCH_DIR:-target/bench}
BUCKET_IDS=(active_posters portuguese_writers)

die() { echo "bench: FAILED: $*" >&2; exit 1; }
[[ $N =~ ^[0-9]+$ ]] && ((N > 0)) || die "N must be a positive integer (got '$N')"
[[ $RUNS =~ ^[0-9]+$ ]] && ((RUNS > 0)) || die "RUNS must be a positive integer (got '$RUNS')"
[[ $PACED_SECONDS =~ ^[0-9]+$ && $PACED_WARMUP =~ ^[0-9]+$ ]] || die "PACED_SECONDS/PACED_WARMUP must be integers"
((PACED_SECONDS > PACED_WARMUP)) || die "PACED_SECONDS ($PACED_SECONDS) must exceed PACED_WARMUP ($PACED_WARMUP)"
for s in $SCENARIOS; do
  case $s in full | noverify | ceiling | paced2000 | paced350) ;; *) die "unknown scenario '$s'" ;; esac
done
want() { [[ " $SCENARIOS " == *" $1 "* ]]; }

if [ -z "${BIN:-}" ]; then
  # shellcheck source=scripts/ensure-deps.sh
  source scripts/ensure-deps.sh
  cargo build --release --locked --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/jetstream-ingestor
fi
[ -x "$BIN" ] || die "binary $BIN not found or not executable"
for tool in redis-server redis-cli redis-benchmark python3 curl setsid; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (scripts/ensure-deps.sh installs redis-server)"
done

work=$(mktemp -d)
# Long-lived helpers (redis, fake servers) run in their own sessions (`setsid`, which execs in
# place, so $! is their pid): a Ctrl-C reaches only this script and the ingestor, which is
# stopped first, while Redis is still there to take its in-flight commits.
pids=()
ing_pid=""   # the paced ingestor currently running, if any
pgid_file=$work/launch.pgid
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$ing_pid" ]; then kill -TERM "$ing_pid" 2>/dev/null || true; fi
  if [ -s "$pgid_file" ]; then kill -TERM -- "-$(cat "$pgid_file")" 2>/dev/null || true; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" ${ing_pid:+"$ing_pid"}; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "bench: work directory kept: $work" >&2; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done
  die "port $1 never opened"
}
# CPU seconds (user+sys, all threads) of a live process; fields after "pid (comm) ".
proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
HZ=$(getconf CLK_TCK)
calc() { python3 -c "print($1)"; }
results=$work/results.tsv
: >"$results"
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$results"; }
# Ends a helper started by this script and forgets it (so the trap never signals a reused pid).
stop_pid() {
  local p keep=()
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}
show_log() { echo "---- last lines of $1 ----" >&2; tail -n 20 "$1" >&2 || true; }

# ---------------------------------------------------------------------------------- machine
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "machine: $(nproc) cores, ${cpu_model:-unknown CPU}; load average at start: $load_start"
echo "binary:  $BIN"
if python3 -c "import sys; sys.exit(0 if float('${load_start%% *}') > 1.0 else 1)"; then
  echo "WARNING: 1-min load average ${load_start%% *} > 1.0 at start: the figures are not clean." >&2
fi

# ----------------------------------------------------------------------------------- corpus
mkdir -p "$BENCH_DIR"
corpus=$BENCH_DIR/corpus-$N.jsonl
if [ -s "$corpus" ]; then
  echo "corpus:  $corpus (cached)"
else
  echo "corpus:  generating $N events into $corpus ..."
  "$BIN" generate-corpus --count "$N" --out "$corpus.tmp" --seed 1 --start-us 1700000000000000 2>/dev/null
  mv "$corpus.tmp" "$corpus"
fi
time_us_of() { sed -n 's/.*"time_us":\([0-9]*\).*/\1/p' | head -1; }
first=$(head -1 "$corpus" | time_us_of)
last=$(tail -1 "$corpus" | time_us_of)
events=$(grep -c '"kind"' "$corpus")
avg=$(($(wc -c <"$corpus") / events))
[ -n "$first" ] && [ -n "$last" ] || die "cannot read time_us from $corpus"
echo "         $events events, time_us $first..$last, average line $avg bytes"

# -------------------------------------------------------------------- redis + fake server
rport=$(free_port)
setsid redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  --logfile "$work/redis.log" &
pids+=($!)
wait_port "$rport"
rcli() { redis-cli -p "$rport" "$@"; }
redis_cpu() { rcli INFO cpu | awk -F: '/used_cpu_(sys|user):/ {s+=$2} END {printf "%.3f", s}'; }
echo "redis:   $(redis-server --version | awk '{print $3}') on 127.0.0.1:$rport"

# The ingestor's environment, common to every scenario.
ingestor_env() {
  export JETSTREAM_INGESTOR__JETSTREAM__ENDPOINTS="ws://127.0.0.1:$1/subscribe"
  export JETSTREAM_INGESTOR__REDIS__URL="redis://127.0.0.1:$rport"
  export JETSTREAM_INGESTOR__REDIS__RETENTION__MAX_LEN=0
  export JETSTREAM_INGESTOR__LOG__LEVEL=warn
  export JETSTREAM_INGESTOR__ADMIN__LISTEN="127.0.0.1:$(free_port)"
}

# Starts the command in its own process group, polls `EXISTS <key>` over raw RESP every
# 1 ms from just before the launch until the key exists, writes the milliseconds from launch
# to the first sighting into OUT ("nan" if never seen), then waits for the command and exits
# with its code. The process group id goes to PGID_FILE so the trap can end it.
cat >"$work/launch.py" <<'PY'
import os, signal, socket, subprocess, sys, time
port, key, out, pgid_file, argv = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3], sys.argv[4], sys.argv[5:]
sock = socket.create_connection(("127.0.0.1", port))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
reader = sock.makefile("rb")
query = b"*2\r\n$6\r\nEXISTS\r\n$%d\r\n%s\r\n" % (len(key), key)
def exists():
    sock.sendall(query)
    reply = reader.readline()
    if not reply.startswith(b":"):
        sys.exit(f"unexpected reply to EXISTS: {reply!r}")
    return int(reply[1:]) > 0
if exists():
    sys.exit(f"{key.decode()} exists before the start: Redis was not flushed")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
first = None
t0 = time.monotonic()
child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
try:
    with open(pgid_file, "w") as f:
        f.write(str(child.pid))
    while first is None and child.poll() is None:
        if exists():
            first = time.monotonic() - t0
        else:
            time.sleep(0.001)
    sock.close()
    rc = child.wait()
finally:
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait()
    try:
        os.unlink(pgid_file)
    except FileNotFoundError:
        pass
with open(out, "w") as f:
    f.write("nan" if first is None else f"{first * 1000:.1f}")
sys.exit(rc)
PY

# The buckets file: the chosen [[buckets]] blocks copied from the example.
buckets_file=$work/buckets.toml
awk -v ids="${BUCKET_IDS[*]}" '
  BEGIN { n = split(ids, a, " "); for (i = 1; i <= n; i++) want["\"" a[i] "\""] = 1 }
  /^\[\[buckets\]\]/ { flush(); block = $0 "\n"; inblock = 1; next }
  inblock && !/^[[:space:]]*(#|$)/ { block = block $0 "\n"; if ($1 == "id" && ($3 in want)) keep = 1 }
  function flush() { if (keep) printf "%s", block; block = ""; keep = 0 }
  END { flush() }
' config/buckets.example.toml >"$buckets_file"
for id in "${BUCKET_IDS[@]}"; do
  grep -q "^id = \"$id\"" "$buckets_file" || die "bucket $id not found in config/buckets.example.toml"
done

# ------------------------------------------------------------------------- full speed runs
replay_scenario() { # name verify(true|false) buckets_file("" = none)
  local name=$1 verify=$2 bfile=$3 fport fake_pid run blist=none
  [ -z "$bfile" ] || blist="${BUCKET_IDS[*]}"
  local vlabel=off
  [ "$verify" = true ] && vlabel=on
  fport=$(free_port)
  RUST_LOG=warn setsid "$BIN" fake-jetstream --listen "127.0.0.1:$fport" --file "$corpus" 2>"$work/fake-$name.log" &
  fake_pid=$!
  pids+=("$fake_pid")
  wait_port "$fport"
  echo
  echo "== $name: replay of $events events at full speed, verification $vlabel, buckets: $blist"
  for run in $(seq 1 "$RUNS"); do
    rcli FLUSHALL >/dev/null
    local rc0 fc0 rc1 fc1 log=$work/ingestor-$name-$run.log rc=0
    rc0=$(redis_cpu)
    fc0=$(proc_ticks "$fake_pid")
    (
      ingestor_env "$fport"
      export JETSTREAM_INGESTOR__VERIFIER__ENABLED=$verify
      export JETSTREAM_INGESTOR__BUCKETS__FILE=$bfile
      exec python3 "$work/launch.py" "$rport" jsi:cursor "$work/first.$name.$run" "$pgid_file" \
        /usr/bin/time -f '%e %U %S %M' -o "$work/time.$name.$run" \
        "$BIN" replay --from "$first" --until "$last"
    ) 2>"$log" || rc=$?
    ((rc == 0)) || { show_log "$log"; die "$name run $run: replay exited with $rc"; }
    rc1=$(redis_cpu)
    fc1=$(proc_ticks "$fake_pid")
    local wall user sys rss_kb written cursor buckets dead first_ms
    read -r wall user sys rss_kb <"$work/time.$name.$run"
    written=$(($(rcli XLEN jsi:records) + $(rcli XLEN jsi:identity)))
    cursor=$(rcli GET jsi:cursor)
    buckets=$(rcli XLEN jsi:buckets)
    dead=$(rcli XLEN jsi:dead)
    first_ms=$(cat "$work/first.$name.$run")
    python3 - "$name" "$run" "$events" "$wall" "$user" "$sys" "$rss_kb" "$rc0" "$rc1" \
      "$fc0" "$fc1" "$HZ" "$written" "$first_ms" "$buckets" "$dead" "$results" <<'PY'
import sys
(name, run, events, wall, user, sys_, rss, rc0, rc1, fc0, fc1, hz, written, first_ms, buckets,
 dead, results) = sys.argv[1:]
events, wall, cpu = int(events), float(wall), float(user) + float(sys_)
rcpu, fcpu = float(rc1) - float(rc0), (float(fc1) - float(fc0)) / float(hz)
row = {"eps": events / wall, "wall": wall, "cpu": cpu, "eps_cpu": events / cpu,
       "rss": int(rss) / 1024, "redis_cpu": rcpu, "fake_cpu": fcpu, "first_ms": float(first_ms)}
print(f"run {run}: {row['eps']:,.0f} events/s  wall {wall:.2f}s  ingestor cpu {cpu:.2f}s "
      f"({row['eps_cpu']:,.0f} events/cpu-s)  peak RSS {row['rss']:.1f} MiB  redis cpu {rcpu:.2f}s  "
      f"fake-jetstream cpu {fcpu:.2f}s  first commit {first_ms} ms  "
      f"landed {written}/{events}  bucket jobs {buckets}  dead {dead}")
with open(results, "a") as f:
    for k, v in row.items():
        f.write(f"{name}\t{k}\t{v}\n")
PY
    ((written == events)) || die "$name run $run: $written entries in records+identity for $events events (not exactly once)"
    [ "$cursor" = "$last" ] || die "$name run $run: stored cursor '$cursor' != last time_us $last"
  done
  stop_pid "$fake_pid"
}

want full && replay_scenario full true "$buckets_file"
want noverify && replay_scenario noverify false ""

# -------------------------------------------------------------------------------- ceilings
bench_rps() { # redis-benchmark args...; prints requests per second
  redis-benchmark -p "$rport" -n "$CEILING_REQUESTS" -P 64 -c 4 --csv "$@" 2>/dev/null |
    python3 -c '
import csv, sys
rows = list(csv.reader(sys.stdin))
head = next((i for i, r in enumerate(rows) if "rps" in r), None)
if head is None or head + 1 >= len(rows):
    sys.exit("cannot parse redis-benchmark --csv output")
print(rows[head + 1][rows[head].index("rps")])'
}
if want ceiling; then
  # Our record entries: 13 fields. Plausible value sizes from a real entry; `record` (the
  # record JSON) takes the rest of the corpus's average line size.
  names=(v idem did collection rkey operation rev cid time_us source cid_check checks)
  sizes=(1 76 32 18 13 6 13 59 16 15 5 0)
  fixed=0
  for s in "${sizes[@]}"; do fixed=$((fixed + s)); done
  rest=$((avg > fixed ? avg - fixed : 1))
  fields13=()
  for i in "${!names[@]}"; do fields13+=("${names[$i]}" "$(head -c "${sizes[$i]}" </dev/zero | tr '\0' x)"); done
  fields13+=(record "$(head -c "$rest" </dev/zero | tr '\0' x)")
  payload=$(head -c "$avg" </dev/zero | tr '\0' x)
  echo
  echo "== ceiling: redis-benchmark pipelined XADD (P=64, c=4, $CEILING_REQUESTS requests) in the same Redis"
  for run in $(seq 1 "$RUNS"); do
    rcli FLUSHALL >/dev/null
    one=$(bench_rps XADD bench:xadd '*' record "$payload")
    rcli DEL bench:xadd >/dev/null
    thirteen=$(bench_rps XADD bench:xadd '*' "${fields13[@]}")
    rcli DEL bench:xadd >/dev/null
    echo "run $run: 1 field of $avg B: $one/s   13 fields, $avg B in total (record $rest B): $thirteen/s"
    record ceiling xadd1 "$one"
    record ceiling xadd13 "$thirteen"
  done
fi

# ---------------------------------------------------------------------------------- paced
metric_quantile() { # metrics-file name q: seconds, from a summary or a histogram
  python3 - "$@" <<'PY'
import math, re, sys
path, name, q = sys.argv[1], sys.argv[2], float(sys.argv[3])
text = open(path).read()
for m in re.finditer(r'^%s\{quantile="([^"]+)"\} (\S+)$' % re.escape(name), text, re.M):
    if math.isclose(float(m.group(1)), q):
        print(m.group(2)); sys.exit()
buckets = sorted((float(le), float(v)) for le, v in
                 re.findall(r'^%s_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)$' % re.escape(name), text, re.M))
if not buckets or buckets[-1][1] == 0:
    sys.exit(f"{name}: no quantile {q} and no histogram buckets in {path}")
rank, lo, below = q * buckets[-1][1], 0.0, 0.0
for le, count in buckets:   # linear interpolation inside the bucket holding the rank
    if count >= rank:
        print(le if math.isinf(le) else lo + (le - lo) * (rank - below) / max(count - below, 1e-12))
        sys.exit()
    lo, below = le, count
PY
}

paced_scenario() { # name rate
  local name=$1 rate=$2 fport fake_pid run
  fport=$(free_port)
  RUST_LOG=warn setsid "$BIN" fake-jetstream --listen "127.0.0.1:$fport" --file "$corpus" --rate "$rate" \
    2>"$work/fake-$name.log" &
  fake_pid=$!
  pids+=("$fake_pid")
  wait_port "$fport"
  echo
  echo "== $name: \`run\` against fake-jetstream --rate $rate for ${PACED_SECONDS}s (CPU window after ${PACED_WARMUP}s)"
  for run in $(seq 1 "$RUNS"); do
    rcli FLUSHALL >/dev/null
    local log=$work/ingestor-$name-$run.log metrics=$work/metrics-$name-$run.txt
    local admin t_start t0 c0 t1 c1 rc=0
    admin=$(free_port)
    t_start=$EPOCHREALTIME
    (
      ingestor_env "$fport"
      export JETSTREAM_INGESTOR__ADMIN__LISTEN="127.0.0.1:$admin"
      export JETSTREAM_INGESTOR__VERIFIER__ENABLED=true
      export JETSTREAM_INGESTOR__BUCKETS__FILE=""
      exec "$BIN" run
    ) 2>"$log" &
    ing_pid=$!
    sleep "$PACED_WARMUP"
    kill -0 "$ing_pid" 2>/dev/null || { show_log "$log"; die "$name run $run: ingestor died"; }
    c0=$(proc_ticks "$ing_pid")
    t0=$EPOCHREALTIME
    sleep $((PACED_SECONDS - PACED_WARMUP))
    c1=$(proc_ticks "$ing_pid")
    t1=$EPOCHREALTIME
    curl -fsS "http://127.0.0.1:$admin/metrics" >"$metrics" || { show_log "$log"; die "$name run $run: /metrics scrape failed"; }
    kill -TERM "$ing_pid"
    wait "$ing_pid" || rc=$?
    ing_pid=""
    ((rc == 0)) || { show_log "$log"; die "$name run $run: ingestor exited with $rc after SIGTERM"; }
    local landed expected p50 p99 cpu_pct ratio
    landed=$(($(rcli XLEN jsi:records) + $(rcli XLEN jsi:identity)))
    expected=$(calc "round($rate * ($t1 - $t_start))")
    ((landed > 0)) || die "$name run $run: nothing landed in Redis"
    p50=$(calc "$(metric_quantile "$metrics" jetstream_ingestor_receive_to_commit_seconds 0.5) * 1000")
    p99=$(calc "$(metric_quantile "$metrics" jetstream_ingestor_receive_to_commit_seconds 0.99) * 1000")
    cpu_pct=$(calc "($c1 - $c0) / $HZ / ($t1 - $t0) * 100")
    ratio=$(calc "round($landed / $expected, 3)")
    printf 'run %s: receive->commit p50 %.2f ms  p99 %.2f ms  ingestor cpu %.2f%% of a core  landed %s (~%s expected, ratio %s)\n' \
      "$run" "$p50" "$p99" "$cpu_pct" "$landed" "$expected" "$ratio"
    if python3 -c "import sys; sys.exit(0 if 0.9 <= $ratio <= 1.1 else 1)"; then :; else
      echo "WARNING: $name run $run landed $landed events, expected about $expected" >&2
    fi
    record "$name" p50_ms "$p50"
    record "$name" p99_ms "$p99"
    record "$name" cpu_pct "$cpu_pct"
    record "$name" landed_ratio "$ratio"
  done
  stop_pid "$fake_pid"
}

want paced2000 && paced_scenario paced2000 2000
want paced350 && paced_scenario paced350 350

# -------------------------------------------------------------------------------- summary
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "## Summary: medians of $RUNS run(s), corpus of $events events ($avg B average line)"
echo
echo "machine: $(nproc) cores, ${cpu_model:-unknown CPU}; load average at start $load_start, at end $load_end"
python3 - "$results" <<'PY'
import statistics, sys
from collections import defaultdict
vals = defaultdict(list)
for line in open(sys.argv[1]):
    scen, key, v = line.rstrip("\n").split("\t")
    vals[(scen, key)].append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
# label, key, format, target text, predicate
rows = [
    ("full: events/s (verify on, 2 buckets)", ("full", "eps"), "{:,.0f}", "", None),
    ("full: wall s", ("full", "wall"), "{:.2f}", "", None),
    ("full: ingestor CPU s", ("full", "cpu"), "{:.2f}", "", None),
    ("full: events per ingestor CPU-s", ("full", "eps_cpu"), "{:,.0f}", "", None),
    ("full: peak RSS MiB", ("full", "rss"), "{:.1f}", "", None),
    ("full: Redis CPU s", ("full", "redis_cpu"), "{:.2f}", "", None),
    ("full: fake-jetstream CPU s", ("full", "fake_cpu"), "{:.2f}", "", None),
    ("full: first commit ms (start -> jsi:cursor)", ("full", "first_ms"), "{:.1f}", "<= 500", lambda v: v <= 500),
    ("noverify: events/s", ("noverify", "eps"), "{:,.0f}", "", None),
    ("noverify: events per ingestor CPU-s", ("noverify", "eps_cpu"), "{:,.0f}", ">= 250,000", lambda v: v >= 250_000),
    ("noverify: peak RSS MiB", ("noverify", "rss"), "{:.1f}", "", None),
    ("noverify: Redis CPU s", ("noverify", "redis_cpu"), "{:.2f}", "", None),
    ("noverify: first commit ms", ("noverify", "first_ms"), "{:.1f}", "", None),
    ("ceiling: XADD/s, 1 field (P=64)", ("ceiling", "xadd1"), "{:,.0f}", "", None),
    ("ceiling: XADD/s, 13 fields (P=64)", ("ceiling", "xadd13"), "{:,.0f}", "", None),
    ("full events/s / 1-field ceiling", ("ratio", "xadd1"), "{:.2f}", "", None),
    ("full events/s / 13-field ceiling", ("ratio", "xadd13"), "{:.2f}", "", None),
    ("paced 2,000/s: receive->commit p50 ms", ("paced2000", "p50_ms"), "{:.2f}", "", None),
    ("paced 2,000/s: receive->commit p99 ms", ("paced2000", "p99_ms"), "{:.2f}", "<= 10", lambda v: v <= 10),
    ("paced 2,000/s: ingestor CPU % of a core", ("paced2000", "cpu_pct"), "{:.2f}", "", None),
    ("paced 2,000/s: landed / expected", ("paced2000", "landed_ratio"), "{:.3f}", "~1", None),
    ("paced 350/s: ingestor CPU % of a core", ("paced350", "cpu_pct"), "{:.2f}", "<= 1", lambda v: v <= 1),
    ("paced 350/s: receive->commit p99 ms", ("paced350", "p99_ms"), "{:.2f}", "", None),
    ("paced 350/s: landed / expected", ("paced350", "landed_ratio"), "{:.3f}", "~1", None),
]
for c in ("xadd1", "xadd13"):
    if ("full", "eps") in med and ("ceiling", c) in med:
        med[("ratio", c)] = med[("full", "eps")] / med[("ceiling", c)]
print()
print("| what | median | target | met? |")
print("|---|---:|---|---|")
for label, key, fmt, target, ok in rows:
    if key not in med:
        continue
    v = med[key]
    met = "" if ok is None else ("yes" if ok(v) else "**no**")
    print(f"| {label} | {fmt.format(v)} | {target or '—'} | {met or '—'} |")
if ("full", "eps") in med or ("noverify", "eps") in med:
    print("| every event landed exactly once, cursor = last time_us | all runs | all runs | yes |")
PY
if python3 -c "import sys; sys.exit(0 if float('${load_start%% *}') > 1.0 else 1)"; then
  echo
  echo "WARNING: 1-min load average was ${load_start%% *} (> 1.0) at start: the figures are not clean."
fi
