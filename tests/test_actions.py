"""The golden-model rewrite stage against packets built and dissected by scapy.

Expected frames are always scapy constructions (checksums left to scapy by
leaving them unset), never outputs of :mod:`cxlnic.model.actions`.
"""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from cxlnic.model.actions import (
    Result,
    Verdict,
    apply_actions,
    int_to_ip4,
    int_to_mac,
    ip4_to_int,
    mac_to_int,
)
from cxlnic.model.match import ACTION


def examples(n: int) -> int:
    """``n`` examples, or more when the loaded hypothesis profile asks for more (``long``)."""
    return max(n, settings.default.max_examples)


SETTINGS = settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCAPY_VXLAN_PORTS = {4789, 4790, 6633, 8472, 48879}


def act(**kw):
    """An ActionEntry record with the given fields (verdict OUTPUT to port 1 unless given)."""
    kw.setdefault("output", 1)
    kw.setdefault("out_port", 1)
    return ACTION.new(**kw)


def run(frame: bytes, **kw) -> bytes:
    res = apply_actions(frame, act(**kw))
    assert isinstance(res, Result) and isinstance(res.frame, bytes)
    return res.frame


def pad(raw: bytes, to: int = 60) -> bytes:
    return raw + bytes(max(0, to - len(raw)))


# -- generators ---------------------------------------------------------------

mac_ints = st.integers(0, 2**48 - 1)
ip4_ints = st.integers(0, 2**32 - 1)
macs = mac_ints.map(int_to_mac)
ip4s = ip4_ints.map(int_to_ip4)
ip6s = st.integers(0, 2**128 - 1).map(lambda x: str(ipaddress.IPv6Address(x)))
ports = st.integers(0, 65535).filter(lambda p: p not in SCAPY_VXLAN_PORTS)
payloads = st.binary(max_size=40)
tails = st.binary(max_size=20)       # Ethernet padding after the datagram (must survive untouched)


@st.composite
def l2(draw):
    """(Ether, optional Dot1Q) with random addresses."""
    eth = Ether(src=draw(macs), dst=draw(macs))
    tag = None
    if draw(st.booleans()):
        tag = Dot1Q(vlan=draw(st.integers(0, 4095)), prio=draw(st.integers(0, 7)),
                    dei=draw(st.integers(0, 1)))
    return eth, tag


def stack(eth, tag, rest):
    return eth / tag / rest if tag is not None else eth / rest


@st.composite
def ip4_hdr(draw):
    opts = draw(st.lists(st.sampled_from([IPOption_NOP(), IPOption_Router_Alert()]), max_size=8))
    return IP(src=draw(ip4s), dst=draw(ip4s), ttl=draw(st.integers(0, 255)), tos=draw(st.integers(0, 255)),
              id=draw(st.integers(0, 65535)), flags=draw(st.sampled_from([0, 2])), options=opts)


@st.composite
def l4(draw, kinds=("tcp", "udp", "icmp", "other")):
    kind = draw(st.sampled_from(kinds))
    if kind == "tcp":
        return TCP(sport=draw(ports), dport=draw(ports), flags=draw(st.integers(0, 255)),
                   seq=draw(st.integers(0, 2**32 - 1))) / Raw(draw(payloads))
    if kind == "udp":
        return UDP(sport=draw(ports), dport=draw(ports)) / Raw(draw(payloads))
    if kind == "icmp":
        return ICMP(type=draw(st.integers(0, 255)), id=draw(st.integers(0, 65535))) / Raw(draw(payloads))
    return Raw(draw(payloads))


@st.composite
def ipv4_packet(draw, kinds=("tcp", "udp", "icmp", "other")):
    eth, tag = draw(l2())
    ip = draw(ip4_hdr())
    rest = draw(l4(kinds))
    if isinstance(rest, Raw):
        ip.proto = draw(st.sampled_from([0, 1, 2, 47, 50, 89, 132, 255]))
    return stack(eth, tag, ip / rest)


@st.composite
def ipv6_packet(draw, kinds=("tcp", "udp")):
    eth, tag = draw(l2())
    ip = IPv6(src=draw(ip6s), dst=draw(ip6s), hlim=draw(st.integers(0, 255)))
    return stack(eth, tag, ip / draw(l4(kinds)))


