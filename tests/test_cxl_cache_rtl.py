"""CxlCacheAgent RTL (Amaranth simulator): directed CXL.cache flows and races, plus the Verilator stress.

Expected values come from CXL.md's tables (snoop replies, request opcodes
and encodings, written out again here) and from Python shadow data, never
from the RTL.  The host side is either scripted message by message
(``Harness.send``) or the randomised home agent of ``tb/cxl_home.py``.
"""

import random

import pytest
from amaranth.hdl import Fragment, ResetInserter, Signal
from amaranth.sim import Simulator

from cxlnic.hdl.cxl_cache import CxlCacheAgent
from cxlnic.hdl.layouts import LINE_BYTES
from cxlnic.tb.cxl_home import D2H, H2D, HomeCore, pack, unpack

# ---- encodings, copied from CXL.md (independent of hdl/cxl_cache.py) ----
RD_CURR, RD_OWN, RD_SHARED, RD_ANY, ITOM_WR = 0b00001, 0b00010, 0b00011, 0b00100, 0b00110
CLEAN_EVICT, DIRTY_EVICT, CLEAN_EVICT_NO_DATA = 0b01001, 0b01010, 0b01011
GO, GO_WP, GO_WP_DROP, GO_ERR_WP = 0b0100, 0b0101, 0b1000, 0b1111
ST_I, ST_S, ST_E, ST_M, ST_ERR = 0b0011, 0b0001, 0b0010, 0b0110, 0b0100
SNP_DATA, SNP_INV, SNP_CUR = 0b001, 0b010, 0b011
R_IHITI, R_VHITV, R_IHITSE, R_SHITSE, R_SFWDM, R_IFWDM, R_VFWDV = (0b00100, 0b00110, 0b00101, 0b00001, 0b00111,
                                                                   0b01111, 0b10110)
#: CXL.md's snoop-reply table: (line state, snoop) -> (reply, state after)
SNOOP_TABLE = {
    ("I", SNP_INV): (R_IHITI, "I"), ("I", SNP_DATA): (R_IHITI, "I"), ("I", SNP_CUR): (R_IHITI, "I"),
    ("S", SNP_INV): (R_IHITSE, "I"), ("S", SNP_DATA): (R_SHITSE, "S"), ("S", SNP_CUR): (R_VHITV, "S"),
    ("E", SNP_INV): (R_IHITSE, "I"), ("E", SNP_DATA): (R_SHITSE, "S"), ("E", SNP_CUR): (R_VHITV, "E"),
    ("M", SNP_INV): (R_IFWDM, "I"), ("M", SNP_DATA): (R_SFWDM, "S"), ("M", SNP_CUR): (R_VFWDV, "M"),
}
FWD = {R_IFWDM, R_SFWDM, R_VFWDV}
SLVERR = 2
FULL = (1 << LINE_BYTES) - 1


def rnd_line(rng):
    return rng.getrandbits(8 * LINE_BYTES)


def merge(old, new, strb):
    out = old
    for b in range(LINE_BYTES):
        if strb >> b & 1:
            mask = 0xFF << (8 * b)
            out = (out & ~mask) | (new & mask)
    return out


