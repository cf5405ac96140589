"""CuckooEngine RTL against the model's FlowTable.lookup_entry (Amaranth simulator).

A testbench process plays the DRAM: it serves AR requests from a bytearray
image with random latency, out of order across IDs, with ARREADY stalls and
idle R cycles, and (in the move test) applies the model's table writes one
line at a time while reporting them on ``wr``.
"""

import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from cxlnic.config import NicConfig
from cxlnic.hdl.cuckoo import CuckooEngine
from cxlnic.hdl.layouts import LINE_BYTES
from cxlnic.model.flowtable import BUCKET, FENTRY, FKEY, FlowTable, TableFull
from cxlnic.model.memory import BytearrayMemory, format_image
from cxlnic.model.toeplitz import FlowHash
from cxlnic.tb.test_cuckoo import churn_writes

TAG_BITS = 16


def make_cfg(n_buckets=16, n_stash=1):
    return NicConfig(n_buckets=n_buckets, n_stash=n_stash, n_rules=4, cam_entries=4, n_actions=4, n_tenants=1)


def make_key(rng):
    return FKEY.new(tenant=rng.getrandbits(24), in_port=rng.getrandbits(8), eth_type=0x86DD,
                    ip_proto=rng.choice((6, 17)), src_port=rng.getrandbits(16), dst_port=rng.getrandbits(16),
                    src_ip=rng.getrandbits(128), dst_ip=rng.getrandbits(128))


def make_entry(key, rng):
    return FENTRY.new(conn_state=3, action=rng.getrandbits(20), peer=rng.getrandbits(31),
                      last_seen=rng.getrandbits(32), seen_packets=rng.getrandbits(32), key=key)


def build_table(seed, *, n_buckets=16, n_stash=1, load=0.9, max_moves=0):
    """A table at ``load`` with some stashed keys (``max_moves`` 0 sends keys to the stash early)."""
    rng = random.Random(seed)
    cfg = make_cfg(n_buckets, n_stash)
    mem = BytearrayMemory(cfg.image_lines)
    mem.apply(format_image(cfg))
    table = FlowTable(mem, max_moves=max_moves)
    present = []
    while table.load < load:
        k = make_key(rng)
        try:
            table.insert(make_entry(k, rng))
        except TableFull:
            break
        present.append(k)
    return cfg, mem, table, present, rng


def add_signature_collisions(cfg, mem, present, rng, n=4):
    """Rewrite a few slots so that a bucket holds several slots with one key's signature.

    The image stays a valid input of ``FlowTable.lookup`` (the reference), which then reads
    more than one entry line in that bucket; the overwritten slot's own key becomes absent.
    """
    fh = FlowHash(cfg.hash_key, cfg.n_buckets)
    bo = cfg.regions()["buckets"][0]
    for k in rng.sample(present, n):
        p, _s, sig = fh.locate(FKEY.to_bytes(k))
        b = BUCKET.from_bytes(mem.read_line(bo + p))
        slots = list(b.slots)
        j = rng.randrange(len(slots))
        slots[j].valid = 1
        slots[j].sig = sig
        if not slots[j].entry:
            slots[j].entry = rng.randrange(cfg.flows)
        mem.write_line(bo + p, BUCKET.to_bytes(b))


def make_engine(cfg, **kw):
    r = cfg.regions()
    return CuckooEngine(n_buckets=cfg.n_buckets, buckets_off=r["buckets"][0], stash_off=r["stash"][0],
                        n_stash=cfg.n_stash, flows_off=r["flows"][0], tag_bits=TAG_BITS, **kw)


