#!/usr/bin/env bash
# The broadcast-N benchmark (/work/shared/BENCHMARKS.md, docs/benchmarks.md), every server side
# by side in one run:
#   floor            crates/io/examples/floor_server.rs (recvmmsg(64) + sendmmsg(1024), libc)
#   <model>          bench/ broadcast-server on each tickwire_io::available_models()
#   tickwire-<model> the real server (full protocol) with tickwire-loadtest, for TICKWIRE_MODELS
#
# usage: scripts/bench.sh [N list, default "250 500 1000 1500"] [window secs, default 20]
# env:   VARIANTS="floor io_uring epoll select blocking tickwire-io_uring tickwire-epoll" (subset),
#        TICKWIRE_MODELS="io_uring epoll", WARMUP=3, REPEAT=1 (runs per cell),
#        BENCH_SKIP_BUILD=1 (use the binaries already built), CARGO_TARGET_DIR (default target),
#        BENCH_DEADLINE="13:35" (any `date -d` time: start no cell that would end after it),
#        BASELINE_DIR=dir holding an older release's `tickwire` and `tickwire-loadtest`: adds
#        the variants baseline-<model> (that pair, same cells, same run) for before/after.
#
# Per cell: server pinned to CPU 0, load generator to CPU 1, WARMUP s of load, then the window.
# Over the window the script reads utime+stime of the server from /proc/PID/stat (server cores),
# counts its syscalls with `perf stat -e raw_syscalls:sys_enter -p PID` (strace -c -f as a
# fallback, which perturbs), and reads VmRSS/VmHWM at the end. Each cell is one JSON line in
# target/bench/results.jsonl (raw outputs under target/bench/logs/); a table is printed at the end
# (scripts/bench_plot.py). Loopback only, ephemeral ports, every process bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

NS=${1:-"250 500 1000 1500"}
WINDOW=${2:-20}
WARMUP=${WARMUP:-3}
REPEAT=${REPEAT:-1}
TICKWIRE_MODELS=${TICKWIRE_MODELS:-"io_uring epoll"}
TD=${CARGO_TARGET_DIR:-$root/target}
BIN=$TD/release
OUT=$root/target/bench
LOGS=$OUT/logs
RESULTS=$OUT/results.jsonl
mkdir -p "$LOGS"

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  echo "== building (release)" >&2
  cargo build --release -q -p tickwire-bench --bins
  cargo build --release -q -p tickwire-io --example floor_server
  cargo build --release -q -p tickwire -p tickwire-loadtest
fi
for b in "$BIN/broadcast-server" "$BIN/broadcast-load" "$BIN/examples/floor_server" \
         "$BIN/tickwire" "$BIN/tickwire-loadtest"; do
  [ -x "$b" ] || { echo "missing $b (build it or unset BENCH_SKIP_BUILD)" >&2; exit 2; }
done

if [ -z "${VARIANTS:-}" ]; then
  VARIANTS="floor $("$BIN/broadcast-server" --list-models | tr '\n' ' ' | sed 's/ *$//')"
  for m in $TICKWIRE_MODELS; do VARIANTS="$VARIANTS tickwire-$m"; done
  if [ -n "${BASELINE_DIR:-}" ]; then
    for m in $TICKWIRE_MODELS; do VARIANTS="$VARIANTS baseline-$m"; done
  fi
fi
if [ -n "${BASELINE_DIR:-}" ]; then
  for b in "$BASELINE_DIR/tickwire" "$BASELINE_DIR/tickwire-loadtest"; do
    [ -x "$b" ] || { echo "BASELINE_DIR: missing $b" >&2; exit 2; }
  done
fi

# Syscall counter: perf if the tracepoint works here, else strace.
if perf stat -e raw_syscalls:sys_enter -x, true >/dev/null 2>&1; then
  COUNTER=perf
elif command -v strace >/dev/null; then
  COUNTER=strace
else
  COUNTER=none
fi
CLK_TCK=$(getconf CLK_TCK)
max_n=0
for n in $NS; do [ "$n" -gt "$max_n" ] && max_n=$n; done
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -le $((max_n + 64)) ]; then
  ulimit -n $((max_n + 256)) || { echo "ulimit -n must exceed N" >&2; exit 2; }
fi
KEY=$OUT/bench.key
[ -s "$KEY" ] || head -c 32 /dev/urandom > "$KEY"

