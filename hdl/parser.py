"""Pipelined packet parser: 512-bit frame beats -> one PacketKey per frame.

Bit-exact with :func:`cxlnic.model.parser.parse` (tested against it in
Amaranth's simulator and under Verilator); the rules are the model's module
docstring, checked in the same order so the first failing check wins.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from cxlnic.config import NicConfig
from cxlnic.hdl.layouts import ExceptionCode, PacketKey
from cxlnic.hdl.util import checked_init
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

__all__ = ["PacketParser", "Beat", "ParsedLayout", "BEAT_BYTES", "HDR_BEATS", "HDR_BYTES", "LATENCY"]

BEAT_BYTES = 64

#: One beat of a frame: byte k is ``data[8k:8k+8]``; ``keep`` is a byte mask contiguous
#: from byte 0 (all ones except possibly on the last beat, where 0 is legal).
Beat = data.StructLayout({"data": 8 * BEAT_BYTES, "keep": BEAT_BYTES, "last": 1, "in_port": 8})

#: The parser's output: the key and the frame length in bytes (saturated at 0xFFFF).
ParsedLayout = data.StructLayout({"key": PacketKey, "length": 16})

# Where the checks can reach.  Every L3 header starts at 14 or 18 bytes into its frame
# and is 20..60 (IPv4) or 40 (IPv6) bytes long, so the L4 header of a frame starts at
# L4_BASE + 4*n, n = 0..L4_SLOTS-1.  The outer L4 header is followed by UDP and VXLAN
# (16 bytes), then the inner frame, whose last byte read is its TCP flags.
L4_BASE = ETH_HLEN + IPV4_HLEN                      # 34
L4_SLOTS = 12                                       # 34, 38, ..., 78
L4_WIN = UDP_HLEN + VXLAN_HLEN                      # bytes of an L4 header we look at
L3_WIN = IPV6_HLEN                                  # bytes of an L3 header we look at
#: Bytes of the inner frame kept for its parse: the last L4 window must fit.
FRAME_WIN = L4_BASE + 4 * (L4_SLOTS - 1) + L4_WIN   # 94
INNER_BASE = L4_BASE + L4_WIN                       # first byte of the shallowest inner frame: 50
_MAX_READ = INNER_BASE + 4 * (L4_SLOTS - 1) + FRAME_WIN   # 188: one past the deepest byte
#: Beats captured per frame (the deepest byte the model reads is 185, a TCP flags byte
#: behind VLAN + IPv4 options + UDP + VXLAN + inner VLAN + inner IPv4 options).
HDR_BEATS = -(-_MAX_READ // BEAT_BYTES)             # 3
HDR_BYTES = HDR_BEATS * BEAT_BYTES

#: Clock edges from the one that accepts a frame's last beat to ``o.valid`` (that edge included).
LATENCY = 7

_EC = ExceptionCode
_LEN_MAX = 0xFFFF


def _byte(win, k):
    return win[8 * k: 8 * k + 8]


def _be(win, k, n):
    """The ``n``-byte big-endian number at byte ``k`` of ``win`` (network order)."""
    return Cat(*[_byte(win, k + j) for j in reversed(range(n))])


def _bytes(win, k, n):
    """Bytes ``k .. k+n-1`` of ``win`` as a window (byte 0 = byte k)."""
    return win[8 * k: 8 * (k + n)]


def _first(*checks):
    """The exception code of the first true condition of ``(cond, code)`` pairs, else NONE."""
    code = Const(_EC.NONE, 4)
    for cond, c in reversed(checks):
        code = Mux(cond, c, code)
    return code


def _popcount(bits):
    terms = [bits[i] for i in range(len(bits))]
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


class PacketParser(wiring.Component):
    """Parse Ethernet frames (VLAN, IPv4/IPv6, TCP/UDP, VXLAN) into PacketKeys.

    * ``i``: a stream of :data:`Beat` (one frame = beats up to one with
      ``last``); ``o``: a stream of :data:`ParsedLayout`, one per frame, in
      frame order.  ``key`` is :func:`cxlnic.model.parser.parse` of the frame
      with ``cfg.min_frame``/``cfg.max_frame`` = ``min_frame``/``max_frame``
      (``ct_state`` is 0); ``length`` is the frame's byte count over all its
      beats, saturated at 0xFFFF (still OVERSIZE, since ``max_frame`` < 0xFFFF).
    * Only the first :data:`HDR_BEATS` beats (192 bytes) are kept; the model's
      checks never read past byte 185, so longer frames parse identically.
    * Throughput: one beat per cycle, so a one-beat frame every cycle, while
      ``o`` is not back-pressured (``i.ready = ~o.valid | o.ready``).
    * Latency: :data:`LATENCY` = 7 register stages (beat assembly, outer
      L2, outer L3, outer L4/VXLAN, inner L2, inner L3, inner L4 + key):
      ``o.valid`` rises on the 7th rising edge counting the one that accepts
      the frame's last beat.  The whole pipeline stalls while
      ``o.valid & ~o.ready``; ``valid`` never depends on ``ready``.
    * Ordering: results leave in the order the frames' last beats arrived.
      Any input (garbage, runts, giants, ``last`` with ``keep == 0``) yields
      exactly one result per frame; nothing waits on frame contents, so it
      never hangs.
    """

    @checked_init
    def __init__(self, *, min_frame: int | None = None, max_frame: int | None = None):
        dflt = NicConfig()
        min_frame = dflt.min_frame if min_frame is None else min_frame
        max_frame = dflt.max_frame if max_frame is None else max_frame
        for name, v in (("min_frame", min_frame), ("max_frame", max_frame)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} = {v!r}: must be an integer")
        if not ETH_HLEN <= min_frame <= max_frame < _LEN_MAX:
            raise ValueError(f"min_frame = {min_frame}, max_frame = {max_frame}: "
                             f"need {ETH_HLEN} <= min_frame <= max_frame < {_LEN_MAX}")
        self._min_frame = min_frame
        self._max_frame = max_frame
        super().__init__({
            "i": In(stream.Signature(Beat)),
            "o": Out(stream.Signature(ParsedLayout)),
        })

    @property
    def min_frame(self) -> int:
        return self._min_frame

    @property
    def max_frame(self) -> int:
        return self._max_frame

    # -- helpers ----------------------------------------------------------------------
    def _reg(self, value, name, shape=None):
        """A pipeline register loaded with ``value`` whenever the pipeline advances."""
        value = value if shape is not None else Value.cast(value)
        sig = Signal(shape if shape is not None else value.shape(), name=name, reset_less=True)
        self._loads.append(sig.eq(value))
        return sig

    def _l2(self, m, p, win, end, exc_in):
        """Ethernet + one VLAN tag of the frame ``win`` (``end`` bytes long); registered."""
        et0 = _be(win, 12, 2)
        vlan = Signal(name=f"{p}_vlan")
        m.d.comb += vlan.eq(et0 == ETH_VLAN)
        et = Mux(vlan, _be(win, ETH_HLEN + 2, 2), et0)
        l3 = Mux(vlan, ETH_HLEN + VLAN_HLEN, ETH_HLEN)
        exc = _first((exc_in != 0, exc_in), (end < ETH_HLEN, _EC.TRUNCATED),
                     (vlan & (end < ETH_HLEN + VLAN_HLEN), _EC.TRUNCATED))
        return dict(
            exc=self._reg(exc, f"{p}2_exc", 4),
            vlan=self._reg(vlan, f"{p}2_vlan"),
            vid=self._reg(Mux(vlan, _be(win, ETH_HLEN, 2)[:12], 0), f"{p}2_vid", 12),
            et=self._reg(et, f"{p}2_et", 16),
            avail=self._reg((end - l3)[:16], f"{p}2_avail", 16),
            l3=self._reg(Mux(vlan, _bytes(win, ETH_HLEN + VLAN_HLEN, L3_WIN), _bytes(win, ETH_HLEN, L3_WIN)),
                         f"{p}2_l3", 8 * L3_WIN),
        )

    def _l3(self, m, p, s):
        """IPv4/IPv6 header checks and fields; registered."""
        w, avail = s["l3"], s["avail"]
        is4 = Signal(name=f"{p}_is4")
        is6 = Signal(name=f"{p}_is6")
        m.d.comb += [is4.eq(s["et"] == ETH_IPV4), is6.eq(s["et"] == ETH_IPV6)]
        ver = _byte(w, 0)[4:]
        ihl = _byte(w, 0)[:4]
        hlen = Cat(Const(0, 2), ihl)
        total = _be(w, 2, 2)
        frag = (_byte(w, 6)[:6] != 0) | (_byte(w, 7) != 0)
        exc4 = _first(
            (avail < IPV4_HLEN, _EC.TRUNCATED),
            (ver != 4, _EC.BAD_IP_VERSION),
            (ihl < IPV4_HLEN // 4, _EC.BAD_IP_HEADER),
            (hlen > avail, _EC.TRUNCATED),
            (total < hlen, _EC.BAD_IP_HEADER),
            (total > avail, _EC.TRUNCATED),
            (frag, _EC.FRAGMENT))
        plen = _be(w, 4, 2)
        nh = _byte(w, 6)
        ext = Const(0, 1)
        for x in sorted(IPV6_EXT_HEADERS):
            ext = ext | (nh == x)
        exc6 = _first(
            (avail < IPV6_HLEN, _EC.TRUNCATED),
            (ver != 6, _EC.BAD_IP_VERSION),
            (plen > avail - IPV6_HLEN, _EC.TRUNCATED),
            (ext, _EC.UNSUPPORTED))
        exc = Mux(s["exc"] != 0, s["exc"], Mux(is4, exc4, Mux(is6, exc6, _EC.NONE)))
        mapped = Const(0xFFFF, 16)
        src = Mux(is4, Cat(_be(w, 12, 4), mapped), _be(w, 8, 16))
        dst = Mux(is4, Cat(_be(w, 16, 4), mapped), _be(w, 24, 16))
        is_ip = is4 | is6
        # L4 slot: (l3 - 14)/4 + (ip header length - 20)/4.  Garbage once exc is set.
        slot = s["vlan"] + Mux(is4, ihl, IPV6_HLEN // 4) - IPV4_HLEN // 4
        return dict(
            exc=self._reg(exc, f"{p}3_exc", 4),
            vlan=self._reg(s["vlan"], f"{p}3_vlan"),
            vid=self._reg(s["vid"], f"{p}3_vid"),
            et=self._reg(s["et"], f"{p}3_et"),
            is_ip=self._reg(is_ip, f"{p}3_is_ip"),
            proto=self._reg(Mux(is_ip, Mux(is4, _byte(w, 9), nh), 0), f"{p}3_proto", 8),
            src=self._reg(Mux(is_ip, src, 0), f"{p}3_src", 128),
            dst=self._reg(Mux(is_ip, dst, 0), f"{p}3_dst", 128),
            slot=self._reg(slot[:4], f"{p}3_slot", 4),
            l4len=self._reg(Mux(is4, total - hlen, plen)[:16], f"{p}3_l4len", 16),
        )

    def _l4(self, m, p, s, l4win, tunnels):
        """TCP/UDP ports and flags, and (``tunnels``) the VXLAN checks; comb values."""
        w, l4len, proto = l4win, s["l4len"], s["proto"]
        tcp = s["is_ip"] & (proto == IP_TCP)
        udp = s["is_ip"] & (proto == IP_UDP)
        dport = _be(w, 2, 2)
        ulen = _be(w, 4, 2)
        vx = Signal(name=f"{p}_vxlan_port")
        m.d.comb += vx.eq(udp & (dport == VXLAN_PORT) if tunnels else 0)
        exc = _first(
            (s["exc"] != 0, s["exc"]),
            (tcp & (l4len < TCP_HLEN), _EC.TRUNCATED),
            (udp & (l4len < UDP_HLEN), _EC.TRUNCATED),
            (vx & ((ulen > l4len) | (ulen < UDP_HLEN + VXLAN_HLEN)), _EC.TRUNCATED),
            (vx & ~_byte(w, UDP_HLEN)[3], _EC.BAD_VXLAN))
        ports = tcp | udp
        return dict(
            exc=exc, vxlan=vx,
            sport=Mux(ports, _be(w, 0, 2), 0), dport=Mux(ports, dport, 0),
            flags=Mux(tcp, _byte(w, 13), 0),
            vni=_be(w, UDP_HLEN + 4, 3), inner_end=(ulen - UDP_HLEN - VXLAN_HLEN)[:16],
        )

    def _slot_window(self, m, name, win, slot, base, nbytes):
        """``nbytes`` of ``win`` at byte ``base + 4*slot`` (a mux over the L4 slots)."""
        out = Signal(8 * nbytes, name=name)
        with m.Switch(slot):
            for n in range(L4_SLOTS):
                with m.Case(n):
                    m.d.comb += out.eq(_bytes(win, base + 4 * n, nbytes))
        return out

    # -- the pipeline -----------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        self._loads = []
        adv = Signal()                  # the whole pipeline moves this cycle
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]
        beat = self.i.payload
        take = self.i.valid & adv

        # stage 1: assemble the first HDR_BEATS beats and count the bytes
        nbeat = Signal(range(HDR_BEATS + 1))      # beats of this frame taken so far (saturating)
        acc = Signal(16)                          # bytes of this frame taken so far (saturating)
        hbuf = Signal(8 * HDR_BYTES, reset_less=True)
        merged = Signal(8 * HDR_BYTES)
        m.d.comb += merged.eq(Cat(*[Mux(nbeat == j, beat.data, hbuf[8 * BEAT_BYTES * j: 8 * BEAT_BYTES * (j + 1)])
                                    for j in range(HDR_BEATS)]))
        total = Signal(17)
        m.d.comb += total.eq(acc + _popcount(beat.keep))
        length = Mux(total > _LEN_MAX, _LEN_MAX, total)[:16]
        with m.If(take):
            m.d.sync += hbuf.eq(merged)
            with m.If(beat.last):
                m.d.sync += [nbeat.eq(0), acc.eq(0)]
            with m.Else():
                m.d.sync += acc.eq(length)
                with m.If(nbeat != HDR_BEATS):
                    m.d.sync += nbeat.eq(nbeat + 1)
        buf = self._reg(merged, "s1_buf", 8 * HDR_BYTES)
        len1 = self._reg(length, "s1_len", 16)
        port1 = self._reg(beat.in_port, "s1_port", 8)
        v1 = Signal()
        with m.If(adv):
            m.d.sync += v1.eq(take & beat.last)

        # stage 2: size checks, outer Ethernet/VLAN
        exc_size = _first((len1 < self._min_frame, _EC.RUNT), (len1 > self._max_frame, _EC.OVERSIZE))
        o2 = self._l2(m, "o", buf, len1, exc_size)
        rest2 = self._reg(buf[8 * L4_BASE:], "s2_rest")
        len2, port2 = self._reg(len1, "s2_len"), self._reg(port1, "s2_port")

        # stage 3: outer IP
        o3 = self._l3(m, "o", o2)
        rest3 = self._reg(rest2, "s3_rest")
        len3, port3 = self._reg(len2, "s3_len"), self._reg(port2, "s3_port")

        # stage 4: outer L4 and VXLAN; cut out the inner frame
        o4l4 = self._slot_window(m, "o_l4", rest3, o3["slot"], 0, L4_WIN)
        o4c = self._l4(m, "o", o3, o4l4, tunnels=True)
        iwin = self._slot_window(m, "i_win", rest3, o3["slot"], INNER_BASE - L4_BASE, FRAME_WIN)
        o4 = {k: self._reg(o3[k], f"o4_{k}") for k in ("vlan", "vid", "et", "is_ip", "proto", "src", "dst")}
        o4.update({k: self._reg(o4c[k], f"o4_{k}") for k in ("exc", "vxlan", "sport", "dport", "flags", "vni")})
        iend4 = self._reg(o4c["inner_end"], "i4_end")
        iwin4 = self._reg(iwin, "i4_win")
        len4, port4 = self._reg(len3, "s4_len"), self._reg(port3, "s4_port")

        # stages 5-6: the inner frame (garbage unless o4["vxlan"]), carrying the outer results
        def carry(prev, stage):
            return {k: self._reg(v, f"o{stage}_{k}") for k, v in prev.items()}

        i5 = self._l2(m, "i", iwin4, iend4, Const(_EC.NONE, 4))
        irest5 = self._reg(iwin4[8 * L4_BASE:], "i5_rest")
        o5 = carry(o4, 5)
        len5, port5 = self._reg(len4, "s5_len"), self._reg(port4, "s5_port")

        i6 = self._l3(m, "i", i5)
        irest6 = self._reg(irest5, "i6_rest")
        o6 = carry(o5, 6)
        len6, port6 = self._reg(len5, "s6_len"), self._reg(port5, "s6_port")

        # stage 7: inner L4, then the key
        i7l4 = self._slot_window(m, "i_l4", irest6, i6["slot"], 0, L4_WIN)
        i7 = self._l4(m, "i", i6, i7l4, tunnels=False)
        vx = o6["vxlan"]
        exc = Mux(o6["exc"] != 0, o6["exc"], Mux(vx, i7["exc"], _EC.NONE))
        ok = Signal(name="key_ok")
        m.d.comb += ok.eq(exc == _EC.NONE)
        k = self.o.payload.key
        f = k.flow
        fields = [(f.in_port, port6), (k.exception, exc), (f.tenant, Mux(ok & vx, o6["vni"], 0))]
        for dst, name in ((f.eth_type, "et"), (f.vlan_valid, "vlan"), (f.vlan_id, "vid"),
                          (f.ip_proto, "proto"), (f.src_ip, "src"), (f.dst_ip, "dst")):
            fields.append((dst, Mux(ok, Mux(vx, i6[name], o6[name]), 0)))
        for dst, name in ((f.src_port, "sport"), (f.dst_port, "dport"), (k.tcp_flags, "flags")):
            fields.append((dst, Mux(ok, Mux(vx, i7[name], o6[name]), 0)))

        # the valid chain and the output register
        valids = [v1]
        for n in range(2, 7):
            v = Signal(name=f"v{n}")
            with m.If(adv):
                m.d.sync += v.eq(valids[-1])
            valids.append(v)
        with m.If(adv):
            m.d.sync += [
                self.o.valid.eq(valids[-1]),
                self.o.payload.length.eq(len6),
            ]
            m.d.sync += [dst.eq(v) for dst, v in fields]
            m.d.sync += self._loads
        return m
