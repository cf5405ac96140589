"""CounterBlock RTL against CounterBank semantics (Amaranth simulator), with and without backpressure.

The testbench plays DRAM itself (:class:`AxiDram`): an AXI4 slave answering
reads and writes with random latency, random channel stalls and responses
out of order across IDs; a read samples the memory either when its address
is accepted or when its data is sent, a write lands either when its data is
accepted or when its B response is sent (all legal AXI behaviours, chosen at
random so that an RMW or host read racing another RMW of the same line gives
a wrong value).  Expected values come from ``CounterBank``: every host read
equals the model's value at the point in the update order where the read was
accepted, and after the final flush the DRAM image equals the model's lines.
"""

import random

import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from cxlnic.hdl.counters import CounterBlock
from cxlnic.hdl.layouts import LINE_BYTES
from cxlnic.model.counters import CounterBank

MASK64 = (1 << 64) - 1


def hot_updates(rng, n, n_counters, *, hot=3, p_hot=0.8):
    """``n`` (index, bytes) updates, mostly to a few hot counters so same-index runs are frequent."""
    hot_set = rng.sample(range(n_counters), min(hot, n_counters))
    return [(rng.choice(hot_set) if rng.random() < p_hot else rng.randrange(n_counters), rng.getrandbits(16))
            for _ in range(n)]


class AxiDram:
    """AXI4 slave with a line-addressed memory, driven once per cycle from an Amaranth testbench.

    Checks the master's protocol (single 64-byte beats inside the counter
    region) and the block's hazard rules: never two RMWs of one line in
    flight (AR to B of one eviction ID), and no host read (ID
    ``max_evictions``) of a line while an RMW of it is in flight.
    """

    def __init__(self, dut, rng, *, stall=0.0, lat=(1, 12), image=None):
        self.dut, self.rng, self.stall, self.lat = dut, rng, stall, lat
        self.mem = dict(image or {})      # absolute line -> int
        self.lo, self.hi = dut.counters_off, dut.counters_off + dut.n_counters // 4
        self.host_id = dut.max_evictions
        self.ars = []                     # [due cycle, id, line, sampled data or None]
        self.grants = [] if dut.wb_grant else None   # lines granted on wb_ok and not yet read
        self.aws, self.ws = [], []
        self.bs = []                      # [due cycle, id, line, data to write or None if written]
        self.r_cur = self.b_cur = None
        self.rmw_open = {}                # eviction id -> line, from AR to B
        self.writes = []                  # (line, bytes) in the order they landed
        self.n_reads = self.n_host_reads = 0

    def idle(self):
        return not (self.ars or self.aws or self.ws or self.bs or self.r_cur or self.b_cur)

    def writes_idle(self):
        """No RMW in flight (host reads may be)."""
        return not (self.rmw_open or self.aws or self.ws or self.bs or self.b_cur)

    def _pick(self, queue, cyc):
        heads = {}
        for e in queue:                   # the oldest transaction of each ID may respond
            heads.setdefault(e[1], e)
        ready = [e for e in heads.values() if e[0] <= cyc]
        if not ready or self.rng.random() < self.stall:
            return None
        e = self.rng.choice(ready)
        queue.remove(e)
        return e

    def drive(self, ctx, cyc):
        d, rng, stall = self.dut, self.rng, self.stall
        ctx.set(d.m_axi_arready, rng.random() >= stall)
        ctx.set(d.m_axi_awready, rng.random() >= stall)
        ctx.set(d.m_axi_wready, rng.random() >= stall)
        if self.r_cur is None and (e := self._pick(self.ars, cyc)) is not None:
            _, rid, line, data = e
            self.r_cur = (rid, self.mem.get(line, 0) if data is None else data)
        if self.b_cur is None and (e := self._pick(self.bs, cyc)) is not None:
            _, bid, line, data = e
            if data is not None:
                self._land(line, data)
            self.b_cur = (bid, line)
        ctx.set(d.m_axi_rvalid, self.r_cur is not None)
        if self.r_cur is not None:
            ctx.set(d.m_axi_rid, self.r_cur[0])
            ctx.set(d.m_axi_rdata, self.r_cur[1])
            ctx.set(d.m_axi_rlast, 1)
        ctx.set(d.m_axi_bvalid, self.b_cur is not None)
        if self.b_cur is not None:
            ctx.set(d.m_axi_bid, self.b_cur[0])

    def _land(self, line, data):
        self.mem[line] = data
        self.writes.append((line, data.to_bytes(LINE_BYTES, "little")))

    def _line(self, addr):
        assert addr % LINE_BYTES == 0 and self.lo <= addr // LINE_BYTES < self.hi, hex(addr)
        return addr // LINE_BYTES

    def sample(self, ctx, cyc):
        d, rng = self.dut, self.rng
        if ctx.get(d.m_axi_arvalid) and ctx.get(d.m_axi_arready):
            assert (ctx.get(d.m_axi_arlen), ctx.get(d.m_axi_arsize), ctx.get(d.m_axi_arburst)) == (0, 6, 1)
            line, aid = self._line(ctx.get(d.m_axi_araddr)), ctx.get(d.m_axi_arid)
            assert line not in self.rmw_open.values(), f"read of line {line} while an RMW of it is in flight"
            if aid == self.host_id:
                self.n_host_reads += 1
            else:
                assert aid < self.host_id and aid not in self.rmw_open, f"AR id {aid} reused"
                if self.grants is not None:      # wb_grant: every RMW uses the oldest grant, of its line
                    assert self.grants[:1] == [line], f"RMW of line {line} started; grants held {self.grants}"
                    self.grants.pop(0)
                self.rmw_open[aid] = line
                self.n_reads += 1
            early = self.mem.get(line, 0) if rng.random() < 0.5 else None
            self.ars.append([cyc + rng.randint(*self.lat), aid, line, early])
        if ctx.get(d.m_axi_awvalid) and ctx.get(d.m_axi_awready):
            assert (ctx.get(d.m_axi_awlen), ctx.get(d.m_axi_awsize), ctx.get(d.m_axi_awburst)) == (0, 6, 1)
            self.aws.append((self._line(ctx.get(d.m_axi_awaddr)), ctx.get(d.m_axi_awid)))
        if ctx.get(d.m_axi_wvalid) and ctx.get(d.m_axi_wready):
            assert ctx.get(d.m_axi_wlast) == 1 and ctx.get(d.m_axi_wstrb) == (1 << LINE_BYTES) - 1
            self.ws.append(ctx.get(d.m_axi_wdata))
        while self.aws and self.ws:
            (line, wid), data = self.aws.pop(0), self.ws.pop(0)
            assert self.rmw_open.get(wid) == line, f"write of line {line} id {wid} without its RMW read"
            if rng.random() < 0.5:
                self._land(line, data)
                data = None
            self.bs.append([cyc + rng.randint(*self.lat), wid, line, data])
        if self.r_cur is not None and ctx.get(d.m_axi_rready):
            self.r_cur = None
        if self.b_cur is not None:
            assert ctx.get(d.m_axi_bready)
            del self.rmw_open[self.b_cur[0]]
            self.b_cur = None


