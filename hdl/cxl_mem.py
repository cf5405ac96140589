"""CXL.mem subordinate (device DCOH for Type 2/3 memory) with an HDM-DB snoop filter.

The message layouts and opcodes of every CXL.mem channel (the subset and the
encodings of ``CXL.md``), and :class:`CxlMemSubordinate`, the block that
serves them over a line-granular backend (the SmartNIC's :class:`Datapath`
``mw``/``mw_done`` write port plus a line-read port).  ``docs/cxl-mem.md``
describes the ports, the ordering and visibility contract, and the tests.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from cxlnic.hdl.layouts import LINE_BITS, LINE_BYTES
from cxlnic.hdl.util import checked_init

__all__ = [
    "ADDR_BITS", "ReqOpcode", "RwdOpcode", "SnpType", "MetaField", "MetaValue", "NdrOpcode", "DrsOpcode",
    "BISnpOpcode", "BIRspOpcode", "M2SReq", "M2SRwD", "M2SBIRsp", "S2MNDR", "S2MDRS", "S2MBISnp",
    "MemWrite", "MemRead", "MemReadData", "DevWrite", "CXL_MEM_STATS", "CxlMemStats", "CxlMemSubordinate",
]

#: Addr carries HPA[51:6]: a 64-byte line number.
ADDR_BITS = 46


# ---------------------------------------------------------------------------------------- encodings (CXL.md)

class ReqOpcode(enum.Enum, shape=4):
    """M2S Req MemOpcode."""
    MEM_INV = 0b0000
    MEM_RD = 0b0001
    MEM_RD_DATA = 0b0010
    MEM_RD_FWD = 0b0011
    MEM_WR_FWD = 0b0100
    MEM_SPEC_RD = 0b1000       # no completion; may be dropped
    MEM_INV_NT = 0b1001
    MEM_CLN_EVCT = 0b1010


class RwdOpcode(enum.Enum, shape=4):
    """M2S RwD MemOpcode."""
    MEM_WR = 0b0001
    MEM_WR_PTL = 0b0010
    BI_CONFLICT = 0b0100


class SnpType(enum.Enum, shape=3):
    NO_OP = 0b000
    SNP_DATA = 0b001
    SNP_CUR = 0b010
    SNP_INV = 0b011


class MetaField(enum.Enum, shape=2):
    META0_STATE = 0b00
    NO_OP = 0b11


class MetaValue(enum.Enum, shape=2):
    """The host's resulting cache state."""
    I = 0b00      # noqa: E741
    A = 0b10
    S = 0b11


class NdrOpcode(enum.Enum, shape=3):
    CMP = 0b000
    CMP_S = 0b001
    CMP_E = 0b010
    CMP_M = 0b011
    BI_CONFLICT_ACK = 0b100


class DrsOpcode(enum.Enum, shape=3):
    MEM_DATA = 0b000
    MEM_DATA_NXM = 0b001


class BISnpOpcode(enum.Enum, shape=4):
    CUR = 0b0000
    DATA = 0b0001
    INV = 0b0010


class BIRspOpcode(enum.Enum, shape=4):
    I = 0b0000    # noqa: E741
    S = 0b0001
    E = 0b0010


# ---------------------------------------------------------------------------------------- message layouts

class M2SReq(data.Struct):
    opcode: ReqOpcode
    snp_type: SnpType
    meta_field: MetaField
    meta_value: MetaValue
    tag: 16
    addr: ADDR_BITS
    ld_id: 4
    tc: 2


class M2SRwD(data.Struct):
    """Req fields + Poison + the 64-bit byte-enable trailer (MemWrPtl) + one line of data."""
    opcode: RwdOpcode
    snp_type: SnpType
    meta_field: MetaField
    meta_value: MetaValue
    tag: 16
    addr: ADDR_BITS
    ld_id: 4
    tc: 2
    poison: 1
    byte_enable: LINE_BYTES
    data: LINE_BITS


class M2SBIRsp(data.Struct):
    opcode: BIRspOpcode
    bi_id: 12
    bi_tag: 12
    low_addr: 2


class S2MNDR(data.Struct):
    opcode: NdrOpcode
    meta_field: MetaField
    meta_value: MetaValue
    tag: 16
    ld_id: 4
    dev_load: 2


class S2MDRS(data.Struct):
    opcode: DrsOpcode
    meta_field: MetaField
    meta_value: MetaValue
    tag: 16
    ld_id: 4
    dev_load: 2
    poison: 1
    data: LINE_BITS


