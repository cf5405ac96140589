# amaranth: UnusedElaboratable=no
"""HeaderRewriter RTL against :func:`cxlnic.model.actions.apply_actions` (Amaranth simulator).

``rtl_rewrite`` drives (frame, action) pairs and returns ``[(verdict, out_port, bytes, in_port)]``;
``ref_rewrite`` is the model's result in the same form.  VXLAN frames come from the parser
tests' generators (``test_parser_rtl``) and the model tests' hypothesis strategies (``test_actions``).
"""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw
from test_actions import SETTINGS, _vxlan, ipv4_packet, ipv6_packet, tails
from test_parser_rtl import DIRECTED, _ip4, _ip6, _mac, corrupt, pad, vxlan_packet

from cxlnic.config import NicConfig
from cxlnic.hdl.layouts import ActionEntry
from cxlnic.hdl.parser import BEAT_BYTES
from cxlnic.hdl.rewrite import LATENCY, HeaderRewriter
from cxlnic.model.actions import VXLAN_OVERHEAD, apply_actions
from cxlnic.model.codec import flat_fields
from cxlnic.model.parser import VXLAN_HLEN, parse_headers
from cxlnic.tb.common import frame_beats

#: Every action flag, and the fields of each.
FLAGS = ["output", "drop", "to_host", "ct_commit", "vlan_pop", "vlan_set", "set_eth_src", "set_eth_dst",
         "set_ipv4_src", "set_ipv4_dst", "set_tp_src", "set_tp_dst", "vxlan_decap", "vxlan_encap"]
_FIELDS = {f.path: f for f in flat_fields(ActionEntry)}
MAX_FRAME = NicConfig().max_frame


class Action:
    """An ActionEntry record as attributes (what apply_actions reads) plus its packed line."""

    def __init__(self, **kw):
        for f in _FIELDS:
            setattr(self, f, 0)
        for k, v in kw.items():
            setattr(self, k, v)

    def pack(self) -> int:
        return sum((getattr(self, p) & (1 << f.width) - 1) << f.offset for p, f in _FIELDS.items()
                   if not p.startswith("_"))


def random_action(r: random.Random, *, vxlan: float = 0.3) -> Action:
    """Each non-VXLAN flag with probability 0.4, each VXLAN flag with ``vxlan``; random values."""
    a = Action()
    for flag in FLAGS:
        setattr(a, flag, int(r.random() < (vxlan if flag.startswith("vxlan") else 0.4)))
    for p, f in _FIELDS.items():
        if not p.startswith("_") and p not in FLAGS:
            setattr(a, p, r.getrandbits(f.width))
    return a


# -- drivers -----------------------------------------------------------------------------

def decode_beats(words: list[int]) -> tuple[bytes, int]:
    """Frame bytes of output beats (keep checked contiguous), and the in_port of the first."""
    buf = b""
    for w in words:
        keep = w >> 512 & (1 << 64) - 1
        n = keep.bit_length()
        assert keep == (1 << n) - 1, f"keep {keep:#x} not contiguous"
        buf += (w & (1 << 512) - 1).to_bytes(64, "little")[:n]
    return buf, words[0] >> 577 & 0xFF


def ref_rewrite(pairs, cfg: NicConfig | None = None):
    out = []
    for (frame, port), a in pairs:
        r = apply_actions(frame, a, cfg or NicConfig())
        out.append((int(r.verdict), r.out_port, r.frame, port))
    return out


