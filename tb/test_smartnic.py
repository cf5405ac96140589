"""cocotb testbench: the SmartNic top (Type 2) — the host programs the datapath with CXL.mem writes.

The golden model runs over :class:`~cxlnic.tb.cxl_mem_host.CxlTableMemory`,
so every line it writes (table format, rules, flows, actions, hash key)
becomes a CXL.mem MemWr from the Python host master, with a per-hop delay,
into the DUT's subordinate, which writes DRAM and the datapath's mirrors.
Nothing is loaded behind the DUT's back: DRAM starts all zero.

* ``tables_and_packets_through_cxl``: the model's whole image arrives by
  CXL writes (DRAM compared byte for byte), then the scenario's traffic is
  checked frame by frame against :meth:`SlowPath.fast_path`, upcalls are
  reinjected and checked against :meth:`SlowPath.execute`; every counter line
  is read back with MemRd and compared with the model's counters.
* ``writes_visible_after_cmp``: flows installed one upcall at a time by the
  model; the moment the last Cmp of an install reaches the host, the same
  frame is sent and must take the fast path exactly as the model says (a
  frame that missed the write would come back as an upcall).  Records each
  write's host-send → visible-to-datapath latency in cycles.
* ``counter_write_back_snoops_host``: the host caches counter lines (MemRd
  S), a flush makes the counter block write them back: every write-back is
  preceded by a BISnpInv the host answers, the host ends holding none of them,
  and DRAM then holds exactly the model's counters.

Run through ``tests/test_smartnic_rtl.py`` (``pytest -m sim``).
"""

from __future__ import annotations

import json
import os
import statistics

import cocotb
from cocotb.triggers import RisingEdge

from cxlnic.hdl.cxl_mem import CXL_MEM_STATS
from cxlnic.hdl.layouts import LINE_BYTES
from cxlnic.model.flowtable import FKEY, TableFull
from cxlnic.model.memory import format_image
from cxlnic.model.rulelang import parse_rules
from cxlnic.model.scenario import generate
from cxlnic.model.slowpath import FENTRY, SlowPath, Upcall
from cxlnic.tb.cxl_mem_host import CxlMemHost, CxlTableMemory
from cxlnic.tb.datapath_tb import DatapathTB, counter_line, expect_rx
from cxlnic.tb.test_datapath import PACKETS, check_streams, compare, run_and_check, tb_config

HOP = int(os.environ.get("CXLNIC_HOP", "4"))          # per-hop delay of every CXL message, cycles
HDM_BASE = 0x1000                                      # HPA line of device line 0


class SmartNicTB(DatapathTB):
    """The Datapath testbench with the host side on CXL.mem: line writes and reads are MemWr/MemRd."""

    def __init__(self, dut, cfg, seed, *, stall=0.0, hop=HOP, **kw):
        super().__init__(dut, cfg, seed, dram_stall=stall, out_stall=stall, host_ports=False, **kw)
        self.host = CxlMemHost(rng=self.rng, delay=hop, s2m_ready=1.0 - stall / 2,
                               hdm=(HDM_BASE, cfg.image_lines))
        self.agents.append(self.host)
        self.reads = []

    async def reset(self, extra=None):
        await super().reset({"hdm_base": HDM_BASE, "hdm_size": self.cfg.image_lines, "m2s_req__valid": 0,
                             "m2s_rwd__valid": 0, "m2s_birsp__valid": 0, "s2m_ndr__ready": 0,
                             "s2m_drs__ready": 0, "s2m_bisnp__ready": 0, **(extra or {})})

    def write_line(self, line: int, raw: bytes) -> None:
        self.host.write(HDM_BASE + line, int.from_bytes(raw, "little"))

    def read_line(self, line: int, meta: str = "none") -> None:
        self.reads.append(self.host.read(HDM_BASE + line, meta))

    def mem_stats(self) -> dict:
        w = self.dut.mem_stats.value.to_unsigned()
        return {n: w >> (32 * k) & 0xFFFFFFFF for k, n in enumerate(CXL_MEM_STATS)}