deadline_s=
if [ -n "${BENCH_DEADLINE:-}" ]; then deadline_s=$(date -d "$BENCH_DEADLINE" +%s); fi
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
{
  echo "run: $RUN_ID"
  echo "args: N=[$NS] window=${WINDOW}s warmup=${WARMUP}s repeat=$REPEAT counter=$COUNTER"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "kernel: $(uname -r)"
  echo "rustc: $(rustc --version)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "rustflags: ${RUSTFLAGS:-} $(grep -h rustflags .cargo/config.toml 2>/dev/null || true)"
  echo "rmem_max: $(cat /proc/sys/net/core/rmem_max) wmem_max: $(cat /proc/sys/net/core/wmem_max)"
} > "$OUT/machine-$RUN_ID.txt"
echo "== run $RUN_ID: N=[$NS] window=${WINDOW}s warmup=${WARMUP}s repeat=$REPEAT counter=$COUNTER" >&2
echo "== variants: $VARIANTS" >&2
cells=$(( $(echo $NS | wc -w) * $(echo $VARIANTS | wc -w) * REPEAT ))
echo "== $cells cells, about $(( cells * (WARMUP + WINDOW + 2) / 60 + 1 )) min" >&2
# Stop this script's own background jobs (by pid) if it is interrupted.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

# utime+stime of a process, in clock ticks.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
now_s() { date +%s.%N; }
# Time on CPU of every thread of a process, in ns (scheduler accounting, not tick-sampled).
exec_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}'; }

# measure PID LOGPREFIX: the window's CPU, syscalls and memory -> LOGPREFIX.measure
measure() {
  local pid=$1 p=$2 c0 c1 t0 t1 sys=null
  local e0 e1
  t0=$(now_s); c0=$(cpu_ticks "$pid"); e0=$(exec_ns "$pid")
  case $COUNTER in
    perf)
      perf stat -e raw_syscalls:sys_enter -x, -o "$p.perf" -p "$pid" -- sleep "$WINDOW" \
        >/dev/null 2>&1 || true
      sys=$(awk -F, '/raw_syscalls:sys_enter/ {print $1; exit}' "$p.perf" 2>/dev/null)
      ;;
    strace)
      timeout -s INT "$WINDOW" strace -c -f -q -p "$pid" -o "$p.strace" >/dev/null 2>&1 || true
      sys=$(awk '/^100.00|total$/ {print $(NF-2); exit}' "$p.strace" 2>/dev/null)
      ;;
    none) sleep "$WINDOW" ;;
  esac
  t1=$(now_s); c1=$(cpu_ticks "$pid"); e1=$(exec_ns "$pid")
  local rss hwm
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
  hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
  case $sys in ''|*[!0-9]*) sys=null ;; esac
  printf '{"exec_ns":%s,"cpu_ticks":%s,"clk_tck":%s,"wall_s":%s,"syscalls":%s,"counter":"%s","rss_kb":%s,"hwm_kb":%s}\n' \
    "$((e1 - e0))" "$((c1 - c0))" "$CLK_TCK" "$(echo "$t1 - $t0" | bc -l)" "$sys" "$COUNTER" "$rss" "$hwm" \
    > "$p.measure"
}

