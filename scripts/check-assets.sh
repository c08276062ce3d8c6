#!/usr/bin/env bash
# Validates the deployment assets under config/ (Grafana dashboard, Prometheus config and rules,
# systemd unit, Docker seccomp profile, Agones manifests) and lints the Dockerfile.
#
#   scripts/check-assets.sh          # static checks; tools that are not installed are skipped
#   scripts/check-assets.sh --live   # also start target/{release,debug}/tickwire on loopback and
#                                    # check that every metric the assets use is really exported
#
# Exits non-zero on a real failure; a missing tool is reported as "skip" with the reason.
# Tools: python3 (required), PyYAML, promtool (Debian: prometheus), systemd-analyze, yamllint,
# hadolint; all optional but python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

LIVE=0
for arg in "$@"; do
    case "$arg" in
        --live) LIVE=1 ;;
        -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

failures=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; failures=$((failures + 1)); }
skip() { echo "skip $*"; }
have() { command -v "$1" >/dev/null 2>&1; }

if ! have python3; then
    echo "FAIL python3 is required" >&2
    exit 1
fi

DASHBOARD=config/grafana/tickwire.json
SECCOMP=config/docker/seccomp-io-uring.json
PROM_CONFIG=config/prometheus/prometheus.yml
PROM_RULES=config/prometheus/tickwire-rules.yml
PROM_TESTS=config/prometheus/tickwire-rules.test.yml
UNIT=config/systemd/tickwire.service
METRICS_RS=crates/server/src/metrics.rs
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
USED="$tmp/used-metrics.txt"

# ---- 1. JSON parses.
for f in "$DASHBOARD" "$SECCOMP"; do
    if python3 -m json.tool "$f" >/dev/null; then ok "json: $f"; else bad "json: $f"; fi
done

# ---- 2. Structure and metric names (Python: dashboard, rules, seccomp, Agones, YAML parse).
if python3 - "$METRICS_RS" "$DASHBOARD" "$PROM_RULES" "$SECCOMP" "$USED" <<'PY'; then ok "structure and metric names"; else bad "structure and metric names"; fi
import json, os, re, sys

metrics_rs, dashboard_path, rules_path, seccomp_path = sys.argv[1:5]
errors = []
def err(msg):
    errors.append(msg)
    print("     - " + msg)

# Metric names: constants registered with describe_{counter,gauge,histogram}! in metrics.rs,
# plus the process_* metrics written by hand, plus Prometheus' own `up`.
src = open(metrics_rs).read()
consts = dict(re.findall(r'pub const ([A-Z0-9_]+): &str = "([a-z0-9_:]+)";', src))
described = re.findall(r'describe_(counter|gauge|histogram)!\(\s*([A-Z0-9_]+)', src)
known, histograms = set(), set()
for kind, const in described:
    name = consts.get(const)
    if name is None:
        err(f"metrics.rs: describe_{kind}!({const}) names no string constant")
        continue
    known.add(name)
    if kind == "histogram":
        histograms.add(name)
