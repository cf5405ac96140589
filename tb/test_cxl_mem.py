"""cocotb testbench: CxlMemSubordinate under Verilator, driven by the Python CXL.mem host.

The host (:class:`CxlMemHost`, random per-hop delays and S2M stalls), the
backend (:class:`BackendModel`, random latency and stalls) and the device
writer (``dev_wr``) run as one :class:`CycleLoop`.  The random stress issues
``CXL_MEM_OPS`` operations (caching and non-caching reads, write-through,
local stores written back on eviction or BISnp, partial and poisoned writes,
invalidations, device writes) over a small set of lines and checks the
data-value invariant against a shadow memory and that no device write is
granted while the host may hold the line (:class:`ShadowChecker`).  A second
test runs the golden model's table writer through :class:`CxlTableMemory`.
Run through ``tests/test_cxl_mem_rtl.py::test_cxl_mem_verilator`` (``pytest -m sim``).
"""

import os
import random

import cocotb
from cocotb.triggers import RisingEdge

from cxlnic.hdl.cxl_mem import CXL_MEM_STATS
from cxlnic.hdl.layouts import LINE_BYTES
from cxlnic.tb.common import clock_and_reset
from cxlnic.tb.cxl_mem_host import (
    CocotbIO,
    CxlTableMemory,
    CycleLoop,
    host_agents,
    random_traffic,
)

N_OPS = int(os.environ.get("CXL_MEM_OPS", "4000"))
BASE, SIZE = 0x10000, 0x4000


class TB:
    def __init__(self, dut, seed, *, delay=(0, 4), s2m_ready=0.8, latency=(0, 10), be_ready=0.8, ok_ready=0.8):
        self.dut = dut
        self.host, self.backend, self.dev, self.checker = host_agents(
            seed, (BASE, SIZE), delay=delay, s2m_ready=s2m_ready, latency=latency, be_ready=be_ready,
            ok_ready=ok_ready)
        self.loop = CycleLoop(CocotbIO(dut), [self.host, self.backend, self.dev])

    async def start(self):
        d = self.dut
        idle = {n: 0 for n in ("m2s_req__valid", "m2s_rwd__valid", "m2s_birsp__valid", "s2m_ndr__ready",
                               "s2m_drs__ready", "s2m_bisnp__ready", "mw__ready", "mw_done", "mr__ready",
                               "mr_data__valid", "dev_wr__valid", "dev_wr_ok__ready")}
        idle |= {"hdm_base": BASE, "hdm_size": SIZE}
        await clock_and_reset(d, idle)
        await RisingEdge(d.clk)
        cocotb.start_soon(self.loop.run_cocotb(d.clk))

    async def cycles(self, n):
        for _ in range(n):
            await RisingEdge(self.dut.clk)

    async def until(self, cond, max_cycles=200_000):
        for _ in range(max_cycles):
            if cond():
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError(f"stuck: {len(self.host.pending)} host requests pending, "
                             f"{len(self.backend.rq)} backend reads, {len(self.dev.q)} device writes queued")

    def _stats(self):
        raw = self.dut.stats.value.to_unsigned()
        return {n: (raw >> (32 * i)) & 0xFFFFFFFF for i, n in enumerate(CXL_MEM_STATS)}


