"""cocotb testbench: CounterBlock (delta cache over DRAM) under Verilator, DRAM played by cocotbext-axi's AxiRam.

Thousands of updates (mostly to a few hot counters, so same-index runs are
frequent, the rest uniform over a region many times the cache, so lines are
evicted all the time) go in bursts with idle gaps, host reads are
interleaved, ``flush`` pulses while updates stream and once at the end.  All
five AXI channels and ``rd_data`` get random stalls (the pauses of the AR/R
and AW/W/B channels also randomise the DRAM latency).  An input monitor feeds
the reference (``CounterBank``): every read result must include exactly the
updates accepted before the read, and after the final flush the AxiRam's
counter region must hold ``CounterBank.writes()`` byte for byte (untouched
lines still zero).  Run through
``tests/test_counters_rtl.py::test_counters_verilator`` (``pytest -m sim``).
"""

import itertools
import logging
import os
import random

import cocotb
from amaranth.lib import data
from cocotb.triggers import ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiRam

from cxlnic.hdl.counters import CounterUpdate
from cxlnic.hdl.layouts import LINE_BYTES, Counter
from cxlnic.model.counters import CounterBank
from cxlnic.tb.common import clock_and_reset

N_COUNTERS = int(os.environ.get("CXLNIC_N_COUNTERS", "1024"))
COUNTERS_OFF = int(os.environ.get("CXLNIC_COUNTERS_OFF", "0"))
CACHE_LINES = int(os.environ.get("CXLNIC_CACHE_LINES", "512"))
MASK64 = (1 << 64) - 1