known |= set(re.findall(r'"(process_[a-z_]+)"', src))
known.add("up")
if len(known) < 10:
    err(f"metrics.rs: found only {len(known)} metric names; the parser needs updating")

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan", "atan2"}
def metric_names(expr):
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # string literals
    s = re.sub(r'\{[^}]*\}', ' ', s)                        # label matchers
    s = re.sub(r'\[[^\]]*\]', ' ', s)                       # range/subquery durations
    s = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', ' ', s)
    names = []
    for m in re.finditer(r'(?<![\w$.])[A-Za-z_:][A-Za-z0-9_:]*', s):
        word = m.group(0)
        rest = s[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue                                        # a function or keyword
        names.append(word)
    return names

used = set()
def check_metric(name, where, recorded):
    if name not in recorded and name != "up":
        used.add(name)
    if name in known or name in recorded:
        return
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in histograms:
            return
    err(f"{where}: metric {name!r} is not defined in {metrics_rs}")

# Prometheus rules.
recorded = set()
try:
    import yaml
except ImportError:
    yaml = None
    print("     (PyYAML missing: YAML files not parsed; pip install pyyaml)")
if yaml:
    rules = yaml.safe_load(open(rules_path))
    all_rules = [r for g in rules["groups"] for r in g["rules"]]
    recorded = {r["record"] for r in all_rules if "record" in r}
    alerts = {r["alert"]: r for r in all_rules if "alert" in r}
    for r in all_rules:
        for name in metric_names(r["expr"]):
            check_metric(name, f"{rules_path}: {r.get('record') or r.get('alert')}", recorded)
    for a in ("TickOverruns", "TickStuck", "TickSlow", "HighDropRate", "ServerFull",
              "HighIoSendFailures"):
        r = alerts.get(a)
        if r is None:
            err(f"{rules_path}: alert {a} missing")
            continue
        if "severity" not in r.get("labels", {}):
            err(f"{rules_path}: alert {a} has no severity label")
        for k in ("summary", "description"):
            if not r.get("annotations", {}).get(k):
                err(f"{rules_path}: alert {a} has no {k} annotation")

# Grafana dashboard.
d = json.load(open(dashboard_path))
if not 36 <= d.get("schemaVersion", 0) <= 41:
    err(f"{dashboard_path}: schemaVersion {d.get('schemaVersion')} (expected ~39)")
if not any(i.get("name") == "DS_PROMETHEUS" and i.get("pluginId") == "prometheus"
           for i in d.get("__inputs", [])):
    err(f"{dashboard_path}: no DS_PROMETHEUS datasource input")
variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
for v in ("job", "instance"):
    if v not in variables:
        err(f"{dashboard_path}: template variable ${v} missing")
    elif variables[v].get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
        err(f"{dashboard_path}: variable ${v} does not use ${{DS_PROMETHEUS}}")
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
seen, ids, exprs = set(), set(), 0
for p in panels(d["panels"]):
    title = p.get("title", "?")
    if p.get("id") in ids:
        err(f"{dashboard_path}: duplicate panel id {p.get('id')}")
    ids.add(p.get("id"))
    if p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
        err(f"{dashboard_path}: panel {title!r} does not use ${{DS_PROMETHEUS}}")
    for t in p.get("targets", []):
        if t.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            err(f"{dashboard_path}: a query of {title!r} does not use ${{DS_PROMETHEUS}}")
        expr = t.get("expr", "")
        exprs += 1
        if p["type"] != "row" and 'job=~"$job"' not in expr:
            err(f"{dashboard_path}: {title!r}: query ignores $job: {expr}")
        for name in metric_names(expr):
            check_metric(name, f"{dashboard_path}: {title!r}", recorded)
            seen.add(name)
print(f"     dashboard: {exprs} queries over {len(seen)} metric series names")
for required in ("tick_duration_ms_bucket", "tick_overruns_total", "tick_lateness_ms_bucket",
                 "players_connected", "players_max", "packets_received_total",
                 "packets_sent_total", "bytes_received_total", "bytes_sent_total",
                 "packets_dropped_total", "connects_total", "connects_denied_total",
                 "io_wait_duration_ms_bucket", "io_events_processed_total",
                 "process_cpu_seconds_total", "process_resident_memory_bytes",
                 "snapshot_bytes_total", "snapshots_sent_total"):
    if required not in seen:
        err(f"{dashboard_path}: no panel uses {required}")

# Seccomp profile: Docker format, io_uring allowed, every name a real syscall.
p = json.load(open(seccomp_path))
if p.get("defaultAction") not in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS"):
    err(f"{seccomp_path}: defaultAction {p.get('defaultAction')} is not a deny action")
allowed = {n for r in p.get("syscalls", []) if r.get("action") == "SCMP_ACT_ALLOW"
           and not r.get("args") for n in r["names"]}
for n in ("io_uring_setup", "io_uring_enter", "io_uring_register", "epoll_pwait2",
          "sendmmsg", "recvmmsg"):
    if n not in allowed:
        err(f"{seccomp_path}: {n} is not allowed")
tables = ["/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm/unistd_64.h",
          "/usr/include/asm-generic/unistd.h"]
syscalls = set()
for t in tables:
    if os.path.exists(t):
        syscalls |= set(re.findall(r'#define __NR(?:3264)?_(\w+)', open(t).read()))
if syscalls:
    for r in p["syscalls"]:
        for n in r["names"]:
            if n not in syscalls:
                err(f"{seccomp_path}: {n!r} is not a syscall in the kernel headers")
else:
    print("     (kernel headers not found: syscall names not checked; apt-get install linux-libc-dev)")

# Agones manifests and every other YAML file.
if yaml:
    import glob
    docs = {}
    for f in sorted(glob.glob("config/**/*.yml", recursive=True)
                    + glob.glob("config/**/*.yaml", recursive=True)):
        try:
            loaded = [x for x in yaml.safe_load_all(open(f)) if x is not None]
        except yaml.YAMLError as e:
            err(f"{f}: YAML does not parse: {e}")
            continue
        docs[f] = loaded
    gs = docs["config/agones/gameserver.yaml"][0]
    fleet = docs["config/agones/fleet.yaml"][0]
    fas = docs["config/agones/fleetautoscaler.yaml"][0]
    for doc, api, kind in ((gs, "agones.dev/v1", "GameServer"), (fleet, "agones.dev/v1", "Fleet"),
                           (fas, "autoscaling.agones.dev/v1", "FleetAutoscaler")):
        if doc.get("apiVersion") != api or doc.get("kind") != kind:
            err(f"agones: expected {api} {kind}, got {doc.get('apiVersion')} {doc.get('kind')}")
    spec = gs["spec"]
    if fleet["spec"]["template"]["spec"] != spec:
        err("agones: fleet.yaml template.spec differs from gameserver.yaml spec")
    game = [p for p in spec["ports"] if p["name"] == "game"]
    if not game or game[0].get("containerPort") != 7777 or game[0].get("protocol") != "TCPUDP" \
            or game[0].get("portPolicy") != "Dynamic":
        err("agones: port 'game' must be Dynamic, containerPort 7777, TCPUDP")
    if spec["health"]["periodSeconds"] <= 2:
        err("agones: health.periodSeconds must exceed the server's 2 s Health() interval")
    container = [c for c in spec["template"]["spec"]["containers"] if c["name"] == spec["container"]]
    if not container:
        err("agones: spec.container names no container of the pod template")
    else:
        args = container[0]["args"]
        def arg(flag):
            return args[args.index(flag) + 1] if flag in args else None
        if args[0] != "serve" or "--agones" not in args:
            err("agones: container args must be `serve ... --agones`")
        if arg("--bind") != "0.0.0.0:7777" or arg("--metrics-bind") != "0.0.0.0:9464":
            err("agones: --bind 0.0.0.0:7777 and --metrics-bind 0.0.0.0:9464 expected")
        cap = spec.get("counters", {}).get("players", {}).get("capacity")
        if cap is None or str(cap) != str(arg("--max-players")):
            err(f"agones: counters.players.capacity {cap} != --max-players {arg('--max-players')}")
        key = arg("--key-file") or ""
        mounts = {m["name"]: m["mountPath"] for m in container[0].get("volumeMounts", [])}
        vols = {v["name"]: v for v in spec["template"]["spec"].get("volumes", [])}
        if not any(key.startswith(mp + "/") and vols.get(n, {}).get("secret", {}).get("secretName")
                   == "tickwire-key" for n, mp in mounts.items()):
            err("agones: --key-file is not inside the mounted Secret tickwire-key")
        sc = container[0].get("securityContext", {})
        if not sc.get("readOnlyRootFilesystem") or \
                not spec["template"]["spec"].get("securityContext", {}).get("runAsNonRoot"):
            err("agones: runAsNonRoot and readOnlyRootFilesystem expected")
    if fas["spec"]["fleetName"] != fleet["metadata"]["name"]:
        err("agones: fleetautoscaler fleetName does not name the Fleet")
    buf = fas["spec"]["policy"].get("buffer", {})
    if fas["spec"]["policy"]["type"] == "Buffer" and not \
            (buf.get("minReplicas", 0) <= buf.get("maxReplicas", 0)):
        err("agones: buffer minReplicas > maxReplicas")
    print(f"     yaml: {len(docs)} files parse")

with open(sys.argv[5], "w") as out:
    out.write("\n".join(sorted(used)) + "\n")
sys.exit(1 if errors else 0)
PY

# ---- 3. promtool: config (and its commented kubernetes_sd example), rules, rule unit tests.
if have promtool; then
    echo "     $(promtool --version 2>&1 | head -n 1)"
    if promtool check rules "$PROM_RULES" >/dev/null; then ok "promtool check rules"; else bad "promtool check rules $PROM_RULES"; fi
    if promtool check config "$PROM_CONFIG" >/dev/null; then ok "promtool check config"; else bad "promtool check config $PROM_CONFIG"; fi
    if promtool test rules "$PROM_TESTS" >/dev/null; then ok "promtool test rules (alert unit tests)"; else
        promtool test rules "$PROM_TESTS" || true
        bad "promtool test rules $PROM_TESTS"
    fi
    # Uncomment the example block (strip "  # " from the lines between the markers).
    awk '/--- BEGIN kubernetes_sd example/{on=1; next} /--- END kubernetes_sd example/{on=0; next}
         on{sub(/^  # /, "  "); sub(/^  #$/, ""); print; next} {print}' "$PROM_CONFIG" >"$tmp/prometheus.yml"
    cp "$PROM_RULES" "$tmp/"
    if ! grep -q "job_name: tickwire-agones" "$tmp/prometheus.yml"; then
        bad "kubernetes_sd example markers not found in $PROM_CONFIG"
    elif out=$(promtool check config "$tmp/prometheus.yml" 2>&1); then
        ok "promtool check config (kubernetes_sd example uncommented)"
    elif echo "$out" | grep -q "field kubernetes_sd_configs not found"; then
        # Debian's build of Prometheus leaves out the Kubernetes service discovery.
        skip "this promtool is built without kubernetes_sd: example checked as YAML only"
        if python3 -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1]))