def l4_layer(pkt):
    """The TCP or UDP layer right under the outer IP/IPv6 header (or None)."""
    ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    return ip.payload if isinstance(ip.payload, (TCP, UDP)) else None


# -- helpers ------------------------------------------------------------------

def test_address_helpers():
    assert mac_to_int("aa:bb:cc:dd:ee:ff") == 0xAABBCCDDEEFF
    assert mac_to_int("00-11-22-33-44-55") == 0x001122334455
    assert mac_to_int(bytes.fromhex("0200000000fe")) == 0x0200000000FE
    assert int_to_mac(0x0123456789AB) == "01:23:45:67:89:ab"
    assert ip4_to_int("10.0.0.1") == 0x0A000001
    assert ip4_to_int(bytes([192, 168, 1, 2])) == 0xC0A80102
    assert int_to_ip4(0xC0A80102) == "192.168.1.2"
    with pytest.raises(ValueError):
        mac_to_int("aa:bb")
    with pytest.raises(ValueError):
        ip4_to_int(b"\1\2\3")


def test_wire_byte_order_of_action_fields():
    raw = pad(bytes(Ether() / IP() / TCP()))
    out = run(raw, set_eth_dst=1, eth_dst=mac_to_int("02:00:00:00:00:01"),
              set_ipv4_dst=1, ipv4_dst=ip4_to_int("10.9.8.7"), set_tp_dst=1, tp_dst=0x1234)
    p = Ether(out)
    assert (p.dst, p[IP].dst, p[TCP].dport) == ("02:00:00:00:00:01", "10.9.8.7", 0x1234)
    assert out[:6] == bytes.fromhex("020000000001")


# -- set fields ---------------------------------------------------------------

@SETTINGS
@given(pkt=st.one_of(ipv4_packet(), ipv6_packet()), src=mac_ints, dst=mac_ints,
       which=st.sampled_from(["src", "dst", "both"]), tail=tails)
def test_set_eth(pkt, src, dst, which, tail):
    raw = pad(bytes(pkt) + tail)
    kw = {}
    want = pkt.copy()
    if which in ("src", "both"):
        kw.update(set_eth_src=1, eth_src=src)
        want[Ether].src = int_to_mac(src)
    if which in ("dst", "both"):
        kw.update(set_eth_dst=1, eth_dst=dst)
        want[Ether].dst = int_to_mac(dst)
    out = run(raw, **kw)
    assert out == pad(bytes(want) + tail)
    assert out[12:] == raw[12:]


@SETTINGS
@given(pkt=ipv4_packet(), src=ip4_ints, dst=ip4_ints, which=st.sampled_from(["src", "dst", "both"]),
       udp_zero=st.booleans(), tail=tails)
def test_set_ipv4_against_scapy(pkt, src, dst, which, udp_zero, tail):
    pkt = pkt.copy()
    l4 = l4_layer(pkt)
    if udp_zero and isinstance(l4, UDP):
        l4.chksum = 0                       # "no checksum": must stay 0
    raw = pad(bytes(pkt) + tail)
    want = pkt.copy()
    kw = {}
    if which in ("src", "both"):
        kw.update(set_ipv4_src=1, ipv4_src=src)
        want[IP].src = int_to_ip4(src)
    if which in ("dst", "both"):
        kw.update(set_ipv4_dst=1, ipv4_dst=dst)
        want[IP].dst = int_to_ip4(dst)
    out = run(raw, **kw)
    # scapy recomputes the IP and TCP/UDP checksums of ``want`` (they were never set),
    # and leaves ICMP's alone because ICMP has no pseudo-header.
    assert out == pad(bytes(want) + tail)
    p = Ether(out)
    if which in ("src", "both"):
        assert p[IP].src == int_to_ip4(src)
    if which in ("dst", "both"):
        assert p[IP].dst == int_to_ip4(dst)
    if udp_zero and isinstance(l4, UDP):
        assert p[UDP].chksum == 0


