"""cocotb testbench: CuckooEngine under Verilator, DRAM played by cocotbext-axi's AxiRam.

The AxiRam holds an image built by the golden model (``FlowTable`` at ~90 %
load with stashed keys); lookups of present and absent keys go in bursts with
idle gaps, the AR and R channels and the result stream get random stalls, and
every result is checked against ``FlowTable.lookup_entry``, and DRAM reads plus
bucket-cache hits against the model's line count.  Host writes (the move test) are
atomic in the AxiRam and reported once on ``wr`` in the cycle they land (``wr_pending``
held low), which satisfies the engine's contract.  Built with and without the bucket
cache (``CXLNIC_CACHE_LINES``).  Run through
``tests/test_cuckoo_rtl.py::test_cuckoo_verilator`` (``pytest -m sim``).
"""

import itertools
import logging
import os
import random

import cocotb
from amaranth.lib import data
from cocotb.triggers import ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiRam

from cxlnic.config import NicConfig
from cxlnic.hdl.cuckoo import LookupRequest, LookupResult
from cxlnic.hdl.layouts import LINE_BYTES
from cxlnic.model.flowtable import BUCKET, FENTRY, FKEY, FlowTable, TableFull
from cxlnic.model.memory import BytearrayMemory, format_image
from cxlnic.model.toeplitz import alt_bucket
from cxlnic.tb.common import clock_and_reset

N_BUCKETS = int(os.environ.get("CXLNIC_N_BUCKETS", "256"))
N_STASH = int(os.environ.get("CXLNIC_N_STASH", "1"))
CACHE_LINES = int(os.environ.get("CXLNIC_CACHE_LINES", "0"))
TAG_BITS = 16


def tb_config(n_buckets: int = N_BUCKETS, n_stash: int = N_STASH) -> NicConfig:
    """The geometry shared by the DUT build (pytest side) and this testbench."""
    return NicConfig(n_buckets=n_buckets, n_stash=n_stash, n_rules=4, cam_entries=4, n_actions=4, n_tenants=1)


def random_key(rng):
    return FKEY.new(tenant=rng.getrandbits(24), in_port=rng.getrandbits(8), eth_type=0x0800,
                    ip_proto=rng.choice((6, 17)), src_port=rng.getrandbits(16), dst_port=rng.getrandbits(16),
                    src_ip=(0xFFFF << 32) | rng.getrandbits(32), dst_ip=(0xFFFF << 32) | rng.getrandbits(32))


def build_table(rng, load=0.9):
    """Model-built image; ``max_moves`` 0 until the stash holds keys, then cuckoo paths to ``load``."""
    cfg = tb_config()
    mem = BytearrayMemory(cfg.image_lines)
    mem.apply(format_image(cfg))
    present = []
    for max_moves in (0, 8):
        table = FlowTable(mem, max_moves=max_moves)
        while table.load < load and not (max_moves == 0 and table.n_stashed):
            k = random_key(rng)
            try:
                table.insert(FENTRY.new(conn_state=3, action=rng.getrandbits(20), last_seen=rng.getrandbits(32),
                                        key=k))
            except TableFull:
                break
            present.append(k)
    return cfg, mem, table, present


def hand_move(mem, bo, n_buckets, idx, rng):
    """Line writes moving the slot of entry ``idx`` to its other bucket, copy before delete (or none)."""
    for b in range(n_buckets):
        v = BUCKET.from_bytes(mem.read_line(bo + b))
        for j, sl in enumerate(v.slots):
            if sl.valid and sl.entry == idx:
                dst = alt_bucket(b, sl.sig, n_buckets)
                d = BUCKET.from_bytes(mem.read_line(bo + dst))
                free = [i for i, x in enumerate(d.slots) if not x.valid]
                if not free:
                    return
                f = rng.choice(free)
                d.slots[f].valid, d.slots[f].sig, d.slots[f].entry = 1, sl.sig, sl.entry
                yield bo + dst, BUCKET.to_bytes(d), True
                v = BUCKET.from_bytes(mem.read_line(bo + b))      # unchanged: dst != b
                v.slots[j].valid = v.slots[j].sig = v.slots[j].entry = 0
                yield bo + b, BUCKET.to_bytes(v), True
                return


