# amaranth: UnusedElaboratable=no
"""HeaderRewriter RTL against :func:`cxlnic.model.actions.apply_actions` (Amaranth simulator).

``rtl_rewrite`` drives (frame, action) pairs and returns ``[(verdict, out_port, unsupported,
bytes)]``; ``ref_rewrite`` is the model's result in the same form.
"""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from cxlnic.hdl.layouts import ActionEntry
from cxlnic.hdl.parser import BEAT_BYTES
from cxlnic.hdl.rewrite import LATENCY, HeaderRewriter
from cxlnic.model.actions import Verdict, apply_actions
from cxlnic.model.codec import flat_fields
from cxlnic.tb.common import frame_beats

#: The flags this block implements, and the fields of each.
SUPPORTED = ["output", "drop", "to_host", "ct_commit", "vlan_pop", "vlan_set", "set_eth_src", "set_eth_dst",
             "set_ipv4_src", "set_ipv4_dst", "set_tp_src", "set_tp_dst"]
_FIELDS = {f.path: f for f in flat_fields(ActionEntry)}


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


def random_action(r: random.Random, *, unsupported: bool = False) -> Action:
    a = Action()
    for flag in SUPPORTED:
        setattr(a, flag, int(r.random() < 0.4))
    for p, f in _FIELDS.items():
        if not p.startswith("_") and p not in SUPPORTED and not p.startswith("vxlan"):
            setattr(a, p, r.getrandbits(f.width))
    if unsupported:
        which = r.choice([("vxlan_encap",), ("vxlan_decap",), ("vxlan_encap", "vxlan_decap")])
        for flag in which:
            setattr(a, flag, 1)
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


def ref_rewrite(pairs):
    out = []
    for (frame, port), a in pairs:
        if a.vxlan_encap or a.vxlan_decap:
            out.append((int(Verdict.TO_HOST), 0, 1, bytes(frame), port))
        else:
            r = apply_actions(frame, a)
            out.append((int(r.verdict), r.out_port, 0, r.frame, port))
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
                    tags = {(w >> 585 & 3, w >> 587 & 0xFF, w >> 595 & 1) for w in cur}
                    assert len(tags) == 1, f"verdict/out_port/unsupported differ between beats: {tags}"
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


def check(pairs, **kw):
    got, want = rtl_rewrite(pairs, **kw), ref_rewrite(pairs)
    bad = [(i, len(pairs[i][0][0]), vars(pairs[i][1]), g, w)
           for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not bad, f"{len(bad)} mismatches of {len(pairs)}; first: {bad[:2]}"


# -- frames (seeded, scapy) ---------------------------------------------------------------

def _mac(r):
    return ":".join(f"{r.getrandbits(8):02x}" for _ in range(6))


def _ip4(r):
    return ".".join(str(r.getrandbits(8)) for _ in range(4))


def _ip6(r):
    return ":".join(f"{r.getrandbits(16):x}" for _ in range(8))


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


def pairs_for(seed: int, n: int, *, unsupported=0.05):
    r = random.Random(seed)
    return [((random_frame(r), r.getrandbits(8)), random_action(r, unsupported=r.random() < unsupported))
            for _ in range(n)]


# -- tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("gaps,stall", [(0.0, 0.0), (0.3, 0.4)])
def test_random_frames_and_actions(gaps, stall):
    check(pairs_for(1 + int(10 * stall), 150), gaps=gaps, stall=stall, seed=2)


def test_every_supported_flag_alone():
    r = random.Random(5)
    pairs = []
    for flag in SUPPORTED:
        for _ in range(12):
            a = random_action(r)
            for f in SUPPORTED:
                setattr(a, f, 0)
            setattr(a, flag, 1)
            pairs.append(((random_frame(r), 3), a))
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
    assert sum(k is not None and w[3][k:k + 2] == b"\xff\xff" for k, w in zip(at, want, strict=True)) >= 10
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


def test_vxlan_actions_pass_through_unsupported():
    r = random.Random(11)
    pairs = [((random_frame(r), 4), random_action(r, unsupported=True)) for _ in range(30)]
    got = rtl_rewrite(pairs, stall=0.3, seed=6)
    assert all(g[:3] == (int(Verdict.TO_HOST), 0, 1) and g[3] == f for g, ((f, _), _) in zip(got, pairs, strict=True))


def timing(pairs):
    """Back-to-back input, ``o.ready`` always high: (cycle of each frame's last input beat, of each
    frame's first output beat, total cycles until the last output beat)."""
    dut = HeaderRewriter()
    rng = random.Random(0)
    beats = [(b, i == 0) for (f, port), _ in pairs for i, b in enumerate(frame_beats(f, port, rng))]
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
            assert cyc < 10000
        t["end"] = cyc

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return last_in, first_out, t["end"]


@pytest.mark.parametrize("pop", [False, True])
def test_latency_and_throughput(pop):
    """First output beat LATENCY (+1 with a pop) cycles after the last input beat; long frames
    stream at one beat per cycle plus 1 (2 with a pop) idle output cycles per frame."""
    r = random.Random(13)
    pairs = [((bytes(Ether() / Dot1Q(vlan=9) / IP() / TCP() / Raw(r.randbytes(1400))), 0),
              Action(output=1, out_port=1, vlan_pop=int(pop), set_tp_dst=1, tp_dst=80)) for _ in range(8)]
    last_in, first_out, end = timing(pairs)
    assert first_out[0] - last_in[0] == LATENCY + pop
    out_beats = sum(-(-len(w[3]) // BEAT_BYTES) for w in ref_rewrite(pairs))
    assert end - first_out[0] == out_beats + (1 + pop) * (len(pairs) - 1)


def test_rejects_bad_parameters():
    with pytest.raises(TypeError):
        HeaderRewriter(max_frame="9216")
    with pytest.raises(ValueError):
        HeaderRewriter(max_frame=10)
    with pytest.raises(ValueError):
        HeaderRewriter(max_frame=9216, depth=100)


@pytest.mark.sim
def test_rewrite_verilator():
    from cxlnic.tb.sim import run_cocotb

    run_cocotb(HeaderRewriter(), "cxlnic.tb.test_rewrite", params="default", seed=1)