async def setup(dut, seed, stall, *, warm=0.5, **kw):
    """The model over CXL: format, rules and the first ``warm`` of the trace, every write a MemWr."""
    cfg = tb_config()
    tb = SmartNicTB(dut, cfg, seed, stall=stall, **kw)
    tb.dut_cap = int(os.environ["CXLNIC_DP_CAP_BYTES"])
    await tb.reset()
    mem = CxlTableMemory(tb.host, cfg.image_lines, base=HDM_BASE)
    mem.apply(format_image(cfg))
    sc = generate("mixed", packets=PACKETS, seed=seed, tenants=2)
    sp = SlowPath(mem, cfg)
    sp.install_rules(parse_rules(sc.rules_text))
    n = int(len(sc.packets) * warm)
    for p in sc.packets[:n]:
        sp.process(p.frame, p.in_port, p.time)
    sp.counters.packets = [0] * sp.counters.n       # the DUT's counters start at zero
    sp.counters.bytes = [0] * sp.counters.n
    n_writes = len(mem.queued)
    await tb.run(until=lambda: tb.host.idle())
    await mem.drain()
    assert not tb.host.errors, tb.host.errors[:5]
    end = sp.geom.counters_off
    dram = tb.ram.read(0, end * LINE_BYTES) if tb.ram else bytes(tb.fixed.mem[:end * LINE_BYTES])
    assert dram == bytes(mem.image[:end * LINE_BYTES]), "DRAM differs from the model's image after the CXL writes"
    assert len(tb.visible) == n_writes, f"{len(tb.visible)} writes made visible, {n_writes} sent"
    dut._log.info("image loaded by %d CXL.mem writes in %d cycles", n_writes, tb.cycles)
    return tb, sp, mem, sc.packets[n:]


async def read_counter_lines(dut, tb, sp) -> int:
    g = sp.geom
    lines = list(range(g.counters_off, g.counters_off + (sp.counters.n + 3) // 4))
    tb.reads.clear()
    for line in lines:
        tb.read_line(line)
    await tb.run(until=lambda: all(r.done for r in tb.reads))
    got = [(r.rdata.to_bytes(LINE_BYTES, "little"),) for r in tb.reads]
    want = [(counter_line(sp, line - g.counters_off),) for line in lines]
    dut._log.info("%d counter lines read through CXL.mem, %d nonzero in the model", len(lines),
                  sum(1 for (w,) in want if any(w)))
    return compare(dut, "counter line", got, want)


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.3])
async def tables_and_packets_through_cxl(dut, stall):
    tb, sp, _mem, packets = await setup(dut, cocotb.RANDOM_SEED + int(stall * 10), stall)
    bad, _exp = await run_and_check(dut, tb, sp, packets)
    bad += await read_counter_lines(dut, tb, sp)
    st = tb.mem_stats()
    dut._log.info("CXL.mem stats %s", st)
    assert st["unmapped"] == st["illegal"] == 0
    assert not tb.host.errors, tb.host.errors[:5]
    assert not bad, f"{bad} mismatches"


