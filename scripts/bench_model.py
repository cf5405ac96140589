#!/usr/bin/env python3
"""make bench: benchmark the golden model's flow table and rule classifier.

Writes ``<out>/model.json`` and PNG plots next to it, prints a summary table
to stdout and progress lines to stderr.

Flow table (cuckoo, 8-slot signature+pointer buckets)
    For each seed, a fresh table is filled with random distinct FlowKeys until
    the first :class:`TableFull`, with ``max_moves`` 8 and the stash *disabled*
    (``use_stash=False``), so the load reached is the buckets' own: live
    entries in buckets / (n_buckets * 8).  Every insert's load (before the
    insert), cuckoo moves, line writes (``len(op.writes)``) and lines read
    (``mem.reads`` delta) is recorded.  At every 2 % of load (and at 95 %) the
    fill pauses for lookups of a sample of present keys (hits) and of keys
    never inserted (misses), counting lines read (``mem.reads`` delta); every
    answer is checked.  Figures at 50/90/95 % average the inserts whose load
    lies in a +-1 % window around the point; lookups are the checkpoint at the
    point.  Values are per-seed means, then the mean over seeds.

    The image keeps the default stash line (``n_stash`` 1) even though inserts
    never use it: the device still reads it on every miss, so a miss costs
    2 bucket lines + 1 stash line (+ any signature false hit).

Model speed
    ``inserts_per_s``: wall clock of the ``insert`` calls of the fills while the
    load is below 90 %; ``lookups_per_s``: a timed pass of lookups of present
    keys (packed 45-byte keys) at the 90 % checkpoint.  Pure-Python model
    speed on this machine, not a device figure.

Classification
    ``build_rules_for_bench(n, seed)`` installed in a RuleTable; keys from
    ``keys_for_bench``.  The fast classifier (``RuleTable.classify``) and the
    linear scan (``linear_classify`` over ``table.rules()``) are timed on the
    same keys (the fast one repeated for a measurable time), and every timed
    answer of the fast classifier is compared with the linear scan's: any
    disagreement aborts the benchmark without writing a report.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

from cxlnic.benchutil import bench_main, loadavg, log, machine_meta
from cxlnic.config import NicConfig
from cxlnic.hdl.layouts import SLOTS_PER_BUCKET
from cxlnic.model.flowtable import FENTRY, FKEY, FlowTable, TableFull
from cxlnic.model.match import linear_classify
from cxlnic.model.memory import BytearrayMemory, format_image
from cxlnic.model.rules import RuleTable, build_rules_for_bench, keys_for_bench

ROOT = Path(__file__).resolve().parent.parent

MAX_MOVES = 8
POINTS = (0.50, 0.90, 0.95)     # load points of the per-insert/per-lookup figures
HALF_WINDOW = 0.01              # inserts with load in [p - 0.01, p + 0.01]
BIN = 0.02                      # load bin of the curves (and lookup checkpoint spacing)
SPEED_LOAD = 0.90               # inserts_per_s: inserts below this load; lookups_per_s: at it

TARGET_MAX_LOAD = 0.95
TARGET_WRITES_90 = 1.3
TARGET_RATIO_10K = 20.0

WRITES_NOTE = (
    "Not reachable by this table format, by construction: buckets hold {sig16, entry31} slots that point to "
    "a separate 64-byte entry line (a FlowKey alone is 45 bytes), so every insert writes the new entry's own "
    "line and then at least the bucket line that publishes it (plus one more bucket line per cuckoo move): "
    "2 line writes per insert is the floor. A 1.3 target presumes a format in which a move-free insert is "
    "a single line write (entries inline in their bucket).")





class ClassifierMismatch(AssertionError):
    """The fast classifier and the linear scan disagree: no speed may be reported."""


# -- flow table ----------------------------------------------------------------------------------------------
def new_flow_table(n_buckets: int, n_stash: int) -> tuple[BytearrayMemory, FlowTable]:
    cfg = NicConfig(n_buckets=n_buckets, n_stash=n_stash, n_rules=16, cam_entries=16, n_actions=16, n_tenants=1)
    mem = BytearrayMemory(cfg.image_lines)
    mem.apply(format_image(cfg))
    return mem, FlowTable(mem, max_moves=MAX_MOVES, use_stash=False)


def random_flow_key(rng: random.Random):
    """A random FlowKey: random tenant/port/ports/addresses, 85 % IPv4 (mapped), 15 % IPv6, TCP or UDP."""
    v6 = rng.random() < 0.15
    if v6:
        src, dst = rng.getrandbits(128), rng.getrandbits(128)
    else:
        src, dst = (0xFFFF << 32) | rng.getrandbits(32), (0xFFFF << 32) | rng.getrandbits(32)
    return FKEY.new(tenant=rng.getrandbits(24), in_port=rng.getrandbits(8), eth_type=0x86DD if v6 else 0x0800,
                    ip_proto=rng.choice((6, 17)), src_port=rng.getrandbits(16), dst_port=rng.getrandbits(16),
                    src_ip=src, dst_ip=dst)


def fresh_key(rng: random.Random, seen: set[bytes]):
    while True:
        k = random_flow_key(rng)
        kb = FKEY.to_bytes(k)
        if kb not in seen:
            seen.add(kb)
            return k, kb


def checkpoints(samples: int, point_samples: int) -> list[tuple[float, int]]:
    """``(load, lookups of each kind)``: every BIN of load, and the POINTS with a larger sample."""
    cps = {round(i * BIN, 6): samples for i in range(1, int(round(1 / BIN)))}
    for p in POINTS:
        cps[p] = point_samples
    return sorted(cps.items())


def fill_run(seed: int, n_buckets: int, n_stash: int, samples: int, point_samples: int,
             timed_lookups: int) -> dict:
    """Fill one table to the first TableFull, recording every insert and the checkpoint lookups."""
    mem, t = new_flow_table(n_buckets, n_stash)
    rng = random.Random(seed)
    lrng = random.Random(seed + 0x5EED)        # lookup sampling and miss keys: independent of the key stream
    seen: set[bytes] = set()
    present: list[bytes] = []
    index: list[int] = []
    loads, moves, writes, reads = [], [], [], []
    lookups = []                               # (nominal load, actual load, hit reads/lookup, miss reads/lookup)
    cps = checkpoints(samples, point_samples)
    nxt = 0
    ins_time = 0.0
    ins_n = 0
    look_time = 0.0
    look_n = 0
    perf = time.perf_counter
    full_reason = ""

    while True:
        load = t.load
        while nxt < len(cps) and load >= cps[nxt][0]:
            cp, n = cps[nxt]
            nxt += 1
            hits = lrng.sample(range(len(present)), min(n, len(present)))
            r0 = mem.reads
            for i in hits:
                got = t.lookup(present[i])
                if got != index[i]:
                    raise AssertionError(f"seed {seed}: lookup of present key {i} returned {got}, "
                                         f"expected entry {index[i]} (load {load:.4f})")
            hit_reads = (mem.reads - r0) / len(hits)
            misses = [fresh_key(lrng, seen)[1] for _ in range(n)]
            r0 = mem.reads
            for kb in misses:
                if t.lookup(kb) is not None:
                    raise AssertionError(f"seed {seed}: lookup of a key never inserted hit (load {load:.4f})")
            miss_reads = (mem.reads - r0) / len(misses)
            lookups.append((cp, load, hit_reads, miss_reads))
            if cp == SPEED_LOAD:
                sample = lrng.sample(present, min(timed_lookups, len(present)))
                lookup = t.lookup
                t0 = perf()
                for kb in sample:
                    lookup(kb)
                look_time += perf() - t0
                look_n += len(sample)
        k, kb = fresh_key(rng, seen)
        entry = FENTRY.new(key=k, action=1)
        r0 = mem.reads
        t0 = perf()
        try:
            op = t.insert(entry)
        except TableFull as e:
            full_reason = "no cuckoo path" if "cuckoo path" in str(e) else "entry pool exhausted"
            break
        dt = perf() - t0
        if load < SPEED_LOAD:
            ins_time += dt
            ins_n += 1
        loads.append(load)
        moves.append(op.moves)
        writes.append(len(op.writes))
        reads.append(mem.reads - r0)
        present.append(kb)
        index.append(op.index)

    if len(t) != len(present) or t.n_stashed:
        raise AssertionError(f"seed {seed}: table holds {len(t)} entries ({t.n_stashed} stashed), "
                             f"{len(present)} inserted")
    t.check()
    return {
        "seed": seed, "max_load": t.load, "inserted": len(present), "full_reason": full_reason,
        "loads": np.array(loads), "moves": np.array(moves), "writes": np.array(writes), "reads": np.array(reads),
        "lookups": lookups, "ins_time": ins_time, "ins_n": ins_n, "look_time": look_time, "look_n": look_n,
    }


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def point_figures(runs: list[dict]) -> dict:
    out = {}
    for p in POINTS:
        lo, hi = round(p - HALF_WINDOW, 6), round(p + HALF_WINDOW, 6)
        per_seed = []
        for r in runs:
            sel = (r["loads"] >= lo) & (r["loads"] <= hi)
            n = int(sel.sum())
            look = next((lk for lk in r["lookups"] if lk[0] == p), None)
            per_seed.append({
                "seed": r["seed"], "n_inserts": n,
                "moves_per_insert": float(r["moves"][sel].mean()) if n else None,
                "writes_per_insert": float(r["writes"][sel].mean()) if n else None,
                "reads_per_insert": float(r["reads"][sel].mean()) if n else None,
                "max_moves": int(r["moves"][sel].max()) if n else None,
                "path_fraction": float((r["moves"][sel] > 0).mean()) if n else None,
                "lookup_load": look[1] if look else None,
                "lookup_reads_hit": look[2] if look else None,
                "lookup_reads_miss": look[3] if look else None,
            })
        fig = {"window": [lo, hi], "n_inserts": sum(s["n_inserts"] for s in per_seed),
               "seeds_reaching": sum(s["n_inserts"] > 0 for s in per_seed)}
        for name in ("moves_per_insert", "writes_per_insert", "reads_per_insert", "path_fraction",
                     "lookup_reads_hit", "lookup_reads_miss"):
            fig[name] = _mean(s[name] for s in per_seed)
        fig["max_moves"] = max((s["max_moves"] for s in per_seed if s["max_moves"] is not None), default=None)
        fig["per_seed"] = per_seed
        out[f"{p:.2f}"] = fig
    return out


def curves(runs: list[dict], max_load: float) -> dict:
    """Per-insert means in BIN-wide load bins (all seeds pooled) and per-checkpoint lookup means."""
    nb = int(np.ceil(max_load / BIN)) + 1
    loads = np.concatenate([r["loads"] for r in runs])
    b = np.minimum((loads / BIN + 1e-9).astype(int), nb - 1)
    cnt = np.bincount(b, minlength=nb)
    keep = cnt > 0
    out = {"bin_width": BIN, "load": [round((i + 0.5) * BIN, 4) for i in np.flatnonzero(keep)],
           "n_inserts": [int(c) for c in cnt[keep]]}
    for name in ("moves", "writes", "reads"):
        s = np.bincount(b, weights=np.concatenate([r[name] for r in runs]), minlength=nb)
        mx = np.zeros(nb)
        np.maximum.at(mx, b, np.concatenate([r[name] for r in runs]))
        out[f"{name}_per_insert"] = [round(float(v), 4) for v in (s[keep] / cnt[keep])]
        out[f"{name}_per_insert_max"] = [int(v) for v in mx[keep]]
    by_cp: dict[float, list] = {}
    for r in runs:
        for cp, load, hit, miss in r["lookups"]:
            by_cp.setdefault(cp, []).append((load, hit, miss))
    cps = sorted(by_cp)
    out["lookup_load"] = cps
    out["lookup_seeds"] = [len(by_cp[c]) for c in cps]
    out["lookup_reads_hit"] = [round(float(np.mean([v[1] for v in by_cp[c]])), 4) for c in cps]
    out["lookup_reads_miss"] = [round(float(np.mean([v[2] for v in by_cp[c]])), 4) for c in cps]
    return out


def scale_run(seed: int, n_buckets: int, n_stash: int) -> float:
    """Max load of one plain fill (no instrumentation) of a table of ``n_buckets``."""
    _mem, t = new_flow_table(n_buckets, n_stash)
    rng = random.Random(seed)
    seen: set[bytes] = set()
    try:
        while True:
            t.insert(FENTRY.new(key=fresh_key(rng, seen)[0], action=1))
    except TableFull:
        pass
    if t.n_stashed:
        raise AssertionError("stash used with use_stash=False")
    return t.load


# -- classification ------------------------------------------------------------------------------------------
def classify_run(n_rules: int, seed: int, n_keys: int, min_time: float) -> dict:
    cfg = NicConfig(n_rules=n_rules, cam_entries=min(64, n_rules), n_actions=256, n_buckets=2, n_stash=0,
                    n_tenants=8)
    mem = BytearrayMemory(cfg.image_lines)
    mem.apply(format_image(cfg))
    table = RuleTable(mem)
    rules = build_rules_for_bench(n_rules, seed)
    table.install(rules)
    if len(table) != n_rules:
        raise AssertionError(f"{len(table)} rules installed, {n_rules} built")
    keys = keys_for_bench(rules, n_keys, seed=seed + 1000)
    recs = table.rules()
    perf = time.perf_counter

    t0 = perf()
    linear = [linear_classify(recs, k) for k in keys]
    lin_time = perf() - t0

    classify = table.classify
    fast_time = 0.0
    rounds = 0
    while rounds < 3 or fast_time < min_time:
        t0 = perf()
        fast = [classify(k) for k in keys]
        fast_time += perf() - t0
        rounds += 1
        if fast != linear:
            bad = [i for i, (a, b) in enumerate(zip(fast, linear, strict=True)) if a != b]
            raise ClassifierMismatch(
                f"{n_rules} rules, seed {seed}: RuleTable.classify disagrees with linear_classify on "
                f"{len(bad)} of {len(keys)} keys (first: key {bad[0]}: fast {fast[bad[0]]}, "
                f"linear {linear[bad[0]]}); refusing to report a speed")
    fast_pps = rounds * len(keys) / fast_time
    lin_pps = len(keys) / lin_time
    return {
        "seed": seed, "n_keys": len(keys), "fast_rounds": rounds, "fast_s": fast_time, "linear_s": lin_time,
        "fast_pps": fast_pps, "linear_pps": lin_pps, "ratio": fast_pps / lin_pps, "n_groups": table.n_groups,
        "hits": sum(a is not None for a in linear), "distinct_rules_hit": len({a for a in linear if a is not None}),
    }


def linear_keys(n_rules: int, cap: int) -> int:
    """Keys timed per rule set: ~2e7 rule scans' worth, between 300 and ``cap``."""
    return max(300, min(cap, 20_000_000 // n_rules))


# -- report --------------------------------------------------------------------------------------------------


def plot(out: Path, cur: dict, max_load: float, n_buckets: int, n_seeds: int) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [100 * v for v in cur["load"]]
    title = f"{n_buckets} buckets x 8 slots, max_moves {MAX_MOVES}, no stash, {n_seeds} seeds"

    def finish(fig, ax, name, ylabel, legend="upper left"):
        for p in POINTS:
            ax.axvline(100 * p, color="0.85", lw=0.8, zorder=0)
        ax.axvline(100 * max_load, color="tab:red", ls=":", lw=1, label=f"mean max load {max_load:.2%}")
        ax.set_xlabel("load before the operation (% of bucket slots)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc=legend)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        return name

    names = []
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, cur["moves_per_insert"], marker=".", label=f"mean moves per insert ({100 * BIN:g} % bins)")
    ax.set_yscale("symlog", linthresh=0.1)
    names.append(finish(fig, ax, "flow_moves_vs_load.png", "cuckoo moves per insert"))

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, cur["writes_per_insert"], marker=".", label="mean line writes per insert")
    ax.axhline(2, color="0.4", ls="--", lw=1, label="floor: entry line + publishing bucket line")
    ax.axhline(TARGET_WRITES_90, color="tab:orange", ls="--", lw=1, label=f"issue target {TARGET_WRITES_90}")
    ax.set_ylim(0, max(3.0, max(cur["writes_per_insert"]) * 1.1))
    names.append(finish(fig, ax, "flow_writes_vs_load.png", "64-byte line writes per insert"))

    fig, ax = plt.subplots(figsize=(7, 4))
    lx = [100 * v for v in cur["lookup_load"]]
    ax.plot(lx, cur["lookup_reads_hit"], marker=".", label="hit (present key)")
    ax.plot(lx, cur["lookup_reads_miss"], marker=".", label="miss (key never inserted)")
    ax.set_ylim(0, max(cur["lookup_reads_miss"] + cur["lookup_reads_hit"]) * 1.15)
    names.append(finish(fig, ax, "flow_lookup_reads_vs_load.png", "64-byte lines read per lookup", "lower right"))

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, cur["reads_per_insert"], marker=".", label="mean lines read per insert (incl. path search)")
    ax.set_yscale("log")
    names.append(finish(fig, ax, "flow_insert_reads_vs_load.png", "64-byte lines read per insert"))
    return names


