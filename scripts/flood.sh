#!/usr/bin/env bash
# Flood benchmark: idle TCP connections far beyond the server's descriptor limit while bots
# play. Shows that connections are shed (not a busy loop), that the playing bots keep their
# delivery, and what the flood costs the server in CPU (a figure, not a pass/fail timing).
#
# usage: scripts/flood.sh [BACKENDS, default "io_uring epoll"]
# env:   BOTS=100 TRANSPORT=udp|tcp|ws DURATION_SECS=20 NOFILE=1024 (the server's limit)
#        FLOOD=4000 (idle connections the flooder holds) FLOOD_SKIP_BUILD=1
#
# Per backend, two runs of DURATION_SECS with BOTS bots (`tickwire-loadtest --metrics`):
# without a flood, then with FLOOD idle connections opened from the second second on and held
# to the end (auth timeout raised to 60 s so they stay). The server runs under
# `prlimit --nofile=NOFILE`, so most of the flood meets EMFILE at accept. One line per run:
# delivery, server CPU cores, accepted/shed/closed counters. Loopback only, bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

BACKENDS=${1:-"io_uring epoll"}
BOTS=${BOTS:-100}
TRANSPORT=${TRANSPORT:-udp}
DURATION=${DURATION_SECS:-20}
NOFILE=${NOFILE:-1024}
FLOOD=${FLOOD:-4000}
BIN=${CARGO_TARGET_DIR:-$root/target}/release
OUT=$root/target/flood
mkdir -p "$OUT"

if [ -z "${FLOOD_SKIP_BUILD:-}" ]; then
  cargo build --release -q -p tickwire -p tickwire-loadtest
fi
KEY=$OUT/flood.key
[ -s "$KEY" ] || head -c 32 /dev/urandom > "$KEY"

wait_for() { # FILE PATTERN SECS
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

metric() { # URL NAME-PREFIX -> sum
  curl -s "$1" | awk -v p="$2" 'index($0, p) == 1 { s += $NF } END { printf "%d", s }'
}

run_one() { # BACKEND FLOOD_COUNT
  local m=$1 n=$2 p=$OUT/$1-$2 spid fpid=
  TICKWIRE_SERVER_AUTH_TIMEOUT_MS=60000 prlimit --nofile="$NOFILE" -- "$BIN/tickwire" serve --io-model "$m" --io-fallback none \
    --bind 127.0.0.1:0 --metrics-bind 127.0.0.1:0 --key-file "$KEY" --log-format json \
    --max-players "$((BOTS + 64))" > /dev/null 2> "$p.server.err" < /dev/null &
  spid=$!
  if ! wait_for "$p.server.err" '"game_addr"' 15 || ! wait_for "$p.server.err" '"metrics_addr"' 15; then
    echo "$m flood=$n: server did not start: $(head -c 300 "$p.server.err")"
    kill "$spid" 2>/dev/null || true
    return 1
  fi
  local game metrics
  game=$(grep -o '"game_addr":"[^"]*"' "$p.server.err" | head -1 | cut -d'"' -f4)
  metrics="http://$(grep -o '"metrics_addr":"[^"]*"' "$p.server.err" | head -1 | cut -d'"' -f4)/metrics"
  # Server CPU from /proc (the metrics endpoint itself may be refused while descriptors are
  # exhausted, so the load tester's scrape cannot be relied on during a flood).
  local tck cpu0 t0
  tck=$(getconf CLK_TCK)
  cpu0=$(awk '{print $14 + $15}' "/proc/$spid/stat")
  t0=$(date +%s.%N)
  "$BIN/tickwire-loadtest" --server "$game" --key-file "$KEY" --clients "$BOTS" \
    --transport "$TRANSPORT" --duration "$DURATION" --metrics "$metrics" --json "$p.load.json" \
    --no-progress --min-delivery 0 > "$p.load.out" 2>&1 < /dev/null &
  local lpid=$!
  if [ "$n" -gt 0 ]; then
    # The flooder: opens N idle connections (non-blocking connects, never a byte sent) once
    # the bots are playing, holds them until the load test ends, then closes them.
    python3 - "$game" "$n" "$lpid" <<'PY' &
import os, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n, watch = int(sys.argv[2]), int(sys.argv[3])
time.sleep(3)
held = []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect((host, int(port)))
    except BlockingIOError:
        pass
    except OSError:
        s.close()
        continue
    held.append(s)
while True:
    try:
        os.kill(watch, 0)
    except OSError:
        break
    time.sleep(0.2)
for s in held:
    s.close()
PY
    fpid=$!
  fi
  local status=0
  wait "$lpid" || status=$?
  local cores
  cores=$(awk -v a="$cpu0" -v b="$(awk '{print $14 + $15}' "/proc/$spid/stat")" -v t0="$t0" \
    -v t1="$(date +%s.%N)" -v hz="$tck" 'BEGIN { printf "%.3f", (b - a) / hz / (t1 - t0) }')
  [ -n "$fpid" ] && wait "$fpid" 2>/dev/null || true
  local accepted shed closed
  accepted=$(metric "$metrics" stream_connections_accepted_total)
  shed=$(metric "$metrics" stream_accepts_shed_total)
  closed=$(metric "$metrics" stream_connections_closed_total)
  kill -TERM "$spid" 2>/dev/null || true
  wait "$spid" || true
  python3 - "$m" "$n" "$p.load.json" "$status" "$accepted" "$shed" "$closed" "$cores" <<'PY'
import json, sys
m, n, path, status, accepted, shed, closed, cores = sys.argv[1:9]
try:
    r = json.load(open(path))
except (OSError, ValueError):
    r = {}
print(f"{m} flood={n}: delivery {r.get('delivery_ratio')}, clients {r.get('clients_connected')}/"
      f"{r.get('clients_requested')}, lost {r.get('clients_lost')}, server cores "
      f"{cores} (whole run, from /proc), tick p99 {r.get('tick_ms_p99')} ms; streams accepted "
      f"{accepted}, shed {shed}, closed {closed}; loadtest exit {status}")
PY
}

echo "flood: $BOTS $TRANSPORT bots, ${DURATION}s, server nofile $NOFILE, flood $FLOOD idle connections ($BACKENDS)"
for m in $BACKENDS; do
  run_one "$m" 0
  run_one "$m" "$FLOOD"
done
