"""cocotb testbench: FlowHasher under Verilator against the model's FlowHash.

Run through ``tests/test_hash_rtl.py::test_hasher_verilator`` (``pytest -m sim``).
"""

import os
import random

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from cxlnic.config import DEFAULT_HASH_KEY
from cxlnic.hdl.hash import HashedKey
from cxlnic.model.match import FKEY
from cxlnic.model.toeplitz import FlowHash
from cxlnic.tb.common import clock_and_reset

N_BUCKETS = int(os.environ.get("CXLNIC_N_BUCKETS", "4096"))


class TB:
    """Owns the clock, reset and the two stream ends of the FlowHasher."""

    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = random.Random(seed)
        self.layout = HashedKey((N_BUCKETS - 1).bit_length())

    async def reset(self):
        await clock_and_reset(self.dut, {"i__valid": 0, "o__ready": 0,
                                         "key": int.from_bytes(DEFAULT_HASH_KEY, "little")})

    def random_key(self):
        r = self.rng
        k = FKEY.new(tenant=r.getrandbits(24), in_port=r.getrandbits(8), eth_type=r.getrandbits(16),
                     ip_proto=r.getrandbits(8), src_port=r.getrandbits(16), dst_port=r.getrandbits(16))
        k.src_ip, k.dst_ip = r.getrandbits(128), r.getrandbits(128)
        return k

    async def run(self, keys, stall):
        """Feed ``keys`` as fast as the DUT accepts; collect outputs with random backpressure."""
        dut, out, sent = self.dut, [], 0
        for _ in range(100 * len(keys) + 100):
            dut.o__ready.value = int(self.rng.random() >= stall)
            if sent < len(keys):
                dut.i__valid.value = 1
                dut.i__payload.value = FKEY.pack(keys[sent])
            else:
                dut.i__valid.value = 0
            await ReadOnly()
            if dut.i__valid.value and dut.i__ready.value:
                sent += 1
            if dut.o__valid.value and dut.o__ready.value:
                p = self.layout.from_bits(dut.o__payload.value.to_unsigned())
                out.append((p.key.as_value().value, int(p.primary), int(p.secondary), int(p.sig)))
            await RisingEdge(dut.clk)
            if len(out) == len(keys):
                return out
        raise AssertionError(f"FlowHasher output stream stuck: {len(out)} of {len(keys)} results")


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.4])
async def hasher_matches_model(dut, stall):
    tb = TB(dut, seed=cocotb.RANDOM_SEED)
    await tb.reset()
    keys = [tb.random_key() for _ in range(300)]
    got = await tb.run(keys, stall)
    fh = FlowHash(DEFAULT_HASH_KEY, N_BUCKETS)
    expect = [(FKEY.pack(k),) + fh.locate(FKEY.to_bytes(k)) for k in keys]
    mismatches = [(i, g, e) for i, (g, e) in enumerate(zip(got, expect, strict=True)) if g != e]
    for i, g, e in mismatches[:10]:
        dut._log.error("key %d: rtl %s, model %s", i, g[1:], e[1:])
    assert not mismatches, f"{len(mismatches)} mismatches of {len(keys)}"