def fmt(v, spec=".3f") -> str:
    return "-" if v is None else format(v, spec)


def summary(rep: dict) -> str:
    c = rep["cuckoo"]
    lines = [
        f"cxlnic model benchmark ({rep['meta']['runtime_s']:.1f} s, commit {rep['meta']['git_commit'][:12]})",
        f"cuckoo: {c['n_buckets']} buckets x 8, max_moves {c['max_moves']}, stash off, seeds {c['seeds']}",
        f"  max load  mean {c['max_load']:.4f}  min {c['max_load_min']:.4f}  max {c['max_load_max']:.4f}",
    ]
    for s in c.get("max_load_by_size", []):
        lines.append(f"  max load at {s['n_buckets']} buckets ({len(s['seeds'])} seeds): mean {s['mean']:.4f}, "
                     f"min {s['min']:.4f}")
    lines.append(f"  {'load':>6} {'moves/ins':>10} {'writes/ins':>11} {'reads/ins':>10} "
                 f"{'reads/hit':>10} {'reads/miss':>11} {'inserts':>8}")
    for p, f in c["at_load"].items():
        lines.append(f"  {p:>6} {fmt(f['moves_per_insert']):>10} {fmt(f['writes_per_insert']):>11} "
                     f"{fmt(f['reads_per_insert']):>10} {fmt(f['lookup_reads_hit']):>10} "
                     f"{fmt(f['lookup_reads_miss']):>11} {f['n_inserts']:>8}")
    t = rep["throughput"]
    lines.append(f"model speed: {t['inserts_per_s']:,.0f} inserts/s, {t['lookups_per_s']:,.0f} lookups/s")
    lines.append(f"classification: {'rules':>6} {'groups':>7} {'fast pkt/s':>11} {'linear pkt/s':>13} {'ratio':>7}")
    for e in rep["classification"]:
        lines.append(f"                {e['n_rules']:>6} {e['n_groups']:>7.0f} {e['fast_pps']:>11,.0f} "
                     f"{e['linear_pps']:>13,.0f} {e['ratio']:>7.1f}")
    lines.append("targets:" + (" (--quick sizes: not an evaluation)" if rep["meta"]["quick"] else ""))
    for name, tg in rep["targets"].items():
        lines.append(f"  {name:<32} {tg['target']:<26} value {fmt(tg['value'], '.4g'):>8}  "
                     f"{'MET' if tg['met'] else 'NOT MET'}")
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("build/bench"), help="output folder (default build/bench)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per figure (default 5; --quick: 2)")
    ap.add_argument("--buckets", type=int, default=None, help="flow table buckets (default 4096; --quick: 256)")
    ap.add_argument("--scale-buckets", type=str, default=None,
                    help="comma list of larger table sizes for a plain max-load fill (default 16384; "
                         "--quick: none; '' for none)")
    ap.add_argument("--scale-seeds", type=int, default=3, help="seeds per --scale-buckets size (default 3)")
    ap.add_argument("--rules", type=str, default=None,
                    help="comma list of rule-set sizes to classify (default 1000,10000; --quick: 100,400)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    a = ap.parse_args(argv)
    q = a.quick
    a.seeds = a.seeds if a.seeds is not None else (2 if q else 5)
    a.buckets = a.buckets if a.buckets is not None else (256 if q else 4096)
    scale = a.scale_buckets if a.scale_buckets is not None else ("" if q else "16384")
    a.scale_buckets = [int(s) for s in scale.split(",") if s.strip()]
    a.rules = [int(s) for s in (a.rules or ("100,400" if q else "1000,10000")).split(",") if s.strip()]
    if a.seeds < 1 or a.buckets < 2 or a.buckets & (a.buckets - 1):
        ap.error("--seeds must be >= 1 and --buckets a power of two >= 2")
    for b in a.scale_buckets:
        if b < 2 or b & (b - 1):
            ap.error(f"--scale-buckets {b}: not a power of two >= 2")
    a.samples = 16 if q else 256           # lookups of each kind per 2 % checkpoint
    a.point_samples = 64 if q else 2000    # ... at the 50/90/95 % points
    a.timed_lookups = 500 if q else 20000
    a.key_cap = 150 if q else 5000
    a.min_time = 0.02 if q else 0.3
    return a


def run(a) -> dict:
    seeds = list(range(1, a.seeds + 1))
    n_stash = 1
    load_start = loadavg()

    runs = []
    for s in seeds:
        log(f"flow table fill: {a.buckets} buckets, seed {s} ({len(runs) + 1}/{len(seeds)})")
        r = fill_run(s, a.buckets, n_stash, a.samples, a.point_samples, a.timed_lookups)
        log(f"  seed {s}: {r['inserted']} inserted, max load {r['max_load']:.4f} ({r['full_reason']})")
        runs.append(r)
    ml = [r["max_load"] for r in runs]
    max_load = float(np.mean(ml))
    cur = curves(runs, max(ml))
    by_size = []
    for nb in a.scale_buckets:
        sl = []
        t0 = time.perf_counter()
        for s in seeds[:a.scale_seeds]:
            log(f"max-load fill: {nb} buckets, seed {s}")
            sl.append(scale_run(s, nb, n_stash))
            log(f"  seed {s}: max load {sl[-1]:.4f}")
        by_size.append({"n_buckets": nb, "seeds": seeds[:a.scale_seeds], "max_load_per_seed": sl,
                        "mean": float(np.mean(sl)), "min": min(sl), "max": max(sl),
                        "seconds": time.perf_counter() - t0})
    cuckoo = {
        "n_buckets": a.buckets, "slots": a.buckets * SLOTS_PER_BUCKET, "n_stash": n_stash, "use_stash": False,
        "max_moves": MAX_MOVES, "seeds": seeds,
        "definition": "live entries in buckets / (n_buckets * 8) at the first TableFull inserting random "
                      "distinct FlowKeys; stash disabled",
        "max_load": max_load, "max_load_per_seed": ml, "max_load_min": min(ml), "max_load_max": max(ml),
        "inserted_per_seed": [r["inserted"] for r in runs], "full_reason": [r["full_reason"] for r in runs],
        "max_load_by_size": [{"n_buckets": a.buckets, "seeds": seeds, "max_load_per_seed": ml, "mean": max_load,
                              "min": min(ml), "max": max(ml)}] + by_size,
        "at_load": point_figures(runs),
        "curves": cur,
    }
    ins_n, ins_t = sum(r["ins_n"] for r in runs), sum(r["ins_time"] for r in runs)
    look_n, look_t = sum(r["look_n"] for r in runs), sum(r["look_time"] for r in runs)
    throughput = {
        "inserts_per_s": ins_n / ins_t, "lookups_per_s": look_n / look_t,
        "inserts_timed": ins_n, "lookups_timed": look_n, "fill_to_load": SPEED_LOAD,
        "definition": f"wall clock of FlowTable.insert calls while load < {SPEED_LOAD} (fills above), and of "
                      f"FlowTable.lookup of present keys (packed bytes) at load {SPEED_LOAD}; all seeds pooled",
    }

    classification = []
    for n in a.rules:
        nk = linear_keys(n, a.key_cap)
        per_seed = []
        for s in seeds:
            log(f"classification: {n} rules, seed {s}, {nk} keys (linear scan and fast classifier)")
            per_seed.append(classify_run(n, s, nk, a.min_time))
        fast_pps = sum(p["n_keys"] * p["fast_rounds"] for p in per_seed) / sum(p["fast_s"] for p in per_seed)
        lin_pps = sum(p["n_keys"] for p in per_seed) / sum(p["linear_s"] for p in per_seed)
        classification.append({
            "n_rules": n, "keys_per_seed": nk, "seeds": seeds, "fast_pps": fast_pps, "linear_pps": lin_pps,
            "ratio": fast_pps / lin_pps, "ratio_per_seed": [p["ratio"] for p in per_seed],
            "n_groups": float(np.mean([p["n_groups"] for p in per_seed])),
            "verified_keys": sum(p["n_keys"] for p in per_seed), "per_seed": per_seed,
        })
    log("plots")
    plots = plot(a.out, cur, max_load, a.buckets, len(seeds))

    w90 = cuckoo["at_load"]["0.90"]["writes_per_insert"]
    big = max(classification, key=lambda e: e["n_rules"]) if classification else None
    targets = {
        "cuckoo.max_load": {
            "target": f">= {TARGET_MAX_LOAD} (max_moves {MAX_MOVES})", "threshold": TARGET_MAX_LOAD,
            "value": max_load, "min_over_seeds": min(ml), "met": max_load >= TARGET_MAX_LOAD,
            "met_every_seed": min(ml) >= TARGET_MAX_LOAD, "n_buckets": a.buckets, "max_moves": MAX_MOVES},
        "writes_per_insert@90%": {
            "target": f"<= {TARGET_WRITES_90}", "threshold": TARGET_WRITES_90, "value": w90,
            "met": w90 is not None and w90 <= TARGET_WRITES_90, "note": WRITES_NOTE},
        "classification.ratio@10k": {
            "target": f">= {TARGET_RATIO_10K:g} (fast/linear)", "threshold": TARGET_RATIO_10K,
            "value": big["ratio"] if big else None, "n_rules": big["n_rules"] if big else None,
            "met": bool(big) and big["n_rules"] >= 10000 and big["ratio"] >= TARGET_RATIO_10K},
    }
    if a.quick:
        for tg in targets.values():
            tg["note_quick"] = "--quick sizes: not the issue's sizes, not an evaluation of the target"

    meta = {
        **machine_meta(load_start),
        "numpy": np.__version__,
        "quick": a.quick,
        "parameters": {
            "seeds": seeds, "n_buckets": a.buckets, "slots_per_bucket": SLOTS_PER_BUCKET, "n_stash": n_stash,
            "use_stash": False, "max_moves": MAX_MOVES, "points": list(POINTS), "window_half_width": HALF_WINDOW,
            "bin_width": BIN, "lookups_per_checkpoint": a.samples, "lookups_per_point": a.point_samples,
            "timed_lookups_per_seed": a.timed_lookups, "scale_buckets": a.scale_buckets,
            "scale_seeds": a.scale_seeds, "rule_sizes": a.rules, "classify_min_time_s": a.min_time,
            "flow_keys": "random distinct FlowKeys: random 24-bit tenant, 8-bit in_port, ports; 85 % IPv4 "
                         "(random mapped addresses), 15 % IPv6 (random 128-bit); TCP or UDP",
            "rule_seed": "build_rules_for_bench(n, seed); keys_for_bench(rules, k, seed + 1000)",
        },
    }
    return {"meta": meta, "cuckoo": cuckoo, "throughput": throughput, "classification": classification,
            "targets": targets, "plots": plots}


def main(argv=None) -> int:
    return bench_main("model", run, summary, parse_args(argv), ClassifierMismatch)


if __name__ == "__main__":
    sys.exit(main())