class Harness:
    """Drives the DUT once per cycle: an AXI master (queues of requests, collected responses), the H2D
    channels (scripted messages first, then the optional ``HomeCore``), and collects every D2H message."""

    def __init__(self, dut, *, core=None, rng=None, d2h_stall=0.0, axi_stall=0.0):
        self.dut, self.core = dut, core
        self.rng = rng or random.Random(0)
        self.d2h_stall, self.axi_stall = d2h_stall, axi_stall
        self.ar, self.aw = [], []            # (id, line) / (id, line, data, strb)
        self.r, self.b = [], []              # (id, data, resp) / (id, resp)
        self.script = {"req": [], "rsp": [], "data": []}
        self.d2h = {"req": [], "rsp": [], "data": []}
        self.inval = []
        self.cycle = 0

    def send(self, ch, **fields):
        self.script[ch].append(pack(H2D[ch], **fields))

    def read(self, line, id_=0):
        self.ar.append((id_, line))

    def write(self, line, data, strb=FULL, id_=0):
        self.aw.append((id_, line, data, strb))

    async def tick(self, ctx):
        d, rng = self.dut, self.rng
        port = {"req": d.h2d_req, "rsp": d.h2d_rsp, "data": d.h2d_data}
        src = {}
        for ch in ("req", "rsp", "data"):
            bits, src[ch] = None, None
            if self.script[ch]:
                bits, src[ch] = self.script[ch][0], "script"
            elif self.core is not None:
                bits = self.core.offer_bits(ch)
                src[ch] = "core" if bits is not None else None
            ctx.set(port[ch].valid, bits is not None)
            if bits is not None:
                ctx.set(port[ch].payload.as_value(), bits)
        outs = {"req": d.d2h_req, "rsp": d.d2h_rsp, "data": d.d2h_data}
        for s in outs.values():
            ctx.set(s.ready, rng.random() >= self.d2h_stall)
        ctx.set(d.inval.ready, 1)
        ctx.set(d.s_axi_rready, rng.random() >= self.axi_stall)
        ctx.set(d.s_axi_bready, rng.random() >= self.axi_stall)
        ctx.set(d.s_axi_arvalid, bool(self.ar))
        if self.ar:
            ctx.set(d.s_axi_arid, self.ar[0][0])
            ctx.set(d.s_axi_araddr, self.ar[0][1] << 6)
        ctx.set(d.s_axi_awvalid, bool(self.aw))
        ctx.set(d.s_axi_wvalid, bool(self.aw))
        if self.aw:
            i, line, data, strb = self.aw[0]
            ctx.set(d.s_axi_awid, i)
            ctx.set(d.s_axi_awaddr, line << 6)
            ctx.set(d.s_axi_wdata, data)
            ctx.set(d.s_axi_wstrb, strb)
            ctx.set(d.s_axi_wlast, 1)
        # handshakes of this cycle
        for ch in ("req", "rsp", "data"):
            if src[ch] and ctx.get(port[ch].ready):
                if src[ch] == "script":
                    self.script[ch].pop(0)
                else:
                    self.core.delivered(ch)
        for ch, s in outs.items():
            if ctx.get(s.valid) and ctx.get(s.ready):
                v = ctx.get(s.payload.as_value())
                self.d2h[ch].append(unpack(D2H[ch], v))
                if self.core is not None and not self.manual(ch, v):
                    self.core.receive(ch, v)
        if ctx.get(d.inval.valid):
            self.inval.append(ctx.get(d.inval.payload))
        if self.ar and ctx.get(d.s_axi_arready):
            self.ar.pop(0)
        if self.aw:
            assert ctx.get(d.s_axi_awready) == ctx.get(d.s_axi_wready), "AW and W accepted apart"
            if ctx.get(d.s_axi_awready):
                self.aw.pop(0)
        if ctx.get(d.s_axi_rvalid) and ctx.get(d.s_axi_rready):
            assert ctx.get(d.s_axi_rlast)
            self.r.append((ctx.get(d.s_axi_rid), ctx.get(d.s_axi_rdata), ctx.get(d.s_axi_rresp)))
        if ctx.get(d.s_axi_bvalid) and ctx.get(d.s_axi_bready):
            self.b.append((ctx.get(d.s_axi_bid), ctx.get(d.s_axi_bresp)))
        await ctx.tick()
        self.cycle += 1
        if self.core is not None:
            self.core.step()

    def manual(self, ch, v):
        return False

    async def until(self, ctx, pred, limit=400, what="condition"):
        for _ in range(limit):
            if pred():
                return
            await self.tick(ctx)
        raise AssertionError(f"timeout waiting for {what} (cycle {self.cycle})")

    async def cycles(self, ctx, n):
        for _ in range(n):
            await self.tick(ctx)

    async def expect_req(self, ctx, opcode, line, dut):
        n = len(self.d2h["req"])
        await self.until(ctx, lambda: len(self.d2h["req"]) > n, what=f"D2H Req {opcode:#b}")
        m = self.d2h["req"][n]
        assert (m["opcode"], m["addr"]) == (opcode, dut.host_base + line), m
        return m["cqid"]

    async def expect_rsp(self, ctx):
        n = len(self.d2h["rsp"])
        await self.until(ctx, lambda: len(self.d2h["rsp"]) > n, what="D2H Rsp")
        return self.d2h["rsp"][n]

    async def expect_data(self, ctx):
        n = len(self.d2h["data"])
        await self.until(ctx, lambda: len(self.d2h["data"]) > n, what="D2H Data")
        return self.d2h["data"][n]

    async def snoop(self, ctx, dut, op, line, uqid=7):
        nd = len(self.d2h["data"])
        self.send("req", opcode=op, addr=dut.host_base + line, uqid=uqid)
        r = await self.expect_rsp(ctx)
        assert r["uqid"] == uqid
        data = None
        if r["opcode"] in FWD:
            await self.until(ctx, lambda: len(self.d2h["data"]) > nd, what="snoop data")
            m = self.d2h["data"][nd]
            assert (m["uqid"], m["bogus"], m["poison"]) == (uqid, 0, 0)
            data = m["data"]
        return r["opcode"], data

    async def fill(self, ctx, dut, line, data, state, *, data_first=True):
        """Bring ``line`` into the cache in ``state`` (S, E or M) with host data ``data``; returns the
        line's value afterwards."""
        if state == "M":            # RdOwn for a partial write, merged
            new = rnd_line(self.rng)
            strb = self.rng.getrandbits(LINE_BYTES) | 1
            strb &= FULL >> 1      # partial
            self.write(line, new, strb, id_=1)
            cq = await self.expect_req(ctx, RD_OWN, line, dut)
            self.send("data", cqid=cq, data=data)
            self.send("rsp", opcode=GO, rsp_data=ST_E, cqid=cq)
            nb = len(self.b)
            await self.until(ctx, lambda: len(self.b) > nb, what="B")
            assert self.b[-1] == (1, 0)
            return merge(data, new, strb)
        op = RD_ANY if dut.read_any else RD_SHARED
        self.read(line, id_=2)
        cq = await self.expect_req(ctx, op, line, dut)
        st = {"S": ST_S, "E": ST_E}[state]
        msgs = [("data", dict(cqid=cq, data=data)), ("rsp", dict(opcode=GO, rsp_data=st, cqid=cq))]
        if not data_first:
            msgs.reverse()
        for ch, f in msgs:
            self.send(ch, **f)
            await self.cycles(ctx, 5)
        nr = len(self.r)
        await self.until(ctx, lambda: len(self.r) > nr, what="R")
        assert self.r[-1] == (2, data, 0)
        return data