j = [s for s in c["scrape_configs"] if s["job_name"] == "tickwire-agones"][0]
assert j["kubernetes_sd_configs"][0]["role"] == "pod" and j["relabel_configs"]' "$tmp/prometheus.yml"; then
            ok "kubernetes_sd example parses"
        else
            bad "kubernetes_sd example in $PROM_CONFIG does not parse"
        fi
    else
        echo "$out"
        bad "kubernetes_sd example in $PROM_CONFIG"
    fi
else
    skip "promtool not installed (apt-get install prometheus): rules/config not checked by Prometheus itself"
fi

# ---- 4. systemd unit.
if have systemd-analyze && [ -d /usr/lib/systemd/system ]; then
    # verify needs the ExecStart binary and the standard targets: use a scratch root.
    root=$(mktemp -d)
    mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root/usr/local/bin"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
    install -m 0755 /bin/true "$root/usr/local/bin/tickwire"
    cp "$UNIT" "$root/etc/systemd/system/"
    if out=$(systemd-analyze verify --root="$root" tickwire.service 2>&1) && [ -z "$out" ]; then
        ok "systemd-analyze verify ($(systemd-analyze --version | head -n 1))"
    elif echo "$out" | grep -qiE "unknown (lvalue|section)|failed to parse|invalid|not executable"; then
        echo "$out"
        bad "systemd-analyze verify $UNIT"
    else
        skip "systemd-analyze verify could not run here: $out"
    fi
    if score=$(systemd-analyze security --offline=yes --root="$root" tickwire.service 2>/dev/null |
        grep -o 'Overall exposure level.*'); then
        echo "     $score"
    fi
    rm -rf "$root"