def churn_writes(table, mem, cfg, hot, others, rng, n_ops, new_entry):
    """``(line, bytes, report)`` of the model's inserts/deletes of ``others``, each followed by
    moves of the ``hot`` entries between their two buckets.

    Planned lazily: each line is computed after the previous one was applied (to
    ``mem``, the table's memory), as ``FlowTable(apply=False)`` requires.  ``report`` is true for
    bucket and stash lines (what the CXL agent reports on ``wr``).  Hand moves only swap
    a slot between its two buckets (the model's own move pattern), so the model's
    bookkeeping stays valid.
    """
    r = cfg.regions()
    bo, so = r["buckets"][0], r["stash"][0]

    def report(line):
        return bo <= line < bo + cfg.n_buckets or so <= line < so + cfg.n_stash
    for n in range(n_ops):
        if n % 2:
            op = table.delete(others.pop(rng.randrange(len(others))), apply=False)
        else:
            e = new_entry(rng)
            try:
                op = table.insert(e, apply=False)
            except TableFull:
                continue
            others.append(e.key)
        for w in op.writes:
            yield w.index, w.data, report(w.index)
        for _ in range(4):
            yield from hand_move(mem, bo, cfg.n_buckets, rng.choice(hot), rng)


class TB:
    """Owns the clock, reset, the AxiRam and the two stream ends of the CuckooEngine."""

    def __init__(self, dut, seed, load=0.9):
        self.dut = dut
        self.rng = random.Random(seed)
        self.req = data.Layout.cast(LookupRequest(TAG_BITS))
        self.res = data.Layout.cast(LookupResult(TAG_BITS))
        self.cfg, self.mem, self.table, self.present = build_table(self.rng, load)
        size = 1 << (self.cfg.image_lines * LINE_BYTES - 1).bit_length()
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=size)
        self.ram.read_if.log.setLevel(logging.WARNING)
        self.ram.write_if.log.setLevel(logging.WARNING)
        self.ram.write(0, bytes(self.mem.buf))

    async def reset(self):
        d = self.dut
        await clock_and_reset(d, {"i__valid": 0, "o__ready": 0, "wr__valid": 0, "wr__payload": 0, "wr_done__valid": 0,
                                  "wr_pending": 0, "hash_key": int.from_bytes(self.cfg.hash_key, "little")})
        await RisingEdge(d.clk)

    def set_stalls(self, p):
        """AR and R channel pauses of the AxiRam with probability ``p`` per cycle (0: none)."""
        rng = random.Random(self.rng.getrandbits(32))
        for ch in (self.ram.read_if.ar_channel, self.ram.read_if.r_channel):
            if p:
                ch.set_pause_generator(rng.random() < p for _ in itertools.count())
            else:
                ch.clear_pause_generator()

    def pack(self, key, tag):
        return FKEY.pack(key) | (tag << self.req["tag"].offset)

    async def run(self, keys, *, o_stall, burst=64, gap=(0, 30), stuck_cycles=2000, writes=None):
        """Feed ``keys`` in bursts with idle gaps; collect ``(tag, hit, index, entry)`` results.

        ``writes``: optional iterator of ``(line, bytes, report)`` host writes, applied to the
        AxiRam (and the model's memory) at random cycles and, when ``report``, signalled on
        ``wr`` in that same cycle, before any R beat can carry them.
        """
        d, rng = self.dut, self.rng
        out, sent, idle, quiet = [], 0, 0, 0
        in_burst = burst
        while len(out) < len(keys):
            d.wr__valid.value = 0
            if writes is not None and rng.random() < 0.3:
                w = next(writes, None)
                if w is None:
                    writes = None
                else:
                    line, data_, report = w
                    self.mem.write_line(line, data_)
                    self.ram.write(line * LINE_BYTES, data_)
                    if report:
                        d.wr__valid.value = 1
                        d.wr__payload.value = line
            d.o__ready.value = int(rng.random() >= o_stall)
            if idle:
                idle -= 1
                d.i__valid.value = 0
            elif sent < len(keys):
                d.i__valid.value = 1
                d.i__payload.value = self.pack(keys[sent], sent & ((1 << TAG_BITS) - 1))
            else:
                d.i__valid.value = 0
            await ReadOnly()
            progress = False
            if d.i__valid.value and d.i__ready.value:
                sent += 1
                in_burst -= 1
                progress = True
                if in_burst == 0:
                    in_burst = rng.randint(1, burst)
                    idle = rng.randint(*gap)
            if d.o__valid.value and d.o__ready.value:
                p = self.res.from_bits(d.o__payload.value.to_unsigned())
                out.append((int(p.tag), int(p.hit), int(p.index), p.entry.as_value().value))
                progress = True
            quiet = 0 if progress or idle else quiet + 1
            if quiet > stuck_cycles:
                raise AssertionError(self.stuck_report(len(out), len(keys), sent))
            await RisingEdge(d.clk)
        return out

    def stuck_report(self, n_out, n_keys, sent):
        d = self.dut
        chans = {
            "i (lookup in)": (d.i__valid.value, d.i__ready.value),
            "o (result out)": (d.o__valid.value, d.o__ready.value),
            "AR": (d.m_axi_arvalid.value, d.m_axi_arready.value),
            "R": (d.m_axi_rvalid.value, d.m_axi_rready.value),
        }
        stuck = [f"{name} valid={v} ready={r}" for name, (v, r) in chans.items()]
        return (f"CuckooEngine stuck: {n_out}/{n_keys} results, {sent} accepted, lines read "
                f"{d.lines_read.value.to_unsigned()}; channels: " + ", ".join(stuck))

    def expected(self, keys):
        res = []
        for n, k in enumerate(keys):
            r = self.table.lookup_entry(k)
            tag = n & ((1 << TAG_BITS) - 1)
            res.append((tag, 0, 0, 0) if r is None else (tag, 1, r[0], FENTRY.pack(r[1])))
        return res


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.3])
async def lookups_match_model(dut, stall):
    tb = TB(dut, seed=cocotb.RANDOM_SEED)
    await tb.reset()
    tb.set_stalls(stall)
    assert tb.table.n_stashed > 0
    keys = [tb.rng.choice(tb.present) if tb.rng.random() < 0.7 else random_key(tb.rng) for _ in range(2000)]
    lines0 = dut.lines_read.value.to_unsigned() + dut.cache_hits.value.to_unsigned()
    reads0 = tb.table.stats.lookup_reads
    got = await tb.run(keys, o_stall=stall)
    expect = tb.expected(keys)
    mismatches = [(n, g, e) for n, (g, e) in enumerate(zip(got, expect, strict=True)) if g != e]
    for n, g, e in mismatches[:20]:
        dut._log.error("lookup %d: rtl tag/hit/index %s, model %s", n, g[:3], e[:3])
    hits = sum(e[1] for e in expect)
    await RisingEdge(dut.clk)       # the counters count the last result at this edge
    await ReadOnly()
    lines = dut.lines_read.value.to_unsigned()
    cached = dut.cache_hits.value.to_unsigned()
    dut._log.info("%d lookups, %d hits, %d DRAM lines read, %d bucket-cache hits, %d replays (cache lines %d)",
                  len(keys), hits, lines, cached, dut.replays.value.to_unsigned(), CACHE_LINES)
    assert not mismatches, f"{len(mismatches)} mismatches of {len(keys)}"
    assert lines + cached - lines0 == tb.table.stats.lookup_reads - reads0
    assert (cached > 0) == (CACHE_LINES > 0)
    assert dut.lookups.value.to_unsigned() == len(keys)
    assert dut.hits.value.to_unsigned() == hits