# wait_for FILE PATTERN SECS: until FILE holds PATTERN.
wait_for() {
  local i
  for ((i = 0; i < $3 * 20; i++)); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

scrape() { curl -s --max-time 2 "http://$1/metrics" > "$2" || true; }

# bench_cell VARIANT N LOGPREFIX: floor or a broadcast-server model with broadcast-load.
bench_cell() {
  local v=$1 n=$2 p=$3 srv spid lpid addr
  if [ "$v" = floor ]; then srv=("$BIN/examples/floor_server");
  else srv=("$BIN/broadcast-server" --model "$v"); fi
  taskset -c 0 "${srv[@]}" --clients-expected "$n" --tick-ms 16 --bind 127.0.0.1:0 \
    --warmup-secs "$WARMUP" --duration-secs "$(echo "$WARMUP + $WINDOW + 1.5" | bc -l)" \
    > "$p.server.json" 2> "$p.server.err" < /dev/null &
  spid=$!
  if ! wait_for "$p.server.err" '^listening ' 10; then
    echo "  $v N=$n: server did not start: $(head -c 300 "$p.server.err")" >&2
    kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; return 1
  fi
  addr=$(awk '/^listening / {print $2; exit}' "$p.server.err")
  taskset -c 1 "$BIN/broadcast-load" --server "$addr" --clients "$n" --duration-secs "$WINDOW" \
    --warmup-secs "$WARMUP" > "$p.load.json" 2> "$p.load.err" < /dev/null &
  lpid=$!
  sleep "$WARMUP"
  measure "$spid" "$p"
  wait "$lpid" || echo "  load generator failed: $(head -c 300 "$p.load.err")" >&2
  wait "$spid" || echo "  server failed: $(head -c 300 "$p.server.err")" >&2
}

# tickwire_cell MODEL N LOGPREFIX [SERVER_BIN LOAD_BIN]: the real server with tickwire-loadtest.
tickwire_cell() {
  local m=$1 n=$2 p=$3 spid lpid game metrics
  local server_bin=${4:-$BIN/tickwire} load_bin=${5:-$BIN/tickwire-loadtest}
  taskset -c 0 "$server_bin" serve --io-model "$m" --bind 127.0.0.1:0 \
    --metrics-bind 127.0.0.1:0 --key-file "$KEY" --log-format json \
    > /dev/null 2> "$p.server.err" < /dev/null &
  spid=$!
  if ! wait_for "$p.server.err" '"metrics_addr"' 10 || ! wait_for "$p.server.err" '"game_addr"' 10; then
    echo "  tickwire-$m N=$n: server did not start: $(head -c 300 "$p.server.err")" >&2
    kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; return 1
  fi
  game=$(grep -o '"game_addr":"[^"]*"' "$p.server.err" | head -1 | cut -d'"' -f4)
  metrics=$(grep -o '"metrics_addr":"[^"]*"' "$p.server.err" | head -1 | cut -d'"' -f4)
  # The load tester's window starts after its connect phase (well under WARMUP s) and lasts
  # WARMUP + WINDOW s, so it covers the script's window [WARMUP, WARMUP + WINDOW].
  taskset -c 1 "$load_bin" --server "$game" --key-file "$KEY" --clients "$n" \
    --duration "$((WARMUP + WINDOW))" --metrics "http://$metrics/metrics" --json "$p.load.json" \
    --no-progress --io-model epoll --min-delivery 0 > "$p.load.out" 2> "$p.load.err" < /dev/null &
  lpid=$!
  sleep "$WARMUP"
  scrape "$metrics" "$p.metrics0"
  measure "$spid" "$p"
  scrape "$metrics" "$p.metrics1"
  wait "$lpid" || echo "  loadtest exit $?: $(tail -c 300 "$p.load.out")" >&2
  kill -TERM "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
}

# row VARIANT N REP LOGPREFIX: one JSON line of results.
row() {
  python3 - "$@" "$WINDOW" "$RUN_ID" <<'PY'
import json, re, sys
v, n, rep, p, window, run_id = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5]), sys.argv[6]
def load(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    for candidate in (text, text.splitlines()[-1] if text else ""):
        try:
            return json.loads(candidate)
        except ValueError:
            pass
    return None
def metric(path, pattern):
    try:
        text = open(path).read()
    except OSError:
        return None
    total = None
    for m in re.finditer(r"^" + pattern + r"\s+([0-9.eE+-]+)$", text, re.M):
        total = (total or 0.0) + float(m.group(1))
    return total
meas = load(p + ".measure") or {}
srv = load(p + ".server.json") or {}
lt = load(p + ".load.json") or {}
r = {"run": run_id, "variant": v, "n": n, "rep": rep, "window_s": window}
wall = meas.get("wall_s") or window
cores = meas["cpu_ticks"] / meas["clk_tck"] / wall if "cpu_ticks" in meas else None
r["server_cores"] = cores
r["us_per_client_tick"] = cores * 16000.0 / n if cores is not None else None
# The same from the scheduler's ns-precise runtime (utime/stime are sampled at the timer tick).
r["server_cores_schedstat"] = meas["exec_ns"] / 1e9 / wall if meas.get("exec_ns") else None
ticks = wall / 0.016
sysc = meas.get("syscalls")
r["syscalls"] = sysc
r["syscalls_per_datagram"] = sysc / (2 * n * ticks) if sysc is not None else None
r["syscall_counter"] = meas.get("counter")
r["rss_kb"] = meas.get("rss_kb")
r["hwm_kb"] = meas.get("hwm_kb")
if v.startswith("tickwire-") or v.startswith("baseline-"):
    r["delivery"] = lt.get("delivery_ratio")
    r["load_cores"] = lt.get("loadtest_cpu_cores")
    r["load_slips"] = (lt.get("diagnostics") or {}).get("schedule_slips")
    r["tick_ms_p99"] = lt.get("tick_ms_p99")
    r["lateness_ms_p99"] = lt.get("tick_lateness_ms_p99")
    r["loadtest_server_cores"] = lt.get("server_cpu_cores")
    r["clients_connected"] = lt.get("clients_connected")
    r["rtt_ms_p99"] = (lt.get("rtt_ms") or {}).get("p99")
    r["snapshot_bytes_mean"] = lt.get("snapshot_bytes_mean")
    m0, m1 = p + ".metrics0", p + ".metrics1"
    le1 = r'tick_lateness_ms_bucket\{[^}]*le="1(?:\.0)?"[^}]*\}'
    cnt = r"tick_lateness_ms_count(?:\{[^}]*\})?"
    vals = [metric(m, x) for m in (m0, m1) for x in (le1, cnt, r"ticks_total(?:\{[^}]*\})?",
                                                       r"tick_overruns_total(?:\{[^}]*\})?")]
    if None not in vals[:3] and None not in vals[4:7]:
        ticks_w = vals[5] - vals[1]
        r["ticks"] = ticks_w
        r["late_ticks"] = ticks_w - (vals[4] - vals[0])
        r["overruns"] = (vals[7] - vals[3]) if vals[3] is not None and vals[7] is not None else None
    else:
        r["ticks"] = r["late_ticks"] = r["overruns"] = None
else:
    r["delivery"] = lt.get("delivery_ratio")
    r["load_cores"] = lt.get("load_cpu_cores")
    r["load_slips"] = lt.get("schedule_slips")
    r["tick_ms_p99"] = srv.get("tick_ms_p99")
    r["lateness_ms_p99"] = srv.get("lateness_ms_p99")
    r["ticks"] = srv.get("ticks")
    r["late_ticks"] = srv.get("late_ticks")
    r["overruns"] = srv.get("overruns")
    r["send_failed"] = (srv.get("send_refused") or 0) + (srv.get("flush_failed") or 0) + (srv.get("io_send_errors") or 0)
why = []
if r["delivery"] is None or r["delivery"] < 0.99: why.append("delivery")
if cores is None or cores >= 0.85: why.append("server_cpu")
if r["load_cores"] is None or r["load_cores"] >= 0.85: why.append("load_cpu")
if r["load_slips"]: why.append("load_slips")
if r["ticks"] and r["late_ticks"] is not None:
    # A deadline skipped by an overrun is a tick that never started: count it as late.
    skipped = r.get("overruns") or 0
    r["late_pct"] = 100.0 * (r["late_ticks"] + skipped) / (r["ticks"] + skipped)
    if r["late_pct"] >= 1.0: why.append("late_ticks")
else:
    r["late_pct"] = None
    why.append("no_tick_data")
r["valid"] = not why
r["invalid_because"] = why
print(json.dumps(r))
PY
}

