#!/usr/bin/env python3
"""Table and plot of the broadcast-N benchmark (scripts/bench.sh, docs/benchmarks.md).

    bench_plot.py table RESULTS.jsonl [--run RUN_ID]     markdown table on stdout
    bench_plot.py svg RESULTS.jsonl OUT.svg [--run RUN_ID]  us per executed client-tick vs N

RESULTS.jsonl holds one JSON line per cell (variant, n, rep, ...). Without --run the latest run
in the file is used. Several reps of a cell are reduced to the median of each figure. Stdlib only.
"""

import json
import statistics
import sys

ORDER = ["floor", "io_uring", "epoll", "select", "blocking"]
COLORS = {
    "floor": "#000000",
    "io_uring": "#1f77b4",
    "epoll": "#2ca02c",
    "select": "#9467bd",
    "blocking": "#8c564b",
    "tickwire-io_uring": "#d62728",
    "tickwire-epoll": "#ff7f0e",
}


def variant_key(v):
    if v in ORDER:
        return (0, ORDER.index(v), v)
    return (1, 0, v)


def load(path, run):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    if not rows:
        sys.exit("no results in " + path)
    if run is None:
        run = rows[-1]["run"]
    rows = [r for r in rows if r["run"] == run]
    cells = {}
    for r in rows:
        judge(r)
        cells.setdefault((r["variant"], r["n"]), []).append(r)
    return run, cells


def judge(r):
    """Re-derives the cell's figures from its raw fields (the rule of scripts/bench.sh, with
    deadlines skipped by overruns counted as late ticks) so older result files read the same."""
    why = []
    if r.get("delivery") is None or r["delivery"] < 0.99:
        why.append("delivery")
    if r.get("server_cores") is None or r["server_cores"] >= 0.85:
        why.append("server_cpu")
    if r.get("load_cores") is None or r["load_cores"] >= 0.85:
        why.append("load_cpu")
    if r.get("load_slips"):
        why.append("load_slips")
    ticks, late, skipped = r.get("ticks"), r.get("late_ticks"), r.get("overruns") or 0
    if ticks and late is not None:
        r["late_pct"] = 100.0 * (late + skipped) / (ticks + skipped)
        r["executed"] = ticks / (ticks + skipped)
        if r["late_pct"] >= 1.0:
            why.append("late_ticks")
    else:
        r["late_pct"] = r["executed"] = None
        why.append("no_tick_data")
    us = r.get("us_per_client_tick")
    r["us_per_executed_client_tick"] = us / r["executed"] if us and r["executed"] else None
    r["valid"] = not why
    r["invalid_because"] = why
    return r


