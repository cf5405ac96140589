"""cocotb testbench: CxlCacheAgent under Verilator against the randomised home agent of tb/cxl_home.py.

* ``coherence_stress``: device reads and writes (whole and partial lines)
  through the AXI slave and host reads and writes through the home agent, on
  a table several times the cache (constant evictions), with random per-hop
  delays, H2D reordering, D2H and AXI backpressure.  Operations on different
  lines overlap freely; on one line any number of reads overlap at most one
  write.  After every operation the data-value invariant is checked against a
  shadow memory: a read returns the value committed when it started or one
  written by a write that started before it ended.  Single writer / multiple
  readers is checked by the home agent on every message (a snoop answer or a
  request the directory does not allow is a violation), and at the end host
  memory, after pulling back every owned line, equals the shadow memory.
  ``CXL_OPS`` sets the number of operations (default 1500 per variant; 100k with
  ``HYPOTHESIS_PROFILE=long``).
* ``table_memory_over_host``: the golden model's TableMemory over the home agent (drain, sync).
* ``zipf_hit_rate``: the datapath's lookup pattern, Zipf-distributed reads
  over a table much larger than the cache; prints the hit rate.

Run through ``tests/test_cxl_cache_rtl.py::test_cxl_cache_verilator`` (``pytest -m sim``).
"""

import bisect
import collections
import itertools
import os
import random

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from cxlnic.hdl.layouts import LINE_BYTES
from cxlnic.tb.common import clock_and_reset
from cxlnic.tb.cxl_home import CxlHomeAgent

N_LINES = int(os.environ.get("CXL_N_LINES", "512"))
HOST_BASE = int(os.environ.get("CXL_HOST_BASE", "0"))
NOCACHE = tuple(int(x) for x in os.environ.get("CXL_NOCACHE", "0,0").split(","))
ID_BITS = int(os.environ.get("CXL_ID_BITS", "4"))
_LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
N_OPS = int(os.environ.get("CXL_OPS", "100000" if _LONG else "1500"))
FULL = (1 << LINE_BYTES) - 1


def merge(old, new, strb):
    for b in range(LINE_BYTES):
        if strb >> b & 1:
            mask = 0xFF << (8 * b)
            old = (old & ~mask) | (new & mask)
    return old


class AxiMaster:
    """Single-beat AXI4 master with many reads and writes outstanding (one per ID), random stalls."""

    def __init__(self, dut, rng, stall):
        self.d, self.rng, self.stall = dut, rng, stall
        self.ar, self.aw = collections.deque(), collections.deque()
        self.free = {"r": list(range(1 << ID_BITS)), "w": list(range(1 << ID_BITS))}
        self.done = {"r": {}, "w": {}}        # id -> callback(data, resp)

    def can(self, kind):
        return bool(self.free[kind])

    def read(self, line, cb):
        i = self.free["r"].pop(self.rng.randrange(len(self.free["r"])))
        self.done["r"][i] = cb
        self.ar.append((i, line))

    def write(self, line, data, strb, cb):
        i = self.free["w"].pop(self.rng.randrange(len(self.free["w"])))
        self.done["w"][i] = cb
        self.aw.append((i, line, data, strb))

    def drive(self):
        d = self.d
        d.s_axi_arvalid.value = int(bool(self.ar))
        if self.ar:
            d.s_axi_arid.value, d.s_axi_araddr.value = self.ar[0][0], self.ar[0][1] << 6
        d.s_axi_awvalid.value = d.s_axi_wvalid.value = int(bool(self.aw))
        if self.aw:
            i, line, data, strb = self.aw[0]
            d.s_axi_awid.value, d.s_axi_awaddr.value = i, line << 6
            d.s_axi_wdata.value, d.s_axi_wstrb.value, d.s_axi_wlast.value = data, strb, 1
        d.s_axi_rready.value = int(self.rng.random() >= self.stall)
        d.s_axi_bready.value = int(self.rng.random() >= self.stall)

    def sample(self):
        d = self.d
        if self.ar and d.s_axi_arready.value:
            self.ar.popleft()
        if self.aw and d.s_axi_awready.value:
            assert d.s_axi_wready.value, "AW accepted without W"
            self.aw.popleft()
        if d.s_axi_rvalid.value and d.s_axi_rready.value:
            i = d.s_axi_rid.value.to_unsigned()
            self.free["r"].append(i)
            self.done["r"].pop(i)(d.s_axi_rdata.value.to_unsigned(), d.s_axi_rresp.value.to_unsigned())
        if d.s_axi_bvalid.value and d.s_axi_bready.value:
            i = d.s_axi_bid.value.to_unsigned()
            self.free["w"].append(i)
            self.done["w"].pop(i)(None, d.s_axi_bresp.value.to_unsigned())