@cocotb.test()
@cocotb.parametrize(stall=[False, True])
async def random_stress(dut, stall):
    seed = cocotb.RANDOM_SEED + int(stall)
    kw = {} if stall else dict(delay=0, s2m_ready=1.0, latency=(0, 2), be_ready=1.0, ok_ready=1.0)
    tb = TB(dut, seed, **kw)
    await tb.start()
    rng = random.Random(seed)
    n_lines = int(os.environ.get("CXL_MEM_FILTER", "16")) * 2
    lines = [BASE + rng.randrange(SIZE) for _ in range(n_lines)]
    await random_traffic(tb, rng, n_ops=N_OPS, lines=lines, p_dev=0.05)
    st = tb._stats()
    chk = tb.checker
    dut._log.info("%d ops: %d reads checked, %d device writes, host %s, device %s", N_OPS, chk.checked,
                  len(tb.dev.grants), tb.host.stats, {k: v for k, v in st.items() if v})
    for e in chk.errors:
        dut._log.error(e)
    assert not tb.host.errors, tb.host.errors[:5]
    assert chk.mismatches == 0, f"{chk.mismatches} data mismatches"
    assert chk.violations == 0, f"{chk.violations} device writes granted while the host held the line"
    assert chk.checked > N_OPS // 10 and tb.dev.grants and st["bisnp"] > 0
    assert st["illegal"] == 0 and st["birsp_errors"] == 0 and st["poison_overflow"] == 0
    # the backend holds exactly the shadow
    for a in lines:
        assert tb.backend.mem.get(a - BASE, 0) == chk.shadow.get(a, 0) or a in chk.poisoned, hex(a)


@cocotb.test()
async def table_memory_adapter(dut):
    """The golden model writes a table image through CxlTableMemory; after drain() the device memory
    holds it and the model reads its header back through the adapter."""
    from cxlnic.config import NicConfig
    from cxlnic.model.memory import BytearrayMemory, Geometry, LineWrite, format_image

    tb = TB(dut, cocotb.RANDOM_SEED + 7)
    await tb.start()
    cfg = NicConfig(cam_entries=8, n_rules=8, n_actions=8, n_buckets=8, n_stash=1, n_flows=8, n_counters=8,
                    n_tenants=2)
    n = max(a + b for a, b in cfg.regions().values()) + 24
    rng = random.Random(5)
    writes = format_image(cfg) + [LineWrite(i, rng.randbytes(LINE_BYTES)) for i in range(n - 20, n)]
    ref = BytearrayMemory(n)
    mem = CxlTableMemory(tb.host, n, base=BASE)
    ref.apply(writes)
    mem.apply(writes)
    await mem.drain()
    for i in range(n):
        got = tb.backend.mem.get(i, 0).to_bytes(LINE_BYTES, "little")
        assert got == ref.read_line(i) == mem.read_line(i), f"line {i}"
    assert Geometry.read(mem) == Geometry.read(ref)
    tb.backend.device_write(n - 1, 12345)       # a device-written line (e.g. counters): refresh reads it
    assert int.from_bytes(await mem.refresh(n - 1), "little") == 12345


@cocotb.test()
async def speed(dut):
    """The simulation-speed workload of ``scripts/bench_system.py``: :func:`random_traffic` with fixed
    settings; writes ``{"cycles", "wall_s", "checked"}`` to ``CXLNIC_SPEED_OUT``.  The same workload
    runs under Amaranth's simulator there (the same agents, :class:`CycleLoop` over :class:`AmaranthIO`)."""
    import json
    import time

    from cxlnic.tb.cxl_mem_host import SPEED_WORKLOAD
    if not os.environ.get("CXLNIC_SPEED_OUT"):
        return
    tb = TB(dut, SPEED_WORKLOAD["seed"], **SPEED_WORKLOAD["agents"])
    await tb.start()
    c0, t0 = tb.loop.cycle, time.perf_counter()
    rng = random.Random(SPEED_WORKLOAD["seed"])
    await random_traffic(tb, rng, n_ops=int(os.environ.get("CXLNIC_SPEED_OPS", "3000")),
                         lines=[BASE + i for i in range(SPEED_WORKLOAD["lines"])])
    res = {"cycles": tb.loop.cycle - c0, "wall_s": time.perf_counter() - t0, "checked": tb.checker.checked}
    assert tb.checker.mismatches == 0 and not tb.host.errors
    with open(os.environ["CXLNIC_SPEED_OUT"], "w") as f:
        json.dump(res, f)
