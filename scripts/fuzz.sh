#!/usr/bin/env bash
# Fuzzes decode + verify for a bounded time (default 60 s):
#   scripts/fuzz.sh [SECONDS]
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz asks for nightly-only rustc
# flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. The corpus is seeded at run
# time from the real events in tests/fixtures/jetstream and a generated corpus; nothing is
# committed.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-60}
command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 1; }
corpus=fuzz/corpus/decode_verify
mkdir -p "$corpus"
n=0
for f in tests/fixtures/jetstream/v1-golden-sample/golden_v1.jsonl tests/fixtures/jetstream/v1-production-corpus/expected_v1.jsonl; do
  [ -f "$f" ] || { echo "missing fixture $f (restore it with: git checkout -- tests/fixtures)" >&2; exit 1; }
  while IFS= read -r line; do n=$((n+1)); printf '%s' "$line" > "$corpus/seed_$n"; done < "$f"
done
cargo run --quiet --locked -- generate-corpus --count 200 --out "$corpus/../generated.jsonl" --seed 3 2>/dev/null
while IFS= read -r line; do n=$((n+1)); printf '%s' "$line" > "$corpus/seed_$n"; done < "$corpus/../generated.jsonl"
echo "seeded $n frames; fuzzing for ${SECONDS_TO_RUN}s"
cd fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run decode_verify corpus/decode_verify -- -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=2048