def _zero_sum_payload(final, layer) -> bytes:
    """A 2-byte payload word that makes scapy's checksum of ``final`` come out as one's-complement zero.

    ``final`` carries a zero word at the start of its payload; the checksum scapy
    computes for it is ``~S``; putting that value in the word makes the sum
    ``S + ~S`` = 0xFFFF, i.e. a computed checksum of 0x0000.
    """
    return Ether(bytes(final))[layer].chksum.to_bytes(2, "big")


@pytest.mark.parametrize("layer,want", [(UDP, 0xFFFF), (TCP, 0x0000)])
def test_l4_checksum_of_zero(layer, want):
    body = b"payload!"
    hdr = layer(sport=1111, dport=2222)

    def build(dst, word):
        return Ether() / IP(src="10.0.0.1", dst=dst) / hdr.copy() / Raw(word + body)

    word = _zero_sum_payload(build("10.0.0.99", b"\0\0"), layer)
    final = build("10.0.0.99", word)
    assert Ether(bytes(final))[layer].chksum == want      # scapy: UDP sends 0 as 0xFFFF, TCP as 0
    out = run(pad(bytes(build("10.0.0.2", word))), set_ipv4_dst=1, ipv4_dst=ip4_to_int("10.0.0.99"))
    assert out == pad(bytes(final))


def test_set_ipv4_repairs_a_wrong_header_checksum():
    pkt = Ether() / IP(src="1.1.1.1", dst="2.2.2.2", chksum=0xBEEF) / UDP(sport=1, dport=2)
    out = run(pad(bytes(pkt)), set_ipv4_src=1, ipv4_src=ip4_to_int("3.3.3.3"))
    # The IP checksum is recomputed from scratch; the UDP checksum is updated
    # incrementally from its (correct) old value, so it equals a full recomputation.
    assert out == pad(bytes(Ether() / IP(src="3.3.3.3", dst="2.2.2.2") / UDP(sport=1, dport=2)))


@SETTINGS
@given(pkt=st.one_of(ipv4_packet(("tcp", "udp")), ipv6_packet()), sport=st.integers(0, 65535),
       dport=st.integers(0, 65535), which=st.sampled_from(["src", "dst", "both"]), tail=tails)
def test_set_tp_against_scapy(pkt, sport, dport, which, tail):
    raw = pad(bytes(pkt) + tail)
    want = pkt.copy()
    kw = {}
    if which in ("src", "both"):
        kw.update(set_tp_src=1, tp_src=sport)
        l4_layer(want).sport = sport
    if which in ("dst", "both"):
        kw.update(set_tp_dst=1, tp_dst=dport)
        l4_layer(want).dport = dport
    out = run(raw, **kw)
    assert out == pad(bytes(want) + tail)


@pytest.mark.parametrize("ip", [IP(src="1.2.3.4", dst="5.6.7.8"), IPv6(src="::1", dst="::2")],
                         ids=["v4", "v6"])
def test_set_tp_keeps_zero_udp_checksum(ip):
    pkt = Ether() / ip / UDP(sport=10, dport=20, chksum=0) / Raw(b"data")
    out = run(pad(bytes(pkt)), set_tp_src=1, tp_src=999, set_tp_dst=1, tp_dst=888)
    p = Ether(out)
    assert (p[UDP].sport, p[UDP].dport, p[UDP].chksum) == (999, 888, 0)


@pytest.mark.parametrize("pkt", [
    Ether() / IPv6() / TCP(),                                   # not IPv4
    Ether() / ARP(),
    Ether() / IP(flags="MF") / TCP(),                           # fragment: no rewrite at all
    Ether() / IP(frag=100) / UDP(),
    Ether() / IP(len=30) / TCP(),                               # L4 header cut by the IP length
    Ether() / IP(ihl=4) / UDP(),                                # bad IP header
    Ether(type=0x0800) / IPv6() / TCP(),
], ids=lambda p: p.summary())
def test_set_ipv4_not_applicable(pkt):
    raw = pad(bytes(pkt))
    assert run(raw, set_ipv4_src=1, ipv4_src=0x01020304, set_ipv4_dst=1, ipv4_dst=0x05060708) == raw