@cocotb.test()
async def writes_visible_after_cmp(dut):
    seed = cocotb.RANDOM_SEED + 7
    tb, sp, mem, packets = await setup(dut, seed, 0.0, warm=0.3)
    tb.in_gap = (0, 0)
    lat, dev, n_inst, bad = [], [], 0, 0
    for p in packets:
        d = sp.fast_path(p.frame, p.in_port)
        if not isinstance(d, Upcall) or d.reason not in ("cam_miss", "ct_commit"):
            continue
        start = len(tb.visible)
        sp.process(p.frame, p.in_port, p.time)            # the model installs the flow: CXL writes queued
        reqs = list(mem.queued)
        mem.queued.clear()
        if not reqs:
            continue
        e = expect_rx(sp, p.frame, p.in_port, tb.dut_cap)
        # run exactly until the device sends the install's last Cmp; the frame enters in the next cycle
        n_ndr = len(tb.host.received["ndr"]) + len(reqs)
        await tb.run(stop=lambda k=n_ndr: len(tb.host.received["ndr"]) >= k)
        tb.out.clear(), tb.upcalls.clear(), tb.drops.clear()
        if e.path == "flow":          # (a connection whose next frame is not fast-path eligible: writes only)
            tb.send(p.frame, p.in_port)
        await tb.run()
        assert all(r.done for r in reqs)
        if e.path == "flow":
            bad += check_streams(dut, tb, [e])
        vis = tb.visible[start:]
        assert len(vis) == len(reqs), f"{len(vis)} visibility pulses for {len(reqs)} writes"
        lat += [c + 1 - r.sent_cycle for (c, _a), r in zip(vis, reqs, strict=True)]
        dev += [c + 1 - r.accept_cycle for (c, _a), r in zip(vis, reqs, strict=True)]
        if e.path != "flow":
            continue
        n_inst += 1
        if n_inst >= int(os.environ.get("CXLNIC_VIS_INSTALLS", "40")):
            break
    assert n_inst >= 10, f"only {n_inst} installs tried"
    # sustained CXL.mem line operations into the datapath backend: a burst of full-line writes (each line
    # rewritten with its own content), then a burst of reads of the same lines (checked against the image)
    n_lines = min(512, sp.geom.counters_off)
    rates = {}
    for kind in ("write", "read"):
        reqs = []
        for line in range(n_lines):
            raw = int.from_bytes(mem.read_line(line), "little")
            reqs.append(tb.host.write(HDM_BASE + line, raw) if kind == "write" else tb.host.read(HDM_BASE + line))
        await tb.run(until=lambda rs=reqs: all(r.done for r in rs))
        acc = sorted(r.accept_cycle for r in reqs)
        rates[kind] = n_lines / (acc[-1] - acc[0] + 1)
        if kind == "read":
            bad += compare(dut, "burst read", [(r.rdata,) for r in reqs],
                           [(int.from_bytes(mem.read_line(line), "little"),) for line in range(n_lines)])
    lat.sort()
    res = {"hop_delay_cycles": HOP, "installs": n_inst, "writes": len(lat), "min": lat[0],
           "median": statistics.median(lat), "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))], "max": lat[-1],
           "samples": lat, "device_cycles": {"min": min(dev), "median": statistics.median(dev), "max": max(dev)},
           "device_samples": dev,
           "burst_lines": n_lines, "write_ops_per_cycle": rates["write"],
           "read_ops_per_cycle": rates["read"]}
    dut._log.info("visibility latency (host send -> visible), hop %d: %s", HOP,
                  {k: v for k, v in res.items() if k != "samples"})
    if os.environ.get("CXLNIC_VIS_OUT"):
        with open(os.environ["CXLNIC_VIS_OUT"], "w") as f:
            json.dump(res, f)
    assert not bad, f"{bad} frames sent right after an install's Cmp did not see it"


