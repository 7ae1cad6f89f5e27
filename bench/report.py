#!/usr/bin/python3
"""Turns bench/results/<date>/raw/ (written by bench/run.sh) into report.md,
summary.md and PNG plots in bench/results/<date>/.

Every figure is the median over the runs (or rounds) with its min-max; every
ratio is computed per run from figures measured in that run, then its median
and min-max are given. Nothing here edits a number: it only reads raw files.

  /usr/bin/python3 bench/report.py bench/results/<date>
"""
import csv
import glob
import json
import os
import re
import statistics
import sys

OUT = sys.argv[1]
RAW = os.path.join(OUT, "raw")

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except Exception as e:  # the report still gets written, without plots
    plt = None
    PLOT_ERR = str(e)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception:
        return None


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except Exception:
        return default


def stat(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return (statistics.median(vals), min(vals), max(vals), len(vals))


def fnum(x, digits=3):
    if x is None:
        return "n/a"
    a = abs(x)
    if a >= 1e6:
        return f"{x / 1e6:.2f}M"
    if a >= 1e4:
        return f"{x / 1e3:.1f}k"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits - 1}f}" if a >= 1 else f"{x:.{digits}f}"


def fs(s, unit=""):
    """median [min-max] (n)"""
    if s is None:
        return "n/a"
    m, lo, hi, n = s
    if n == 1:
        return f"{fnum(m)}{unit}"
    return f"{fnum(m)}{unit} [{fnum(lo)}-{fnum(hi)}]"


def verdict(s, goal, higher_better=True):
    if s is None:
        return "n/a"
    ok = s[0] >= goal if higher_better else s[0] <= goal
    return "met" if ok else "**not met**"


meta = load(os.path.join(RAW, "meta.json")) or {}
end = load(os.path.join(RAW, "end.json")) or {}
status = {}
for line in read(os.path.join(RAW, "status.tsv")).splitlines():
    parts = line.split("\t")
    if len(parts) >= 4:
        status[parts[0]] = {"state": parts[1], "reason": parts[2], "seconds": parts[3]}
notes = [n for n in read(os.path.join(RAW, "notes.txt")).splitlines() if n.strip()]
RUNS = meta.get("runs", 1)

md = []        # report.md body
summary = []   # rows: (suite, metric, ramster, baseline, ratio, goal, verdict)
plots = []