class TB:
    """Owns the clock, reset, the AxiRam and the stream ends of the CounterBlock."""

    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = random.Random(seed)
        self.n_lines = N_COUNTERS // 4
        size = 1 << ((COUNTERS_OFF + self.n_lines) * LINE_BYTES - 1).bit_length()
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=size)
        self.ram.read_if.log.setLevel(logging.WARNING)
        self.ram.write_if.log.setLevel(logging.WARNING)
        self.bank = CounterBank(n_counters=N_COUNTERS, counters_off=COUNTERS_OFF)
        self.image = {}              # line -> bytes: every line the model has written back so far
        self.mismatches = 0
        self.counter = data.Layout.cast(Counter)
        self.upd_bytes_at = data.Layout.cast(CounterUpdate(self.idx_bits))["bytes"].offset
        self.n_upd = 0               # accepted updates (all in range here)

    async def reset(self):
        d = self.dut
        await clock_and_reset(d, {"upd__valid": 0, "upd__payload": 0, "rd__valid": 0, "rd__payload": 0,
                                  "rd_data__ready": 0, "flush": 0})
        await RisingEdge(d.clk)

    def set_stalls(self, p):
        """AR, R, AW, W and B channel pauses of the AxiRam with probability ``p`` per cycle (0: none)."""
        rng = random.Random(self.rng.getrandbits(32))
        wif, rif = self.ram.write_if, self.ram.read_if
        for ch in (wif.aw_channel, wif.w_channel, wif.b_channel, rif.ar_channel, rif.r_channel):
            if p:
                ch.set_pause_generator(rng.random() < p for _ in itertools.count())
            else:
                ch.clear_pause_generator()

    def updates(self, n, hot=4, p_hot=0.8):
        hot_set = self.rng.sample(range(N_COUNTERS), hot)
        return [(self.rng.choice(hot_set) if self.rng.random() < p_hot else self.rng.randrange(N_COUNTERS),
                 self.rng.getrandbits(16)) for _ in range(n)]

    async def run(self, updates, reads, *, flush_at=(), rd_stall=0.0, burst=64, gap=(0, 20), stuck_cycles=2000):
        """Stream ``updates`` in bursts, offer ``reads`` at random, pulse ``flush`` after the k-th accepted
        update for each k in ``flush_at``; check every read result as it leaves."""
        d, rng = self.dut, self.rng
        flush_at = sorted(flush_at)
        sent = nread = 0
        owed = []                    # (index, expected (packets, bytes)) of accepted reads
        n_results = 0
        idle, quiet, in_burst = 0, 0, burst
        cycle, self.first_upd, self.last_upd = 0, None, None
        while sent < len(updates) or nread < len(reads) or owed:
            if idle:
                d.upd__valid.value = 0
            elif sent < len(updates):
                idx, nb = updates[sent]
                d.upd__valid.value = 1
                d.upd__payload.value = idx | (nb << self.upd_bytes_at)
            else:
                d.upd__valid.value = 0
            offer = nread < len(reads) and rng.random() < 0.2
            d.rd__valid.value = int(offer)
            if offer:
                d.rd__payload.value = reads[nread]
            d.flush.value = 0
            if flush_at and sent >= flush_at[0]:
                flush_at.pop(0)
                d.flush.value = 1
            d.rd_data__ready.value = int(rng.random() >= rd_stall)
            await ReadOnly()
            progress = False
            if d.rd__valid.value and d.rd__ready.value:
                idx = reads[nread]
                owed.append((idx, self.bank.get(idx)))
                nread += 1
                progress = True
            if d.upd__valid.value and d.upd__ready.value:
                idx, nb = updates[sent]
                self.bank.add(idx, nb)
                self.n_upd += 1
                sent += 1
                self.first_upd = cycle if self.first_upd is None else self.first_upd
                self.last_upd = cycle
                in_burst -= 1
                progress = True
                if in_burst == 0:
                    in_burst = rng.randint(1, burst)
                    idle = rng.randint(*gap)
            elif idle:
                idle -= 1
            if d.rd_data__valid.value and d.rd_data__ready.value:
                c = self.counter.from_bits(d.rd_data__payload.value.to_unsigned())
                idx, (p, b) = owed.pop(0)
                got, want = (int(c.packets), int(c.bytes)), (p & MASK64, b & MASK64)
                if got != want:
                    self.mismatches += 1
                    if self.mismatches <= 20:
                        d._log.error("read %d of counter %d: rtl %s, model %s", n_results, idx, got, want)
                n_results += 1
                progress = True
            quiet = 0 if progress or idle else quiet + 1
            if quiet > stuck_cycles:
                raise AssertionError(self.stuck_report(f"{sent}/{len(updates)} updates, {nread}/{len(reads)} reads "
                                                       f"accepted, {len(owed)} results owed"))
            await RisingEdge(d.clk)
            cycle += 1
        d.upd__valid.value = 0
        d.rd__valid.value = 0
        d.flush.value = 0
        return n_results

    @property
    def idx_bits(self):
        return max(1, (N_COUNTERS - 1).bit_length())

    async def flush(self, timeout_cycles=None):
        """Pulse ``flush`` and wait for ``flush_done``."""
        d = self.dut
        timeout_cycles = timeout_cycles or 40 * self.n_lines + 2000
        d.flush.value = 1
        await RisingEdge(d.clk)
        d.flush.value = 0
        for _ in range(timeout_cycles):
            await ReadOnly()
            if d.flush_done.value:
                await RisingEdge(d.clk)
                return
            await RisingEdge(d.clk)
        raise AssertionError(self.stuck_report(f"flush_done not seen {timeout_cycles} cycles after flush"))

    def stuck_report(self, what):
        d = self.dut
        chans = {
            "upd": (d.upd__valid.value, d.upd__ready.value),
            "rd": (d.rd__valid.value, d.rd__ready.value),
            "rd_data": (d.rd_data__valid.value, d.rd_data__ready.value),
            "AR": (d.m_axi_arvalid.value, d.m_axi_arready.value),
            "R": (d.m_axi_rvalid.value, d.m_axi_rready.value),
            "AW": (d.m_axi_awvalid.value, d.m_axi_awready.value),
            "W": (d.m_axi_wvalid.value, d.m_axi_wready.value),
            "B": (d.m_axi_bvalid.value, d.m_axi_bready.value),
        }
        stuck = [f"{name} valid={v} ready={r}" for name, (v, r) in chans.items()]
        return (f"CounterBlock stuck: {what}; flush_busy={d.flush_busy.value}; channels: " + ", ".join(stuck))

    def check_dram(self):
        """Compare the AxiRam's whole counter region with the model's lines; returns the mismatch count."""
        want = {w.index: w.data for w in self.bank.writes()}
        self.image |= want
        bad = 0
        for line in range(COUNTERS_OFF, COUNTERS_OFF + self.n_lines):
            got = self.ram.read(line * LINE_BYTES, LINE_BYTES)
            expect = self.image.get(line, bytes(LINE_BYTES))
            if got != expect:
                bad += 1
                if bad <= 20:
                    self.dut._log.error("DRAM line %d: rtl %s, model %s", line, got.hex(), expect.hex())
        return bad, len(want)


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.3])
async def updates_reads_flush_match_model(dut, stall):
    tb = TB(dut, seed=cocotb.RANDOM_SEED + int(stall * 10))
    await tb.reset()
    tb.set_stalls(stall)
    updates = tb.updates(20000)
    hot = sorted({i for i, _ in updates})
    reads = [tb.rng.choice(hot) if tb.rng.random() < 0.8 else tb.rng.randrange(N_COUNTERS) for _ in range(2000)]
    n = await tb.run(updates, reads, flush_at=(5000, 5001, 12000), rd_stall=stall)
    await tb.flush()
    bad, lines = tb.check_dram()
    dut._log.info("%d updates, %d reads, %d dirty lines written back; %d read and %d DRAM mismatches",
                  len(updates), n, lines, tb.mismatches, bad)
    assert n == len(reads)
    assert tb.mismatches == 0, f"{tb.mismatches} wrong read results of {n}"
    assert bad == 0, f"{bad} wrong DRAM lines of {tb.n_lines}"

    hits, misses, evictions = (int(x.value) for x in (dut.hits, dut.misses, dut.evictions))
    dut._log.info("cache of %d lines: %d hits, %d misses, %d evictions", CACHE_LINES, hits, misses, evictions)
    assert hits + misses == tb.n_upd and evictions > 0

    # DRAM is authoritative: a line the host set to nonzero values is read and updated from them
    # (read-modify-write), and a flush leaves a never-updated line alone.
    touched = set(tb.image)
    free = [line for line in range(COUNTERS_OFF, COUNTERS_OFF + tb.n_lines) if line not in touched]
    seeded, untouched = free[0], free[-1]
    raw = tb.rng.randbytes(LINE_BYTES)
    for line, val in ((seeded, raw), (untouched, b"\xa5" * LINE_BYTES)):
        tb.ram.write(line * LINE_BYTES, val)
        tb.image[line] = val
        for j in range(4):       # the model continues from the values the host wrote
            i = (line - COUNTERS_OFF) * 4 + j
            tb.bank.packets[i] = int.from_bytes(val[16 * j:16 * j + 8], "little")
            tb.bank.bytes[i] = int.from_bytes(val[16 * j + 8:16 * j + 16], "little")
    base = (seeded - COUNTERS_OFF) * 4
    upd = [(base + 1, 1), (base + 1, 2), (base + 3, 65535)] + tb.updates(500, hot=2)
    await tb.run(upd, [base + 1, base, base + 3, base + 2], burst=len(upd), gap=(0, 0))
    await tb.flush()
    bad, lines = tb.check_dram()
    assert tb.mismatches == 0 and bad == 0, (tb.mismatches, bad, lines)
    if untouched not in {COUNTERS_OFF + i // 4 for i, _ in upd}:
        assert tb.ram.read(untouched * LINE_BYTES, LINE_BYTES) == b"\xa5" * LINE_BYTES


@cocotb.test()
async def one_update_per_cycle(dut):
    """Back-to-back updates to two counters, no reads or flush: one accepted every cycle."""
    tb = TB(dut, seed=cocotb.RANDOM_SEED + 7)
    await tb.reset()
    updates = [(tb.rng.choice((5, 6)), tb.rng.getrandbits(16)) for _ in range(3000)]
    await tb.run(updates, [], burst=len(updates), gap=(0, 0))
    cycles = tb.last_upd - tb.first_upd + 1
    dut._log.info("%d updates in %d cycles", len(updates), cycles)
    assert cycles == len(updates), f"{len(updates)} updates took {cycles} cycles"
    await tb.run([], [5, 6])
    await tb.flush()
    bad, lines = tb.check_dram()
    assert tb.mismatches == 0 and bad == 0 and lines == 1, (tb.mismatches, bad, lines)


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.3])
async def conflicting_tags_thrash(dut, stall):
    """Updates alternating between three lines of one cache set (every update evicts, RMWs of one line
    queue behind each other), reads of those counters interleaved: reads and DRAM exact."""
    tb = TB(dut, seed=cocotb.RANDOM_SEED + 13 + int(stall * 10))
    await tb.reset()
    tb.set_stalls(stall)
    c = tb.rng.randrange(4 * CACHE_LINES)
    trio = [i for i in (c, c + 4 * CACHE_LINES, c + 8 * CACHE_LINES) if i < N_COUNTERS]
    updates = [(trio[k % len(trio)] if tb.rng.random() < 0.9 else tb.rng.randrange(N_COUNTERS),
                tb.rng.getrandbits(16)) for k in range(4000)]
    reads = [tb.rng.choice(trio) for _ in range(800)]
    n = await tb.run(updates, reads, rd_stall=stall, burst=200, gap=(0, 4))
    await tb.flush()
    bad, _ = tb.check_dram()
    evictions = int(dut.evictions.value)
    dut._log.info("%d updates, %d reads, %d evictions; %d read and %d DRAM mismatches",
                  len(updates), n, evictions, tb.mismatches, bad)
    assert n == len(reads) and tb.mismatches == 0 and bad == 0, (n, tb.mismatches, bad)