class S2MBISnp(data.Struct):
    opcode: BISnpOpcode
    bi_id: 12
    bi_tag: 12
    addr: ADDR_BITS


# ---------------------------------------------------------------------------------------- backend layouts

#: A whole-line write to the backend (device line index).  ``hdl/datapath.py`` uses these three
#: layouts for its ``mw``/``mr``/``mr_data`` ports, so the subordinate connects to it directly.
MemWrite = data.StructLayout({"addr": 32, "data": LINE_BITS})
MemRead = data.StructLayout({"addr": 32})
MemReadData = data.StructLayout({"data": LINE_BITS})
DevWrite = data.StructLayout({"addr": 32})

#: 32-bit running statistics, in the order of the ``stats`` port.
CXL_MEM_STATS = (
    "req", "rwd", "reads", "writes", "partials", "unmapped", "illegal", "poison_writes", "poison_reads",
    "poison_overflow", "spec_dropped", "fwd_ignored", "conflicts", "bisnp", "birsp", "birsp_errors",
    "bi_retries", "victims", "dev_grants",
)
CxlMemStats = data.StructLayout({n: 32 for n in CXL_MEM_STATS})

# the request held in the decode stage (Req and RwD in one shape)
_OP = data.StructLayout({"rwd": 1, "opcode": 4, "snp": 3, "mf": 2, "mv": 2, "tag": 16, "addr": ADDR_BITS,
                         "ld_id": 4, "poison": 1, "be": LINE_BYTES, "data": LINE_BITS})
# what retirement needs of one in-flight request
_ENT = data.StructLayout({"ndr": 1, "ndr_op": 3, "drs": 1, "nxm": 1, "poison": 1, "mf": 2, "mv": 2, "tag": 16,
                          "ld_id": 4, "need_rd": 1, "need_wd": 1, "merge": 1})

# BI engine states
_IDLE, _CHECK, _SNOOP, _WAIT, _GRANT = range(5)


def _any(bits):
    bits = list(bits)
    return Cat(*bits).any() if bits else Const(0)


def _popcount(bits):
    bits = [b for b in bits]
    while len(bits) > 1:
        nxt = [bits[i] + bits[i + 1] for i in range(0, len(bits) - 1, 2)]
        if len(bits) % 2:
            nxt.append(bits[-1])
        bits = nxt
    return bits[0]


def _first(m, bits, name):
    """Index of the lowest set bit of ``bits`` (priority encoder); 0 when none."""
    idx = Signal(range(max(2, len(bits))), name=name)
    for i in reversed(range(len(bits))):
        with m.If(bits[i]):
            m.d.comb += idx.eq(i)
    return idx


