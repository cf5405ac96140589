"""cocotb testbench: PacketParser under Verilator against the model's parser.

Run through ``tests/test_parser_rtl.py::test_parser_verilator`` (``pytest -m sim``).
Traffic is the ``malformed`` scenario (mixed tenants, VXLAN, IPv6, ARP and 5%
malformed frames of every kind) plus seeded random byte strings, fed
back-to-back and, in the stall variant, with input gaps and output backpressure.
"""

import os
import random

import cocotb
from amaranth.lib import data
from cocotb.triggers import ReadOnly, RisingEdge

from cxlnic.hdl.layouts import ExceptionCode, PacketKey
from cxlnic.hdl.parser import BEAT_BYTES
from cxlnic.model.codec import flat_fields
from cxlnic.model.match import PKEY
from cxlnic.model.parser import parse
from cxlnic.model.scenario import generate
from cxlnic.tb.common import clock_and_reset, frame_beats

PACKETS = int(os.environ.get("CXLNIC_PARSER_PACKETS", "2000"))
KEY_BITS = data.Layout.cast(PacketKey).size
#: Cycles without any output while results are owed before the run is declared stuck.
WATCHDOG = 2000


def traffic(seed: int, packets: int) -> list[tuple[bytes, int]]:
    """The scenario's frames, with random byte strings (1..300 bytes) mixed in."""
    rng = random.Random(seed)
    frames = [(p.frame, p.in_port) for p in generate("malformed", packets=packets, seed=seed).packets]
    for _ in range(packets // 10):
        buf = bytearray(rng.randbytes(rng.randrange(1, 301)))
        if len(buf) > 14 and rng.random() < 0.7:
            buf[12:14] = rng.choice([b"\x08\x00", b"\x86\xdd", b"\x81\x00"])
            buf[14] = rng.choice([0x45, 0x46, 0x60, 0x08, rng.getrandbits(8)])
        frames.insert(rng.randrange(len(frames) + 1), (bytes(buf), rng.getrandbits(8)))
    return frames


def key_diff(got: int, want: int) -> str:
    """The PacketKey fields that differ, as ``field: rtl != model``."""
    def field(v, f):
        return v >> f.offset & (1 << f.width) - 1
    return ", ".join(f"{f.path}: {field(got, f):#x} != {field(want, f):#x}"
                     for f in flat_fields(PacketKey) if field(got ^ want, f))


class TB:
    """Owns the clock, reset and both stream ends of the PacketParser."""

    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = random.Random(seed)

    async def reset(self):
        await clock_and_reset(self.dut, {"i__valid": 0, "o__ready": 0})

    async def run(self, frames, gaps: float, stall: float):
        """Drive every frame (bursts of back-to-back beats); returns ``[(key, length)]`` in output order.

        The input monitor is the ``valid & ready`` check on ``i``: the model is fed the
        frames in the order their last beats were accepted.
        """
        dut, rng = self.dut, self.rng
        beats = [b for f, p in frames for b in frame_beats(f, p, rng)]
        out, sent, offering, quiet, accepted = [], 0, False, 0, 0
        burst, idle = rng.randrange(1, 64), 0       # beats left in this burst, idle cycles before the next
        while len(out) < len(frames):
            dut.o__ready.value = int(stall == 0.0 or rng.random() >= stall)
            if not offering and sent < len(beats):
                if idle:
                    idle -= 1
                else:
                    offering = True                     # once offered, a beat stays until taken
                    dut.i__payload.value = beats[sent]
                    burst -= 1
                    if burst == 0 and gaps:
                        burst, idle = rng.randrange(1, 64), rng.randrange(1, 8)
            dut.i__valid.value = int(offering)
            await ReadOnly()
            if offering and dut.i__ready.value:
                accepted += beats[sent] >> 576 & 1
                sent, offering = sent + 1, False
                quiet = 0
            if dut.o__valid.value and dut.o__ready.value:
                v = dut.o__payload.value.to_unsigned()
                out.append((v & ((1 << KEY_BITS) - 1), v >> KEY_BITS))
                quiet = 0
            quiet += 1
            if quiet > WATCHDOG:
                stuck = "i (i.ready held low)" if sent < len(beats) and not dut.i__ready.value else "o"
                raise AssertionError(f"PacketParser stream {stuck} stuck for {WATCHDOG} cycles: "
                                     f"{len(out)} results of {len(frames)}, {accepted} frames accepted")
            await RisingEdge(dut.clk)
        return out


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.3])
async def parser_matches_model(dut, stall):
    seed = cocotb.RANDOM_SEED
    tb = TB(dut, seed=seed)
    await tb.reset()
    frames = traffic(seed, PACKETS)
    got = await tb.run(frames, gaps=stall, stall=stall)
    expect = [(PKEY.pack(parse(f, p)), min(len(f), 0xFFFF)) for f, p in frames]
    mismatches = [(i, g, e) for i, (g, e) in enumerate(zip(got, expect, strict=True)) if g != e]
    for i, g, e in mismatches[:10]:
        dut._log.error("frame %d (%d bytes, model %s): %s; length %d, model %d; frame %s", i, len(frames[i][0]),
                       ExceptionCode(PKEY.unpack(e[0]).exception).name, key_diff(g[0], e[0]), g[1], e[1],
                       frames[i][0][:96].hex())
    codes = {ExceptionCode(PKEY.unpack(e[0]).exception).name for e in expect}
    dut._log.info("seed %d: %d frames, %d beats of traffic; exception codes seen: %s", seed, len(frames),
                  sum(-(-max(len(f), 1) // BEAT_BYTES) for f, _ in frames), sorted(codes))
    assert not mismatches, f"{len(mismatches)} mismatches of {len(frames)}"
