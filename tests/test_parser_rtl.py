# amaranth: UnusedElaboratable=no
"""PacketParser RTL against the golden parser (Amaranth simulator), with and without stalls.

``rtl_parse`` drives frames as 512-bit beats and returns ``[(packed PacketKey, length)]``;
``ref_parse`` is :func:`cxlnic.model.parser.parse` packed the same way.
"""

from __future__ import annotations

import random

import pytest
from amaranth.lib import data
from amaranth.sim import Simulator
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from cxlnic.config import NicConfig
from cxlnic.hdl.layouts import ExceptionCode, PacketKey
from cxlnic.hdl.parser import LATENCY, PacketParser
from cxlnic.model.match import PKEY
from cxlnic.model.parser import parse, parse_headers
from cxlnic.tb.common import frame_beats

EC = ExceptionCode
KEY_BITS = data.Layout.cast(PacketKey).size
TINY = dict(min_frame=14, max_frame=9216)      # lets short frames reach the header checks


# -- drivers -----------------------------------------------------------------------------

def ref_parse(frames, min_frame=60, max_frame=9216):
    cfg = NicConfig(min_frame=min_frame, max_frame=max_frame)
    return [(PKEY.pack(parse(f, port, cfg)), min(len(f), 0xFFFF)) for f, port in frames]


