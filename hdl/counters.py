"""Packet/byte counter block: a write-back cache of counter deltas over the DRAM counter region.

Same semantics as :class:`cxlnic.model.counters.CounterBank` (tested against it
in Amaranth's simulator and under Verilator with cocotbext-axi's AxiRam).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cxlnic.hdl.layouts import LINE_BITS, LINE_BYTES, Counter
from cxlnic.hdl.util import checked_init

__all__ = ["CounterBlock", "CounterUpdate"]

_LINE_SHIFT = (LINE_BYTES - 1).bit_length()     # byte address = line << 6
_LINE_INDEX_BITS = 32
_ADDR_BITS = _LINE_INDEX_BITS + _LINE_SHIFT
_SLOTS = 4                                       # counters per CounterLine
_BYTES_BITS = 16
_STAT_BITS = 32
_LANE = 64                                       # every field of a CounterLine is a 64-bit lane
_COUNTER_BITS = data.Layout.cast(Counter).size   # 128


def CounterUpdate(idx_bits: int) -> data.StructLayout:
    """Update payload: add one packet of ``bytes`` bytes to counter ``index``."""
    return data.StructLayout({"index": idx_bits, "bytes": _BYTES_BITS})


def _lane_add(a, b, width):
    """Lane-wise sum (64-bit lanes, each wrapping) of two ``width``-bit values."""
    return Cat(*[(a[i:i + _LANE] + b[i:i + _LANE])[:_LANE] for i in range(0, width, _LANE)])


def _check_int(name, value, lo, hi, *, pow2=False):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} = {value!r}: must be an int")
    if not lo <= value <= hi or (pow2 and value & (value - 1)):
        what = "a power of two" if pow2 else "an int"
        raise ValueError(f"{name} = {value}: must be {what} in [{lo}, {hi}]")


# What an operation in the update pipeline does.
_NONE, _UPD, _RD, _FL = range(4)
# Host read phases after the pipeline.
_RD_IDLE, _RD_WAIT, _RD_DRAM = range(3)


class CounterBlock(wiring.Component):
    """``n_counters`` 64-bit packet and byte counters in DRAM, with a write-back cache of deltas on chip.

    DRAM is authoritative: counter ``i`` lives in slot ``i % 4`` of line
    ``counters_off + i // 4`` of the counter region (a
    :class:`~cxlnic.hdl.layouts.CounterLine`), which the host formats (zeros)
    before use.  The block never clears DRAM.  On chip, a direct-mapped cache
    of ``cache_lines`` lines holds, per line, the *increments not yet in DRAM*
    (four 128-bit ``Counter`` deltas), its tag and a dirty bit.  The exact
    value of a counter is its DRAM value + the cached delta + any delta of its
    line waiting for or being written back (lane-wise, each 64-bit field
    wrapping).

    Updates never wait for DRAM.  An update whose line is resident (dirty with
    the same tag: a *hit*) adds to the cached delta.  Otherwise (a *miss*) the
    line is allocated with a zero delta plus the update; if the set held
    another dirty line, that victim (line number and delta) is pushed into the
    eviction FIFO (``evict_depth`` entries).  The eviction engine pops the
    FIFO in order and, for each entry, does a DRAM read-modify-write: AXI4
    read of the line, lane-wise add of the delta, AXI4 write, wait for B.  Up
    to ``max_evictions`` RMWs are in flight (AXI ID = engine slot), never two
    of the same line: an entry whose line has an RMW in flight waits at the
    head of the FIFO until its B response.  A line is *clean* (not resident)
    after its delta has been pushed; clean lines hold no delta.

    Ports
    -----
    * ``upd``: stream of :func:`CounterUpdate`; adds 1 to ``packets`` and
      ``bytes`` to ``bytes`` of counter ``index`` (both wrap at 2**64).
      Indices ``>= n_counters`` are accepted and ignored.
    * ``rd`` (counter index) / ``rd_data`` (:class:`~cxlnic.hdl.layouts.Counter`):
      the host read port; one result per request, in request order, exact
      (below).  Reads of an index ``>= n_counters`` return zero without a
      DRAM access.  ``rd_line`` is valid with ``rd_data``: the exact values of
      the whole line holding the counter (a :class:`~cxlnic.hdl.layouts.CounterLine`,
      the four counters as of the same instant), so a host read of a counter line
      costs one request and one DRAM read.
    * ``flush`` (pulse), ``flush_busy``, ``flush_done``: write-back, below.
    * ``clearing``: high in the first cycle after reset only (the tags are
      invalidated by resetting the dirty bits; nothing is zeroed);
      ``upd.ready`` and ``rd.ready`` are low meanwhile.
    * ``hits``, ``misses``, ``evictions``: 32-bit running counts (wrapping,
      zeroed by reset) of accepted in-range updates that hit / missed, and of
      lines handed to the eviction engine (miss victims and flushed lines).
    * ``m_axi_*``: AXI4 master, ``axi_id_bits``-bit IDs.  Every transaction
      is one 64-byte beat: ``ar/awlen`` 0, ``ar/awsize`` 6, ``ar/awburst``
      INCR, address = (``counters_off`` + line) × 64, ``wstrb`` all ones,
      ``wlast`` 1.  Eviction RMWs use IDs ``0 .. max_evictions - 1`` (read
      and write of one RMW share the ID), host reads ID ``max_evictions``;
      responses may come back in any order across IDs.  AW and W are
      presented together (either may be accepted first).  ``bready`` is
      constant 1; ``rready`` is high when the write output register is free
      (or being emptied).  ``rresp`` and ``bresp`` are ignored.

    Throughput
    ----------
    One operation enters the pipeline per cycle: a host read, else a flush
    write-back of one dirty cache line, else an update.  ``upd.ready`` is high
    (after the first cycle) except in cycles in which a host read or a flush
    line is accepted, and while the eviction FIFO is full (counting the
    entries still in the pipeline); it does not depend on ``upd.valid``.
    Back-to-back updates of one counter are sustained at one per cycle.
    Misses cost nothing while the eviction engine keeps up: sustained
    eviction bandwidth is ``max_evictions`` RMWs per DRAM round trip (and
    at most one AR and one AW/W per cycle).

    Pipeline: S0 accepts, decides hit/miss from the tag memory and dirty bits
    (updated in the same cycle, so decisions follow acceptance order) and
    issues the synchronous delta read; S1 registers the data; S2 forwards the
    lines written in the previous two cycles, adds (update), pushes the victim
    (miss with a dirty victim, or flush), or captures the cached delta (host
    read).

    Exact host reads
    ----------------
    A host read accepted in cycle T returns the counter including exactly the
    updates accepted before T (none is accepted in T).  In S2 it captures the
    cached delta (which covers the updates accepted before T that are still
    in the cache) and the number ``k`` of entries then in the eviction FIFO
    (all pushed by operations accepted before T).  It then waits until those
    ``k`` entries have been popped and no RMW of its line is in flight; from
    S2 until its DRAM data returns, the engine may not start an RMW of that
    line from any later entry (a later entry of the line stops at the head of
    the FIFO).  So its AXI read (ID ``max_evictions``) sees DRAM holding every
    delta of the line evicted before T and none evicted after, and DRAM value
    + captured delta is the value at T.  ``rd.ready`` is high only while no
    host read is in progress and ``rd_data`` is empty; latency is 3 cycles +
    the wait for earlier evictions + one DRAM read round trip (+1).

    Write-back
    ----------
    A ``flush`` pulse starts a pass (``flush_busy`` rises in the next cycle):
    a pointer walks the ``cache_lines`` sets, one per cycle, and every dirty
    set enters the pipeline as a flush operation that cleans it and pushes its
    delta into the eviction FIFO.  When the pointer has passed the last set,
    the pass waits until every eviction pushed by an operation accepted
    before that moment has received its B response (later evictions do not
    delay it); then ``flush_done`` pulses for one cycle and ``flush_busy``
    falls.  A ``flush`` during a pass is remembered and starts one more pass
    right after it (``flush_done`` pulses only when no pass is pending).
    Guarantee: when ``flush_done`` pulses, DRAM holds every counter including
    at least all updates accepted before the last ``flush`` pulse; with the
    update stream idle, DRAM alone then holds the exact values.  A clean line
    is never written.

    Write-back grants (``wb_grant=True``, for a coherent device memory)
    -------------------------------------------------------------------
    Ports ``wb_req`` (out) and ``wb_ok`` (in) carry absolute line indices
    (``counters_off`` + line).  Before the eviction engine starts the RMW of
    the entry at the head of the eviction FIFO, it asks for that line on
    ``wb_req`` (one request at a time) and waits for ``wb_ok``; the grant is
    used by that entry's RMW (the head only changes when it is popped).
    :class:`~cxlnic.hdl.cxl_mem.CxlMemSubordinate`'s ``dev_wr``/``dev_wr_ok``
    attach here: the grant comes after the host was back-invalidated, so no
    host cache holds a counter line the device is about to write.  Host reads
    of counter lines never need a grant (they are assembled from the exact
    values, above).

    Reset invalidates every cache line (the deltas of dirty lines are lost,
    as are RMWs in progress; DRAM keeps what it had).
    """

    @checked_init
    def __init__(self, *, n_counters: int = 1024, counters_off: int = 0, cache_lines: int = 512,
                 evict_depth: int = 8, max_evictions: int = 4, axi_id_bits: int = 3, wb_grant: bool = False):
        if not isinstance(n_counters, int) or isinstance(n_counters, bool):
            raise TypeError(f"n_counters = {n_counters!r}: must be an int")
        if n_counters < _SLOTS or n_counters % _SLOTS:
            raise ValueError(f"n_counters = {n_counters}: must be a positive multiple of {_SLOTS}")
        if not isinstance(counters_off, int) or isinstance(counters_off, bool):
            raise TypeError(f"counters_off = {counters_off!r}: must be an int")
        if not 0 <= counters_off or counters_off + n_counters // _SLOTS > 1 << _LINE_INDEX_BITS:
            raise ValueError(f"counters_off = {counters_off}: the counter region must lie in line indices "
                             f"[0, 2**{_LINE_INDEX_BITS})")
        _check_int("cache_lines", cache_lines, 2, 1 << 16, pow2=True)
        _check_int("evict_depth", evict_depth, 1, 64)
        _check_int("max_evictions", max_evictions, 1, 32)
        _check_int("axi_id_bits", axi_id_bits, 1, 8)
        if max_evictions >= 1 << axi_id_bits:
            raise ValueError(f"axi_id_bits = {axi_id_bits}: needs 2**axi_id_bits > max_evictions = {max_evictions} "
                             f"(IDs 0..{max_evictions - 1} for evictions, {max_evictions} for host reads)")
        self._n_counters = n_counters
        self._counters_off = counters_off
        self._cache_lines = cache_lines
        self._evict_depth = evict_depth
        self._max_evictions = max_evictions
        self._id_bits = axi_id_bits
        if not isinstance(wb_grant, bool):
            raise TypeError(f"wb_grant = {wb_grant!r}: must be a bool")
        self._wb_grant = wb_grant
        self._idx_bits = max(1, (n_counters - 1).bit_length())
        idb = axi_id_bits
        super().__init__({
            "upd": In(stream.Signature(CounterUpdate(self._idx_bits))),
            "rd": In(stream.Signature(self._idx_bits)),
            "rd_data": Out(stream.Signature(Counter)),
            "rd_line": Out(LINE_BITS),
            "flush": In(1),
            "flush_busy": Out(1),
            "flush_done": Out(1),
            "clearing": Out(1),
            "hits": Out(_STAT_BITS),
            "misses": Out(_STAT_BITS),
            "evictions": Out(_STAT_BITS),
            # AXI4 write address / data / response channels
            "m_axi_awvalid": Out(1), "m_axi_awready": In(1), "m_axi_awaddr": Out(_ADDR_BITS),
            "m_axi_awid": Out(idb), "m_axi_awlen": Out(8), "m_axi_awsize": Out(3), "m_axi_awburst": Out(2),
            "m_axi_wvalid": Out(1), "m_axi_wready": In(1), "m_axi_wdata": Out(LINE_BITS),
            "m_axi_wstrb": Out(LINE_BYTES), "m_axi_wlast": Out(1),
            "m_axi_bvalid": In(1), "m_axi_bready": Out(1), "m_axi_bid": In(idb), "m_axi_bresp": In(2),
            # AXI4 read address / data channels
            "m_axi_arvalid": Out(1), "m_axi_arready": In(1), "m_axi_araddr": Out(_ADDR_BITS),
            "m_axi_arid": Out(idb), "m_axi_arlen": Out(8), "m_axi_arsize": Out(3), "m_axi_arburst": Out(2),
            "m_axi_rvalid": In(1), "m_axi_rready": Out(1), "m_axi_rdata": In(LINE_BITS),
            "m_axi_rid": In(idb), "m_axi_rlast": In(1), "m_axi_rresp": In(2),
            # write-back grants (wb_grant): the absolute line index of the next write-back, and its grant
            **({"wb_req": Out(stream.Signature(_LINE_INDEX_BITS)), "wb_ok": In(stream.Signature(_LINE_INDEX_BITS))}
               if wb_grant else {}),
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

    @property
    def cache_lines(self) -> int:
        return self._cache_lines

    @property
    def evict_depth(self) -> int:
        return self._evict_depth

    @property
    def max_evictions(self) -> int:
        return self._max_evictions

    @property
    def axi_id_bits(self) -> int:
        return self._id_bits

    @property
    def wb_grant(self) -> bool:
        return self._wb_grant

    def elaborate(self, platform):
        m = Module()
        n_lines = self._n_counters // _SLOTS
        lb = max(1, (n_lines - 1).bit_length())          # line number within the region
        ib = self._idx_bits
        nc = self._cache_lines
        sb = (nc - 1).bit_length()                        # set bits
        tb = max(1, lb - sb)                              # tag bits
        depth = self._evict_depth
        ne = self._max_evictions
        host_id = ne
        off = self._counters_off
        in_range = ((lambda i: i < self._n_counters) if self._n_counters < 1 << ib
                    else (lambda i: Const(1)))

        def line_of(set_, tag):
            v = Signal(lb)
            m.d.comb += v.eq(Cat(set_, tag))
            return v

        # -- AXI constants ------------------------------------------------------------------
        m.d.comb += [
            self.m_axi_awlen.eq(0), self.m_axi_awsize.eq(_LINE_SHIFT), self.m_axi_awburst.eq(1),
            self.m_axi_wstrb.eq(Const(-1, LINE_BYTES)), self.m_axi_wlast.eq(1), self.m_axi_bready.eq(1),
            self.m_axi_arlen.eq(0), self.m_axi_arsize.eq(_LINE_SHIFT), self.m_axi_arburst.eq(1),
        ]

        # -- cache storage: deltas (sync read), tags (async read), dirty bits (flops) -----------
        m.submodules.delta_mem = dmem = Memory(shape=LINE_BITS, depth=nc, init=[])
        dwp = dmem.write_port()
        drp = dmem.read_port()           # not transparent: S2 forwards the writes it misses
        m.submodules.tag_mem = tmem = Memory(shape=tb, depth=nc, init=[])
        twp = tmem.write_port()
        trp = tmem.read_port(domain="comb")
        dirty = Signal(nc)

        m.submodules.evq = evq = fifo.SyncFIFO(width=LINE_BITS + lb, depth=depth)
        ev_res = Signal(range(depth + 1))     # FIFO entries + pushes still in the pipeline

        clearing = Signal(init=1)
        m.d.sync += clearing.eq(0)
        m.d.comb += self.clearing.eq(clearing)

        # -- flush pass state ----------------------------------------------------------------
        busy, pending = Signal(), Signal()
        ptr = Signal(range(nc + 1))
        scanned = Signal()
        cur_dirty = Signal()
        m.d.comb += [scanned.eq(ptr == nc), cur_dirty.eq(dirty.bit_select(ptr[:sb], 1) & ~scanned)]

        # -- host read state -----------------------------------------------------------------
        rd_busy = Signal()                # from acceptance until the result is loaded
        rd_phase = Signal(range(3))
        rd_line = Signal(lb)
        rd_slot = Signal(2)
        rd_delta = Signal(LINE_BITS)         # the whole line's captured delta
        rd_cnt = Signal(range(depth + 1))  # FIFO entries older than the read not yet popped

        # -- S0: arbitration, hit/miss ------------------------------------------------------------
        rd_fire, fl_go, upd_fire = Signal(), Signal(), Signal()
        room = Signal()
        m.d.comb += [
            room.eq(ev_res != depth),
            self.rd.ready.eq(~rd_busy & ~self.rd_data.valid & ~clearing),
            rd_fire.eq(self.rd.valid & self.rd.ready),
            fl_go.eq(busy & cur_dirty & room & ~rd_fire),
            self.upd.ready.eq(~rd_fire & ~fl_go & room & ~clearing),
            upd_fire.eq(self.upd.valid & self.upd.ready),
        ]
        op0 = Signal(2)
        idx0 = Signal(ib)
        set0 = Signal(sb)
        tag0 = Signal(tb)
        ok0 = Signal()
        with m.If(rd_fire):
            m.d.comb += [op0.eq(_RD), idx0.eq(self.rd.payload)]
        with m.Elif(fl_go):
            m.d.comb += op0.eq(_FL)
        with m.Elif(upd_fire):
            m.d.comb += [op0.eq(_UPD), idx0.eq(self.upd.payload.index)]
        with m.If(fl_go):
            m.d.comb += [set0.eq(ptr[:sb]), ok0.eq(1)]
        with m.Else():
            m.d.comb += [set0.eq(idx0 >> 2), tag0.eq(idx0 >> (2 + sb)), ok0.eq(in_range(idx0))]
        dirty0, hit0 = Signal(), Signal()
        m.d.comb += [
            trp.addr.eq(set0), drp.addr.eq(set0), drp.en.eq(1),
            dirty0.eq(dirty.bit_select(set0, 1)),
            hit0.eq(dirty0 & (trp.data == tag0)),
        ]
        upd0 = Signal()
        ev0 = Signal()
        m.d.comb += [
            upd0.eq(upd_fire & ok0),
            ev0.eq((upd0 & dirty0 & ~hit0) | fl_go),
        ]
        with m.If(upd0):
            m.d.sync += dirty.bit_select(set0, 1).eq(1)
            m.d.comb += [twp.addr.eq(set0), twp.data.eq(tag0), twp.en.eq(1)]
            with m.If(hit0):
                m.d.sync += self.hits.eq(self.hits + 1)
            with m.Else():
                m.d.sync += self.misses.eq(self.misses + 1)
        with m.If(fl_go):
            m.d.sync += dirty.bit_select(set0, 1).eq(0)
        with m.If(ev0):
            m.d.sync += self.evictions.eq(self.evictions + 1)

        # -- pipeline registers ------------------------------------------------------------
        def stage(name):
            return dict(op=Signal(2, name=f"{name}_op"), slot=Signal(2, name=f"{name}_slot"),
                        ok=Signal(name=f"{name}_ok"), set=Signal(sb, name=f"{name}_set"),
                        tag=Signal(tb, name=f"{name}_tag"), hit=Signal(name=f"{name}_hit"),
                        ev=Signal(name=f"{name}_ev"), vtag=Signal(tb, name=f"{name}_vtag"),
                        bytes=Signal(_BYTES_BITS, name=f"{name}_bytes"))
        s1, s2 = stage("s1"), stage("s2")
        m.d.sync += [
            s1["op"].eq(op0), s1["slot"].eq(idx0[:2]), s1["ok"].eq(ok0), s1["set"].eq(set0),
            s1["tag"].eq(tag0), s1["hit"].eq(hit0), s1["ev"].eq(ev0), s1["vtag"].eq(trp.data),
            s1["bytes"].eq(self.upd.payload.bytes),
        ]
        m.d.sync += [s2[k].eq(s1[k]) for k in s1]
        s2_data = Signal(LINE_BITS)
        m.d.sync += s2_data.eq(drp.data)

        # -- S2: forward, add, push -----------------------------------------------------------
        fw_valid = [Signal(name=f"fw{k}_valid") for k in range(2)]
        fw_set = [Signal(sb, name=f"fw{k}_set") for k in range(2)]
        fw_val = [Signal(LINE_BITS, name=f"fw{k}_val") for k in range(2)]
        cur = Signal(LINE_BITS)
        with m.If(fw_valid[0] & (fw_set[0] == s2["set"])):
            m.d.comb += cur.eq(fw_val[0])
        with m.Elif(fw_valid[1] & (fw_set[1] == s2["set"])):
            m.d.comb += cur.eq(fw_val[1])
        with m.Else():
            m.d.comb += cur.eq(s2_data)
        base = Signal(LINE_BITS)
        m.d.comb += base.eq(Mux(s2["hit"], cur, 0))
        mine = Signal(Counter)
        m.d.comb += mine.eq(base.word_select(s2["slot"], _COUNTER_BITS))
        new = Signal(Counter)
        m.d.comb += [new.packets.eq(mine.packets + 1), new.bytes.eq(mine.bytes + s2["bytes"])]
        newline = Signal(LINE_BITS)
        m.d.comb += newline.eq(Cat(*[Mux(s2["slot"] == j, new.as_value(),
                                         base[j * _COUNTER_BITS:(j + 1) * _COUNTER_BITS])
                                     for j in range(_SLOTS)]))
        wr = Signal()
        m.d.comb += [
            wr.eq((s2["op"] == _UPD) & s2["ok"]),
            dwp.addr.eq(s2["set"]), dwp.en.eq(wr), dwp.data.eq(newline),
        ]
        m.d.sync += [
            fw_valid[0].eq(wr), fw_set[0].eq(s2["set"]), fw_val[0].eq(newline),
            fw_valid[1].eq(fw_valid[0]), fw_set[1].eq(fw_set[0]), fw_val[1].eq(fw_val[0]),
        ]
        m.d.comb += [
            evq.w_en.eq(s2["ev"]),
            evq.w_data.eq(Cat(cur, line_of(s2["set"], s2["vtag"]))),
        ]

        # -- eviction engine ----------------------------------------------------------------
        head_delta = Signal(LINE_BITS)
        head_line = Signal(lb)
        m.d.comb += [head_delta.eq(evq.r_data[:LINE_BITS]), head_line.eq(evq.r_data[LINE_BITS:])]
        slot_v = Signal(ne)
        slot_line = [Signal(lb, name=f"ev{k}_line") for k in range(ne)]
        slot_delta = [Signal(LINE_BITS, name=f"ev{k}_delta") for k in range(ne)]
        free_any = Signal()
        free_k = Signal(range(ne))
        m.d.comb += free_any.eq(~slot_v.all())
        for k in reversed(range(ne)):
            with m.If(~slot_v[k]):
                m.d.comb += free_k.eq(k)
        haz = Signal()
        rd_line_busy = Signal()
        m.d.comb += [
            haz.eq(Cat(*[slot_v[k] & (slot_line[k] == head_line) for k in range(ne)]).any()),
            rd_line_busy.eq(Cat(*[slot_v[k] & (slot_line[k] == rd_line) for k in range(ne)]).any()),
        ]
        ar_v = Signal()
        ar_line = Signal(lb)
        ar_id = Signal(self._id_bits)
        ar_free = Signal()
        m.d.comb += [
            ar_free.eq(~ar_v | self.m_axi_arready),
            self.m_axi_arvalid.eq(ar_v), self.m_axi_arid.eq(ar_id),
            self.m_axi_araddr.eq((ar_line + off) << _LINE_SHIFT),
        ]
        host_ar = Signal()
        rd_block = Signal()
        pop = Signal()
        granted = Signal()
        m.d.comb += [
            host_ar.eq((rd_phase == _RD_WAIT) & (rd_cnt == 0) & ~rd_line_busy & ar_free),
            rd_block.eq((rd_phase != _RD_IDLE) & (rd_cnt == 0) & (head_line == rd_line)),
            pop.eq(evq.r_rdy & granted & free_any & ~haz & ~rd_block & ar_free & ~host_ar),
            evq.r_en.eq(pop),
        ]
        if self._wb_grant:
            # The head entry's line is granted (wb_req -> wb_ok) before its RMW starts; one request
            # at a time, each grant used by exactly the entry it was asked for (the FIFO head only
            # changes on a pop, which consumes the grant).
            g_have, g_sent = Signal(), Signal()
            m.d.comb += [
                granted.eq(g_have),
                self.wb_req.valid.eq(evq.r_rdy & ~g_have & ~g_sent),
                self.wb_req.payload.eq(head_line + off),
                self.wb_ok.ready.eq(1),
            ]
            with m.If(self.wb_req.valid & self.wb_req.ready):
                m.d.sync += g_sent.eq(1)
            with m.If(self.wb_ok.valid):
                m.d.sync += [g_have.eq(1), g_sent.eq(0)]
            with m.If(pop):
                m.d.sync += g_have.eq(0)
        else:
            m.d.comb += granted.eq(1)
        with m.If(self.m_axi_arvalid & self.m_axi_arready):
            m.d.sync += ar_v.eq(0)
        with m.If(host_ar):
            m.d.sync += [ar_v.eq(1), ar_line.eq(rd_line), ar_id.eq(host_id), rd_phase.eq(_RD_DRAM)]
        with m.Elif(pop):
            m.d.sync += [ar_v.eq(1), ar_line.eq(head_line), ar_id.eq(free_k)]
            for k in range(ne):
                with m.If(free_k == k):
                    m.d.sync += [slot_line[k].eq(head_line), slot_delta[k].eq(head_delta)]
        m.d.sync += ev_res.eq(ev_res + ev0 - pop)

        # B frees the slot; the slot bits of the next cycle
        b_fire = Signal()
        m.d.comb += b_fire.eq(self.m_axi_bvalid & self.m_axi_bready)
        b_free = Signal(ne)
        alloc = Signal(ne)
        slot_v_next = Signal(ne)
        for k in range(ne):
            m.d.comb += [b_free[k].eq(b_fire & (self.m_axi_bid == k)), alloc[k].eq(pop & (free_k == k))]
        m.d.comb += slot_v_next.eq((slot_v & ~b_free) | alloc)
        m.d.sync += slot_v.eq(slot_v_next)

        # R: an eviction's line plus its delta goes to the write output register; a host read's
        # counter plus its captured delta goes to rd_data
        ob_aw, ob_w = Signal(), Signal()
        ob_line = Signal(lb)
        ob_id = Signal(self._id_bits)
        ob_data = Signal(LINE_BITS)
        ob_free = Signal()
        m.d.comb += [
            ob_free.eq((~ob_aw | self.m_axi_awready) & (~ob_w | self.m_axi_wready)),
            self.m_axi_rready.eq(ob_free),
            self.m_axi_awvalid.eq(ob_aw), self.m_axi_wvalid.eq(ob_w), self.m_axi_wdata.eq(ob_data),
            self.m_axi_awid.eq(ob_id), self.m_axi_awaddr.eq((ob_line + off) << _LINE_SHIFT),
        ]
        with m.If(self.m_axi_awvalid & self.m_axi_awready):
            m.d.sync += ob_aw.eq(0)
        with m.If(self.m_axi_wvalid & self.m_axi_wready):
            m.d.sync += ob_w.eq(0)
        r_fire = Signal()
        m.d.comb += r_fire.eq(self.m_axi_rvalid & self.m_axi_rready)
        r_line = Signal(lb)
        r_delta = Signal(LINE_BITS)
        rid = self.m_axi_rid
        m.d.comb += [r_line.eq(Array(slot_line)[rid]), r_delta.eq(Array(slot_delta)[rid])]
        r_counter = Signal(_COUNTER_BITS)
        m.d.comb += r_counter.eq(self.m_axi_rdata.word_select(rd_slot, _COUNTER_BITS))

        with m.If(self.rd_data.valid & self.rd_data.ready):
            m.d.sync += self.rd_data.valid.eq(0)
        with m.If(r_fire):
            with m.If(rid == host_id):
                with m.If(rd_phase == _RD_DRAM):
                    m.d.sync += [
                        self.rd_data.valid.eq(1),
                        self.rd_data.payload.eq(_lane_add(r_counter, rd_delta.word_select(rd_slot, _COUNTER_BITS),
                                                          _COUNTER_BITS)),
                        self.rd_line.eq(_lane_add(self.m_axi_rdata, rd_delta, LINE_BITS)),
                        rd_phase.eq(_RD_IDLE), rd_busy.eq(0),
                    ]
            with m.Elif(rid < ne):
                m.d.sync += [ob_aw.eq(1), ob_w.eq(1), ob_line.eq(r_line), ob_id.eq(rid),
                             ob_data.eq(_lane_add(self.m_axi_rdata, r_delta, LINE_BITS))]

        # -- host read: capture in S2, then wait for older evictions ------------------------------
        with m.If(rd_fire):
            m.d.sync += rd_busy.eq(1)
        with m.If(s2["op"] == _RD):
            with m.If(s2["ok"]):
                m.d.sync += [
                    rd_phase.eq(_RD_WAIT), rd_line.eq(line_of(s2["set"], s2["tag"])), rd_slot.eq(s2["slot"]),
                    rd_delta.eq(base),
                    rd_cnt.eq(evq.level - pop),
                ]
            with m.Else():
                m.d.sync += [self.rd_data.valid.eq(1), self.rd_data.payload.eq(0), self.rd_line.eq(0),
                             rd_busy.eq(0)]
        with m.Elif(pop & (rd_cnt != 0)):
            m.d.sync += rd_cnt.eq(rd_cnt - 1)

        # -- flush passes ------------------------------------------------------------------------
        with m.If(busy & ~scanned & (~cur_dirty | fl_go)):
            m.d.sync += ptr.eq(ptr + 1)
        armed = Signal()
        drain = Signal(range(depth + 1))     # evictions older than the end of the scan not yet popped
        pre = Signal(ne)                     # slots holding such an eviction
        with m.If(busy & scanned & ~armed):
            m.d.sync += [armed.eq(1), drain.eq(ev_res - pop), pre.eq(slot_v_next)]
        with m.Else():
            m.d.sync += pre.eq((pre & ~b_free) | Mux(drain != 0, alloc, 0))
            with m.If(pop & (drain != 0)):
                m.d.sync += drain.eq(drain - 1)
        done = Signal()
        m.d.comb += done.eq(busy & scanned & armed & (drain == 0) & (pre == 0))
        with m.If(self.flush):
            m.d.sync += pending.eq(1)
        with m.If(done):
            m.d.sync += busy.eq(0)
        with m.If((~busy | done) & (pending | self.flush)):
            # start a pass; a flush in this very cycle is covered by it
            m.d.sync += [busy.eq(1), pending.eq(0), ptr.eq(0), armed.eq(0)]
        m.d.comb += [
            self.flush_busy.eq(busy | pending),
            self.flush_done.eq(done & ~pending & ~self.flush),
        ]
        return m
