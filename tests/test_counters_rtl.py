"""CounterBlock RTL against CounterBank semantics (Amaranth simulator), with and without backpressure.

The testbench is its own AXI write slave: the DRAM image it collects after a
flush must equal the model's ``CounterBank.writes()`` line for line.
"""

import random

import pytest
from amaranth.sim import Simulator

from cxlnic.hdl.counters import CounterBlock
from cxlnic.hdl.layouts import LINE_BYTES
from cxlnic.model.counters import CounterBank

MASK64 = (1 << 64) - 1


def hot_updates(rng, n, n_counters, *, hot=3, p_hot=0.8):
    """``n`` (index, bytes) updates, mostly to a few hot counters so same-index runs are frequent."""
    hot_set = rng.sample(range(n_counters), hot)
    return [(rng.choice(hot_set) if rng.random() < p_hot else rng.randrange(n_counters), rng.getrandbits(16))
            for _ in range(n)]


class Run:
    """What one simulation saw: read results with their expected values, AXI writes per flush pass."""

    def __init__(self):
        self.reads = []          # (index, (packets, bytes) returned, (packets, bytes) expected)
        self.passes = [[]]       # AXI writes (line, bytes) between flush_done pulses, in order
        self.pulses = [0]        # flush pulses in each of those segments
        self.dram = {}           # line -> bytes
        self.upd_stalls = 0      # cycles upd.valid was refused with no read or write-back taking the slot
        self.cycles = 0
        self.last_upd_cycle = None