def med(rs, key):
    vals = [r.get(key) for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(x, d=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{d}f}"
    return str(x)


def table(path, run):
    run, cells = load(path, run)
    ns = sorted({n for (_, n) in cells})
    variants = sorted({v for (v, _) in cells}, key=variant_key)
    print(f"run {run}: median of {max(len(rs) for rs in cells.values())} rep(s) per cell\n")
    print("| server | N | server cores | us/client-tick | x floor | us/executed client-tick "
          "| tick p99 ms | lateness p99 ms | late+skipped ticks % | syscalls/datagram | RSS MB "
          "| delivery | load cores | valid reps |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in ns:
        floor = cells.get(("floor", n))
        floor_us = med(floor, "us_per_client_tick") if floor else None
        for v in variants:
            rs = cells.get((v, n))
            if not rs:
                continue
            us = med(rs, "us_per_client_tick")
            ratio = us / floor_us if us is not None and floor_us else None
            rss = med(rs, "rss_kb")
            ok = sum(1 for r in rs if r["valid"])
            why = sorted({w for r in rs for w in r["invalid_because"]})
            valid = f"{ok}/{len(rs)}" + ("" if ok == len(rs) else " (" + ", ".join(why) + ")")
            print("| " + " | ".join([
                v, str(n), fmt(med(rs, "server_cores")), fmt(us, 2), fmt(ratio, 2),
                fmt(med(rs, "us_per_executed_client_tick"), 2),
                fmt(med(rs, "tick_ms_p99"), 2), fmt(med(rs, "lateness_ms_p99"), 2),
                fmt(med(rs, "late_pct"), 2), fmt(med(rs, "syscalls_per_datagram"), 4),
                fmt(rss / 1024.0 if rss is not None else None, 1), fmt(med(rs, "delivery"), 4),
                fmt(med(rs, "load_cores"), 2), valid,
            ]) + " |")


def svg(path, out, run):
    run, cells = load(path, run)
    ns = sorted({n for (_, n) in cells})
    variants = sorted({v for (v, _) in cells}, key=variant_key)
    series = {}
    for v in variants:
        pts = []
        for n in ns:
            rs = cells.get((v, n))
            if rs:
                # Per executed tick: an overrunning server runs fewer ticks, and dividing by the
                # nominal 62.5 Hz would make it look cheaper.
                us = med(rs, "us_per_executed_client_tick") or med(rs, "us_per_client_tick")
                if us is not None:
                    ok = sum(1 for r in rs if r["valid"])
                    pts.append((n, us, 2 * ok > len(rs)))
        if pts:
            series[v] = pts
    ymax = max(us for pts in series.values() for (_, us, _) in pts)
    ymax = max(5.0, (int(ymax / 5.0) + 1) * 5.0)
    xmin, xmax = 0, max(ns) * 1.05
    w, h = 760, 440
    left, right, top, bottom = 70, 210, 40, 60
    pw, ph = w - left - right, h - top - bottom

    def x(n):
        return left + (n - xmin) / (xmax - xmin) * pw

    def y(v):
        return top + ph - v / ymax * ph

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
         f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<text x="{left}" y="22" font-size="14">broadcast-N: server CPU per executed client-tick '
         f'(run {run})</text>']
    step = 5 if ymax <= 40 else 10
    v = 0
    while v <= ymax + 1e-9:
        o.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + pw}" y2="{y(v):.1f}" '
                 f'stroke="#ddd"/>')
        o.append(f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        v += step
    for n in ns:
        o.append(f'<line x1="{x(n):.1f}" y1="{top}" x2="{x(n):.1f}" y2="{top + ph}" '
                 f'stroke="#eee"/>')
        o.append(f'<text x="{x(n):.1f}" y="{top + ph + 18}" text-anchor="middle">{n}</text>')
    o.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" '
             f'stroke="black"/>')
    o.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>')
    o.append(f'<text x="{left + pw / 2}" y="{h - 18}" text-anchor="middle">clients (N)</text>')
    o.append(f'<text transform="translate(18,{top + ph / 2}) rotate(-90)" '
             f'text-anchor="middle">us of server CPU per executed client-tick</text>')
    for i, (v, pts) in enumerate(series.items()):
        color = COLORS.get(v, "#7f7f7f")
        dash = ' stroke-dasharray="6,3"' if v.startswith("tickwire-") else ""
        path = " ".join(f"{'M' if j == 0 else 'L'}{x(n):.1f},{y(us):.1f}"
                        for j, (n, us, _) in enumerate(pts))
        o.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for n, us, ok in pts:
            fill = color if ok else "white"
            o.append(f'<circle cx="{x(n):.1f}" cy="{y(us):.1f}" r="4" fill="{fill}" '
                     f'stroke="{color}" stroke-width="1.5"><title>{v} N={n}: {us:.2f} us'
                     f'{"" if ok else " (invalid cell)"}</title></circle>')
        ly = top + 10 + i * 20
        o.append(f'<line x1="{left + pw + 20}" y1="{ly}" x2="{left + pw + 45}" y2="{ly}" '
                 f'stroke="{color}" stroke-width="2"{dash}/>')
        o.append(f'<text x="{left + pw + 52}" y="{ly + 4}">{v}</text>')
    ly = top + 10 + len(series) * 20 + 10
    o.append(f'<circle cx="{left + pw + 32}" cy="{ly}" r="4" fill="white" stroke="black"/>')
    o.append(f'<text x="{left + pw + 52}" y="{ly + 4}">hollow: most reps invalid</text>')
    o.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(o) + "\n")


def main(argv):
    run = None
    if "--run" in argv:
        i = argv.index("--run")
        run = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    if len(argv) == 3 and argv[1] == "table":
        table(argv[2], run)
    elif len(argv) == 4 and argv[1] == "svg":
        svg(argv[2], argv[3], run)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
