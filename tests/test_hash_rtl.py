"""FlowHasher RTL against the model's FlowHash (Amaranth simulator), with and without backpressure."""

import random

import pytest
from amaranth.sim import Simulator

from cxlnic.config import DEFAULT_HASH_KEY
from cxlnic.hdl.hash import FlowHasher
from cxlnic.model.match import FKEY
from cxlnic.model.toeplitz import FlowHash


def random_key(rng):
    k = FKEY.new(tenant=rng.getrandbits(24), in_port=rng.getrandbits(8), eth_type=rng.getrandbits(16),
                 vlan_id=rng.getrandbits(12), vlan_valid=rng.getrandbits(1), ip_proto=rng.getrandbits(8),
                 src_port=rng.getrandbits(16), dst_port=rng.getrandbits(16))
    k.src_ip, k.dst_ip = rng.getrandbits(128), rng.getrandbits(128)
    return k


def ref_hash(keys, hash_key, n_buckets):
    fh = FlowHash(hash_key, n_buckets)
    return [(FKEY.pack(k),) + fh.locate(FKEY.to_bytes(k)) for k in keys]


def rtl_hash(keys, hash_key, n_buckets, *, stall=0.0, seed=0):
    """Run FlowHasher in Amaranth's simulator; returns [(key, primary, secondary, sig)]."""
    dut = FlowHasher(n_buckets=n_buckets)
    rng = random.Random(seed)
    out = []

    async def bench(ctx):
        ctx.set(dut.key, int.from_bytes(hash_key, "little"))
        sent = 0
        while len(out) < len(keys):
            ctx.set(dut.o.ready, rng.random() >= stall)
            if sent < len(keys):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload.as_value(), FKEY.pack(keys[sent]))
            else:
                ctx.set(dut.i.valid, 0)
            in_fire = ctx.get(dut.i.valid) and ctx.get(dut.i.ready)
            o_fire = ctx.get(dut.o.valid) and ctx.get(dut.o.ready)
            if o_fire:
                p = ctx.get(dut.o.payload)
                out.append((ctx.get(dut.o.payload.key.as_value()), p.primary, p.secondary, p.sig))
            await ctx.tick()
            if in_fire:
                sent += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("n_buckets", [2, 64, 1 << 16, 1 << 20])
@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_hasher_matches_model(n_buckets, stall):
    rng = random.Random(n_buckets)
    keys = [random_key(rng) for _ in range(40)]
    key = bytes(rng.getrandbits(8) for _ in range(64)) if n_buckets == 64 else DEFAULT_HASH_KEY
    assert rtl_hash(keys, key, n_buckets, stall=stall, seed=1) == ref_hash(keys, key, n_buckets)


def test_hasher_rejects_bad_geometry():
    with pytest.raises(ValueError, match="power of two"):
        FlowHasher(n_buckets=100)


@pytest.mark.sim
def test_hasher_verilator():
    from cxlnic.tb.sim import run_cocotb

    run_cocotb(FlowHasher(n_buckets=4096), "cxlnic.tb.test_hash", params="b4096", seed=1,
               extra_env={"CXLNIC_N_BUCKETS": "4096"})