else
    skip "systemd-analyze not available: $UNIT not verified"
fi

# ---- 5. yamllint (style; warnings only, errors fail).
if have yamllint; then
    conf='{extends: default, rules: {line-length: {max: 100, level: warning}, document-start: disable,
          comments: {min-spaces-from-content: 1}, comments-indentation: disable,
          truthy: {check-keys: false}}}'
    if yamllint -f parsable -d "$conf" config/agones config/prometheus >/dev/null 2>&1 ||
        ! yamllint -f parsable -d "$conf" config/agones config/prometheus | grep -q '\[error\]'; then
        ok "yamllint ($(yamllint --version))"
    else
        yamllint -f parsable -d "$conf" config/agones config/prometheus | grep '\[error\]' || true
        bad "yamllint"
    fi
else
    skip "yamllint not installed (apt-get install yamllint)"
fi

# ---- 6. hadolint on the Dockerfile.
if [ -f Dockerfile ]; then
    if have hadolint; then
        if hadolint Dockerfile; then ok "hadolint Dockerfile"; else bad "hadolint Dockerfile"; fi
    else
        skip "hadolint not installed: Dockerfile not linted"
    fi
else
    skip "no Dockerfile"
fi

# ---- 7. --live: the metrics the assets use are exported by a real server.
if [ "$LIVE" = 1 ]; then
    bin=""
    for b in target/release/tickwire target/debug/tickwire "${CARGO_TARGET_DIR:-/nonexistent}/release/tickwire"; do
        if [ -x "$b" ]; then bin=$b; break; fi
    done
    if [ -z "$bin" ] || ! have curl; then
        skip "--live: no built tickwire binary (cargo build --release -p tickwire) or no curl"
    else
        work=$(mktemp -d)
        ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]; print(" ".join(str(x.getsockname()[1]) for x in s))')
        read -r gport mport <<<"$ports"
        "$bin" serve --config config/server.toml --bind "127.0.0.1:$gport" \
            --metrics-bind "127.0.0.1:$mport" --key-file "$work/tickwire.key" >"$work/serve.log" 2>&1 &
        spid=$!
        for _ in $(seq 50); do curl -fs "http://127.0.0.1:$mport/metrics" >"$work/metrics" && break; sleep 0.1; done
        lt=$(dirname "$bin")/tickwire-loadtest
        if [ -x "$lt" ]; then
            "$lt" --server "127.0.0.1:$gport" --key-file "$work/tickwire.key" --clients 4 \
                --duration 2 --no-progress >/dev/null 2>&1 || true
        fi
        curl -fs "http://127.0.0.1:$mport/metrics" >"$work/metrics" || true
        kill -TERM "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
        if python3 - "$work/metrics" "$USED" <<'PY'; then ok "--live: every metric used is exported by $bin"; else bad "--live metrics"; fi
import sys
exported = {l.split("{")[0].split(" ")[0] for l in open(sys.argv[1])
            if l.strip() and not l.startswith("#")}
if not exported:
    print("     no metrics scraped")
    sys.exit(1)
used = [u for u in open(sys.argv[2]).read().split() if u]
missing = [u for u in used if u not in exported]
for m in missing:
    print("     - used by the assets but not exported:", m)
print(f"     {len(used) - len(missing)}/{len(used)} used metric names exported")
sys.exit(1 if missing else 0)
PY
        rm -rf "$work"
    fi
fi

if [ "$failures" -gt 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all asset checks passed"