def run(dut, body, top=None, **hkw):
    """Simulate ``top`` (default: ``dut``, e.g. ``dut`` under a ResetInserter) from the end of the clear."""
    h = Harness(dut, **hkw)

    async def bench(ctx):
        await ctx.tick().until(~dut.clearing)
        await body(ctx, h)

    sim = Simulator(dut if top is None else top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return h


def stats(ctx, dut):
    return {s: ctx.get(getattr(dut, s)) for s in ("hits", "misses", "snoops", "evictions", "bogus", "errors")}


@pytest.mark.parametrize("data_first", [True, False])
def test_read_miss_rdshared_then_hit(data_first):
    """Miss → RdShared at host_base + line; data and GO in either order, R only once both are in
    (data before GO is buffered); the second read hits without any D2H traffic."""
    dut = CxlCacheAgent(sets=8, ways=2, host_base=0x1000)
    val = rnd_line(random.Random(1))

    async def body(ctx, h):
        h.read(5, id_=3)
        cq = await h.expect_req(ctx, RD_SHARED, 5, dut)
        assert cq < dut.trackers and h.d2h["req"][0]["nt"] == 0
        first, second = (("data", dict(cqid=cq, data=val)), ("rsp", dict(opcode=GO, rsp_data=ST_S, cqid=cq)))
        if not data_first:
            first, second = second, first
        h.send(first[0], **first[1])
        await h.cycles(ctx, 20)
        assert h.r == []
        h.send(second[0], **second[1])
        await h.until(ctx, lambda: h.r, what="R")
        assert h.r == [(3, val, 0)]
        h.read(5, id_=3)
        await h.until(ctx, lambda: len(h.r) == 2, what="hit")
        assert h.r[1] == (3, val, 0) and len(h.d2h["req"]) == 1
        assert stats(ctx, dut) | {} == {"hits": 1, "misses": 1, "snoops": 0, "evictions": 0, "bogus": 0,
                                        "errors": 0}

    run(dut, body)


@pytest.mark.parametrize("state", ["I", "S", "E", "M"])
@pytest.mark.parametrize("snp", [SNP_INV, SNP_DATA, SNP_CUR])
def test_snoop_reply_table(state, snp):
    """Every (line state, snoop) cell of CXL.md's table: the reply, the forwarded data, the state after
    (probed by a second SnpCur: I → RspIHitI, S/E → RspVHitV, M → RspVFwdV; S vs E by a write that
    must or must not go to the host) and the ``inval`` report of lines lost to the snoop."""
    dut = CxlCacheAgent(sets=8, ways=2, read_any=True, host_base=64)
    rng = random.Random(hash((state, snp)) & 0xFFFF)

    async def body(ctx, h):
        line = 9
        val = rnd_line(rng)
        if state != "I":
            val = await h.fill(ctx, dut, line, val, state)
        want_rsp, after = SNOOP_TABLE[(state, snp)]
        rsp, data = await h.snoop(ctx, dut, snp, line)
        assert rsp == want_rsp
        assert data == (val if want_rsp in FWD else None)
        await h.cycles(ctx, 3)
        assert h.inval == ([line] if state != "I" and after == "I" else [])
        rsp2, data2 = await h.snoop(ctx, dut, SNP_CUR, line, uqid=8)
        assert rsp2 == {"I": R_IHITI, "S": R_VHITV, "E": R_VHITV, "M": R_VFWDV}[after]
        if after in ("S", "E"):
            nreq = len(h.d2h["req"])
            h.write(line, 0, 1, id_=4)
            if after == "E":
                await h.until(ctx, lambda: h.b, what="write hit")
                assert len(h.d2h["req"]) == nreq
            else:
                await h.expect_req(ctx, RD_OWN, line, dut)
        assert stats(ctx, dut)["snoops"] == 2

    run(dut, body)


def test_rdown_partial_write_then_forward():
    """A partial write miss → RdOwn; the host line + the written bytes become the M line; a host read
    (SnpData) gets the merged line forwarded (RspSFwdM) and the device keeps S."""
    dut = CxlCacheAgent(sets=4, ways=1, itomwr=True)
    rng = random.Random(3)

    async def body(ctx, h):
        host, new = rnd_line(rng), rnd_line(rng)
        strb = 0x00FF_0000_FFFF_0001
        h.write(2, new, strb, id_=1)
        cq = await h.expect_req(ctx, RD_OWN, 2, dut)
        h.send("rsp", opcode=GO, rsp_data=ST_M, cqid=cq)
        await h.cycles(ctx, 10)
        assert h.b == []
        h.send("data", cqid=cq, data=host)
        await h.until(ctx, lambda: h.b, what="B")
        assert h.b == [(1, 0)]
        rsp, data = await h.snoop(ctx, dut, SNP_DATA, 2)
        assert (rsp, data) == (R_SFWDM, merge(host, new, strb))
        h.read(2, id_=1)
        await h.until(ctx, lambda: h.r, what="R")
        assert h.r == [(1, merge(host, new, strb), 0)] and len(h.d2h["req"]) == 1

    run(dut, body)


@pytest.mark.parametrize("fast", [False, True])
def test_itomwr_full_line_write(fast):
    """A full-line write that misses → ItoMWr; GO_WritePull (or Fast_GO_WritePull) with a UQID → D2H Data
    with that UQID and the line; B after the data; no copy kept (the next read misses). With itomwr=False
    the same write does RdOwn."""
    dut = CxlCacheAgent(sets=4, ways=2)
    val = rnd_line(random.Random(4))

    async def body(ctx, h):
        h.write(3, val, id_=2)
        cq = await h.expect_req(ctx, ITOM_WR, 3, dut)
        await h.cycles(ctx, 10)
        assert h.b == [] and h.d2h["data"] == []
        h.send("rsp", opcode=0b1101 if fast else GO_WP, rsp_data=0x5A5, cqid=cq)
        d = await h.expect_data(ctx)
        assert (d["uqid"], d["bogus"], d["poison"], d["data"]) == (0x5A5, 0, 0, val)
        await h.until(ctx, lambda: h.b, what="B")
        assert h.b == [(2, 0)]
        h.read(3)
        await h.expect_req(ctx, RD_SHARED, 3, dut)

    run(dut, body)
    dut2 = CxlCacheAgent(sets=4, ways=2, itomwr=False)

    async def body2(ctx, h):
        h.write(3, val, id_=2)
        await h.expect_req(ctx, RD_OWN, 3, dut2)

    run(dut2, body2)


@pytest.mark.parametrize("victim", ["M", "E", "S"])
def test_eviction_flows(victim):
    """A 1-way cache: a miss to a line of the same set evicts — M → DirtyEvict (GO_WritePull: the dirty
    line, not bogus), E → CleanEvict (GO_WritePull_Drop: no data), S → CleanEvictNoData (GO-I) — before
    its RdShared; a second request to the evicted line waits until the evict is done."""
    dut = CxlCacheAgent(sets=4, ways=1, read_any=True)
    rng = random.Random(5)

    async def body(ctx, h):
        val = await h.fill(ctx, dut, 1, rnd_line(rng), victim)
        h.read(5, id_=6)                   # same set (4 sets)
        op = {"M": DIRTY_EVICT, "E": CLEAN_EVICT, "S": CLEAN_EVICT_NO_DATA}[victim]
        ecq = await h.expect_req(ctx, op, 1, dut)
        rcq = await h.expect_req(ctx, RD_ANY, 5, dut)
        assert ecq != rcq
        h.read(1, id_=7)                   # must wait for the evict to finish
        await h.cycles(ctx, 20)
        assert len(h.d2h["req"]) == 3
        if victim == "M":
            h.send("rsp", opcode=GO_WP, rsp_data=0x33, cqid=ecq)
            d = await h.expect_data(ctx)
            assert (d["uqid"], d["bogus"], d["data"]) == (0x33, 0, val)
        elif victim == "E":
            h.send("rsp", opcode=GO_WP_DROP, rsp_data=0, cqid=ecq)
        else:
            h.send("rsp", opcode=GO, rsp_data=ST_I, cqid=ecq)
        await h.cycles(ctx, 10)
        assert len(h.d2h["data"]) == (1 if victim == "M" else 0)
        h.send("data", cqid=rcq, data=123)
        h.send("rsp", opcode=GO, rsp_data=ST_S, cqid=rcq)
        await h.expect_req(ctx, CLEAN_EVICT_NO_DATA, 5, dut)   # now the read of line 1 goes out, evicting 5 (S)
        await h.expect_req(ctx, RD_ANY, 1, dut)
        assert stats(ctx, dut)["evictions"] == 2

    run(dut, body)


@pytest.mark.parametrize("victim", ["M", "E"])
def test_snoop_hits_pending_evict_makes_data_bogus(victim):
    """A snoop that arrives between DirtyEvict/CleanEvict and its GO_WritePull is answered from the
    evicted line (RspIFwdM + the dirty data / RspIHitSE), reported on ``inval``, and the evict's data
    then goes out with Bogus=1 (``bogus`` counts it)."""
    dut = CxlCacheAgent(sets=4, ways=1, read_any=True)
    rng = random.Random(6)

    async def body(ctx, h):
        val = await h.fill(ctx, dut, 2, rnd_line(rng), victim)
        h.read(6, id_=6)
        ecq = await h.expect_req(ctx, DIRTY_EVICT if victim == "M" else CLEAN_EVICT, 2, dut)
        rsp, data = await h.snoop(ctx, dut, SNP_INV, 2)
        assert (rsp, data) == ((R_IFWDM, val) if victim == "M" else (R_IHITSE, None))
        await h.cycles(ctx, 3)
        assert h.inval == [2]
        h.send("rsp", opcode=GO_WP, rsp_data=0x44, cqid=ecq)
        d = await h.expect_data(ctx)
        assert (d["uqid"], d["bogus"]) == (0x44, 1)
        # after the evict, the line is gone: snoops see I
        rsp, _ = await h.snoop(ctx, dut, SNP_INV, 2, uqid=9)
        assert rsp == R_IHITI
        assert stats(ctx, dut)["bogus"] == 1

    run(dut, body)


def test_go_write_pull_drop_and_err_write_pull():
    """GO_WritePull_Drop ends a CleanEvict without data; GO_ERR_WritePull on a DirtyEvict still sends the
    data and counts an error; on an ItoMWr it returns SLVERR."""
    dut = CxlCacheAgent(sets=2, ways=1, read_any=True)
    rng = random.Random(7)

    async def body(ctx, h):
        await h.fill(ctx, dut, 0, rnd_line(rng), "M")
        h.read(2, id_=5)
        ecq = await h.expect_req(ctx, DIRTY_EVICT, 0, dut)
        rcq = await h.expect_req(ctx, RD_ANY, 2, dut)
        h.send("rsp", opcode=GO_ERR_WP, rsp_data=0x10, cqid=ecq)
        d = await h.expect_data(ctx)
        assert d["uqid"] == 0x10
        h.send("data", cqid=rcq, data=5)
        h.send("rsp", opcode=GO, rsp_data=ST_S, cqid=rcq)
        await h.until(ctx, lambda: len(h.r) == 1, what="R")
        h.write(1, 77, id_=3)
        icq = await h.expect_req(ctx, ITOM_WR, 1, dut)
        h.send("rsp", opcode=GO_ERR_WP, rsp_data=0x11, cqid=icq)
        await h.until(ctx, lambda: len(h.b) == 2, what="B")
        assert h.b[-1] == (3, SLVERR)
        assert stats(ctx, dut)["errors"] == 2

    run(dut, body)


@pytest.mark.parametrize("kind", ["poison", "go_err_data", "go_state_err"])
def test_poison_and_go_err_are_never_good_data(kind):
    """Poisoned data, data with GO-Err, or a GO in the Err state: R with SLVERR, counted, the line is not
    installed (the next read misses again)."""
    dut = CxlCacheAgent(sets=4, ways=2)

    async def body(ctx, h):
        h.read(1, id_=1)
        cq = await h.expect_req(ctx, RD_SHARED, 1, dut)
        h.send("data", cqid=cq, data=42, poison=int(kind == "poison"), go_err=int(kind == "go_err_data"))
        h.send("rsp", opcode=GO, rsp_data=ST_ERR if kind == "go_state_err" else ST_S, cqid=cq)
        await h.until(ctx, lambda: h.r, what="R")
        assert h.r[0][0] == 1 and h.r[0][2] == SLVERR
        assert stats(ctx, dut)["errors"] == 1
        h.read(1, id_=1)
        await h.expect_req(ctx, RD_SHARED, 1, dut)

    run(dut, body)


def test_rdcurr_no_allocate_region():
    """Reads in the ``nocache`` region use RdCurr (data, no GO) and allocate nothing; two RdCurr of one
    line may be outstanding together; reads outside still use RdShared."""
    dut = CxlCacheAgent(sets=4, ways=2, nocache=(100, 200), id_bits=3)

    async def body(ctx, h):
        h.read(150, id_=1)
        h.read(150, id_=2)
        c1 = await h.expect_req(ctx, RD_CURR, 150, dut)
        c2 = await h.expect_req(ctx, RD_CURR, 150, dut)
        h.send("data", cqid=c2, data=22)
        h.send("data", cqid=c1, data=11)
        await h.until(ctx, lambda: len(h.r) == 2, what="R")
        assert sorted(h.r) == [(1, 11, 0), (2, 22, 0)]
        h.read(150, id_=1)
        await h.expect_req(ctx, RD_CURR, 150, dut)
        h.read(99, id_=3)
        await h.expect_req(ctx, RD_SHARED, 99, dut)

    run(dut, body)


def test_cqid_reuse_with_16_outstanding():
    """24 reads with distinct IDs to distinct lines of an empty cache: 16 requests go out at once with 16
    distinct CQIDs (the tracker count), the rest wait; answered in random order with data and GO
    shuffled, freed CQIDs are reused, never while still outstanding, and every read gets its own line."""
    dut = CxlCacheAgent(sets=32, ways=4, trackers=16, id_bits=5)
    rng = random.Random(8)
    vals = {line: rnd_line(rng) for line in range(100, 124)}
    line_id = {line: i for i, line in enumerate(vals)}

    async def body(ctx, h):
        for line, i in line_id.items():
            h.read(line, id_=i)
        await h.cycles(ctx, 200)
        reqs = h.d2h["req"]
        assert len(reqs) == 16 and len({m["cqid"] for m in reqs}) == 16
        answered, done_ids = set(), set()
        seen = 16
        while len(h.r) < len(vals):
            open_ = [i for i in range(len(reqs)) if i not in answered]
            if open_:
                i = rng.choice(open_)
                answered.add(i)
                m = reqs[i]
                msgs = [("data", dict(cqid=m["cqid"], data=vals[m["addr"]])),
                        ("rsp", dict(opcode=GO, rsp_data=ST_S, cqid=m["cqid"]))]
                rng.shuffle(msgs)
                for ch, f in msgs:
                    h.send(ch, **f)
            await h.cycles(ctx, rng.randint(0, 8))
            done_ids |= {rid for rid, _, _ in h.r}
            for m in reqs[seen:]:
                busy = {x["cqid"] for x in reqs[:seen] if line_id[x["addr"]] not in done_ids}
                assert m["cqid"] not in busy, "CQID reused while outstanding"
            seen = len(reqs)
            assert h.cycle < 20000
        got = {rid: data for rid, data, resp in h.r}
        assert got == {i: vals[line] for line, i in line_id.items()}
        assert len(reqs) == 24 and len({m["cqid"] for m in reqs}) == 16

    run(dut, body)


def test_reads_to_one_line_serialize_until_go():
    """Two reads (different IDs) of one line: one RdShared only; the second waits for the GO and then
    hits. A write to the line waits too."""
    dut = CxlCacheAgent(sets=4, ways=2)

    async def body(ctx, h):
        h.read(1, id_=0)
        h.read(1, id_=1)
        cq = await h.expect_req(ctx, RD_SHARED, 1, dut)
        h.send("data", cqid=cq, data=0xAB)
        await h.cycles(ctx, 30)
        assert len(h.d2h["req"]) == 1 and h.r == []
        h.send("rsp", opcode=GO, rsp_data=ST_S, cqid=cq)
        await h.until(ctx, lambda: len(h.r) == 2, what="R")
        assert sorted(h.r) == [(0, 0xAB, 0), (1, 0xAB, 0)] and len(h.d2h["req"]) == 1
        assert (stats(ctx, dut)["hits"], stats(ctx, dut)["misses"]) == (1, 1)

    run(dut, body)


def test_same_axi_id_stays_in_order():
    """Two reads with one AXI ID: the second (even a hit) waits for the first miss, so R stays in order."""
    dut = CxlCacheAgent(sets=8, ways=2)

    async def body(ctx, h):
        h.read(1, id_=0)
        cq = await h.expect_req(ctx, RD_SHARED, 1, dut)
        h.send("data", cqid=cq, data=1)
        h.send("rsp", opcode=GO, rsp_data=ST_S, cqid=cq)
        await h.until(ctx, lambda: h.r, what="R")
        h.read(2, id_=0)           # miss
        h.read(1, id_=0)           # hit, but must wait
        cq = await h.expect_req(ctx, RD_SHARED, 2, dut)
        await h.cycles(ctx, 20)
        assert len(h.r) == 1
        h.send("data", cqid=cq, data=2)
        h.send("rsp", opcode=GO, rsp_data=ST_S, cqid=cq)
        await h.until(ctx, lambda: len(h.r) == 3, what="R")
        assert [d for _, d, _ in h.r] == [1, 2, 1]

    run(dut, body)


def test_random_against_home_core():
    """A short random mix (device reads/writes, host reads/writes, racing on a few lines) over the
    randomised home agent: every read equals the shadow memory, no protocol violation."""
    dut = CxlCacheAgent(sets=4, ways=2, trackers=8, read_any=True, nocache=(30, 32))
    rng = random.Random(11)
    n_lines = 32
    core = HomeCore(n_lines, seed=12, delay=(0, 6), p_drop=0.5, p_snoop_s=0.5)
    shadow = [0] * n_lines
    errors = []

    async def body(ctx, h):
        busy = set()
        pending = []                            # (kind, line, fut/expected, id)
        ops = 0
        while ops < 300 or pending:
            if ops < 300 and len(pending) < 6:
                line = rng.randrange(n_lines)
                if line not in busy:
                    busy.add(line)
                    ops += 1
                    r = rng.random()
                    free_ids = [i for i in range(4) if not any(p[3] == i for p in pending if p[0] in ("r", "w"))]
                    if r < 0.3 and free_ids:
                        i = rng.choice(free_ids)
                        h.read(line, id_=i)
                        pending.append(("r", line, shadow[line], i))
                    elif r < 0.55 and free_ids and line < 30:
                        i = rng.choice(free_ids)
                        v = rnd_line(rng)
                        strb = FULL if rng.random() < 0.5 else rng.getrandbits(LINE_BYTES)
                        shadow[line] = merge(shadow[line], v, strb)
                        h.write(line, v, strb, id_=i + 4)
                        pending.append(("w", line, None, i + 4))
                    elif r < 0.8:
                        pending.append(("hr", line, core.host_read(line), shadow[line]))
                    else:
                        v = rnd_line(rng)
                        shadow[line] = v
                        pending.append(("hw", line, core.host_write(line, v.to_bytes(LINE_BYTES, "little")), None))
            await h.tick(ctx)
            for p in list(pending):
                kind, line, x, y = p
                if kind == "r" and any(rid == y for rid, _, _ in h.r):
                    k = next(j for j, (rid, _, _) in enumerate(h.r) if rid == y)
                    _, data, resp = h.r.pop(k)
                    if (data, resp) != (x, 0):
                        errors.append(f"device read of line {line}")
                elif kind == "w" and any(bid == y for bid, _ in h.b):
                    k = next(j for j, (bid, _) in enumerate(h.b) if bid == y)
                    h.b.pop(k)
                elif kind == "hr" and x.done:
                    if int.from_bytes(x.value, "little") != y:
                        errors.append(f"host read of line {line}")
                elif kind == "hw" and x.done:
                    pass
                else:
                    continue
                pending.remove(p)
                busy.discard(line)
            assert h.cycle < 60000, "stuck"
        assert not errors and not core.violations, (errors, core.violations)

    run(dut, body, core=core, rng=random.Random(13), d2h_stall=0.2, axi_stall=0.2)


# ---- tracked region: per-line "device holds it" bits for lines the datapath mirrors ----

def line_int(core, line):
    return int.from_bytes(core.line(line), "little")


@pytest.mark.parametrize("read_any", [False, True])
@pytest.mark.parametrize("data_first", [True, False])
def test_tracked_read_rdshared_never_hits(data_first, read_any):
    """A read of a tracked line: RdShared at host_base + line (RdShared also with read_any: the device never
    writes these lines), R = the host data only once data and GO are both in; a second read of the same
    line goes to the host again (never a hit, never allocated): the cached line of the same set (1 way)
    stays cached, nothing is evicted."""
    dut = CxlCacheAgent(sets=4, ways=1, track=(40, 48), host_base=0x200, read_any=read_any)
    rng = random.Random(21)

    async def body(ctx, h):
        v1 = await h.fill(ctx, dut, 1, rnd_line(rng), "S")        # set 1, like line 41
        for n in range(2):
            val = rnd_line(rng)
            h.read(41, id_=3)
            cq = await h.expect_req(ctx, RD_SHARED, 41, dut)
            msgs = [("data", dict(cqid=cq, data=val)), ("rsp", dict(opcode=GO, rsp_data=ST_S, cqid=cq))]
            if not data_first:
                msgs.reverse()
            h.send(msgs[0][0], **msgs[0][1])
            await h.cycles(ctx, 20)
            assert len(h.r) == 1 + n
            h.send(msgs[1][0], **msgs[1][1])
            await h.until(ctx, lambda n=n: len(h.r) == 2 + n, what="R")
            assert h.r[-1] == (3, val, 0)
        h.read(1, id_=4)
        await h.until(ctx, lambda: len(h.r) == 4, what="hit")
        assert h.r[-1] == (4, v1, 0)
        assert [m["opcode"] for m in h.d2h["req"]] == [RD_ANY if read_any else RD_SHARED, RD_SHARED, RD_SHARED]
        assert stats(ctx, dut) == {"hits": 1, "misses": 3, "snoops": 0, "evictions": 0, "bogus": 0, "errors": 0}

    run(dut, body)


@pytest.mark.parametrize("held", [False, True])
@pytest.mark.parametrize("snp", [SNP_INV, SNP_DATA, SNP_CUR])
def test_tracked_snoop_replies(snp, held):
    """Snoops of a tracked line are answered from its bit: after a good read (held) the S/E row of CXL.md's
    table (SnpInv → RspIHitSE, bit cleared, one ``inval``; SnpData → RspSHitSE and SnpCur → RspVHitV, bit
    kept, no ``inval``), never with data; never read → RspIHitI, no ``inval``. The state after is probed
    by a second SnpInv (RspIHitSE iff the bit is still set)."""
    dut = CxlCacheAgent(sets=4, ways=2, track=(100, 104), nocache=(104, 110), host_base=64)
    rng = random.Random(22)

    async def body(ctx, h):
        line = 102
        if held:
            val = rnd_line(rng)
            h.read(line, id_=1)
            cq = await h.expect_req(ctx, RD_SHARED, line, dut)
            h.send("data", cqid=cq, data=val)
            h.send("rsp", opcode=GO, rsp_data=ST_S, cqid=cq)
            await h.until(ctx, lambda: h.r, what="R")
            assert h.r == [(1, val, 0)]
        want, after = SNOOP_TABLE[("S" if held else "I", snp)]
        assert await h.snoop(ctx, dut, snp, line) == (want, None)
        await h.cycles(ctx, 4)
        assert h.inval == ([line] if after == "I" and held else [])
        rsp2, _ = await h.snoop(ctx, dut, SNP_INV, line, uqid=8)
        assert rsp2 == (R_IHITSE if held and after == "S" else R_IHITI)
        await h.cycles(ctx, 4)
        assert h.inval == ([line] if held else [])
        assert h.d2h["data"] == [] and stats(ctx, dut)["snoops"] == 2

    run(dut, body)


@pytest.mark.parametrize("r_stall", [False, True])
def test_tracked_snoop_waits_for_r(r_stall):
    """A SnpInv of a tracked line whose read has its GO but not its data waits (no D2H Rsp) until the read's
    R; with R held back by ``rready`` it also waits for the R handshake: the R always leaves before the
    ``inval`` entry. A snoop that comes before the read's GO is answered at once from the bit (RspIHitI for
    a line never read), and the read then sets the bit."""
    dut = CxlCacheAgent(sets=4, ways=2, track=(0, 8))
    rng = random.Random(23)

    async def body(ctx, h):
        line = 5
        # a snoop before the GO: not held yet
        h.read(line, id_=2)
        cq = await h.expect_req(ctx, RD_SHARED, line, dut)
        assert await h.snoop(ctx, dut, SNP_INV, line, uqid=3) == (R_IHITI, None)
        v0 = rnd_line(rng)
        h.send("data", cqid=cq, data=v0)
        h.send("rsp", opcode=GO, rsp_data=ST_S, cqid=cq)
        await h.until(ctx, lambda: h.r, what="R")
        assert h.r == [(2, v0, 0)] and h.inval == []
        # a read of the line again; the GO comes first, then a snoop, then (much later) the data
        h.read(line, id_=2)
        cq = await h.expect_req(ctx, RD_SHARED, line, dut)
        h.send("rsp", opcode=GO, rsp_data=ST_S, cqid=cq)
        await h.cycles(ctx, 5)
        h.send("req", opcode=SNP_INV, addr=line, uqid=4)
        await h.cycles(ctx, 30)
        assert h.d2h["rsp"][1:] == [] and h.inval == []
        h.axi_stall = 1.0 if r_stall else 0.0
        v1 = rnd_line(rng)
        h.send("data", cqid=cq, data=v1)
        if r_stall:
            await h.cycles(ctx, 30)
            assert len(h.r) == 1 and h.d2h["rsp"][1:] == [] and h.inval == []
            h.axi_stall = 0.0
        r_at = inv_at = None
        for _ in range(100):
            await h.tick(ctx)
            if r_at is None and len(h.r) == 2:
                r_at = h.cycle
            if inv_at is None and h.inval:
                inv_at = h.cycle
        assert h.r[1] == (2, v1, 0) and h.inval == [line]
        assert r_at < inv_at
        assert [(m["opcode"], m["uqid"]) for m in h.d2h["rsp"]] == [(R_IHITI, 3), (R_IHITSE, 4)]

    run(dut, body)


@pytest.mark.parametrize("held", [False, True])
def test_tracked_write_refused(held):
    """AXI writes to a tracked line (full or partial, first and last line of the region) are accepted and
    answered SLVERR, counted in ``errors``, with nothing sent to the host; the line's bit is unchanged (a
    SnpInv afterwards answers RspIHitSE iff a read had set it). A write just past the region is normal."""
    dut = CxlCacheAgent(sets=4, ways=2, track=(16, 32))
    rng = random.Random(24)

    async def body(ctx, h):
        if held:
            h.read(16, id_=1)
            cq = await h.expect_req(ctx, RD_SHARED, 16, dut)
            h.send("data", cqid=cq, data=9)
            h.send("rsp", opcode=GO, rsp_data=ST_S, cqid=cq)
            await h.until(ctx, lambda: h.r, what="R")
        nreq = len(h.d2h["req"])
        h.write(16, rnd_line(rng), FULL, id_=5)
        h.write(16, rnd_line(rng), 0xF0, id_=6)
        h.write(31, rnd_line(rng), FULL, id_=7)
        await h.until(ctx, lambda: len(h.b) == 3, what="B")
        assert h.b == [(5, SLVERR), (6, SLVERR), (7, SLVERR)]
        await h.cycles(ctx, 20)
        assert len(h.d2h["req"]) == nreq and h.d2h["data"] == []
        assert stats(ctx, dut)["errors"] == 3
        assert await h.snoop(ctx, dut, SNP_INV, 16) == (R_IHITSE if held else R_IHITI, None)
        h.write(32, rnd_line(rng), FULL, id_=1)
        await h.expect_req(ctx, ITOM_WR, 32, dut)

    run(dut, body)


def test_tracked_host_write_invalidates():
    """Through ``HomeCore``: a device read of a tracked line returns host memory and the directory then says
    S; a host write snoops it (RspIHitSE) and yields exactly one ``inval`` entry with the relative line; the
    next device read goes to the host again and returns the new data. A host write to a tracked line the
    device never read sends no snoop at all and no ``inval``. No protocol violation."""
    dut = CxlCacheAgent(sets=4, ways=2, track=(8, 16), host_base=0x40)
    core = HomeCore(32, base=0x40, seed=3, delay=(0, 5), p_snoop_s=0.0)
    rng = random.Random(25)
    core.mem[:] = rng.randbytes(len(core.mem))

    async def body(ctx, h):
        for n in range(3):
            want = line_int(core, 10)
            h.read(10, id_=1)
            await h.until(ctx, lambda n=n: len(h.r) == n + 1, what="R")
            assert h.r[n] == (1, want, 0)
            assert core.dir.get(10) == "S"
            new = rng.randbytes(LINE_BYTES)
            f = core.host_write(10, new)
            await h.until(ctx, lambda f=f: f.done, what="host write")
            await h.cycles(ctx, 6)
            assert h.inval == [10] * (n + 1)
            assert core.dir.get(10) is None and core.line(10) == new
        assert [m["opcode"] for m in h.d2h["rsp"]] == [R_IHITSE] * 3
        nrsp = len(h.d2h["rsp"])
        f = core.host_write(12, rng.randbytes(LINE_BYTES))
        await h.until(ctx, lambda: f.done, what="host write")
        await h.cycles(ctx, 20)
        assert len(h.d2h["rsp"]) == nrsp and h.inval == [10] * 3
        assert [(m["opcode"], m["addr"]) for m in h.d2h["req"]] == [(RD_SHARED, 0x40 + 10)] * 3
        assert not core.violations, core.violations

    run(dut, body, core=core, rng=random.Random(26), d2h_stall=0.3, axi_stall=0.3)


@pytest.mark.parametrize("sets,track,line", [(4, (8, 48), 41), (64, (8, 11), 9)])
def test_tracked_bits_cleared_at_reset(sets, track, line):
    """``clearing`` stays high for max(sets, tracked lines) cycles after reset, and a bit set before a reset
    is clear after it (a SnpInv answers RspIHitI, no ``inval``)."""
    dut = CxlCacheAgent(sets=sets, ways=1, track=track)
    rst = Signal()
    top = ResetInserter(rst)(dut)
    n_clear = max(sets, track[1] - track[0])

    async def count_clear(ctx, h):
        n = 0
        while ctx.get(dut.clearing):
            n += 1
            await h.tick(ctx)
        return n

    async def body(ctx, h):
        h.read(line, id_=1)
        cq = await h.expect_req(ctx, RD_SHARED, line, dut)
        h.send("data", cqid=cq, data=3)
        h.send("rsp", opcode=GO, rsp_data=ST_S, cqid=cq)
        await h.until(ctx, lambda: h.r, what="R")
        ctx.set(rst, 1)
        await h.tick(ctx)
        ctx.set(rst, 0)
        assert await count_clear(ctx, h) == n_clear
        assert await h.snoop(ctx, dut, SNP_INV, line) == (R_IHITI, None)
        await h.cycles(ctx, 4)
        assert h.inval == []

    run(dut, body, top=top)


@pytest.mark.parametrize("seed", [31, 32])
def test_tracked_random_against_home_core(seed):
    """Random mix over ``HomeCore`` (reordering, delays, stalls): device reads of tracked and cached lines,
    device writes (refused with SLVERR on tracked lines), host reads, and host writes that race with device
    reads of tracked lines. Checks, from host memory and the spec only: every R of a tracked line equals a
    value host memory held between the read's issue and its R, cached lines equal the shadow; a datapath
    mirror model (set by a tracked R, dropped by its ``inval``; an ``inval`` and an R in one cycle are
    applied in the worse order) equals host memory at the end; every good R of a tracked line that a host
    write completes after has an ``inval`` of the line after the R (and by the write's end + 8 cycles);
    each SnpInv the host sent for a tracked line gave exactly one ``inval`` and every snoop of a tracked
    line was answered per the S row (the directory only lists lines the device read); only RdShared for
    tracked lines; ``errors`` = refused writes; no protocol violation."""
    n_lines, TR, NC = 40, (16, 28), (36, 40)
    dut = CxlCacheAgent(sets=4, ways=2, trackers=8, read_any=True, nocache=NC, track=TR)
    core = HomeCore(n_lines, seed=seed, delay=(0, 8), p_drop=0.5, p_snoop_s=0.5)
    rng = random.Random(seed + 100)
    core.mem[:] = rng.randbytes(len(core.mem))
    shadow = [line_int(core, i) for i in range(n_lines)]
    tracked = range(*TR)
    errors = []
    r_good = {ln: [] for ln in tracked}         # cycles of good tracked R
    w_done = {ln: [] for ln in tracked}         # cycles host writes of tracked lines completed
    inv = {ln: [] for ln in tracked}            # cycles of inval entries of tracked lines
    mirror = {}
    n_refused = 0
    n_ops = 1200

    async def body(ctx, h):
        nonlocal n_refused
        busy = set()                            # cached lines with an operation in flight
        pending = []                            # [kind, line, x, y]
        ops = n_inv = 0
        while ops < n_ops or pending:
            if ops < n_ops and len(pending) < 8:
                tr = rng.random() < 0.5
                hot = rng.random() < 0.6             # most tracked traffic on 3 lines: races
                line = (rng.choice([16, 17, 18] if hot else tracked)) if tr else rng.choice(
                    [i for i in range(n_lines) if i not in tracked])
                free_ids = [i for i in range(4) if not any(p[3] == i for p in pending if p[0] == "r")]
                free_wids = [i for i in range(4, 8) if not any(p[3] == i for p in pending if p[0] == "w")]
                r = rng.random()
                if tr:
                    ops += 1
                    if r < 0.4 and free_ids:
                        i = rng.choice(free_ids)
                        h.read(line, id_=i)
                        pending.append(["r", line, {line_int(core, line)}, i])
                    elif r < 0.75:
                        f = core.host_write(line, rng.randbytes(LINE_BYTES))
                        pending.append(["hw", line, f, None])
                    elif r < 0.9 or not free_wids:
                        pending.append(["hr", line, core.host_read(line), None])
                    else:
                        i = rng.choice(free_wids)
                        h.write(line, rnd_line(rng), FULL if rng.random() < 0.5 else 0xFF, id_=i)
                        pending.append(["w", line, "refused", i])
                        n_refused += 1
                elif line not in busy:
                    busy.add(line)
                    ops += 1
                    if r < 0.3 and free_ids:
                        i = rng.choice(free_ids)
                        h.read(line, id_=i)
                        pending.append(["r", line, {shadow[line]}, i])
                    elif r < 0.55 and free_wids and line not in range(*NC):
                        i = rng.choice(free_wids)
                        v = rnd_line(rng)
                        strb = FULL if rng.random() < 0.5 else rng.getrandbits(LINE_BYTES)
                        shadow[line] = merge(shadow[line], v, strb)
                        h.write(line, v, strb, id_=i)
                        pending.append(["w", line, "ok", i])
                    elif r < 0.8:
                        pending.append(["hr", line, core.host_read(line), shadow[line]])
                    else:
                        v = rnd_line(rng)
                        shadow[line] = v
                        pending.append(["hw", line, core.host_write(line, v.to_bytes(LINE_BYTES, "little")), None])
            await h.tick(ctx)
            for ln in h.inval[n_inv:]:           # inval entries first: the worse order within a cycle
                if ln in tracked:
                    inv[ln].append(h.cycle)
                    mirror.pop(ln, None)
            n_inv = len(h.inval)
            for p in list(pending):
                kind, line, x, y = p
                if kind == "r":
                    if line in tracked:
                        x.add(line_int(core, line))
                    k = next((j for j, (rid, _, _) in enumerate(h.r) if rid == y), None)
                    if k is None:
                        continue
                    _, data, resp = h.r.pop(k)
                    if resp != 0 or data not in x:
                        errors.append(f"cycle {h.cycle}: device read of line {line}: resp {resp}")
                    if line in tracked and resp == 0:
                        r_good[line].append(h.cycle)
                        mirror[line] = data
                elif kind == "w":
                    k = next((j for j, (bid, _) in enumerate(h.b) if bid == y), None)
                    if k is None:
                        continue
                    _, resp = h.b.pop(k)
                    if resp != (SLVERR if x == "refused" else 0):
                        errors.append(f"cycle {h.cycle}: device write of line {line}: resp {resp}")
                elif kind == "hr" and x.done:
                    if y is not None and int.from_bytes(x.value, "little") != y:
                        errors.append(f"host read of line {line}")
                elif kind == "hw" and x.done:
                    if line in tracked:
                        w_done[line].append(h.cycle)
                else:
                    continue
                pending.remove(p)
                busy.discard(line)
            assert h.cycle < 100000, "stuck"
        await h.cycles(ctx, 20)
        for ln in h.inval[n_inv:]:
            if ln in tracked:
                inv[ln].append(h.cycle)
                mirror.pop(ln, None)
        assert not errors and not core.violations, (errors[:10], core.violations[:10])
        assert core.idle() and h.ar == [] and h.aw == []
        # the datapath's mirror of each tracked line is current at the end
        for ln, v in mirror.items():
            assert v == line_int(core, ln), f"stale mirror of line {ln}"
        # every good tracked R that a host write completes after: an inval after the R, by the write's end
        for ln in tracked:
            for c_r in r_good[ln]:
                later = [c for c in w_done[ln] if c > c_r]
                if later:
                    assert any(c_r < c <= later[0] + 8 for c in inv[ln]), (ln, c_r, later[0], inv[ln])
        # host side: each SnpInv of a tracked line → one inval; snoop answers of the S row only
        snp, n_snpinv = {}, {ln: 0 for ln in tracked}
        want = {SNP_INV: R_IHITSE, SNP_DATA: R_SHITSE, SNP_CUR: R_VHITV}
        for _, d, ch, msg in core.log:
            if (d, ch) == ("h2d", "req"):
                snp[msg["uqid"]] = (msg["addr"] - core.base, getattr(msg["opcode"], "value", msg["opcode"]))
            elif (d, ch) == ("d2h", "rsp"):
                ln, op = snp.pop(msg["uqid"])
                if ln in tracked:
                    assert msg["opcode"] == want[op], (ln, op, msg)
                    n_snpinv[ln] += op == SNP_INV
        assert {ln: len(c) for ln, c in inv.items()} == n_snpinv
        assert sum(n_snpinv.values()) > 10 and sum(len(c) for c in r_good.values()) > 30
        for m in h.d2h["req"]:
            if m["addr"] - core.base in tracked:
                assert m["opcode"] == RD_SHARED, m
        assert stats(ctx, dut)["errors"] == n_refused > 0

    run(dut, body, core=core, rng=random.Random(seed + 200), d2h_stall=0.2, axi_stall=0.2)


def test_tracked_parameters():
    """``track`` is exposed; it may touch ``nocache`` but not overlap it; an empty range overlaps nothing."""
    for kw, want in [(dict(track=(10, 20), nocache=(20, 30)), (10, 20)), (dict(track=(5, 10), nocache=(0, 5)), (5, 10)),
                     (dict(track=(5, 5), nocache=(0, 10)), (5, 5)), (dict(track=(7, 8)), (7, 8)), ({}, (0, 0))]:
        dut = CxlCacheAgent(sets=4, ways=1, trackers=2, **kw)
        assert dut.track == want
        Fragment.get(dut, None)


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(sets=3), ValueError, "sets"), (dict(ways=16), ValueError, "ways"), (dict(trackers=1), ValueError, "trackers"),
    (dict(sets="8"), TypeError, "sets"), (dict(nocache=(5, 1)), ValueError, "nocache"),
    (dict(host_base=-1), ValueError, "host_base"),
    (dict(track=(5, 1)), ValueError, "track"), (dict(track=(0, 2**32 + 1)), ValueError, "track"),
    (dict(track=[1, 2]), ValueError, "track"), (dict(track=(1, 2, 3)), ValueError, "track"),
    (dict(track=(-1, 2)), ValueError, "track"), (dict(track=(1.0, 2)), ValueError, "track"),
    (dict(nocache=(0, 10), track=(9, 20)), ValueError, r"nocache = \(0, 10\) and track = \(9, 20\) overlap"),
    (dict(nocache=(10, 20), track=(0, 11)), ValueError, "nocache.*track.*overlap"),
    (dict(nocache=(10, 20), track=(12, 13)), ValueError, "nocache.*track.*overlap"),
])
def test_bad_parameters(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        CxlCacheAgent(**kw)


def test_verilog_lints_clean(tmp_path):
    """verilator --lint-only -Wall with only tb/sim.py's named waivers."""
    from cxlnic.rtl import lint
    from cxlnic.tb.sim import write_verilog

    paths = [write_verilog(CxlCacheAgent(**kw), f"cxl_cache{i}", tmp_path / f"cxl_cache{i}.v")
             for i, kw in enumerate([{}, dict(sets=16, ways=1, host_base=99, nocache=(0, 10), trackers=32),
                                     dict(sets=8, ways=2, host_base=7, nocache=(0, 4), track=(4, 40))])]
    assert lint(paths, log=lambda *_: None) == []


def test_default_elaborates():
    Fragment.get(CxlCacheAgent(), None)


#: the Verilator build: 128 lines (32 sets x 4 ways) over 512 table lines, RdAny so lines reach E and M
#: straight from a read, a RdCurr region at the top, host memory not at 0
SIM_KW = dict(sets=32, ways=4, trackers=16, id_bits=4, read_any=True, host_base=0x40000, nocache=(500, 512))


def _sim_env(ops=None):
    env = {"CXL_N_LINES": "512", "CXL_HOST_BASE": str(SIM_KW["host_base"]),
           "CXL_NOCACHE": ",".join(map(str, SIM_KW["nocache"])), "CXL_ID_BITS": str(SIM_KW["id_bits"]),
           "CXL_CACHE_LINES": str(SIM_KW["sets"] * SIM_KW["ways"])}
    if ops:
        env["CXL_OPS"] = str(ops)
    return env


@pytest.mark.sim
def test_cxl_cache_verilator():
    """Coherence stress (1500 ops per variant; HYPOTHESIS_PROFILE=long or CXL_OPS for more) and
    the Zipf hit rate, under Verilator."""
    import os

    from cxlnic.tb.sim import run_cocotb

    env = _sim_env()
    if "CXL_OPS" in os.environ:
        env["CXL_OPS"] = os.environ["CXL_OPS"]
    run_cocotb(CxlCacheAgent(**SIM_KW), "cxlnic.tb.test_cxl_cache", params="s32w4", seed=1, extra_env=env)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_cxl_cache_verilator_100k(seed):
    """100k operations per stress variant and seed."""
    from cxlnic.tb.sim import run_cocotb

    run_cocotb(CxlCacheAgent(**SIM_KW), "cxlnic.tb.test_cxl_cache", params="s32w4", seed=seed,
               extra_env=_sim_env(100_000))
