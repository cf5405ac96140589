"""Header rewrite stage (without VXLAN): one ActionEntry applied to each frame.

Bit-exact with :func:`cxlnic.model.actions.apply_actions` for every action
that has no ``vxlan_encap`` / ``vxlan_decap`` flag (tested against it in
Amaranth's simulator and under Verilator).  VXLAN encap/decap are **not
implemented in this block yet**: see :class:`HeaderRewriter`.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from cxlnic.config import NicConfig
from cxlnic.hdl.layouts import ActionEntry
from cxlnic.hdl.parser import BEAT_BYTES, Beat
from cxlnic.hdl.util import checked_init
from cxlnic.model.actions import Verdict
from cxlnic.model.parser import (
    ETH_HLEN,
    ETH_IPV4,
    ETH_IPV6,
    ETH_VLAN,
    IP_TCP,
    IP_UDP,
    IPV4_HLEN,
    IPV6_EXT_HEADERS,
    IPV6_HLEN,
    TCP_HLEN,
    UDP_HLEN,
    VLAN_HLEN,
)

__all__ = ["HeaderRewriter", "RewriteOut", "HDR_WIN", "OUT_HDR", "LATENCY"]

#: Bytes of each frame captured for the header computation (the first two beats).
HDR_WIN = 2 * BEAT_BYTES
#: Output bytes that can differ from the shifted input: the deepest rewritten byte is a TCP
#: checksum at 18 + 60 + 16 + 1 = 95, plus 4 when a tag is pushed in front of it.
OUT_HDR = 100
#: Cycles from the edge that accepts a frame's last beat to the edge that raises ``o.valid`` with
#: its first beat, when the output side is idle (one more when the frame's tag is popped).
LATENCY = 5
#: L4 header offsets: 14 or 18 plus an IPv4 header of 20..60 bytes (IPv6: 40) -> 34 + 4n.
L4_BASE = ETH_HLEN + IPV4_HLEN
L4_SLOTS = 12
L4_WIN = TCP_HLEN

#: The output beat: the rewritten frame's beat, the packet's verdict (:class:`Verdict`
#: encoding) and output port, and ``unsupported`` (the action asked for VXLAN encap/decap).
RewriteOut = data.StructLayout({"beat": Beat, "verdict": 2, "out_port": 8, "unsupported": 1})

# shift modes: how the output bytes past OUT_HDR relate to the input bytes
_SAME, _PUSH, _POP = 0, 1, 2

_Desc = data.StructLayout({
    "hdr": 8 * OUT_HDR, "mode": 2, "length": 16, "verdict": 2, "out_port": 8, "unsupported": 1, "in_port": 8,
})


def _byte(win, k):
    return win[8 * k: 8 * k + 8]


def _be(win, k, n):
    """The ``n``-byte big-endian number at byte ``k`` of ``win``."""
    return Cat(*[_byte(win, k + j) for j in reversed(range(n))])


def _wire(value, n):
    """The ``n`` wire bytes (big-endian) of ``value`` as a little-endian window."""
    return Cat(*[value[8 * j: 8 * j + 8] for j in reversed(range(n))])


def _popcount(bits):
    terms = [bits[i] for i in range(len(bits))]
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def _fold(s):
    s1 = s[:16] + s[16:]
    return (s1[:16] + s1[16:])[:16]


def _csum_replace16(hc, old, new):
    """RFC 1624 eqn. 3, as :func:`cxlnic.model.actions.csum_replace16`."""
    return ~_fold((~hc)[:16] + (~old)[:16] + new)


class HeaderRewriter(wiring.Component):
    """Apply one :class:`~cxlnic.hdl.layouts.ActionEntry` per frame, as ``apply_actions`` does.

    * ``i``: frame beats (:data:`~cxlnic.hdl.parser.Beat`, up to one with ``last``;
      ``keep`` contiguous from byte 0, a ``last`` beat with ``keep == 0`` is legal).
      ``act``: one action per frame, consumed together with the frame's **first** beat
      (``i.ready`` stays low on a first beat until ``act.valid``).
    * ``o``: :data:`RewriteOut` beats of the rewritten frame, exactly
      ``len(apply_actions(frame, action).frame)`` bytes in ``ceil(n/64)`` beats (one beat
      with ``keep == 0`` for an empty frame), no padding; ``verdict`` / ``out_port``
      (:class:`~cxlnic.model.actions.Verdict` encoding; ``out_port`` 0 unless OUTPUT)
      and ``unsupported`` are the same on every beat of a frame; ``in_port`` is that of
      the frame's first input beat.  Frames with verdict DROP are still emitted (the
      top filters them).
    * Implemented: ``vlan_pop``, ``set_eth_src/dst``, ``set_ipv4_src/dst`` (IPv4 header
      checksum recomputed, TCP/UDP checksum updated incrementally), ``set_tp_src/dst``,
      ``vlan_set`` (modify or push), the verdict; ``ct_commit`` changes nothing.
      **Not implemented**: an action with ``vxlan_encap`` or ``vxlan_decap`` passes the
      frame through unchanged (no other step applied either) with verdict TO_HOST,
      ``out_port`` 0 and ``unsupported`` set, so the host can apply it in software.
    * Store and forward: the frame is buffered whole (whether a rewrite applies depends
      on the frame length: the IP/L4 length checks), then the first two beats are
      rewritten and the rest streamed with a +4/-4 byte shift for a push/pop.
      ``depth`` beats of buffer (default: two maximum frames, so one frame streams in
      while the previous one streams out).  Precondition: a frame has at most
      ``depth - 1`` beats (``max_frame`` bytes plus an empty last beat always fit);
      a longer frame stalls the block forever.
    * Throughput: input one beat per cycle; output one beat per cycle plus 1 idle cycle
      per frame (2 for a frame whose tag is popped).  Latency: :data:`LATENCY` = 5:
      ``o.valid`` with the frame's first beat rises on the 5th rising edge counting the
      one that accepts its last input beat (6th with a pop), when ``o`` was idle.
    * Order: frames leave in input order; the whole block stalls on ``o`` backpressure;
      ``valid`` never depends on ``ready``.
    """

    @checked_init
    def __init__(self, *, max_frame: int | None = None, depth: int | None = None):
        max_frame = NicConfig().max_frame if max_frame is None else max_frame
        if not isinstance(max_frame, int) or isinstance(max_frame, bool):
            raise TypeError(f"max_frame = {max_frame!r}: must be an integer")
        if not ETH_HLEN <= max_frame <= 0xFFFF - 2 * BEAT_BYTES:
            raise ValueError(f"max_frame = {max_frame}: need {ETH_HLEN} <= max_frame <= {0xFFFF - 2 * BEAT_BYTES}")
        beats = -(-max_frame // BEAT_BYTES) + 1
        depth = 2 * beats + 2 if depth is None else depth
        if not isinstance(depth, int) or isinstance(depth, bool):
            raise TypeError(f"depth = {depth!r}: must be an integer")
        if depth < beats + 1:
            raise ValueError(f"depth = {depth}: must be at least {beats + 1} beats to hold a {max_frame}-byte frame")
        self._max_frame = max_frame
        self._depth = depth
        super().__init__({
            "i": In(stream.Signature(Beat)),
            "act": In(stream.Signature(ActionEntry)),
            "o": Out(stream.Signature(RewriteOut)),
        })

    @property
    def max_frame(self) -> int:
        return self._max_frame

    @property
    def depth(self) -> int:
        return self._depth

    # -- the header computation (combinational, from one captured frame) ------------------
    def _compute(self, m, hdr, length, a):
        """Rewritten output header bytes, shift mode and output length for window ``hdr``."""
        def sig(shape, name, value):
            s = Signal(shape, name=name)
            m.d.comb += s.eq(value)
            return s

        # step 2: vlan_pop
        tagged0 = sig(1, "rw_tagged0", (length >= ETH_HLEN + VLAN_HLEN) & (_be(hdr, 12, 2) == ETH_VLAN))
        popped = sig(1, "rw_popped", a.vlan_pop & tagged0)
        w0 = sig(8 * HDR_WIN, "rw_w0", Mux(popped, Cat(hdr[:8 * 12], hdr[8 * 16:]), hdr))
        ln = sig(16, "rw_len1", Mux(popped, length - VLAN_HLEN, length))

        # step 3a: MAC rewrites
        has_eth = sig(1, "rw_has_eth", ln >= ETH_HLEN)
        w1 = Signal(8 * HDR_WIN, name="rw_w1")
        m.d.comb += w1.eq(w0)
        with m.If(has_eth & a.set_eth_src):
            m.d.comb += w1[8 * 6: 8 * 12].eq(_wire(a.eth_src, 6))
        with m.If(has_eth & a.set_eth_dst):
            m.d.comb += w1[0: 8 * 6].eq(_wire(a.eth_dst, 6))

        # the parse of the current frame (parse_headers(check_size=False, tunnels=False)):
        # only "no exception" matters, so the checks are simply and-ed
        vlan = sig(1, "rw_vlan", _be(w1, 12, 2) == ETH_VLAN)
        l2ok = has_eth & (~vlan | (ln >= ETH_HLEN + VLAN_HLEN))
        et = Mux(vlan, _be(w1, 16, 2), _be(w1, 12, 2))
        ip = sig(8 * 60, "rw_ip", Mux(vlan, w1[8 * 18: 8 * 78], w1[8 * 14: 8 * 74]))
        avail = sig(17, "rw_avail", ln - Mux(vlan, ETH_HLEN + VLAN_HLEN, ETH_HLEN))
        is4 = sig(1, "rw_is4", et == ETH_IPV4)
        is6 = sig(1, "rw_is6", et == ETH_IPV6)
        ihl = _byte(ip, 0)[:4]
        hlen = Cat(Const(0, 2), ihl)
        total = _be(ip, 2, 2)
        frag = (_byte(ip, 6)[:6] != 0) | (_byte(ip, 7) != 0)
        ok4 = sig(1, "rw_ok4", (avail >= IPV4_HLEN) & (_byte(ip, 0)[4:] == 4) & (ihl >= IPV4_HLEN // 4)
                  & (hlen <= avail) & (total >= hlen) & (total <= avail) & ~frag)
        plen = _be(ip, 4, 2)
        nh = _byte(ip, 6)
        ext = Const(0, 1)
        for x in sorted(IPV6_EXT_HEADERS):
            ext = ext | (nh == x)
        ok6 = sig(1, "rw_ok6", (avail >= IPV6_HLEN) & (_byte(ip, 0)[4:] == 6) & (plen + IPV6_HLEN <= avail) & ~ext)
        proto = Mux(is4, _byte(ip, 9), nh)
        l4len = sig(16, "rw_l4len", Mux(is4, total - hlen, plen))
        tcp = sig(1, "rw_tcp", proto == IP_TCP)
        udp = sig(1, "rw_udp", proto == IP_UDP)
        l4chk = (~tcp | (l4len >= TCP_HLEN)) & (~udp | (l4len >= UDP_HLEN))
        ip_ok = sig(1, "rw_ip_ok", l2ok & is4 & ok4 & l4chk)
        tp_ok = sig(1, "rw_tp_ok", l2ok & ((is4 & ok4) | (is6 & ok6)) & l4chk & (tcp | udp))
        slot = sig(4, "rw_slot", vlan + Mux(is4, ihl, IPV6_HLEN // 4) - IPV4_HLEN // 4)
        l4 = Signal(8 * L4_WIN, name="rw_l4")
        with m.Switch(slot):
            for n in range(L4_SLOTS):
                with m.Case(n):
                    m.d.comb += l4.eq(w1[8 * (L4_BASE + 4 * n): 8 * (L4_BASE + 4 * n + L4_WIN)])

        # set_ipv4_*, set_tp_*: the L4 checksum chain, step by step as _replace_words does
        do = {
            "ip_src": ip_ok & a.set_ipv4_src, "ip_dst": ip_ok & a.set_ipv4_dst,
            "tp_src": tp_ok & a.set_tp_src, "tp_dst": tp_ok & a.set_tp_dst,
        }
        steps = [
            ("ip_src", [(_be(ip, 12, 2), a.ipv4_src[16:]), (_be(ip, 14, 2), a.ipv4_src[:16])]),
            ("ip_dst", [(_be(ip, 16, 2), a.ipv4_dst[16:]), (_be(ip, 18, 2), a.ipv4_dst[:16])]),
            ("tp_src", [(_be(l4, 0, 2), a.tp_src)]),
            ("tp_dst", [(_be(l4, 2, 2), a.tp_dst)]),
        ]
        hc = sig(16, "rw_hc0", Mux(tcp, _be(l4, 16, 2), _be(l4, 6, 2)))
        for name, words in steps:
            new = hc
            for old, val in words:
                new = _csum_replace16(new, old, val)
            new = sig(16, f"rw_hc_{name}_raw", new)
            new = Mux(udp & (new == 0), 0xFFFF, new)
            hc = sig(16, f"rw_hc_{name}", Mux(do[name] & (tcp | udp) & ~(udp & (hc == 0)), new, hc))
        src = Mux(do["ip_src"], a.ipv4_src, _be(ip, 12, 4))
        dst = Mux(do["ip_dst"], a.ipv4_dst, _be(ip, 16, 4))
        ip_new = sig(8 * 60, "rw_ip_new", Cat(ip[:8 * 10], Const(0, 16), _wire(src, 4), _wire(dst, 4), ip[8 * 20:]))
        words = [Mux(j < 2 * ihl, _be(ip_new, 2 * j, 2), 0) for j in range(30)]
        while len(words) > 1:
            words = [words[k] + words[k + 1] if k + 1 < len(words) else words[k] for k in range(0, len(words), 2)]
        ip_csum = sig(16, "rw_ip_csum", ~_fold(words[0]))
        ip_fields = Cat(_wire(ip_csum, 2), _wire(src, 4), _wire(dst, 4))
        sport = Mux(do["tp_src"], a.tp_src, _be(l4, 0, 2))
        dport = Mux(do["tp_dst"], a.tp_dst, _be(l4, 2, 2))
        l4_new = sig(8 * L4_WIN, "rw_l4_new", Cat(
            _wire(sport, 2), _wire(dport, 2), l4[8 * 4: 8 * 6],
            Mux(udp, _wire(hc, 2), l4[8 * 6: 8 * 8]), l4[8 * 8: 8 * 16],
            Mux(tcp, _wire(hc, 2), l4[8 * 16: 8 * 18]), l4[8 * 18:]))
        w2 = Signal(8 * HDR_WIN, name="rw_w2")
        m.d.comb += w2.eq(w1)
        with m.If(do["ip_src"] | do["ip_dst"]):
            with m.If(vlan):
                m.d.comb += w2[8 * 28: 8 * 38].eq(ip_fields)
            with m.Else():
                m.d.comb += w2[8 * 24: 8 * 34].eq(ip_fields)
        # ip_ok on TCP/UDP implies tp_ok: the checksum (and any port) is written back here
        with m.If(tp_ok):
            with m.Switch(slot):
                for n in range(L4_SLOTS):
                    with m.Case(n):
                        m.d.comb += w2[8 * (L4_BASE + 4 * n): 8 * (L4_BASE + 4 * n + L4_WIN)].eq(l4_new)

        # step 4: vlan_set
        tagged1 = sig(1, "rw_tagged1", (ln >= ETH_HLEN + VLAN_HLEN) & (_be(w2, 12, 2) == ETH_VLAN))
        push = sig(1, "rw_push", a.vlan_set & ~tagged1 & has_eth)
        tci_mod = Cat(a.vlan_vid, _be(w2, 14, 2)[12:])
        w3 = Signal(8 * HDR_WIN, name="rw_w3")
        m.d.comb += w3.eq(w2)
        with m.If(a.vlan_set & tagged1):
            m.d.comb += w3[8 * 14: 8 * 16].eq(_wire(tci_mod, 2))
        tci_push = Cat(a.vlan_vid, Const(0, 1), a.vlan_pcp)
        out = Mux(push, Cat(w3[:8 * 12], _wire(Const(ETH_VLAN, 16), 2), _wire(tci_push, 2), w3[8 * 12:]), w3)
        mode = Mux(push & ~popped, _PUSH, Mux(popped & ~push, _POP, _SAME))
        return out[:8 * OUT_HDR], mode, Mux(push, ln + VLAN_HLEN, ln)[:16]

    def elaborate(self, platform):
        m = Module()
        beat = self.i.payload
        act = self.act.payload

        m.submodules.beats = beats = SyncFIFOBuffered(width=8 * BEAT_BYTES + 1, depth=self._depth)
        m.submodules.descs = descs = SyncFIFOBuffered(width=_Desc.size, depth=4)

        # -- input: capture the first two beats, the length and the action -------------
        first = Signal(init=1)
        nbeat = Signal(range(3))
        acc = Signal(16)
        hbuf = Signal(8 * HDR_WIN, reset_less=True)
        act_r = Signal(ActionEntry)
        port_r = Signal(8)
        p1_valid = Signal()
        p1_hdr = Signal(8 * HDR_WIN, reset_less=True)
        p1_len = Signal(16, reset_less=True)
        p1_act = Signal(ActionEntry, reset_less=True)
        p1_port = Signal(8, reset_less=True)
        p1_free = ~p1_valid | descs.w_rdy
        m.d.comb += self.i.ready.eq(beats.w_rdy & p1_free & (~first | self.act.valid))
        take = self.i.valid & self.i.ready
        m.d.comb += [
            self.act.ready.eq(take & first),
            beats.w_en.eq(take),
            beats.w_data.eq(Cat(beat.data, beat.last)),
        ]
        merged = Signal(8 * HDR_WIN)
        m.d.comb += merged.eq(Cat(*[Mux(nbeat == j, beat.data, hbuf[8 * BEAT_BYTES * j: 8 * BEAT_BYTES * (j + 1)])
                                    for j in range(2)]))
        total = Signal(16)
        m.d.comb += total.eq(acc + _popcount(beat.keep))
        cur_act = Mux(first, act, act_r)
        with m.If(descs.w_rdy):
            m.d.sync += p1_valid.eq(0)
        with m.If(take):
            m.d.sync += [hbuf.eq(merged), first.eq(beat.last)]
            with m.If(first):
                m.d.sync += [act_r.eq(act), port_r.eq(beat.in_port)]
            with m.If(beat.last):
                m.d.sync += [nbeat.eq(0), acc.eq(0), p1_valid.eq(1), p1_hdr.eq(merged), p1_len.eq(total),
                             p1_act.eq(cur_act), p1_port.eq(Mux(first, beat.in_port, port_r))]
            with m.Else():
                m.d.sync += acc.eq(total)
                with m.If(nbeat != 2):
                    m.d.sync += nbeat.eq(nbeat + 1)

        # -- the header computation into the descriptor FIFO ---------------------------
        hdr, mode, olen = self._compute(m, p1_hdr, p1_len, p1_act)
        a = p1_act
        unsup = Signal(name="unsupported")
        m.d.comb += unsup.eq(a.vxlan_encap | a.vxlan_decap)
        verdict = Mux(a.drop, Verdict.DROP, Mux(a.to_host, Verdict.TO_HOST, Mux(a.output, Verdict.OUTPUT,
                                                                                   Verdict.DROP)))
        d_in = Signal(_Desc)
        m.d.comb += [
            d_in.hdr.eq(Mux(unsup, p1_hdr[:8 * OUT_HDR], hdr)),
            d_in.mode.eq(Mux(unsup, _SAME, mode)),
            d_in.length.eq(Mux(unsup, p1_len, olen)),
            d_in.verdict.eq(Mux(unsup, Verdict.TO_HOST, verdict)),
            d_in.out_port.eq(Mux(~unsup & (verdict == Verdict.OUTPUT), a.out_port, 0)),
            d_in.unsupported.eq(unsup),
            d_in.in_port.eq(p1_port),
            descs.w_data.eq(d_in),
            descs.w_en.eq(p1_valid),
        ]

        # -- output: stream the buffered frame out, header replaced, shifted -----------
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        d = Signal(_Desc, reset_less=True)
        m.d.comb += d.eq(descs.r_data)
        cur_d = Signal(_Desc, reset_less=True)
        prev = Signal(8 * BEAT_BYTES, reset_less=True)
        in_done = Signal()
        rem = Signal(17)            # output bytes of this frame still to send
        j = Signal(2)               # output beat number, saturating at 2
        head = beats.r_data[:8 * BEAT_BYTES]
        head_last = beats.r_data[-1]
        win = Signal(16 * BEAT_BYTES)
        m.d.comb += win.eq(Cat(prev, head))
        shifted = Signal(8 * BEAT_BYTES)
        with m.Switch(cur_d.mode):
            with m.Case(_PUSH):
                m.d.comb += shifted.eq(win[8 * 60: 8 * 124])
            with m.Case(_POP):
                m.d.comb += shifted.eq(win[8 * 4: 8 * 68])
            with m.Default():
                m.d.comb += shifted.eq(head)
        ob = Signal(8 * BEAT_BYTES)
        with m.Switch(j):
            with m.Case(0):
                m.d.comb += ob.eq(cur_d.hdr[:8 * BEAT_BYTES])
            with m.Case(1):
                m.d.comb += ob.eq(Cat(cur_d.hdr[8 * BEAT_BYTES:], shifted[8 * (OUT_HDR - BEAT_BYTES):]))
            with m.Default():
                m.d.comb += ob.eq(shifted)
        keep = Signal(BEAT_BYTES)
        m.d.comb += keep.eq(Cat(*[rem > b for b in range(BEAT_BYTES)]))
        is_last = rem <= BEAT_BYTES

        with m.If(adv):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += descs.r_en.eq(1)
                with m.If(descs.r_rdy):
                    m.d.sync += [cur_d.eq(d), in_done.eq(0), rem.eq(d.length), j.eq(0)]
                    with m.If(d.mode == _POP):
                        m.next = "PREFETCH"
                    with m.Else():
                        m.next = "RUN"
            with m.State("PREFETCH"):
                m.d.comb += beats.r_en.eq(1)
                with m.If(beats.r_rdy):
                    m.d.sync += [prev.eq(head), in_done.eq(head_last)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(adv & (in_done | beats.r_rdy)):
                    m.d.comb += beats.r_en.eq(~in_done)
                    m.d.sync += [
                        self.o.valid.eq(1),
                        self.o.payload.beat.data.eq(ob),
                        self.o.payload.beat.keep.eq(keep),
                        self.o.payload.beat.last.eq(is_last),
                        self.o.payload.beat.in_port.eq(cur_d.in_port),
                        self.o.payload.verdict.eq(cur_d.verdict),
                        self.o.payload.out_port.eq(cur_d.out_port),
                        self.o.payload.unsupported.eq(cur_d.unsupported),
                        rem.eq(rem - BEAT_BYTES),
                        j.eq(Mux(j == 2, 2, j + 1)),
                    ]
                    with m.If(~in_done):
                        m.d.sync += [prev.eq(head), in_done.eq(head_last)]
                    with m.If(is_last):
                        with m.If(in_done | head_last):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "DRAIN"
            with m.State("DRAIN"):
                # input beats past the output's end (an empty last beat, or the beat a pop emptied)
                m.d.comb += beats.r_en.eq(1)
                with m.If(beats.r_rdy & head_last):
                    m.next = "IDLE"
        return m