@cocotb.test()
async def no_false_miss_during_moves(dut):
    """Hot keys move between their buckets while the model inserts and deletes others."""
    tb = TB(dut, seed=cocotb.RANDOM_SEED + 1, load=0.8)
    await tb.reset()
    tb.set_stalls(0.2)
    rng = tb.rng
    hot = rng.sample(tb.present, 8)
    hot_set = {FKEY.pack(k) for k in hot}
    expect = {FKEY.pack(k): tb.table.lookup_entry(k) for k in hot}
    others = [k for k in tb.present if FKEY.pack(k) not in hot_set]
    ops0 = tb.table.stats.inserts + tb.table.stats.deletes

    def new_entry(rng):
        return FENTRY.new(conn_state=3, action=rng.getrandbits(20), key=random_key(rng))
    writes = churn_writes(tb.table, tb.mem, tb.cfg, [e[0] for e in expect.values()], others, rng, 2000, new_entry)
    keys = [rng.choice(hot) for _ in range(2000)]
    got = await tb.run(keys, o_stall=0.2, writes=writes, gap=(0, 4))
    bad = []
    for n, (k, g) in enumerate(zip(keys, got, strict=True)):
        idx, e = expect[FKEY.pack(k)]
        if g != (n & ((1 << TAG_BITS) - 1), 1, idx, FENTRY.pack(e)):
            bad.append((n, g[:3], idx))
    for b in bad[:20]:
        dut._log.error("lookup %d: rtl tag/hit/index %s, expected index %d", *b)
    await RisingEdge(dut.clk)
    await ReadOnly()
    # Every replay here is a would-be false miss: the hot keys are present throughout.
    dut._log.info("%d lookups during %d table operations: %d replays, %d give-ups", len(keys),
                  tb.table.stats.inserts + tb.table.stats.deletes - ops0, dut.replays.value.to_unsigned(),
                  dut.giveups.value.to_unsigned())
    assert not bad, f"{len(bad)} false misses or wrong entries of {len(keys)}"
    assert (dut.cache_hits.value.to_unsigned() > 0) == (CACHE_LINES > 0)
