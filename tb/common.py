"""Pieces every cocotb testbench here shares."""

import random

import cocotb
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from cxlnic.hdl.parser import BEAT_BYTES, Beat

__all__ = ["clock_and_reset", "frame_beats", "CLOCK_NS"]

CLOCK_NS = 4


async def clock_and_reset(dut, idle: dict, *, cycles: int = 3) -> None:
    """Start ``dut.clk``, drive every signal named in ``idle`` to its idle value, and hold
    ``dut.rst`` for ``cycles`` clock edges (Amaranth's synchronous reset), then release it."""
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    for name, value in idle.items():
        getattr(dut, name).value = value
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


_BEAT = {name: f.offset for name, f in data.Layout.cast(Beat)}


def frame_beats(frame: bytes, in_port: int, rng: random.Random, *, empty_last: bool | None = None) -> list[int]:
    """The packed ``Beat`` words of one frame.

    Bytes past ``keep`` are random (the DUT must ignore them).  A frame of
    64*n bytes may end with an extra, empty ``last`` beat (keep == 0), which
    is legal: always with ``empty_last=True``, never with ``False``, and with
    probability 1/2 (drawn from ``rng``) when it is None.
    """
    chunks = [frame[i:i + BEAT_BYTES] for i in range(0, len(frame), BEAT_BYTES)] or [b""]
    if empty_last is None:
        empty_last = bool(frame) and len(frame) % BEAT_BYTES == 0 and rng.random() < 0.5
    if empty_last and frame and len(frame) % BEAT_BYTES == 0:
        chunks.append(b"")
    out = []
    for n, c in enumerate(chunks):
        word = int.from_bytes(c + rng.randbytes(BEAT_BYTES - len(c)), "little")
        out.append(word << _BEAT["data"] | ((1 << len(c)) - 1) << _BEAT["keep"]
                   | int(n == len(chunks) - 1) << _BEAT["last"] | in_port << _BEAT["in_port"])
    return out
