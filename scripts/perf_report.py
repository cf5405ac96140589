#!/usr/bin/env python3
"""Merge every benchmark into ``build/bench/results.json`` and render ``docs/performance.md``.

Inputs (written by ``make bench`` and ``make synth``): ``<bench>/model.json``,
``<bench>/datapath.json``, ``<bench>/cxl.json``, ``<bench>/system.json`` and ``<synth>/report.json``.
A missing input is listed as "not measured" (and named in ``missing``); a
``--quick`` report or an incomplete synthesis report is never presented as
the figure.  Plots are copied next to the page (``docs/perf/``).  The install
rate is also converted at the synthesized Fmax here (``install.inserts_per_s``
at 250 MHz, ``install.inserts_per_s_at_fmax``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Rows of the table: (results path of the value, label, unit/format, target text, anchor text).
#: The anchors are the reference figures quoted in the issues.
ROWS = [
    ("datapath.targets.datapath.cam_packets_per_cycle", "CAM-path hits, whole datapath (worst over L)",
     "{:.3f} pkt/cycle", ">= 1.0 pkt/cycle", "100GbE at 64-byte frames = 148.8 Mpps = 0.6 pkt/cycle at 250 MHz"),
    ("datapath.targets.datapath.flow_fraction_of_bound@L100", "DRAM flow hits at L = 100, fraction of bound",
     "{:.3f}", ">= 0.95 of line rate / lines per lookup", "Napatech DRAM flow table: 85-130 M lookups/s"),
    ("datapath.targets.datapath.lines_per_lookup@95%", "DRAM lines per lookup at 95 % load", "{:.3f}",
     "<= 2.0 (aim 1.5)", "uncached cuckoo: ~2.2"),
    ("cxl.targets.cxl.visibility_cycles", "host write -> visible to the datapath (max)", "{} cycles",
     "<= hop delay + 8", "TC flower via mlx5 firmware ~200 us, software steering ~30 us"),
    ("cxl.targets.cxl.mem_ops_per_cycle", "CXL.mem line operations per cycle sustained", "{:.3f}", ">= 0.9", ""),
    ("cxl.targets.install.inserts_per_s", "flow installs at ~90 % load through CXL.mem, 250 MHz", "{:,.0f} /s",
     ">= 10 M/s", "Napatech 1-3 M flows/s; mlx5 TC flower 33k/s, raw SW steering ~300k/s"),
    ("synth.summary.fmax_mhz", "Fmax, reduced configuration, ECP5-85 speed 8", "{:.1f} MHz", ">= 125 MHz (aim 200)",
     "naive single-cycle 64x128 TCAM: ~97 MHz"),
    ("system.targets.system.packets_per_wall_s", "system simulation (make sim), checked packets per wall second",
     "{:,.0f} /s", ">= 20,000 /s", "cocotb driving a 64x128 TCAM every cycle: ~77k cycles/s under Verilator"),
    ("system.verilator_vs_pysim.ratio", "Verilator vs Amaranth simulator, same block test (CXL.mem agent)",
     "{:.1f}x", "", "TCAM every cycle: ~77k vs ~14k cycles/s (5.5x)"),
    ("model.targets.cuckoo.max_load", "cuckoo max load (model, 8 moves)", "{:.3f}", "", ""),
    ("model.targets.writes_per_insert@90%", "line writes per insert at 90 % (model)", "{:.2f}", "", ""),
    ("model.targets.classification.ratio@10k", "rule classifier vs linear scan, 10k rules (model)", "{:.1f}x",
     "", ""),
]

PLOTS = [
    ("datapath_ppc_vs_latency.png", "Packets per cycle vs DRAM latency (whole datapath)"),
    ("cuckoo_lookups_vs_latency.png", "Cuckoo engine lookups per cycle vs DRAM latency"),
    ("flow_lookup_reads_vs_load.png", "Lines read per lookup vs load (model)"),
    ("flow_moves_vs_load.png", "Cuckoo moves per insert vs load (model)"),
    ("cxl_visibility.png", "Host write visibility latency distribution"),
]


def _get(doc: dict, path: str):
    """``doc`` at a dotted path whose keys may themselves contain dots (longest key first)."""
    cur, rest = doc, path
    while rest:
        if not isinstance(cur, dict):
            return None
        for k in sorted(cur, key=len, reverse=True):
            if rest == k or rest.startswith(k + "."):
                cur, rest = cur[k], rest[len(k) + 1:]
                break
        else:
            return None
    return cur


def load_inputs(bench: Path, synth: Path) -> tuple[dict, list[str]]:
    docs, missing = {}, []
    for name, path in (("model", bench / "model.json"), ("datapath", bench / "datapath.json"),
                       ("cxl", bench / "cxl.json"), ("system", bench / "system.json"),
                       ("synth", synth / "report.json")):
        if not path.exists():
            missing.append(f"{name}: {path} not found")
            continue
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SystemExit(f"perf_report: {path}: not valid JSON ({e})") from None
        if (doc.get("meta") or {}).get("quick"):
            missing.append(f"{name}: {path} is a --quick run (not the figures)")
            continue
        if name == "synth" and not doc.get("complete"):
            missing.append(f"{name}: {path} is incomplete (failed stage {doc.get('failed_stage')}: "
                           f"{doc.get('error')})")
            continue
        docs[name] = doc
    return docs, missing


def merge(docs: dict, missing: list[str]) -> dict:
    from cxlnic.benchutil import loadavg, machine_meta

    res = {"meta": machine_meta(loadavg()), "missing": missing, **docs}
    ins = _get(docs, "cxl.install")
    fmax = _get(docs, "synth.summary.fmax_mhz")
    if ins:
        res["install"] = {"inserts_per_cycle": ins["inserts_per_cycle"],
                          "inserts_per_s": ins["inserts_per_cycle"] * 250e6,
                          "inserts_per_s_at_fmax": ins["inserts_per_cycle"] * fmax * 1e6 if fmax else None,
                          "fmax_mhz": fmax, "load_from": ins["load_from"], "load_to": ins["load_to"]}
    rows = []
    for path, label, fmt, target, anchor in ROWS:
        v = _get(docs, path)
        met = None
        if isinstance(v, dict):                    # a benchmark's target record
            met, target, v = v.get("met"), target or v.get("target", ""), v.get("value")
        if path == "synth.summary.fmax_mhz" and v is not None:
            met = v >= 125
        rows.append({"figure": label, "value": v, "text": fmt.format(v) if v is not None else "not measured",
                     "target": target, "met": met, "anchor": anchor, "source": path})
    res["table"] = rows
    return res


def render(res: dict, plots: list[tuple[str, str]]) -> str:
    m = res["meta"]
    out = ["# Performance", "",
           f"Measured by `make bench` (and `make synth`) at commit `{m.get('git_commit', '?')[:12]}`"
           f"{' (with uncommitted changes)' if m.get('git_dirty') else ''} on {m.get('date', '?')}, "
           f"{m.get('cpu_count')} CPUs ({m.get('platform')}). Generated by `scripts/perf_report.py` from "
           "`build/bench/results.json`; do not edit by hand.", "",
           "| figure | measured | target | met | anchor |", "|---|---|---|---|---|"]
    for r in res["table"]:
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        out.append(f"| {r['figure']} | {r['text']} | {r['target']} | {met} | {r['anchor']} |")
    ins = res.get("install")
    if ins and ins.get("inserts_per_s_at_fmax"):
        out += ["", f"Install rate at the synthesized Fmax ({ins['fmax_mhz']:.1f} MHz): "
                    f"{ins['inserts_per_s_at_fmax']:,.0f} inserts/s."]
    if res["missing"]:
        out += ["", "Not measured in this run:", ""] + [f"* {x}" for x in res["missing"]]
    if plots:
        out += ["", "## Plots", ""]
        for name, title in plots:
            out += [f"### {title}", "", f"![{title}](perf/{name})", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", type=Path, default=ROOT / "build" / "bench")
    ap.add_argument("--synth", type=Path, default=ROOT / "build" / "synth")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    a = ap.parse_args(argv)
    docs, missing = load_inputs(a.bench, a.synth)
    if not docs:
        print("perf_report: no benchmark results found: run `make bench` first\n  " + "\n  ".join(missing),
              file=sys.stderr)
        return 1
    missing = [x.replace(str(ROOT) + "/", "") for x in missing]      # repository-relative in the page
    res = merge(docs, missing)
    (a.bench / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    img = a.doc.parent / "perf"
    img.mkdir(parents=True, exist_ok=True)
    plots = []
    for name, title in PLOTS:
        src = a.bench / name
        if src.exists():
            shutil.copyfile(src, img / name)
            plots.append((name, title))
    a.doc.write_text(render(res, plots))
    print(f"wrote {a.bench / 'results.json'} and {a.doc} ({len(plots)} plots); "
          f"{sum(r['met'] is False for r in res['table'])} targets not met, {len(missing)} inputs missing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