class CxlMemSubordinate(wiring.Component):
    """CXL.mem subordinate: device DCOH for host-managed device memory (HDM-DB), one request per cycle.

    Channels (one ``stream.Signature`` per CXL.mem message class): ``m2s_req``
    (:class:`M2SReq`), ``m2s_rwd`` (:class:`M2SRwD`), ``m2s_birsp``
    (:class:`M2SBIRsp`) in; ``s2m_ndr`` (:class:`S2MNDR`), ``s2m_drs``
    (:class:`S2MDRS`), ``s2m_bisnp`` (:class:`S2MBISnp`) out.

    HDM decoder: ``hdm_base``/``hdm_size`` (64-byte lines; ``hdm_size`` ≤ 2**32);
    device line = HPA line − ``hdm_base``.

    Backend (what the SmartNIC datapath provides):

    * ``mw`` (:data:`MemWrite`) whole-line writes; ``mw_done`` pulses once per accepted
      write, in order, when it is visible (``mw_done_addr`` is not needed).
    * ``mr`` (:data:`MemRead`) line reads, answered in order on ``mr_data``; the backend
      orders a read after every write accepted before it.
    * ``dev_wr`` (:data:`DevWrite`): the device wants to write a line; ``dev_wr_ok`` grants
      it (handshake) when the host holds no copy (back-invalidation done) and no host
      request to the line is in flight; host requests accepted later are ordered after the
      device's write if the backend orders that write before any later ``mr``/``mw``.

    Guarantees: requests are decoded in acceptance order (RwD and Req alternate) and
    completed (NDR/DRS) in that order; a request never passes an earlier one to the same
    line (reads are issued after earlier writes; a write waits for earlier reads of its
    line to return; a partial write's read-merge-write holds later requests); a write's
    Cmp leaves only after its ``mw_done``.  ``depth`` requests in flight.  Up to one
    request per cycle with a zero-latency backend.
    """

    @checked_init
    def __init__(self, *, depth: int = 32, filter_entries: int = 64, poison_entries: int = 8, bi_id: int = 0,
                 rwd_reserve: int = 4):
        for name, v, lo in (("depth", depth, 16), ("filter_entries", filter_entries, 8),
                            ("poison_entries", poison_entries, 1), ("rwd_reserve", rwd_reserve, 1)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} = {v!r}: must be an integer")
            if v < lo:
                raise ValueError(f"{name} = {v}: must be >= {lo}")
        if depth & (depth - 1):
            raise ValueError(f"depth = {depth}: must be a power of two")
        if filter_entries < rwd_reserve + 4:
            raise ValueError(f"filter_entries = {filter_entries}: must be >= rwd_reserve + 4 = {rwd_reserve + 4}")
        if not isinstance(bi_id, int) or not 0 <= bi_id < 1 << 12:
            raise ValueError(f"bi_id = {bi_id!r}: must be a 12-bit integer")
        self._depth, self._filter, self._poison, self._bi_id = depth, filter_entries, poison_entries, bi_id
        self._reserve = rwd_reserve
        super().__init__({
            "m2s_req": In(stream.Signature(M2SReq)),
            "m2s_rwd": In(stream.Signature(M2SRwD)),
            "m2s_birsp": In(stream.Signature(M2SBIRsp)),
            "s2m_ndr": Out(stream.Signature(S2MNDR)),
            "s2m_drs": Out(stream.Signature(S2MDRS)),
            "s2m_bisnp": Out(stream.Signature(S2MBISnp)),
            "hdm_base": In(ADDR_BITS),
            "hdm_size": In(ADDR_BITS),
            "mw": Out(stream.Signature(MemWrite)),
            "mw_done": In(1),
            "mw_done_addr": In(32),
            "mr": Out(stream.Signature(MemRead)),
            "mr_data": In(stream.Signature(MemReadData)),
            "dev_wr": In(stream.Signature(DevWrite)),
            "dev_wr_ok": Out(stream.Signature(DevWrite)),
            "stats": Out(CxlMemStats),
        })

    depth = property(lambda self: self._depth)
    filter_entries = property(lambda self: self._filter)
    poison_entries = property(lambda self: self._poison)
    bi_id = property(lambda self: self._bi_id)
    rwd_reserve = property(lambda self: self._reserve)

    def elaborate(self, platform):
        m = Module()
        D, F, P, R = self._depth, self._filter, self._poison, self._reserve
        stats = self.stats

        def bump(name, cond):
            with m.If(cond):
                m.d.sync += stats[name].eq(stats[name] + 1)

        # ------------------------------------------------------------------ state shared by the stages
        # ring of in-flight requests (decode order = completion order)
        ents = [Signal(_ENT, name=f"ent{i}") for i in range(D)]
        e_valid = [Signal(name=f"e_valid{i}") for i in range(D)]
        e_line = [Signal(name=f"e_line{i}") for i in range(D)]        # touches a mapped line
        e_rdpend = [Signal(name=f"e_rdpend{i}") for i in range(D)]    # its mr has not returned
        e_addr = [Signal(32, name=f"e_addr{i}") for i in range(D)]
        head, tail = Signal(range(D)), Signal(range(D))
        count = Signal(range(D + 1))
        # snoop filter: lines the host may hold (device line numbers)
        sf_valid = [Signal(name=f"sf_valid{i}") for i in range(F)]
        sf_addr = [Signal(32, name=f"sf_addr{i}") for i in range(F)]
        free_cnt = Signal(range(F + 1))
        m.d.comb += free_cnt.eq(_popcount([~v for v in sf_valid]))
        # poisoned lines
        p_valid = [Signal(name=f"p_valid{i}") for i in range(P)]
        p_addr = [Signal(32, name=f"p_addr{i}") for i in range(P)]
        # the one partial write between its read and its merged write
        ptl_pending = Signal()
        ptl_data = Signal(LINE_BITS)
        ptl_be = Signal(LINE_BYTES)
        ptl_addr = Signal(32)
        # BI engine
        bi_state = Signal(range(5))
        bi_addr = Signal(32)
        bi_dev = Signal()
        bi_dirty = Signal()
        bi_tag = Signal(12)          # tag of the BISnp in flight
        bi_next = Signal(12)

        # ------------------------------------------------------------------ backend output registers
        mr_free = ~self.mr.valid | self.mr.ready
        mw_free = ~self.mw.valid | self.mw.ready
        with m.If(self.mr.ready):
            m.d.sync += self.mr.valid.eq(0)
        with m.If(self.mw.ready):
            m.d.sync += self.mw.valid.eq(0)

        # read data, in order; the ring index of each outstanding mr
        m.submodules.rdq = rdq = SyncFIFOBuffered(width=LINE_BITS, depth=D)
        m.d.comb += [rdq.w_data.eq(self.mr_data.payload.data), rdq.w_en.eq(self.mr_data.valid),
                     self.mr_data.ready.eq(rdq.w_rdy)]
        mr_ret = self.mr_data.valid & self.mr_data.ready
        idxq = [Signal(range(D), name=f"idxq{i}") for i in range(D)]
        iq_w, iq_r = Signal(range(D)), Signal(range(D))
        ret_idx = Signal(range(D))
        m.d.comb += ret_idx.eq(Array(idxq)[iq_r])
        with m.If(mr_ret):
            m.d.sync += iq_r.eq(iq_r + 1)
        for i in range(D):
            with m.If(mr_ret & (ret_idx == i)):
                m.d.sync += e_rdpend[i].eq(0)

        # ------------------------------------------------------------------ arbiter → decode register
        s1_valid = Signal()
        s1 = Signal(_OP)
        s1_fire = Signal()
        req, rwd = self.m2s_req.payload, self.m2s_rwd.payload
        req_ins = Signal()
        m.d.comb += [
            req_ins.eq(((req.opcode == ReqOpcode.MEM_RD) & (req.meta_field == MetaField.META0_STATE)
                        & (req.meta_value != MetaValue.I))
                       | (req.opcode == ReqOpcode.MEM_RD_DATA)
                       | (((req.opcode == ReqOpcode.MEM_INV) | (req.opcode == ReqOpcode.MEM_INV_NT))
                          & (req.meta_value == MetaValue.A))),
        ]
        # A Req that may take a filter entry needs room for itself, the one in decode and ``rwd_reserve``
        # more: RwD is never held at the input for the filter (it must never wait behind a back-
        # invalidation: the host's write-backs and BIConflicts travel on it); a MemWr A of a line the
        # filter does not track (a host that was not granted it) takes a reserved entry, and only when
        # every entry is taken does it wait in decode for the victim engine.
        # while a device write of a line is being granted, no new request to it is accepted: one accepted
        # before the grant is in flight (and waited for), one accepted after is ordered after the write
        bi_hpa = Signal(ADDR_BITS)
        m.d.comb += bi_hpa.eq(bi_addr + self.hdm_base)
        granting = (bi_state == _CHECK) | (bi_state == _GRANT)
        req_ok = self.m2s_req.valid & (~req_ins | (free_cnt >= R + 2)) & ~(granting & (req.addr == bi_hpa))
        rwd_ok = self.m2s_rwd.valid & ~(granting & (rwd.addr == bi_hpa))
        prio_rwd = Signal()
        take = ~s1_valid | s1_fire
        pick_rwd = Signal()
        m.d.comb += [
            pick_rwd.eq(rwd_ok & (~req_ok | prio_rwd)),
            self.m2s_rwd.ready.eq(take & pick_rwd),
            self.m2s_req.ready.eq(take & req_ok & ~pick_rwd),
        ]
        req_fire = self.m2s_req.valid & self.m2s_req.ready
        rwd_fire = self.m2s_rwd.valid & self.m2s_rwd.ready
        bump("req", req_fire)
        bump("rwd", rwd_fire)
        with m.If(rwd_fire):
            m.d.sync += [s1_valid.eq(1), prio_rwd.eq(0),
                         s1.eq(Cat(Const(1, 1), rwd.opcode, rwd.snp_type, rwd.meta_field, rwd.meta_value, rwd.tag,
                                   rwd.addr, rwd.ld_id, rwd.poison, rwd.byte_enable, rwd.data))]
        with m.Elif(req_fire):
            m.d.sync += [s1_valid.eq(1), prio_rwd.eq(1),
                         s1.eq(Cat(Const(0, 1), req.opcode, req.snp_type, req.meta_field, req.meta_value, req.tag,
                                   req.addr, req.ld_id, Const(0, 1 + LINE_BYTES + LINE_BITS)))]
        with m.Elif(s1_fire):
            m.d.sync += s1_valid.eq(0)

        # ------------------------------------------------------------------ decode
        diff = Signal(ADDR_BITS)
        mapped = Signal()
        line = Signal(32)
        m.d.comb += [diff.eq(s1.addr - self.hdm_base),
                     mapped.eq((s1.addr >= self.hdm_base) & (diff < self.hdm_size)),
                     line.eq(diff)]
        meta0 = s1.mf == MetaField.META0_STATE.value
        noop_meta = s1.mf == MetaField.NO_OP.value
        mv_i, mv_a, mv_s = (s1.mv == v.value for v in (MetaValue.I, MetaValue.A, MetaValue.S))
        sn_no, sn_data, sn_cur, sn_inv = (s1.snp == v.value for v in SnpType)

        is_read = Signal()     # returns data
        is_write = Signal()    # full-line write
        is_ptl = Signal()      # partial write
        legal = Signal()
        ins, rem = Signal(), Signal()
        ndr_op = Signal(3)
        conflict, spec, fwd = Signal(), Signal(), Signal()
        with m.If(~s1.rwd):
            with m.Switch(s1.opcode):
                with m.Case(ReqOpcode.MEM_RD):
                    m.d.comb += is_read.eq(1)
                    with m.If(meta0 & mv_a & sn_inv):
                        m.d.comb += [legal.eq(1), ins.eq(1), ndr_op.eq(NdrOpcode.CMP_E)]
                    with m.Elif(meta0 & mv_s & sn_data):
                        m.d.comb += [legal.eq(1), ins.eq(1), ndr_op.eq(NdrOpcode.CMP_S)]
                    with m.Elif(noop_meta & (sn_cur | sn_inv)):
                        m.d.comb += legal.eq(1)
                with m.Case(ReqOpcode.MEM_RD_DATA):
                    m.d.comb += is_read.eq(1)
                    with m.If(noop_meta & sn_data):
                        m.d.comb += [legal.eq(1), ins.eq(1), ndr_op.eq(NdrOpcode.CMP_S)]
                with m.Case(ReqOpcode.MEM_INV):
                    with m.If(meta0 & mv_a & sn_inv):
                        m.d.comb += [legal.eq(1), ins.eq(1), ndr_op.eq(NdrOpcode.CMP_E)]
                    with m.Elif(meta0 & mv_i & sn_inv):
                        m.d.comb += [legal.eq(1), rem.eq(1)]
                with m.Case(ReqOpcode.MEM_INV_NT):
                    with m.If(meta0 & mv_a & sn_inv):
                        m.d.comb += [legal.eq(1), ins.eq(1), ndr_op.eq(NdrOpcode.CMP_E)]
                with m.Case(ReqOpcode.MEM_CLN_EVCT):
                    with m.If(meta0 & mv_i & sn_no):
                        m.d.comb += [legal.eq(1), rem.eq(1)]
                with m.Case(ReqOpcode.MEM_SPEC_RD):
                    m.d.comb += spec.eq(1)
                with m.Case(ReqOpcode.MEM_RD_FWD, ReqOpcode.MEM_WR_FWD):
                    m.d.comb += fwd.eq(1)
        with m.Else():
            with m.Switch(s1.opcode):
                with m.Case(RwdOpcode.MEM_WR):
                    with m.If(meta0 & (mv_i | mv_a) & sn_no):
                        m.d.comb += [legal.eq(1), is_write.eq(1), ins.eq(mv_a), rem.eq(mv_i)]
                    with m.Elif(meta0 & mv_i & sn_inv):
                        m.d.comb += [legal.eq(1), is_write.eq(1), rem.eq(1)]
                with m.Case(RwdOpcode.MEM_WR_PTL):
                    with m.If(meta0 & mv_i & sn_inv & s1.be.any()):
                        m.d.comb += [legal.eq(1), rem.eq(1)]
                        # all byte enables set: a full-line write, no read-merge
                        m.d.comb += [is_write.eq(s1.be.all()), is_ptl.eq(~s1.be.all())]
                with m.Case(RwdOpcode.BI_CONFLICT):
                    m.d.comb += conflict.eq(1)
        illegal = ~legal & ~conflict & ~spec & ~fwd
        reply = ~spec & ~fwd

        # poison table lookup
        p_match = [Signal(name=f"p_match{i}") for i in range(P)]
        for i in range(P):
            m.d.comb += p_match[i].eq(p_valid[i] & (p_addr[i] == line))
        p_hit = _any(p_match)
        p_free = _first(m, [~v for v in p_valid], "p_free")
        p_full = Cat(*p_valid).all()
        # snoop-filter lookup
        sf_match = [Signal(name=f"sf_match{i}") for i in range(F)]
        for i in range(F):
            m.d.comb += sf_match[i].eq(sf_valid[i] & (sf_addr[i] == line))
        sf_hit = _any(sf_match)
        sf_free = _first(m, [~v for v in sf_valid], "sf_free")

        # what the request does (mapped, legal or not)
        do_rd = Signal()      # issue mr (read, or the read of a partial write)
        do_wr = Signal()      # issue mw
        do_ptl = Signal()
        poison_wr = Signal()
        m.d.comb += [
            do_rd.eq(mapped & (is_read | (is_ptl & ~s1.poison & ~p_hit))),
            do_ptl.eq(mapped & is_ptl & ~s1.poison & ~p_hit),
            do_wr.eq(mapped & is_write & ~s1.poison),
            poison_wr.eq(mapped & (is_write | is_ptl) & s1.poison),
        ]
        ent = Signal(_ENT)
        m.d.comb += [
            ent.ndr.eq(reply & ~(is_read & ~mapped)),
            ent.ndr_op.eq(Mux(conflict, NdrOpcode.BI_CONFLICT_ACK.value, Mux(mapped, ndr_op, 0))),
            ent.drs.eq(is_read),
            ent.nxm.eq(is_read & ~mapped),
            # NXM is all ones with Poison set (never good data); a read of a poisoned line is poisoned
            ent.poison.eq(is_read & (~mapped | p_hit)),
            ent.tag.eq(s1.tag), ent.ld_id.eq(s1.ld_id),
            ent.need_rd.eq(mapped & is_read),
            ent.need_wd.eq(do_wr),
            ent.merge.eq(do_ptl),
        ]
        # resulting host state in NDR/DRS: Cmp-E → A, Cmp-S → S, Meta0 requests echo their MetaValue
        with m.If(mapped & legal & (ndr_op == NdrOpcode.CMP_E)):
            m.d.comb += [ent.mf.eq(MetaField.META0_STATE), ent.mv.eq(MetaValue.A)]
        with m.Elif(mapped & legal & (ndr_op == NdrOpcode.CMP_S)):
            m.d.comb += [ent.mf.eq(MetaField.META0_STATE), ent.mv.eq(MetaValue.S)]
        with m.Elif(mapped & legal & meta0):
            m.d.comb += [ent.mf.eq(MetaField.META0_STATE), ent.mv.eq(s1.mv)]
        with m.Else():
            m.d.comb += [ent.mf.eq(MetaField.NO_OP), ent.mv.eq(0)]

        # hazards
        war = _any(e_valid[i] & e_rdpend[i] & (e_addr[i] == line) for i in range(D))
        retire = Signal()
        ring_room = (count != D) | retire
        grant_hold = Signal()
        stall = Signal()
        m.d.comb += [
            grant_hold.eq((bi_state == _GRANT) & mapped & (line == bi_addr)),
            stall.eq(ptl_pending | grant_hold
                     | (reply & ~ring_room)
                     | (do_rd & (~mr_free | (self.mw.valid & ~self.mw.ready)))
                     | (do_wr & (~mw_free | war))
                     | (mapped & legal & ins & ~sf_hit & (free_cnt == 0))),
            s1_fire.eq(s1_valid & ~stall),
        ]

        # ------------------------------------------------------------------ decode actions
        push = s1_fire & reply
        with m.If(push):
            m.d.sync += tail.eq(tail + 1)
        for i in range(D):
            with m.If(push & (tail == i)):
                m.d.sync += [ents[i].eq(ent), e_valid[i].eq(1), e_line[i].eq(mapped & ~conflict),
                             e_rdpend[i].eq(do_rd), e_addr[i].eq(line)]
        with m.If(s1_fire & do_rd):
            m.d.sync += [self.mr.valid.eq(1), self.mr.payload.addr.eq(line), iq_w.eq(iq_w + 1)]
            for i in range(D):
                with m.If(iq_w == i):
                    m.d.sync += idxq[i].eq(tail)
        with m.If(s1_fire & do_wr):
            m.d.sync += [self.mw.valid.eq(1), self.mw.payload.addr.eq(line), self.mw.payload.data.eq(s1.data)]
        with m.If(s1_fire & do_ptl):
            m.d.sync += [ptl_pending.eq(1), ptl_data.eq(s1.data), ptl_be.eq(s1.be), ptl_addr.eq(line)]
        # snoop filter
        sf_ins = s1_fire & mapped & legal & ins
        sf_rem = s1_fire & mapped & legal & rem
        for i in range(F):
            with m.If(sf_ins & ~sf_hit & (sf_free == i)):
                m.d.sync += [sf_valid[i].eq(1), sf_addr[i].eq(line)]
        # poison table: a poisoned write poisons the line, a clean full-line write heals it
        for i in range(P):
            with m.If(s1_fire & poison_wr & ~p_hit & (p_free == i)):
                m.d.sync += [p_valid[i].eq(1), p_addr[i].eq(line)]
            with m.If(s1_fire & do_wr & p_match[i]):
                m.d.sync += p_valid[i].eq(0)
        bump("reads", s1_fire & is_read & mapped)
        bump("writes", s1_fire & (do_wr | do_ptl))
        bump("partials", s1_fire & do_ptl)
        bump("unmapped", s1_fire & ~mapped & reply & ~conflict)
        bump("illegal", s1_fire & illegal)
        bump("poison_writes", s1_fire & poison_wr)
        bump("poison_reads", s1_fire & is_read & mapped & p_hit)
        bump("poison_overflow", s1_fire & poison_wr & ~p_hit & p_full)
        bump("spec_dropped", s1_fire & spec)
        bump("fwd_ignored", s1_fire & fwd)
        bump("conflicts", s1_fire & conflict)

        # ------------------------------------------------------------------ retirement (in order)
        head_e = Signal(_ENT)
        m.d.comb += head_e.eq(Array(ents)[head])
        ndr_free = ~self.s2m_ndr.valid | self.s2m_ndr.ready
        drs_free = ~self.s2m_drs.valid | self.s2m_drs.ready
        done_cnt = Signal(range(D + 1))
        m.d.comb += retire.eq((count != 0) & ~head_e.merge
                              & (~head_e.need_rd | rdq.r_rdy)
                              & (~head_e.need_wd | (done_cnt != 0) | self.mw_done)
                              & (~head_e.ndr | ndr_free) & (~head_e.drs | drs_free))
        m.d.sync += done_cnt.eq(done_cnt + self.mw_done - (retire & head_e.need_wd))
        m.d.sync += count.eq(count + push - retire)
        with m.If(retire):
            m.d.sync += head.eq(head + 1)
        for i in range(D):
            with m.If(retire & (head == i)):
                m.d.sync += e_valid[i].eq(0)
        # partial write at the head: merge its read data under the byte enables, write it
        merged = Signal(LINE_BITS)
        m.d.comb += merged.eq(Cat(*(Mux(ptl_be[b], ptl_data.word_select(b, 8), rdq.r_data.word_select(b, 8))
                                    for b in range(LINE_BYTES))))
        merge = Signal()
        m.d.comb += merge.eq((count != 0) & head_e.merge & rdq.r_rdy & mw_free)
        with m.If(merge):
            m.d.sync += [self.mw.valid.eq(1), self.mw.payload.addr.eq(ptl_addr), self.mw.payload.data.eq(merged),
                         ptl_pending.eq(0)]
            for i in range(D):
                with m.If(head == i):
                    m.d.sync += [ents[i].merge.eq(0), ents[i].need_wd.eq(1)]
        m.d.comb += rdq.r_en.eq((retire & head_e.need_rd) | merge)

        with m.If(self.s2m_ndr.ready):
            m.d.sync += self.s2m_ndr.valid.eq(0)
        with m.If(retire & head_e.ndr):
            m.d.sync += [self.s2m_ndr.valid.eq(1),
                         self.s2m_ndr.payload.eq(Cat(head_e.ndr_op, head_e.mf, head_e.mv, head_e.tag, head_e.ld_id,
                                                     Const(0, 2)))]
        with m.If(self.s2m_drs.ready):
            m.d.sync += self.s2m_drs.valid.eq(0)
        with m.If(retire & head_e.drs):
            m.d.sync += [self.s2m_drs.valid.eq(1),
                         self.s2m_drs.payload.eq(Cat(Mux(head_e.nxm, Const(DrsOpcode.MEM_DATA_NXM.value, 3),
                                                         Const(DrsOpcode.MEM_DATA.value, 3)), head_e.mf,
                                                     head_e.mv, head_e.tag, head_e.ld_id, Const(0, 2), head_e.poison,
                                                     Mux(head_e.nxm, Const(-1, LINE_BITS), rdq.r_data)))]

        # ------------------------------------------------------------------ BI engine
        bi_match = [Signal(name=f"bi_match{i}") for i in range(F)]
        for i in range(F):
            m.d.comb += bi_match[i].eq(sf_valid[i] & (sf_addr[i] == bi_addr))
        bi_hit = _any(bi_match)
        inflight = _any([s1_valid & mapped & (line == bi_addr)]
                        + [e_valid[i] & e_line[i] & (e_addr[i] == bi_addr) for i in range(D)])
        # a filter insert of the snooped line after the BISnp left: the host may hold it again
        eff_dirty = bi_dirty | (sf_ins & (line == bi_addr))
        with m.If(sf_ins & (line == bi_addr)):
            m.d.sync += bi_dirty.eq(1)
        vptr = Signal(range(F))
        birsp = self.m2s_birsp.payload
        m.d.comb += self.m2s_birsp.ready.eq(1)
        rsp = self.m2s_birsp.valid
        rsp_ok = rsp & (bi_state == _WAIT) & (birsp.bi_tag == bi_tag)
        bump("birsp", rsp)
        bump("birsp_errors", rsp & ~rsp_ok)
        bump("birsp_errors", rsp_ok & (birsp.opcode != BIRspOpcode.I))
        with m.If(self.s2m_bisnp.ready):
            m.d.sync += self.s2m_bisnp.valid.eq(0)
        bisnp_free = ~self.s2m_bisnp.valid | self.s2m_bisnp.ready
        dev_take = Signal()
        m.d.comb += self.dev_wr.ready.eq((bi_state == _IDLE) & (free_cnt >= R + 1))
        m.d.comb += dev_take.eq(self.dev_wr.valid & self.dev_wr.ready)
        sf_clear = Signal()
        with m.Switch(bi_state):
            with m.Case(_IDLE):
                with m.If(dev_take):
                    m.d.sync += [bi_addr.eq(self.dev_wr.payload.addr), bi_dev.eq(1), bi_state.eq(_CHECK)]
                with m.Elif(free_cnt < R + 3):
                    m.d.sync += vptr.eq(Mux(vptr == F - 1, 0, vptr + 1))
                    with m.If(Array(sf_valid)[vptr]):
                        m.d.sync += [bi_addr.eq(Array(sf_addr)[vptr]), bi_dev.eq(0), bi_state.eq(_SNOOP)]
                        bump("victims", 1)
            with m.Case(_CHECK):
                with m.If(bi_hit):
                    m.d.sync += bi_state.eq(_SNOOP)
                with m.Elif(~inflight):
                    m.d.sync += [bi_state.eq(_GRANT), self.dev_wr_ok.valid.eq(1),
                                 self.dev_wr_ok.payload.addr.eq(bi_addr)]
            with m.Case(_SNOOP):
                with m.If(bisnp_free):
                    m.d.sync += [self.s2m_bisnp.valid.eq(1),
                                 self.s2m_bisnp.payload.eq(Cat(Const(BISnpOpcode.INV.value, 4),
                                                               Const(self._bi_id, 12), bi_next, bi_hpa)),
                                 bi_tag.eq(bi_next), bi_next.eq(bi_next + 1), bi_state.eq(_WAIT),
                                 bi_dirty.eq(sf_ins & (line == bi_addr))]
                    bump("bisnp", 1)
            with m.Case(_WAIT):
                with m.If(rsp_ok):
                    with m.If(eff_dirty):
                        m.d.sync += bi_state.eq(_SNOOP)
                        bump("bi_retries", 1)
                    with m.Elif(birsp.opcode == BIRspOpcode.I):
                        m.d.comb += sf_clear.eq(1)
                        m.d.sync += bi_state.eq(Mux(bi_dev, _CHECK, _IDLE))
                    with m.Else():     # the host kept a copy of a line it was told to invalidate
                        m.d.sync += bi_state.eq(Mux(bi_dev, _SNOOP, _IDLE))
            with m.Case(_GRANT):
                with m.If(self.dev_wr_ok.ready):
                    m.d.sync += [bi_state.eq(_IDLE), self.dev_wr_ok.valid.eq(0)]
                    bump("dev_grants", 1)
                    for i in range(P):     # the device's write is a clean full line
                        with m.If(p_valid[i] & (p_addr[i] == bi_addr)):
                            m.d.sync += p_valid[i].eq(0)
        for i in range(F):
            with m.If((sf_clear & bi_match[i]) | (sf_rem & sf_match[i])):
                m.d.sync += sf_valid[i].eq(0)
        return m
