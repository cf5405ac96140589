"""AXI4 (one 64-byte line per beat) master ports and the muxes that share one DRAM port.

Every DRAM master in ``hdl/`` exposes the same flat signals, ``m_axi_*``, so
that cocotbext-axi's ``AxiRam(AxiBus.from_prefix(dut, "m_axi"), ...)``
attaches to a block or to the datapath top alike.  Transfers are single
beats (``*len`` 0, ``*size`` 6, INCR).

:func:`read_mux` and :func:`write_mux` share one port between N masters.
The top bits of the outgoing ID name the master (``id_bits`` =
``ceil(log2 N)`` + the widest master ID); responses are routed back by them,
so each master keeps its own ID space and ordering rules.  Grants are
round-robin and *sticky*: once a request is presented downstream it stays,
payload unchanged, until accepted, as AXI requires.  A write holds its grant
from its first AW or W handshake until both have happened, so AW and W of
one transaction always come from the same master.
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib.wiring import In, Out

from cxlnic.hdl.layouts import LINE_BITS, LINE_BYTES

__all__ = ["ADDR_BITS", "LINE_SHIFT", "axi4_master_ports", "AxiWires", "read_mux", "write_mux"]

LINE_SHIFT = (LINE_BYTES - 1).bit_length()     # byte address = line << 6
ADDR_BITS = 32 + LINE_SHIFT                      # 32-bit line indices

_CHANNELS = {
    # name: (direction seen from the master, width or "id")
    "arvalid": (Out, 1), "arready": (In, 1), "araddr": (Out, ADDR_BITS), "arid": (Out, "id"),
    "arlen": (Out, 8), "arsize": (Out, 3), "arburst": (Out, 2),
    "rvalid": (In, 1), "rready": (Out, 1), "rdata": (In, LINE_BITS), "rid": (In, "id"), "rlast": (In, 1),
    "rresp": (In, 2),
    "awvalid": (Out, 1), "awready": (In, 1), "awaddr": (Out, ADDR_BITS), "awid": (Out, "id"),
    "awlen": (Out, 8), "awsize": (Out, 3), "awburst": (Out, 2),
    "wvalid": (Out, 1), "wready": (In, 1), "wdata": (Out, LINE_BITS), "wstrb": (Out, LINE_BYTES),
    "wlast": (Out, 1),
    "bvalid": (In, 1), "bready": (Out, 1), "bid": (In, "id"), "bresp": (In, 2),
}
_AR = ("araddr", "arlen", "arsize", "arburst")
_AW = ("awaddr", "awlen", "awsize", "awburst")
_W = ("wdata", "wstrb", "wlast")


def axi4_master_ports(id_bits: int) -> dict:
    """Signature members ``m_axi_*`` of an AXI4 master with ``id_bits``-bit IDs."""
    return {f"m_axi_{n}": d(id_bits if w == "id" else w) for n, (d, w) in _CHANNELS.items()}


class AxiWires:
    """Plain signals named like a master's ``m_axi_*`` ports, for logic inside a component
    that is itself an AXI master (e.g. the datapath's host-write path)."""

    def __init__(self, id_bits: int, prefix: str):
        for n, (_, w) in _CHANNELS.items():
            setattr(self, f"m_axi_{n}", Signal(id_bits if w == "id" else w, name=f"{prefix}_{n}"))


def _get(obj, name):
    return getattr(obj, f"m_axi_{name}")


def _sel_bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _pick(m, name: str, wants: list, last) -> Signal:
    """Round-robin choice among ``wants`` (list of 1-bit values), starting after ``last``."""
    n = len(wants)
    pick = Signal(_sel_bits(n), name=name)
    # Priority order last+1, last+2, ... ; written as nested Ifs per possible ``last``.
    with m.Switch(last):
        for lst in range(n):
            with m.Case(lst):
                for off in reversed(range(1, n + 1)):
                    k = (lst + off) % n
                    with m.If(wants[k]):
                        m.d.comb += pick.eq(k)
    return pick


def _id_field(master) -> int:
    return len(_get(master, "arid"))


def read_mux(m: Module, masters: list, out, id_bits: int, name: str = "rd") -> None:
    """Share ``out``'s AR/R channels between ``masters`` (AR round-robin, R routed by ID)."""
    n = len(masters)
    sb = _sel_bits(n)
    last = Signal(sb, name=f"{name}_last")
    locked = Signal(name=f"{name}_locked")
    owner = Signal(sb, name=f"{name}_owner")
    pick = _pick(m, f"{name}_pick", [_get(x, "arvalid") for x in masters], last)
    sel = Signal(sb, name=f"{name}_sel")
    m.d.comb += sel.eq(Mux(locked, owner, pick))
    low = id_bits - sb
    with m.Switch(sel):
        for k, x in enumerate(masters):
            with m.Case(k):
                m.d.comb += [_get(out, "arvalid").eq(_get(x, "arvalid")),
                             _get(out, "arid").eq(_get(x, "arid") | Const(k, sb) << low)]
                m.d.comb += [_get(out, f).eq(_get(x, f)) for f in _AR]
                m.d.comb += _get(x, "arready").eq(_get(out, "arready"))
    fire = _get(out, "arvalid") & _get(out, "arready")
    m.d.sync += [locked.eq(_get(out, "arvalid") & ~_get(out, "arready")), owner.eq(sel)]
    with m.If(fire):
        m.d.sync += last.eq(sel)
    rsel = _get(out, "rid")[low:]
    for k, x in enumerate(masters):
        m.d.comb += [_get(x, "rvalid").eq(_get(out, "rvalid") & (rsel == k)),
                     _get(x, "rdata").eq(_get(out, "rdata")), _get(x, "rlast").eq(_get(out, "rlast")),
                     _get(x, "rresp").eq(_get(out, "rresp")), _get(x, "rid").eq(_get(out, "rid")[:_id_field(x)])]
    with m.Switch(rsel):
        for k, x in enumerate(masters):
            with m.Case(k):
                m.d.comb += _get(out, "rready").eq(_get(x, "rready"))


def write_mux(m: Module, masters: list, out, id_bits: int, name: str = "wr") -> None:
    """Share ``out``'s AW/W/B channels between ``masters`` (round-robin per transaction,
    AW and W of one transaction from one master, B routed by ID)."""
    n = len(masters)
    sb = _sel_bits(n)
    low = id_bits - sb
    last = Signal(sb, name=f"{name}_last")
    busy = Signal(name=f"{name}_busy")
    owner = Signal(sb, name=f"{name}_owner")
    aw_done = Signal(name=f"{name}_aw_done")
    w_done = Signal(name=f"{name}_w_done")
    pick = _pick(m, f"{name}_pick", [_get(x, "awvalid") | _get(x, "wvalid") for x in masters], last)
    sel = Signal(sb, name=f"{name}_sel")
    m.d.comb += sel.eq(Mux(busy, owner, pick))
    any_req = Signal(name=f"{name}_any")
    with m.Switch(sel):
        for k, x in enumerate(masters):
            with m.Case(k):
                m.d.comb += [
                    any_req.eq(_get(x, "awvalid") | _get(x, "wvalid")),
                    _get(out, "awvalid").eq(_get(x, "awvalid") & ~aw_done),
                    _get(out, "awid").eq(_get(x, "awid") | Const(k, sb) << low),
                    _get(out, "wvalid").eq(_get(x, "wvalid") & ~w_done),
                    _get(x, "awready").eq(_get(out, "awready") & ~aw_done),
                    _get(x, "wready").eq(_get(out, "wready") & ~w_done),
                ]
                m.d.comb += [_get(out, f).eq(_get(x, f)) for f in _AW + _W]
    aw_fire = _get(out, "awvalid") & _get(out, "awready")
    w_fire = _get(out, "wvalid") & _get(out, "wready") & _get(out, "wlast")
    aw_ok = aw_done | aw_fire
    w_ok = w_done | w_fire
    with m.If(aw_ok & w_ok):
        m.d.sync += [busy.eq(0), aw_done.eq(0), w_done.eq(0), last.eq(sel)]
    with m.Elif(busy | any_req):
        m.d.sync += [busy.eq(1), owner.eq(sel), aw_done.eq(aw_ok), w_done.eq(w_ok)]
    bsel = _get(out, "bid")[low:]
    for k, x in enumerate(masters):
        m.d.comb += [_get(x, "bvalid").eq(_get(out, "bvalid") & (bsel == k)),
                     _get(x, "bresp").eq(_get(out, "bresp")), _get(x, "bid").eq(_get(out, "bid")[:_id_field(x)])]
    with m.Switch(bsel):
        for k, x in enumerate(masters):
            with m.Case(k):
                m.d.comb += _get(out, "bready").eq(_get(x, "bready"))
