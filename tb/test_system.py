"""cocotb tests: whole-system runs of the SmartNic (``tb/system.py``) against the golden slow path.

One test, ``system``, whose run is chosen by the environment (set by
``tests/test_system_rtl.py`` and by ``cxlnic sim`` / ``make sim``):
``CXLNIC_SCENARIO`` (see :data:`~cxlnic.tb.system.SYSTEM_SCENARIOS`),
``CXLNIC_PACKETS``, ``CXLNIC_SEED``, ``CXLNIC_BURST`` and ``CXLNIC_EPOCH_MS`` (an epoch ends
after that many received frames or that much scenario time), ``CXLNIC_OUT_STALL``
(0..255: sinks refuse a beat with probability ~n/256), ``CXLNIC_PCAP`` +
``CXLNIC_RULES`` (a capture and a rules file instead of a scenario),
``CXLNIC_SIM_OUT`` (folder for report.json and out.pcap), ``CXLNIC_PROGRESS``, ``CXLNIC_TYPE``
(1 or 2: the device type the harness was built as, set by ``run_system_sim``).
"""

from __future__ import annotations

import os

import cocotb

from cxlnic.tb.system import run_system


@cocotb.test()
async def system(dut):
    env = os.environ.get
    rep = await run_system(
        dut, scenario=env("CXLNIC_SCENARIO", "mixed"), packets=int(env("CXLNIC_PACKETS", "3000")),
        seed=int(env("CXLNIC_SEED", "1")), burst=int(env("CXLNIC_BURST", "1024")),
        epoch_ms=float(env("CXLNIC_EPOCH_MS", "2")),
        out_stall=int(env("CXLNIC_OUT_STALL", "0")), pcap=env("CXLNIC_PCAP") or None,
        rules=env("CXLNIC_RULES") or None, out_dir=env("CXLNIC_SIM_OUT") or None,
        progress=env("CXLNIC_PROGRESS", "0") == "1", cxl_type=int(env("CXLNIC_TYPE", "2")))
    dut._log.info("system run: %s", {k: rep[k] for k in ("scenario", "packets", "mismatches", "paths",
                                                           "slow_path", "packets_per_wall_s")})
    # every received frame came back on exactly one stream (the device's own counters)
    dp = rep["rtl_stats"]["datapath"]
    assert dp["rx_frames"] == rep["packets"] + sum(rep["storm_frame_paths"].values()), dp
    assert rep["mismatches"] == 0, f"{rep['mismatches']} mismatches (first ones in the log above)"


@cocotb.test()
async def speed(dut):
    """Simulation speed of the harness alone (no Python between cycles): idle cycles per wall second,
    and cycles per second with frames streaming at line rate (a static-rules trace, played unchecked)."""
    import json
    import time

    from cocotb.triggers import Timer

    from cxlnic.model.scenario import generate
    from cxlnic.tb.common import CLOCK_NS
    from cxlnic.tb.harness import system_config
    from cxlnic.tb.system import SystemTB

    tb = SystemTB(dut, system_config(), cap_beats=0)
    await tb.reset()
    n = int(os.environ.get("CXLNIC_SPEED_CYCLES", "200000"))
    t0 = time.perf_counter()
    await Timer(n * CLOCK_NS, unit="ns")
    idle = n / (time.perf_counter() - t0)
    sc = generate("static", packets=int(os.environ.get("CXLNIC_SPEED_PACKETS", "4000")), seed=1)
    words = [w for p in sc.packets for w in tb.rx_words(p.frame, p.in_port)]
    t0 = time.perf_counter()
    b = await tb.play(rx=words, frames=len(sc.packets), what="speed")
    wall = time.perf_counter() - t0
    res = {"idle_cycles_per_s": round(idle), "traffic_cycles": b.cycles, "traffic_frames": len(sc.packets),
           "traffic_beats": len(words), "traffic_cycles_per_s": round(b.cycles / wall),
           "traffic_packets_per_s": round(len(sc.packets) / wall)}
    dut._log.info("simulation speed: %s", res)
    if os.environ.get("CXLNIC_SPEED_OUT"):
        with open(os.environ["CXLNIC_SPEED_OUT"], "w") as f:
            json.dump(res, f)
    tb.close()