def rtl_counters(dut, updates, *, reads=(), flushes=(), p_gap=0.2, rd_stall=0.0, axi_stall=0.0, seed=0,
                 final_flush=True, max_cycles=200_000):
    """Drive ``updates`` (bursts with random gaps), ``reads`` (host reads offered at random times) and
    ``flush`` pulses (after the k-th accepted update for k in ``flushes``), then a final flush.

    Expected read values come from the accepted updates (input monitor): a read
    accepted in cycle T must include exactly the updates accepted before T.
    """
    rng = random.Random(seed)
    run = Run()
    exp = {}
    n_lines = dut.n_counters // 4
    off = dut.counters_off
    flushes = sorted(flushes)

    async def bench(ctx):
        sent = nread = 0
        read_q = []              # expected values of accepted reads, in order
        aws, ws = [], []
        b_owed = 0
        fl_i = 0
        final_sent = False
        waiting_done = False
        gap = 0
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
            run.pulses[-1] += flush
            ctx.set(dut.rd_data.ready, rng.random() >= rd_stall)
            ctx.set(dut.m_axi_awready, rng.random() >= axi_stall)
            ctx.set(dut.m_axi_wready, rng.random() >= axi_stall)
            ctx.set(dut.m_axi_bvalid, b_owed > 0 and rng.random() >= axi_stall)
            # -- sample ------------------------------------------------------------------
            upd_fire = ctx.get(dut.upd.valid) and ctx.get(dut.upd.ready)
            rd_fire = ctx.get(dut.rd.valid) and ctx.get(dut.rd.ready)
            assert not (upd_fire and rd_fire), "an update and a read accepted in the same cycle"
            if ctx.get(dut.upd.valid) and not ctx.get(dut.upd.ready) and not rd_fire and not ctx.get(dut.flush_busy):
                run.upd_stalls += 1
            if rd_fire:
                idx = reads[nread]
                read_q.append((idx, exp.get(idx, (0, 0))))
                nread += 1
            if upd_fire:
                idx, nb = updates[sent]
                p, b = exp.get(idx, (0, 0))
                exp[idx] = ((p + 1) & MASK64, (b + nb) & MASK64)
                sent += 1
                run.last_upd_cycle = cyc
                if rng.random() < p_gap:
                    gap = rng.randint(1, 6)
            if ctx.get(dut.rd_data.valid) and ctx.get(dut.rd_data.ready):
                idx, want = read_q.pop(0)
                got = (ctx.get(dut.rd_data.payload.packets), ctx.get(dut.rd_data.payload.bytes))
                run.reads.append((idx, got, want))
            if ctx.get(dut.m_axi_awvalid) and ctx.get(dut.m_axi_awready):
                assert ctx.get(dut.m_axi_awlen) == 0 and ctx.get(dut.m_axi_awsize) == 6
                assert ctx.get(dut.m_axi_awburst) == 1
                addr = ctx.get(dut.m_axi_awaddr)
                assert addr % LINE_BYTES == 0 and off <= addr // LINE_BYTES < off + n_lines, hex(addr)
                aws.append(addr // LINE_BYTES)
            if ctx.get(dut.m_axi_wvalid) and ctx.get(dut.m_axi_wready):
                assert ctx.get(dut.m_axi_wlast) == 1 and ctx.get(dut.m_axi_wstrb) == (1 << LINE_BYTES) - 1
                ws.append(ctx.get(dut.m_axi_wdata).to_bytes(LINE_BYTES, "little"))
            while aws and ws:
                line, d = aws.pop(0), ws.pop(0)
                run.dram[line] = d
                run.passes[-1].append((line, d))
                b_owed += 1
            if ctx.get(dut.m_axi_bvalid) and ctx.get(dut.m_axi_bready):
                b_owed -= 1
            if ctx.get(dut.flush_done):
                assert b_owed == 0, "flush_done before every B response"
                run.passes.append([])
                run.pulses.append(0)
                if waiting_done:
                    run.cycles = cyc
                    await ctx.tick()
                    return
            if not final_flush and sent == len(updates) and nread == len(reads) and not read_q:
                run.cycles = cyc
                return
            await ctx.tick()
        stuck = []
        if sent < len(updates):
            stuck.append(f"upd ({sent}/{len(updates)} accepted)")
        if nread < len(reads) or read_q:
            stuck.append(f"rd/rd_data ({nread}/{len(reads)} accepted, {len(read_q)} results owed)")
        if waiting_done:
            stuck.append(f"flush_done (AW/W/B: {len(aws)} {len(ws)} {b_owed} unmatched)")
        raise AssertionError(f"CounterBlock stuck after {max_cycles} cycles: " + "; ".join(stuck))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    run.passes.pop()     # the empty segment after the last flush_done
    run.pulses.pop()
    return run


def ref_writes(updates, n_counters, counters_off):
    bank = CounterBank(n_counters=n_counters, counters_off=counters_off)
    for idx, nb in updates:
        bank.add(idx, nb)
    return bank


@pytest.mark.parametrize("n_counters,off,n_upd,n_rd", [(4, 0, 300, 40), (32, 7, 3000, 300), (1024, 100, 2000, 200)])
@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_updates_reads_flush_match_model(n_counters, off, n_upd, n_rd, stall):
    """Hot-spot update stream with gaps, interleaved reads, flushes during the stream and at the end:
    every read equals the sums of the updates accepted before it, the final DRAM image equals the model's."""
    rng = random.Random(n_counters * 7 + int(stall * 10))
    updates = hot_updates(rng, n_upd, n_counters)
    hot = sorted({i for i, _ in updates})
    reads = [rng.choice(hot) if rng.random() < 0.8 else rng.randrange(n_counters) for _ in range(n_rd)]
    # flushes while updates stream, one of them twice in a row (a flush during a pass)
    flushes = [n_upd // 3, n_upd // 3 + 1, 2 * n_upd // 3]
    dut = CounterBlock(n_counters=n_counters, counters_off=off)
    run = rtl_counters(dut, updates, reads=reads, flushes=flushes, rd_stall=stall, axi_stall=stall, seed=1)
    bad = [r for r in run.reads if r[1] != r[2]]
    assert len(run.reads) == n_rd
    assert not bad, f"{len(bad)} wrong reads of {n_rd}, first {bad[:5]}"
    bank = ref_writes(updates, n_counters, off)
    want = {w.index: w.data for w in bank.writes()}
    assert run.dram == want
    # a pass writes each line at most once, and only lines that were dirty (flushes during a pass
    # merge into one more pass, so a segment between flush_done pulses holds at most `pulses` passes)
    for p, k in zip(run.passes, run.pulses, strict=True):
        lines = [line for line, _ in p]
        assert max(map(lines.count, lines), default=0) <= k
        assert set(lines) <= set(want)


@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_each_pass_writes_exactly_the_dirty_lines(stall):
    """Updates, then a flush with the update stream idle, repeatedly: each pass writes exactly the
    lines ``CounterBank.writes()`` returns for the same batch (a pass after no update writes none)."""
    n, off = 64, 3
    rng = random.Random(9)
    bank = CounterBank(n_counters=n, counters_off=off)
    dut = CounterBlock(n_counters=n, counters_off=off)
    batches = [hot_updates(rng, 200, n, p_hot=0.3), [(9, 100), (9, 1), (40, 7), (63, 65535)], [],
               hot_updates(rng, 30, n, hot=1, p_hot=1.0), []]
    expect = []
    for b in batches:
        for idx, nb in b:
            bank.add(idx, nb)
        expect.append([(w.index, w.data) for w in bank.writes()])

    async def bench(ctx):
        passes = []
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
            writes, aws, ws, owed = [], [], [], 0
            for _ in range(5000):
                ctx.set(dut.m_axi_awready, rng.random() >= stall)
                ctx.set(dut.m_axi_wready, rng.random() >= stall)
                ctx.set(dut.m_axi_bvalid, owed > 0 and rng.random() >= stall)
                if ctx.get(dut.m_axi_bvalid):
                    owed -= 1
                if ctx.get(dut.m_axi_awvalid) and ctx.get(dut.m_axi_awready):
                    aws.append(ctx.get(dut.m_axi_awaddr) // LINE_BYTES)
                if ctx.get(dut.m_axi_wvalid) and ctx.get(dut.m_axi_wready):
                    ws.append(ctx.get(dut.m_axi_wdata).to_bytes(LINE_BYTES, "little"))
                while aws and ws:
                    writes.append((aws.pop(0), ws.pop(0)))
                    owed += 1
                if ctx.get(dut.flush_done):
                    assert owed == 0 and not aws and not ws
                    break
                await ctx.tick()
            else:
                raise AssertionError("stuck: flush_done never came")
            await ctx.tick()
            assert not ctx.get(dut.flush_busy)
            passes.append(writes)
        assert passes == expect

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_one_update_per_cycle_same_index():
    """Back-to-back updates to three counters, no reads: one accepted every cycle, sums exact."""
    rng = random.Random(3)
    updates = [(rng.choice((0, 1, 4)), rng.getrandbits(16)) for _ in range(400)]
    updates += [(7, 1)] * 50            # a long run of one index
    dut = CounterBlock(n_counters=16, counters_off=0)
    run = rtl_counters(dut, updates, p_gap=0.0, seed=3)
    assert run.upd_stalls == 0
    assert run.last_upd_cycle == len(updates) - 1
    assert run.dram == {w.index: w.data for w in ref_writes(updates, 16, 0).writes()}


def test_out_of_range_index_ignored():
    """With n_counters not a power of two, updates beyond the region are dropped and read as zero."""
    dut = CounterBlock(n_counters=12, counters_off=2)
    updates = [(13, 5), (3, 1), (15, 9), (11, 2)]
    run = rtl_counters(dut, updates, reads=[13, 11], p_gap=0.0, seed=6)
    assert all(g == w or i >= 12 for i, g, w in run.reads)
    assert all(g == (0, 0) for i, g, _ in run.reads if i >= 12)
    bank = ref_writes([(i, b) for i, b in updates if i < 12], 12, 2)
    assert run.dram == {w.index: w.data for w in bank.writes()}


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(n_counters=10), ValueError, "n_counters = 10"),
    (dict(n_counters=0), ValueError, "n_counters = 0"),
    (dict(n_counters="4"), TypeError, "n_counters = '4'"),
    (dict(counters_off=-1), ValueError, "counters_off = -1"),
])
def test_bad_parameters(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        CounterBlock(**kw)


@pytest.mark.sim
def test_counters_verilator():
    from cxlnic.tb.sim import run_cocotb

    run_cocotb(CounterBlock(n_counters=1024, counters_off=64), "cxlnic.tb.test_counters", params="c1024o64",
               seed=1, extra_env={"CXLNIC_N_COUNTERS": "1024", "CXLNIC_COUNTERS_OFF": "64"})
