"""CXL.cache device agent (Type 1: the tables live in host memory) and the CXL.cache message layouts.

The six CXL.cache channels of ``/work/shared/design/CXL.md`` (transaction
level: one valid/ready stream per channel, no flits) carry the Structs
below, with the spec's opcode encodings.  :class:`CxlCacheAgent` is a MESI
device cache that serves the datapath's DRAM port (an AXI4 slave, one
64-byte line per beat) from host memory reached through those channels.
See ``docs/cxl-cache.md`` for the state machine and race handling.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cxlnic.hdl.axi import LINE_SHIFT, axi4_master_ports
from cxlnic.hdl.layouts import LINE_BITS, LINE_BYTES
from cxlnic.hdl.util import checked_init

__all__ = [
    "D2HReqOpcode", "D2HRspOpcode", "H2DReqOpcode", "H2DRspOpcode", "GoState", "LineState",
    "D2HReq", "D2HRsp", "D2HData", "H2DReq", "H2DRsp", "H2DData",
    "CxlCacheAgent", "STATS", "ADDR_BITS_HPA", "ID_BITS_CXL",
]

ADDR_BITS_HPA = 46      # Addr[51:6]: a line number of the host physical address space
ID_BITS_CXL = 12        # CQID / UQID


class D2HReqOpcode(enum.Enum, shape=5):
    RD_CURR = 0b00001
    RD_OWN = 0b00010
    RD_SHARED = 0b00011
    RD_ANY = 0b00100
    RD_OWN_NO_DATA = 0b00101
    ITOM_WR = 0b00110
    WR_CUR = 0b00111
    CL_FLUSH = 0b01000
    CLEAN_EVICT = 0b01001
    DIRTY_EVICT = 0b01010
    CLEAN_EVICT_NO_DATA = 0b01011
    WR_INV = 0b01110
    CACHE_FLUSHED = 0b10000


class D2HRspOpcode(enum.Enum, shape=5):
    RSP_S_HIT_SE = 0b00001
    RSP_I_HIT_I = 0b00100
    RSP_I_HIT_SE = 0b00101
    RSP_V_HIT_V = 0b00110
    RSP_S_FWD_M = 0b00111
    RSP_I_FWD_M = 0b01111
    RSP_V_FWD_V = 0b10110


class H2DReqOpcode(enum.Enum, shape=3):
    SNP_DATA = 0b001
    SNP_INV = 0b010
    SNP_CUR = 0b011


class H2DRspOpcode(enum.Enum, shape=4):
    WRITE_PULL = 0b0001
    GO = 0b0100
    GO_WRITE_PULL = 0b0101
    EXT_CMP = 0b0110
    GO_WRITE_PULL_DROP = 0b1000
    FAST_GO_WRITE_PULL = 0b1101
    GO_ERR_WRITE_PULL = 0b1111


class GoState(enum.Enum, shape=4):
    """The MESI state a GO grants, carried in ``H2DRsp.rsp_data[3:0]``."""
    S = 0b0001
    E = 0b0010
    I = 0b0011
    ERR = 0b0100
    M = 0b0110


class LineState(enum.Enum, shape=2):
    """State of a line in the device cache."""
    I = 0
    S = 1
    E = 2
    M = 3


class D2HReq(data.Struct):
    opcode: D2HReqOpcode
    cqid: ID_BITS_CXL
    nt: 1
    addr: ADDR_BITS_HPA


class D2HRsp(data.Struct):
    opcode: D2HRspOpcode
    uqid: ID_BITS_CXL


class D2HData(data.Struct):
    uqid: ID_BITS_CXL
    bogus: 1
    poison: 1
    data: LINE_BITS


class H2DReq(data.Struct):
    opcode: H2DReqOpcode
    addr: ADDR_BITS_HPA
    uqid: ID_BITS_CXL


class H2DRsp(data.Struct):
    opcode: H2DRspOpcode
    rsp_data: ID_BITS_CXL     # UQID for the WritePull family, GoState in [3:0] for GO
    cqid: ID_BITS_CXL


class H2DData(data.Struct):
    cqid: ID_BITS_CXL
    poison: 1
    go_err: 1
    data: LINE_BITS


#: The 32-bit statistics outputs, in order.
STATS = ("hits", "misses", "snoops", "evictions", "bogus", "errors")

_LINE_IDX = 32                   # AXI byte address = relative line << 6, 32-bit line indices
_SLVERR = 2

# Tracker kinds (what the CQID's request is).  _K_RDTRK: a RdShared of a tracked line (no way, no fill).
_K_RDSH, _K_RDCURR, _K_RDOWN, _K_ITOM, _K_DEV, _K_CEV, _K_CEVND, _K_RDTRK = range(8)


def _first(m, bits, name):
    """(any, index of the lowest set bit) of a list of 1-bit values."""
    idx = Signal(range(max(2, len(bits))), name=f"{name}_idx")
    for i in reversed(range(len(bits))):
        with m.If(bits[i]):
            m.d.comb += idx.eq(i)
    anyb = Signal(name=f"{name}_any")
    m.d.comb += anyb.eq(Cat(*bits).any())
    return anyb, idx


def _line_range(name, v):
    if (not isinstance(v, tuple) or len(v) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 1 << _LINE_IDX for x in v)
            or v[0] > v[1]):
        raise ValueError(f"{name} = {v!r}: must be a (lo, hi) range of relative lines")


def _in_range(x, lo, hi):
    """1-bit value: ``lo <= x < hi`` (constant 0 for an empty range)."""
    if hi <= lo:
        return Const(0, 1)
    return ((x >= lo) if lo else 1) & (x < hi)


def _pow2(name, v, lo, hi):
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name} = {v!r}: must be an int")
    if not lo <= v <= hi or v & (v - 1):
        raise ValueError(f"{name} = {v}: must be a power of two in [{lo}, {hi}]")


class CxlCacheAgent(wiring.Component):
    """A MESI device cache in front of host memory, reached through CXL.cache (Type 1 device).

    The AXI4 slave ``s_axi_*`` (the flip of :func:`~cxlnic.hdl.axi.axi4_master_ports`)
    takes single-beat 64-byte reads and writes; byte address = relative line
    << 6, host line = ``host_base`` + relative line.  Reads that hit return
    cached data; read misses issue RdShared (RdAny with ``read_any``), or
    RdCurr for lines in ``nocache`` = (lo, hi) (not allocated).  Writes that
    hit E/M merge into the line (→ M); other writes issue RdOwn and merge on
    fill, except full-line writes (``wstrb`` all ones) which, with
    ``itomwr`` (default), go straight to host memory with ItoMWr (no copy
    kept).  A write that hits S drops the S copy silently first.  Victims:
    M → DirtyEvict, E → CleanEvict (``clean_evict_data``, default) or
    CleanEvictNoData, S → CleanEvictNoData.

    Up to ``trackers`` (≥ 2, default 16) requests are outstanding; the
    tracker number is the CQID and owns a 64-byte read buffer and a 64-byte
    (+ strobes) write/evict buffer.  Requests to a line with a tracker
    outstanding (other than RdCurr after RdCurr) wait, and so do AXI requests
    whose ID has one outstanding in the same direction, so AXI responses of
    one ID stay in order.  A read completes when data and GO have both
    arrived (in either order); the GO state is the installed state.  Snoops
    are answered per CXL.md's table from the line state; a snoop that finds
    the line in a pending evict before its WritePull answers as if the line
    were in the evicted state and marks the evict's data Bogus=1.  A snoop
    waits only while a read to its line has its GO but not yet its data (or
    its fill); it never waits for D2H Req.  Poisoned data, GO-Err data, GO
    state Err and GO_ERR_WritePull are counted in ``errors``, never
    installed, and answered with SLVERR (``rresp``/``bresp`` = 2).

    Tracked region ``track`` = (lo, hi) (relative lines, disjoint from
    ``nocache``): lines the datapath mirrors on chip (CAM rules, action
    table, hash key, bucket cache).  They are never looked up in or
    allocated into the data array (no hits, no evicts); the agent keeps one
    bit per line instead ("the device holds it in S/E"), cleared at reset.
    A read always issues RdShared (also with ``read_any``: the device never
    writes these lines, so it never asks for ownership), returns the host's
    data on R, and sets the bit when the GO is S, E or M and the data is
    clean (otherwise SLVERR, ``errors``, bit unchanged); ``misses`` counts
    these reads.  A write is refused: B = SLVERR, ``errors``, nothing sent.
    Snoops are answered from the bit: set → SnpInv RspIHitSE (bit cleared,
    ``inval`` entry), SnpData RspSHitSE, SnpCur RspVHitV; clear → RspIHitI;
    never data.  A snoop of a tracked line waits while a read of the line
    has its GO but not its R, and while that R is still in the R register,
    so the R of a read always leaves before the ``inval`` entry of a snoop
    that took the line after the read's GO; a read issued after that entry
    goes to the host again and is ordered after the host's write.

    ``inval`` (relative line, 32 bits): one entry for every line a snoop
    takes from the device (S/E/M → I, a pending evict snooped, or a tracked
    line's bit cleared by SnpInv), in snoop order; a full ``inval`` FIFO (4
    entries) holds snoop processing back.  ``hits``, ``misses``, ``snoops``,
    ``evictions``, ``bogus``, ``errors``: 32-bit wrapping counts.
    ``clearing`` is high while the tags and track bits are reset (max(``sets``,
    hi − lo) cycles after reset), with no AXI request or snoop accepted.

    One engine serves every event (a fill, a snoop, a write-pull, a response,
    an AXI request) in 2–4 cycles each; the channel handlers for H2D Rsp and
    H2D Data are always ready.
    """

    @checked_init
    def __init__(self, *, sets: int = 64, ways: int = 4, trackers: int = 16, id_bits: int = 4,
                 host_base: int = 0, nocache: tuple = (0, 0), track: tuple = (0, 0), itomwr: bool = True,
                 read_any: bool = False, clean_evict_data: bool = True):
        _pow2("sets", sets, 2, 1 << 16)
        _pow2("ways", ways, 1, 8)
        if not isinstance(trackers, int) or isinstance(trackers, bool):
            raise TypeError(f"trackers = {trackers!r}: must be an int")
        if not 2 <= trackers <= 1 << ID_BITS_CXL:
            raise ValueError(f"trackers = {trackers}: must be in [2, 4096]")
        if not isinstance(id_bits, int) or not 1 <= id_bits <= 16:
            raise ValueError(f"id_bits = {id_bits!r}: must be an int in [1, 16]")
        if not isinstance(host_base, int) or not 0 <= host_base < 1 << ADDR_BITS_HPA:
            raise ValueError(f"host_base = {host_base!r}: must be a line number in [0, 2**46)")
        _line_range("nocache", nocache)
        _line_range("track", track)
        if nocache[0] < nocache[1] and track[0] < track[1] and nocache[0] < track[1] and track[0] < nocache[1]:
            raise ValueError(f"nocache = {nocache!r} and track = {track!r} overlap")
        self._sets, self._ways, self._trackers, self._id_bits = sets, ways, trackers, id_bits
        self._host_base, self._nocache, self._track = host_base, nocache, track
        self._itomwr, self._read_any, self._clean_evict_data = bool(itomwr), bool(read_any), bool(clean_evict_data)
        sig = {f"s_axi_{n[len('m_axi_'):]}": mem.flip() for n, mem in axi4_master_ports(id_bits).items()}
        sig.update({
            "d2h_req": Out(stream.Signature(D2HReq)),
            "d2h_rsp": Out(stream.Signature(D2HRsp)),
            "d2h_data": Out(stream.Signature(D2HData)),
            "h2d_req": In(stream.Signature(H2DReq)),
            "h2d_rsp": In(stream.Signature(H2DRsp)),
            "h2d_data": In(stream.Signature(H2DData)),
            "inval": Out(stream.Signature(_LINE_IDX)),
            "clearing": Out(1),
        })
        sig.update({s: Out(32) for s in STATS})
        super().__init__(sig)

    sets = property(lambda self: self._sets)
    ways = property(lambda self: self._ways)
    trackers = property(lambda self: self._trackers)
    id_bits = property(lambda self: self._id_bits)
    host_base = property(lambda self: self._host_base)
    nocache = property(lambda self: self._nocache)
    track = property(lambda self: self._track)
    itomwr = property(lambda self: self._itomwr)
    read_any = property(lambda self: self._read_any)
    clean_evict_data = property(lambda self: self._clean_evict_data)

    def elaborate(self, platform):
        m = Module()
        N, W, S = self._trackers, self._ways, self._sets
        sb = (S - 1).bit_length()
        wb = max(1, (W - 1).bit_length())
        tb = _LINE_IDX - sb
        tagl = data.StructLayout({"state": LineState, "tag": tb})
        base = self._host_base
        nc_lo, nc_hi = self._nocache
        tr_lo, tr_hi = self._track
        T = tr_hi - tr_lo                   # tracked lines (0: no tracked region)

        # ---- storage ----
        tag_rd, tag_wr = [], []
        for w in range(W):
            mem = Memory(shape=tagl, depth=S, init=[])
            m.submodules[f"tags{w}"] = mem
            tag_rd.append(mem.read_port())
            tag_wr.append(mem.write_port())
        m.submodules.lines = lines = Memory(shape=LINE_BITS, depth=S * W, init=[])
        line_rd, line_wr = lines.read_port(), lines.write_port()
        m.submodules.rbuf = rbuf = Memory(shape=LINE_BITS, depth=N, init=[])    # data from the host
        rbuf_rd, rbuf_wr = rbuf.read_port(), rbuf.write_port()
        obl = data.StructLayout({"data": LINE_BITS, "strb": LINE_BYTES})
        m.submodules.obuf = obuf = Memory(shape=obl, depth=N, init=[])          # data to the host / to merge
        obuf_rd, obuf_wr = obuf.read_port(), obuf.write_port()
        if T:
            m.submodules.track = track = Memory(shape=1, depth=T, init=[])    # device holds the line in S/E
            trk_rd, trk_wr = track.read_port(), track.write_port()

        def line_addr(set_, way):
            return set_ if W == 1 else Cat(way[:wb], set_)

        # ---- trackers (index = CQID) ----
        def trk(name, shape=1):
            return [Signal(shape, name=f"t{k}_{name}") for k in range(N)]
        active, kind, tline, tway, tid = trk("active"), trk("kind", 3), trk("line", _LINE_IDX), trk("way", wb), \
            trk("id", self._id_bits)
        got_go, go_state, got_data, bad = trk("got_go"), trk("go_state", 4), trk("got_data"), trk("bad")
        pull, drop, uqid, bogus, filled, sent = trk("pull"), trk("drop"), trk("uqid", ID_BITS_CXL), trk("bogus"), \
            trk("filled"), trk("sent")
        is_fill = [(kind[k] == _K_RDSH) | (kind[k] == _K_RDOWN) for k in range(N)]
        is_rdtrk = [(kind[k] == _K_RDTRK) if T else Const(0) for k in range(N)]
        is_rd = [(kind[k] == _K_RDSH) | (kind[k] == _K_RDCURR) | is_rdtrk[k] if T
                 else (kind[k] == _K_RDSH) | (kind[k] == _K_RDCURR) for k in range(N)]
        is_wr = [(kind[k] == _K_RDOWN) | (kind[k] == _K_ITOM) for k in range(N)]
        is_ev = [(kind[k] == _K_DEV) | (kind[k] == _K_CEV) | (kind[k] == _K_CEVND) for k in range(N)]

        stats = {s: Signal(32, name=f"stat_{s}") for s in STATS}
        for s in STATS:
            m.d.comb += getattr(self, s).eq(stats[s])

        # ---- H2D Rsp and H2D Data: always ready, just record ----
        rsp, hd = self.h2d_rsp, self.h2d_data
        m.d.comb += [rsp.ready.eq(1), hd.ready.eq(1)]
        for k in range(N):
            with m.If(rsp.valid & (rsp.payload.cqid == k) & active[k]):
                with m.Switch(rsp.payload.opcode):
                    with m.Case(H2DRspOpcode.GO):
                        m.d.sync += [got_go[k].eq(1), go_state[k].eq(rsp.payload.rsp_data[:4])]
                        with m.If(rsp.payload.rsp_data[:4] == GoState.ERR.value):
                            m.d.sync += bad[k].eq(1)
                    with m.Case(H2DRspOpcode.GO_WRITE_PULL, H2DRspOpcode.FAST_GO_WRITE_PULL,
                                H2DRspOpcode.WRITE_PULL):
                        m.d.sync += [pull[k].eq(1), uqid[k].eq(rsp.payload.rsp_data)]
                    with m.Case(H2DRspOpcode.GO_ERR_WRITE_PULL):
                        m.d.sync += [pull[k].eq(1), uqid[k].eq(rsp.payload.rsp_data), bad[k].eq(1)]
                    with m.Case(H2DRspOpcode.GO_WRITE_PULL_DROP):
                        m.d.sync += drop[k].eq(1)
            with m.If(hd.valid & (hd.payload.cqid == k) & active[k]):
                m.d.sync += got_data[k].eq(1)
                with m.If(hd.payload.poison | hd.payload.go_err):
                    m.d.sync += bad[k].eq(1)
        m.d.comb += [rbuf_wr.addr.eq(hd.payload.cqid), rbuf_wr.data.eq(hd.payload.data), rbuf_wr.en.eq(hd.valid)]

        # An evict the host dropped (GO_WritePull_Drop) or completed without data (GO-I) is done.
        for k in range(N):
            with m.If(active[k] & is_ev[k] & (drop[k] | got_go[k])):
                m.d.sync += active[k].eq(0)

        # ---- output registers ----
        dreq, drsp, ddat = self.d2h_req, self.d2h_rsp, self.d2h_data
        for s in (dreq, drsp, ddat):
            with m.If(s.ready):
                m.d.sync += s.valid.eq(0)
        ax = self
        with m.If(ax.s_axi_rready):
            m.d.sync += ax.s_axi_rvalid.eq(0)
        with m.If(ax.s_axi_bready):
            m.d.sync += ax.s_axi_bvalid.eq(0)
        m.d.comb += ax.s_axi_rlast.eq(1)

        m.submodules.inval_fifo = ififo = fifo.SyncFIFOBuffered(width=_LINE_IDX, depth=4)
        m.d.comb += [self.inval.valid.eq(ififo.r_rdy), self.inval.payload.eq(ififo.r_data),
                     ififo.r_en.eq(self.inval.ready)]

        # ---- tracker status vectors ----
        fill_rdy = [active[k] & is_fill[k] & got_go[k] & got_data[k] & ~filled[k] for k in range(N)]
        pull_rdy = [active[k] & (is_ev[k] | (kind[k] == _K_ITOM)) & pull[k] & ~sent[k] & ~drop[k]
                    for k in range(N)]
        resp_rdy = [active[k] & ((is_fill[k] & filled[k]) | ((kind[k] == _K_RDCURR) & got_data[k])
                                 | ((kind[k] == _K_ITOM) & sent[k]))
                    & Mux(is_rd[k], ~ax.s_axi_rvalid, ~ax.s_axi_bvalid) for k in range(N)]
        if T:
            resp_rdy = [r | (active[k] & is_rdtrk[k] & got_go[k] & got_data[k] & ~ax.s_axi_rvalid)
                        for k, r in enumerate(resp_rdy)]
        any_fill, fill_k = _first(m, fill_rdy, "fill")
        any_pull, pull_k = _first(m, pull_rdy, "pull")
        any_resp, resp_k = _first(m, resp_rdy, "resp")
        free_a_any, free_a = _first(m, [~a for a in active], "free_a")

        # ---- snoop intake ----
        sp = self.h2d_req.payload
        snp_rel = Signal(ADDR_BITS_HPA + 1)
        m.d.comb += snp_rel.eq(sp.addr - base)
        snp_in = Signal()
        m.d.comb += snp_in.eq(((sp.addr >= base) if base else 1) & (snp_rel < (1 << _LINE_IDX)))
        snp_block = Signal()
        # a snoop waits while a read of its line has its GO but not yet its fill (cached lines) or its R
        # (tracked lines: the bit is set at the R), and while the R of a tracked read of its line is still
        # held in the R register, so that a tracked line's R always leaves before the snoop's inval entry
        r_trk = Signal()                    # the R register holds a tracked read's beat ...
        r_line = Signal(_LINE_IDX)          # ... of this line
        blk = [active[k] & is_fill[k] & got_go[k] & ~filled[k] & (tline[k] == snp_rel[:_LINE_IDX]) for k in range(N)]
        if T:
            blk += [active[k] & is_rdtrk[k] & got_go[k] & (tline[k] == snp_rel[:_LINE_IDX]) for k in range(N)]
            blk.append(ax.s_axi_rvalid & r_trk & (r_line == snp_rel[:_LINE_IDX]))
        m.d.comb += snp_block.eq(Cat(*blk).any() & snp_in)

        # ---- AXI request intake ----
        ar_line = Signal(_LINE_IDX)
        aw_line = Signal(_LINE_IDX)
        m.d.comb += [ar_line.eq(ax.s_axi_araddr[LINE_SHIFT:]), aw_line.eq(ax.s_axi_awaddr[LINE_SHIFT:])]
        ar_nc = Signal()
        m.d.comb += ar_nc.eq(((ar_line >= nc_lo) if nc_lo else 1) & (ar_line < nc_hi) if nc_hi > nc_lo else 0)
        ar_busy = Signal()
        aw_busy = Signal()
        m.d.comb += [
            ar_busy.eq(Cat(*[active[k] & (((tline[k] == ar_line) & ~((kind[k] == _K_RDCURR) & ar_nc))
                                         | (is_rd[k] & (tid[k] == ax.s_axi_arid))) for k in range(N)]).any()),
            aw_busy.eq(Cat(*[active[k] & ((tline[k] == aw_line) | (is_wr[k] & (tid[k] == ax.s_axi_awid)))
                             for k in range(N)]).any()),
        ]
        res_ok = free_a_any & ~dreq.valid
        ar_go = Signal()
        aw_go = Signal()
        m.d.comb += [ar_go.eq(ax.s_axi_arvalid & ~ar_busy & res_ok & ~ax.s_axi_rvalid),
                     aw_go.eq(ax.s_axi_awvalid & ax.s_axi_wvalid & ~aw_busy & res_ok & ~ax.s_axi_bvalid)]
        prefer_w = Signal()

        # ---- engine registers ----
        cur = Signal(range(max(2, N)))
        req_wr = Signal()
        req_line = Signal(_LINE_IDX)
        req_id = Signal(self._id_bits)
        req_nc = Signal()
        ta = Signal(range(max(2, N)))
        tb_ = Signal(range(max(2, N)))
        req_set, req_tag = req_line[:sb], req_line[sb:]
        hit = Signal()
        hit_way = Signal(wb)
        hit_state = Signal(LineState)
        vic_way = Signal(wb)
        vic_state = Signal(LineState)
        vic_tag = Signal(tb)
        rr = Signal(wb)
        snp_op = Signal(H2DReqOpcode, init=H2DReqOpcode.SNP_DATA)
        snp_uqid = Signal(ID_BITS_CXL)
        snp_line = Signal(_LINE_IDX)
        snp_ok = Signal()
        ev_hit = Signal()
        ev_k = Signal(range(max(2, N)))
        clr = Signal(range(max(S, T) + 1))
        # a second free tracker, for the victim's evict (checked once the victim is known)
        free_b_any, free_b = _first(m, [~active[k] & (ta != k) for k in range(N)], "free_b")
        any_ev, ev_idx = _first(m, [active[k] & is_ev[k] & ~pull[k] & ~drop[k] & ~got_go[k] & (tline[k] == snp_line)
                                    for k in range(N)], "snpev")

        wdata = Signal(LINE_BITS)
        wstrb = Signal(LINE_BYTES)
        m.d.comb += [wdata.eq(ax.s_axi_wdata), wstrb.eq(ax.s_axi_wstrb)]
        full = Signal()
        m.d.comb += full.eq(wstrb.all())

        # tag lookup (registered: data one cycle after the address)
        tag_addr = Signal(sb)
        m.d.comb += [p.addr.eq(tag_addr) for p in tag_rd]
        tags = [p.data for p in tag_rd]
        look_tag = Signal(tb)          # the tag being looked up in the cycle the tag data is valid
        way_hit = [Signal(name=f"way_hit{w}") for w in range(W)]
        m.d.comb += [way_hit[w].eq((tags[w].state != LineState.I) & (tags[w].tag == look_tag)) for w in range(W)]
        any_hit, hit_w = _first(m, way_hit, "hitw")
        hit_st = Signal(LineState)
        m.d.comb += hit_st.eq(Array([t.state.as_value() for t in tags])[hit_w])

        # reserved ways of req_set (a fill outstanding to them)
        reserved = [Signal(name=f"resv{w}") for w in range(W)]
        m.d.comb += [reserved[w].eq(Cat(*[active[k] & is_fill[k] & ~filled[k] & (tline[k][:sb] == req_set)
                                          & (tway[k] == w) for k in range(N)]).any()) for w in range(W)]
        cand = [~reserved[w] for w in range(W)]
        inv_cand = [cand[w] & (tags[w].state == LineState.I) for w in range(W)]
        any_inv, inv_w = _first(m, inv_cand, "invw")
        any_cand = Signal()
        m.d.comb += any_cand.eq(Cat(*cand).any())
        rot_w = Signal(wb)
        with m.Switch(rr):
            for r in range(W):
                with m.Case(r):
                    for off in reversed(range(W)):
                        with m.If(cand[(r + off) % W]):
                            m.d.comb += rot_w.eq((r + off) % W)
        pick_w = Signal(wb)
        m.d.comb += pick_w.eq(Mux(any_inv, inv_w, rot_w))
        pick_st = Signal(LineState)
        pick_tag = Signal(tb)
        m.d.comb += [pick_st.eq(Array([t.state.as_value() for t in tags])[pick_w]),
                     pick_tag.eq(Array([t.tag for t in tags])[pick_w])]

        # default read addresses
        line_rd_set = Signal(sb)
        line_rd_way = Signal(wb)
        m.d.comb += line_rd.addr.eq(line_addr(line_rd_set, line_rd_way))
        buf_addr = Signal(range(max(2, N)))
        m.d.comb += [rbuf_rd.addr.eq(buf_addr), obuf_rd.addr.eq(buf_addr)]
        obuf_rdata = obuf_rd.data

        # merged write data (for write hits: over line_rd; for RdOwn fills: over rbuf)
        merge_base = Signal(LINE_BITS)
        merge_data = Signal(LINE_BITS)
        merge_strb = Signal(LINE_BYTES)
        merge_new = Signal(LINE_BITS)
        m.d.comb += merge_new.eq(Cat(*[Mux(merge_strb[b], merge_data[8 * b:8 * b + 8], merge_base[8 * b:8 * b + 8])
                                       for b in range(LINE_BYTES)]))

        def tag_write(way, set_, state, tag):
            for w in range(W):
                with m.If(way == w):
                    m.d.comb += [tag_wr[w].addr.eq(set_), tag_wr[w].data.state.eq(state),
                                 tag_wr[w].data.tag.eq(tag), tag_wr[w].en.eq(1)]

        def alloc(k, knd, line, way, id_):
            for j in range(N):
                with m.If(k == j):
                    m.d.sync += [active[j].eq(1), kind[j].eq(knd), tline[j].eq(line), tway[j].eq(way), tid[j].eq(id_),
                                 got_go[j].eq(0), got_data[j].eq(0), bad[j].eq(0), pull[j].eq(0), drop[j].eq(0),
                                 bogus[j].eq(0), filled[j].eq(0), sent[j].eq(0), go_state[j].eq(0)]

        def set_flag(lst, k, v=1):
            for j in range(N):
                with m.If(k == j):
                    m.d.sync += lst[j].eq(v)

        def send_req(op, k, line):
            m.d.sync += [dreq.valid.eq(1), dreq.payload.opcode.eq(op), dreq.payload.cqid.eq(k),
                         dreq.payload.nt.eq(0), dreq.payload.addr.eq(line + base)]

        def bump(name):
            m.d.sync += stats[name].eq(stats[name] + 1)

        def after_trk(cond):
            """The first branch after a tracked-line branch (only generated with a tracked region)."""
            return m.Elif(cond) if T else m.If(cond)

        A = Array
        m.d.comb += self.clearing.eq(0)
        with m.FSM(name="engine"):
            with m.State("CLEAR"):
                m.d.comb += self.clearing.eq(1)
                for w in range(W):
                    m.d.comb += [tag_wr[w].addr.eq(clr), tag_wr[w].data.eq(0),
                                 tag_wr[w].en.eq(1 if T <= S else clr < S)]
                if T:
                    m.d.comb += [trk_wr.addr.eq(clr), trk_wr.data.eq(0), trk_wr.en.eq(1 if T >= S else clr < T)]
                m.d.sync += clr.eq(clr + 1)
                with m.If(clr == max(S, T) - 1):
                    m.next = "IDLE"

            with m.State("IDLE"):
                with m.If(any_fill):
                    m.d.sync += cur.eq(fill_k)
                    m.d.comb += buf_addr.eq(fill_k)
                    m.next = "FILL"
                with m.Elif(self.h2d_req.valid & ~snp_block & ~drsp.valid & ~ddat.valid & ififo.w_rdy):
                    m.d.comb += [self.h2d_req.ready.eq(1), tag_addr.eq(snp_rel[:sb])]
                    m.d.sync += [snp_op.eq(sp.opcode), snp_uqid.eq(sp.uqid), snp_line.eq(snp_rel[:_LINE_IDX]),
                                 snp_ok.eq(snp_in)]
                    m.next = "SNP1"
                with m.Elif(any_pull & ~ddat.valid):
                    m.d.sync += cur.eq(pull_k)
                    m.d.comb += buf_addr.eq(pull_k)
                    m.next = "PULL"
                with m.Elif(any_resp):
                    m.d.sync += cur.eq(resp_k)
                    m.d.comb += buf_addr.eq(resp_k)
                    m.next = "RESP"
                with m.Elif(ar_go | aw_go):
                    use_w = Signal()
                    m.d.comb += use_w.eq(aw_go & (prefer_w | ~ar_go))
                    m.d.sync += [prefer_w.eq(~use_w), req_wr.eq(use_w), ta.eq(free_a)]
                    with m.If(use_w):
                        m.d.comb += tag_addr.eq(aw_line[:sb])
                        m.d.sync += [req_line.eq(aw_line), req_id.eq(ax.s_axi_awid), req_nc.eq(0)]
                    with m.Else():
                        m.d.comb += tag_addr.eq(ar_line[:sb])
                        m.d.sync += [req_line.eq(ar_line), req_id.eq(ax.s_axi_arid), req_nc.eq(ar_nc)]
                    m.next = "REQ"

            # -- a fill: data and GO are both in --
            with m.State("FILL"):
                k = cur
                gs = Signal(4)
                fl = Signal(_LINE_IDX)
                fway = Signal(wb)
                m.d.comb += [gs.eq(A(go_state)[k]), fl.eq(A(tline)[k]), fway.eq(A(tway)[k])]
                rdown = A(kind)[k] == _K_RDOWN
                good = Signal()
                own = (gs == GoState.E.value) | (gs == GoState.M.value)
                m.d.comb += good.eq(~A(bad)[k] & Mux(rdown, own, own | (gs == GoState.S.value)))
                m.d.comb += [merge_base.eq(rbuf_rd.data), merge_data.eq(obuf_rdata.data),
                             merge_strb.eq(Mux(rdown, obuf_rdata.strb, 0))]
                st = Signal(LineState)
                with m.If(rdown | (gs == GoState.M.value)):
                    m.d.comb += st.eq(LineState.M)
                with m.Elif(gs == GoState.E.value):
                    m.d.comb += st.eq(LineState.E)
                with m.Else():
                    m.d.comb += st.eq(LineState.S)
                with m.If(good):
                    m.d.comb += [line_wr.addr.eq(line_addr(fl[:sb], fway)), line_wr.data.eq(merge_new),
                                 line_wr.en.eq(1)]
                    tag_write(fway, fl[:sb], st, fl[sb:])
                with m.Elif(A(bad)[k] | rdown | (gs != GoState.I.value)):
                    set_flag(bad, k)
                    bump("errors")
                set_flag(filled, k)
                m.next = "IDLE"

            # -- a snoop --
            with m.State("SNP1"):
                m.d.comb += look_tag.eq(snp_line[sb:])
                m.d.sync += [hit.eq(any_hit & snp_ok), hit_way.eq(hit_w), hit_state.eq(hit_st),
                             ev_hit.eq(any_ev & snp_ok), ev_k.eq(ev_idx)]
                m.d.comb += [line_rd_set.eq(snp_line[:sb]), line_rd_way.eq(hit_w), buf_addr.eq(ev_idx)]
                if T:
                    m.d.comb += trk_rd.addr.eq(snp_line - tr_lo)
                m.next = "SNP2"
            with m.State("SNP2"):
                op = Signal(D2HRspOpcode, init=D2HRspOpcode.RSP_I_HIT_I)
                fwd = Signal()
                fwd_data = Signal(LINE_BITS)
                new = Signal(LineState)
                lost = Signal()
                m.d.comb += [op.eq(D2HRspOpcode.RSP_I_HIT_I), fwd_data.eq(line_rd.data)]
                if T:
                    snp_trk = Signal()
                    m.d.comb += snp_trk.eq(snp_ok & _in_range(snp_line, tr_lo, tr_hi))
                    with m.If(snp_trk):
                        # a tracked line: never in the tags, never forwarded; the bit says S/E (1) or I (0)
                        with m.If(trk_rd.data):
                            with m.Switch(snp_op):
                                with m.Case(H2DReqOpcode.SNP_INV):
                                    m.d.comb += [op.eq(D2HRspOpcode.RSP_I_HIT_SE), lost.eq(1),
                                                 trk_wr.addr.eq(snp_line - tr_lo), trk_wr.data.eq(0),
                                                 trk_wr.en.eq(1)]
                                with m.Case(H2DReqOpcode.SNP_DATA):
                                    m.d.comb += op.eq(D2HRspOpcode.RSP_S_HIT_SE)
                                with m.Default():
                                    m.d.comb += op.eq(D2HRspOpcode.RSP_V_HIT_V)
                with after_trk(hit):
                    m.d.comb += new.eq(hit_state)
                    with m.If(hit_state == LineState.M):
                        m.d.comb += fwd.eq(1)
                        with m.Switch(snp_op):
                            with m.Case(H2DReqOpcode.SNP_INV):
                                m.d.comb += [op.eq(D2HRspOpcode.RSP_I_FWD_M), new.eq(LineState.I)]
                            with m.Case(H2DReqOpcode.SNP_DATA):
                                m.d.comb += [op.eq(D2HRspOpcode.RSP_S_FWD_M), new.eq(LineState.S)]
                            with m.Default():
                                m.d.comb += op.eq(D2HRspOpcode.RSP_V_FWD_V)
                    with m.Else():
                        with m.Switch(snp_op):
                            with m.Case(H2DReqOpcode.SNP_INV):
                                m.d.comb += [op.eq(D2HRspOpcode.RSP_I_HIT_SE), new.eq(LineState.I)]
                            with m.Case(H2DReqOpcode.SNP_DATA):
                                m.d.comb += [op.eq(D2HRspOpcode.RSP_S_HIT_SE), new.eq(LineState.S)]
                            with m.Default():
                                m.d.comb += op.eq(D2HRspOpcode.RSP_V_HIT_V)
                    tag_write(hit_way, snp_line[:sb], new, snp_line[sb:])
                    m.d.comb += lost.eq(new == LineState.I)
                with m.Elif(ev_hit):
                    # the line is on its way out: answer as I after giving up the evicted state's data
                    with m.If(A(kind)[ev_k] == _K_DEV):
                        m.d.comb += [op.eq(D2HRspOpcode.RSP_I_FWD_M), fwd.eq(1), fwd_data.eq(obuf_rdata.data)]
                    with m.Else():
                        m.d.comb += op.eq(D2HRspOpcode.RSP_I_HIT_SE)
                    set_flag(bogus, ev_k)
                    bump("bogus")
                    m.d.comb += lost.eq(1)
                m.d.sync += [drsp.valid.eq(1), drsp.payload.opcode.eq(op), drsp.payload.uqid.eq(snp_uqid)]
                with m.If(fwd):
                    m.d.sync += [ddat.valid.eq(1), ddat.payload.uqid.eq(snp_uqid), ddat.payload.bogus.eq(0),
                                 ddat.payload.poison.eq(0), ddat.payload.data.eq(fwd_data)]
                m.d.comb += [ififo.w_en.eq(lost), ififo.w_data.eq(snp_line)]
                bump("snoops")
                m.next = "IDLE"

            # -- a write-pull: send the evict's / ItoMWr's data --
            with m.State("PULL"):
                k = cur
                m.d.sync += [ddat.valid.eq(1), ddat.payload.uqid.eq(A(uqid)[k]), ddat.payload.bogus.eq(A(bogus)[k]),
                             ddat.payload.poison.eq(0), ddat.payload.data.eq(obuf_rdata.data)]
                with m.If(A(bad)[k]):
                    bump("errors")
                with m.If(A(kind)[k] == _K_ITOM):
                    set_flag(sent, k)
                with m.Else():
                    set_flag(active, k, 0)
                m.next = "IDLE"

            # -- an AXI response of a completed request --
            with m.State("RESP"):
                k = cur
                b = A(bad)[k]
                if T:
                    # a tracked read is good with GO-S/E/M and clean data; GO-I is an error too (nothing granted)
                    rdtrk = A(is_rdtrk)[k]
                    gs = A(go_state)[k]
                    b = Signal()
                    m.d.comb += b.eq(A(bad)[k] | (rdtrk & (gs != GoState.S.value) & (gs != GoState.E.value)
                                                  & (gs != GoState.M.value)))
                with m.If(A(is_rd)[k]):
                    m.d.sync += [ax.s_axi_rvalid.eq(1), ax.s_axi_rdata.eq(rbuf_rd.data), ax.s_axi_rid.eq(A(tid)[k]),
                                 ax.s_axi_rresp.eq(Mux(b, _SLVERR, 0))]
                    uncounted = A(kind)[k] == _K_RDCURR      # (a cached read counted its error at the fill)
                    if T:
                        uncounted = uncounted | rdtrk
                    with m.If(uncounted & b):
                        bump("errors")
                    if T:
                        m.d.sync += [r_trk.eq(rdtrk), r_line.eq(A(tline)[k])]
                        with m.If(rdtrk & ~b):
                            m.d.comb += [trk_wr.addr.eq(A(tline)[k] - tr_lo), trk_wr.data.eq(1), trk_wr.en.eq(1)]
                with m.Else():
                    m.d.sync += [ax.s_axi_bvalid.eq(1), ax.s_axi_bid.eq(A(tid)[k]),
                                 ax.s_axi_bresp.eq(Mux(b, _SLVERR, 0))]
                set_flag(active, k, 0)
                m.next = "IDLE"

            # -- an AXI request: tags are in --
            with m.State("REQ"):
                m.d.comb += look_tag.eq(req_tag)
                m.d.sync += [hit_way.eq(hit_w), hit_state.eq(hit_st), vic_way.eq(pick_w), vic_state.eq(pick_st),
                             vic_tag.eq(pick_tag)]
                m.d.comb += line_rd_set.eq(req_set)
                if T:
                    req_trk = Signal()
                    m.d.comb += req_trk.eq(_in_range(req_line, tr_lo, tr_hi))
                with m.If(~req_wr):
                    if T:
                        with m.If(req_trk):    # tracked: never cached, RdShared, the bit is set at the R
                            m.d.comb += ax.s_axi_arready.eq(1)
                            alloc(ta, _K_RDTRK, req_line, 0, req_id)
                            send_req(D2HReqOpcode.RD_SHARED, ta, req_line)
                            bump("misses")
                            m.next = "IDLE"
                    with after_trk(any_hit):
                        m.d.comb += [ax.s_axi_arready.eq(1), line_rd_way.eq(hit_w)]
                        bump("hits")
                        m.next = "HIT_R"
                    with m.Elif(req_nc):
                        m.d.comb += ax.s_axi_arready.eq(1)
                        alloc(ta, _K_RDCURR, req_line, 0, req_id)
                        send_req(D2HReqOpcode.RD_CURR, ta, req_line)
                        bump("misses")
                        m.next = "IDLE"
                    with m.Elif(any_cand & ((pick_st == LineState.I) | free_b_any)):
                        m.d.comb += [ax.s_axi_arready.eq(1), line_rd_way.eq(pick_w)]
                        m.d.sync += [rr.eq(rr + 1), tb_.eq(free_b)]
                        bump("misses")
                        with m.If(pick_st != LineState.I):
                            m.next = "EVICT"
                        with m.Else():
                            m.next = "ALLOC"
                    with m.Else():
                        m.next = "IDLE"         # no way free of a fill, or no tracker for the evict: retry
                with m.Else():
                    if T:
                        with m.If(req_trk):    # the device never writes a tracked line
                            m.d.comb += [ax.s_axi_awready.eq(1), ax.s_axi_wready.eq(1)]
                            m.d.sync += [ax.s_axi_bvalid.eq(1), ax.s_axi_bid.eq(req_id), ax.s_axi_bresp.eq(_SLVERR)]
                            bump("errors")
                            m.next = "IDLE"
                    with after_trk(any_hit & ((hit_st == LineState.E) | (hit_st == LineState.M))):
                        m.d.comb += line_rd_way.eq(hit_w)
                        bump("hits")
                        m.next = "HIT_W"
                    with m.Elif(full & self._itomwr):
                        with m.If(any_hit):      # S: drop our copy, the host gets the whole line
                            tag_write(hit_w, req_set, LineState.I, req_tag)
                        m.d.comb += [ax.s_axi_awready.eq(1), ax.s_axi_wready.eq(1), obuf_wr.addr.eq(ta),
                                     obuf_wr.data.eq(Cat(wdata, wstrb)), obuf_wr.en.eq(1)]
                        alloc(ta, _K_ITOM, req_line, 0, req_id)
                        send_req(D2HReqOpcode.ITOM_WR, ta, req_line)
                        bump("misses")
                        m.next = "IDLE"
                    with m.Elif(any_hit):        # S: drop it silently and RdOwn into the same way
                        m.d.sync += [vic_way.eq(hit_w), vic_state.eq(LineState.I)]
                        bump("misses")
                        m.next = "ALLOC"
                    with m.Elif(any_cand & ((pick_st == LineState.I) | free_b_any)):
                        m.d.comb += line_rd_way.eq(pick_w)
                        m.d.sync += [rr.eq(rr + 1), tb_.eq(free_b)]
                        bump("misses")
                        with m.If(pick_st != LineState.I):
                            m.next = "EVICT"
                        with m.Else():
                            m.next = "ALLOC"
                    with m.Else():
                        m.next = "IDLE"

            with m.State("HIT_R"):
                m.d.sync += [ax.s_axi_rvalid.eq(1), ax.s_axi_rdata.eq(line_rd.data), ax.s_axi_rid.eq(req_id),
                             ax.s_axi_rresp.eq(0)]
                if T:
                    m.d.sync += r_trk.eq(0)
                m.next = "IDLE"

            with m.State("HIT_W"):
                m.d.comb += [merge_base.eq(line_rd.data), merge_data.eq(wdata), merge_strb.eq(wstrb),
                             line_wr.addr.eq(line_addr(req_set, hit_way)), line_wr.data.eq(merge_new),
                             line_wr.en.eq(1), ax.s_axi_awready.eq(1), ax.s_axi_wready.eq(1)]
                tag_write(hit_way, req_set, LineState.M, req_tag)
                m.d.sync += [ax.s_axi_bvalid.eq(1), ax.s_axi_bid.eq(req_id), ax.s_axi_bresp.eq(0)]
                m.next = "IDLE"

            with m.State("EVICT"):
                vline = Cat(req_set, vic_tag)
                m.d.comb += [obuf_wr.addr.eq(tb_), obuf_wr.en.eq(1),
                             obuf_wr.data.eq(Cat(line_rd.data, Const((1 << LINE_BYTES) - 1, LINE_BYTES)))]
                with m.If(vic_state == LineState.M):
                    alloc(tb_, _K_DEV, vline, vic_way, 0)
                    send_req(D2HReqOpcode.DIRTY_EVICT, tb_, vline)
                with m.Elif((vic_state == LineState.E) & self._clean_evict_data):
                    alloc(tb_, _K_CEV, vline, vic_way, 0)
                    send_req(D2HReqOpcode.CLEAN_EVICT, tb_, vline)
                with m.Else():
                    alloc(tb_, _K_CEVND, vline, vic_way, 0)
                    send_req(D2HReqOpcode.CLEAN_EVICT_NO_DATA, tb_, vline)
                tag_write(vic_way, req_set, LineState.I, req_tag)
                bump("evictions")
                m.next = "ALLOC"

            with m.State("ALLOC"):
                with m.If(~dreq.valid):
                    tag_write(vic_way, req_set, LineState.I, req_tag)
                    with m.If(req_wr):
                        m.d.comb += [ax.s_axi_awready.eq(1), ax.s_axi_wready.eq(1), obuf_wr.addr.eq(ta),
                                     obuf_wr.data.eq(Cat(wdata, wstrb)), obuf_wr.en.eq(1)]
                        alloc(ta, _K_RDOWN, req_line, vic_way, req_id)
                        send_req(D2HReqOpcode.RD_OWN, ta, req_line)
                    with m.Else():
                        alloc(ta, _K_RDSH, req_line, vic_way, req_id)
                        send_req(D2HReqOpcode.RD_ANY if self._read_any else D2HReqOpcode.RD_SHARED, ta, req_line)
                    m.next = "IDLE"
        return m
