"""Header rewrite stage: one ActionEntry applied to each frame, VXLAN included.

Bit-exact with :func:`cxlnic.model.actions.apply_actions` for every action (tested
against it in Amaranth's simulator and under Verilator): VXLAN decap, VLAN pop, the
field sets, VLAN modify/push, VXLAN encap and the verdict.  See :class:`HeaderRewriter`.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from cxlnic.config import NicConfig
from cxlnic.hdl.layouts import ActionEntry
from cxlnic.hdl.parser import BEAT_BYTES, Beat
from cxlnic.hdl.util import checked_init
from cxlnic.model.actions import VXLAN_OVERHEAD, Verdict
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
    VXLAN_HLEN,
    VXLAN_PORT,
)

__all__ = ["HeaderRewriter", "RewriteOut", "HDR_WIN", "OUT_HDR", "HEAD", "CAP_BYTES", "LATENCY"]

#: Output bytes of the frame after steps 1-4 (decap, pop, set fields, push) that can differ from
#: the shifted input: the deepest rewritten byte is a TCP checksum at 18 + 60 + 16 + 1 = 95, plus 4
#: when a tag is pushed in front of it.
OUT_HDR = 100
#: Bytes of the (decapsulated) frame the header computation reads: OUT_HDR plus a popped tag.
HDR_WIN = OUT_HDR + VLAN_HLEN
#: L4 header offsets: 14 or 18 plus an IPv4 header of 20..60 bytes (IPv6: 40) -> 34 + 4n.
L4_BASE = ETH_HLEN + IPV4_HLEN
L4_SLOTS = 12
L4_WIN = TCP_HLEN
#: Offset of a VXLAN frame's inner frame: behind its L4 header slot, UDP and VXLAN -> 50 + 4n.
INNER_BASE = L4_BASE + UDP_HLEN + VXLAN_HLEN
#: Bytes of each frame captured for the header computation: the deepest inner window ends at
#: 50 + 44 + 104 = 198 (this also covers every byte the VXLAN parse reads, up to 185).
CAP_BYTES = 200
CAP_BEATS = -(-CAP_BYTES // BEAT_BYTES)
#: Computed output bytes of a frame: OUT_HDR, behind the VXLAN_OVERHEAD outer headers on encap.
HEAD = OUT_HDR + VXLAN_OVERHEAD
#: Cycles from the edge that accepts a frame's last beat to the edge that raises ``o.valid`` with
#: its first beat, when the output side is idle (plus ``pre`` = 0..2, see :class:`HeaderRewriter`).
LATENCY = 6

#: The output beat: the rewritten frame's beat and the packet's verdict (:class:`Verdict`
#: encoding) and output port.
RewriteOut = data.StructLayout({"beat": Beat, "verdict": 2, "out_port": 8})

_Desc = data.StructLayout({
    "hdr": 8 * HEAD, "encap": 1, "pre": 2, "rot": 6, "length": 16, "verdict": 2, "out_port": 8, "in_port": 8,
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


def _sig(m, shape, name, value):
    s = Signal(shape, name=name)
    m.d.comb += s.eq(value)
    return s


def _parse(m, p, w, ln):
    """``parse_headers(check_size=False, tunnels=False)`` of the frame ``w`` (``ln`` bytes long):
    ``ok`` (no exception) and the fields the rewrite needs.  Only "no exception" matters, so the
    checks are simply and-ed; fields are garbage when their checks fail."""
    has_eth = _sig(m, 1, f"{p}_has_eth", ln >= ETH_HLEN)
    vlan = _sig(m, 1, f"{p}_vlan", _be(w, 12, 2) == ETH_VLAN)
    l2ok = _sig(m, 1, f"{p}_l2ok", has_eth & (~vlan | (ln >= ETH_HLEN + VLAN_HLEN)))
    et = Mux(vlan, _be(w, 16, 2), _be(w, 12, 2))
    ip = _sig(m, 8 * 60, f"{p}_ip", Mux(vlan, w[8 * 18: 8 * 78], w[8 * 14: 8 * 74]))
    avail = _sig(m, 17, f"{p}_avail", ln - Mux(vlan, ETH_HLEN + VLAN_HLEN, ETH_HLEN))
    is4 = _sig(m, 1, f"{p}_is4", et == ETH_IPV4)
    is6 = _sig(m, 1, f"{p}_is6", et == ETH_IPV6)
    ihl = _byte(ip, 0)[:4]
    hlen = Cat(Const(0, 2), ihl)
    total = _be(ip, 2, 2)
    frag = (_byte(ip, 6)[:6] != 0) | (_byte(ip, 7) != 0)
    ok4 = _sig(m, 1, f"{p}_ok4", (avail >= IPV4_HLEN) & (_byte(ip, 0)[4:] == 4) & (ihl >= IPV4_HLEN // 4)
               & (hlen <= avail) & (total >= hlen) & (total <= avail) & ~frag)
    plen = _be(ip, 4, 2)
    nh = _byte(ip, 6)
    ext = Const(0, 1)
    for x in sorted(IPV6_EXT_HEADERS):
        ext = ext | (nh == x)
    ok6 = _sig(m, 1, f"{p}_ok6", (avail >= IPV6_HLEN) & (_byte(ip, 0)[4:] == 6) & (plen + IPV6_HLEN <= avail)
               & ~ext)
    proto = Mux(is4, _byte(ip, 9), nh)
    l4len = _sig(m, 16, f"{p}_l4len", Mux(is4, total - hlen, plen))
    tcp = _sig(m, 1, f"{p}_tcp", proto == IP_TCP)
    udp = _sig(m, 1, f"{p}_udp", proto == IP_UDP)
    l4chk = (~tcp | (l4len >= TCP_HLEN)) & (~udp | (l4len >= UDP_HLEN))
    ipok = _sig(m, 1, f"{p}_ipok", l2ok & ((is4 & ok4) | (is6 & ok6)) & l4chk)
    ok = _sig(m, 1, f"{p}_ok", Mux(is4 | is6, ipok, l2ok))
    slot = _sig(m, 4, f"{p}_slot", vlan + Mux(is4, ihl, IPV6_HLEN // 4) - IPV4_HLEN // 4)
    l4 = Signal(8 * L4_WIN, name=f"{p}_l4")
    with m.Switch(slot):
        for n in range(L4_SLOTS):
            with m.Case(n):
                m.d.comb += l4.eq(w[8 * (L4_BASE + 4 * n): 8 * (L4_BASE + 4 * n + L4_WIN)])
    return dict(has_eth=has_eth, vlan=vlan, l2ok=l2ok, is4=is4, ip=ip, ihl=ihl, tcp=tcp, udp=udp, l4len=l4len,
                ipok=ipok, ok=ok, slot=slot, l4=l4)


class HeaderRewriter(wiring.Component):
    """Apply one :class:`~cxlnic.hdl.layouts.ActionEntry` per frame, as ``apply_actions`` does.

    * ``i``: frame beats (:data:`~cxlnic.hdl.parser.Beat`, up to one with ``last``;
      ``keep`` contiguous from byte 0, a ``last`` beat with ``keep == 0`` is legal).
      ``act``: one action per frame, consumed together with the frame's **first** beat
      (``i.ready`` stays low on a first beat until ``act.valid``).
    * ``o``: :data:`RewriteOut` beats of the rewritten frame, exactly
      ``len(apply_actions(frame, action, cfg).frame)`` bytes in ``ceil(n/64)`` beats (one beat
      with ``keep == 0`` for an empty frame), no padding; ``verdict`` / ``out_port``
      (:class:`~cxlnic.model.actions.Verdict` encoding; ``out_port`` 0 unless OUTPUT)
      are the same on every beat of a frame; ``in_port`` is that of the frame's first
      input beat.  Frames with verdict DROP are still emitted (the top filters them).
      ``cfg`` is a :class:`~cxlnic.config.NicConfig` with this block's ``min_frame`` and
      ``max_frame`` (only the decap's runt/oversize checks use them).
    * Every step: ``vxlan_decap`` (the VXLAN parse of ``parse_headers``, outer and inner,
      with the runt/oversize checks; the inner frame is cut out up to the UDP datagram's
      end), ``vlan_pop``, ``set_eth_src/dst``, ``set_ipv4_src/dst`` (IPv4 header checksum
      recomputed, TCP/UDP checksum updated incrementally), ``set_tp_src/dst``,
      ``vlan_set`` (modify or push), ``vxlan_encap`` (50 bytes of outer headers with the
      IPv4 total length and header checksum and the UDP length of the frame), the
      verdict; ``ct_commit`` changes nothing.
    * Store and forward: the frame is buffered whole (whether a rewrite applies depends
      on the frame length: the size, IP/L4 and UDP length checks) while its first
      :data:`CAP_BYTES` bytes are captured.  Two register stages then compute (1) the
      VXLAN parse and the (inner) frame's :data:`HDR_WIN`-byte window, (2) the first
      :data:`HEAD` output bytes (the 50 encap bytes, then :data:`OUT_HDR` rewritten bytes;
      without encap only the :data:`OUT_HDR`), the output length and the shift ``s``:
      every later output byte ``q`` is input byte ``q + s``, ``s = decap offset (0, or
      50..94) + 4 pop - 4 push - 50 encap`` (-54..98).  The output side skips
      ``pre = max(0, ceil(s / 64))`` (0..2) input beats, then streams the buffered beats
      through a byte barrel shifter (the previous and the current beat, shifted by a
      per-frame amount) at one beat per cycle, and finally drops input beats past the
      output's end (outer padding of a decapsulated frame, an empty last beat).
      ``depth`` beats of buffer (default: two maximum frames, so one frame streams in
      while the previous one streams out).  Precondition: a frame has at most
      ``depth - 1`` beats (``max_frame`` bytes plus an empty last beat always fit);
      a longer frame stalls the block forever.
    * Throughput: input one beat per cycle; the output side spends
      ``1 + max(n_in, pre + n_out)`` cycles on a frame of ``n_in`` input and ``n_out``
      output beats: one beat per cycle of the longer of the two, plus at most
      ``1 + pre`` <= 3 idle cycles per frame (``pre`` is 0 without decap and pop, 1 for a
      pop without a push, 1 or 2 for a decap without encap, 0 or 1 for decap + encap).  Latency: ``o.valid`` with the
      frame's first beat rises on the (:data:`LATENCY` + ``pre``)th = 6th..8th rising
      edge counting the one that accepts its last input beat, when ``o`` was idle.
    * Order: frames leave in input order; the whole block stalls on ``o`` backpressure;
      ``valid`` never depends on ``ready``.
    """

    @checked_init
    def __init__(self, *, min_frame: int | None = None, max_frame: int | None = None, depth: int | None = None):
        dflt = NicConfig()
        max_frame = dflt.max_frame if max_frame is None else max_frame
        if not isinstance(max_frame, int) or isinstance(max_frame, bool):
            raise TypeError(f"max_frame = {max_frame!r}: must be an integer")
        if not ETH_HLEN <= max_frame <= 0xFFFF - 2 * BEAT_BYTES:
            raise ValueError(f"max_frame = {max_frame}: need {ETH_HLEN} <= max_frame <= {0xFFFF - 2 * BEAT_BYTES}")
        min_frame = min(dflt.min_frame, max_frame) if min_frame is None else min_frame
        if not isinstance(min_frame, int) or isinstance(min_frame, bool):
            raise TypeError(f"min_frame = {min_frame!r}: must be an integer")
        if not ETH_HLEN <= min_frame <= max_frame:
            raise ValueError(f"min_frame = {min_frame}: need {ETH_HLEN} <= min_frame <= max_frame = {max_frame}")
        beats = -(-max_frame // BEAT_BYTES) + 1
        depth = 2 * beats + 2 if depth is None else depth
        if not isinstance(depth, int) or isinstance(depth, bool):
            raise TypeError(f"depth = {depth!r}: must be an integer")
        if depth < beats + 1:
            raise ValueError(f"depth = {depth}: must be at least {beats + 1} beats to hold a {max_frame}-byte frame")
        self._min_frame = min_frame
        self._max_frame = max_frame
        self._depth = depth
        super().__init__({
            "i": In(stream.Signature(Beat)),
            "act": In(stream.Signature(ActionEntry)),
            "o": Out(stream.Signature(RewriteOut)),
        })

    @property
    def min_frame(self) -> int:
        return self._min_frame

    @property
    def max_frame(self) -> int:
        return self._max_frame

    @property
    def depth(self) -> int:
        return self._depth

    # -- step 1: VXLAN decap (combinational, from one captured frame) ---------------------
    def _decap(self, m, cap, length, a):
        """Whether ``a`` decapsulates the frame ``cap`` (``length`` bytes); the (inner) frame's window,
        length and offset."""
        o = _parse(m, "dx_o", cap, length)
        l4 = o["l4"]
        ulen = _be(l4, 4, 2)
        size_ok = (length >= self._min_frame) & (length <= self._max_frame)
        vx = _sig(m, 1, "dx_vxlan", o["ipok"] & o["udp"] & (_be(l4, 2, 2) == VXLAN_PORT) & (ulen <= o["l4len"])
                  & (ulen >= UDP_HLEN + VXLAN_HLEN) & _byte(l4, UDP_HLEN)[3])
        iwin = Signal(8 * HDR_WIN, name="dx_iwin")
        with m.Switch(o["slot"]):
            for n in range(L4_SLOTS):
                with m.Case(n):
                    m.d.comb += iwin.eq(cap[8 * (INNER_BASE + 4 * n): 8 * (INNER_BASE + 4 * n + HDR_WIN)])
        ilen = _sig(m, 16, "dx_ilen", ulen - UDP_HLEN - VXLAN_HLEN)
        inner = _parse(m, "dx_i", iwin, ilen)
        dec = _sig(m, 1, "dx_decap", a.vxlan_decap & size_ok & vx & inner["ok"])
        return (Mux(dec, iwin, cap[:8 * HDR_WIN]), Mux(dec, ilen, length),
                Mux(dec, INNER_BASE + 4 * o["slot"], 0))

    # -- steps 2-5: the header computation (combinational, from the (inner) frame's window) --
    def _compute(self, m, hdr, length, a):
        """The first HEAD output bytes, the output length and whether a tag was popped / pushed."""
        def sig(shape, name, value):
            return _sig(m, shape, name, value)

        # step 2: vlan_pop
        tagged0 = sig(1, "rw_tagged0", (length >= ETH_HLEN + VLAN_HLEN) & (_be(hdr, 12, 2) == ETH_VLAN))
        popped = sig(1, "rw_popped", a.vlan_pop & tagged0)
        w0 = sig(8 * HDR_WIN, "rw_w0", Mux(popped, Cat(hdr[:8 * 12], hdr[8 * 16:]), hdr))
        ln = sig(16, "rw_len1", Mux(popped, length - VLAN_HLEN, length))

        # step 3a: MAC rewrites
        has_eth = sig(1, "rw_eth", ln >= ETH_HLEN)
        w1 = Signal(8 * HDR_WIN, name="rw_w1")
        m.d.comb += w1.eq(w0)
        with m.If(has_eth & a.set_eth_src):
            m.d.comb += w1[8 * 6: 8 * 12].eq(_wire(a.eth_src, 6))
        with m.If(has_eth & a.set_eth_dst):
            m.d.comb += w1[0: 8 * 6].eq(_wire(a.eth_dst, 6))

        # the parse of the current frame (parse_headers(check_size=False, tunnels=False))
        p = _parse(m, "rw_p", w1, ln)
        vlan, ip, ihl, tcp, udp, slot, l4 = p["vlan"], p["ip"], p["ihl"], p["tcp"], p["udp"], p["slot"], p["l4"]
        ip_ok = sig(1, "rw_ip_ok", p["ipok"] & p["is4"])
        tp_ok = sig(1, "rw_tp_ok", p["ipok"] & (tcp | udp))

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
        out = sig(8 * OUT_HDR, "rw_out", Mux(push, Cat(w3[:8 * 12], _wire(Const(ETH_VLAN, 16), 2),
                                                       _wire(tci_push, 2), w3[8 * 12:]), w3))
        olen = sig(16, "rw_olen", Mux(push, ln + VLAN_HLEN, ln))

        # step 5: vxlan_encap (as model.actions.vxlan_encap)
        total = sig(16, "en_total", olen + (IPV4_HLEN + UDP_HLEN + VXLAN_HLEN))
        ulen = sig(16, "en_ulen", olen + (UDP_HLEN + VXLAN_HLEN))
        csum = 0x4500 + 0x4000 + 0x4011 + total
        for w in (a.encap_ip_src[16:], a.encap_ip_src[:16], a.encap_ip_dst[16:], a.encap_ip_dst[:16]):
            csum = csum + w
        ecs = sig(16, "en_csum", ~_fold(sig(20, "en_sum", csum)))
        ehdr = sig(8 * VXLAN_OVERHEAD, "en_hdr", Cat(
            _wire(a.encap_eth_dst, 6), _wire(a.encap_eth_src, 6), _wire(Const(ETH_IPV4, 16), 2),
            _wire(Const(0x4500, 16), 2), _wire(total, 2), Const(0, 16), _wire(Const(0x4000, 16), 2),
            _wire(Const(0x4011, 16), 2), _wire(ecs, 2), _wire(a.encap_ip_src, 4), _wire(a.encap_ip_dst, 4),
            _wire(a.encap_udp_src, 2), _wire(Const(VXLAN_PORT, 16), 2), _wire(ulen, 2), Const(0, 16),
            Const(0x08, 8), Const(0, 24), _wire(a.encap_vni, 3), Const(0, 8)))
        enc = a.vxlan_encap
        head = Mux(enc, Cat(ehdr, out), out)
        length_out = Mux(enc, olen + VXLAN_OVERHEAD, olen)[:16]
        return head, length_out, popped, push

    def elaborate(self, platform):
        m = Module()
        beat = self.i.payload
        act = self.act.payload

        m.submodules.beats = beats = SyncFIFOBuffered(width=8 * BEAT_BYTES + 1, depth=self._depth)
        m.submodules.descs = descs = SyncFIFOBuffered(width=_Desc.size, depth=4)

        # -- input: capture the first CAP_BYTES bytes, the length and the action --------
        first = Signal(init=1)
        nbeat = Signal(range(CAP_BEATS + 1))
        acc = Signal(16)
        hbuf = Signal(8 * CAP_BYTES, reset_less=True)
        act_r = Signal(ActionEntry)
        port_r = Signal(8)
        p1_valid = Signal()
        p1_hdr = Signal(8 * CAP_BYTES, reset_less=True)
        p1_len = Signal(16, reset_less=True)
        p1_act = Signal(ActionEntry, reset_less=True)
        p1_port = Signal(8, reset_less=True)
        p2_valid = Signal()
        p2_hdr = Signal(8 * HDR_WIN, reset_less=True)
        p2_len = Signal(16, reset_less=True)
        p2_off = Signal(7, reset_less=True)
        p2_act = Signal(ActionEntry, reset_less=True)
        p2_port = Signal(8, reset_less=True)
        p2_free = ~p2_valid | descs.w_rdy
        p1_free = ~p1_valid | p2_free
        m.d.comb += self.i.ready.eq(beats.w_rdy & p1_free & (~first | self.act.valid))
        take = self.i.valid & self.i.ready
        m.d.comb += [
            self.act.ready.eq(take & first),
            beats.w_en.eq(take),
            beats.w_data.eq(Cat(beat.data, beat.last)),
        ]
        merged = Signal(8 * CAP_BYTES)
        m.d.comb += merged.eq(Cat(*[
            Mux(nbeat == j, beat.data[:8 * (min(CAP_BYTES, BEAT_BYTES * (j + 1)) - BEAT_BYTES * j)],
                hbuf[8 * BEAT_BYTES * j: 8 * min(CAP_BYTES, BEAT_BYTES * (j + 1))])
            for j in range(CAP_BEATS)]))
        total = Signal(16)
        m.d.comb += total.eq(acc + _popcount(beat.keep))
        cur_act = Mux(first, act, act_r)
        with m.If(p2_free):
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
                with m.If(nbeat != CAP_BEATS):
                    m.d.sync += nbeat.eq(nbeat + 1)

        # -- stage 1: VXLAN decap -> the (inner) frame's window -------------------------
        win1, len1, off1 = self._decap(m, p1_hdr, p1_len, p1_act)
        with m.If(descs.w_rdy):
            m.d.sync += p2_valid.eq(0)
        with m.If(p2_free & p1_valid):
            m.d.sync += [p2_valid.eq(1), p2_hdr.eq(win1), p2_len.eq(len1), p2_off.eq(off1), p2_act.eq(p1_act),
                         p2_port.eq(p1_port)]

        # -- stage 2: the header computation into the descriptor FIFO ------------------
        head, olen, popped, push = self._compute(m, p2_hdr, p2_len, p2_act)
        a = p2_act
        verdict = Mux(a.drop, Verdict.DROP, Mux(a.to_host, Verdict.TO_HOST, Mux(a.output, Verdict.OUTPUT,
                                                                                   Verdict.DROP)))
        # output byte q >= HEAD (OUT_HDR without encap) is input byte q + s; biased: u = s + 127,
        # pre = max(0, ceil(s / 64)) = u // 64 - 1, and the byte offset into Cat(prev, head) is u % 64 + 1
        shift = Signal(8, name="rw_shift")
        m.d.comb += shift.eq(2 * BEAT_BYTES - 1 + p2_off + Cat(Const(0, 2), popped) - Cat(Const(0, 2), push)
                             - Mux(a.vxlan_encap, VXLAN_OVERHEAD, 0))
        d_in = Signal(_Desc)
        m.d.comb += [
            d_in.hdr.eq(head),
            d_in.encap.eq(a.vxlan_encap),
            d_in.pre.eq(shift[6:] - 1),
            d_in.rot.eq(shift[:6]),
            d_in.length.eq(olen),
            d_in.verdict.eq(verdict),
            d_in.out_port.eq(Mux(verdict == Verdict.OUTPUT, a.out_port, 0)),
            d_in.in_port.eq(p2_port),
            descs.w_data.eq(d_in),
            descs.w_en.eq(p2_valid),
        ]

        # -- output: stream the buffered frame out, head replaced, barrel-shifted -------
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        d = Signal(_Desc, reset_less=True)
        m.d.comb += d.eq(descs.r_data)
        cur_d = Signal(_Desc, reset_less=True)
        prev = Signal(8 * BEAT_BYTES, reset_less=True)
        in_done = Signal()
        pcnt = Signal(2)            # beats still to skip / preload before the first output beat
        rem = Signal(17)            # output bytes of this frame still to send
        j = Signal(2)               # output beat number, saturating at 3
        head_beat = beats.r_data[:8 * BEAT_BYTES]
        head_last = beats.r_data[-1]
        win = Signal(16 * BEAT_BYTES)
        m.d.comb += win.eq(Cat(prev, head_beat))
        shifted = Signal(8 * BEAT_BYTES)
        m.d.comb += shifted.eq(win[8:].bit_select(Cat(Const(0, 3), cur_d.rot), 8 * BEAT_BYTES))
        hb = cur_d.hdr

        def out_byte(q, b):
            if q < OUT_HDR:
                return _byte(hb, q)
            if q < HEAD:
                return Mux(cur_d.encap, _byte(hb, q), _byte(shifted, b))
            return _byte(shifted, b)

        ob = Signal(8 * BEAT_BYTES)
        with m.Switch(j):
            for n in range(3):
                with m.Case(n):
                    m.d.comb += ob.eq(Cat(*[out_byte(BEAT_BYTES * n + b, b) for b in range(BEAT_BYTES)]))
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
                    m.d.sync += [cur_d.eq(d), in_done.eq(0), rem.eq(d.length), j.eq(0), pcnt.eq(d.pre)]
                    with m.If(d.pre != 0):
                        m.next = "PREFETCH"
                    with m.Else():
                        m.next = "RUN"
            with m.State("PREFETCH"):
                # skip the input beats wholly before the output's shifted bytes, keep the last in prev
                m.d.comb += beats.r_en.eq(~in_done)
                with m.If(in_done | beats.r_rdy):
                    m.d.sync += pcnt.eq(pcnt - 1)
                    with m.If(~in_done):
                        m.d.sync += [prev.eq(head_beat), in_done.eq(head_last)]
                    with m.If(pcnt == 1):
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
                        rem.eq(rem - BEAT_BYTES),
                        j.eq(Mux(j == 3, 3, j + 1)),
                    ]
                    with m.If(~in_done):
                        m.d.sync += [prev.eq(head_beat), in_done.eq(head_last)]
                    with m.If(is_last):
                        with m.If(in_done | head_last):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "DRAIN"
            with m.State("DRAIN"):
                # input beats past the output's end (outer padding of a decapsulated frame, an
                # empty last beat, the beat a pop emptied)
                m.d.comb += beats.r_en.eq(1)
                with m.If(beats.r_rdy & head_last):
                    m.next = "IDLE"
        return m
