#!/usr/bin/env python3
"""Whole-system simulation speed -> ``<out>/system.json``.

Figures:

* ``harness``: the system harness (``tb/harness.py``) under Verilator with no
  Python between cycles (``tb/test_system.py`` testcase ``speed``): idle
  cycles per wall second, and cycles and frames per wall second while a
  static-rules trace streams in at line rate (played, not checked).
* ``scenario``: the default ``make sim`` scenario (``mixed``), ``--packets``
  packets, every frame, upcall, counter and table line checked against the
  golden model (``tb/test_system.py`` testcase ``system``): simulated packets
  per wall second, cycles per wall second, and how the wall time splits
  between the simulator and Python (model, files).  Target: >= 20,000
  packets per wall second.
* ``verilator_vs_pysim``: the same block test under both simulators. It is
  the CXL.mem subordinate driven by the same Python agents (host, backend,
  device writer) with the same random traffic and seed
  (:data:`~cxlnic.tb.cxl_mem_host.SPEED_WORKLOAD`), under cocotb + Verilator
  (``tb/test_cxl_mem.py`` testcase ``speed``) and under Amaranth's Python
  simulator. The report gives cycles per wall second of each and their
  ratio. Both runs must check clean.

Usage: ``python scripts/bench_system.py --out build/bench [--packets 20000] [--ops 3000]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cxlnic.benchutil import loadavg, log, machine_meta, write_report  # noqa: E402

TARGET_PPS = 20_000


def harness_speed(out: Path, packets: int) -> dict:
    from cxlnic.tb.harness import run_system_sim

    raw = out / "system_speed.raw.json"
    raw.unlink(missing_ok=True)
    run_system_sim({"CXLNIC_SPEED_OUT": str(raw), "CXLNIC_SPEED_PACKETS": str(packets),
                    "CXLNIC_SIM_OUT": str(out / "system_speed")}, testcase="speed")
    return json.loads(raw.read_text())


def scenario(out: Path, packets: int, seed: int) -> dict:
    from cxlnic.tb.harness import run_system_sim

    d = out / "system_sim"
    run_system_sim({"CXLNIC_SCENARIO": "mixed", "CXLNIC_PACKETS": str(packets), "CXLNIC_SEED": str(seed),
                    "CXLNIC_SIM_OUT": str(d)}, seed=seed)
    rep = json.loads((d / "report.json").read_text())
    if rep["mismatches"]:
        raise SystemExit(f"bench_system: the scenario run had {rep['mismatches']} mismatches: no speed reported")
    return {k: rep[k] for k in ("packets", "cycles", "wall_s", "packets_per_wall_s", "cycles_per_wall_s",
                                "wall_split_s", "packets_per_cycle", "rx_beats_per_cycle", "epochs", "paths")}


def cxl_mem_verilator(out: Path, ops: int) -> dict:
    from cxlnic.hdl.cxl_mem import CxlMemSubordinate
    from cxlnic.tb.sim import run_cocotb

    raw = out / "system_cxlmem_verilator.raw.json"
    raw.unlink(missing_ok=True)
    run_cocotb(CxlMemSubordinate(depth=32, filter_entries=16), "cxlnic.tb.test_cxl_mem", params="d32f16", seed=1,
               testcase="speed", extra_env={"CXLNIC_SPEED_OUT": str(raw), "CXLNIC_SPEED_OPS": str(ops)})
    return json.loads(raw.read_text())


def cxl_mem_pysim(ops: int) -> dict:
    """The workload of tb/test_cxl_mem.py ``speed`` under Amaranth's simulator (same agents, same seed)."""
    from amaranth.sim import Simulator

    from cxlnic.hdl.cxl_mem import CxlMemSubordinate
    from cxlnic.tb.cxl_mem_host import SPEED_WORKLOAD, AmaranthIO, CycleLoop, host_agents, random_traffic
    from cxlnic.tb.test_cxl_mem import BASE, SIZE

    w = SPEED_WORKLOAD
    dut = CxlMemSubordinate(depth=32, filter_entries=16)
    host, backend, dev, checker = host_agents(w["seed"], (BASE, SIZE), **w["agents"])
    loop = CycleLoop(AmaranthIO(dut), [host, backend, dev])
    res = {}

    class B:
        pass
    b = B()
    b.host, b.dev, b.checker = host, dev, checker

    async def bench(ctx):
        ctx.set(dut.hdm_base, BASE)
        ctx.set(dut.hdm_size, SIZE)
        for _ in range(4):                       # the cocotb side's reset and first edge
            await ctx.tick()

        async def until(cond, max_cycles=200_000):
            await loop.run_amaranth(ctx, cond, max_cycles)

        async def cycles(n):
            end = loop.cycle + n
            await until(lambda: loop.cycle >= end)
        b.until, b.cycles = until, cycles
        c0, t0 = loop.cycle, time.perf_counter()
        await random_traffic(b, random.Random(w["seed"]), n_ops=ops, lines=[BASE + i for i in range(w["lines"])])
        res.update(cycles=loop.cycle - c0, wall_s=time.perf_counter() - t0, checked=checker.checked)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    if checker.mismatches or host.errors:
        raise SystemExit(f"bench_system: the Amaranth-simulator run did not check clean: {checker.errors[:3]}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    ap.add_argument("--packets", type=int, default=20_000, help="packets of the checked scenario run")
    ap.add_argument("--speed-packets", type=int, default=4000, help="frames of the unchecked streaming run")
    ap.add_argument("--ops", type=int, default=3000, help="operations of the CXL.mem block workload")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    if a.packets < 20 or a.ops < 10 or a.speed_packets < 20:
        ap.error("--packets and --speed-packets must be >= 20, --ops >= 10")
    a.out = a.out.resolve()                 # the simulations run in their own folders
    a.out.mkdir(parents=True, exist_ok=True)
    load_start, t0 = loadavg(), time.monotonic()
    log("system harness speed (Verilator build on first use)")
    hs = harness_speed(a.out, a.speed_packets)
    log(f"harness: {hs}")
    log(f"checked scenario run: mixed, {a.packets} packets")
    sc = scenario(a.out, a.packets, a.seed)
    log(f"scenario: {sc['packets_per_wall_s']} packets/s")
    log(f"CXL.mem subordinate, same workload: Verilator ({a.ops} ops)")
    ver = cxl_mem_verilator(a.out, a.ops)
    log("... and Amaranth's simulator")
    py = cxl_mem_pysim(a.ops)
    if ver["cycles"] != py["cycles"] or ver["checked"] != py["checked"]:
        log(f"note: the two runs differ in cycles ({ver['cycles']} vs {py['cycles']}) or checks "
            f"({ver['checked']} vs {py['checked']})")
    v_cps, p_cps = ver["cycles"] / ver["wall_s"], py["cycles"] / py["wall_s"]
    rep = {
        "harness": hs,
        "scenario": sc,
        "verilator_vs_pysim": {
            "block": "CxlMemSubordinate(depth=32, filter_entries=16) + Python CXL.mem host, backend, device writer",
            "ops": a.ops, "verilator": {**ver, "cycles_per_s": round(v_cps)},
            "amaranth_pysim": {**py, "cycles_per_s": round(p_cps)}, "ratio": round(v_cps / p_cps, 2)},
        "wall_s": round(time.monotonic() - t0, 1),
    }
    rep["targets"] = {
        "system.packets_per_wall_s": {
            "target": f">= {TARGET_PPS:,} simulated packets per wall second (default scenario, every packet checked)",
            "threshold": TARGET_PPS, "value": sc["packets_per_wall_s"], "met": sc["packets_per_wall_s"] >= TARGET_PPS},
    }
    rep["meta"] = machine_meta(load_start)
    write_report(a.out / "system.json", rep)
    r = rep["verilator_vs_pysim"]
    print(f"harness alone: {hs['idle_cycles_per_s']:,} idle cycles/s, {hs['traffic_cycles_per_s']:,} cycles/s and "
          f"{hs['traffic_packets_per_s']:,} frames/s streaming")
    print(f"checked scenario: {sc['packets_per_wall_s']:,.0f} packets/s, {sc['cycles_per_wall_s']:,.0f} cycles/s "
          f"(simulator {sc['wall_split_s']['simulation']} s, Python {sc['wall_split_s']['python']} s); target "
          f">= {TARGET_PPS:,}: {'met' if rep['targets']['system.packets_per_wall_s']['met'] else 'NOT met'}")
    print(f"same block test: Verilator {r['verilator']['cycles_per_s']:,} cycles/s, Amaranth simulator "
          f"{r['amaranth_pysim']['cycles_per_s']:,} cycles/s: ratio {r['ratio']}")
    print(f"wrote {a.out / 'system.json'} in {rep['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