class Run:
    """What one simulation saw."""

    def __init__(self):
        self.reads = []          # (index, (packets, bytes) returned, (packets, bytes) expected)
        self.grants = 0          # wb_ok grants given (wb_grant)
        self.upd_stalls = 0      # cycles upd.valid was refused with no read or flush taking the slot
        self.cycles = 0
        self.last_upd_cycle = None
        self.dram = None
        self.stats = None


def rtl_counters(dut, updates, *, reads=(), flushes=(), p_gap=0.2, rd_stall=0.0, axi_stall=0.0, lat=(1, 12),
                 seed=0, final_flush=True, max_cycles=200_000):
    """Drive ``updates`` (bursts with random gaps), ``reads`` (host reads offered at random times) and
    ``flush`` pulses (after the k-th accepted update for k in ``flushes``), then a final flush.

    Expected read values come from the accepted updates (input monitor): a read
    accepted in cycle T must include exactly the updates accepted before T.
    """
    rng = random.Random(seed)
    run = Run()
    exp = {}
    flushes = sorted(flushes)
    dram = AxiDram(dut, random.Random(seed + 1), stall=axi_stall, lat=lat)
    run.dram = dram
    grant_due = []                       # [cycle, line] of the request being granted (wb_grant)

    async def bench(ctx):
        sent = nread = 0
        read_q = []              # expected values of accepted reads, in order
        fl_i = 0
        final_sent = False
        waiting_done = False
        gap = 0
        snap = {}
        await ctx.tick()
        while ctx.get(dut.clearing):
            assert not ctx.get(dut.upd.ready) and not ctx.get(dut.rd.ready)
            await ctx.tick()
        for cyc in range(max_cycles):
            # -- drive ---------------------------------------------------------------
            if gap:
                gap -= 1
                ctx.set(dut.upd.valid, 0)
            elif sent < len(updates):
                ctx.set(dut.upd.valid, 1)
                idx, nb = updates[sent]
                ctx.set(dut.upd.payload.index, idx)
                ctx.set(dut.upd.payload.bytes, nb)
            else:
                ctx.set(dut.upd.valid, 0)
            offer_rd = nread < len(reads) and (sent * len(reads) >= nread * len(updates)) and rng.random() < 0.5
            ctx.set(dut.rd.valid, offer_rd)
            if offer_rd:
                ctx.set(dut.rd.payload, reads[nread])
            flush = 0
            if fl_i < len(flushes) and sent >= flushes[fl_i]:
                flush, fl_i = 1, fl_i + 1
            elif (final_flush and not final_sent and sent == len(updates) and nread == len(reads)
                  and fl_i == len(flushes)):
                flush, final_sent, waiting_done = 1, True, True
            ctx.set(dut.flush, flush)
            if flush:
                snap = dict(exp)         # updates accepted before the pulse
            ctx.set(dut.rd_data.ready, rng.random() >= rd_stall)
            if dut.wb_grant:             # the back-invalidation a grant waits for: 0..10 cycles
                ctx.set(dut.wb_req.ready, not grant_due and rng.random() < 0.7)
                ctx.set(dut.wb_ok.valid, bool(grant_due) and grant_due[0] <= cyc)
                if grant_due:
                    ctx.set(dut.wb_ok.payload, grant_due[1])
            dram.drive(ctx, cyc)
            # -- sample ------------------------------------------------------------------
            upd_fire = ctx.get(dut.upd.valid) and ctx.get(dut.upd.ready)
            rd_fire = ctx.get(dut.rd.valid) and ctx.get(dut.rd.ready)
            assert not (upd_fire and rd_fire), "an update and a read accepted in the same cycle"
            if ctx.get(dut.upd.valid) and not ctx.get(dut.upd.ready) and not rd_fire and not ctx.get(dut.flush_busy):
                run.upd_stalls += 1
            if rd_fire:
                idx = reads[nread]
                # rd_line: the whole line of the counter, as of the same instant (zero out of range)
                base = idx - idx % 4
                line = 0 if idx >= dut.n_counters else sum(
                    (p | b << 64) << (128 * j) for j, (p, b) in enumerate(exp.get(base + j, (0, 0)) for j in range(4)))
                read_q.append((idx, exp.get(idx, (0, 0)), line))
                nread += 1
            if upd_fire:
                idx, nb = updates[sent]
                if idx < dut.n_counters:
                    p, b = exp.get(idx, (0, 0))
                    exp[idx] = ((p + 1) & MASK64, (b + nb) & MASK64)
                sent += 1
                run.last_upd_cycle = cyc
                if rng.random() < p_gap:
                    gap = rng.randint(1, 6)
            if dut.wb_grant:
                if ctx.get(dut.wb_ok.valid):
                    assert ctx.get(dut.wb_ok.ready)
                    dram.grants.append(grant_due[1])
                    run.grants += 1
                    grant_due.clear()
                if ctx.get(dut.wb_req.valid) and ctx.get(dut.wb_req.ready):
                    line = ctx.get(dut.wb_req.payload)
                    assert dut.counters_off <= line < dut.counters_off + dut.n_counters // 4, line
                    grant_due[:] = [cyc + rng.randint(1, 10), line]
            if ctx.get(dut.rd_data.valid) and ctx.get(dut.rd_data.ready):
                idx, want, want_line = read_q.pop(0)
                got = (ctx.get(dut.rd_data.payload.packets), ctx.get(dut.rd_data.payload.bytes))
                run.reads.append((idx, got, want))
                got_line = ctx.get(dut.rd_line)
                assert got_line == want_line, f"rd_line of counter {idx}: {got_line:#x}, model {want_line:#x}"
            dram.sample(ctx, cyc)
            if ctx.get(dut.flush_done):
                # every update accepted before the last flush pulse is in DRAM (packets only grow here)
                for idx, (p, _) in snap.items():
                    raw = dram.mem.get(dut.counters_off + idx // 4, 0) >> (128 * (idx % 4))
                    assert raw & MASK64 >= p, f"counter {idx}: DRAM {raw & MASK64} packets < {p} at flush_done"
                if waiting_done:         # no update since the final flush: every RMW must be complete
                    assert dram.writes_idle(), "flush_done before every B response"
                    run.cycles = cyc
                    await ctx.tick()
                    run.stats = tuple(ctx.get(s) for s in (dut.hits, dut.misses, dut.evictions))
                    return
            if not final_flush and sent == len(updates) and nread == len(reads) and not read_q:
                run.cycles = cyc
                run.stats = tuple(ctx.get(s) for s in (dut.hits, dut.misses, dut.evictions))
                return
            await ctx.tick()
        stuck = []
        if sent < len(updates):
            stuck.append(f"upd ({sent}/{len(updates)} accepted)")
        if nread < len(reads) or read_q:
            stuck.append(f"rd/rd_data ({nread}/{len(reads)} accepted, {len(read_q)} results owed)")
        if waiting_done:
            stuck.append(f"flush_done (AXI pending: {len(dram.ars)} R {len(dram.bs)} B)")
        raise AssertionError(f"CounterBlock stuck after {max_cycles} cycles: " + "; ".join(stuck))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return run


def model_image(updates, n_counters, counters_off):
    """``{line: bytes}`` of every counter line the updates touched, rendered by CounterBank."""
    bank = CounterBank(n_counters=n_counters, counters_off=counters_off)
    for idx, nb in updates:
        if idx < n_counters:
            bank.add(idx, nb)
    return {w.index: w.data for w in bank.writes()}


def dram_image(run):
    return {line: v.to_bytes(LINE_BYTES, "little") for line, v in run.dram.mem.items()}


def check(run, updates, n_counters, off, n_rd):
    bad = [r for r in run.reads if r[1] != r[2]]
    assert len(run.reads) == n_rd
    assert not bad, f"{len(bad)} wrong reads of {n_rd}, first {bad[:5]}"
    assert dram_image(run) == model_image(updates, n_counters, off)


def cache_model(updates, n_counters, cache_lines):
    """(hits, misses, evictions) of a direct-mapped write-back cache of lines, all dirty lines flushed
    at the end: the statistics the block must count for an update stream without intermediate flushes."""
    resident = {}
    hits = misses = evictions = 0
    for idx, _ in updates:
        if idx >= n_counters:
            continue
        line = idx // 4
        s = line % cache_lines
        if resident.get(s) == line:
            hits += 1
        else:
            misses += 1
            evictions += s in resident
            resident[s] = line
    return hits, misses, evictions + len(resident)


@pytest.mark.parametrize("n_counters,off,cache,n_upd,n_rd", [
    (4, 0, 2, 300, 40), (32, 7, 2, 1500, 200), (1024, 100, 8, 2000, 200), (256, 3, 8, 2000, 300)])
@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_updates_reads_flush_match_model(n_counters, off, cache, n_upd, n_rd, stall):
    """Hot-spot update stream with gaps over many more lines than the cache holds, interleaved reads,
    flushes during the stream and at the end: every read equals the model's value at its point in the
    update order, the final DRAM image equals the model's."""
    rng = random.Random(n_counters * 7 + int(stall * 10))
    updates = hot_updates(rng, n_upd, n_counters, hot=6, p_hot=0.6)
    hot = sorted({i for i, _ in updates})
    reads = [rng.choice(hot) if rng.random() < 0.8 else rng.randrange(n_counters) for _ in range(n_rd)]
    flushes = [n_upd // 3, n_upd // 3 + 1, 2 * n_upd // 3]
    dut = CounterBlock(n_counters=n_counters, counters_off=off, cache_lines=cache, evict_depth=4, max_evictions=3)
    run = rtl_counters(dut, updates, reads=reads, flushes=flushes, rd_stall=stall, axi_stall=stall, seed=1)
    check(run, updates, n_counters, off, n_rd)
    hits, misses, _ = run.stats
    assert hits + misses == n_upd


@pytest.mark.parametrize("stall,lat", [(0.0, (1, 3)), (0.5, (1, 12)), (0.2, (20, 40))])
def test_heavy_eviction_random(stall, lat):
    """Uniform random updates over 64 lines through an 8-line cache (almost every update evicts),
    reads everywhere, no intermediate flush: reads and DRAM exact, statistics as a direct-mapped cache."""
    n, off, cache = 256, 5, 8
    rng = random.Random(int(stall * 100) + lat[0])
    updates = [(rng.randrange(n), rng.getrandbits(16)) for _ in range(1500)]
    reads = [rng.randrange(n) for _ in range(300)]
    dut = CounterBlock(n_counters=n, counters_off=off, cache_lines=cache, evict_depth=2, max_evictions=4)
    run = rtl_counters(dut, updates, reads=reads, rd_stall=stall, axi_stall=stall, lat=lat, seed=2)
    check(run, updates, n, off, len(reads))
    assert run.stats == cache_model(updates, n, cache)
    assert run.dram.n_reads == run.stats[2]          # one RMW per eviction
    assert run.dram.n_host_reads == len(reads)


@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_conflicting_tags_thrash(stall):
    """Back-to-back updates alternating between lines that share a cache set: every update misses and
    evicts the other line, RMWs of one line queue behind each other; reads of both lines interleaved."""
    n, cache = 128, 4
    rng = random.Random(11 + int(stall * 10))
    pair = [1, 1 + 4 * cache, 2 + 8 * cache]          # counters of lines 0, 4 and 8: all in set 0
    updates = [(pair[k % 3] if rng.random() < 0.9 else rng.randrange(n), rng.getrandbits(16)) for k in range(1200)]
    reads = [rng.choice(pair) for _ in range(200)]
    dut = CounterBlock(n_counters=n, counters_off=9, cache_lines=cache, evict_depth=4, max_evictions=4)
    run = rtl_counters(dut, updates, reads=reads, p_gap=0.0, rd_stall=stall, axi_stall=stall, seed=4)
    check(run, updates, n, 9, len(reads))
    assert run.stats == cache_model(updates, n, cache)


@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_write_back_grants(stall):
    """wb_grant: every eviction RMW (misses and flushes) starts only after the grant of its own line, one
    grant per RMW; reads and the DRAM image stay exact while grants take 1..10 cycles."""
    n, off, cache = 128, 11, 4
    rng = random.Random(77 + int(stall * 10))
    updates = hot_updates(rng, 1200, n, hot=5, p_hot=0.5)
    reads = [rng.randrange(n) for _ in range(150)]
    dut = CounterBlock(n_counters=n, counters_off=off, cache_lines=cache, evict_depth=4, max_evictions=3,
                       wb_grant=True)
    run = rtl_counters(dut, updates, reads=reads, flushes=[400, 800], rd_stall=stall, axi_stall=stall, seed=4)
    check(run, updates, n, off, len(reads))
    assert run.grants == run.dram.n_reads > 0 and run.dram.grants == []


def test_one_update_per_cycle_same_index():
    """Back-to-back updates to three counters (all hits after the first), no reads: one accepted every
    cycle, no stall, sums exact."""
    rng = random.Random(3)
    updates = [(rng.choice((0, 1, 4)), rng.getrandbits(16)) for _ in range(400)]
    updates += [(7, 1)] * 50            # a long run of one index
    dut = CounterBlock(n_counters=16, counters_off=0, cache_lines=4)
    run = rtl_counters(dut, updates, p_gap=0.0, seed=3)
    assert run.upd_stalls == 0
    assert run.last_upd_cycle == len(updates) - 1
    assert dram_image(run) == model_image(updates, 16, 0)
    assert run.stats == (len(updates) - 2, 2, 2)


def test_out_of_range_index_ignored():
    """With n_counters not a power of two, updates beyond the region are dropped and read as zero."""
    dut = CounterBlock(n_counters=12, counters_off=2, cache_lines=2)
    updates = [(13, 5), (3, 1), (15, 9), (11, 2)]
    run = rtl_counters(dut, updates, reads=[13, 11, 3], p_gap=0.0, seed=6)
    assert all(g == w for _, g, w in run.reads)
    assert all(g == (0, 0) for i, g, _ in run.reads if i >= 12)
    assert dram_image(run) == model_image(updates, 12, 2)


@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_each_pass_writes_exactly_the_dirty_lines(stall):
    """Updates, then a flush with the update stream idle, repeatedly, with a cache that holds every
    line: each pass writes exactly the lines ``CounterBank.writes()`` returns for the same batch, with
    its bytes (a pass after no update writes none); DRAM starts from a nonzero image (read-modify-write)."""
    n, off = 64, 3
    rng = random.Random(9)
    start = {off + line: rng.getrandbits(512) for line in range(n // 4)}
    bank = CounterBank(n_counters=n, counters_off=off)
    for line, v in start.items():
        raw = v.to_bytes(LINE_BYTES, "little")
        for j in range(4):
            i = (line - off) * 4 + j
            bank.packets[i] = int.from_bytes(raw[16 * j:16 * j + 8], "little")
            bank.bytes[i] = int.from_bytes(raw[16 * j + 8:16 * j + 16], "little")
    dut = CounterBlock(n_counters=n, counters_off=off, cache_lines=16)
    batches = [hot_updates(rng, 200, n, p_hot=0.3), [(9, 100), (9, 1), (40, 7), (63, 65535)], [],
               hot_updates(rng, 30, n, hot=1, p_hot=1.0), []]
    expect = []
    for b in batches:
        for idx, nb in b:
            bank.add(idx, nb)
        expect.append(sorted((w.index, w.data) for w in bank.writes()))
    dram = AxiDram(dut, random.Random(10), stall=stall, image=start)

    async def bench(ctx):
        passes = []
        cyc = 0
        await ctx.tick().until(~dut.clearing)
        for b in batches:
            for idx, nb in b:
                ctx.set(dut.upd.valid, 1)
                ctx.set(dut.upd.payload.index, idx)
                ctx.set(dut.upd.payload.bytes, nb)
                assert ctx.get(dut.upd.ready)
                await ctx.tick()
            ctx.set(dut.upd.valid, 0)
            ctx.set(dut.flush, 1)
            await ctx.tick()
            ctx.set(dut.flush, 0)
            assert ctx.get(dut.flush_busy)
            before = len(dram.writes)
            for _ in range(5000):
                dram.drive(ctx, cyc)
                dram.sample(ctx, cyc)
                if ctx.get(dut.flush_done):
                    assert dram.idle()
                    break
                await ctx.tick()
                cyc += 1
            else:
                raise AssertionError("stuck: flush_done never came")
            await ctx.tick()
            assert not ctx.get(dut.flush_busy)
            passes.append(sorted(dram.writes[before:]))
        assert passes == expect

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(n_counters=10), ValueError, "n_counters = 10"),
    (dict(n_counters=0), ValueError, "n_counters = 0"),
    (dict(n_counters="4"), TypeError, "n_counters = '4'"),
    (dict(counters_off=-1), ValueError, "counters_off = -1"),
    (dict(cache_lines=48), ValueError, "cache_lines = 48"),
    (dict(cache_lines=1), ValueError, "cache_lines = 1"),
    (dict(cache_lines=1.0), TypeError, "cache_lines = 1.0"),
    (dict(evict_depth=0), ValueError, "evict_depth = 0"),
    (dict(max_evictions=0), ValueError, "max_evictions = 0"),
    (dict(max_evictions=8, axi_id_bits=3), ValueError, "axi_id_bits = 3"),
    (dict(axi_id_bits=0), ValueError, "axi_id_bits = 0"),
])
def test_bad_parameters(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        CounterBlock(**kw)


def test_default_configuration_size():
    """cxlnic.rtl builds the block over the whole counter region of the default configuration."""
    from cxlnic.config import NicConfig
    from cxlnic.rtl import blocks

    cfg = NicConfig()
    dut = blocks(cfg)["counters"]()
    assert dut.n_counters == (cfg.counters + 3) // 4 * 4 and dut.counters_off == cfg.regions()["counters"][0]
    assert dut.cache_lines == 512
    Fragment.get(dut, None)             # it elaborates (and is not left unused)


@pytest.mark.sim
@pytest.mark.parametrize("n_counters,off,cache", [(8192, 64, 64), (None, None, 512)])
def test_counters_verilator(n_counters, off, cache):
    """A small cache over 2048 lines (heavy eviction), and the default configuration's block."""
    from cxlnic.config import NicConfig
    from cxlnic.tb.sim import run_cocotb

    if n_counters is None:
        cfg = NicConfig()
        n_counters, off = (cfg.counters + 3) // 4 * 4, cfg.regions()["counters"][0]
    run_cocotb(CounterBlock(n_counters=n_counters, counters_off=off, cache_lines=cache), "cxlnic.tb.test_counters",
               params=f"c{n_counters}o{off}k{cache}", seed=1,
               extra_env={"CXLNIC_N_COUNTERS": str(n_counters), "CXLNIC_COUNTERS_OFF": str(off),
                          "CXLNIC_CACHE_LINES": str(cache)})