class TB:
    def __init__(self, dut, seed, *, stall=0.0, delay=(0, 6), reorder=True):
        self.dut = dut
        self.rng = random.Random(seed)
        self.home = CxlHomeAgent(dut, N_LINES, base=HOST_BASE, seed=seed + 1, delay=delay, reorder=reorder,
                                 d2h_stall=stall, p_drop=0.4, p_snoop_s=0.3)
        self.axi = AxiMaster(dut, random.Random(seed + 2), stall)
        self.errors = 0

    async def reset(self):
        d = self.dut
        idle = {f"h2d_{c}__valid": 0 for c in ("req", "rsp", "data")}
        idle |= {"s_axi_arvalid": 0, "s_axi_awvalid": 0, "s_axi_wvalid": 0, "inval__ready": 1}
        await clock_and_reset(d, idle)
        while d.clearing.value or d.rst.value:
            await RisingEdge(d.clk)

    def error(self, msg):
        self.errors += 1
        if self.errors <= 20:
            self.dut._log.error(msg)

    def stats(self):
        return {s: getattr(self.dut, s).value.to_unsigned()
                for s in ("hits", "misses", "snoops", "evictions", "bogus", "errors")}


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.3], reorder=[True, False])
async def coherence_stress(dut, stall, reorder):
    tb = TB(dut, cocotb.RANDOM_SEED + int(stall * 10) + 7 * reorder, stall=stall, reorder=reorder)
    await tb.reset()
    rng, home, axi = tb.rng, tb.home, tb.axi
    hist = {ln: [0] for ln in range(N_LINES)}          # every value each line has been written, in order
    committed = {ln: 0 for ln in range(N_LINES)}       # index in hist of the last completed write
    writer = set()                                     # lines with a write in flight
    readers = collections.Counter()
    inflight = []                                      # host ops: (fut, callback)
    started = finished = 0
    max_inflight = 24
    hot = rng.sample(range(N_LINES), 16)               # a few hot lines make same-line races frequent

    def pick_line():
        return rng.choice(hot) if rng.random() < 0.3 else rng.randrange(N_LINES)

    def start_read(line, who):
        lo = committed[line]
        readers[line] += 1

        def done(data, resp):
            nonlocal finished
            finished += 1
            readers[line] -= 1
            allowed = hist[line][lo:]
            if resp != 0 or data not in allowed:
                tb.error(f"{who} read of line {line}: resp {resp}, value "
                         f"{'in' if data in hist[line] else 'never'} written (allowed {len(allowed)} values)")
        return done

    def start_write(line, new, who):
        writer.add(line)
        hist[line].append(new)
        idx = len(hist[line]) - 1

        def done(_, resp):
            nonlocal finished
            finished += 1
            writer.discard(line)
            committed[line] = idx
            if resp != 0:
                tb.error(f"{who} write of line {line}: resp {resp}")
        return done

    cycle = quiet = 0
    while finished < N_OPS:
        n_busy = len(inflight) + sum(len(v) for v in axi.done.values())
        if started < N_OPS and n_busy < max_inflight and rng.random() < 0.7:
            line = pick_line()
            r = rng.random()
            if r < 0.35 and axi.can("r"):
                axi.read(line, start_read(line, "device"))
                started += 1
            elif r < 0.6 and line not in writer and axi.can("w"):
                v = rng.getrandbits(8 * LINE_BYTES)
                strb = FULL if rng.random() < 0.5 else rng.getrandbits(LINE_BYTES)
                axi.write(line, v, strb, start_write(line, merge(hist[line][-1], v, strb), "device"))
                started += 1
            elif r < 0.8:
                cb = start_read(line, "host")
                inflight.append((home.core.host_read(line), lambda v, cb=cb: cb(int.from_bytes(v, "little"), 0)))
                started += 1
            elif line not in writer:
                v = rng.getrandbits(8 * LINE_BYTES)
                cb = start_write(line, v, "host")
                inflight.append((home.core.host_write(line, v.to_bytes(LINE_BYTES, "little")),
                                 lambda _v, cb=cb: cb(None, 0)))
                started += 1
        axi.drive()
        await ReadOnly()
        before = finished
        axi.sample()
        for e in [e for e in inflight if e[0].done]:
            inflight.remove(e)
            e[1](e[0].value)
        quiet = 0 if finished != before else quiet + 1
        if quiet > 20000:
            raise AssertionError(f"stuck at cycle {cycle}: {finished}/{N_OPS} done, {len(inflight)} host ops, "
                                 f"axi {len(axi.done['r'])} reads {len(axi.done['w'])} writes, "
                                 f"home idle={home.core.idle()}")
        await RisingEdge(dut.clk)
        cycle += 1
    # pull every owned line back and compare all of host memory with the last value written
    await home.sync()
    bad = [ln for ln in range(N_LINES) if int.from_bytes(home.core.line(ln), "little") != hist[ln][-1]]
    for ln in bad[:10]:
        tb.error(f"host memory line {ln} differs from the shadow after sync")
    for v in home.core.violations[:20]:
        dut._log.error("protocol: %s", v)
    st = tb.stats()
    dut._log.info("coherence stress: %d ops in %d cycles (stall %s, reorder %s); stats %s; home %s",
                  N_OPS, cycle, stall, reorder, st, dict(home.core.stats))
    assert tb.errors == 0 and not bad and not home.core.violations, \
        f"{tb.errors} data errors, {len(bad)} bad lines, {len(home.core.violations)} protocol violations"
    assert st["snoops"] > 0 and st["evictions"] > 0 and st["hits"] > 0