@pytest.mark.parametrize("pkt", [
    Ether() / IP() / ICMP(),
    Ether() / IPv6(nh=58) / Raw(b"\x80\0\0\0"),
    Ether() / IPv6() / IPv6ExtHdrHopByHop() / TCP(),            # extension headers are not walked
    Ether() / IP(flags="MF") / TCP(),
    Ether() / IP(len=24) / UDP(),
    Ether() / ARP(),
], ids=lambda p: p.summary())
def test_set_tp_not_applicable(pkt):
    raw = pad(bytes(pkt))
    assert run(raw, set_tp_src=1, tp_src=1, set_tp_dst=1, tp_dst=2) == raw


def test_set_ipv4_on_icmp_rewrites_address_only():
    pkt = Ether() / IP(src="9.9.9.9", dst="8.8.8.8") / ICMP(id=7) / Raw(b"ping")
    out = run(pad(bytes(pkt)), set_ipv4_src=1, ipv4_src=ip4_to_int("7.7.7.7"))
    assert out == pad(bytes(Ether() / IP(src="7.7.7.7", dst="8.8.8.8") / ICMP(id=7) / Raw(b"ping")))


def test_set_ipv4_on_vxlan_rewrites_outer_only():
    inner = Ether() / IP(src="192.168.0.1", dst="192.168.0.2") / TCP()
    mk = lambda dst: (Ether() / IP(src="10.0.0.1", dst=dst) / UDP(sport=5, dport=4789, chksum=0)  # noqa: E731
                      / VXLAN(flags=8, vni=3) / inner)
    out = run(bytes(mk("10.0.0.2")), set_ipv4_dst=1, ipv4_dst=ip4_to_int("10.0.0.3"))
    assert out == bytes(mk("10.0.0.3"))


# -- VLAN -----------------------------------------------------------------------

@SETTINGS
@given(pkt=st.one_of(ipv4_packet(), ipv6_packet()), tail=tails)
def test_vlan_pop(pkt, tail):
    raw = pad(bytes(pkt) + tail)
    out = run(raw, vlan_pop=1)
    if Dot1Q in pkt:
        tag = pkt[Dot1Q]
        want = Ether(src=pkt[Ether].src, dst=pkt[Ether].dst, type=tag.type) / tag.payload.copy()
        assert out == bytes(want) + raw[len(bytes(pkt)):]
        assert len(out) == len(raw) - 4             # no re-padding
    else:
        assert out == raw


@SETTINGS
@given(pkt=st.one_of(ipv4_packet(), ipv6_packet()), vid=st.integers(0, 4095), pcp=st.integers(0, 7),
       tail=tails)
def test_vlan_set(pkt, vid, pcp, tail):
    raw = pad(bytes(pkt) + tail)
    out = run(raw, vlan_set=1, vlan_vid=vid, vlan_pcp=pcp)
    rest = raw[len(bytes(pkt)):]
    if Dot1Q in pkt:                                # modify: PCP and DEI kept
        want = pkt.copy()
        want[Dot1Q].vlan = vid
    else:                                           # push
        want = Ether(src=pkt.src, dst=pkt.dst) / Dot1Q(prio=pcp, dei=0, vlan=vid) / pkt.payload.copy()
    assert out == bytes(want) + rest
    p = Ether(out)
    assert p[Dot1Q].vlan == vid


def test_vlan_only_8100_counts_as_tagged():
    pkt = Ether() / Dot1AD(vlan=5) / Dot1Q(vlan=6) / IP()
    raw = pad(bytes(pkt))
    assert run(raw, vlan_pop=1) == raw
    pushed = run(raw, vlan_set=1, vlan_vid=9, vlan_pcp=1)
    want = Ether() / Dot1Q(prio=1, vlan=9) / Dot1AD(vlan=5) / Dot1Q(vlan=6) / IP()
    assert pushed == bytes(want) + raw[len(bytes(pkt)):]


# -- VXLAN ----------------------------------------------------------------------

@SETTINGS
@given(inner=st.one_of(ipv4_packet(), ipv6_packet()), eth_src=mac_ints, eth_dst=mac_ints, ip_src=ip4_ints,
       ip_dst=ip4_ints, sport=st.integers(0, 65535), vni=st.integers(0, 2**24 - 1))