def savefig(fig, name):
    path = os.path.join(OUT, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    plots.append(name)
    return name


def suite_header(key, title):
    md.append(f"\n## {title}\n")
    st = status.get(key)
    if st is None:
        md.append("Not run in this invocation.\n")
        return False
    md.append(f"Suite status: **{st['state']}**" + (f" ({st['reason']})" if st["reason"] else "")
              + f", {st['seconds']} s.\n")
    return True


# ---------------------------------------------------------------- 1. codec
def codec():
    if not suite_header("codec", "1. Codec: page codec vs raw LZ4 (codec_bench)"):
        return
    runs = [load(p) for p in sorted(glob.glob(os.path.join(RAW, "codec-run*.json")))]
    runs = [r for r in runs if r]
    if not runs:
        md.append("No results.\n")
        return
    md.append(f"Corpus: {runs[0].get('total_pages')} pages cut from files on this machine "
              f"(fingerprint {runs[0].get('corpus_fingerprint')}), LZ4 {runs[0].get('lz4_version')}; "
              f"{len(runs)} process run(s), each the median of {runs[0].get('rounds')} rounds. "
              "Spread: min-max over all rounds of all runs; ratio codec/LZ4: per run, then median [min-max].\n")
    md.append("| class | op | codec pages/s | codec MB/s | LZ4 pages/s | codec / LZ4 speed | ratio codec | ratio LZ4 |")
    md.append("|---|---|---|---|---|---|---|---|")
    classes = [r["class"] for r in runs[0]["results"]]
    for cls in classes:
        for op in ("encode", "decode"):
            cp, cm, lp, ratio = [], [], [], []
            rc = rl = None
            for run in runs:
                res = next(x for x in run["results"] if x["class"] == cls)
                pages = res["pages"]
                cp += [pages / s for s in res[op]["codec"]["round_s"] if s > 0]
                cm += [pages * 4096 / 1e6 / s for s in res[op]["codec"]["round_s"] if s > 0]
                lp += [pages / s for s in res[op]["lz4"]["round_s"] if s > 0]
                ratio.append(res[op]["codec_over_lz4"])
                rc, rl = res["ratio"]["codec"], res["ratio"]["lz4"]
            sr = stat(ratio)
            md.append(f"| {cls} | {op} | {fs(stat(cp))} | {fs(stat(cm))} | {fs(stat(lp))} | {fs(sr)}x | "
                      f"{rc:.3f} | {rl:.3f} |")
            if cls == "mix":
                summary.append(("1 codec", f"{op} pages/s, mixed corpus", fs(stat(cp)), f"LZ4 {fs(stat(lp))}",
                                fs(sr) + "x", ">= 0.90x", verdict(sr, 0.90)))
    res = next(x for x in runs[0]["results"] if x["class"] == "mix")
    summary.append(("1 codec", "compression ratio, mixed corpus", f"{res['ratio']['codec']:.3f}",
                    f"LZ4 {res['ratio']['lz4']:.3f}", f"{res['ratio']['codec'] / res['ratio']['lz4']:.3f}x",
                    ">= 0.90x", verdict((res['ratio']['codec'] / res['ratio']['lz4'],) * 3 + (1,), 0.90)))
    if plt:
        fig, ax = plt.subplots(figsize=(8, 4))
        xs, labels = [], []
        for i, cls in enumerate(classes):
            for j, op in enumerate(("encode", "decode")):
                for k, impl in enumerate(("codec", "lz4")):
                    vals = []
                    for run in runs:
                        res = next(x for x in run["results"] if x["class"] == cls)
                        vals += [res["pages"] * 4096 / 1e6 / s for s in res[op][impl]["round_s"] if s > 0]
                    s = stat(vals)
                    x = i * 5 + j * 2 + k
                    ax.bar(x, s[0], yerr=[[s[0] - s[1]], [s[2] - s[0]]], capsize=2,
                           color=("C0" if impl == "codec" else "C1"), alpha=(1 if op == "encode" else 0.6))
            xs.append(i * 5 + 1.5)
            labels.append(cls)
        ax.set_xticks(xs)
        ax.set_xticklabels(labels)
        ax.set_yscale("log")
        ax.set_ylabel("MB/s (uncompressed), log")
        ax.set_title("codec (blue) vs raw LZ4 (orange); solid encode, light decode")
        md.append(f"\n![codec]({savefig(fig, 'codec.png')})\n")


# ---------------------------------------------------------------- 2. store
def store():
    if not suite_header("store", "2. Page store: one ramster-server vs memcached (server_bench)"):
        return
    d = load(os.path.join(RAW, "store.json"))
    if not d:
        md.append("No results.\n")
        return
    md.append(f"{d.get('threads')} client threads, {d.get('rounds')} rounds (median [min-max] over rounds); "
              f"latency per round trip ({d.get('latency_unit')}); batch = {len(d.get('patterns', []) or [])} "
              f"patterns. Both servers and the client share the {d.get('cores')} cores. "
              "Ratios are ramster/memcached of medians measured in the same process, rounds alternating "
              "which system goes first. The server runs with `--recompress-level=0` here (server_bench "
              "`--server_recompress_level`): this suite measures the store path and what a page costs beyond "
              "its payload as stored; recompression shows in suite 5.\n")
    md.append("| pattern | op | system | pages/s | p50 us | p99 us | server CPU us/page |")
    md.append("|---|---|---|---|---|---|---|")
    for r in d["results"]:
        g = lambda k: (r[k]["median"], r[k]["min"], r[k]["max"], len(r[k]["rounds"]))
        md.append(f"| {r['pattern']} | {r['op']} | {r['system']} | {fs(g('pages_per_s'))} | {fs(g('p50_us'))} | "
                  f"{fs(g('p99_us'))} | {fs(g('server_cpu_us_per_page'))} |")
    md.append("\n| pattern | op | ramster/memcached pages/s | p50 | p99 |")
    md.append("|---|---|---|---|---|")
    for x in d.get("ratios_ramster_over_memcached", []):
        md.append(f"| {x['pattern']} | {x['op']} | {x['pages_per_s']:.2f}x | {x['p50_us']:.2f}x | {x['p99_us']:.2f}x |")
        rs = next(r for r in d["results"] if r["system"] == "ramster" and r["pattern"] == x["pattern"] and r["op"] == x["op"])
        ms = next(r for r in d["results"] if r["system"] == "memcached" and r["pattern"] == x["pattern"] and r["op"] == x["op"])
        # per-round ratios for the spread
        rr = [a / b for a, b in zip(rs["pages_per_s"]["rounds"], ms["pages_per_s"]["rounds"]) if b]
        s = stat(rr)
        s = (x["pages_per_s"], s[1], s[2], s[3]) if s else None
        summary.append(("2 store", f"{x['pattern']} {x['op']} pages/s (4 threads)",
                        fs((rs["pages_per_s"]["median"], rs["pages_per_s"]["min"], rs["pages_per_s"]["max"], len(rr))),
                        "memcached " + fs((ms["pages_per_s"]["median"], ms["pages_per_s"]["min"], ms["pages_per_s"]["max"], len(rr))),
                        fs(s) + "x", ">= 1.0x" if x["pattern"] == "batched" else "-",
                        verdict(s, 1.0) if x["pattern"] == "batched" else "-"))
    mem = d.get("memory", {})
    if "ramster" in mem:
        m = mem["ramster"]
        md.append(f"\nDonor RAM after the first fill of {m['pages']} pages: ramster RSS delta {m['rss_per_page']:.0f} B/page, "
                  f"own account (ram_used_bytes) {m['accounted_per_page']:.0f} B/page, compressed payload "
                  f"{m['payload_per_page']:.0f} B/page (overhead: RSS {m['rss_overhead_per_page']:.1f} B, account "
                  f"{m['accounted_overhead_per_page']:.1f} B).")
        slope = "slope_overhead_per_page" in m  # results from before the fill ran in halves have no slope
        if slope:
            md.append(f" Over the fill's second half alone (the slope: what one more page costs) the RSS grew by "
                      f"{m['slope_overhead_per_page']:.1f} B/page beyond the payload; the whole fill's growth beyond "
                      f"its pages at that cost, {m['one_time_bytes'] / 1e6:.2f} MB, is what the process grew by once "
                      f"(malloc's per-thread caches, buffers).")
        if "memcached" in mem:
            mc = mem["memcached"]
            md.append(f" memcached: RSS delta {mc['rss_per_page']:.0f} B/page, stats bytes {mc['accounted_per_page']:.0f} B/page"
                      + (f", slope {mc['slope_rss_per_page']:.0f} B/page." if slope else "."))
        md.append("\n")
        if slope:
            summary.append(("2 store", "donor RAM per page (RSS slope: one more page) - compressed size",
                            f"{m['slope_overhead_per_page']:.1f} B", f"payload {m['slope_payload_per_page']:.0f} B", "-",
                            "<= 32 B", "met" if m["slope_overhead_per_page"] <= 32 else "**not met**"))
            summary.append(("2 store", f"donor RAM per page (RSS delta, whole fill, incl. {m['one_time_bytes'] / 1e6:.2f} MB "
                            "grown once) - compressed size", f"{m['rss_overhead_per_page']:.1f} B",
                            f"payload {m['payload_per_page']:.0f} B", "-", "-", "-"))
        else:
            summary.append(("2 store", "donor RAM per page (RSS delta) - compressed size", f"{m['rss_overhead_per_page']:.1f} B",
                            f"payload {m['payload_per_page']:.0f} B", "-", "<= 32 B", "met" if m["rss_overhead_per_page"] <= 32 else "**not met**"))
        summary.append(("2 store", "donor RAM per page (ram_used_bytes) - compressed size", f"{m['accounted_overhead_per_page']:.1f} B",
                        f"payload {m['payload_per_page']:.0f} B", "-", "<= 32 B", "met" if m["accounted_overhead_per_page"] <= 32 else "**not met**"))
    if plt:
        fig, axs = plt.subplots(1, 2, figsize=(10, 4))
        keys = [(p, o) for p in ("batched", "unbatched") for o in ("store", "load")]
        for ax, metric, title in ((axs[0], "pages_per_s", "pages/s"), (axs[1], "p99_us", "p50 (bar) / p99 (dot) us per round trip")):
            for i, (p, o) in enumerate(keys):
                for k, sysname in enumerate(("ramster", "memcached")):
                    r = next((r for r in d["results"] if r["system"] == sysname and r["pattern"] == p and r["op"] == o), None)
                    if not r:
                        continue
                    m = r["pages_per_s" if metric == "pages_per_s" else "p50_us"]
                    ax.bar(i * 3 + k, m["median"], yerr=[[m["median"] - m["min"]], [m["max"] - m["median"]]],
                           capsize=3, color=f"C{k}", label=sysname if i == 0 else None)
                    if metric != "pages_per_s":
                        ax.plot(i * 3 + k, r["p99_us"]["median"], "k.")
            ax.set_xticks([i * 3 + 0.5 for i in range(len(keys))])
            ax.set_xticklabels([f"{p}\n{o}" for p, o in keys])
            ax.set_title(title)
            if metric != "pages_per_s":
                ax.set_yscale("log")
            ax.legend()
        md.append(f"\n![store]({savefig(fig, 'store.png')})\n")


# ---------------------------------------------------------------- 3. blockdev
TARGETS = ("nbdkit-memory", "ramster-r1", "ramster-r2")


def fio_fig(path):
    d = load(path)
    if not d:
        return None
    j = d["jobs"][0]
    side = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
    pct = side["clat_ns"].get("percentile", {})
    return {"iops": side["iops"], "p50": pct.get("50.000000", 0) / 1000, "p99": pct.get("99.000000", 0) / 1000,
            "pct": {float(k): v / 1000 for k, v in pct.items()}}


def blockdev():
    if not suite_header("blockdev", "3. Block device: fio nbd engine, 4 KiB random I/O"):
        return
    figs = {}
    for path in glob.glob(os.path.join(RAW, "blockdev-*-run*.json")):
        m = re.match(r"blockdev-(.+)-(randread|randwrite)-qd(\d+)-run(\d+)\.json", os.path.basename(path))
        if m:
            figs[(m.group(1), m.group(2), int(m.group(3)), int(m.group(4)))] = fio_fig(path)
    if not figs:
        md.append("No results.\n")
        return
    runs = sorted({k[3] for k in figs})
    md.append(f"Targets: `nbdkit memory 1G` and ramster-shim (--size=1G, 3 local servers) with replicas 1 and 2, "
              f"all reached through fio's nbd engine over a unix socket; region prefilled with sequential 1 MiB writes; "
              f"{len(runs)} run(s), each job interleaved across targets. Latency: fio completion latency (clat). "
              "Ratios per run against nbdkit measured in the same run.\n")
    md.append("| pattern | QD | target | IOPS | p50 us | p99 us | IOPS / nbdkit | p50 / nbdkit |")
    md.append("|---|---|---|---|---|---|---|---|")
    for rw in ("randread", "randwrite"):
        for qd in (1, 4, 32):
            for t in TARGETS:
                fl = [figs.get((t, rw, qd, r)) for r in runs]
                base = [figs.get(("nbdkit-memory", rw, qd, r)) for r in runs]
                iops = stat([f["iops"] for f in fl if f])
                p50 = stat([f["p50"] for f in fl if f])
                p99 = stat([f["p99"] for f in fl if f])
                ri = stat([f["iops"] / b["iops"] for f, b in zip(fl, base) if f and b and b["iops"]])
                rl = stat([f["p50"] / b["p50"] for f, b in zip(fl, base) if f and b and b["p50"]])
                md.append(f"| {rw} | {qd} | {t} | {fs(iops)} | {fs(p50)} | {fs(p99)} | "
                          f"{fs(ri) + 'x' if t != 'nbdkit-memory' else '-'} | {fs(rl) + 'x' if t != 'nbdkit-memory' else '-'} |")
                if t != "nbdkit-memory" and qd == 1 and rw == "randread":
                    summary.append(("3 blockdev", f"QD1 randread p50 us, {t}", fs(p50),
                                    "nbdkit " + fs(stat([b["p50"] for b in base if b])), fs(rl) + "x", "<= 2.0x", verdict(rl, 2.0, False)))
                if t != "nbdkit-memory" and qd == 32:
                    summary.append(("3 blockdev", f"QD32 {rw} IOPS, {t}", fs(iops),
                                    "nbdkit " + fs(stat([b["iops"] for b in base if b])), fs(ri) + "x", ">= 0.7x", verdict(ri, 0.7)))
    blockdev_cpu(figs, runs)
    onecpu(figs, runs)
    if plt:
        fig, axs = plt.subplots(1, 2, figsize=(10, 4))
        for ax, rw in zip(axs, ("randread", "randwrite")):
            for k, t in enumerate(TARGETS):
                ys, lo, hi = [], [], []
                for qd in (1, 4, 32):
                    s = stat([figs[(t, rw, qd, r)]["iops"] for r in runs if figs.get((t, rw, qd, r))])
                    ys.append(s[0] if s else 0)
                    lo.append(s[0] - s[1] if s else 0)
                    hi.append(s[2] - s[0] if s else 0)
                ax.bar([i * 4 + k for i in range(3)], ys, yerr=[lo, hi], capsize=3, label=t, color=f"C{k}")
            ax.set_xticks([i * 4 + 1 for i in range(3)])
            ax.set_xticklabels(["QD1", "QD4", "QD32"])
            ax.set_title(f"4 KiB {rw} IOPS (median, min-max)")
            ax.legend()
        md.append(f"\n![blockdev IOPS]({savefig(fig, 'blockdev_iops.png')})\n")
        fig, axs = plt.subplots(1, 2, figsize=(10, 4))
        for ax, rw in zip(axs, ("randread", "randwrite")):
            for k, t in enumerate(TARGETS):
                for qd, style in ((1, "-"), (32, "--")):
                    # the run with the median p50
                    fl = sorted([figs[(t, rw, qd, r)] for r in runs if figs.get((t, rw, qd, r))], key=lambda f: f["p50"])
                    if not fl:
                        continue
                    f = fl[len(fl) // 2]
                    ps = sorted(f["pct"].items())
                    ax.plot([v for _, v in ps], [p for p, _ in ps], style, color=f"C{k}", label=f"{t} QD{qd}")
            ax.set_xscale("log")
            ax.set_xlabel("completion latency, us (log)")
            ax.set_ylabel("percentile")
            ax.set_title(f"{rw} latency distribution (median run)")
            ax.legend(fontsize=7)
        md.append(f"\n![blockdev latency]({savefig(fig, 'blockdev_latency.png')})\n")


def blockdev_cpu(figs, runs):
    """CPU per I/O of the QD32 runs (bench/thread_cpu.py before and after each):
    at QD32 both CPUs are busy, so what each I/O costs in CPU sets the IOPS."""
    rows = []
    for rw in ("randread", "randwrite"):
        for t in TARGETS:
            per = []
            for r in runs:
                a = load(os.path.join(RAW, f"blockdev-cpu-{t}-{rw}-qd32-run{r}.before.json"))
                z = load(os.path.join(RAW, f"blockdev-cpu-{t}-{rw}-qd32-run{r}.after.json"))
                f = figs.get((t, rw, 32, r))
                if not a or not z or not f or not f["iops"]:
                    continue
                hz = z.get("hz") or 100
                wall = z["t"] - a["t"]
                d = [y - x for x, y in zip(a["cpu"][:8], z["cpu"][:8])]
                busy = (sum(d) - d[3] - d[4] - d[7]) / hz
                # Whole processes: a connection's threads end with it.
                procs = {k: max(0, v - a.get("procs", {}).get(k, 0)) / hz for k, v in z.get("procs", {}).items()}
                # CPU seconds over the run's window, per I/O at the run's rate.
                us = lambda secs: secs / (f["iops"] * wall) * 1e6  # noqa: E731
                ours = procs.get("ramster-shim", 0.0) + procs.get("ramster-server", 0.0) + procs.get("nbdkit", 0.0)
                per.append({"machine": us(busy), "shim": us(procs.get("ramster-shim", 0.0)),
                            "servers": us(procs.get("ramster-server", 0.0)), "nbdkit": us(procs.get("nbdkit", 0.0)),
                            "rest": us(busy - ours), "busy": busy / (wall * (z.get("cpus") or 1))})
            if not per:
                continue
            col = lambda k: fs(stat([p[k] for p in per]))  # noqa: E731
            target = col("nbdkit") if t == "nbdkit-memory" else f"shim {col('shim')} + servers {col('servers')}"
            rows.append(f"| {rw} | {t} | {col('machine')} | {target} | {col('rest')} | "
                        f"{fs(stat([100 * p['busy'] for p in per]))}% |")
    if rows:
        md.append("\n**CPU per I/O at QD32.** The CPU seconds of the machine and of each process over each QD32 "
                  "run (bench/thread_cpu.py before and after it), divided by the I/Os at the run's rate "
                  "(IOPS x the run's duration, fio's start and ramp included): microseconds of CPU per I/O. "
                  "With both CPUs busy, IOPS is about 2 CPUs / the machine's CPU per I/O, so these explain the "
                  "IOPS ratios above. The rest is fio (a new process each run), the kernel's work outside the "
                  "target's processes (softirq), and anything else on the machine.\n")
        md.append("| pattern | target | machine us/IO | target's processes us/IO | rest (fio, kernel, other) us/IO | busy |")
        md.append("|---|---|---|---|---|---|")
        md.extend(rows)


def onecpu(unpinned, runs):
    """QD1 randread with fio and the target's processes on one CPU (blockdev_onecpu-*.json),
    beside the unpinned figures of blockdev()."""
    figs = {}
    for path in glob.glob(os.path.join(RAW, "blockdev_onecpu-*-randread-qd1-run*.json")):
        m = re.match(r"blockdev_onecpu-(.+)-randread-qd1-run(\d+)\.json", os.path.basename(path))
        if m:
            figs[(m.group(1), int(m.group(2)))] = fio_fig(path)
    if not figs:
        return
    md.append("\n**QD1 randread with everything on one CPU.** fio and every process of the target "
              "(nbdkit; the shim and its 3 servers) pinned to the same CPU, so that each hop between them is a "
              "context switch there instead of a wakeup of the other, idle CPU (see the wakeup probe in the machine "
              "section). The p50 difference is what ramster's own path (shim -> server -> shim) adds to a read.\n")
    md.append("| target | p50 us, one CPU | p50 us, unpinned (above) | p50 / nbdkit, one CPU | ramster - nbdkit p50 us, one CPU |")
    md.append("|---|---|---|---|---|")
    rs = sorted({r for _, r in figs})
    base = [figs.get(("nbdkit-memory", r)) for r in rs]
    for t in ("nbdkit-memory", "ramster-r1"):
        fl = [figs.get((t, r)) for r in rs]
        p50 = stat([f["p50"] for f in fl if f])
        unp = stat([f["p50"] for f in (unpinned.get((t, "randread", 1, r)) for r in runs) if f])
        ratio = stat([f["p50"] / b["p50"] for f, b in zip(fl, base) if f and b and b["p50"]])
        diff = stat([f["p50"] - b["p50"] for f, b in zip(fl, base) if f and b])
        mine = t != "nbdkit-memory"
        md.append(f"| {t} | {fs(p50)} | {fs(unp)} | {fs(ratio) + 'x' if mine else '-'} | {fs(diff) if mine else '-'} |")
        if mine:
            summary.append(("3 blockdev", f"QD1 randread p50 us, {t}, all on one CPU", fs(p50),
                            "nbdkit " + fs(stat([b["p50"] for b in base if b])), fs(ratio) + "x", "-", "-"))


# ---------------------------------------------------------------- 4/5. swap + memory
BACKENDS = ("ram", "loop-file", "zram-lz4", "nbdkit", "nbdkit-relay", "ramster-local", "ramster-r1", "ramster-r2")


def swap():
    if not suite_header("swap", "4. Kernel swap end to end (swap_workload in a memory cgroup)"):
        return
    cfg = load(os.path.join(RAW, "swap-config.json")) or {}
    rows = []
    with open(os.path.join(RAW, "swap.csv")) as f:
        for row in csv.reader(f):
            if len(row) >= 5:
                rows.append({"b": row[0], "run": int(row[1]), "secs": float(row[2]) if row[2] else None, "ok": row[3]})
    md.append(f"Working set {cfg.get('mib')} MiB, cgroup v1 memory limit {cfg.get('limit_mib')} MiB "
              f"(none for `ram`), {cfg.get('passes')} passes x {cfg.get('ops')} ops, swappiness 100; "
              "one swap device at a time at priority 32767, backends round-robin within each run. "
              "Time is the workload's own (fill + passes + verify). nbdkit and the shims are attached the same way "
              "(deploy/local/swap.sh: nbdfuse over one NBD connection, then a loop device). "
              "Ratios per run against nbdkit-via-nbdfuse. `nbdkit-relay` is the same chain with the pages one "
              "TCP round trip away over loopback (nbdkit's nbd plugin relaying to `nbdkit memory` on 127.0.0.1): "
              "no ramster code, what stock parts pay on this machine for the hop ramster's peers add "
              "(a reference, not a tight floor: nbdkit's plugin does its own work per request, as the "
              "shim and server do theirs). The last column compares ramster with it.\n")
    foreign = [n for n in notes if "other swap devices" in n]
    md.append(("Other (foreign) swap devices were active during some backends: " + "; ".join(foreign) + "\n")
              if foreign else "`swapon --show` showed no other swap devices before any backend (checked before each; raw/swap-*.swapon-before).\n")
    runs = sorted({r["run"] for r in rows})
    t = {(r["b"], r["run"]): r["secs"] for r in rows if r["ok"] == "ok"}
    md.append("| backend | completion s | vs nbdkit | vs ram | runs ok | vs nbdkit-relay |")
    md.append("|---|---|---|---|---|---|")
    stats = {}
    for b in BACKENDS:
        s = stat([t.get((b, r)) for r in runs])
        stats[b] = s
        rn = stat([t[(b, r)] / t[("nbdkit", r)] for r in runs if (b, r) in t and ("nbdkit", r) in t])
        rr = stat([t[(b, r)] / t[("ram", r)] for r in runs if (b, r) in t and ("ram", r) in t and t[("ram", r)]])
        rl = stat([t[(b, r)] / t[("nbdkit-relay", r)] for r in runs
                   if (b, r) in t and ("nbdkit-relay", r) in t and t[("nbdkit-relay", r)]])
        okn = sum(1 for r in rows if r["b"] == b and r["ok"] == "ok")
        md.append(f"| {b} | {fs(s)} | {fs(rn)}x | {fs(rr)}x | {okn}/{len([r for r in rows if r['b'] == b])} | "
                  f"{fs(rl) + 'x' if b.startswith('ramster') else '-'} |")
        if b == "nbdkit-relay" and s:
            summary.append(("4 swap", "workload completion s, nbdkit-relay (nbdkit memory one TCP round trip "
                            "away, no ramster code: stock parts for the hop ramster's peers add)",
                            fs(s), "nbdkit " + fs(stat([t.get(('nbdkit', r)) for r in runs])), fs(rn) + "x", "-", "-"))
        if b == "ramster-local" and s:
            summary.append(("4 swap", "workload completion s, ramster-local (no peers: the shim's own path)",
                            fs(s), "nbdkit " + fs(stat([t.get(('nbdkit', r)) for r in runs])), fs(rn) + "x", "-", "-"))
        elif b.startswith("ramster"):
            summary.append(("4 swap", f"workload completion s, {b}", fs(s), "nbdkit " + fs(stat([t.get(('nbdkit', r)) for r in runs])),
                            fs(rn) + "x", "<= 1.25x" if b == "ramster-r1" else "-", verdict(rn, 1.25, False) if b == "ramster-r1" else "-"))
        if b == "ramster-r1" and s and rl:
            summary.append(("4 swap", "workload completion s, ramster-r1 against nbdkit-relay", fs(s),
                            "nbdkit-relay " + fs(stat([t.get(('nbdkit-relay', r)) for r in runs])),
                            fs(rl) + "x", "-", "-"))
    others = ", ".join(f"{b} {fs(stats[b])} s" for b in ("ram", "loop-file", "zram-lz4") if stats.get(b))
    summary.append(("4 swap", "other backends (completion s)", "-", others, "-", "-", "-"))
    # The shim's own time per READ (arrival to reply, over the whole run):
    # how much of each swap-in's wait is the shim and its peers.
    lat = []
    for b in ("ramster-local", "ramster-r1", "ramster-r2"):
        shim = [load(os.path.join(RAW, f"swap-{b}-run{r}.shim-stats.json")) or {} for r in runs]
        per = [st.get("nbd", {}).get("read_us") for st in shim]
        per = [p for p in per if p and p.get("count")]
        if per:
            p50, p90, p99 = (stat([p[k] for p in per]) for k in ("p50", "p90", "p99"))
            # Pages a READ found in the write-behind area (staged, or retained
            # after they went out): no round trip for those.
            hits = shim[0].get("write_behind", {}).get("read_hits", "-")
            lat.append(f"| {b} | {per[0]['count']} | {hits} | {fs(p50)} | {fs(p90)} | {fs(p99)} |")
            if b != "ramster-local":
                summary.append(("4 swap", f"shim time per READ p50 / p99 us (bucket bounds), {b}",
                                f"{fs(p50)} / {fs(p99)}", "-", "-", "-", "-"))
    if lat:
        md.append("\nThe shim's time per READ, from its arrival to its reply (the peer round trip "
                  "included), over each whole run; percentiles are upper bounds of histogram buckets "
                  "a quarter of a power of two wide:\n")
        md.append("| backend | READs (run 1) | pages read from the write-behind area (run 1) | p50 us | p90 us | p99 us |")
        md.append("|---|---|---|---|---|---|")
        md.extend(lat)
    swap_cpu(runs)
    if plt:
        fig, ax = plt.subplots(figsize=(8, 4))
        for i, b in enumerate(BACKENDS):
            s = stats.get(b)
            if s:
                ax.bar(i, s[0], yerr=[[s[0] - s[1]], [s[2] - s[0]]], capsize=4, color=f"C{i}")
                ax.text(i, s[0], f"{s[0]:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(BACKENDS)))
        ax.set_xticklabels(BACKENDS, rotation=20, fontsize=8)
        ax.set_ylabel("seconds (median, min-max)")
        ax.set_title(f"swap_workload {cfg.get('mib')} MiB in a {cfg.get('limit_mib')} MiB cgroup: completion time")
        md.append(f"\n![swap]({savefig(fig, 'swap_completion.png')})\n")
    memory(runs)


def swap_cpu(runs):
    """Where the CPU went during each backend's workload (bench/thread_cpu.py
    snapshots before and after it): the machine's busy share, and the CPU
    seconds of each named thread of the shim, the servers, nbdkit and nbdfuse."""
    rows = []
    for b in BACKENDS:
        per = []
        for r in runs:
            a = load(os.path.join(RAW, f"swap-{b}-run{r}.cpu-before.json"))
            z = load(os.path.join(RAW, f"swap-{b}-run{r}.cpu-after.json"))
            if not a or not z:
                continue
            hz = z.get("hz") or 100
            d = [y - x for x, y in zip(a["cpu"][:8], z["cpu"][:8])]
            total = sum(d)
            if total <= 0:
                continue
            busy = total - d[3] - d[4] - d[7]  # less idle, iowait and steal
            # A thread that ended in between, and one of its name that began, could
            # make a name's ticks fall: count that as none.
            threads = {k: max(0, v - a["threads"].get(k, 0)) / hz for k, v in z["threads"].items()}
            per.append({"wall": z["t"] - a["t"], "busy": busy / hz, "busy_share": busy / total,
                        "steal": d[7] / total, "cpus": z.get("cpus") or 1, "threads": threads})
        if not per:
            continue
        names = sorted({k for p in per for k in p["threads"]})
        med = {k: stat([p["threads"].get(k, 0.0) for p in per]) for k in names}
        busy = stat([p["busy"] for p in per])
        shown = [k for k in sorted(names, key=lambda k: -med[k][0]) if med[k][0] >= 0.01 * busy[0]]
        listed = stat([p["busy"] - sum(p["threads"].get(k, 0.0) for k in shown) for p in per])
        cells = ", ".join(f"{k} {med[k][0]:.2f}" for k in shown)
        rows.append(f"| {b} | {fs(stat([p['wall'] for p in per]))} | {fs(stat([100 * p['busy_share'] for p in per]))}% "
                    f"of {per[0]['cpus']} | {fs(stat([100 * p['steal'] for p in per]))}% | {fs(busy)} | "
                    f"{cells or '-'} | {fs(listed)} |")
    if rows:
        md.append("\nWhere the CPU went while the workload ran (bench/thread_cpu.py before and after it; "
                  "median of the runs): the machine's busy share (less idle, iowait and steal), the share the hypervisor gave "
                  "other guests (steal: a noisy neighbour shows there), its busy CPU seconds, the "
                  "CPU seconds of each thread of the backend's processes that used at least 1% of them "
                  "(process/thread name: the shim's and servers' threads name themselves), and the rest "
                  "(the workload, the kernel's reclaim, loop and softirq work, anything else on the machine):\n")
        md.append("| backend | window s | busy | steal | busy CPU s | CPU s by thread | rest CPU s |")
        md.append("|---|---|---|---|---|---|---|")
        md.extend(rows)


def samples(path):
    out = []
    for line in read(path).splitlines():
        try:
            out.append(json.loads(line))
        except Exception:
            pass
    return out


def memory(runs):
    md.append("\n## 5. Memory efficiency (same swap workload)\n")
    md.append("Sampled while the workload ran; the figures are from the sample with the most data stored "
              "(zram frees slots as soon as the workload exits). zram: `mm_stat` orig_data_size / mem_used_total. "
              "ramster: logical bytes = 4096 x the slots the shim holds (its tiers' slots plus its same-filled "
              "slots, as zram's orig_data_size counts same-filled pages); donor RAM = sum of the servers' ram_used_bytes, "
              "and the servers' RSS growth since the first sample, less what they gave back lazily (MADV_FREE: "
              "smaps_rollup LazyFree, which the kernel takes whenever it wants memory). With replicas 2, each logical "
              "page has two copies. The servers run with their default recompression (`--recompress-level=2`, "
              "`--recompress-age=1s`: a SCHED_IDLE thread re-encodes each LZ4 page that has stayed in RAM for 1 s "
              "once, with LZ4HC; see README); zram runs lz4 without its own recompression. The last column is what the servers had recompressed by the sample "
              "(pages, and the payload bytes that saved).\n")
    md.append("| backend | logical MiB | donor RAM MiB (account) | donor RSS growth MiB (LazyFree) | logical/donor (account) | logical/donor (RSS) | bytes per logical page (account) | shim RSS max MiB | recompressed pages (MiB saved) |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    MiB = 1048576
    zr = []
    for r in runs:
        ss = samples(os.path.join(RAW, f"swap-zram-lz4-run{r}-samples.jsonl"))
        ss = [s for s in ss if len(s.get("mm_stat", [])) >= 3]
        if ss:
            best = max(ss, key=lambda s: s["mm_stat"][0])
            orig, compr, used = best["mm_stat"][:3]
            if used:
                zr.append((orig, compr, used))
    zratio = stat([o / u for o, c, u in zr])
    if zr:
        o, c, u = sorted(zr)[len(zr) // 2]
        md.append(f"| zram-lz4 | {o / MiB:.1f} | {u / MiB:.1f} (compressed {c / MiB:.1f}) | - | {fs(zratio)} | - | "
                  f"{u / (o / 4096):.0f} | - | - |")
    for b in ("ramster-r1", "ramster-r2"):
        per = []
        for r in runs:
            ss = [s for s in samples(os.path.join(RAW, f"swap-{b}-run{r}-samples.jsonl")) if s.get("status") and s.get("shim")]
            if not ss:
                continue
            held_rss = lambda s: sum(s.get("server_rss", [])) - sum(s.get("server_lazyfree", []))
            base_rss = held_rss(ss[0])
            # slots held: the tiers' slots plus same-filled slots (kept in the slot map only)
            held = lambda s: sum(t.get("slots", 0) for t in s["shim"].get("tiers", [])) + s["shim"].get("slots_filled", 0)
            best = max(ss, key=held)
            nodes = [n for n in best["status"]["nodes"] if n.get("up")]
            used = sum(n.get("ram_used_bytes", 0) for n in nodes)
            logical = held(best) * 4096
            rss = held_rss(best) - base_rss
            lazy = sum(best.get("server_lazyfree", []))
            shim_rss = max(max(s.get("shim_rss", 0), s["shim"].get("rss_bytes", 0)) for s in ss)
            recompressed = sum(n.get("ops", {}).get("pages_recompressed", 0) for n in nodes)
            saved = sum(n.get("ops", {}).get("recompressed_bytes_saved", 0) for n in nodes)
            if logical and used:
                per.append({"logical": logical, "used": used, "rss": rss, "lazy": lazy, "shim_rss": shim_rss,
                            "slotmap": best["shim"].get("slot_map_bytes_per_slot"),
                            "recompressed": recompressed, "saved": saved})
        if not per:
            md.append(f"| {b} | n/a | | | | | | | |")
            continue
        ra = stat([p["logical"] / p["used"] for p in per])
        rr = stat([p["logical"] / p["rss"] for p in per if p["rss"] > 0])
        p = sorted(per, key=lambda p: p["logical"] / p["used"])[len(per) // 2]
        md.append(f"| {b} | {p['logical'] / MiB:.1f} | {p['used'] / MiB:.1f} | {p['rss'] / MiB:.1f} ({p['lazy'] / MiB:.1f}) | {fs(ra)} | {fs(rr)} | "
                  f"{p['used'] / (p['logical'] / 4096):.0f} | {p['shim_rss'] / MiB:.1f} | "
                  f"{p['recompressed']} ({p['saved'] / MiB:.1f}) |")
        if b == "ramster-r1":
            summary.append(("5 memory", "logical bytes / donor RAM (ram_used_bytes), replicas 1", fs(ra),
                            "zram " + fs(zratio), fs(stat([a / zratio[0] for a in [ra[0]]])) + "x" if ra and zratio else "n/a",
                            ">= zram", verdict(ra, zratio[0]) if ra and zratio else "n/a"))
            summary.append(("5 memory", "logical bytes / donor RSS growth (less LazyFree), replicas 1", fs(rr),
                            "zram " + fs(zratio), "-", ">= zram", verdict(rr, zratio[0]) if rr and zratio else "n/a"))
            summary.append(("5 memory", "shim RSS while swapping (max), MiB", f"{max(q['shim_rss'] for q in per) / MiB:.1f}",
                            "-", "-", "-", "-"))
    # slot map from client_bench
    sm = []
    sm64 = []
    for path in glob.glob(os.path.join(RAW, "scale-n*-run*.json")):
        d = load(path)
        if d:
            sm.append(d.get("slot_map_bytes_per_slot"))
            sm64.append(d.get("slot_map_bytes_per_slot_64g"))
    if sm64:
        s = stat(sm64)
        md.append(f"\nSlot map (client_bench): {fs(s)} bytes per slot for a 64 GiB device (RSS); "
                  f"{fs(stat(sm))} bytes per slot at the bench's small slot counts (fixed lock stripes included).\n")
        summary.append(("5 memory", "slot-map bytes per slot (64 GiB device)", fs(s), "-", "-", "<= 16", verdict(s, 16, False)))


# ---------------------------------------------------------------- 6. scale
def scale():
    if not suite_header("scale", "6. Scale: 1, 2, 4, 8 local servers (client_bench) and index overhead"):
        return
    figs = {}
    for path in glob.glob(os.path.join(RAW, "scale-n*-run*.json")):
        m = re.match(r"scale-n(\d+)-run(\d+)\.json", os.path.basename(path))
        d = load(path)
        if m and d:
            for c in d["configs"]:
                for op in ("store", "load"):
                    figs.setdefault((int(m.group(1)), c["replicas"], op), []).append(c[op])
    ns = sorted({k[0] for k in figs})
    md.append("client_bench: tier stack (cluster tier -> local file) against N local ramster-servers, 4 threads, "
              "one page per call; all servers and the client share this machine's cores, so more servers add "
              "CPU contention, not capacity. Median [min-max] over runs.\n")
    md.append("| servers | replicas | store pages/s | store p50 us | load pages/s | load p50 us |")
    md.append("|---|---|---|---|---|---|")
    for n in ns:
        for rep in (1, 2):
            s = figs.get((n, rep, "store"), [])
            l = figs.get((n, rep, "load"), [])
            md.append(f"| {n} | {rep} | {fs(stat([x['pages_per_s'] for x in s]))} | {fs(stat([x['p50_us'] for x in s]))} | "
                      f"{fs(stat([x['pages_per_s'] for x in l]))} | {fs(stat([x['p50_us'] for x in l]))} |")
    for n in ns:
        summary.append(("6 scale", f"{n} server(s), replicas 1: store / load pages/s",
                        f"{fs(stat([x['pages_per_s'] for x in figs.get((n, 1, 'store'), [])]))} / "
                        f"{fs(stat([x['pages_per_s'] for x in figs.get((n, 1, 'load'), [])]))}", "-", "-", "-", "-"))
    if plt and ns:
        fig, ax = plt.subplots(figsize=(8, 4))
        k = 0
        for rep in (1, 2):
            for op in ("store", "load"):
                ss = [stat([x["pages_per_s"] for x in figs.get((n, rep, op), [])]) for n in ns]
                ax.errorbar(ns, [s[0] for s in ss], yerr=[[s[0] - s[1] for s in ss], [s[2] - s[0] for s in ss]],
                            marker="o", capsize=3, label=f"{op}, replicas {rep}", color=f"C{k}")
                k += 1
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_xlabel("local servers")
        ax.set_ylabel("pages/s")
        ax.set_title("client_bench pages/s per configuration")
        ax.legend()
        md.append(f"\n![scale]({savefig(fig, 'scale.png')})\n")
    md.append("\nIndex overhead: the first fill of a fresh ramster-server (server_bench --systems=ramster, "
              "recompression off as in suite 2), bytes per page beyond the compressed payload.\n")
    md.append("| pages | fill pages/s | RSS delta B/page | ram_used_bytes B/page | payload B/page | RSS overhead B/page | account overhead B/page | RSS slope overhead B/page |")
    md.append("|---|---|---|---|---|---|---|---|")
    for path in sorted(glob.glob(os.path.join(RAW, "index-*.json")), key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[0])):
        d = load(path)
        if not d or "ramster" not in d.get("memory", {}):
            md.append(f"| {os.path.basename(path)} | failed | | | | | | |")
            continue
        m = d["memory"]["ramster"]
        ff = m.get("first_fill_store", {}).get("pages_per_s", {}).get("median")
        md.append(f"| {m['pages']} | {fnum(ff)} | {m['rss_per_page']:.0f} | {m['accounted_per_page']:.0f} | "
                  f"{m['payload_per_page']:.0f} | {m['rss_overhead_per_page']:.0f} | {m['accounted_overhead_per_page']:.0f} | "
                  + (f"{m['slope_overhead_per_page']:.0f} |" if "slope_overhead_per_page" in m else "- |"))
        summary.append(("6 scale", f"index overhead at {m['pages']} pages (RSS / account), B/page",
                        f"{m['rss_overhead_per_page']:.0f} / {m['accounted_overhead_per_page']:.0f}", "-", "-", "-", "-"))
    for n in notes:
        if "server_bench with" in n:
            md.append(f"\n{n}\n")


codec()
store()
blockdev()
swap()
scale()

def wakeup_line():
    w = load(os.path.join(RAW, "wakeup.json"))
    if not w:
        return "- Wakeup cost: not measured (bench/wakeup_probe did not run or failed)."
    def us(k):
        return f"{w[k]:.1f} us" if k in w else "n/a"
    return ("- Wakeup cost (bench/wakeup_probe: two threads passing a byte over pipes, median of "
            f"{w.get('rounds')} x {w.get('round_trips')} round trips, two wakeups each): {us('same_cpu_us')} per round trip "
            f"with both threads on one CPU, {us('other_cpu_us')} on two CPUs, {us('unpinned_us')} where the scheduler puts them. "
            "Every hop between processes pays about half a round trip: the swap path's hops (kernel, nbdfuse, shim, server) "
            "and fio's to the NBD server.")


def wire_line():
    w = load(os.path.join(RAW, "wire.json"))
    if not w:
        return "- Wire floor: not measured (bench/wire_probe did not run or failed)."
    def us(k):
        return f"{w[k]:.1f} us" if k in w else "n/a"
    return ("- Wire floor (bench/wire_probe: a 64-byte request and a 2 KiB reply, about one compressed page, over loopback, "
            f"median of {w.get('rounds')} x {w.get('round_trips')} round trips): raw TCP {us('tcp_same_cpu_us')} per round trip "
            f"with both ends on one CPU, {us('tcp_unpinned_us')} unpinned; one gRPC stream (ByteBuffers, each side on a "
            f"completion queue, as ramster's page streams) {us('grpc_same_cpu_us')} on one CPU, {us('grpc_unpinned_us')} unpinned. "
            "On one CPU the time is the CPU both ends spend: what the page path's wire costs before any of ramster's work.")


# ---------------------------------------------------------------- assemble
h = meta.get("host", {})
v = meta.get("versions", {})
rm = meta.get("ramster", {})
head = [f"# ramster benchmark report ({meta.get('mode', '?')} mode, {meta.get('date', '?')})\n",
        "Generated by `./ramster bench" + (" --quick" if meta.get("mode") == "quick" else "") + "` "
        "(bench/run.sh, bench/suites/*.sh, bench/report.py). Numbers are read from raw/ by report.py, never edited.\n",
        "## Machine and configuration\n",
        f"- Host: {h.get('os')}, kernel {h.get('kernel')}, {h.get('cpu')}, {h.get('cores')} cores, {h.get('mem_total')} RAM; "
        f"load average at start {h.get('loadavg_start')}, at end {end.get('loadavg_end', '?')}. "
        "Other people were using the machine at the same time; every ratio compares figures measured back to back.",
        f"- ramster commit {rm.get('commit')} ({rm.get('dirty_files')} files modified in the work tree), {rm.get('build')}.",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        wakeup_line(),
        wire_line(),
        f"- Runs per figure: {RUNS}; total bench time {end.get('total_seconds', '?')} s.",
        "- `swapon --show` at start: " + (("`" + meta.get("swapon_show_start").replace("\n", "; ") + "`") if meta.get("swapon_show_start") else "no swap devices") + ".",
        "\n## Summary\n"]
sumtab = ["| suite | metric | ramster | baseline | ratio | goal | verdict |", "|---|---|---|---|---|---|---|"]
sumtab += ["| " + " | ".join(r) + " |" for r in summary]
sumtab.append(f"\nMedian [min-max] over {RUNS} run(s); machine: {h.get('cpu')}, {h.get('cores')} cores; "
              f"{meta.get('mode')} mode, {meta.get('date', '?')[:10]}, commit {rm.get('commit')}.")
head += sumtab
st_lines = ["\n## Suite status\n", "| suite | status | reason | seconds |", "|---|---|---|---|"]
st_lines += [f"| {k} | {s['state']} | {s['reason']} | {s['seconds']} |" for k, s in status.items()]
tail = []
if notes:
    tail += ["\n## Notes from the run\n"] + [f"- {n}" for n in notes]
tail += ["\n## Exact commands\n", "Every command that produced a number, in order (paths as on this machine):\n", "```"]
tail += read(os.path.join(RAW, "commands.txt")).splitlines()
tail += ["```"]
if plt is None:
    tail += [f"\nNo plots: matplotlib could not be imported ({PLOT_ERR})."]
with open(os.path.join(OUT, "report.md"), "w") as f:
    f.write("\n".join(head + st_lines + md + tail) + "\n")
with open(os.path.join(OUT, "summary.md"), "w") as f:
    f.write("\n".join(sumtab) + "\n")
print(f"report.md, summary.md, {len(plots)} plots in {OUT}")
