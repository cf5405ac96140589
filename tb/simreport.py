"""The ``make sim`` summary and plots, from the system run's ``report.json`` (tb/system.py)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["print_report", "write_plots"]

CLOCK_MHZ = 250


def print_report(doc: dict, f) -> None:
    n = doc["packets"] or 1

    def pct(x):
        return f"{x:>9} ({100 * x / n:5.1f}%)"
    p, v, s = doc["paths"], doc["verdicts"], doc["slow_path"]
    print(f"\n== cxlnic sim: {doc['input']} ==", file=f)
    print("== received packets by path ==", file=f)
    for name, label in (("cam", "CAM"), ("flow", "DRAM flow"), ("upcall", "upcall"), ("exception", "exception")):
        print(f"  {label:<12}{pct(p.get(name, 0))}", file=f)
    print(f"== device outputs (received + reinjected) == out {v['out']}, to host {v['upcall']}, dropped {v['drop']}",
          file=f)
    print(f"== slow path == upcalls handled {s['handled']} (already installed by an earlier upcall: {s['rehit']}), "
          f"reinjected {s['reinjected']}, dropped by the host {s['host_drops']}", file=f)
    fl = doc["flows"]
    print(f"== flows == installed {fl['installed']}, deleted {fl['deleted']}, live {fl['live']} "
          f"(load {fl['load']:.3f}), install failures {s['install_failures']}", file=f)
    if s.get("storm_inserts") or s.get("gated_copies"):
        print(f"== table traffic == bulk inserts {s['storm_inserts']}, frames of present flows during the inserts "
              f"{s['hot_frames']}, frames sent at their install's Cmp {s['gated_copies']}", file=f)
    lat = doc["install_to_fast_path_cycles"]
    if lat.get("n"):
        us = {k: lat[k] / CLOCK_MHZ for k in ("p50", "p90", "p99", "max")}
        print(f"== install -> first fast-path packet (cycles, over {lat['n']} flows) == p50 {lat['p50']}, "
              f"p90 {lat['p90']}, p99 {lat['p99']}, max {lat['max']}  "
              f"(@{CLOCK_MHZ} MHz: p50 {us['p50']:.1f} us, p99 {us['p99']:.1f} us)", file=f)
    if doc.get("cxl_type", 2) == 2:
        print(f"== CXL.mem == {doc['cxl_writes']} line writes (MemWr), back-invalidations {doc['bisnp']}", file=f)
    else:
        cc, st = doc["rtl_stats"]["cxl_cache"], doc["rtl_stats"]
        print(f"== CXL.cache == {st['host_writes']} host line writes, {st['host_reads']} host line reads; device "
              f"cache {cc['hits']} hits / {cc['misses']} misses, {cc['evictions']} evictions, {cc['snoops']} snoops "
              f"answered; mirrors: {cc['refetches']} lines refetched, {cc['bucket_reports']} bucket lines "
              f"reported; errors {cc['errors'] + cc['read_errors']}", file=f)
    print(f"== rate == {doc['packets_per_cycle']} received packets/cycle ({doc['rx_beats_per_cycle']} beats/cycle: "
          f"1.0 is line rate) during traffic bursts; {doc['epochs']} epochs of <= {doc['burst']} frames / "
          f"{doc['epoch_ms']} ms of trace; {doc['cycles']} cycles in all", file=f)
    c = doc["compared"]
    print(f"== checked == {c['out']} output frames, {c['upcall']} upcalls, {c['drop']} drops, "
          f"{c['counter_lines']} counter lines ({doc['counters_verified']} counters), {c['table_lines']} table lines",
          file=f)
    print(f"== simulation == {doc['wall_s']} s: {doc['packets_per_wall_s']:,.0f} packets/s, "
          f"{doc['cycles_per_wall_s']:,.0f} cycles/s", file=f)
    print(f"== mismatches == {doc['mismatches']}", file=f)


def write_plots(doc: dict, out: Path) -> list[Path]:
    """paths.png (packets per path) and install_latency.png (install -> first fast-path packet)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = ["cam", "flow", "upcall", "exception"]
    vals = [doc["paths"].get(k, 0) for k in names]
    ax.bar(["CAM", "DRAM flow", "upcall", "exception"], vals, color=["#4c72b0", "#55a868", "#dd8452", "#c44e52"])
    ax.set_ylabel("received packets")
    ax.set_title(f"{doc['scenario']}: {doc['packets']} packets by path")
    for i, v in enumerate(vals):
        ax.text(i, v, str(v), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    files.append(out / "paths.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    lat = doc.get("install_to_fast_path_samples") or []
    if lat:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.hist([x / CLOCK_MHZ for x in lat], bins=40, color="#55a868")
        ax.set_xlabel(f"install -> first fast-path packet (us at {CLOCK_MHZ} MHz)")
        ax.set_ylabel("flows")
        ax.set_title(f"{len(lat)} installs (p50 {doc['install_to_fast_path_cycles']['p50']} cycles)")
        fig.tight_layout()
        files.append(out / "install_latency.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    return files