def rtl_rewrite(pairs, *, gaps=0.0, stall=0.0, seed=0, dut=None):
    """Run HeaderRewriter in Amaranth's simulator on ``[((frame, in_port), Action)]``."""
    dut = dut or HeaderRewriter()
    rng = random.Random(seed)
    beats, acts = [], []
    for (f, port), a in pairs:
        bs = frame_beats(f, port, rng)
        beats += [(b, i == 0) for i, b in enumerate(bs)]
        acts.append(a.pack())
    out, cur = [], []

    async def bench(ctx):
        sent, nact, offering, idle = 0, 0, False, 0
        while len(out) < len(pairs):
            ctx.set(dut.o.ready, rng.random() >= stall)
            if not offering and sent < len(beats) and rng.random() >= gaps:
                offering = True
                ctx.set(dut.i.payload.as_value(), beats[sent][0])
            ctx.set(dut.i.valid, offering)
            # the action is offered independently of the beats (possibly late)
            act_on = nact < len(acts) and rng.random() >= gaps
            if act_on:
                ctx.set(dut.act.payload.as_value(), acts[nact])
            ctx.set(dut.act.valid, act_on)
            in_fire = offering and ctx.get(dut.i.ready)
            act_fire = act_on and ctx.get(dut.act.ready)
            assert act_fire == (in_fire and beats[sent][1]), "action not consumed with the first beat"
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                v = ctx.get(dut.o.payload.as_value())
                cur.append(v)
                idle = 0
                if v >> 576 & 1:
                    data, port = decode_beats(cur)
                    tags = {(w >> 585 & 3, w >> 587 & 0xFF) for w in cur}
                    assert len(tags) == 1, f"verdict/out_port differ between beats: {tags}"
                    out.append((*tags.pop(), data, port))
                    cur.clear()
            await ctx.tick()
            if in_fire:
                sent, offering = sent + 1, False
            if act_fire:
                nact += 1
            idle += 1
            assert idle < 2000, f"output stuck after {len(out)} of {len(pairs)} frames"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def check(pairs, *, cfg: NicConfig | None = None, **kw):
    """RTL == model on every pair; returns the model's results."""
    got, want = rtl_rewrite(pairs, **kw), ref_rewrite(pairs, cfg)
    bad = [(i, len(pairs[i][0][0]), vars(pairs[i][1]), g, w)
           for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not bad, f"{len(bad)} mismatches of {len(pairs)}; first: {bad[:2]}"
    return want


def decapsulated(pairs, cfg: NicConfig | None = None) -> int:
    """How many of the pairs' frames the model's decap step applies to (the inner frame comes out)."""
    n = 0
    for (f, _), a in pairs:
        h = parse_headers(f, cfg or NicConfig())
        n += bool(a.vxlan_decap and not h.exception and h.inner is not None)
    return n


# -- frames (seeded, scapy) ---------------------------------------------------------------

def random_frame(r: random.Random, size: int | None = None) -> bytes:
    l2 = Ether(src=_mac(r), dst=_mac(r))
    for _ in range(r.choice([0, 0, 1, 1, 2])):      # untagged, one tag, or double-tagged (0x8100 twice)
        l2 = l2 / Dot1Q(vlan=r.getrandbits(12), prio=r.getrandbits(3), dei=r.getrandbits(1))
    kind = r.choice(["tcp4", "udp4", "udp4z", "tcp6", "udp6", "icmp", "arp", "frag", "v6ext", "bad"])
    if kind in ("tcp6", "udp6", "v6ext"):
        l3 = IPv6(src=_ip6(r), dst=_ip6(r))
        if kind == "v6ext":
            l3 = l3 / IPv6ExtHdrHopByHop()
    elif kind != "arp":
        o = [r.choice([IPOption_NOP(), IPOption_Router_Alert()]) for _ in range(r.choice([0, 0, r.randrange(11)]))]
        l3 = IP(src=_ip4(r), dst=_ip4(r), ttl=r.getrandbits(8), id=r.getrandbits(16), options=o,
                flags=1 if kind == "frag" else r.choice([0, 2]), frag=r.choice([0, 5]) if kind == "frag" else 0)
    sport, dport = r.getrandbits(16), r.getrandbits(16)
    if kind in ("tcp4", "tcp6", "frag", "v6ext"):
        pkt = l2 / l3 / TCP(sport=sport, dport=dport, flags=r.getrandbits(8))
    elif kind in ("udp4", "udp6"):
        pkt = l2 / l3 / UDP(sport=sport, dport=dport)
    elif kind == "udp4z":
        pkt = l2 / l3 / UDP(sport=sport, dport=dport, chksum=0)
    elif kind == "icmp":
        pkt = l2 / l3 / ICMP()
    elif kind == "arp":
        pkt = l2 / ARP(psrc=_ip4(r), pdst=_ip4(r))
    else:
        pkt = l2 / l3 / UDP(sport=sport, dport=dport)
    n = size if size is not None else r.choice([r.randrange(0, 40), r.randrange(40, 260), r.randrange(0, 1500)])
    raw = bytearray(bytes(pkt / Raw(r.randbytes(n))))
    if kind == "bad" and len(raw) > 30:
        raw[r.randrange(12, 30)] = r.getrandbits(8)       # break some header byte
    if r.random() < 0.15:
        raw = raw[:r.randrange(14, min(len(raw), 71) + 1)]    # truncated / short frames 14..70
    elif r.random() < 0.1:
        raw += bytes(r.randrange(1, 9))                      # Ethernet padding after the datagram
    return bytes(raw)


def vxlan_frame(r: random.Random, *, payload: int | None = None) -> bytes:
    """A clean VXLAN frame (any outer/inner headers, the parser tests' generator), sometimes with a
    longer inner payload, padded to 60 bytes and sometimes with outer Ethernet padding."""
    pkt = vxlan_packet(r)
    n = payload if payload is not None else r.choice([0, 0, r.randrange(200), r.randrange(1400)])
    raw = bytes(pkt / Raw(r.randbytes(n))) if n else bytes(pkt)
    return pad(raw + (r.randbytes(r.randrange(1, 150)) if r.random() < 0.3 else b""))


def mixed_frame(r: random.Random) -> bytes:
    pick = r.random()
    if pick < 0.35:
        return vxlan_frame(r)
    if pick < 0.45:
        return corrupt(vxlan_frame(r), r)
    return random_frame(r)


def pairs_for(seed: int, n: int, *, vxlan: float = 0.3):
    r = random.Random(seed)
    return [((mixed_frame(r), r.getrandbits(8)), random_action(r, vxlan=vxlan)) for _ in range(n)]


# -- tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("gaps,stall", [(0.0, 0.0), (0.3, 0.4)])
def test_random_frames_and_actions(gaps, stall):
    pairs = pairs_for(1 + int(10 * stall), 200)
    check(pairs, gaps=gaps, stall=stall, seed=2)
    assert decapsulated(pairs) >= 15
    assert sum(a.vxlan_encap for _, a in pairs) >= 30


def test_every_flag_alone():
    r = random.Random(5)
    pairs = []
    for flag in FLAGS:
        for n in range(12):
            a = random_action(r)
            for f in FLAGS:
                setattr(a, f, 0)
            setattr(a, flag, 1)
            pairs.append(((vxlan_frame(r) if n % 3 == 0 else random_frame(r), 3), a))
    check(pairs, stall=0.2, seed=3)


def test_short_and_long_frames():
    r = random.Random(7)
    pairs = []
    for n in range(0, 71):          # every length up to 70 bytes, from a real header
        base = bytes(Ether() / Dot1Q(vlan=5) / IP() / UDP() / Raw(bytes(64))) if n % 2 else \
            bytes(Ether() / IP() / TCP() / Raw(bytes(64)))
        pairs.append(((base[:n], 1), random_action(r)))
    for size in (120, 124, 128, 132, 190, 192, 196, 250, 300, 1480, 9100, 9100):
        pairs.append(((random_frame(r, size), 2), random_action(r)))
    for _ in range(3):              # maximum frames back to back, with a push and a pop
        for pop in (0, 1):
            f = bytes(Ether() / Dot1Q(vlan=1) / IP() / UDP() / Raw(r.randbytes(9216 - 46)))
            pairs.append(((f, 3), Action(vlan_pop=pop, vlan_set=1 - pop, vlan_vid=7, output=1, out_port=2)))
    check(pairs, gaps=0.2, stall=0.3, seed=4)


def test_udp_zero_checksum_and_wraps():
    """UDP checksum 0 stays 0; a result of 0 is sent as 0xFFFF (UDP) or kept (TCP).

    The new port is chosen so that the RFC 1624 sum comes out as 0xFFFF (result 0).
    """
    r = random.Random(9)
    pairs, at = [], []
    for n in range(60):
        l4 = UDP(sport=r.getrandbits(16), dport=2, chksum=r.choice([0, None])) if n % 3 else \
            TCP(sport=r.getrandbits(16), dport=2)
        l2 = Ether() / Dot1Q(vlan=3) if n % 4 == 0 else Ether()
        pkt = bytes(l2 / IP(src=_ip4(r), dst=_ip4(r)) / l4 / Raw(bytes(20)))
        l4off = 38 if n % 4 == 0 else 34
        hc = int.from_bytes(pkt[l4off + (6 if n % 3 else 16):][:2], "big")
        old = int.from_bytes(pkt[l4off:l4off + 2], "big")
        t = (~hc & 0xFFFF) + (~old & 0xFFFF)
        t = (t & 0xFFFF) + (t >> 16)
        a = Action(set_tp_src=1, tp_src=0xFFFF - t, output=1, out_port=7)
        if n % 5 == 0:
            a.set_ipv4_dst, a.ipv4_dst = 1, r.getrandbits(32)    # then a further step follows
        pairs.append(((pkt, 0), a))
        at.append(l4off + 6 if n % 3 else None)
    want = ref_rewrite(pairs)
    assert sum(k is not None and w[2][k:k + 2] == b"\xff\xff" for k, w in zip(at, want, strict=True)) >= 10
    check(pairs, seed=5)


def malformed_frame(r: random.Random) -> bytes:
    """A TCP/UDP frame with one IP length/version field pushed to or past a parse boundary."""
    l2 = Ether() / Dot1Q(vlan=2) if r.random() < 0.5 else Ether()
    l4 = TCP(sport=1, dport=2) if r.random() < 0.5 else UDP(sport=1, dport=2)
    v6 = r.random() < 0.3
    raw = bytearray(bytes(l2 / (IPv6() if v6 else IP(options=[IPOption_NOP()] * r.choice([0, 4]))) / l4
                          / Raw(r.randbytes(r.randrange(0, 30)))) + bytes(r.randrange(0, 12)))
    l3 = 18 if raw[12:14] == b"\x81\x00" else 14
    field = r.choice(["ihl", "total", "plen", "version", "frag"])
    if field == "ihl" and not v6:
        raw[l3] = 0x40 | r.randrange(16)
    elif field == "total" or (field == "plen" and not v6):
        at = l3 + (4 if v6 else 2)
        base = int.from_bytes(raw[at:at + 2], "big") - 22
        raw[at:at + 2] = max(0, r.choice([base, 0]) + r.randrange(0, 40)).to_bytes(2, "big")
    elif field == "plen":
        raw[l3 + 4:l3 + 6] = r.randrange(0, 40).to_bytes(2, "big")
    elif field == "version":
        raw[l3] = r.getrandbits(4) << 4 | raw[l3] & 0xF
    elif not v6:
        raw[l3 + 6:l3 + 8] = r.choice([0x2000, 0x0001, 0x4000, 0x1FFF]).to_bytes(2, "big")
    return bytes(raw)


def test_malformed_ip_headers():
    """Every IP/L4 check of the model's parse decides whether the IP and port rewrites apply."""
    r = random.Random(17)
    pairs = []
    for _ in range(200):
        a = random_action(r)
        a.set_ipv4_src = a.set_ipv4_dst = a.set_tp_src = a.set_tp_dst = 1
        pairs.append(((malformed_frame(r), 1), a))
    check(pairs, seed=8)


# -- VXLAN ---------------------------------------------------------------------------------

def decap_only(r: random.Random, **kw) -> Action:
    a = random_action(r)
    for f in FLAGS:
        setattr(a, f, 0)
    a.vxlan_decap, a.output = 1, 1
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def test_vxlan_decap():
    """Clean VXLAN frames (IPv4/IPv6 outer, tags, IP options, any inner frame, outer padding):
    exactly the inner frame comes out."""
    r = random.Random(21)
    pairs = [((vxlan_frame(r), r.getrandbits(8)), decap_only(r)) for _ in range(150)]
    want = check(pairs, stall=0.2, seed=9)
    assert decapsulated(pairs) == len(pairs)
    assert all(len(w[2]) < len(f) for ((f, _), _), w in zip(pairs, want, strict=True))


def test_vxlan_decap_not_applicable():
    """Frames the model does not decapsulate pass unchanged: every parser exception (BAD_VXLAN, UDP
    length past the datagram or too short for VXLAN, inner truncation, ...), corrupted and cut VXLAN
    frames, non-VXLAN frames, UDP ports other than 4789."""
    r = random.Random(22)
    frames = [f for raws in DIRECTED.values() for f in raws if len(f) <= MAX_FRAME + 64]
    frames += [corrupt(vxlan_frame(r), r) for _ in range(150)]
    frames += [vxlan_frame(r)[:r.randrange(14, 120)] for _ in range(40)]
    frames += [random_frame(r) for _ in range(30)]
    frames += [pad(bytes(_vxlan(Ether() / IP() / TCP(), udp=UDP(sport=1, dport=p)))) for p in (4788, 4790, 8472)]
    frames += [pad(bytes(Ether() / IP() / UDP(dport=4789, len=12) / Raw(bytes(40))))]
    pairs = [((f, 5), decap_only(r)) for f in frames]
    want = check(pairs, stall=0.2, seed=10)
    unchanged = sum(w[2] == f for ((f, _), _), w in zip(pairs, want, strict=True))
    assert unchanged == len(pairs) - decapsulated(pairs) and unchanged >= 200


def test_vxlan_decap_size_checks():
    """The runt/oversize checks of the decap's parse use the block's ``min_frame``/``max_frame``."""
    r = random.Random(23)
    cfg = NicConfig(min_frame=100, max_frame=1000)
    frames = []
    for n in (0, 10, 20, 30, 40, 900, 930, 940, 950, 1000):
        base = bytes(_vxlan(Ether() / IP() / UDP(sport=1, dport=2) / Raw(r.randbytes(n))))
        frames += [base, pad(base, 100), pad(base, 99), pad(base, 1000), pad(base, 1001)]
    pairs = [((f, 1), decap_only(r, vlan_pop=1)) for f in frames]
    want = check(pairs, cfg=cfg, dut=HeaderRewriter(min_frame=100, max_frame=1000), seed=11)
    sizes = [len(f) for f in frames]
    assert any(w[2] == f and 64 <= len(f) < 100 for ((f, _), _), w in zip(pairs, want, strict=True))
    assert any(w[2] == f and len(f) > 1000 for ((f, _), _), w in zip(pairs, want, strict=True))
    assert 10 <= decapsulated(pairs, cfg) < len(pairs) and 100 in sizes and 1001 in sizes
    assert sum(len(w[2]) < len(f) for ((f, _), _), w in zip(pairs, want, strict=True)) >= 10


ENCAP_SIZES = [0, 1, 13, 14, 15, 17, 18, 19, 50, 59, 60, 63, 64, 65, 77, 78, 79, 100, 113, 114, 115, 127, 128,
               129, 141, 142, 191, 192, 193, 1500, MAX_FRAME - 54, MAX_FRAME - 50, MAX_FRAME]


def encap_action(r: random.Random, **kw) -> Action:
    a = random_action(r)
    for f in FLAGS:
        setattr(a, f, 0)
    a.vxlan_encap, a.output = 1, 1
    for k, v in kw.items():
        setattr(a, k, v)
    return a


@pytest.mark.parametrize("stall", [0.0, 0.3])
def test_vxlan_encap_sizes(stall):
    """Encap of frames of 0 bytes to max_frame, around every beat boundary the 50 outer bytes (and a
    pushed or popped tag) move a frame across; alone and after a push or a pop."""
    r = random.Random(24)
    pairs = []
    for n in ENCAP_SIZES:
        tagged = bytes(Ether() / Dot1Q(vlan=7) / IP() / UDP() / Raw(r.randbytes(max(0, n - 46))))[:n]
        plain = bytes(Ether() / IP() / TCP() / Raw(r.randbytes(max(0, n - 54))))[:n]
        for f, kw in ((plain, {}), (random_frame(r, max(0, n - 60))[:n], {}), (plain, {"vlan_set": 1}),
                      (tagged, {"vlan_pop": 1}), (tagged, {"vlan_set": 1, "set_tp_dst": 1})):
            pairs.append(((f, n & 0xFF), encap_action(r, **kw)))
    want = check(pairs, stall=stall, gaps=stall, seed=12)
    assert {len(w[2]) for w in want} >= {n + VXLAN_OVERHEAD for n in ENCAP_SIZES}


def test_vxlan_decap_rewrite_encap():
    """decap + pop/set fields/push + encap on VXLAN frames: the steps act on the inner frame."""
    r = random.Random(25)
    pairs = []
    for n in range(160):
        a = random_action(r)
        a.vxlan_decap, a.vxlan_encap = 1, int(n % 2 == 0)
        a.vlan_pop, a.vlan_set = n // 2 % 2, n // 4 % 2
        pairs.append(((vxlan_frame(r), r.getrandbits(8)), a))
    check(pairs, stall=0.3, gaps=0.1, seed=13)
    assert decapsulated(pairs) == len(pairs)


def test_decap_encap_of_big_frames_back_to_back():
    """Long frames (a full maximum frame's worth of inner payload) streamed at full rate."""
    r = random.Random(26)
    pairs = []
    for n in range(8):
        f = vxlan_frame(r, payload=r.choice([1300, 4000, MAX_FRAME - 300]))[:MAX_FRAME]
        a = random_action(r, vxlan=0.0)
        a.vxlan_decap, a.vxlan_encap = n % 2, n // 2 % 2
        pairs.append(((f, n), a))
    check(pairs, seed=14)


_action_strategy = st.builds(
    lambda flags, seed: _hyp_action(flags, seed),
    st.fixed_dictionaries({f: st.integers(0, 1) for f in FLAGS}), st.integers(0, 2**32))


def _hyp_action(flags, seed):
    a = random_action(random.Random(seed))
    for f, v in flags.items():
        setattr(a, f, v)
    return a


_hyp_frames = st.one_of(
    st.builds(lambda p, t: bytes(p) + t, st.one_of(ipv4_packet(), ipv6_packet()), tails),
    st.builds(lambda p, tag, t: bytes(_vxlan(p, outer=Ether() / Dot1Q(vlan=3) / IP() if tag else None)) + t,
              st.one_of(ipv4_packet(), ipv6_packet()), st.booleans(), tails),
    st.binary(max_size=200))


@settings(SETTINGS, max_examples=max(10, settings.default.max_examples // 40))     # a simulation per example
@given(batch=st.lists(st.tuples(_hyp_frames, _action_strategy), min_size=1, max_size=25),
       stall=st.sampled_from([0, 0.3]))
def test_hypothesis_batches(batch, stall):
    """Hypothesis-built frames (the model tests' strategies: IPv4/IPv6 with options and padding, VXLAN
    with tagged outer headers, random bytes) with random actions, a batch per simulation."""
    check([((f, k), a) for k, (f, a) in enumerate(batch)], stall=stall, seed=15)


# -- timing --------------------------------------------------------------------------------

def timing(pairs):
    """Back-to-back input, ``o.ready`` always high: (cycle of each frame's last input beat, of each
    frame's first output beat, input beats of each frame, total cycles until the last output beat)."""
    dut = HeaderRewriter()
    rng = random.Random(0)
    per_frame = [frame_beats(f, port, rng, empty_last=False) for (f, port), _ in pairs]
    beats = [(b, i == 0) for bs in per_frame for i, b in enumerate(bs)]
    acts = [a.pack() for _, a in pairs]
    last_in, first_out, t = [], [], {"end": 0}

    async def bench(ctx):
        sent, nact, cyc, starting, done = 0, 0, 0, True, 0
        ctx.set(dut.o.ready, 1)
        while done < len(pairs):
            if sent < len(beats):
                ctx.set(dut.i.payload.as_value(), beats[sent][0])
            ctx.set(dut.i.valid, sent < len(beats))
            if nact < len(acts):
                ctx.set(dut.act.payload.as_value(), acts[nact])
            ctx.set(dut.act.valid, nact < len(acts))
            in_fire = sent < len(beats) and ctx.get(dut.i.ready)
            if in_fire and beats[sent][0] >> 576 & 1:
                last_in.append(cyc)
            if ctx.get(dut.o.valid):
                v = ctx.get(dut.o.payload.as_value())
                if starting:
                    first_out.append(cyc)
                starting = bool(v >> 576 & 1)
                done += starting
            await ctx.tick()
            cyc += 1
            if in_fire:
                nact += beats[sent][1]
                sent += 1
            assert cyc < 20000
        t["end"] = cyc

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return last_in, first_out, [len(bs) for bs in per_frame], t["end"]


def _pre(frame: bytes, a: Action) -> int:
    """The documented skip ``pre = max(0, ceil(s / 64))``, s = decap offset + 4 pop - 4 push - 50 encap."""
    h = parse_headers(frame)
    dec = a.vxlan_decap and not h.exception and h.inner is not None
    inner = frame[h.vxlan_off + VXLAN_HLEN:h.inner.end] if dec else frame
    popped = a.vlan_pop and len(inner) >= 18 and inner[12:14] == b"\x81\x00"
    rest = inner[:12] + inner[16:] if popped else inner
    pushed = a.vlan_set and len(rest) >= 14 and not (len(rest) >= 18 and rest[12:14] == b"\x81\x00")
    s = (h.vxlan_off + VXLAN_HLEN if dec else 0) + 4 * popped - 4 * pushed - VXLAN_OVERHEAD * a.vxlan_encap
    return max(0, -(-s // 64))


TIMING_CASES = {
    "plain": (lambda r: bytes(Ether() / Dot1Q(vlan=9) / IP() / TCP() / Raw(r.randbytes(1400))), {}),
    "pop": (lambda r: bytes(Ether() / Dot1Q(vlan=9) / IP() / TCP() / Raw(r.randbytes(1400))), {"vlan_pop": 1}),
    "push_encap": (lambda r: bytes(Ether() / IP() / TCP() / Raw(r.randbytes(1400))),
                   {"vlan_set": 1, "vxlan_encap": 1}),
    "decap4": (lambda r: bytes(_vxlan(Ether() / IP() / TCP() / Raw(r.randbytes(1400)))), {"vxlan_decap": 1}),
    "decap6_pop": (lambda r: bytes(_vxlan(Ether() / Dot1Q(vlan=1) / IP() / TCP() / Raw(r.randbytes(1400)),
                                          outer=Ether() / Dot1Q(vlan=2) / IPv6())) + bytes(200),
                   {"vxlan_decap": 1, "vlan_pop": 1}),
    "decap_encap": (lambda r: bytes(_vxlan(Ether() / IP() / TCP() / Raw(r.randbytes(1400)))),
                    {"vxlan_decap": 1, "vxlan_encap": 1, "set_tp_dst": 1}),
}


@pytest.mark.parametrize("case", list(TIMING_CASES))
def test_latency_and_throughput(case):
    """First output beat LATENCY + pre cycles after the last input beat; then the output side spends
    1 + max(input beats, pre + output beats) cycles per frame (docstring of HeaderRewriter)."""
    r = random.Random(13)
    make, kw = TIMING_CASES[case]
    pairs = [((make(r), 0), Action(output=1, out_port=1, tp_dst=80, **kw)) for _ in range(6)]
    last_in, first_out, n_in, end = timing(pairs)
    want = ref_rewrite(pairs)
    n_out = [-(-len(w[2]) // BEAT_BYTES) for w in want]
    pre = [_pre(f, a) for (f, _), a in pairs]
    assert len(set(pre)) == 1
    assert {"plain": 0, "pop": 1, "push_encap": 0, "decap4": 1, "decap6_pop": 2, "decap_encap": 0}[case] == pre[0]
    assert first_out[0] - last_in[0] == LATENCY + pre[0]
    for k in range(len(pairs) - 1):
        assert first_out[k + 1] - first_out[k] == 1 + max(n_in[k], pre[k] + n_out[k]) - pre[k] + pre[k + 1]
    assert end - first_out[-1] == n_out[-1]


def test_rejects_bad_parameters():
    with pytest.raises(TypeError):
        HeaderRewriter(max_frame="9216")
    with pytest.raises(ValueError):
        HeaderRewriter(max_frame=10)
    with pytest.raises(ValueError):
        HeaderRewriter(max_frame=9216, depth=100)
    with pytest.raises(ValueError, match="min_frame"):
        HeaderRewriter(min_frame=2000, max_frame=1000)
    with pytest.raises(TypeError, match="min_frame"):
        HeaderRewriter(min_frame=60.0)


@pytest.mark.sim
def test_rewrite_verilator():
    from cxlnic.tb.sim import run_cocotb

    run_cocotb(HeaderRewriter(), "cxlnic.tb.test_rewrite", params="default", seed=1)
