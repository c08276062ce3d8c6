#!/usr/bin/env bash
# Soak: the real server under bots for a long time, per backend, watching for leaks.
#
# usage: scripts/soak.sh [DURATION_SECS, default 1800] [BOTS, default 500] [BACKENDS, default "io_uring epoll"]
# env:   WARMUP_SECS=120 (growth is measured from the end of the warm-up), SAMPLE_SECS=10,
#        SOAK_SKIP_BUILD=1 (use target/release as built), SOAK_PARALLEL=1 (run the backends at
#        the same time, each server and load tester pair on its own ports).
#
# Per backend: `tickwire serve` (release, loopback, ephemeral ports) and `tickwire-loadtest` with
# BOTS bots for DURATION_SECS. Every SAMPLE_SECS the server's VmRSS and open descriptors are
# sampled from /proc into target/soak/<backend>.csv. Passes when, after the warm-up, RSS grew by
# less than 1 MB (last sample minus the first sample after the warm-up; the maximum is printed
# too), the descriptor count did not grow, delivery >= 0.99, and the server exited 0 on SIGTERM.
# One summary line per backend; exits non-zero if any failed. Loopback only, bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

DURATION=${1:-1800}
BOTS=${2:-500}
BACKENDS=${3:-"io_uring epoll"}
WARMUP=${WARMUP_SECS:-120}
SAMPLE=${SAMPLE_SECS:-10}
BIN=${CARGO_TARGET_DIR:-$root/target}/release
OUT=$root/target/soak
mkdir -p "$OUT"

if [ "$WARMUP" -ge "$DURATION" ]; then
  echo "soak: the warm-up ($WARMUP s) must be shorter than the run ($DURATION s)" >&2
  exit 2
fi
if [ -z "${SOAK_SKIP_BUILD:-}" ]; then
  cargo build --release -q -p tickwire -p tickwire-loadtest
fi
KEY=$OUT/soak.key
[ -s "$KEY" ] || head -c 32 /dev/urandom > "$KEY"

wait_for() { # FILE PATTERN SECS
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

soak_one() { # BACKEND -> prints one summary line, returns non-zero on failure
  local m=$1 p=$OUT/$1 spid lpid game metrics t0 now status=0
  rm -f "$p".*
  "$BIN/tickwire" serve --io-model "$m" --io-fallback none --bind 127.0.0.1:0 \
    --metrics-bind 127.0.0.1:0 --key-file "$KEY" --log-format json \
    --max-players "$((BOTS + 64))" > /dev/null 2> "$p.server.err" < /dev/null &
  spid=$!
  if ! wait_for "$p.server.err" '"game_addr"' 15 || ! wait_for "$p.server.err" '"metrics_addr"' 15; then
    echo "$m: FAIL server did not start: $(head -c 300 "$p.server.err")"
    kill "$spid" 2>/dev/null || true
    return 1
  fi
  game=$(grep -o '"game_addr":"[^"]*"' "$p.server.err" | head -1 | cut -d'"' -f4)
  metrics=$(grep -o '"metrics_addr":"[^"]*"' "$p.server.err" | head -1 | cut -d'"' -f4)
  "$BIN/tickwire-loadtest" --server "$game" --key-file "$KEY" --clients "$BOTS" \
    --duration "$DURATION" --metrics "http://$metrics/metrics" --json "$p.load.json" \
    --no-progress --min-delivery 0.99 > "$p.load.out" 2>&1 < /dev/null &
  lpid=$!
  echo "t_s,rss_kb,fds" > "$p.csv"
  t0=$(date +%s)
  while kill -0 "$lpid" 2>/dev/null; do
    now=$(( $(date +%s) - t0 ))
    local rss fds
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$spid/status" 2>/dev/null || echo 0)
    fds=$(ls "/proc/$spid/fd" 2>/dev/null | wc -l)
    echo "$now,$rss,$fds" >> "$p.csv"
    sleep "$SAMPLE"
  done
  wait "$lpid" || status=$?
  kill -TERM "$spid" 2>/dev/null || true
  local sstatus=0
  wait "$spid" || sstatus=$?
  python3 - "$m" "$p" "$WARMUP" "$status" "$sstatus" <<'PY'
import csv, json, sys
m, p, warmup, lstatus, sstatus = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rows = [r for r in csv.DictReader(open(p + ".csv")) if int(r["rss_kb"]) > 0]
after = [r for r in rows if int(r["t_s"]) >= warmup]
try:
    lt = json.load(open(p + ".load.json"))
except (OSError, ValueError):
    lt = {}
problems = []
if len(after) < 2:
    problems.append("too few samples after the warm-up")
    growth_kb = fd_growth = max_kb = None
else:
    base, last = int(after[0]["rss_kb"]), int(after[-1]["rss_kb"])
    growth_kb = last - base
    max_kb = max(int(r["rss_kb"]) for r in after) - base
    fd_growth = int(after[-1]["fds"]) - int(after[0]["fds"])
    if growth_kb >= 1024:
        problems.append(f"RSS grew {growth_kb} KB")
    if fd_growth > 0:
        problems.append(f"descriptors grew by {fd_growth}")
delivery = lt.get("delivery_ratio")
if delivery is None or delivery < 0.99:
    problems.append(f"delivery {delivery}")
if lstatus != 0:
    problems.append(f"loadtest exit {lstatus}")
if sstatus != 0:
    problems.append(f"server exit {sstatus}")
first = rows[0] if rows else {}
print(
    f"{m}: {'PASS' if not problems else 'FAIL ' + '; '.join(problems)}: "
    f"{len(rows)} samples, RSS {first.get('rss_kb')} KB at start, "
    f"{after[0]['rss_kb'] if after else '?'} KB after warm-up, growth {growth_kb} KB "
    f"(max {max_kb}), fds {after[0]['fds'] if after else '?'} -> {after[-1]['fds'] if after else '?'}, "
    f"delivery {delivery}, clients {lt.get('clients_connected')}/{lt.get('clients_requested')}, "
    f"lost {lt.get('clients_lost')}, server cores {lt.get('server_cpu_cores')}"
)
sys.exit(1 if problems else 0)
PY
}

echo "soak: $BOTS bots, ${DURATION}s per backend ($BACKENDS), warm-up ${WARMUP}s, samples every ${SAMPLE}s"
fail=0
if [ -n "${SOAK_PARALLEL:-}" ]; then
  pids=()
  for m in $BACKENDS; do
    soak_one "$m" > "$OUT/summary-$m.txt" &
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do wait "$pid" || fail=1; done
  for m in $BACKENDS; do cat "$OUT/summary-$m.txt"; done
else
  for m in $BACKENDS; do soak_one "$m" || fail=1; done
fi
exit $fail