def test_vxlan_encap(inner, eth_src, eth_dst, ip_src, ip_dst, sport, vni):
    frame = bytes(inner)
    out = run(frame, vxlan_encap=1, encap_eth_src=eth_src, encap_eth_dst=eth_dst, encap_ip_src=ip_src,
              encap_ip_dst=ip_dst, encap_udp_src=sport, encap_vni=vni)
    want = (Ether(src=int_to_mac(eth_src), dst=int_to_mac(eth_dst))
            / IP(src=int_to_ip4(ip_src), dst=int_to_ip4(ip_dst), tos=0, id=0, flags="DF", frag=0, ttl=64)
            / UDP(sport=sport, dport=4789, chksum=0) / VXLAN(flags=0x08, vni=vni) / Raw(frame))
    assert out == bytes(want)
    p = Ether(out)
    assert p[IP].len == 20 + 8 + 8 + len(frame) and p[UDP].len == 8 + 8 + len(frame)
    chk = p[IP].chksum
    del p[IP].chksum
    assert Ether(bytes(p))[IP].chksum == chk                 # scapy agrees with our header checksum
    assert p[VXLAN].vni == vni and bytes(p[VXLAN].payload) == frame
    assert isinstance(p[VXLAN].payload, Ether)


def _vxlan(inner, *, outer=None, udp=None, flags=0x08, vni=0x1234):
    outer = outer if outer is not None else Ether() / IP(src="10.0.0.1", dst="10.0.0.2")
    udp = udp if udp is not None else UDP(sport=333, dport=4789)
    return outer / udp / VXLAN(flags=flags, vni=vni) / inner


@SETTINGS
@given(inner=st.one_of(ipv4_packet(), ipv6_packet()), v6=st.booleans(), tag=st.booleans(), tail=tails)
def test_vxlan_decap(inner, v6, tag, tail):
    ip = IPv6() if v6 else IP()
    outer = Ether() / Dot1Q(vlan=4) / ip if tag else Ether() / ip
    raw = bytes(_vxlan(inner, outer=outer)) + tail      # tail: outer padding, not part of the inner frame
    assert run(raw, vxlan_decap=1) == bytes(inner)


@pytest.mark.parametrize("pkt", [
    _vxlan(Ether() / IP() / TCP(), flags=0x00),                      # BAD_VXLAN
    _vxlan(Ether() / IP(len=200) / TCP()),                           # inner truncated
    _vxlan(Ether() / IP() / TCP(), udp=UDP(sport=1, dport=4790)),    # not port 4789
    Ether() / IP() / UDP(dport=4789, len=12) / Raw(bytes(40)),      # VXLAN header past the UDP end
    Ether() / IP() / TCP(),
], ids=range(5))
def test_vxlan_decap_not_applicable(pkt):
    raw = pad(bytes(pkt))
    assert run(raw, vxlan_decap=1) == raw


# -- order and verdict -------------------------------------------------------------

def test_full_pipeline_order():
    """decap -> pop -> set fields -> push -> encap, all on one frame, vs one scapy construction."""
    inner = (Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02") / Dot1Q(vlan=100, prio=3)
             / IP(src="192.168.1.1", dst="192.168.1.2", options=[IPOption_NOP()] * 4)
             / TCP(sport=1000, dport=80, flags="PA") / Raw(b"hello"))
    raw = bytes(_vxlan(inner, vni=42)) + bytes(7)
    a = act(vxlan_decap=1, vlan_pop=1, set_eth_src=1, eth_src=0x0A0000000001, set_eth_dst=1,
            eth_dst=0x0A0000000002, set_ipv4_src=1, ipv4_src=ip4_to_int("172.16.0.1"), set_ipv4_dst=1,
            ipv4_dst=ip4_to_int("172.16.0.2"), set_tp_src=1, tp_src=5555, set_tp_dst=1, tp_dst=8080,
            vlan_set=1, vlan_vid=200, vlan_pcp=5, vxlan_encap=1, encap_eth_src=0x0B0000000001,
            encap_eth_dst=0x0B0000000002, encap_ip_src=ip4_to_int("100.64.0.1"),
            encap_ip_dst=ip4_to_int("100.64.0.2"), encap_udp_src=49152, encap_vni=77, ct_commit=1,
            out_port=9)
    res = apply_actions(raw, a)
    new_inner = (Ether(src="0a:00:00:00:00:01", dst="0a:00:00:00:00:02") / Dot1Q(vlan=200, prio=5)
                 / IP(src="172.16.0.1", dst="172.16.0.2", options=[IPOption_NOP()] * 4)
                 / TCP(sport=5555, dport=8080, flags="PA") / Raw(b"hello"))
    want = (Ether(src="0b:00:00:00:00:01", dst="0b:00:00:00:00:02")
            / IP(src="100.64.0.1", dst="100.64.0.2", id=0, flags="DF", ttl=64)
            / UDP(sport=49152, dport=4789, chksum=0) / VXLAN(flags=0x08, vni=77) / Raw(bytes(new_inner)))
    assert res == (Verdict.OUTPUT, 9, bytes(want))


