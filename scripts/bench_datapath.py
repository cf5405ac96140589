#!/usr/bin/env python3
"""Benchmark the existing datapath RTL blocks in Amaranth's simulator: TernaryCam and CuckooEngine.

Writes ``<out>/datapath.json`` and ``<out>/cuckoo_lookups_vs_latency.png``, prints a summary to stdout
and progress lines to stderr.

What this measures (and what it does not)
    The full datapath top (parser -> CAM/cuckoo -> resolve -> rewrite) does not exist yet (issue #3), so
    no end-to-end packets/cycle figure is reported.  Each figure below is one block, alone, cycle-accurate
    in Amaranth's Python simulator (pysim), with a testbench process playing the environment.

TernaryCam (``cam``)
    64 entries loaded with random rules through the write port, then N back-to-back lookups with
    ``o.ready`` held high.  ``packets_per_cycle`` = lookups accepted / cycles from the first accept to
    the last accept (inclusive); latency = output cycle - accept cycle of each lookup.  Every result is
    checked against ``cxlnic.tb.test_cam.ref_lookup`` (the model's ``rule_matches``, lowest index wins).

CuckooEngine (``cuckoo``)
    The DRAM is a testbench AXI4 read slave serving a table image built by the model's ``FlowTable``
    (``max_moves`` 8, one stash line) filled with random FlowKeys to the target load: ``arready``
    always 1, every read answered after exactly L cycles (AR handshake in cycle t -> R beat on the bus in
    cycle t + L), at most one R beat per cycle (= the memory model's line rate), oldest first.  Lookups of
    present keys (DRAM flow hits) are offered back to back; ``o.ready`` is held high.

    * ``lookups_per_cycle``: steady state: results / cycles between the result at 10 % and the one at
      90 % of the run (ramp-up and drain left out); ``lookups_per_cycle_whole_run``: all results /
      cycles from the first result to the last.  ``r_beats_per_cycle``: R-channel utilisation (fraction
      of the line rate) in the same window.
    * ``bound`` = line rate / lines per lookup = 1 / (``lines_read`` / ``lookups``) from the engine's
      own counters; ``fraction_of_bound`` = lookups_per_cycle / bound.
    * ``latency_cycles``: per lookup, cycle its result is accepted on ``o`` - cycle it was accepted on
      ``i`` (min / median / max / mean), measured in the testbench during the throughput run.  The
      engine is saturated there (a lookup is accepted whenever a context is free), so this is mostly
      the wait for in-order retirement: about max_outstanding / lookups_per_cycle.
      ``latency_cycles_unloaded``: the same measure with one lookup in flight at a time (the first
      ``unloaded_lookups_per_latency`` keys), i.e. the pipeline latency ~ 3 + 1 + n*(L+3) + 2.
    * ``lines_per_lookup``: ``lines_read`` / ``lookups`` from the engine's counters at 50 / 90 / 95 %
      load, compared with the model's ``FlowTable.stats.lookup_reads`` for the same keys; any
      disagreement (or any result differing from ``FlowTable.lookup_entry``) aborts without a report.
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics
import sys
import time
from pathlib import Path

from amaranth.sim import Simulator

from cxlnic.benchutil import bench_main, loadavg, log, machine_meta
from cxlnic.config import NicConfig
from cxlnic.hdl.cam import CamResult, CamWrite, TernaryCam
from cxlnic.hdl.cuckoo import CuckooEngine
from cxlnic.hdl.layouts import LINE_BYTES
from cxlnic.model.flowtable import FENTRY, FKEY, FlowTable, TableFull
from cxlnic.model.match import PKEY, RULE
from cxlnic.model.memory import BytearrayMemory, format_image
from cxlnic.tb.test_cam import RESULT_FIELDS, random_key, random_rule
from cxlnic.tb.test_cam import ref_lookup as cam_ref_lookup

ROOT = Path(__file__).resolve().parent.parent

TAG_BITS = 16
MAX_MOVES = 8
CAM_ENTRIES = 64
LATENCIES = (25, 50, 100, 200)
LOADS = (0.50, 0.90, 0.95)
THROUGHPUT_LOAD = 0.90
WINDOW_SKIP = 0.1               # steady-state window: results [10 %, 90 %] of each run

TARGET_CAM_PPC = 1.0
TARGET_FRACTION_L100 = 0.95
TARGET_LINES_95 = 2.0
AIM_LINES_95 = 1.5

FRACTION_NOTE = (
    "Results retire in input order from a ring of max_outstanding contexts (the ring is the reorder buffer), so "
    "a context is held from accept to result, including any wait behind older, slower lookups (a hit reads "
    "n ~ 2.1 lines, each taking L+3 cycles). By Little's law the rate is at most max_outstanding / mean "
    "accept-to-result latency (little_law_rate per point; the measured rate equals it once the contexts, not "
    "the R channel, are the limit). docs/rtl.md estimates that reaching the line-rate bound needs about "
    "3*(L+3) contexts, ~309 at L = 100: 128 contexts reach the bound up to L = 50 here, not at L = 100. "
    "Not met means more contexts (or out-of-order retirement) are needed at this latency, not a DRAM limit.")
LINES_NOTE = (
    "The table format keeps {sig16, entry31} slots in the bucket line and the 64-byte entry line apart, and "
    "the engine reads the bucket line, then the entry line of each signature match: every hit reads >= 2 "
    "lines (plus the secondary bucket when the key is there, and any signature false hit). <= 2.0 is "
    "reachable only with no secondary-bucket hits; 1.5 needs bucket lines cached on chip (or entries inline in "
    "the bucket).")





class ModelMismatch(AssertionError):
    """The RTL and the model disagree: no figure may be reported."""


# -- TernaryCam ----------------------------------------------------------------------------------------------
def bench_cam(n_lookups: int, seed: int) -> dict:
    rng = random.Random(seed)
    rules = [random_rule(rng) for _ in range(CAM_ENTRIES)]
    keys = [random_key(rng, rules) for _ in range(n_lookups)]
    dut = TernaryCam(entries=CAM_ENTRIES)
    line_off, rlay = CamWrite(CAM_ENTRIES)["line"].offset, CamResult(CAM_ENTRIES)
    acc, outc, res = [], [], []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for j, r in enumerate(rules):
            ctx.set(dut.w.valid, 1)
            ctx.set(dut.w.payload.as_value(), j | RULE.pack(r) << line_off)
            await ctx.tick()
        ctx.set(dut.w.valid, 0)
        cycle = sent = 0
        while len(res) < n_lookups:
            cycle += 1
            if cycle > 10 * n_lookups + 100:
                raise AssertionError(f"CAM stuck: {len(res)}/{n_lookups} results")
            lk = sent < n_lookups
            ctx.set(dut.i.valid, lk)
            if lk:
                ctx.set(dut.i.payload.as_value(), PKEY.pack(keys[sent]))
            fire = lk and ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid):
                res.append(rlay.from_bits(ctx.get(dut.o.payload.as_value())))
                outc.append(cycle)
            await ctx.tick()
            if fire:
                acc.append(cycle)
                sent += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    bad = 0
    for r, k in zip(res, keys, strict=True):
        got = {f: int(getattr(r, f)) for f in RESULT_FIELDS}
        bad += got != cam_ref_lookup(rules, k)
    if bad:
        raise ModelMismatch(f"TernaryCam: {bad} of {n_lookups} results differ from the model")
    lat = [o - a for a, o in zip(acc, outc, strict=True)]
    span = acc[-1] - acc[0] + 1
    return {
        "what": "TernaryCam alone (no parser, no datapath top): lookups accepted per cycle, N back-to-back "
                "lookups, o.ready held high, Amaranth simulator",
        "entries": CAM_ENTRIES, "lookups": n_lookups, "accept_span_cycles": span,
        "packets_per_cycle": n_lookups / span,
        "latency_cycles": {"min": min(lat), "median": statistics.median(lat), "max": max(lat)},
        "hits": sum(int(r.hit) for r in res), "verified_against_model": n_lookups,
    }


# -- cuckoo table image ----------------------------------------------------------------------------------------
def make_key(rng: random.Random):
    return FKEY.new(tenant=rng.getrandbits(24), in_port=rng.getrandbits(8), eth_type=0x86DD,
                    ip_proto=rng.choice((6, 17)), src_port=rng.getrandbits(16), dst_port=rng.getrandbits(16),
                    src_ip=rng.getrandbits(128), dst_ip=rng.getrandbits(128))


def build_table(seed: int, n_buckets: int, load: float):
    """A model-built image filled with random keys until ``load`` (bucket slots) or the first TableFull."""
    rng = random.Random(seed)
    cfg = NicConfig(n_buckets=n_buckets, n_stash=1, n_rules=4, cam_entries=4, n_actions=4, n_tenants=1)
    mem = BytearrayMemory(cfg.image_lines)
    mem.apply(format_image(cfg))
    table = FlowTable(mem, max_moves=MAX_MOVES)
    present = []
    while table.load < load:
        k = make_key(rng)
        e = FENTRY.new(conn_state=3, action=rng.getrandbits(20), peer=rng.getrandbits(31),
                       last_seen=rng.getrandbits(32), seen_packets=rng.getrandbits(32), key=k)
        try:
            table.insert(e)
        except TableFull:
            break
        present.append(k)
    return cfg, mem, table, present, rng


def rtl_lookups(cfg, mem, keys, *, latency: int, max_outstanding: int, one_at_a_time: bool = False
                ) -> tuple[list, dict]:
    """Run CuckooEngine over ``mem`` with a fixed-latency, one-beat-per-cycle AXI read slave.

    Lookups are offered back to back, or with ``one_at_a_time`` each only after the previous result.
    """
    r = cfg.regions()
    dut = CuckooEngine(n_buckets=cfg.n_buckets, buckets_off=r["buckets"][0], stash_off=r["stash"][0],
                       n_stash=cfg.n_stash, flows_off=r["flows"][0], tag_bits=TAG_BITS,
                       max_outstanding=max_outstanding, axi_id_bits=8)
    n = len(keys)
    out, acc, outc, beats = [], [], [], []
    stats = {}
    packed = [FKEY.pack(k) for k in keys]
    max_cycles = n * 6 * (latency + 4) + 1000

    async def bench(ctx):
        ctx.set(dut.hash_key, int.from_bytes(cfg.hash_key, "little"))
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.m_axi_arready, 1)
        ctx.set(dut.m_axi_rlast, 1)
        pending = collections.deque()            # (ready cycle, rid, line), ready cycles non-decreasing
        beat = False
        sent = cycle = 0
        while len(out) < n:
            cycle += 1
            if cycle > max_cycles:
                raise AssertionError(f"engine stuck: {len(out)}/{n} results, {sent} sent")
            offer = sent < n and not (one_at_a_time and sent > len(out))
            if offer:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload.key.as_value(), packed[sent])
                ctx.set(dut.i.payload.tag, sent & ((1 << TAG_BITS) - 1))
            else:
                ctx.set(dut.i.valid, 0)
            if not beat and pending and pending[0][0] <= cycle:
                _t, rid, line = pending.popleft()
                ctx.set(dut.m_axi_rvalid, 1)
                ctx.set(dut.m_axi_rid, rid)
                ctx.set(dut.m_axi_rdata, int.from_bytes(mem.read_line(line), "little"))
                beat = True
                beats.append(cycle)
            if ctx.get(dut.m_axi_arvalid):
                pending.append((cycle + latency, ctx.get(dut.m_axi_arid), ctx.get(dut.m_axi_araddr) // LINE_BYTES))
            in_fire = offer and ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid):
                p = ctx.get(dut.o.payload)
                out.append((int(p.tag), int(p.hit), int(p.index), ctx.get(dut.o.payload.entry.as_value())))
                outc.append(cycle)
            await ctx.tick()
            if in_fire:
                acc.append(cycle)
                sent += 1
            if beat:                              # rready is constant 1: the beat was taken
                beat = False
                ctx.set(dut.m_axi_rvalid, 0)
        for name in ("lookups", "hits", "lines_read", "replays", "giveups"):
            stats[name] = ctx.get(getattr(dut, name))
        stats["cycles"] = cycle
        stats["out_span"] = outc[-1] - outc[0] + 1
        stats["latencies"] = [o - a for a, o in zip(acc, outc, strict=True)]
        # steady state: the middle results (first and last WINDOW_SKIP of them left out)
        k1, k2 = int(n * WINDOW_SKIP), n - 1 - int(n * WINDOW_SKIP)
        c1, c2 = outc[k1], outc[k2]
        stats["window"] = {"results": k2 - k1, "cycles": c2 - c1,
                           "r_beats": sum(c1 <= b < c2 for b in beats)}

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out, stats


def checked_run(table, cfg, mem, keys, *, latency: int, max_outstanding: int, what: str,
                one_at_a_time: bool = False) -> dict:
    """RTL lookups of ``keys`` checked result by result and line count against the model."""
    reads0, look0 = table.stats.lookup_reads, table.stats.lookups
    expect = []
    for i, k in enumerate(keys):
        e = table.lookup_entry(k)
        tag = i & ((1 << TAG_BITS) - 1)
        expect.append((tag, 0, 0, 0) if e is None else (tag, 1, e[0], FENTRY.pack(e[1])))
    model_lines = table.stats.lookup_reads - reads0
    assert table.stats.lookups - look0 == len(keys)
    t0 = time.perf_counter()
    got, st = rtl_lookups(cfg, mem, keys, latency=latency, max_outstanding=max_outstanding,
                          one_at_a_time=one_at_a_time)
    wall = time.perf_counter() - t0
    bad = sum(g != e for g, e in zip(got, expect, strict=True))
    if bad:
        raise ModelMismatch(f"{what}: {bad} of {len(keys)} CuckooEngine results differ from FlowTable.lookup_entry")
    if st["lookups"] != len(keys) or st["lines_read"] != model_lines:
        raise ModelMismatch(f"{what}: engine counted {st['lookups']} lookups / {st['lines_read']} lines, the "
                            f"model {len(keys)} lookups / {model_lines} lines")
    if st["replays"] or st["giveups"]:
        raise ModelMismatch(f"{what}: {st['replays']} replays / {st['giveups']} giveups without writes")
    st["model_lines_read"] = model_lines
    st["hits_expected"] = sum(e[1] for e in expect)
    st["wall_s"] = wall
    return st


def bench_throughput(n_lookups: dict[int, int], n_buckets: int, seed: int, latencies, n_unloaded: int
                     ) -> list[dict]:
    """``n_lookups``: contexts (max_outstanding) -> lookups per point; the keys of a shorter run are a prefix."""
    cfg, mem, table, present, rng = build_table(seed, n_buckets, THROUGHPUT_LOAD)
    all_keys = [rng.choice(present) for _ in range(max(n_lookups.values()))]
    rows = []
    unloaded = {}
    for lat in latencies:
        st = checked_run(table, cfg, mem, all_keys[:n_unloaded], latency=lat, max_outstanding=128,
                         what=f"unloaded L={lat}", one_at_a_time=True)
        lats = st["latencies"]
        unloaded[lat] = {"min": min(lats), "median": statistics.median(lats), "max": max(lats),
                         "lookups": len(lats), "lines_per_lookup": st["lines_read"] / st["lookups"]}
        log(f"cuckoo L={lat:>3} one lookup at a time: latency {unloaded[lat]}  [{st['wall_s']:.1f} s]")
    for mo, n in n_lookups.items():
        keys = all_keys[:n]
        for lat in latencies:
            st = checked_run(table, cfg, mem, keys, latency=lat, max_outstanding=mo,
                             what=f"L={lat} contexts={mo}")
            lpl = st["lines_read"] / st["lookups"]
            w = st["window"]
            rate = w["results"] / w["cycles"]
            lats = st["latencies"]
            rows.append({
                "dram_latency": lat, "max_outstanding": mo, "lookups": st["lookups"], "hits": st["hits"],
                "lines_read": st["lines_read"], "lines_per_lookup": lpl,
                "lookups_per_cycle": rate, "bound": 1 / lpl, "fraction_of_bound": rate * lpl,
                "r_beats_per_cycle": w["r_beats"] / w["cycles"],
                "lookups_per_cycle_whole_run": st["lookups"] / st["out_span"],
                "window_results": w["results"], "window_cycles": w["cycles"],
                # fewer results than contexts in the window would measure a burst, not a steady state
                "window_exceeds_contexts": w["results"] > mo,
                "contexts_needed_approx": 3 * (lat + 3),
                "latency_cycles": {"min": min(lats), "median": statistics.median(lats), "max": max(lats),
                                   "mean": statistics.mean(lats)},
                "latency_cycles_unloaded": unloaded[lat],
                "little_law_rate": mo / statistics.mean(lats),
                "result_span_cycles": st["out_span"], "sim_cycles": st["cycles"], "sim_wall_s": round(st["wall_s"], 2),
                "load": table.load,
            })
            log(f"cuckoo L={lat:>3} ctx={mo:>3}: {rate:.3f} lookups/cycle, bound {1 / lpl:.3f} "
                f"({rate * lpl:.0%}), latency med {statistics.median(lats)}  [{st['wall_s']:.1f} s]")
    return rows


def bench_lines(n_hits: int, n_misses: int, n_buckets: int, seed: int, latency: int) -> dict:
    res = {}
    for load in LOADS:
        cfg, mem, table, present, rng = build_table(seed, n_buckets, load)
        seen = {FKEY.pack(k) for k in present}
        hits = [rng.choice(present) for _ in range(n_hits)]
        misses = []
        while len(misses) < n_misses:
            k = make_key(rng)
            if FKEY.pack(k) not in seen:
                misses.append(k)
        row = {"target_load": load, "load": table.load, "n_entries": len(table), "n_stashed": table.n_stashed}
        for kind, keys in (("hit", hits), ("miss", misses)):
            st = checked_run(table, cfg, mem, keys, latency=latency, max_outstanding=32,
                             what=f"{kind}s at load {load}")
            if st["hits"] != (len(keys) if kind == "hit" else 0):
                raise ModelMismatch(f"{kind}s at load {load}: {st['hits']} hits of {len(keys)}")
            row[kind] = {"lookups": st["lookups"], "hits": st["hits"], "lines_read": st["lines_read"],
                         "model_lookup_reads": st["model_lines_read"],
                         "lines_per_lookup": st["lines_read"] / st["lookups"],
                         "engine_equals_model": st["lines_read"] == st["model_lines_read"]}
        res[f"{load:.2f}"] = row
        log(f"lines/lookup at load {table.load:.3f}: hit {row['hit']['lines_per_lookup']:.3f}, "
            f"miss {row['miss']['lines_per_lookup']:.3f} (engine == model)")
    return res


# -- report --------------------------------------------------------------------------------------------------


def plot(out: Path, rows: list[dict]) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for mo in sorted({r["max_outstanding"] for r in rows}, reverse=True):
        rr = [r for r in rows if r["max_outstanding"] == mo]
        ax.plot([r["dram_latency"] for r in rr], [r["lookups_per_cycle"] for r in rr], marker="o",
                label=f"CuckooEngine, {mo} contexts ({rr[0]['lookups']} lookups/point)")
    lat = sorted({r["dram_latency"] for r in rows})
    bound = [statistics.mean(r["bound"] for r in rows if r["dram_latency"] == x) for x in lat]
    ax.plot(lat, bound, color="0.3", ls="--", lw=1, label="bound: 1 line/cycle / lines per lookup")
    ax.set_xlabel("DRAM read latency L (cycles, AR handshake to R beat)")
    ax.set_ylabel("lookups per cycle (DRAM flow hits)")
    ax.plot(lat, [TARGET_FRACTION_L100 * b for b in bound], color="tab:red", ls=":", lw=1,
            label=f"{TARGET_FRACTION_L100:.0%} of bound (target at L = 100, 128 contexts)")
    ax.set_title(f"CuckooEngine alone (not the datapath top), Amaranth sim, DRAM flow hits at "
                 f"{THROUGHPUT_LOAD:.0%} load, steady state", fontsize=9)
    ax.set_ylim(0, max(bound) * 1.2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = "cuckoo_lookups_vs_latency.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def summary(rep: dict) -> str:
    c, k = rep["cam"], rep["cuckoo"]
    lines = [f"cxlnic datapath-block benchmark ({rep['meta']['runtime_s']:.1f} s, "
             f"commit {rep['meta']['git_commit'][:12]})",
             f"cam: {c['packets_per_cycle']:.3f} lookups/cycle over {c['lookups']}, latency {c['latency_cycles']}",
             f"cuckoo (hits at {THROUGHPUT_LOAD:.0%} load): {'L':>4} {'ctx':>4} {'lk/cyc':>7} {'bound':>6} "
             f"{'frac':>5} {'lat min/med/max (saturated)':>28} {'unloaded min/med/max':>21}"]
    for r in k["throughput"]:
        lc, lu = r["latency_cycles"], r["latency_cycles_unloaded"]
        lines.append(f"{'':29}{r['dram_latency']:>4} {r['max_outstanding']:>4} {r['lookups_per_cycle']:>7.3f} "
                     f"{r['bound']:>6.3f} {r['fraction_of_bound']:>5.0%} "
                     f"{'':>11}{lc['min']:>5}/{lc['median']:>5}/{lc['max']:>5} "
                     f"{'':>4}{lu['min']:>5}/{lu['median']:>5}/{lu['max']:>5}")
    for p, row in k["lines_per_lookup"].items():
        lines.append(f"lines/lookup at {p} (actual {row['load']:.3f}): hit {row['hit']['lines_per_lookup']:.3f}, "
                     f"miss {row['miss']['lines_per_lookup']:.3f}")
    lines.append("targets:" + (" (--quick sizes: not an evaluation)" if rep["meta"]["quick"] else ""))
    for name, tg in rep["targets"].items():
        v = tg["value"]
        lines.append(f"  {name:<36} {tg['target']:<28} value {'-' if v is None else format(v, '.4g'):>8}  "
                     f"{'MET' if tg['met'] else 'NOT MET'}")
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("build/bench"), help="output folder (default build/bench)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    ap.add_argument("--lookups", type=int, default=None, help="cuckoo lookups per throughput point "
                                                              "(default 1500; --quick 200)")
    ap.add_argument("--lookups-32", type=int, default=None, help="lookups per point of the 32-context "
                    "comparison (default 600, slow at low rate; --quick: skipped; 0 skips it)")
    a = ap.parse_args(argv)
    q = a.quick
    a.lookups = a.lookups or (200 if q else 1500)
    a.cam_lookups = 200 if q else 2000
    a.buckets = 64 if q else 256
    a.latencies = (25, 100) if q else LATENCIES
    if a.lookups_32 is None:
        a.lookups_32 = 0 if q else 600
    a.contexts = {128: a.lookups, **({32: a.lookups_32} if a.lookups_32 else {})}
    a.line_hits = 40 if q else 1000
    a.line_misses = 20 if q else 300
    a.line_latency = 10
    a.unloaded = 2 if q else 12
    a.seed = 1
    return a


def run(a) -> dict:
    load_start = loadavg()
    log(f"cam: {a.cam_lookups} lookups")
    cam = bench_cam(a.cam_lookups, a.seed)
    log(f"cam: {cam['packets_per_cycle']:.3f} lookups/cycle, latency {cam['latency_cycles']}")
    log("cuckoo lines per lookup")
    lines = bench_lines(a.line_hits, a.line_misses, a.buckets, a.seed + 1, a.line_latency)
    log("cuckoo throughput")
    rows = bench_throughput(a.contexts, a.buckets, a.seed + 2, a.latencies, a.unloaded)
    plots = [plot(a.out, rows)]

    r100 = next((r for r in rows if r["dram_latency"] == 100 and r["max_outstanding"] == 128), None)
    l95 = lines["0.95"]
    targets = {
        "cam.packets_per_cycle": {
            "target": f">= {TARGET_CAM_PPC} (TernaryCam alone)", "threshold": TARGET_CAM_PPC,
            "value": cam["packets_per_cycle"], "met": cam["packets_per_cycle"] >= TARGET_CAM_PPC,
            "note": "TernaryCam block alone, not the (unbuilt) datapath top."},
        "cuckoo.fraction_of_bound@L100": {
            "target": f">= {TARGET_FRACTION_L100} of bound (128 contexts)", "threshold": TARGET_FRACTION_L100,
            "value": r100["fraction_of_bound"] if r100 else None,
            "met": bool(r100) and r100["fraction_of_bound"] >= TARGET_FRACTION_L100, "note": FRACTION_NOTE},
        "cuckoo.lines_per_lookup@95%": {
            "target": f"<= {TARGET_LINES_95} hits (aim {AIM_LINES_95})", "threshold": TARGET_LINES_95,
            "value": l95["hit"]["lines_per_lookup"], "actual_load": l95["load"],
            "met": l95["hit"]["lines_per_lookup"] <= TARGET_LINES_95,
            "aim_met": l95["hit"]["lines_per_lookup"] <= AIM_LINES_95, "note": LINES_NOTE},
    }
    if a.quick:
        for tg in targets.values():
            tg["note_quick"] = "--quick sizes: not an evaluation of the target"
    cuckoo = {
        "what": "CuckooEngine alone (no parser, no datapath top), Amaranth simulator, testbench AXI4 read "
                "slave: fixed latency L, arready 1, at most one R beat per cycle (= line rate), table image "
                "built by model FlowTable (max_moves 8, 1 stash line)",
        "n_buckets": a.buckets, "throughput_load": THROUGHPUT_LOAD,
        "throughput": rows,
        "lookups_per_cycle": {f"L{r['dram_latency']}_ctx{r['max_outstanding']}": r["lookups_per_cycle"]
                              for r in rows},
        "latency_cycles": {f"L{r['dram_latency']}_ctx{r['max_outstanding']}": r["latency_cycles"] for r in rows},
        "lines_per_lookup": lines,
        "lines_per_lookup_latency": a.line_latency,
    }
    meta = {
        **machine_meta(load_start),
        "quick": a.quick, "simulator": "amaranth.sim (pysim)",
        "parameters": {
            "seed": a.seed, "cam_entries": CAM_ENTRIES, "cam_lookups": a.cam_lookups,
            "cuckoo_lookups_per_point": a.lookups, "n_buckets": a.buckets, "n_stash": 1, "max_moves": MAX_MOVES,
            "latencies": list(a.latencies), "lookups_per_point_by_contexts": a.contexts, "loads": list(LOADS),
            "unloaded_lookups_per_latency": a.unloaded,
            "line_hits": a.line_hits, "line_misses": a.line_misses, "line_count_latency": a.line_latency,
        },
        "not_measured": "end-to-end datapath packets/cycle: the datapath top does not exist yet (issue #3)",
    }
    return {"meta": meta, "cam": cam, "cuckoo": cuckoo, "targets": targets, "plots": plots}


def main(argv=None) -> int:
    return bench_main("datapath", run, summary, parse_args(argv), ModelMismatch)


if __name__ == "__main__":
    sys.exit(main())
