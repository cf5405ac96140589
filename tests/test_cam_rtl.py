"""TernaryCam RTL against model/match.py's rule_matches (Amaranth simulator), with and without
backpressure, with writes interleaved with lookups."""

import random

import pytest
from amaranth.sim import Simulator

from cxlnic.hdl.cam import CamResult, CamWrite, TernaryCam
from cxlnic.model.match import PKEY, RULE, rule_matches
from cxlnic.tb.test_cam import RESULT_FIELDS, random_key, random_rule, ref_lookup

LATENCY = 3


def rtl_cam(entries, keys, *, load=(), writes=(), w_rate=0.0, stall=0.0, idle=0.0, seed=0):
    """Run TernaryCam in Amaranth's simulator; returns ``[(result dict, rules in force)]`` per key.

    ``load`` writes (index, rule) go in one per cycle before any lookup; then the
    ``keys`` are looked up back-to-back (a cycle idle with probability ``idle``, a
    lookup held until accepted) while the ``writes`` go in, each cycle with
    probability ``w_rate`` (> 0 when there are writes), independently of lookups
    and backpressure (so also while the pipeline is stalled).  "Rules in force" for a lookup are the writes
    accepted in cycles before its accept cycle (the documented ordering).
    """
    dut = TernaryCam(entries=entries)
    rng = random.Random(seed)
    line_off, rlay = CamWrite(entries)["line"].offset, CamResult(entries)
    load, writes = list(load), list(writes)
    out, in_force = [], []

    async def bench(ctx):
        rules = [None] * entries
        sent = 0
        cycles = 0
        while len(out) < len(keys) or writes:
            cycles += 1
            assert cycles < 20 * (len(keys) + len(load) + len(writes)) + 100, \
                f"CAM output stream stuck: {len(out)} of {len(keys)} results"
            ctx.set(dut.o.ready, rng.random() >= stall)
            wr = None
            if load:
                wr = load.pop(0)
            elif writes and rng.random() < w_rate:
                wr = writes.pop(0)
            ctx.set(dut.w.valid, wr is not None)
            if wr is not None:
                ctx.set(dut.w.payload.as_value(), wr[0] | RULE.pack(wr[1]) << line_off)
            lk = not load and sent < len(keys) and rng.random() >= idle
            ctx.set(dut.i.valid, lk)
            if lk:
                ctx.set(dut.i.payload.as_value(), PKEY.pack(keys[sent]))
            assert ctx.get(dut.w.ready)
            if lk and ctx.get(dut.i.ready):
                in_force.append(list(rules))
                sent += 1
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                out.append(rlay.from_bits(ctx.get(dut.o.payload.as_value())))
            await ctx.tick()
            if wr is not None:
                rules[wr[0]] = wr[1]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    results = [{f: int(getattr(r, f)) for f in RESULT_FIELDS} for r in out]
    return list(zip(results, in_force, strict=True))


def check(res, keys):
    """Every result equals the reference over the rules in force at its accept cycle."""
    bad = [(n, got, ref_lookup(rules, key)) for n, ((got, rules), key) in enumerate(zip(res, keys, strict=True))
           if got != ref_lookup(rules, key)]
    assert not bad, f"{len(bad)} mismatches of {len(keys)}; first: {bad[:3]}"


def conflict_beyond_hit(rules, key):
    """A ct rule after the hit entry matches with ct_state ignored (must not count as ct_conflict)."""
    exp = ref_lookup(rules, key)
    if not exp["hit"]:
        return False
    for r in rules[exp["index"] + 1:]:
        if r is not None and r.ct_state_mask:
            c = RULE.unpack(RULE.pack(r))
            c.ct_state_mask = 0
            if rule_matches(c, key):
                return True
    return False


@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_cam_matches_model(stall):
    rng = random.Random(1)
    rules = [random_rule(rng) for _ in range(64)]
    keys = [random_key(rng, rules) for _ in range(300)]
    res = rtl_cam(64, keys, load=enumerate(rules), stall=stall, idle=0.1, seed=2)
    check(res, keys)
    hits = [g["hit"] for g, _ in res]
    # the test means something: hits and misses, ct conflicts, ct-only matches, and ct rules
    # after the hit that must not count as a conflict
    assert 0.2 < sum(hits) / len(hits) < 0.9
    assert len({g["index"] for g, _ in res if g["hit"]}) > 10
    assert any(g["ct_conflict"] for g, _ in res)
    assert any(g["ct_masked_hit"] and not g["hit"] for g, _ in res)
    assert any(conflict_beyond_hit(rules, k) for k in keys)