def zipf_sampler(rng, n, s):
    weights = [1 / (k + 1) ** s for k in range(n)]
    cum = list(itertools.accumulate(weights))
    perm = list(range(n))
    rng.shuffle(perm)                  # hot entries spread over the table (hashing)

    def draw():
        return perm[bisect.bisect(cum, rng.random() * cum[-1])]
    return draw


@cocotb.test()
async def zipf_hit_rate(dut):
    """Table lookups (device reads, 16 outstanding) with Zipf(1.0) popularity over every table line; the
    host rewrites a random entry now and then.  Prints the device-cache hit rate."""
    tb = TB(dut, cocotb.RANDOM_SEED + 99, delay=(20, 40))
    await tb.reset()
    rng, axi, home = tb.rng, tb.axi, tb.home
    draw = zipf_sampler(rng, N_LINES, 1.0)
    n = max(3000, N_OPS)
    hist = [[0] for _ in range(N_LINES)]      # values written to each line, in order
    committed = [0] * N_LINES                 # index in hist of the last completed host write
    done = started = 0
    host_w = None
    n_host = 0
    while done < n:
        if started < n and axi.can("r") and rng.random() < 0.8:
            line = draw()

            def cb(data, resp, line=line, lo=committed[line]):
                nonlocal done
                done += 1
                if resp or data not in hist[line][lo:]:   # the value at issue or a later one
                    tb.error(f"lookup of line {line}: stale or bad data")
            axi.read(line, cb)
            started += 1
        if host_w is None and rng.random() < 0.002:
            wline = draw()
            hist[wline].append(rng.getrandbits(8 * LINE_BYTES))
            host_w = home.core.host_write(wline, hist[wline][-1].to_bytes(LINE_BYTES, "little"))
            n_host += 1
        elif host_w is not None and host_w.done:
            committed[wline] = len(hist[wline]) - 1
            host_w = None
        axi.drive()
        await ReadOnly()
        axi.sample()
        await RisingEdge(dut.clk)
    st = tb.stats()
    rate = st["hits"] / (st["hits"] + st["misses"])
    msg = (f"CXL.cache device hit rate on Zipf(1.0) lookups: {rate:.3f} ({st['hits']} hits, {st['misses']} misses, "
           f"{n} lookups over {N_LINES} lines, {n_host} host writes, cache {os.environ.get('CXL_CACHE_LINES')} lines)")
    dut._log.info(msg)
    print(msg)
    out = os.environ.get("CXL_HIT_RATE_FILE")
    if out:
        with open(out, "w") as f:
            f.write(f"{rate:.4f} {st['hits']} {st['misses']} {n}\n")
    assert tb.errors == 0 and not home.core.violations
    assert 0.3 < rate < 1.0


@cocotb.test()
async def table_memory_over_host(dut):
    """The golden model's TableMemory over host memory: the model formats an image with ``write_line``
    (queued, read-your-writes), the device reads stale data until ``drain()`` and the image after it;
    a device write becomes visible to the model's ``read_line`` after ``sync()``."""
    from cxlnic.config import NicConfig
    from cxlnic.model.memory import Geometry, format_image

    tb = TB(dut, cocotb.RANDOM_SEED + 5)
    await tb.reset()
    home, axi = tb.home, tb.axi
    cfg = NicConfig(cam_entries=16, n_rules=64, n_actions=64, n_buckets=64, n_tenants=4, n_flows=64, n_counters=64)
    writes = format_image(cfg)
    home.apply(writes)
    header = next(w.data for w in writes if w.index == 0)
    assert home.read_line(0) == header and home.core.line(0) == bytes(LINE_BYTES)
    got = []

    async def dev_read(line):
        axi.read(line, lambda data, resp: got.append((data, resp)))
        while axi.done["r"]:
            axi.drive()
            await ReadOnly()
            axi.sample()
            await RisingEdge(dut.clk)
        return got.pop()

    assert await dev_read(0) == (0, 0)                 # cached now, before the drain
    await home.drain()
    assert home.core.line(0) == header
    assert await dev_read(0) == (int.from_bytes(header, "little"), 0)    # the snoop dropped the stale copy
    await home.sync()                                  # the device may own line 0 now (RdAny): pull it back
    g = Geometry.read(home)
    line = g.counters_off
    axi.write(line, 0x1234, 0b11, lambda *_: got.append("b"))
    while axi.done["w"]:
        axi.drive()
        await ReadOnly()
        axi.sample()
        await RisingEdge(dut.clk)
    await home.sync()
    assert int.from_bytes(home.read_line(line), "little") == 0x1234
    assert home.dirty_reads == 0 and not home.core.violations