@cocotb.test()
async def counter_write_back_snoops_host(dut):
    tb, sp, _mem, packets = await setup(dut, cocotb.RANDOM_SEED + 3, 0.0)
    exp = []
    for p in packets[:600]:
        tb.send(p.frame, p.in_port)
        exp.append(expect_rx(sp, p.frame, p.in_port, tb.dut_cap))
    await tb.run()
    bad = check_streams(dut, tb, exp)
    g = sp.geom
    hot = sorted({g.counters_off + i // 4 for i in range(sp.counters.n) if sp.counters.packets[i]})
    assert len(hot) >= 4, hot
    # the host caches every counter line traffic touched (MemRd, MetaValue S: the snoop filter records it)
    tb.reads.clear()
    for line in hot:
        tb.read_line(line, "S")
    await tb.run(until=lambda: all(r.done for r in tb.reads))
    assert all(tb.host.state(HDM_BASE + line) == "S" for line in hot)
    before = tb.mem_stats()
    dut.flush.value = 1
    await RisingEdge(dut.clk)
    dut.flush.value = 0
    done = []

    async def watch():
        while not done:
            await RisingEdge(dut.clk)
            if dut.flush_done.value:
                done.append(tb.cycles)
    cocotb.start_soon(watch())
    await tb.run(until=lambda: bool(done) and tb.host.idle())
    st = tb.mem_stats()
    snoops = st["bisnp"] - before["bisnp"]
    grants = st["dev_grants"] - before["dev_grants"]
    dut._log.info("flush: %d write-back grants, %d BISnp, host still holding %d of %d lines", grants, snoops,
                  sum(tb.host.state(HDM_BASE + line) != "I" for line in hot), len(hot))
    assert grants >= len(hot), f"{grants} grants for {len(hot)} dirty counter lines"
    assert snoops >= len(hot), f"only {snoops} back-invalidations for {len(hot)} host-cached lines"
    assert all(tb.host.state(HDM_BASE + line) == "I" for line in hot), "the host kept a line the device wrote"
    # DRAM alone now holds the exact counters
    n_lines = (sp.counters.n + 3) // 4
    raw = tb.ram.read(g.counters_off * LINE_BYTES, n_lines * LINE_BYTES)
    got = [(raw[k * LINE_BYTES:(k + 1) * LINE_BYTES],) for k in range(n_lines)]
    bad += compare(dut, "DRAM counter line", got, [(counter_line(sp, k),) for k in range(n_lines)])
    assert not tb.host.errors, tb.host.errors[:5]
    assert not bad, f"{bad} mismatches"


@cocotb.test()
async def install_rate(dut):
    """Host inserts into the live table at ~90 % load through CXL.mem, flow-hit traffic running.

    The model fills the flow table (every write a MemWr) to ``LO``; then the inserts that take it from
    ``LO`` to ``HI`` are streamed back to back (writes in the model's order: entry line, then bucket lines
    of the cuckoo path, free end first), while frames of flows already present keep arriving.  Rate =
    inserts / cycles from the first of those writes leaving the host to the last one's Cmp arriving there.
    Every frame must match the model (a move may never make a present flow miss)."""
    lo, hi = float(os.environ.get("CXLNIC_INSTALL_LO", "0.86")), float(os.environ.get("CXLNIC_INSTALL_HI", "0.92"))
    tb, sp, mem, packets = await setup(dut, cocotb.RANDOM_SEED + 11, 0.0, warm=0.3)
    rng = tb.rng
    ft = sp.flows

    def fresh():
        k = FKEY.new(tenant=rng.getrandbits(24), in_port=rng.getrandbits(8), eth_type=0x0800, ip_proto=17,
                     src_port=rng.getrandbits(16), dst_port=rng.getrandbits(16),
                     src_ip=0xFFFF << 32 | rng.getrandbits(32), dst_ip=0xFFFF << 32 | rng.getrandbits(32))
        return FENTRY.new(key=k, conn_state=0, action=0)

    while ft.load < lo:
        ft.insert(fresh())
    await tb.run(until=lambda: tb.host.idle())
    # the flow-path frames of the remaining trace keep flowing during the measured inserts
    hot, exp = [], []
    for p in packets:
        e = expect_rx(sp, p.frame, p.in_port, tb.dut_cap)
        if e.path == "flow" and len(hot) < 400:
            hot.append(p)
            exp.append(e)
    tb.out.clear(), tb.upcalls.clear(), tb.drops.clear()
    mem.queued.clear()
    c0 = tb.host.cycle
    n_ins = moves = 0
    while ft.load < hi:
        try:
            op = ft.insert(fresh())
        except TableFull:
            break
        n_ins += 1
        moves += op.moves
    reqs = list(mem.queued)
    for p in hot:
        tb.send(p.frame, p.in_port)
    await tb.run(until=lambda: all(r.done for r in reqs))
    cycles = max(r.done_cycle for r in reqs) - c0
    await tb.run()                       # the frames still in the pipeline
    bad = check_streams(dut, tb, exp)
    res = {"load_from": lo, "load_to": ft.load, "inserts": n_ins, "line_writes": len(reqs), "moves": moves,
           "cycles": cycles, "inserts_per_cycle": n_ins / cycles, "hop_delay_cycles": HOP,
           "frames_during": len(hot)}
    dut._log.info("install rate: %s", res)
    if os.environ.get("CXLNIC_INSTALL_OUT"):
        with open(os.environ["CXLNIC_INSTALL_OUT"], "w") as f:
            json.dump(res, f)
    assert n_ins >= 20, res
    assert not bad, f"{bad} frames of present flows mismatched during the inserts"
