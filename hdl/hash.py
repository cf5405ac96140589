"""Pipelined Toeplitz flow hash with the cuckoo bucket/signature derivation.

Bit-exact with :class:`cxlnic.model.toeplitz.FlowHash` (tested against it in
Amaranth's simulator and under Verilator).
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from cxlnic.hdl.layouts import LINE_BITS, FlowKey
from cxlnic.hdl.util import checked_init

__all__ = ["FlowHasher", "HashedKey", "KEY_BITS", "HASH_BITS"]

KEY_BITS = data.Layout.cast(FlowKey).size     # 360
HASH_BITS = 48


def HashedKey(bucket_bits: int) -> data.StructLayout:
    """The hasher's output: the key and where it lives."""
    return data.StructLayout({
        "key": FlowKey,
        "sig": 16,
        "primary": bucket_bits,
        "secondary": bucket_bits,
    })


class FlowHasher(wiring.Component):
    """Toeplitz hash of a FlowKey, then primary/secondary bucket and signature.

    * ``key``: the 512-bit Toeplitz key as the hash-key line holds it (line
      bit 8*j + b is bit b of key byte j; key byte 0 is the most significant
      byte of the Toeplitz key).  Sampled every cycle, so a host write to the
      hash-key line takes effect for keys entering afterwards.
    * ``i``: a stream of FlowKeys; ``o``: a stream of :func:`HashedKey`.
    * Throughput one key per cycle; latency 3 cycles; the pipeline stalls as
      a whole while ``o.ready`` is low (``valid`` never depends on ``ready``).
    """

    @checked_init
    def __init__(self, *, n_buckets: int):
        if n_buckets < 2 or n_buckets & (n_buckets - 1):
            raise ValueError(f"n_buckets = {n_buckets}: must be a power of two >= 2")
        self._n_buckets = n_buckets
        self._bucket_bits = (n_buckets - 1).bit_length()
        super().__init__({
            "key": In(LINE_BITS),
            "i": In(stream.Signature(FlowKey)),
            "o": Out(stream.Signature(HashedKey(self._bucket_bits))),
        })

    @property
    def n_buckets(self) -> int:
        return self._n_buckets

    def elaborate(self, platform):
        m = Module()
        nbytes = KEY_BITS // 8
        mask = self._n_buckets - 1
        adv = Signal()                  # the whole pipeline moves this cycle
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        m.d.comb += self.i.ready.eq(adv)

        # The Toeplitz key as one big-endian number: key byte 0 is its top byte, so
        # the 48-bit window of input bit i is a constant slice of it.
        kbe = Signal(LINE_BITS)
        m.d.comb += kbe.eq(Cat(*[self.key[8 * j: 8 * j + 8] for j in reversed(range(LINE_BITS // 8))]))
        # Input bits, MSB-first over the packed key bytes (byte j = key bits 8j..8j+7).
        kin = Signal(KEY_BITS)
        m.d.comb += kin.eq(self.i.payload.as_value())

        # stage 1: one 48-bit partial hash per input byte
        part = [Signal(HASH_BITS, name=f"part{j}") for j in range(nbytes)]
        key1 = Signal(FlowKey)
        v1 = Signal()
        with m.If(adv):
            for j in range(nbytes):
                acc = Const(0, HASH_BITS)
                for i in range(8 * j, 8 * j + 8):
                    lo = LINE_BITS - i - HASH_BITS
                    window = kbe[lo: lo + HASH_BITS]
                    acc = acc ^ (window & kin[8 * (i // 8) + 7 - i % 8].replicate(HASH_BITS))
                m.d.sync += part[j].eq(acc)
            m.d.sync += [key1.eq(self.i.payload), v1.eq(self.i.valid)]

        # stage 2: XOR of the partials
        h2 = Signal(HASH_BITS)
        key2 = Signal(FlowKey)
        v2 = Signal()
        with m.If(adv):
            acc = Const(0, HASH_BITS)
            for p in part:
                acc = acc ^ p
            m.d.sync += [h2.eq(acc), key2.eq(key1), v2.eq(v1)]

        # stage 3: signature and buckets
        sig = h2[:16]
        prim = (h2 >> 16)[: self._bucket_bits]
        off = Cat(sig, sig)[: self._bucket_bits]          # (sig * 0x10001) & mask
        off1 = Signal(self._bucket_bits)
        m.d.comb += off1.eq(off)
        with m.If(off == 0):
            m.d.comb += off1.eq(1)
        with m.If(adv):
            m.d.sync += [
                self.o.payload.key.eq(key2),
                self.o.payload.sig.eq(sig),
                self.o.payload.primary.eq(prim),
                self.o.payload.secondary.eq((prim ^ off1) & mask),
                self.o.valid.eq(v2),
            ]
        return m
