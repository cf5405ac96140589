"""The Verilator build set-up of tb/sim.py: which top-level signals cocotb may write."""

import re

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from cxlnic.tb.sim import _public_ports_vlt, write_verilog


class _Top(wiring.Component):
    """Inputs and outputs of every kind the blocks have: a stream (flattened members), a Struct,
    an output register with a reset value, and an output the design reads itself."""
    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))
    cfg: In(data.StructLayout({"a": 3, "b": 5}))
    count: Out(16, init=7)
    busy: Out(1)

    def elaborate(self, platform):
        m = Module()
        held = Signal(8)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [held.eq(self.i.payload), self.count.eq(self.count + 1)]
        m.d.comb += [self.i.ready.eq(~self.o.valid | self.o.ready), self.o.payload.eq(held + self.cfg.a),
                     self.busy.eq(self.count[0] & self.cfg.b[0])]
        m.d.sync += self.o.valid.eq(self.i.valid)
        return m


def test_inputs_writable_outputs_read_only(tmp_path):
    top = _Top()
    src = write_verilog(top, "top", tmp_path / "top.v")
    vlt = _public_ports_vlt(src, "top").splitlines()
    assert vlt[0] == "`verilator_config"
    got = {}
    for line in vlt[1:]:
        mt = re.fullmatch(r'(public_flat_r[dw]) -module "top" -var "(\S+)"', line)
        assert mt, line
        got[mt.group(2)] = mt.group(1)
    # expected from the component's signature (Amaranth names a flattened member a__b), plus the clock domain
    rw, rd = {"clk", "rst"}, set()
    for path, member, _ in top.signature.flatten(top):
        name = "__".join(str(p) for p in path)
        (rw if member.flow == In else rd).add(name)
    assert got == {**{n: "public_flat_rw" for n in rw}, **{n: "public_flat_rd" for n in rd}}


def test_missing_top_is_an_error(tmp_path):
    src = write_verilog(_Top(), "top", tmp_path / "top.v")
    with pytest.raises(RuntimeError, match="no module other"):
        _public_ports_vlt(src, "other")
