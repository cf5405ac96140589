"""Pieces every cocotb testbench here shares."""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

__all__ = ["clock_and_reset", "CLOCK_NS"]

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