def rtl_parse(frames, *, min_frame=60, max_frame=9216, gaps=0.0, stall=0.0, seed=0):
    """Run PacketParser in Amaranth's simulator; ``frames`` is ``[(bytes, in_port)]``.

    ``gaps`` is the chance the source idles a cycle, ``stall`` the chance ``o.ready`` is low.
    """
    dut = PacketParser(min_frame=min_frame, max_frame=max_frame)
    rng = random.Random(seed)
    beats = []
    for f, port in frames:
        beats += frame_beats(f, port, rng, empty_last=rng.random() < 0.5)
    out = []

    async def bench(ctx):
        sent, offering, idle = 0, False, 0
        while len(out) < len(frames):
            ctx.set(dut.o.ready, rng.random() >= stall)
            if not offering and sent < len(beats) and rng.random() >= gaps:
                offering = True         # once offered, a beat stays until taken
                ctx.set(dut.i.payload.as_value(), beats[sent])
            ctx.set(dut.i.valid, offering)
            in_fire = offering and ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                v = ctx.get(dut.o.payload.as_value())
                out.append((v & ((1 << KEY_BITS) - 1), v >> KEY_BITS))
                idle = 0
            await ctx.tick()
            if in_fire:
                sent, offering, idle = sent + 1, False, 0
            idle += 1
            assert idle < 1000, f"output stream o stuck after {len(out)} of {len(frames)} results"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def check(frames, **kw):
    cfg = {k: kw[k] for k in ("min_frame", "max_frame") if k in kw}
    got, want = rtl_parse(frames, **kw), ref_parse(frames, **cfg)
    bad = [(i, len(frames[i][0]), EC(PKEY.unpack(w[0]).exception).name, g, w)
           for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not bad, f"{len(bad)} mismatches of {len(frames)}; first: {bad[:3]}"


# -- packet generators (seeded, scapy) ---------------------------------------------------

def pad(raw: bytes, to: int = 60) -> bytes:
    return raw + bytes(max(0, to - len(raw)))


def _mac(r):
    return ":".join(f"{r.getrandbits(8):02x}" for _ in range(6))


def _ip4(r):
    return ".".join(str(r.getrandbits(8)) for _ in range(4))


def _ip6(r):
    return ":".join(f"{r.getrandbits(16):x}" for _ in range(8))


def _l2(r, vlan=None):
    pkt = Ether(src=_mac(r), dst=_mac(r))
    if vlan if vlan is not None else r.random() < 0.5:
        pkt = pkt / Dot1Q(vlan=r.getrandbits(12), prio=r.getrandbits(3), dei=r.getrandbits(1))
    return pkt


def _l3(r, v=None, opts=None):
    v = v or r.choice([4, 6])
    if v == 4:
        n = r.randrange(11) if opts is None else opts
        o = [r.choice([IPOption_NOP(), IPOption_Router_Alert()]) for _ in range(n)]
        return IP(src=_ip4(r), dst=_ip4(r), ttl=r.getrandbits(8), id=r.getrandbits(16),
                  flags=r.choice([0, 2]), options=o), 4
    return IPv6(src=_ip6(r), dst=_ip6(r), tc=r.getrandbits(8), fl=r.getrandbits(20)), 6


def _ports(r):
    return r.choice([r.getrandbits(16), r.choice([53, 80, 443, 4789])])


def ip_packet(r, vxlan_ok=True, **kw):
    """Ether/[Dot1Q]/IPv4|IPv6/TCP|UDP|ICMP|other (VXLAN port avoided unless ``vxlan_ok``)."""
    ip, v = _l3(r, **kw)
    base = _l2(r) / ip
    kind = r.choice(["tcp", "udp", "icmp", "other"])
    if kind == "tcp":
        pkt = base / TCP(sport=_ports(r), dport=_ports(r), flags=r.getrandbits(8), seq=r.getrandbits(32))
    elif kind == "udp":
        dport = _ports(r)
        while not vxlan_ok and dport == 4789:
            dport = _ports(r)
        pkt = base / UDP(sport=_ports(r), dport=dport)
    elif kind == "icmp":
        pkt = base / (ICMP(type=r.getrandbits(8)) if v == 4 else Raw(b"\x80\0\0\0"))
        if v == 6:
            pkt[IPv6].nh = 58
    else:
        pkt = base / Raw(r.randbytes(r.randrange(48)))
        p = r.choice([1, 47, 50 if v == 4 else 59, 132, 255])
        if v == 4:
            pkt[IP].proto = p
        else:
            pkt[IPv6].nh = p
    return pkt / Raw(r.randbytes(r.randrange(40)))


def vxlan_packet(r, **kw):
    ip, _ = _l3(r, **kw)
    inner = ip_packet(r) if r.random() < 0.85 else _l2(r) / ARP()
    vx = VXLAN(flags=0x08 | r.getrandbits(8), vni=r.getrandbits(24))      # only the I bit matters
    return _l2(r) / ip / UDP(sport=_ports(r), dport=4789) / vx / inner


def non_ip_packet(r):
    return r.choice([
        Ether() / ARP(),
        _l2(r, vlan=True) / ARP(),
        Ether() / Dot1AD(vlan=5) / Dot1Q(vlan=6) / IP() / TCP(),
        Ether() / Dot1Q(vlan=5) / Dot1Q(vlan=6) / IP() / TCP(),
        Ether(type=0x88CC) / Raw(bytes(50)),
    ])


def wellformed(r) -> bytes:
    pick = r.random()
    pkt = vxlan_packet(r) if pick < 0.4 else ip_packet(r, vxlan_ok=False) if pick < 0.9 else non_ip_packet(r)
    return pad(bytes(pkt) + r.randbytes(r.randrange(24)))


def deepest() -> bytes:
    """The deepest header the model reads: TCP flags at byte 185."""
    opts = [IPOption_NOP()] * 40
    inner = Ether() / Dot1Q(vlan=3) / IP(src="1.2.3.4", dst="5.6.7.8", options=opts) \
        / TCP(sport=1, dport=2, flags=0xA5)
    raw = bytes(Ether() / Dot1Q(vlan=9) / IP(options=opts) / UDP(sport=7, dport=4789)
                / VXLAN(flags=8, vni=0x123456) / inner)
    assert raw[185] == 0xA5
    return raw


def _vx(inner, *, outer_udp=None, vni=77, flags=0x08):
    udp = outer_udp if outer_udp is not None else UDP(sport=1000, dport=4789)
    return Ether() / IP() / udp / VXLAN(flags=flags, vni=vni) / inner


#: One directed frame (or more) per exception code, padded to 60 unless the code is about size.
DIRECTED = {
    EC.NONE: [pad(bytes(Ether() / IP() / UDP())), deepest(), deepest() + bytes(100),
              pad(bytes(_vx(Raw(bytes(Ether() / ARP())[:14]), vni=1)))],
    EC.RUNT: [bytes(Ether() / IP() / UDP()), bytes(59), b"\x01"],
    EC.OVERSIZE: [pad(bytes(Ether() / IP() / UDP()), 9217)],
    EC.TRUNCATED: [pad(bytes(p)) for p in (
        Ether() / IP(ihl=15) / Raw(b"x" * 10), Ether() / IP(len=200) / UDP(), Ether() / IP(len=30) / TCP(),
        Ether() / IPv6(plen=100) / UDP(), Ether() / IPv6(plen=4) / UDP(), Ether() / Dot1Q() / IP(len=200) / TCP(),
        _vx(Raw(bytes(40)), outer_udp=UDP(dport=4789, len=12)), _vx(Raw(bytes(40)), outer_udp=UDP(dport=4789, len=7)),
        _vx(Raw(bytes(40)), outer_udp=UDP(dport=4789, len=200)), _vx(Raw(b"\xaa" * 13)),
        _vx(Raw(bytes(12) + b"\x81\x00\x00")), _vx(Ether() / IP(len=100) / TCP()),
        _vx(Ether() / IP(len=30) / TCP()), _vx(Ether() / IPv6(plen=30) / TCP()))]
    + [deepest()[:185]],
    EC.BAD_IP_VERSION: [pad(bytes(p)) for p in (
        Ether(type=0x0800) / IPv6() / UDP(), Ether() / IP(version=5) / UDP(), Ether() / IPv6(version=4) / UDP(),
        _vx(Ether(type=0x86DD) / IP() / UDP() / Raw(bytes(40))))],
    EC.BAD_IP_HEADER: [pad(bytes(p)) for p in (
        Ether() / IP(ihl=4) / UDP(), Ether() / IP(len=19) / UDP(),
        Ether() / IP(options=[IPOption_NOP()] * 4, len=20) / UDP(), _vx(Ether() / IP(ihl=3) / UDP()))],
    EC.FRAGMENT: [pad(bytes(p)) for p in (
        Ether() / IP(flags="MF") / UDP(), Ether() / IP(frag=8191, flags="DF") / TCP(),
        Ether() / IP(flags="MF", len=24) / TCP(), _vx(Ether() / IP(flags="MF") / UDP()))],
    EC.UNSUPPORTED: [pad(bytes(p)) for p in (
        Ether() / IPv6() / IPv6ExtHdrHopByHop() / TCP(), Ether() / IPv6() / IPv6ExtHdrFragment() / TCP(),
        _vx(Ether() / IPv6(nh=60) / Raw(bytes(16))))],
    EC.BAD_VXLAN: [pad(bytes(_vx(Ether() / IP() / TCP(), flags=f))) for f in (0x00, 0x80, 0xF7)],
}


def _field_offsets(raw: bytes) -> list[int]:
    """Byte offsets of the fields the checks look at (version/IHL, lengths, fragment bits,
    next header, UDP length, VXLAN flags), outer and inner, as the model locates them."""
    offs = []
    h = parse_headers(raw, NicConfig(min_frame=14))
    for x in (h, h.inner):
        if x is None:
            continue
        offs += [x.eth_off + 12, x.eth_off + 13]
        if x.l3_off:
            offs += [x.l3_off + d for d in (0, 2, 3, 4, 5, 6, 7)]
        if x.l4_off:
            offs += [x.l4_off + d for d in (2, 3, 4, 5)]
        if x.vxlan_off:
            offs += [x.vxlan_off]
    return [o for o in offs if o < len(raw)] or [12]


def corrupt(raw: bytes, r: random.Random) -> bytes:
    """A random truncation, or header fields / random header bytes overwritten (maybe cut too)."""
    buf = bytearray(raw)
    how = r.random()
    if how < 0.3:
        return bytes(buf[:r.randrange(1, len(buf) + 1)])
    fields = _field_offsets(raw)
    for _ in range(r.randrange(1, 4)):
        at = r.choice(fields) if r.random() < 0.7 else r.randrange(min(len(buf), 120))
        buf[at] = r.choice([r.getrandbits(8), buf[at] ^ 1 << r.randrange(8), 0, 0xFF])
    return bytes(buf[:r.randrange(1, len(buf) + 1)]) if how < 0.5 else bytes(buf)


def random_bytes(r: random.Random) -> bytes:
    """Random bytes 1..300 long, often steered onto the IP/VLAN/VXLAN paths."""
    buf = bytearray(r.randbytes(r.randrange(1, 301)))
    et = r.choice([None, 0x0800, 0x86DD, 0x8100])
    if et is not None and len(buf) >= 15:
        buf[12:14] = et.to_bytes(2, "big")
        buf[14] = r.getrandbits(4) << 4 | buf[14] & 0xF
        if et == 0x0800 and len(buf) >= 38 and r.random() < 0.5:
            buf[14], buf[23], buf[36:38], buf[20:22] = 0x45, 17, b"\x12\xb5", b"\0\0"
    return bytes(buf)


# -- tests -------------------------------------------------------------------------------

@pytest.mark.parametrize("gaps,stall", [(0.0, 0.0), (0.3, 0.4)])
def test_wellformed_matches_model(gaps, stall):
    r = random.Random(1)
    frames = [(wellformed(r), r.getrandbits(8)) for _ in range(300)]
    assert all(parse(f, 0).exception == EC.NONE for f, _ in frames)
    check(frames, gaps=gaps, stall=stall, seed=2)


def test_every_exception_code():
    frames = []
    for code, raws in DIRECTED.items():
        for raw in raws:
            assert parse(raw, 5).exception == code, (code, raw.hex())
            frames.append((raw, 5))
    assert {EC(PKEY.unpack(k).exception) for k, _ in ref_parse(frames)} == set(EC)
    check(frames, stall=0.3, seed=3)


@pytest.mark.parametrize("cfg", [{}, TINY], ids=["default", "min14"])
def test_corrupted_and_truncated(cfg):
    r = random.Random(4)
    frames = [(corrupt(wellformed(r), r), r.getrandbits(8)) for _ in range(600)]
    check(frames, gaps=0.2, stall=0.2, seed=5, **cfg)


@pytest.mark.parametrize("cfg", [{}, TINY], ids=["default", "min14"])
def test_random_bytes(cfg):
    r = random.Random(6)
    frames = [(random_bytes(r), r.getrandbits(8)) for _ in range(400)]
    check(frames, seed=7, **cfg)


def test_frame_sizes():
    """Every length 0..300 (beat boundaries, runt edge), exactly 60, and giants."""
    r = random.Random(8)
    base = bytes(_vx(Ether() / Dot1Q(vlan=4) / IPv6() / TCP(flags="S")))
    frames = [(pad(base, n)[:n], n & 0xFF) for n in range(0, 301)]
    frames += [(pad(bytes(Ether() / IP() / UDP()), 60), 1), (pad(base, 9216), 2), (pad(base, 9217), 3),
               (r.randbytes(70_000), 4)]
    check(frames, seed=9)
    check(frames[:80], min_frame=14, max_frame=100, stall=0.5, seed=10)


def test_back_to_back_single_beat_frames_full_rate():
    """One-beat frames at one beat per cycle: the parser never drops i.ready without backpressure."""
    r = random.Random(11)
    frames = [(wellformed(r)[:64], i) for i in range(60)]
    dut = PacketParser()
    beats = [b for f, p in frames for b in frame_beats(f, p, r, empty_last=False)]
    stalls, outs = [], []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for b in beats:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload.as_value(), b)
            stalls.append(not ctx.get(dut.i.ready))
            await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for _ in range(10):
            await ctx.tick()

    async def monitor(ctx):
        async for _, _, o_valid, payload in ctx.tick().sample(dut.o.valid, dut.o.payload.as_value()):
            if o_valid:
                outs.append((payload & ((1 << KEY_BITS) - 1), payload >> KEY_BITS))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.add_testbench(monitor, background=True)
    sim.run()
    assert not any(stalls)
    assert outs == ref_parse(frames)


def test_latency():
    dut = PacketParser()
    edges = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload.as_value(), frame_beats(bytes(64), 1, random.Random(0), empty_last=False)[0])
        assert ctx.get(dut.i.ready)
        await ctx.tick()                # this edge accepts the frame's only beat
        ctx.set(dut.i.valid, 0)
        edges.append(1)
        while not ctx.get(dut.o.valid):
            await ctx.tick()
            edges.append(1)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(edges) == LATENCY


def test_rejects_bad_limits():
    with pytest.raises(ValueError, match="min_frame"):
        PacketParser(min_frame=100, max_frame=99)
    with pytest.raises(ValueError, match="max_frame"):
        PacketParser(max_frame=0xFFFF)
    with pytest.raises(TypeError, match="min_frame"):
        PacketParser(min_frame=60.0)


@pytest.mark.sim
def test_parser_verilator():
    from cxlnic.tb.sim import run_cocotb

    run_cocotb(PacketParser(), "cxlnic.tb.test_parser", params="default", seed=1,
               extra_env={"CXLNIC_PARSER_PACKETS": "3000"})