def rtl_lookup(cfg, mem, keys, *, latency=(1, 20), ar_stall=0.0, r_idle=0.0, o_stall=0.0, in_idle=0.0,
               writes=None, seed=0, max_outstanding=32, max_cycles=200_000, serial=False, barrier=None,
               split_writes=None, sample="beat", idle_start=0, b_port="wr", **engine_kw):
    """Look ``keys`` up in the simulated engine over ``mem``; returns ``(results, stats)``.

    ``results[i] = (tag, hit, index, entry int)`` in output order.  Host writes are
    ``(line, bytes, report)``; ``report`` is true for bucket and stash lines (the ``wr`` reports):

    * ``writes``: an iterator, one write started at random cycles while lookups run;
    * ``barrier``: ``{i: [writes]}``, applied after result ``i - 1`` is out and before key ``i``
      is offered.

    A write is atomic by default: applied to ``mem`` and reported on ``wr`` in the same cycle.
    With ``split_writes = d`` it is an AXI write in flight: reported when issued, applied
    (visible to reads) 1..d cycles later, its B response (second report) 0..d cycles after that;
    ``wr_pending`` is high in between.  One host write at a time.  ``sample``: when a read's
    data is taken from ``mem``: "beat" (when the R beat goes on the bus), "issue" (at the AR
    handshake) or "random" (either, per read).  ``serial``: a key is offered only after the
    previous result.  ``idle_start``: no key is offered in the first cycles (e.g. while the bucket
    cache is cleared after reset: probes miss and nothing is filled then).  ``b_port``: where a split
    write's second report goes: "wr", "wr_done" or "random" (either, per write).
    """
    dut = make_engine(cfg, max_outstanding=max_outstanding, **engine_kw)
    rng = random.Random(seed)
    bucket_lo = cfg.regions()["buckets"][0]
    barrier = dict(barrier or {})
    stats = {}
    out = []

    async def bench(ctx):
        ctx.set(dut.hash_key, int.from_bytes(cfg.hash_key, "little"))
        pending = []                     # [ready cycle, rid, line, data sampled at issue or None]
        presented = None                 # the R beat on the bus
        sent = cycle = 0
        first_out = last_out = None
        wq = iter(writes) if writes is not None else None
        bq = []                          # barrier writes to apply now
        cur = None                       # split write in flight: [line, data, report, t_apply, t_b, applied, barrier]
        while len(out) < len(keys):
            cycle += 1
            if cycle > max_cycles:
                raise AssertionError(f"engine stuck: {len(out)}/{len(keys)} results, {sent} sent, "
                                     f"{len(pending)} reads pending, arvalid {ctx.get(dut.m_axi_arvalid)}")
            # host writes
            ctx.set(dut.wr.valid, 0)
            ctx.set(dut.wr_done.valid, 0)
            busy = 0
            if cur is not None:
                line, data, report, t_apply, t_b, applied, _ = cur
                if not applied and cycle >= t_apply:
                    mem.write_line(line, data)
                    cur[5] = True
                if cycle >= t_b:
                    cur = None
                    if report:                               # the B response: second report
                        port = b_port if b_port != "random" else rng.choice(("wr", "wr_done"))
                        ctx.set(getattr(dut, port).valid, 1)
                        ctx.set(getattr(dut, port).payload.line, line)
                else:
                    busy = report
            else:
                if sent in barrier and len(out) == sent:
                    bq.extend(barrier.pop(sent))
                w, from_barrier = None, bool(bq)
                if bq:
                    w = bq.pop(0)
                elif wq is not None and rng.random() < 0.3:
                    w = next(wq, None)
                    if w is None:
                        wq = None
                if w is not None:
                    line, data, report = w
                    if split_writes:
                        t_apply = cycle + rng.randint(1, split_writes)
                        cur = [line, data, report, t_apply, t_apply + rng.randint(0, split_writes), False,
                               from_barrier]
                    else:
                        mem.write_line(line, data)
                    if report:                               # issued (and for an atomic write visible) now
                        ctx.set(dut.wr.valid, 1)
                        ctx.set(dut.wr.payload.line, line)
            ctx.set(dut.wr_pending, busy)
            # lookups in
            offer = (cycle > idle_start and sent < len(keys) and sent not in barrier and not bq
                     and not (cur is not None and cur[6]) and not (serial and len(out) < sent)
                     and rng.random() >= in_idle)
            if offer:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload.key.as_value(), FKEY.pack(keys[sent]))
                ctx.set(dut.i.payload.tag, sent & ((1 << TAG_BITS) - 1))
            else:
                ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, rng.random() >= o_stall)
            # AR
            ctx.set(dut.m_axi_arready, rng.random() >= ar_stall)
            # R: any ready read, any order
            if presented is None and pending and rng.random() >= r_idle:
                ready = [p for p in pending if p[0] <= cycle]
                if ready:
                    presented = rng.choice(ready)
                    pending.remove(presented)
                    data = presented[3] if presented[3] is not None else mem.read_line(presented[2])
                    ctx.set(dut.m_axi_rvalid, 1)
                    ctx.set(dut.m_axi_rid, presented[1])
                    ctx.set(dut.m_axi_rdata, int.from_bytes(data, "little"))
                    ctx.set(dut.m_axi_rlast, 1)
            # sample
            if ctx.get(dut.m_axi_arvalid) and ctx.get(dut.m_axi_arready):
                addr = ctx.get(dut.m_axi_araddr)
                assert addr % LINE_BYTES == 0 and ctx.get(dut.m_axi_arlen) == 0 and ctx.get(dut.m_axi_arsize) == 6
                assert addr // LINE_BYTES >= bucket_lo
                at_issue = sample == "issue" or (sample == "random" and rng.random() < 0.5)
                pending.append([cycle + rng.randint(*latency), ctx.get(dut.m_axi_arid), addr // LINE_BYTES,
                                mem.read_line(addr // LINE_BYTES) if at_issue else None])
            in_fire = ctx.get(dut.i.valid) and ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                p = ctx.get(dut.o.payload)
                out.append((p.tag, p.hit, p.index, ctx.get(dut.o.payload.entry.as_value())))
                first_out = cycle if first_out is None else first_out
                last_out = cycle
            r_fire = presented is not None and ctx.get(dut.m_axi_rready)
            await ctx.tick()
            if in_fire:
                sent += 1
            if r_fire:
                presented = None
                ctx.set(dut.m_axi_rvalid, 0)
        for name in ("lookups", "hits", "lines_read", "replays", "giveups", "cache_hits"):
            stats[name] = ctx.get(getattr(dut, name))
        stats["cycles"] = cycle
        stats["out_span"] = (last_out - first_out + 1) if out else 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out, stats


class ReadTrace:
    """Records the lines ``FlowTable`` reads (its reads all go through ``mem.read_line``)."""

    def __init__(self, table):
        self.lines = []
        self._inner = table._read
        table._read = self

    def __call__(self, index):
        self.lines.append(index)
        return self._inner(index)


def cache_model(cfg, traces, cache_lines, barrier=None):
    """``(DRAM reads, cache hits)`` of a direct-mapped bucket cache over per-lookup read traces, run
    one lookup at a time: every bucket/stash line read from DRAM is installed, a reported write
    (``barrier``, as in :func:`rtl_lookup`) invalidates its line."""
    r = cfg.regions()
    bo, so = r["buckets"][0], r["stash"][0]

    def slot(line):
        if bo <= line < bo + cfg.n_buckets:
            return (line - bo) % cache_lines
        if so <= line < so + cfg.n_stash:
            return ("stash", line)
        return None
    cache, dram, hits = {}, 0, 0
    for n, lines in enumerate(traces):
        for line, _data, report in (barrier or {}).get(n, []):
            if report and slot(line) is not None:
                cache.pop(slot(line), None)
        for line in lines:
            s = slot(line)
            if s is not None and cache.get(s) == line:
                hits += 1
            else:
                dram += 1
                if s is not None:
                    cache[s] = line
    return dram, hits


def ref_lookup(table, keys):
    """What the engine must return for ``keys``: ``(tag, hit, index, entry int)``."""
    res = []
    for n, k in enumerate(keys):
        r = table.lookup_entry(k)
        res.append((n & ((1 << TAG_BITS) - 1), 0, 0, 0) if r is None
                   else (n & ((1 << TAG_BITS) - 1), 1, r[0], FENTRY.pack(r[1])))
    return res


@pytest.mark.parametrize("n_stash,stalls,cache", [(1, False, None), (1, True, None), (1, True, 0), (0, True, 4),
                                                   (2, True, 8)],
                         ids=["stash1-nostall", "stash1-stall", "stash1-stall-nocache", "nostash-stall-cache4",
                              "stash2-stall-cache8"])
def test_lookups_match_model(n_stash, stalls, cache):
    cfg, mem, table, present, rng = build_table(1, n_stash=n_stash)
    assert table.n_stashed > 8 * (n_stash - 1)
    add_signature_collisions(cfg, mem, present, rng)
    keys = [rng.choice(present) if rng.random() < 0.7 else make_key(rng) for _ in range(300 if n_stash == 1 else 200)]
    kw = dict(ar_stall=0.3, r_idle=0.3, o_stall=0.3, in_idle=0.2) if stalls else {}
    reads0 = table.stats.lookup_reads
    expect = ref_lookup(table, keys)
    got, stats = rtl_lookup(cfg, mem, keys, seed=2, bucket_cache_lines=cache, **kw)
    bad = [(i, g, e) for i, (g, e) in enumerate(zip(got, expect, strict=True)) if g != e]
    assert not bad, f"{len(bad)} mismatches, first: {bad[:3]}"
    assert sum(e[1] for e in expect) > len(keys) // 2 and sum(1 - e[1] for e in expect) > len(keys) // 6
    assert stats["lookups"] == len(keys) and stats["hits"] == sum(e[1] for e in expect)
    # every line of the model's search is read once: from DRAM or from the bucket cache
    assert stats["lines_read"] + stats["cache_hits"] == table.stats.lookup_reads - reads0
    if cache == 0:
        assert stats["cache_hits"] == 0
    else:
        assert stats["cache_hits"] > len(keys) // 4
    assert stats["replays"] == 0


@pytest.mark.parametrize("cache", [16, 4, 1])
def test_cache_hits_and_misses(cache):
    """One lookup at a time, no writes: DRAM reads and cache hits exactly as a direct-mapped cache
    filled by every bucket/stash DRAM read (tagged when smaller than the table)."""
    cfg, mem, table, present, rng = build_table(7)
    add_signature_collisions(cfg, mem, present, rng)
    keys = [rng.choice(present) if rng.random() < 0.7 else make_key(rng) for _ in range(120)]
    trace = ReadTrace(table)
    traces = []
    for k in keys:
        n0 = len(trace.lines)
        table.lookup_entry(k)
        traces.append(trace.lines[n0:])
    dram, hits = cache_model(cfg, traces, cache)
    assert 0 < hits and 0 < dram
    got, stats = rtl_lookup(cfg, mem, keys, seed=8, serial=True, bucket_cache_lines=cache, idle_start=cache + 2)
    assert got == ref_lookup(table, keys)
    assert (stats["lines_read"], stats["cache_hits"]) == (dram, hits)


def _insert_writes(table, mem, rng, n):
    """Insert ``n`` new keys; returns ``(keys, [(line, bytes, report)])`` (applied to the table's memory)."""
    keys, writes = [], []
    for _ in range(n):
        e = make_entry(make_key(rng), rng)
        try:
            op = table.insert(e, apply=False)
        except TableFull:
            continue
        mem.apply(op.writes)
        keys.append(e.key)
        writes += [(w.index, w.data) for w in op.writes]
    return keys, writes


def _copy(cfg, mem):
    m2 = BytearrayMemory(cfg.image_lines)
    m2.buf[:] = mem.buf
    return m2


@pytest.mark.parametrize("mode", ["atomic", "split", "unreported"])
def test_cache_invalidation(mode):
    """Warm the cache, insert new keys between two passes: the reported writes invalidate the cached
    buckets, so every new key is found; unreported, the stale cache misses them (the test has teeth)."""
    cfg, mem, table, present, rng = build_table(9, load=0.6, max_moves=8)
    r = cfg.regions()
    bo, so = r["buckets"][0], r["stash"][0]
    dram = _copy(cfg, mem)                           # the DUT's DRAM; the table's memory runs ahead
    warm = list(present)
    expect_warm = ref_lookup(table, warm)
    new, writes = _insert_writes(table, mem, rng, 12)
    assert len(new) >= 8
    report = mode != "unreported"
    bw = [(line, data, report and (bo <= line < bo + cfg.n_buckets or so <= line < so + cfg.n_stash))
          for line, data in writes]
    after = new + rng.sample(present, 20)
    expect_after = ref_lookup(table, after)
    keys = warm + after
    got, stats = rtl_lookup(cfg, dram, keys, seed=10, latency=(2, 12), barrier={len(warm): bw},
                            split_writes=8 if mode == "split" else None)
    assert dram.buf == mem.buf
    assert got[:len(warm)] == expect_warm
    assert stats["cache_hits"] > len(after) // 2
    after_got = [(t - len(warm), *rest) for t, *rest in got[len(warm):]]
    bad = [(k, g, e) for k, (g, e) in enumerate(zip(after_got, expect_after, strict=True)) if g != e]
    if mode == "unreported":
        assert bad and all(g[1] == 0 and e[1] == 1 for _k, g, e in bad)
    else:
        assert not bad, f"{len(bad)} stale results: {bad[:3]}"


@pytest.mark.parametrize("split,b_port", [(None, "wr"), (6, "wr"), (6, "wr_done")])
def test_no_stale_fill_when_write_races_read(split, b_port):
    """Lookups of a key being inserted, with reads of its bucket in flight (data taken at AR time,
    i.e. old) while the insert's writes land: fills of those reads must not install the old bucket,
    so lookups offered after the insert completed find the key (cache full size: never evicted)."""
    for seed in range(4):
        cfg, mem, table, present, rng = build_table(11 + seed, load=0.6, max_moves=8)
        dram = _copy(cfg, mem)
        r = cfg.regions()
        bo = r["buckets"][0]
        fh = FlowHash(cfg.hash_key, cfg.n_buckets)
        while True:                                      # a key whose primary bucket has a free slot
            k = make_key(rng)
            p = fh.locate(FKEY.to_bytes(k))[0]
            if not all(sl.valid for sl in BUCKET.from_bytes(mem.read_line(bo + p)).slots):
                break
        op = table.insert(make_entry(k, rng), apply=False)
        assert bo + p in [w.index for w in op.writes]
        mem.apply(op.writes)
        writes = [(w.index, w.data, bo <= w.index < bo + cfg.n_buckets) for w in op.writes]
        assert not writes[0][2]                          # the entry line first: repeat it to start late
        pad = writes[:1] * 6
        n_race = 60
        keys = [k] * (n_race + 30)
        got, stats = rtl_lookup(cfg, dram, keys, seed=12 + seed, latency=(30, 40), sample="issue",
                                writes=pad + writes,
                                barrier={n_race: []}, split_writes=split, b_port=b_port)
        assert dram.buf == mem.buf
        exp = ref_lookup(table, keys)[n_race:]
        assert got[n_race:] == exp and exp[0][1] == 1
        assert stats["cache_hits"] >= 30
        # the race happened: lookups that read the old bucket saw the write reported and replayed
        assert stats["replays"] > 0


def _run_moves(max_replays, seed=3, **kw):
    cfg, mem, table, present, rng = build_table(seed, load=0.8, max_moves=8)
    hot_keys = rng.sample(present, 6)
    hot_set = {FKEY.pack(k) for k in hot_keys}
    expect = {FKEY.pack(k): table.lookup_entry(k) for k in hot_keys}
    others = [k for k in present if FKEY.pack(k) not in hot_set]
    ops0 = table.stats.inserts + table.stats.deletes
    keys = [rng.choice(hot_keys) for _ in range(400)]
    new_entry = lambda rng: make_entry(make_key(rng), rng)  # noqa: E731
    writes = churn_writes(table, mem, cfg, [expect[k][0] for k in hot_set], others, rng, 200, new_entry)
    got, stats = rtl_lookup(cfg, mem, keys, writes=writes, latency=(5, 30), seed=4, max_replays=max_replays, **kw)
    bad = []
    for n, (k, g) in enumerate(zip(keys, got, strict=True)):
        idx, e = expect[FKEY.pack(k)]
        if g != (n, 1, idx, FENTRY.pack(e)):
            bad.append((n, g[:3], idx))
    stats["table_ops"] = table.stats.inserts + table.stats.deletes - ops0
    return bad, stats


@pytest.mark.parametrize("kw", [dict(bucket_cache_lines=0), {}, dict(split_writes=6, sample="random"),
                                dict(bucket_cache_lines=4, split_writes=3, sample="random"),
                                dict(split_writes=6, sample="random", b_port="random")],
                         ids=["nocache", "cache", "cache-split-writes", "cache4-split-writes", "cache-wr-done"])
def test_no_false_miss_during_moves(kw):
    """Hot keys move between their buckets while the model inserts and deletes others: never a miss
    (with the bucket cache on too: cached lines are invalidated by the reports)."""
    bad, stats = _run_moves(max_replays=15, **kw)
    assert stats["table_ops"] > (20 if "split_writes" in kw else 40)
    assert not bad, f"{len(bad)} false misses or wrong entries (replays {stats['replays']}): {bad[:5]}"
    assert stats["replays"] > 0 and stats["giveups"] == 0
    assert (stats["cache_hits"] > 0) == (kw.get("bucket_cache_lines") != 0)


@pytest.mark.parametrize("cache", [0, None])
def test_moves_without_replay_do_miss(cache):
    """The same run with replay disabled shows the race (so the test above has teeth)."""
    bad, stats = _run_moves(max_replays=0, bucket_cache_lines=cache)
    assert bad and all(g[1] == 0 for _n, g, _i in bad)
    assert stats["giveups"] == len(bad)


@pytest.mark.parametrize("latency,cache", [(10, 0), (40, 0), (40, None)])
def test_throughput(latency, cache):
    """No backpressure: the R channel (one line per cycle) is the limit once contexts cover the latency;
    with the bucket cache, one line per cycle of DRAM reads (after a warm-up pass) or one result per cycle."""
    cfg, mem, table, present, rng = build_table(5)
    keys = [rng.choice(present) for _ in range(300)]
    warm = list(present) if cache != 0 else []
    got, stats = rtl_lookup(cfg, mem, warm + keys, latency=(latency, latency), seed=6, max_outstanding=64,
                            bucket_cache_lines=cache, barrier={len(warm): []} if warm else None)
    assert [g[1] for g in got] == [1] * len(warm + keys)
    dram = stats["lines_read"] / len(warm + keys)
    bound = min(1.0, 1 / dram)
    rate = len(keys) / stats["out_span"] if not warm else None
    if warm:                                     # the measured pass alone: a second run without it
        _g, st0 = rtl_lookup(cfg, mem, warm, latency=(latency, latency), seed=6, max_outstanding=64,
                             bucket_cache_lines=cache)
        rate = len(keys) / (stats["cycles"] - st0["cycles"])
        dram = (stats["lines_read"] - st0["lines_read"]) / len(keys)
        bound = min(1.0, 1 / dram)
    print(f"latency {latency}: {rate:.3f} lookups/cycle, {dram:.2f} DRAM lines/lookup, bound {bound:.3f}")
    assert rate > 0.8 * bound


@pytest.mark.parametrize("n_stash", [1, 2])
def test_miss_throughput_cached(n_stash):
    """Misses whose three or four lines are all cached read no DRAM line; the secondary and stash probes run
    in separate cache lanes, so with one stash line one miss is decided per cycle (the CAM path of the
    datapath is all flow misses); with two stash lines the stash lane needs two cycles per miss."""
    cfg, mem, table, present, rng = build_table(5, n_stash=n_stash)
    seen = {FKEY.pack(k) for k in present}
    misses = []
    while len(misses) < 300:
        k = make_key(rng)
        if FKEY.pack(k) not in seen:
            misses.append(k)
    warm = misses[:60]                           # every bucket's line and the stash line get cached
    got, stats = rtl_lookup(cfg, mem, warm + misses, latency=(30, 30), seed=6, max_outstanding=64,
                            bucket_cache_lines=None, barrier={len(warm): []})
    assert [g[1] for g in got] == [0] * len(warm + misses)
    _g, st0 = rtl_lookup(cfg, mem, warm, latency=(30, 30), seed=6, max_outstanding=64, bucket_cache_lines=None)
    rate = len(misses) / (stats["cycles"] - st0["cycles"])
    assert stats["lines_read"] == st0["lines_read"]          # the measured pass read no DRAM line
    print(f"n_stash {n_stash}: {rate:.3f} misses/cycle")
    assert rate > 0.9 / n_stash
    if n_stash == 1:
        assert rate > 0.9


def test_rejects_bad_parameters():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)   # the refused instances are never elaborated
        _rejects()
        gc.collect()


def _rejects():
    with pytest.raises(ValueError, match="max_outstanding"):
        CuckooEngine(n_buckets=16, buckets_off=1, stash_off=17, n_stash=1, flows_off=18, max_outstanding=24)
    with pytest.raises(ValueError, match="axi_id_bits"):
        CuckooEngine(n_buckets=16, buckets_off=1, stash_off=17, n_stash=1, flows_off=18, axi_id_bits=4)
    with pytest.raises(ValueError, match="n_buckets"):
        CuckooEngine(n_buckets=12, buckets_off=1, stash_off=17, n_stash=1, flows_off=18)
    for bad in (3, 32, -1):
        with pytest.raises(ValueError, match="bucket_cache_lines"):
            CuckooEngine(n_buckets=16, buckets_off=1, stash_off=17, n_stash=1, flows_off=18, bucket_cache_lines=bad)


@pytest.mark.sim
@pytest.mark.parametrize("cache", [256, 0], ids=["cache256", "nocache"])
def test_cuckoo_verilator(cache):
    from cxlnic.tb.sim import run_cocotb
    from cxlnic.tb.test_cuckoo import tb_config

    cfg = tb_config(n_buckets=256, n_stash=1)
    run_cocotb(make_engine(cfg, max_outstanding=32, axi_id_bits=8, bucket_cache_lines=cache), "cxlnic.tb.test_cuckoo",
               params=f"b256s1c{cache}", seed=1,
               extra_env={"CXLNIC_N_BUCKETS": "256", "CXLNIC_N_STASH": "1", "CXLNIC_CACHE_LINES": str(cache)})