# Whole repetitions first, so a run cut short by BENCH_DEADLINE still has every N.
stop_early=
for rep in $(seq 1 "$REPEAT"); do
  for n in $NS; do
    for v in $VARIANTS; do
      if [ -n "$deadline_s" ] && [ $(( $(date +%s) + WARMUP + WINDOW + 10 )) -gt "$deadline_s" ]; then
        stop_early=1
        break 3
      fi
      p=$LOGS/$RUN_ID-$v-$n-$rep
      start=$(now_s)
      echo "-- $(date -u +%H:%M:%S) $v N=$n rep=$rep" >&2
      case $v in
        tickwire-*) tickwire_cell "${v#tickwire-}" "$n" "$p" || true ;;
        baseline-*) tickwire_cell "${v#baseline-}" "$n" "$p" \
                      "$BASELINE_DIR/tickwire" "$BASELINE_DIR/tickwire-loadtest" || true ;;
        *) bench_cell "$v" "$n" "$p" || true ;;
      esac
      line=$(row "$v" "$n" "$rep" "$p")
      echo "$line" >> "$RESULTS"
      echo "$line" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); f=lambda x,d=3: "-" if x is None else (f"{x:.{d}f}" if isinstance(x,float) else str(x)); print("   cores", f(r["server_cores"]), "us/ct", f(r["us_per_client_tick"],2), "deliv", f(r["delivery"],4), "load", f(r["load_cores"]), "late%", f(r.get("late_pct"),2), "sys/dg", f(r["syscalls_per_datagram"],4), "valid" if r["valid"] else "INVALID "+",".join(r["invalid_because"]))' >&2
      echo "   ($(echo "$(now_s) - $start" | bc -l | cut -c1-5) s)" >&2
    done
  done
done

[ -n "$stop_early" ] && echo "== stopped before BENCH_DEADLINE=$BENCH_DEADLINE: later cells not run" >&2
python3 scripts/bench_plot.py table "$RESULTS" --run "$RUN_ID"
