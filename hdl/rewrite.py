"""Header rewrite stage: one ActionEntry applied to each frame, VXLAN included.

Bit-exact with :func:`cxlnic.model.actions.apply_actions` for every action (tested
against it in Amaranth's simulator and under Verilator): VXLAN decap, VLAN pop, the
field sets, VLAN modify/push, VXLAN encap and the verdict.  See :class:`HeaderRewriter`.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
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
#: its first beat, when the output side is idle (plus ``pre`` = 0..2, see :class:`HeaderRewriter`):
#: the capture, 10 header pipeline stages, the descriptor RAM write, its read, the output's idle
#: cycle and the output's two register stages.
LATENCY = 16
#: Frames between the capture of their last beat and the end of their output (descriptor RAM entries).
DESCS = 16

#: The output beat: the rewritten frame's beat and the packet's verdict (:class:`Verdict`
#: encoding) and output port.
RewriteOut = data.StructLayout({"beat": Beat, "verdict": 2, "out_port": 8})

#: A frame's descriptor, written by the header pipeline: the first OUT_HDR bytes of the frame after
#: steps 1-4, the variable fields of the VXLAN encap header that depend on them, the output length
#: and the shift (see :class:`HeaderRewriter`).
_Desc = data.StructLayout({
    "out": 8 * OUT_HDR, "length": 16, "pre": 2, "rot": 6, "total": 16, "ulen": 16, "ecs": 16,
})
#: A frame's side entry, written when it is captured: what the output side takes from the action as is.
_Side = data.StructLayout({
    "encap": 1, "eth_dst": 48, "eth_src": 48, "ip_src": 32, "ip_dst": 32, "udp_src": 16, "vni": 24,
    "verdict": 2, "out_port": 8, "in_port": 8,
})
#: The action fields the header pipeline carries past the pop (``esum``: the encap header's IPv4
#: checksum sum bar the total length).
_LateAct = data.StructLayout({
    "vlan_set": 1, "vlan_vid": 12, "vlan_pcp": 3, "set_ipv4_src": 1, "set_ipv4_dst": 1, "set_tp_src": 1,
    "set_tp_dst": 1, "ipv4_src": 32, "ipv4_dst": 32, "tp_src": 16, "tp_dst": 16, "vxlan_encap": 1, "esum": 19,
})


def _byte(win, k):
    return win[8 * k: 8 * k + 8]


def _be(win, k, n):
    """The ``n``-byte big-endian number at byte ``k`` of ``win``."""
    return Cat(*[_byte(win, k + j) for j in reversed(range(n))])


def _wire(value, n):
    """The ``n`` wire bytes (big-endian) of ``value`` as a little-endian window."""
    return Cat(*[value[8 * j: 8 * j + 8] for j in reversed(range(n))])


def _keep_count(keep):
    """The number of ones of ``keep``, which is contiguous from bit 0 (a thermometer code): count
    bit b is set iff the count lies in some [lo, lo + 2^b) with lo = 2^b mod 2^(b + 1), i.e. iff
    ``keep[lo - 1] & ~keep[lo + 2^b - 1]`` for one such lo.  An and-or a few LUTs deep, where a
    popcount is an adder tree six carry chains deep."""
    n = len(keep)
    bits = []
    for b in range(n.bit_length()):
        step = 1 << b
        hit = Const(0, 1)
        for lo in range(step, n + 1, 2 * step):
            hit = hit | (keep[lo - 1] & (~keep[lo + step - 1] if lo + step - 1 < n else 1))
        bits.append(hit)
    return Cat(*bits)


def _fold(s):
    s1 = s[:16] + s[16:]
    return (s1[:16] + s1[16:])[:16]


def _r(m, value, name):
    """``value`` one cycle later: a pipeline register (the header pipeline never stalls, so no enable)."""
    shape = value.shape() if isinstance(value, data.View) else Value.cast(value).shape()
    s = Signal(shape, name=name, reset_less=True)
    m.d.sync += s.eq(value)
    return s


def _stage(m, k, vals):
    """The dict of values ``vals`` registered as pipeline stage ``k`` (lists: element-wise)."""
    out = {}
    for n, v in vals.items():
        if isinstance(v, list):
            out[n] = [_r(m, x, f"s{k}_{n}{i}") for i, x in enumerate(v)]
        else:
            out[n] = _r(m, v, f"s{k}_{n}")
    return out


def _adds(terms, levels):
    """``levels`` levels of a pairwise adder tree over ``terms`` (widening, so the sums are exact)."""
    for _ in range(levels):
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms


def _slot_mux(m, name, w, slot, base, nbytes):
    """The ``nbytes`` bytes of ``w`` at ``base + 4 * slot`` (0 for a slot past L4_SLOTS)."""
    s = Signal(8 * nbytes, name=name)
    with m.Switch(slot):
        for n in range(L4_SLOTS):
            with m.Case(n):
                m.d.comb += s.eq(w[8 * (base + 4 * n): 8 * (base + 4 * n + nbytes)])
    return s


def _parse_a(w):
    """First half of ``parse_headers(check_size=False, tunnels=False)`` of the frame in window ``w``:
    everything that does not depend on the frame's length, from its first 28 bytes only (so it can
    also run on a frame's first beat).  Fields are garbage where their checks fail."""
    vlan = _be(w, 12, 2) == ETH_VLAN
    base = Mux(vlan, ETH_HLEN + VLAN_HLEN, ETH_HLEN)

    def ipb(k):         # byte k of the IP header
        return Mux(vlan, _byte(w, ETH_HLEN + VLAN_HLEN + k), _byte(w, ETH_HLEN + k))

    # each comparison on both candidate offsets, then the mux: shallower than mux-then-compare
    is4 = Mux(vlan, _be(w, 16, 2) == ETH_IPV4, _be(w, 12, 2) == ETH_IPV4)
    is6 = Mux(vlan, _be(w, 16, 2) == ETH_IPV6, _be(w, 12, 2) == ETH_IPV6)
    b0 = ipb(0)
    ihl = b0[:4]
    hlen = Cat(Const(0, 2), ihl)
    total = Cat(ipb(3), ipb(2))
    plen = Cat(ipb(5), ipb(4))
    nh = ipb(6)
    ext = Const(0, 1)
    for x in sorted(IPV6_EXT_HEADERS):
        ext = ext | (nh == x)
    proto = Mux(is4, ipb(9), nh)
    return dict(
        vlan=vlan, is4=is4, is6=is6, ihl=ihl, tcp=proto == IP_TCP, udp=proto == IP_UDP,
        ver4=b0[4:] == 4, ver6=b0[4:] == 6, ihl_ok=ihl >= IPV4_HLEN // 4, tot_ok=total >= hlen,
        frag=(ipb(6)[:6] != 0) | (ipb(7) != 0), ext=ext,
        l4len=Mux(is4, total - hlen, plen)[:16],
        slot=(vlan + Mux(is4, ihl, IPV6_HLEN // 4) - IPV4_HLEN // 4)[:4],
        # the "fits in the frame" bounds as frame lengths (avail = ln - base >= x  <=>  ln >= base + x:
        # exact wherever it matters, as every check below is and-ed with l2ok, i.e. ln >= base)
        h4=base + hlen, t4=base + total, l6=base + IPV6_HLEN + plen,
    )


def _parse_b(a, ln):
    """Second half of the parse: the checks against the frame length ``ln``, from the registered
    :func:`_parse_a` fields ``a``.  ``ok`` (no exception) and ``ipok`` (IPv4/IPv6 with a sane L4)."""
    vlan = a["vlan"]
    has_eth = ln >= ETH_HLEN
    l2ok = has_eth & (~vlan | (ln >= ETH_HLEN + VLAN_HLEN))
    ok4 = (ln >= Mux(vlan, ETH_HLEN + VLAN_HLEN + IPV4_HLEN, ETH_HLEN + IPV4_HLEN)) & a["ver4"] & a["ihl_ok"] \
        & (ln >= a["h4"]) & a["tot_ok"] & (ln >= a["t4"]) & ~a["frag"]
    ok6 = (ln >= Mux(vlan, ETH_HLEN + VLAN_HLEN + IPV6_HLEN, ETH_HLEN + IPV6_HLEN)) & a["ver6"] \
        & (ln >= a["l6"]) & ~a["ext"]
    l4chk = (~a["tcp"] | (a["l4len"] >= TCP_HLEN)) & (~a["udp"] | (a["l4len"] >= UDP_HLEN))
    ipok = l2ok & ((a["is4"] & ok4) | (a["is6"] & ok6)) & l4chk
    return dict(ipok=ipok, ok=Mux(a["is4"] | a["is6"], ipok, l2ok))


def _tagged(vlan, ln):
    return vlan & (ln >= ETH_HLEN + VLAN_HLEN)


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
      :data:`CAP_BYTES` bytes are captured.  A pipeline of 10 register stages that never
      stalls then computes (VXLAN parse, the (inner) frame's :data:`HDR_WIN`-byte
      window, pop, the parse of the result, the checksums as pipelined adder trees, the
      write-back and push) the frame's descriptor into a block RAM of :data:`DESCS` entries:
      the :data:`OUT_HDR` rewritten bytes, the variable fields of the 50 encap bytes, the
      output length and the shift ``s``: every later output byte ``q`` is input byte
      ``q + s``, ``s = decap offset (0, or 50..94) + 4 pop - 4 push - 50 encap``
      (-54..98).  A frame's last beat is only accepted when a descriptor entry is free
      (entries are freed when a frame has left).  The output side skips
      ``pre = max(0, ceil(s / 64))`` (0..2) input beats, then streams the buffered beats
      (through a 3-beat FIFO, so no block RAM output feeds logic) through a byte barrel
      shifter (the previous and the current beat, shifted by a per-frame amount) at one beat
      per cycle, the first :data:`HEAD` bytes (with encap; :data:`OUT_HDR` without) taken from
      the descriptor, into two output register stages, and finally drops input beats past
      the output's end (outer padding of a decapsulated frame, an empty last beat).
      ``depth`` beats of buffer (default: two maximum frames, so one frame streams in
      while the previous one streams out).  Precondition: a frame has at most
      ``depth - 1`` beats (``max_frame`` bytes plus an empty last beat always fit);
      a longer frame stalls the block forever.
    * Throughput: input one beat per cycle; the output side spends
      ``1 + max(n_in, pre + n_out)`` cycles on a frame of ``n_in`` input and ``n_out``
      output beats: one beat per cycle of the longer of the two, plus at most
      ``1 + pre`` <= 3 idle cycles per frame (``pre`` is 0 without decap and pop, 1 for a
      pop without a push, 1 or 2 for a decap without encap, 0 or 1 for decap + encap).  Latency: ``o.valid`` with the
      frame's first beat rises on the (:data:`LATENCY` + ``pre``)th rising edge counting the
      one that accepts its last input beat, when ``o`` was idle.
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

    # -- the header pipeline: stage k is registered as s{k}_*; each stage's logic is a few LUT
    # levels or two carry chains deep.  Stage 1 is the capture (hbuf, the outer parse's first
    # half, taken from the frame's first beat, the action); it writes the side entry.
    def _pipeline(self, m, v1, hbuf, oa, a, length):
        """The descriptor of the frame captured in stage 1 (``v1``): returns (valid, _Desc value)."""
        # -- stage 1 -> 2: the outer L4 header and the candidate inner window (both by the outer
        # slot, known since the first beat), the size check
        s = _stage(m, 2, dict(
            v=v1, oa=list(oa.values()), len=length,
            o_l4=_slot_mux(m, "c1_o_l4", hbuf, oa["slot"], L4_BASE, L4_WIN),
            iwin=_slot_mux(m, "c1_iwin", hbuf, oa["slot"], INNER_BASE, HDR_WIN),
            owin=hbuf[:8 * HDR_WIN],
            size_ok=(length >= self._min_frame) & (length <= self._max_frame),
            to=_tagged(oa["vlan"], length),
            off=INNER_BASE + 4 * oa["slot"],
            decap=a.vxlan_decap, pop=a.vlan_pop, set_eth_src=a.set_eth_src, set_eth_dst=a.set_eth_dst,
            eth_src=a.eth_src, eth_dst=a.eth_dst,
            act=self._late_act(m, a),
        ))
        oa2 = dict(zip(oa.keys(), s["oa"], strict=True))

        # -- 2 -> 3: the outer checks and the VXLAN test (steps of vxlan_decap); the inner parse's
        # first half.  ilen >= 18 <=> ulen >= 34 (wherever it matters: under vx, ulen >= 16)
        ob = _parse_b(oa2, s["len"])
        l4 = s["o_l4"]
        ulen = _be(l4, 4, 2)
        vx = (ob["ipok"] & oa2["udp"] & (_be(l4, 2, 2) == VXLAN_PORT) & (ulen <= oa2["l4len"])
              & (ulen >= UDP_HLEN + VXLAN_HLEN) & _byte(l4, UDP_HLEN)[3])
        ia = _parse_a(s["iwin"])
        inner_len = (ulen - (UDP_HLEN + VXLAN_HLEN))[:16]
        s = _stage(m, 3, dict(
            v=s["v"], ia=list(ia.values()), vx=vx, ilen=inner_len, ilen_pop=(ulen - (UDP_HLEN + VXLAN_HLEN + 4))[:16],
            ieth=ulen >= UDP_HLEN + VXLAN_HLEN + ETH_HLEN,
            ti=ia["vlan"] & (ulen >= UDP_HLEN + VXLAN_HLEN + ETH_HLEN + VLAN_HLEN),
            len=s["len"], len_pop=(s["len"] - VLAN_HLEN)[:16], oeth=s["len"] >= ETH_HLEN,
            **{k: s[k] for k in ("iwin", "owin", "size_ok", "to", "off", "decap", "pop", "set_eth_src",
                                 "set_eth_dst", "eth_src", "eth_dst", "act")}))
        ia3 = dict(zip(ia.keys(), s["ia"], strict=True))

        # -- 3 -> 4: the inner checks -> decap or not
        ib = _parse_b(ia3, s["ilen"])
        s = _stage(m, 4, dict(
            v=s["v"], dec=s["decap"] & s["size_ok"] & s["vx"] & ib["ok"], pop_i=s["pop"] & s["ti"],
            pop_o=s["pop"] & s["to"],
            **{k: s[k] for k in ("ilen", "ilen_pop", "len", "len_pop", "ieth", "oeth", "off", "set_eth_src",
                                 "set_eth_dst", "iwin", "owin", "eth_src", "eth_dst", "act")}))

        # -- 4 -> 5: vlan_pop: the (inner) frame after it is an and-or of four candidate windows;
        # the MAC rewrites (step 3a)
        dec, pop_i, pop_o = s["dec"], s["pop_i"], s["pop_o"]
        popped = Mux(dec, pop_i, pop_o)
        # a popped frame had >= 18 bytes, so still has an Ethernet header
        heth = popped | Mux(dec, s["ieth"], s["oeth"])
        ln = Mux(dec, Mux(pop_i, s["ilen_pop"], s["ilen"]), Mux(pop_o, s["len_pop"], s["len"]))
        off = Mux(dec, s["off"], 0)

        def popw(w):
            return Cat(w[:8 * 12], w[8 * 16:], Const(0, 8 * VLAN_HLEN))
        sel = [dec & pop_i, dec & ~pop_i, ~dec & pop_o, ~dec & ~pop_o]
        w0 = ((popw(s["iwin"]) & sel[0].replicate(8 * HDR_WIN)) | (s["iwin"] & sel[1].replicate(8 * HDR_WIN))
              | (popw(s["owin"]) & sel[2].replicate(8 * HDR_WIN)) | (s["owin"] & sel[3].replicate(8 * HDR_WIN)))
        w1 = Signal(8 * HDR_WIN, name="c4_w1")
        m.d.comb += w1.eq(w0)
        with m.If(s["set_eth_src"] & heth):
            m.d.comb += w1[8 * 6: 8 * 12].eq(_wire(s["eth_src"], 6))
        with m.If(s["set_eth_dst"] & heth):
            m.d.comb += w1[0: 8 * 6].eq(_wire(s["eth_dst"], 6))
        s = _stage(m, 5, dict(v=s["v"], w=w1, ln=ln, popped=popped, off=off, act=s["act"]))

        # -- 5 -> 6: the parse's first half on the current frame; vlan_set's decision (step 4:
        # bytes 12..15 are not changed by steps 3b..3d)
        a = s["act"]
        w, ln = s["w"], s["ln"]
        pa = _parse_a(w)
        tagged1 = _tagged(pa["vlan"], ln)
        push = a.vlan_set & ~tagged1 & (ln >= ETH_HLEN)
        s = _stage(m, 6, dict(
            v=s["v"], pa=list(pa.values()), ip=Mux(pa["vlan"], w[8 * 18: 8 * 78], w[8 * 14: 8 * 74]),
            push=push, modify=a.vlan_set & tagged1, olen=Mux(push, ln + VLAN_HLEN, ln)[:16],
            w=w, ln=ln, popped=s["popped"], off=s["off"], act=a))
        pa6 = dict(zip(pa.keys(), s["pa"], strict=True))

        # -- 6 -> 7: the parse's checks, the L4 header; first sums.  RFC 1624: chaining
        # HC' = ~(~HC + ~m + m') over the changed words (as _replace_words does) equals one
        # sum ~HC + sum(~m_i + m'_i) folded once: the end-around-carry fold only depends on the
        # sum modulo 0xFFFF and on whether it is zero, and so does every partial step (for UDP
        # the step's 0 -> 0xFFFF also keeps the residue).  So the words' deltas are summed in
        # a tree here and below.
        a = s["act"]
        ip, ihl, olen = s["ip"], pa6["ihl"], s["olen"]
        pb = _parse_b(pa6, s["ln"])
        # the new IPv4 header's words bar the checksum (0) and the addresses (added at 7 -> 8)
        ipw = [_be(ip, 2 * j, 2) for j in range(5)]
        ipw += [Mux(j < 2 * ihl, _be(ip, 2 * j, 2), 0) for j in range(10, 30)]

        def delta(old, new):
            return (~old)[:16] + new
        enc = a.vxlan_encap
        s = _stage(m, 7, dict(
            v=s["v"], ipok=pb["ipok"], is4=pa6["is4"], tcp=pa6["tcp"], udp=pa6["udp"], slot=pa6["slot"],
            vlan=pa6["vlan"], l4=_slot_mux(m, "c6_l4", s["w"], pa6["slot"], L4_BASE, L4_WIN),
            ipw=_adds(ipw, 2),
            src_old=_be(ip, 12, 2) + _be(ip, 14, 2), dst_old=_be(ip, 16, 2) + _be(ip, 18, 2),
            src_new=a.ipv4_src[16:] + a.ipv4_src[:16], dst_new=a.ipv4_dst[16:] + a.ipv4_dst[:16],
            d_src=delta(_be(ip, 12, 2), a.ipv4_src[16:]) + delta(_be(ip, 14, 2), a.ipv4_src[:16]),
            d_dst=delta(_be(ip, 16, 2), a.ipv4_dst[16:]) + delta(_be(ip, 18, 2), a.ipv4_dst[:16]),
            total=(olen + (IPV4_HLEN + UDP_HLEN + VXLAN_HLEN))[:16], ulen=(olen + (UDP_HLEN + VXLAN_HLEN))[:16],
            length=Mux(enc, olen + VXLAN_OVERHEAD, olen)[:16],
            # output byte q >= HEAD (OUT_HDR without encap) is input byte q + s; biased: u = s + 127,
            # pre = max(0, ceil(s / 64)) = u // 64 - 1, and the byte offset into Cat(prev, head) is u % 64 + 1
            shift=(2 * BEAT_BYTES - 1 + s["off"] + Cat(Const(0, 2), s["popped"]) - Cat(Const(0, 2), s["push"])
                   - Mux(enc, VXLAN_OVERHEAD, 0))[:8],
            **{k: s[k] for k in ("w", "push", "modify", "act")}))

        # -- 7 -> 8: which steps apply; the L4 sum's terms (a skipped step adds 0); the IPv4 sum
        a = s["act"]
        l4 = s["l4"]
        ip_ok = s["ipok"] & s["is4"]
        tp_ok = s["ipok"] & (s["tcp"] | s["udp"])
        do = {
            "ip_src": ip_ok & a.set_ipv4_src, "ip_dst": ip_ok & a.set_ipv4_dst,
            "tp_src": tp_ok & a.set_tp_src, "tp_dst": tp_ok & a.set_tp_dst,
        }
        hc0 = Mux(s["tcp"], _be(l4, 16, 2), _be(l4, 6, 2))
        x0 = (~hc0)[:16] + Mux(do["tp_src"], delta(_be(l4, 0, 2), a.tp_src), 0)
        x1 = Mux(do["ip_src"], s["d_src"], 0) + Mux(do["ip_dst"], s["d_dst"], 0)
        x2 = Mux(do["tp_dst"], delta(_be(l4, 2, 2), a.tp_dst), 0)
        s = _stage(m, 8, dict(
            v=s["v"], x=[x0, x1, x2], ipw=_adds(s["ipw"], 2),
            ipa=Mux(do["ip_src"], s["src_new"], s["src_old"]) + Mux(do["ip_dst"], s["dst_new"], s["dst_old"]),
            # UDP: a zero checksum means "none" and stays
            hc0=hc0, keep=s["udp"] & (hc0 == 0), tcp=s["tcp"], udp=s["udp"], tp_ok=tp_ok, esum=a.esum + s["total"],
            do=Cat(*do.values()), sport=_be(l4, 0, 2), dport=_be(l4, 2, 2),
            **{k: s[k] for k in ("slot", "vlan", "total", "ulen", "length", "shift", "w", "push", "modify",
                                 "act")}))

        # -- 8 -> 9: the sums' last adders; the encap header's IPv4 checksum
        s = _stage(m, 9, dict(
            v=s["v"], l4sum=_adds(s["x"], 2)[0], ipsum=_adds(s["ipw"] + [s["ipa"]], 2)[0],
            ecs=~_fold(s["esum"][:20]),
            **{k: s[k] for k in ("hc0", "keep", "tcp", "udp", "tp_ok", "do", "sport", "dport", "slot", "vlan",
                                 "total", "ulen", "length", "shift", "w", "push", "modify", "act")}))

        # -- 9 -> 10: the folds (RFC 1624 eqn. 3 and the IPv4 header checksum)
        s = _stage(m, 10, dict(
            v=s["v"], l4new=~_fold(s["l4sum"]), ip_csum=~_fold(s["ipsum"]),
            **{k: s[k] for k in ("hc0", "keep", "tcp", "udp", "tp_ok", "do", "sport", "dport", "slot", "vlan",
                                 "ecs", "total", "ulen", "length", "shift", "w", "push", "modify", "act")}))

        # -- 10 -> 11: the L4 checksum (UDP: a computed 0 is sent as 0xFFFF)
        new = s["l4new"]
        s = _stage(m, 11, dict(
            v=s["v"], hc=Mux(s["keep"], s["hc0"], Mux(s["udp"] & (new == 0), 0xFFFF, new)),
            **{k: s[k] for k in ("tcp", "udp", "tp_ok", "do", "sport", "dport", "slot", "vlan", "ip_csum",
                                 "ecs", "total", "ulen", "length", "shift", "w", "push", "modify", "act")}))

        # -- 11 -> the descriptor: write back the changed fields (steps 3c, 3d), vlan_set (step 4)
        a = s["act"]
        do_ip_src, do_ip_dst, do_tp_src, do_tp_dst = s["do"]
        w2 = Signal(8 * HDR_WIN, name="c11_w2")
        m.d.comb += w2.eq(s["w"])
        for vl, at in ((1, ETH_HLEN + VLAN_HLEN), (0, ETH_HLEN)):
            with m.If(s["vlan"] == vl):
                with m.If(do_ip_src | do_ip_dst):
                    m.d.comb += w2[8 * (at + 10): 8 * (at + 12)].eq(_wire(s["ip_csum"], 2))
                with m.If(do_ip_src):
                    m.d.comb += w2[8 * (at + 12): 8 * (at + 16)].eq(_wire(a.ipv4_src, 4))
                with m.If(do_ip_dst):
                    m.d.comb += w2[8 * (at + 16): 8 * (at + 20)].eq(_wire(a.ipv4_dst, 4))
        # only the ports and the checksum of the L4 header change (each a no-op when its step is
        # skipped); ip_ok on TCP/UDP implies tp_ok, so the checksum is written whenever tp_ok
        hc = _wire(s["hc"], 2)
        with m.Switch(s["slot"]):
            for n in range(L4_SLOTS):
                at = L4_BASE + 4 * n
                with m.Case(n):
                    with m.If(do_tp_src):
                        m.d.comb += w2[8 * at: 8 * (at + 2)].eq(_wire(a.tp_src, 2))
                    with m.If(do_tp_dst):
                        m.d.comb += w2[8 * (at + 2): 8 * (at + 4)].eq(_wire(a.tp_dst, 2))
                    with m.If(s["tp_ok"] & s["udp"]):
                        m.d.comb += w2[8 * (at + 6): 8 * (at + 8)].eq(hc)
                    with m.If(s["tp_ok"] & s["tcp"]):
                        m.d.comb += w2[8 * (at + 16): 8 * (at + 18)].eq(hc)
        tci_mod = Cat(a.vlan_vid, _be(w2, 14, 2)[12:])
        w3 = Signal(8 * HDR_WIN, name="c11_w3")
        m.d.comb += w3.eq(w2)
        with m.If(s["modify"]):
            m.d.comb += w3[8 * 14: 8 * 16].eq(_wire(tci_mod, 2))
        tci_push = Cat(a.vlan_vid, Const(0, 1), a.vlan_pcp)
        out = Mux(s["push"], Cat(w3[:8 * 12], _wire(Const(ETH_VLAN, 16), 2), _wire(tci_push, 2), w3[8 * 12:]), w3)
        d = Signal(_Desc, name="c11_desc")
        shift = s["shift"]
        m.d.comb += [
            d.out.eq(out),
            d.length.eq(s["length"]),
            d.pre.eq(shift[6:] - 1),
            d.rot.eq(shift[:6]),
            d.total.eq(s["total"]),
            d.ulen.eq(s["ulen"]),
            d.ecs.eq(s["ecs"]),
        ]
        return s["v"], d

    @staticmethod
    def _late_act(m, a):
        """The action fields the pipeline needs past stage 4 (:data:`_LateAct`)."""
        v = Signal(_LateAct, name="c1_act")
        m.d.comb += [getattr(v, n).eq(getattr(a, n)) for n, _ in data.Layout.cast(_LateAct) if n != "esum"]
        m.d.comb += v.esum.eq(_adds([Const(0x4500 + 0x4000 + 0x4011, 16), a.encap_ip_src[16:], a.encap_ip_src[:16],
                                     a.encap_ip_dst[16:], a.encap_ip_dst[:16]], 3)[0])
        return v

    def elaborate(self, platform):
        m = Module()
        beat = self.i.payload
        act = self.act.payload

        m.submodules.beats = beats = SyncFIFOBuffered(width=8 * BEAT_BYTES + 1, depth=self._depth)
        # descriptors (written by the pipeline) and side entries (written on capture), one per frame in
        # flight; in block RAM (a 4-deep SyncFIFOBuffered of these widths would be built in LUTs/FFs)
        m.submodules.descs = dmem = Memory(shape=_Desc, depth=DESCS, init=[], attrs={"ram_style": "block"})
        m.submodules.sides = smem = Memory(shape=_Side, depth=DESCS, init=[], attrs={"ram_style": "block"})
        dwp = dmem.write_port()
        drp = dmem.read_port(domain="sync")
        swp = smem.write_port()
        srp = smem.read_port(domain="sync")

        # -- input: capture the first CAP_BYTES bytes, the length and the action --------
        first = Signal(init=1)
        nbeat = Signal(range(CAP_BEATS + 1))
        acc = Signal(16)
        hbuf = Signal(8 * CAP_BYTES, reset_less=True)
        act_r = Signal(ActionEntry, reset_less=True)
        port_r = Signal(8, reset_less=True)
        p1_valid = Signal()
        p1_len = Signal(16, reset_less=True)
        credits = Signal(range(DESCS + 1))      # frames accepted whose descriptor entry is not yet freed
        freed = Signal()
        m.d.comb += self.i.ready.eq(beats.w_rdy & (credits != DESCS) & (~first | self.act.valid))
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
        m.d.comb += total.eq(acc + _keep_count(beat.keep))
        # the first half of the outer parse only reads the first beat: done as it arrives
        oa_in = _parse_a(beat.data)
        oa = {k: Signal(Value.cast(v).shape(), name=f"in_oa_{k}", reset_less=True) for k, v in oa_in.items()}
        m.d.sync += p1_valid.eq(take & beat.last)
        m.d.sync += credits.eq(credits + (take & beat.last) - freed)
        # hbuf, act_r, port_r and oa hold a frame until the cycle after its last beat (stage 1)
        with m.If(take):
            m.d.sync += [hbuf.eq(merged), first.eq(beat.last)]
            with m.If(first):
                m.d.sync += [act_r.eq(act), port_r.eq(beat.in_port)]
                m.d.sync += [oa[k].eq(v) for k, v in oa_in.items()]
            with m.If(beat.last):
                m.d.sync += [nbeat.eq(0), acc.eq(0), p1_len.eq(total)]
            with m.Else():
                m.d.sync += acc.eq(total)
                with m.If(nbeat != CAP_BEATS):
                    m.d.sync += nbeat.eq(nbeat + 1)

        # -- stage 1: the side entry (what the output side needs straight from the action)
        a = act_r
        iseq = Signal(range(DESCS))
        verdict = Mux(a.drop, Verdict.DROP, Mux(a.to_host, Verdict.TO_HOST, Mux(a.output, Verdict.OUTPUT,
                                                                                   Verdict.DROP)))
        m.d.comb += [
            swp.addr.eq(iseq), swp.en.eq(p1_valid),
            swp.data.encap.eq(a.vxlan_encap),
            swp.data.eth_dst.eq(a.encap_eth_dst), swp.data.eth_src.eq(a.encap_eth_src),
            swp.data.ip_src.eq(a.encap_ip_src), swp.data.ip_dst.eq(a.encap_ip_dst),
            swp.data.udp_src.eq(a.encap_udp_src), swp.data.vni.eq(a.encap_vni),
            swp.data.verdict.eq(verdict),
            swp.data.out_port.eq(Mux(verdict == Verdict.OUTPUT, a.out_port, 0)),
            swp.data.in_port.eq(port_r),
        ]
        with m.If(p1_valid):
            m.d.sync += iseq.eq(iseq + 1)

        # -- stages 2..11: the header computation into the descriptor RAM ---------------
        dv, d_in = self._pipeline(m, p1_valid, hbuf, oa, act_r, p1_len)
        wseq = Signal(range(2 * DESCS))
        wseq_d = Signal(range(2 * DESCS))       # an entry written on edge n is read from edge n + 1 on
        m.d.sync += wseq_d.eq(wseq)
        m.d.comb += [dwp.addr.eq(wseq[:-1]), dwp.en.eq(dv), dwp.data.eq(d_in)]
        with m.If(dv):
            m.d.sync += wseq.eq(wseq + 1)

        # -- output: stream the buffered frame out, head replaced, barrel-shifted -------
        # the read ports address the current frame's entry (rseq, or the next one on the edge that
        # frees it), so their data stays the frame's for as long as it is sent; rseq1 = rseq + 1 is a
        # register, as the address feeds a few dozen block RAMs (no adder in front of that fan-out)
        rseq = Signal(range(2 * DESCS))
        rseq1 = Signal(range(2 * DESCS), init=1)
        raddr = Mux(freed, rseq1, rseq)[:-1]
        m.d.comb += [drp.addr.eq(raddr), srp.addr.eq(raddr)]
        with m.If(freed):
            m.d.sync += [rseq.eq(rseq1), rseq1.eq(rseq1 + 1)]
        d = drp.data
        sd = srp.data
        ready = rseq != wseq_d
        # the output is two register stages that stall together (a: the shifted beat and the head
        # bytes, b: o.payload), so neither the barrel shifter nor the head mux is in series with the
        # other or with a block RAM's output
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        # a second, small beat FIFO: its output is a register (the big one's comes straight from block RAM)
        m.submodules.beats_out = bq = SyncFIFOBuffered(width=8 * BEAT_BYTES + 1, depth=3)
        m.d.comb += [bq.w_data.eq(beats.r_data), bq.w_en.eq(beats.r_rdy), beats.r_en.eq(bq.w_rdy)]
        rot = Signal(6)
        encap = Signal()
        prev = Signal(8 * BEAT_BYTES, reset_less=True)
        in_done = Signal()
        pcnt = Signal(2)            # beats still to skip / preload before the first output beat
        rem = Signal(17)            # output bytes of this frame still to send
        j = Signal(2)               # output beat number, saturating at 3
        head_beat = bq.r_data[:8 * BEAT_BYTES]
        head_last = bq.r_data[-1]
        win = Signal(16 * BEAT_BYTES)
        m.d.comb += win.eq(Cat(prev, head_beat))
        shifted = Signal(8 * BEAT_BYTES)
        m.d.comb += shifted.eq(win[8:].bit_select(Cat(Const(0, 3), rot), 8 * BEAT_BYTES))
        ehdr = Cat(
            _wire(sd.eth_dst, 6), _wire(sd.eth_src, 6), _wire(Const(ETH_IPV4, 16), 2),
            _wire(Const(0x4500, 16), 2), _wire(d.total, 2), Const(0, 16), _wire(Const(0x4000, 16), 2),
            _wire(Const(0x4011, 16), 2), _wire(d.ecs, 2), _wire(sd.ip_src, 4), _wire(sd.ip_dst, 4),
            _wire(sd.udp_src, 2), _wire(Const(VXLAN_PORT, 16), 2), _wire(d.ulen, 2), Const(0, 16),
            Const(0x08, 8), Const(0, 24), _wire(sd.vni, 3), Const(0, 8))
        # the first HEAD output bytes with encap, OUT_HDR without; hsel: which bytes of beat j they are
        head_enc = Cat(ehdr, d.out)
        hb = d.out
        hdr = Signal(8 * BEAT_BYTES)
        hsel = Signal(BEAT_BYTES)
        with m.Switch(j):
            for n in range(3):
                with m.Case(n):
                    q0 = BEAT_BYTES * n
                    m.d.comb += hdr.eq(Cat(*[
                        Mux(encap, _byte(head_enc, q0 + b), _byte(hb, q0 + b)) if q0 + b < OUT_HDR
                        else _byte(head_enc, q0 + b) if q0 + b < HEAD else Const(0, 8)
                        for b in range(BEAT_BYTES)]))
                    m.d.comb += hsel.eq(Cat(*[
                        Const(1, 1) if q0 + b < OUT_HDR else encap if q0 + b < HEAD else Const(0, 1)
                        for b in range(BEAT_BYTES)]))
        keep = Signal(BEAT_BYTES)
        m.d.comb += keep.eq(Cat(*[rem > b for b in range(BEAT_BYTES)]))
        is_last = Signal()          # rem <= BEAT_BYTES, as a register (it gates the frame's end)
        a_valid = Signal()
        a_shifted = Signal(8 * BEAT_BYTES, reset_less=True)
        a_hdr = Signal(8 * BEAT_BYTES, reset_less=True)
        a_hsel = Signal(BEAT_BYTES, reset_less=True)
        a_beat = Signal(RewriteOut, reset_less=True)        # keep, last, in_port, verdict, out_port

        with m.If(adv):
            m.d.sync += [
                a_valid.eq(0),
                self.o.valid.eq(a_valid),
                self.o.payload.eq(a_beat),
                self.o.payload.beat.data.eq(Cat(*[Mux(a_hsel[b], _byte(a_hdr, b), _byte(a_shifted, b))
                                                  for b in range(BEAT_BYTES)])),
            ]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(ready):
                    m.d.sync += [rot.eq(d.rot), encap.eq(sd.encap), in_done.eq(0), rem.eq(d.length), j.eq(0),
                                 pcnt.eq(d.pre), is_last.eq(d.length <= BEAT_BYTES)]
                    with m.If(d.pre != 0):
                        m.next = "PREFETCH"
                    with m.Else():
                        m.next = "RUN"
            with m.State("PREFETCH"):
                # skip the input beats wholly before the output's shifted bytes, keep the last in prev
                m.d.comb += bq.r_en.eq(~in_done)
                with m.If(in_done | bq.r_rdy):
                    m.d.sync += pcnt.eq(pcnt - 1)
                    with m.If(~in_done):
                        m.d.sync += [prev.eq(head_beat), in_done.eq(head_last)]
                    with m.If(pcnt == 1):
                        m.next = "RUN"
            with m.State("RUN"):
                with m.If(adv & (in_done | bq.r_rdy)):
                    m.d.comb += bq.r_en.eq(~in_done)
                    m.d.sync += [
                        a_valid.eq(1),
                        a_shifted.eq(shifted),
                        a_hdr.eq(hdr),
                        a_hsel.eq(hsel),
                        a_beat.beat.keep.eq(keep),
                        a_beat.beat.last.eq(is_last),
                        a_beat.beat.in_port.eq(sd.in_port),
                        a_beat.verdict.eq(sd.verdict),
                        a_beat.out_port.eq(sd.out_port),
                        rem.eq(rem - BEAT_BYTES),
                        is_last.eq(rem <= 2 * BEAT_BYTES),
                        j.eq(Mux(j == 3, 3, j + 1)),
                    ]
                    with m.If(~in_done):
                        m.d.sync += [prev.eq(head_beat), in_done.eq(head_last)]
                    with m.If(is_last):
                        with m.If(in_done | head_last):
                            m.d.comb += freed.eq(1)
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "DRAIN"
            with m.State("DRAIN"):
                # input beats past the output's end (outer padding of a decapsulated frame, an
                # empty last beat, the beat a pop emptied)
                m.d.comb += bq.r_en.eq(1)
                with m.If(bq.r_rdy & head_last):
                    m.d.comb += freed.eq(1)
                    m.next = "IDLE"
        return m