def test_pop_then_push_uses_action_pcp():
    raw = pad(bytes(Ether() / Dot1Q(vlan=1, prio=7, dei=1) / IP() / UDP()))
    out = run(raw, vlan_pop=1, vlan_set=1, vlan_vid=2, vlan_pcp=0)
    assert out == pad(bytes(Ether() / Dot1Q(vlan=2, prio=0, dei=0) / IP() / UDP()))


def test_decap_then_set_applies_to_inner():
    inner = Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=1, dport=2)
    out = run(bytes(_vxlan(inner)), vxlan_decap=1, set_ipv4_dst=1, ipv4_dst=ip4_to_int("3.3.3.3"))
    assert out == bytes(Ether() / IP(src="1.1.1.1", dst="3.3.3.3") / UDP(sport=1, dport=2))
    assert len(out) < 60                                  # no padding: the MAC pads


@pytest.mark.parametrize("output,drop,to_host", list(itertools.product([0, 1], repeat=3)))
def test_verdict_precedence(output, drop, to_host):
    raw = pad(bytes(Ether() / IP() / TCP()))
    res = apply_actions(raw, ACTION.new(output=output, drop=drop, to_host=to_host, out_port=5,
                                        set_tp_dst=1, tp_dst=99))
    if drop:
        want = (Verdict.DROP, 0)
    elif to_host:
        want = (Verdict.TO_HOST, 0)
    elif output:
        want = (Verdict.OUTPUT, 5)
    else:
        want = (Verdict.DROP, 0)                          # no verdict flag
    assert (res.verdict, res.out_port) == want
    assert Ether(res.frame)[TCP].dport == 99              # rewritten whatever the verdict


def test_ct_commit_changes_nothing():
    raw = pad(bytes(Ether() / IP() / TCP()))
    assert apply_actions(raw, act(ct_commit=1, out_port=3)) == (Verdict.OUTPUT, 3, raw)


# -- robustness -------------------------------------------------------------------

action_flags = st.fixed_dictionaries({k: st.integers(0, 1) for k in (
    "output", "drop", "to_host", "ct_commit", "vlan_pop", "vlan_set", "vxlan_decap", "vxlan_encap",
    "set_eth_src", "set_eth_dst", "set_ipv4_src", "set_ipv4_dst", "set_tp_src", "set_tp_dst")})


@settings(max_examples=examples(300), deadline=None)
@given(raw=st.one_of(st.binary(max_size=120),
                     st.builds(lambda p, t: bytes(p) + t, st.one_of(ipv4_packet(), ipv6_packet()), tails),
                     st.builds(lambda p: bytes(_vxlan(p)), ipv4_packet())),
       flags=action_flags, cut=st.integers(0, 200), data=st.data())
def test_never_raises(raw, flags, cut, data):
    raw = raw[:cut]
    if raw:
        buf = bytearray(raw)
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
        raw = bytes(buf)
    a = ACTION.new(**flags, out_port=7, vlan_vid=4095, vlan_pcp=7, eth_src=2**48 - 1, ipv4_src=2**32 - 1,
                   tp_src=65535, encap_vni=2**24 - 1)
    res = apply_actions(raw, a)
    assert res.verdict in Verdict and isinstance(res.frame, bytes)
    if not any(flags[k] for k in flags if k.startswith(("set_", "vlan_", "vxlan_"))):
        assert res.frame == raw
