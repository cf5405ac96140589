#!/usr/bin/env python3
"""Benchmark the whole Datapath top under cocotb + Verilator (``tb/bench_datapath.py`` does the work).

Builds ``Datapath(cfg, lookups=N)`` (default: the geometry of
``tb/test_datapath.py`` — 256 buckets, 2,056 flows, 64-entry CAM — and 128
lookup contexts; see ``tb/bench_datapath.py``), runs the cocotb benchmark with a fixed-latency
DRAM (one line per cycle, every read answered exactly L cycles after its
AR handshake) and writes ``<out>/datapath_top.json`` plus a plot of packets
per cycle against DRAM latency.  ``scripts/bench_datapath.py`` calls
:func:`run_top` and merges the result into ``datapath.json``.

Figures (all from the full datapath: parser -> CAM/cuckoo -> resolve ->
rewrite -> output, one-beat 60-byte UDP frames sent back to back):

* ``cam``: packets per cycle and latency for CAM-path hits, per L (no DRAM
  reads on this path, so L must not matter);
* ``flow``: DRAM flow hits at 90 % load per L: packets per cycle, the bound
  ``min(1, 1 / DRAM lines per lookup)`` (the DRAM delivers one line per
  cycle), the fraction of it, latency; after a warm-up pass over every flow;
* ``lines``: DRAM lines per lookup at 50 / 90 / 95 % load (L = 100), with the
  model's uncached count beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["run_top", "plot_top"]


def run_top(out_dir: Path, *, lookups: int = 128, packets: int = 4000, latencies=(25, 50, 100, 200),
            loads=(0.5, 0.9, 0.95), seed: int = 1, config: str = "tb", frame_fifo: int = 512, log=print) -> dict:
    from cxlnic.hdl.datapath import Datapath
    from cxlnic.tb.bench_datapath import bench_config
    from cxlnic.tb.sim import run_cocotb

    out_dir = Path(out_dir).resolve()            # the simulation runs in its build directory
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "datapath_top.raw.json"
    raw.unlink(missing_ok=True)
    os.environ["CXLNIC_BENCH_CFG"] = config
    cfg = bench_config()
    t0 = time.monotonic()
    log(f"datapath top: building Verilator model ({lookups} lookup contexts) and running "
        f"{len(latencies)} latencies x CAM/flow + {len(loads)} loads, {packets} frames each ...")
    run_cocotb(Datapath(cfg, lookups=lookups, frame_fifo=frame_fifo), "cxlnic.tb.bench_datapath",
               params=f"{config}-l{lookups}-f{frame_fifo}", seed=seed,
               extra_env={"CXLNIC_BENCH_CFG": config, "CXLNIC_BENCH_OUT": str(raw),
                          "CXLNIC_BENCH_LAT": ",".join(map(str, latencies)),
                          "CXLNIC_BENCH_LOADS": ",".join(map(str, loads)), "CXLNIC_BENCH_PKTS": str(packets),
                          "CXLNIC_BENCH_SEED": str(seed)})
    rep = json.loads(raw.read_text())
    rep["config"]["lookup_contexts"] = lookups
    rep["config"]["geometry"] = config
    for row in rep["flow"] + rep["lines"]:
        row["bound"] = round(min(1.0, 1.0 / row["dram_lines_per_lookup"]), 4) if row["dram_lines_per_lookup"] else 1.0
        row["fraction_of_bound"] = round(row["packets_per_cycle"] / row["bound"], 4)
    rep["seconds"] = round(time.monotonic() - t0, 1)
    rep["method"] = __doc__.split("\n\n", 1)[1].strip()
    (out_dir / "datapath_top.json").write_text(json.dumps(rep, indent=1) + "\n")
    rep["plot"] = plot_top(out_dir / "datapath_ppc_vs_latency.png", rep)
    log(f"datapath top: done in {rep['seconds']} s")
    return rep


def plot_top(path: Path, rep: dict) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:      # pragma: no cover - matplotlib is a dependency
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows, mark in (("CAM-path hits", rep["cam"], "o-"), ("DRAM flow hits (90 % load)", rep["flow"], "s-")):
        ax.plot([r["latency"] for r in rows], [r["packets_per_cycle"] for r in rows], mark, label=name)
    ax.plot([r["latency"] for r in rep["flow"]], [r["bound"] for r in rep["flow"]], "k:", label="flow-hit bound")
    ax.set_xlabel("DRAM latency (cycles)")
    ax.set_ylabel("packets per cycle")
    ax.set_ylim(0, 1.1)
    ax.set_title("cxlnic datapath top, 60-byte frames")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    ap.add_argument("--lookups", type=int, default=128)
    ap.add_argument("--packets", type=int, default=4000)
    ap.add_argument("--config", choices=("bench", "tb"), default="tb",
                    help="table geometry: tb (tb/test_datapath.py's: 256 buckets, 2,056 flows; default) or "
                         "bench (1024 buckets; a much longer Verilator build)")
    ap.add_argument("--frame-fifo", type=int, default=512)
    ap.add_argument("--latencies", default="25,50,100,200")
    ap.add_argument("--loads", default="0.5,0.9,0.95")
    a = ap.parse_args(argv)
    rep = run_top(a.out, lookups=a.lookups, packets=a.packets, config=a.config, frame_fifo=a.frame_fifo,
                  latencies=[int(x) for x in a.latencies.split(",")],
                  loads=[float(x) for x in a.loads.split(",")],
                  log=lambda m: print(m, file=sys.stderr))
    print(json.dumps({k: rep[k] for k in ("cam", "flow", "lines")}, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