@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_cam_writes_interleaved_with_lookups(stall):
    """Overwrite entries (also with invalid lines) while lookups flow and while the pipeline is
    stalled; every lookup is checked against the rule set in force at its accept cycle."""
    rng = random.Random(3)
    entries = 16
    pool = [random_rule(rng) for _ in range(24)]
    writes = []
    for _ in range(250):
        r = RULE.unpack(RULE.pack(rng.choice(pool)))
        r.valid = int(rng.random() < 0.8)
        r.action, r.counter = rng.getrandbits(20), rng.getrandbits(20)
        writes.append((rng.randrange(entries), r))
    keys = [random_key(rng, pool) for _ in range(400)]
    res = rtl_cam(entries, keys, load=enumerate(pool[:entries]), writes=writes, w_rate=0.6,
                  stall=stall, seed=4)
    check(res, keys)
    assert sum(g["hit"] for g, _ in res) > 50


def test_write_completion_cycle():
    """A lookup accepted in the write's cycle sees the old entry; one accepted in the next
    cycle (the completion cycle) sees the new one."""
    rng = random.Random(5)
    entries = 8
    new = random_rule(rng)
    new.valid = 1
    key = random_key(rng, [new])
    while not rule_matches(new, key):
        key = random_key(rng, [new])
    dut = TernaryCam(entries=entries)
    line_off = CamWrite(entries)["line"].offset
    rlay = CamResult(entries)
    got = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.w.valid, 1)
        ctx.set(dut.w.payload.as_value(), 3 | RULE.pack(new) << line_off)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload.as_value(), PKEY.pack(key))
        await ctx.tick()                     # write and lookup A accepted together
        ctx.set(dut.w.valid, 0)
        await ctx.tick()                     # lookup B accepted in the completion cycle
        ctx.set(dut.i.valid, 0)
        await ctx.tick()
        for _ in range(3):
            if ctx.get(dut.o.valid):
                got.append(rlay.from_bits(ctx.get(dut.o.payload.as_value())))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert [int(r.hit) for r in got] == [0, 1]       # latency 3: A out at t+3, B at t+4
    assert int(got[1].index) == 3 and int(got[1].action) == new.action


def test_invalid_entries_never_hit():
    rng = random.Random(6)
    rules = [random_rule(rng, valid_p=0.0) for _ in range(16)]
    keys = [random_key(rng, rules) for _ in range(60)]
    res = rtl_cam(16, keys, load=enumerate(rules))
    check(res, keys)
    assert not any(g["hit"] or g["ct_masked_hit"] for g, _ in res)


def test_latency_is_three():
    dut = TernaryCam(entries=4)
    seen = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for t in range(1, 6):
            seen.append((t, ctx.get(dut.o.valid)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert [t for t, v in seen if v] == [LATENCY]


def test_cam_256_entries():
    rng = random.Random(7)
    rules = [random_rule(rng, broad_p=0.0) for _ in range(256)]
    for r in rules:             # one tenant per rule: a derived key hits its own rule
        r.tenant_care, r.owner = 1, rng.getrandbits(24)
    keys = [random_key(rng, rules) for _ in range(40)]
    res = rtl_cam(256, keys, load=enumerate(rules), stall=0.3, seed=8)
    check(res, keys)
    assert len({g["index"] // 16 for g, _ in res if g["hit"]}) > 4     # hits spread over the groups


def test_cam_rejects_bad_entries():
    with pytest.raises(ValueError, match="power of two"):
        TernaryCam(entries=100)
    with pytest.raises(TypeError, match="int"):
        TernaryCam(entries="64")


@pytest.mark.sim
def test_cam_verilator():
    from cxlnic.tb.sim import run_cocotb

    run_cocotb(TernaryCam(entries=64), "cxlnic.tb.test_cam", params="e64", seed=1,
               extra_env={"CXLNIC_CAM_ENTRIES": "64"})
