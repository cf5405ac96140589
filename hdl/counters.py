"""Packet/byte counter block: on-chip counters, host read port, write-back of dirty lines to DRAM.

Same semantics as :class:`cxlnic.model.counters.CounterBank` (tested against it
in Amaranth's simulator and under Verilator with cocotbext-axi's AxiRam).
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cxlnic.hdl.layouts import LINE_BITS, LINE_BYTES, Counter, CounterLine
from cxlnic.hdl.util import checked_init

__all__ = ["CounterBlock", "CounterUpdate"]

_LINE_SHIFT = (LINE_BYTES - 1).bit_length()     # byte address = line << 6
_LINE_INDEX_BITS = 32
_ADDR_BITS = _LINE_INDEX_BITS + _LINE_SHIFT
_SLOTS = 4                                       # counters per CounterLine
_BYTES_BITS = 16
_MAX_WRITES = 16                                 # write-backs awaiting their B response
_LINE = data.Layout.cast(CounterLine)["counters"].shape   # ArrayLayout(Counter, 4): one lane per slot


def CounterUpdate(idx_bits: int) -> data.StructLayout:
    """Update payload: add one packet of ``bytes`` bytes to counter ``index``."""
    return data.StructLayout({"index": idx_bits, "bytes": _BYTES_BITS})


# What an operation in the pipeline does.
_NONE, _UPD, _RD, _WB = range(4)


class CounterBlock(wiring.Component):
    """``n_counters`` 64-bit packet and byte counters kept on chip, written back to DRAM on request.

    The on-chip copy is authoritative: the counters start at zero after reset
    and DRAM is never read; DRAM's counter region only receives write-backs.
    After reset the block zeroes its memory, one line per cycle, for
    ``n_counters / 4`` cycles while ``clearing`` is high; ``upd.ready`` and
    ``rd.ready`` stay low meanwhile.  Reset also clears every dirty bit and
    abandons a write-back in progress (DRAM keeps what it had).

    Ports
    -----
    * ``upd``: stream of :func:`CounterUpdate`; adds 1 to ``packets`` and
      ``bytes`` to ``bytes`` of counter ``index`` (both wrap at 2**64).
      Indices ``>= n_counters`` are accepted and ignored.
    * ``rd`` (counter index) / ``rd_data`` (:class:`~cxlnic.hdl.layouts.Counter`):
      the host read port; one result per request, in request order.  Reads of
      an index ``>= n_counters`` return zero.
    * ``flush`` (pulse), ``flush_busy``, ``flush_done``: write-back, below.
    * ``clearing``: high while the counters are being zeroed after reset.
    * ``m_axi_*``: AXI4 master, write channels only: ``awlen`` 0, ``awsize`` 6,
      ``awburst`` INCR, ``awid`` 0, ``awaddr`` = (``counters_off`` + line) × 64,
      one 512-bit beat with ``wstrb`` all ones carrying the whole
      :class:`~cxlnic.hdl.layouts.CounterLine`.  ``bready`` is constant 1 and
      ``bresp`` is ignored.  AW and W are presented together; either may be
      accepted first.  The read channels exist only so that a full AXI4 slave
      model attaches; they are tied idle.

    Throughput
    ----------
    One operation enters the pipeline per cycle: a host read, else a
    write-back of one line, else an update.  So ``upd.ready`` is high every
    cycle (after the post-reset clear) except the single cycles in which a
    host read or a write-back line is accepted.  A host read is accepted only
    while no other host read is in flight and ``rd_data`` is empty
    (``rd.ready`` depends on nothing else), so reads take at most one cycle
    in four; a write-back takes one cycle per dirty line, at most one line
    every 4 cycles (and at most 16 writes awaiting B).  Back-to-back updates
    to the same counter are sustained at one per cycle: the pipeline never
    stalls, and ``upd.ready`` does not depend on ``upd.valid``.

    Pipeline: S0 accept and issue the synchronous line read; S1 the read data
    arrives and is registered; S2 the two updates written in the previous two
    cycles (which the S0 read did not see) are forwarded into the line, then
    an update adds its increment and writes its slot back (one lane of a
    four-lane write port), a read loads ``rd_data``, a write-back loads the
    AXI output register.  ``rd_data`` is valid 3 cycles after ``rd`` is
    accepted (with ``rd_data.ready`` high).

    Read ordering
    -------------
    A host read accepted in cycle T returns the counter including exactly the
    updates accepted in cycles before T (no update is accepted in cycle T: the
    read takes the pipeline slot).  Updates accepted later are not included,
    even if they enter before the result leaves ``rd_data``.

    Write-back
    ----------
    Each line (four counters) has a dirty bit, set when an update to it is
    accepted and cleared when a write-back of the line enters the pipeline.
    A ``flush`` pulse starts a pass (``flush_busy`` rises in the next cycle):
    a pointer walks the lines in order, one per cycle, and every dirty line
    enters the pipeline as a write-back, so its data includes every update
    accepted before that cycle.  The pass ends when the pointer has passed the
    last line and every write has been acknowledged on B; then ``flush_done``
    pulses for one cycle and ``flush_busy`` falls.  A ``flush`` during a pass
    is remembered and starts one more pass right after it (``flush_done``
    pulses only when no pass is pending).  Guarantee: when ``flush_done``
    pulses, every counter in DRAM includes at least all updates accepted
    before the cycle of the last ``flush`` pulse, and no pass wrote a line
    that was clean.  Updates accepted during a pass reach DRAM in that pass if
    the pointer had not passed their line yet, else they leave it dirty for
    the next pass.
    """

    @checked_init
    def __init__(self, *, n_counters: int = 1024, counters_off: int = 0):
        if not isinstance(n_counters, int) or isinstance(n_counters, bool):
            raise TypeError(f"n_counters = {n_counters!r}: must be an int")
        if n_counters < _SLOTS or n_counters % _SLOTS:
            raise ValueError(f"n_counters = {n_counters}: must be a positive multiple of {_SLOTS}")
        if not isinstance(counters_off, int) or isinstance(counters_off, bool):
            raise TypeError(f"counters_off = {counters_off!r}: must be an int")
        if not 0 <= counters_off or counters_off + n_counters // _SLOTS > 1 << _LINE_INDEX_BITS:
            raise ValueError(f"counters_off = {counters_off}: the counter region must lie in line indices "
                             f"[0, 2**{_LINE_INDEX_BITS})")
        self._n_counters = n_counters
        self._counters_off = counters_off
        self._idx_bits = max(1, (n_counters - 1).bit_length())
        super().__init__({
            "upd": In(stream.Signature(CounterUpdate(self._idx_bits))),
            "rd": In(stream.Signature(self._idx_bits)),
            "rd_data": Out(stream.Signature(Counter)),
            "flush": In(1),
            "flush_busy": Out(1),
            "flush_done": Out(1),
            "clearing": Out(1),
            # AXI4 write address / data / response channels
            "m_axi_awvalid": Out(1), "m_axi_awready": In(1), "m_axi_awaddr": Out(_ADDR_BITS),
            "m_axi_awid": Out(1), "m_axi_awlen": Out(8), "m_axi_awsize": Out(3), "m_axi_awburst": Out(2),
            "m_axi_wvalid": Out(1), "m_axi_wready": In(1), "m_axi_wdata": Out(LINE_BITS),
            "m_axi_wstrb": Out(LINE_BYTES), "m_axi_wlast": Out(1),
            "m_axi_bvalid": In(1), "m_axi_bready": Out(1), "m_axi_bid": In(1), "m_axi_bresp": In(2),
            # AXI4 read channels, tied idle
            "m_axi_arvalid": Out(1), "m_axi_arready": In(1), "m_axi_araddr": Out(_ADDR_BITS),
            "m_axi_arid": Out(1), "m_axi_arlen": Out(8), "m_axi_arsize": Out(3), "m_axi_arburst": Out(2),
            "m_axi_rvalid": In(1), "m_axi_rready": Out(1), "m_axi_rdata": In(LINE_BITS),
            "m_axi_rid": In(1), "m_axi_rlast": In(1), "m_axi_rresp": In(2),
        })

    @property
    def n_counters(self) -> int:
        return self._n_counters

    @property
    def counters_off(self) -> int:
        return self._counters_off

    @property
    def idx_bits(self) -> int:
        return self._idx_bits

    def elaborate(self, platform):
        m = Module()
        n_lines = self._n_counters // _SLOTS
        lb = max(1, (n_lines - 1).bit_length())
        ib = self._idx_bits
        in_range = ((lambda i: i < self._n_counters) if self._n_counters < 1 << ib
                    else (lambda i: Const(1)))

        # -- AXI constants and tie-offs ------------------------------------------------
        m.d.comb += [
            self.m_axi_awid.eq(0), self.m_axi_awlen.eq(0), self.m_axi_awsize.eq(_LINE_SHIFT),
            self.m_axi_awburst.eq(1), self.m_axi_wstrb.eq(Const(-1, LINE_BYTES)), self.m_axi_wlast.eq(1),
            self.m_axi_bready.eq(1),
            self.m_axi_arvalid.eq(0), self.m_axi_arlen.eq(0), self.m_axi_arsize.eq(_LINE_SHIFT),
            self.m_axi_arburst.eq(1), self.m_axi_rready.eq(1),
        ]

        # (at least two lines, so that the address port is never zero bits wide)
        m.submodules.mem = mem = Memory(shape=_LINE, depth=max(2, n_lines), init=[])
        wport = mem.write_port(granularity=1)
        rport = mem.read_port()          # not transparent: S2 forwards the writes it misses

        # -- pipeline registers ------------------------------------------------------------
        s1_op, s2_op = Signal(2), Signal(2)
        s1_idx, s2_idx = Signal(ib), Signal(ib)
        s1_bytes, s2_bytes = Signal(_BYTES_BITS), Signal(_BYTES_BITS)
        s1_ok, s2_ok = Signal(), Signal()            # index in range
        s1_line, s2_line = Signal(lb), Signal(lb)    # write-back line
        s2_data = Signal(_LINE)
        # the last two counter writes, newest first: (valid, index, value)
        fw_valid = [Signal(name=f"fw{k}_valid") for k in range(2)]
        fw_idx = [Signal(ib, name=f"fw{k}_idx") for k in range(2)]
        fw_val = [Signal(Counter, name=f"fw{k}_val") for k in range(2)]

        # -- write-back state --------------------------------------------------------------
        dirty = Signal(n_lines)
        busy = Signal()
        pending = Signal()
        ptr = Signal(lb + 1)
        scanned = Signal()
        ob_aw = Signal()                 # output register: AW still to be accepted
        ob_w = Signal()                  # output register: W still to be accepted
        ob_line = Signal(lb)
        ob_data = Signal(LINE_BITS)
        nwr = Signal(range(_MAX_WRITES + 1))    # writes loaded into the output register, B not yet seen

        # -- after reset: zero every line, one per cycle (memory contents survive a reset) ------
        clearing = Signal(init=1)
        clr = Signal(lb)
        with m.If(clearing):
            m.d.sync += clr.eq(clr + 1)
            with m.If(clr == n_lines - 1):
                m.d.sync += clearing.eq(0)
        m.d.comb += self.clearing.eq(clearing)

        # -- S0: arbitration ---------------------------------------------------------------
        rd_in_flight = Signal()
        wb_in_flight = Signal()
        m.d.comb += [
            rd_in_flight.eq((s1_op == _RD) | (s2_op == _RD) | self.rd_data.valid),
            wb_in_flight.eq((s1_op == _WB) | (s2_op == _WB) | ob_aw | ob_w),
            scanned.eq(ptr == n_lines),
            self.rd.ready.eq(~rd_in_flight & ~clearing),
        ]
        cur_dirty = Signal()
        m.d.comb += cur_dirty.eq(dirty.bit_select(ptr[:lb], 1) & ~scanned)
        rd_fire = Signal()
        wb_go = Signal()
        upd_fire = Signal()
        m.d.comb += [
            rd_fire.eq(self.rd.valid & self.rd.ready),
            wb_go.eq(busy & cur_dirty & ~wb_in_flight & (nwr != _MAX_WRITES) & ~rd_fire),
            self.upd.ready.eq(~rd_fire & ~wb_go & ~clearing),
            upd_fire.eq(self.upd.valid & self.upd.ready),
        ]
        op0 = Signal(2)
        idx0 = Signal(ib)
        line0 = Signal(lb)
        with m.If(rd_fire):
            m.d.comb += [op0.eq(_RD), idx0.eq(self.rd.payload), line0.eq(self.rd.payload >> 2)]
        with m.Elif(wb_go):
            m.d.comb += [op0.eq(_WB), line0.eq(ptr[:lb])]
        with m.Elif(upd_fire):
            m.d.comb += [op0.eq(_UPD), idx0.eq(self.upd.payload.index), line0.eq(self.upd.payload.index >> 2)]
        m.d.comb += [rport.addr.eq(line0), rport.en.eq(1)]
        m.d.sync += [
            s1_op.eq(op0), s1_idx.eq(idx0), s1_line.eq(line0), s1_bytes.eq(self.upd.payload.bytes),
            s1_ok.eq(in_range(idx0)),
        ]

        # dirty bits: set by an accepted update, cleared when the line's write-back enters
        with m.If(upd_fire & in_range(self.upd.payload.index)):
            m.d.sync += dirty.bit_select(self.upd.payload.index >> 2, 1).eq(1)
        with m.If(wb_go):
            m.d.sync += dirty.bit_select(ptr[:lb], 1).eq(0)

        # -- S1: memory data arrives -------------------------------------------------------
        m.d.sync += [s2_op.eq(s1_op), s2_idx.eq(s1_idx), s2_line.eq(s1_line), s2_bytes.eq(s1_bytes),
                     s2_ok.eq(s1_ok), s2_data.eq(rport.data)]

        # -- S2: forward, add, write --------------------------------------------------------
        cur = Signal(_LINE)
        for j in range(_SLOTS):
            my_idx = Signal(ib, name=f"s2_slot{j}_idx")
            m.d.comb += my_idx.eq((s2_line << 2) | j)
            with m.If(fw_valid[0] & (fw_idx[0] == my_idx)):
                m.d.comb += cur[j].eq(fw_val[0])
            with m.Elif(fw_valid[1] & (fw_idx[1] == my_idx)):
                m.d.comb += cur[j].eq(fw_val[1])
            with m.Else():
                m.d.comb += cur[j].eq(s2_data[j])
        slot = s2_idx[:2]
        mine = Signal(Counter)
        m.d.comb += mine.eq(cur[slot])
        new = Signal(Counter)
        m.d.comb += [new.packets.eq(mine.packets + 1), new.bytes.eq(mine.bytes + s2_bytes)]
        wr = Signal()
        m.d.comb += wr.eq((s2_op == _UPD) & s2_ok)
        with m.If(clearing):
            m.d.comb += [wport.addr.eq(clr), wport.en.eq(-1), wport.data.eq(0)]
        with m.Else():
            m.d.comb += wport.addr.eq(s2_line)
            for j in range(_SLOTS):
                m.d.comb += [wport.en[j].eq(wr & (slot == j)), wport.data[j].eq(new)]
        m.d.sync += [
            fw_valid[0].eq(wr), fw_idx[0].eq(s2_idx), fw_val[0].eq(new),
            fw_valid[1].eq(fw_valid[0]), fw_idx[1].eq(fw_idx[0]), fw_val[1].eq(fw_val[0]),
        ]

        # host read result
        with m.If(self.rd_data.valid & self.rd_data.ready):
            m.d.sync += self.rd_data.valid.eq(0)
        with m.If(s2_op == _RD):
            m.d.sync += [self.rd_data.valid.eq(1), self.rd_data.payload.eq(Mux(s2_ok, mine.as_value(), 0))]

        # -- write-back: output register, AXI handshakes ------------------------------------
        m.d.comb += [
            self.m_axi_awvalid.eq(ob_aw), self.m_axi_wvalid.eq(ob_w), self.m_axi_wdata.eq(ob_data),
            self.m_axi_awaddr.eq((ob_line + self._counters_off) << _LINE_SHIFT),
        ]
        with m.If(self.m_axi_awvalid & self.m_axi_awready):
            m.d.sync += ob_aw.eq(0)
        with m.If(self.m_axi_wvalid & self.m_axi_wready):
            m.d.sync += ob_w.eq(0)
        load = Signal()
        m.d.comb += load.eq(s2_op == _WB)
        with m.If(load):
            m.d.sync += [ob_aw.eq(1), ob_w.eq(1), ob_line.eq(s2_line), ob_data.eq(cur.as_value())]
        b_fire = Signal()
        m.d.comb += b_fire.eq(self.m_axi_bvalid & self.m_axi_bready)
        with m.If(load & ~b_fire):
            m.d.sync += nwr.eq(nwr + 1)
        with m.Elif(~load & b_fire & (nwr != 0)):
            m.d.sync += nwr.eq(nwr - 1)

        # -- write-back: the pass ---------------------------------------------------------------
        with m.If(busy & ~scanned & (~cur_dirty | wb_go)):
            m.d.sync += ptr.eq(ptr + 1)
        done = Signal()
        m.d.comb += done.eq(busy & scanned & ~wb_in_flight & (nwr == 0))
        with m.If(self.flush):
            m.d.sync += pending.eq(1)
        with m.If(done):
            m.d.sync += busy.eq(0)
        with m.If((~busy | done) & (pending | self.flush)):
            # start a pass; a flush in this very cycle is covered by it
            m.d.sync += [busy.eq(1), pending.eq(0), ptr.eq(0)]
        m.d.comb += [
            self.flush_busy.eq(busy | pending),
            self.flush_done.eq(done & ~pending & ~self.flush),
        ]
        return m
