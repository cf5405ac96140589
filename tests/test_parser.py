"""The golden-model parser against scapy's dissection, plus directed malformed frames.

Expected key fields always come from scapy (``Ether(raw)`` and its layers) or
from the header arithmetic of the RFCs, never from :mod:`cxlnic.model.parser`.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from cxlnic.config import NicConfig
from cxlnic.hdl.layouts import ExceptionCode
from cxlnic.model.match import PKEY
from cxlnic.model.parser import parse, parse_headers

EC = ExceptionCode


def examples(n: int) -> int:
    """``n`` examples, or more when the loaded hypothesis profile asks for more (``long``)."""
    return max(n, settings.default.max_examples)


SETTINGS = settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEFAULT = NicConfig()
TINY = NicConfig(min_frame=14)          # lets truncated frames reach the header checks
IPV6_EXT = [0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254]
# Ports scapy binds to VXLAN in either direction: keep plain UDP away from them so
# that the generated "plain" packets are plain for scapy and for us alike.
SCAPY_VXLAN_PORTS = {4789, 4790, 6633, 8472, 48879}


# -- oracle -------------------------------------------------------------------

def _ip_int(addr: str, v4: bool) -> int:
    x = int(ipaddress.ip_address(addr))
    return (0xFFFF << 32) | x if v4 else x


def scapy_fields(raw: bytes, in_port: int) -> dict:
    """The key fields of a well-formed frame, read off scapy's dissection."""
    exp = dict(tenant=0, in_port=in_port, eth_type=0, vlan_id=0, vlan_valid=0, ip_proto=0,
               src_port=0, dst_port=0, src_ip=0, dst_ip=0, tcp_flags=0, ct_state=0,
               exception=int(EC.NONE))
    eth = Ether(raw)
    ip = eth.payload.payload if isinstance(eth.payload, Dot1Q) else eth.payload
    udp = ip.payload if isinstance(ip, (IP, IPv6)) else None
    if isinstance(udp, UDP) and udp.dport == 4789:
        vx = udp.payload
        assert isinstance(vx, VXLAN)
        exp["tenant"] = vx.vni
        eth = vx.payload
        assert isinstance(eth, Ether)
    nxt = eth.payload
    et = eth.type
    if isinstance(nxt, Dot1Q):
        exp["vlan_valid"], exp["vlan_id"] = 1, nxt.vlan
        et = nxt.type
        nxt = nxt.payload
    exp["eth_type"] = et
    if isinstance(nxt, IP):
        exp["ip_proto"] = nxt.proto
        exp["src_ip"], exp["dst_ip"] = _ip_int(nxt.src, True), _ip_int(nxt.dst, True)
    elif isinstance(nxt, IPv6):
        exp["ip_proto"] = nxt.nh
        exp["src_ip"], exp["dst_ip"] = _ip_int(nxt.src, False), _ip_int(nxt.dst, False)
    else:
        return exp
    l4 = nxt.payload
    if isinstance(l4, TCP):
        exp["src_port"], exp["dst_port"], exp["tcp_flags"] = l4.sport, l4.dport, int(l4.flags)
    elif isinstance(l4, UDP):
        exp["src_port"], exp["dst_port"] = l4.sport, l4.dport
    return exp


def key_fields(k) -> dict:
    f = k.flow
    return dict(tenant=f.tenant, in_port=f.in_port, eth_type=f.eth_type, vlan_id=f.vlan_id,
                vlan_valid=f.vlan_valid, ip_proto=f.ip_proto, src_port=f.src_port, dst_port=f.dst_port,
                src_ip=f.src_ip, dst_ip=f.dst_ip, tcp_flags=k.tcp_flags, ct_state=k.ct_state,
                exception=k.exception)


def exception_key(in_port: int, code: ExceptionCode) -> int:
    k = PKEY.new(exception=int(code))
    k.flow.in_port = in_port
    return PKEY.pack(k)


def assert_exception(raw: bytes, code: ExceptionCode, cfg: NicConfig = DEFAULT, in_port: int = 7):
    k = parse(raw, in_port, cfg)
    assert k.exception == code, f"got {EC(k.exception).name}, want {code.name}"
    assert PKEY.pack(k) == exception_key(in_port, code), "exception key must be zero but in_port/exception"


def pad(raw: bytes, to: int = 60) -> bytes:
    return raw + bytes(max(0, to - len(raw)))


def header_spans(raw: bytes) -> list[tuple[str, int, int]]:
    """(layer, first byte, one past the header) of every header scapy dissects in ``raw``."""
    spans = []
    layer: Packet = Ether(raw)
    total = len(raw)
    while layer and not isinstance(layer, (Raw,)):
        start = total - len(layer)
        hlen = len(layer) - len(layer.payload)
        spans.append((layer.name, start, start + hlen))
        layer = layer.payload
    return spans


def ip_end(raw: bytes) -> int:
    """One past the outer IP datagram, per scapy (Ethernet header + IP total length)."""
    eth = Ether(raw)
    ip = eth.payload.payload if isinstance(eth.payload, Dot1Q) else eth.payload
    start = len(raw) - len(ip)
    if isinstance(ip, IP):
        return start + ip.len
    return start + 40 + ip.plen


# -- generators ---------------------------------------------------------------

macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
ip4s = st.integers(0, 2**32 - 1).map(lambda x: str(ipaddress.IPv4Address(x)))
ip6s = st.integers(0, 2**128 - 1).map(lambda x: str(ipaddress.IPv6Address(x)))
ports = st.integers(0, 65535).filter(lambda p: p not in SCAPY_VXLAN_PORTS)
payloads = st.binary(max_size=48)
other_protos4 = st.integers(0, 255).filter(lambda p: p not in (6, 17))
other_protos6 = st.integers(0, 255).filter(lambda p: p not in (6, 17) and p not in IPV6_EXT)


@st.composite
def l2(draw, ethertype: int | None = None):
    pkt = Ether(src=draw(macs), dst=draw(macs))
    if draw(st.booleans()):
        pkt = pkt / Dot1Q(vlan=draw(st.integers(0, 4095)), prio=draw(st.integers(0, 7)),
                          dei=draw(st.integers(0, 1)))
    return pkt


@st.composite
def l3(draw):
    if draw(st.booleans()):
        opts = draw(st.lists(st.sampled_from([IPOption_NOP(), IPOption_Router_Alert()]), max_size=10))
        return IP(src=draw(ip4s), dst=draw(ip4s), ttl=draw(st.integers(0, 255)),
                  tos=draw(st.integers(0, 255)), id=draw(st.integers(0, 65535)),
                  flags=draw(st.sampled_from([0, 2])), options=opts), 4
    return IPv6(src=draw(ip6s), dst=draw(ip6s), tc=draw(st.integers(0, 255)),
                fl=draw(st.integers(0, 2**20 - 1)), hlim=draw(st.integers(0, 255))), 6


@st.composite
def l4(draw, v: int, udp_ports=ports):
    kind = draw(st.sampled_from(["tcp", "udp", "icmp", "other"]))
    if kind == "tcp":
        return TCP(sport=draw(ports), dport=draw(ports), flags=draw(st.integers(0, 255)),
                   seq=draw(st.integers(0, 2**32 - 1)), window=draw(st.integers(0, 65535)))
    if kind == "udp":
        return UDP(sport=draw(udp_ports), dport=draw(udp_ports))
    if kind == "icmp":
        return ICMP(type=draw(st.integers(0, 255))) if v == 4 else Raw(b"\x80\0\0\0")
    return Raw(draw(payloads))


@st.composite
def ip_packet(draw, udp_ports=ports):
    """A well-formed Ether/[Dot1Q]/IP|IPv6/L4/payload packet (scapy object, unpadded)."""
    base = draw(l2())
    ip, v = draw(l3())
    proto4 = draw(l4(v, udp_ports))
    pkt = base / ip / proto4
    if isinstance(proto4, Raw):
        p = draw(other_protos4 if v == 4 else other_protos6)
        if v == 4:
            pkt[IP].proto = p
        else:
            pkt[IPv6].nh = p
    elif isinstance(proto4, (TCP, UDP, ICMP)):
        pkt = pkt / Raw(draw(payloads))
    return pkt


@st.composite
def vxlan_packet(draw):
    """Outer Ether/[Dot1Q]/IP|IPv6/UDP(4789)/VXLAN/inner well-formed packet (unpadded)."""
    base = draw(l2())
    ip, _ = draw(l3())
    inner = draw(st.one_of(ip_packet(udp_ports=st.integers(0, 65535)),
                           l2().map(lambda p: p / ARP())))
    vni = draw(st.integers(0, 2**24 - 1))
    return base / ip / UDP(sport=draw(ports), dport=4789) / VXLAN(flags=0x08, vni=vni) / inner


any_packet = st.one_of(ip_packet(), vxlan_packet())
junk = st.binary(max_size=24)          # random Ethernet padding after the datagram


# -- well-formed packets vs scapy ---------------------------------------------

@SETTINGS
@given(pkt=any_packet, tail=junk, in_port=st.integers(0, 255))
def test_wellformed_matches_scapy(pkt, tail, in_port):
    raw = pad(bytes(pkt) + tail)
    assert key_fields(parse(raw, in_port)) == scapy_fields(raw, in_port)


@SETTINGS
@given(pkt=vxlan_packet(), flags=st.integers(0, 255), in_port=st.integers(0, 255))
def test_vxlan_other_flag_bits_ignored(pkt, flags, in_port):
    raw = bytearray(pad(bytes(pkt)))
    want = scapy_fields(bytes(raw), in_port)
    vx = next(s for s in header_spans(bytes(raw)) if s[0] == "VXLAN")[1]
    raw[vx] = flags | 0x08
    assert key_fields(parse(bytes(raw), in_port)) == want


# -- truncation and corruption ------------------------------------------------

@SETTINGS
@given(pkt=any_packet, data=st.data())
def test_truncation(pkt, data):
    raw = bytes(pkt)
    end = ip_end(raw)
    assert end == len(raw)
    cut = data.draw(st.integers(0, len(raw)), label="cut")
    k = parse(raw[:cut], 3, TINY)
    if cut < 14:
        want = EC.RUNT
    elif cut < end:
        want = EC.TRUNCATED
    else:
        want = EC.NONE
    # Independently of the datagram-length argument: a cut inside any header scapy
    # dissects must be reported as a truncation.
    if any(start < cut < stop for _, start, stop in header_spans(raw)) and cut >= 14:
        assert want == EC.TRUNCATED
    assert k.exception == want
    if want != EC.NONE:
        assert PKEY.pack(k) == exception_key(3, want)
    else:
        assert key_fields(k) == scapy_fields(raw, 3)
    if cut < 60:
        assert_exception(raw[:cut], EC.RUNT, in_port=3)


@SETTINGS
@given(pkt=any_packet, tail=junk, data=st.data())
def test_payload_corruption_does_not_change_key(pkt, tail, data):
    raw = pad(bytes(pkt) + tail)
    spans = header_spans(raw)
    last = max(stop for _, _, stop in spans)
    if last >= len(raw):
        return
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8))):
        buf[data.draw(st.integers(last, len(raw) - 1))] = data.draw(st.integers(0, 255))
    assert key_fields(parse(bytes(buf), 9)) == scapy_fields(raw, 9)


def _check_invariants(raw: bytes, cfg: NicConfig = DEFAULT):
    k = parse(raw, 200, cfg)
    code = EC(k.exception)          # raises if not a valid code
    assert k.flow.in_port == 200 and k.ct_state == 0
    if code != EC.NONE:
        assert PKEY.pack(k) == exception_key(200, code)
    PKEY.pack(k)                    # every field in range


@SETTINGS
@given(pkt=any_packet, data=st.data())
def test_header_corruption_never_raises(pkt, data):
    buf = bytearray(pad(bytes(pkt)))
    for _ in range(data.draw(st.integers(1, 6))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    _check_invariants(bytes(buf))
    _check_invariants(bytes(buf[:cut]), TINY)


@settings(max_examples=examples(400), deadline=None)
@given(raw=st.binary(max_size=160), et=st.sampled_from([None, 0x0800, 0x86DD, 0x8100]),
       nib=st.integers(0, 15), vx=st.booleans())
def test_random_bytes_never_raise(raw, et, nib, vx):
    buf = bytearray(raw)
    if et is not None and len(buf) >= 15:
        buf[12:14] = et.to_bytes(2, "big")
        buf[14] = nib << 4 | buf[14] & 0xF
        if vx and et == 0x0800 and len(buf) >= 38:     # steer towards the VXLAN path
            buf[14], buf[23], buf[36:38] = 0x45, 17, b"\x12\xb5"
            buf[20:22] = b"\0\0"
    _check_invariants(bytes(buf))
    _check_invariants(bytes(buf), TINY)


def test_parse_accepts_bytearray_and_memoryview():
    raw = pad(bytes(Ether() / IP(src="1.2.3.4") / TCP(dport=80)))
    want = key_fields(parse(raw, 1))
    assert key_fields(parse(bytearray(raw), 1)) == want
    assert key_fields(parse(memoryview(raw), 1)) == want


# -- directed cases: sizes ----------------------------------------------------

def test_runt_and_min_frame():
    raw = bytes(Ether() / IP() / UDP())          # 42 bytes
    assert_exception(raw, EC.RUNT)
    assert_exception(pad(raw, 59), EC.RUNT)
    assert parse(pad(raw, 60), 7).exception == EC.NONE


def test_oversize_and_max_frame():
    raw = bytes(Ether() / IP() / UDP())
    assert parse(pad(raw, 9216), 7).exception == EC.NONE
    assert_exception(pad(raw, 9217), EC.OVERSIZE)
    cfg = NicConfig(min_frame=60, max_frame=100)
    assert parse(pad(raw, 100), 7, cfg).exception == EC.NONE
    assert_exception(pad(raw, 101), EC.OVERSIZE, cfg)


def test_runt_checked_before_oversize():
    cfg = NicConfig(min_frame=60, max_frame=60)
    assert_exception(bytes(59), EC.RUNT, cfg)
    assert_exception(bytes(61), EC.OVERSIZE, cfg)


# -- directed cases: TRUNCATED ------------------------------------------------

def test_truncated_l2():
    assert_exception(bytes(Ether(type=0x8100))[:14] + b"\0\x05", EC.TRUNCATED, TINY)
    assert_exception(bytes(Ether(type=0x0800)), EC.TRUNCATED, TINY)


@pytest.mark.parametrize("pkt", [
    Ether() / IP(ihl=15) / Raw(b"x" * 10),             # 60-byte header, 46 bytes on the wire
    Ether() / IP(len=200) / UDP(),                      # total length past the frame
    Ether() / IP(len=20 + 10) / TCP(),                  # TCP header cut by the IP length
    Ether() / IP(len=20 + 4) / UDP(),                   # UDP header cut by the IP length
    Ether() / IPv6(plen=100) / UDP(),                   # payload length past the frame
    Ether() / IPv6(plen=4) / UDP(),                     # UDP cut by the payload length
    Ether() / IPv6(plen=19) / TCP(),
    Ether() / Dot1Q(vlan=3) / IP(len=200) / TCP(),
], ids=lambda p: p.summary())
def test_truncated_l3_l4(pkt):
    assert_exception(pad(bytes(pkt)), EC.TRUNCATED)


def test_truncated_headers_cut_by_frame():
    assert_exception(bytes(Ether() / IP())[:14 + 19], EC.TRUNCATED, TINY)
    assert_exception(bytes(Ether() / IPv6())[:14 + 39], EC.TRUNCATED, TINY)
    assert_exception(bytes(Ether() / IP(options=[IPOption_NOP()] * 8))[:14 + 24], EC.TRUNCATED, TINY)


def test_l4_bounded_by_ip_length_not_frame():
    # The TCP header bytes are all in the frame, but the IP datagram ends after 19 of them.
    raw = pad(bytes(Ether() / IP(len=20 + 19) / TCP(sport=1, dport=2)), 80)
    assert Ether(raw)[IP].len == 39
    assert_exception(raw, EC.TRUNCATED)
    # Exactly 20 bytes is enough (data offset is not validated).
    raw = pad(bytes(Ether() / IP(len=40) / TCP(sport=1, dport=2, dataofs=15)), 80)
    k = parse(raw, 1)
    assert k.exception == EC.NONE and (k.flow.src_port, k.flow.dst_port) == (1, 2)


def _vx(inner, *, outer_udp=None, vni=77, flags=0x08):
    udp = outer_udp if outer_udp is not None else UDP(sport=1000, dport=4789)
    return Ether() / IP() / udp / VXLAN(flags=flags, vni=vni) / inner


@pytest.mark.parametrize("pkt", [
    _vx(Raw(b"\0" * 40), outer_udp=UDP(sport=1, dport=4789, len=12)),      # VXLAN header past UDP end
    _vx(Raw(b"\0" * 40), outer_udp=UDP(sport=1, dport=4789, len=7)),
    _vx(Raw(b"\0" * 40), outer_udp=UDP(sport=1, dport=4789, len=200)),     # UDP past the IP payload
    _vx(Raw(b"\xaa" * 13)),                                                 # inner Ethernet < 14 bytes
    _vx(Raw(bytes(12) + b"\x81\x00\x00")),                                  # inner tag cut
    _vx(Ether() / IP(len=100) / TCP()),                                    # inner IP past UDP end
    _vx(Ether() / IP(len=30) / TCP()),                                     # inner TCP cut by inner IP
    _vx(Ether() / IPv6(plen=30) / TCP()),                                  # inner IPv6 past UDP end
], ids=[f"vx{i}" for i in range(8)])
def test_truncated_vxlan(pkt):
    raw = bytes(pkt)
    assert_exception(pad(raw, 120), EC.TRUNCATED)


def test_inner_frame_bounded_by_udp_length():
    # Outer padding must not feed the inner parse: the inner IPv4 header is cut by the
    # outer UDP length even though the frame goes on.
    inner = bytes(Ether() / IP() / TCP())
    raw = bytearray(bytes(_vx(Raw(inner))) + bytes(40))
    udp_len_at = 14 + 20 + 4
    raw[udp_len_at:udp_len_at + 2] = (8 + 8 + 14 + 10).to_bytes(2, "big")
    assert_exception(bytes(raw), EC.TRUNCATED)


# -- directed cases: other codes ----------------------------------------------

@pytest.mark.parametrize("pkt", [
    Ether(type=0x0800) / IPv6() / UDP(),
    Ether(type=0x86DD) / IP() / UDP() / Raw(bytes(40)),
    Ether() / IP(version=5) / UDP(),
    Ether() / IPv6(version=4) / UDP(),
    _vx(Ether(type=0x0800) / IPv6() / UDP()),
    _vx(Ether(type=0x86DD) / IP() / UDP() / Raw(bytes(40))),
], ids=lambda p: p.summary())
def test_bad_ip_version(pkt):
    assert_exception(pad(bytes(pkt)), EC.BAD_IP_VERSION)


@pytest.mark.parametrize("pkt", [
    Ether() / IP(ihl=4) / UDP(),
    Ether() / IP(ihl=0) / UDP(),
    Ether() / IP(len=19) / UDP(),
    Ether() / IP(len=0) / UDP(),
    Ether() / IP(options=[IPOption_NOP()] * 4, len=20) / UDP(),   # total length < 4*IHL = 24
    _vx(Ether() / IP(ihl=3) / UDP()),
], ids=lambda p: p.summary())
def test_bad_ip_header(pkt):
    assert_exception(pad(bytes(pkt)), EC.BAD_IP_HEADER)


@pytest.mark.parametrize("pkt", [
    Ether() / IP(flags="MF") / UDP(),
    Ether() / IP(frag=1) / UDP(),
    Ether() / IP(frag=8191, flags="DF") / TCP(),
    Ether() / IP(flags="MF", frag=185) / Raw(bytes(8)),
    Ether() / IP(flags="MF", len=20 + 4) / TCP(),           # fragment beats the L4 truncation
    _vx(Ether() / IP(flags="MF") / UDP()),
], ids=lambda p: p.summary())
def test_fragment(pkt):
    assert_exception(pad(bytes(pkt)), EC.FRAGMENT)


def test_df_and_reserved_bits_are_not_fragments():
    for flags in ("DF", "evil", "evil+DF"):
        k = parse(pad(bytes(Ether() / IP(flags=flags) / UDP(sport=5, dport=6))), 1)
        assert k.exception == EC.NONE and k.flow.dst_port == 6


@pytest.mark.parametrize("nh", IPV6_EXT)
def test_ipv6_extension_headers_unsupported(nh):
    assert_exception(pad(bytes(Ether() / IPv6(nh=nh) / Raw(bytes(16)))), EC.UNSUPPORTED)
    assert_exception(pad(bytes(_vx(Ether() / IPv6(nh=nh) / Raw(bytes(16))))), EC.UNSUPPORTED)


@pytest.mark.parametrize("ext", [IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(), IPv6ExtHdrFragment()],
                         ids=lambda p: p.name)
def test_real_ipv6_extension_headers(ext):
    assert_exception(pad(bytes(Ether() / IPv6() / ext / TCP())), EC.UNSUPPORTED)


def test_ipv6_no_next_header_is_a_protocol():
    k = parse(pad(bytes(Ether() / IPv6(nh=59))), 1)
    assert k.exception == EC.NONE and k.flow.ip_proto == 59 and k.flow.src_port == 0


@pytest.mark.parametrize("flags", [0x00, 0x80, 0x04, 0xF7])
def test_bad_vxlan(flags):
    assert_exception(pad(bytes(_vx(Ether() / IP() / TCP(), flags=flags))), EC.BAD_VXLAN)


# -- directed cases: accepted frames ------------------------------------------

def test_non_ip_ethertypes():
    for pkt, et, vlan in [
        (Ether() / ARP(), 0x0806, None),
        (Ether() / Dot1Q(vlan=42) / ARP(), 0x0806, 42),
        (Ether() / Dot1AD(vlan=5) / Dot1Q(vlan=6) / IP() / TCP(), 0x88A8, None),   # QinQ: outer 0x88a8
        (Ether() / Dot1Q(vlan=5) / Dot1Q(vlan=6) / IP() / TCP(), 0x8100, 5),         # only one tag parsed
        (Ether(type=0x88CC) / Raw(bytes(50)), 0x88CC, None),
    ]:
        raw = pad(bytes(pkt))
        k = parse(raw, 4)
        want = PKEY.new()
        want.flow.in_port, want.flow.eth_type = 4, et
        if vlan is not None:
            want.flow.vlan_valid, want.flow.vlan_id = 1, vlan
        assert PKEY.pack(k) == PKEY.pack(want), pkt.summary()


def test_vlan_id_is_low_12_bits_of_tci():
    k = parse(pad(bytes(Ether() / Dot1Q(prio=7, dei=1, vlan=0xABC) / IP() / UDP())), 0)
    assert (k.flow.vlan_valid, k.flow.vlan_id, k.flow.eth_type) == (1, 0xABC, 0x0800)


def test_ipv4_padding_and_options_ignored():
    pkt = Ether() / IP(src="10.1.2.3", dst="192.168.0.9", options=[IPOption_Router_Alert()]) \
        / UDP(sport=53, dport=5353)
    raw = bytes(pkt) + b"\xff" * 30                 # non-zero padding after the datagram
    assert key_fields(parse(raw, 2)) == scapy_fields(raw, 2)
    assert parse(raw, 2).flow.src_ip == 0xFFFF_0A01_0203


def test_ipv4_header_checksum_not_verified():
    k = parse(pad(bytes(Ether() / IP(chksum=0x1234) / UDP(dport=9))), 1)
    assert k.exception == EC.NONE and k.flow.dst_port == 9


def test_tcp_flags_byte_13():
    k = parse(pad(bytes(Ether() / IP() / TCP(flags="SA"))), 1)
    assert k.tcp_flags == 0x12
    k = parse(pad(bytes(Ether() / IPv6() / TCP(flags=0xFF))), 1)
    assert k.tcp_flags == 0xFF


def test_udp_4789_source_port_only_is_not_vxlan():
    raw = pad(bytes(Ether() / IP() / UDP(sport=4789, dport=1234) / Raw(bytes(30))))
    k = parse(raw, 1)
    assert (k.flow.tenant, k.flow.ip_proto, k.flow.src_port, k.flow.dst_port) == (0, 17, 4789, 1234)


def test_vxlan_key_describes_inner_packet():
    inner = (Ether() / Dot1Q(vlan=99) / IP(src="172.16.0.1", dst="172.16.0.2")
             / TCP(sport=4, dport=5, flags="F"))
    pkt = (Ether() / Dot1Q(vlan=7) / IPv6() / UDP(sport=9, dport=4789) / VXLAN(flags=0x08, vni=0xABCDEF)
           / inner)
    raw = pad(bytes(pkt))
    k = parse(raw, 12)
    assert key_fields(k) == scapy_fields(raw, 12)
    assert (k.flow.tenant, k.flow.in_port, k.flow.vlan_id, k.flow.dst_port, k.tcp_flags) == \
        (0xABCDEF, 12, 99, 5, 0x01)


def test_inner_vxlan_not_decapsulated_again():
    inner = Ether() / IP(src="1.1.1.1") / UDP(sport=77, dport=4789) / VXLAN(flags=0, vni=5) / Raw(bytes(4))
    k = parse(pad(bytes(_vx(inner, vni=3))), 1)
    assert k.exception == EC.NONE
    assert (k.flow.tenant, k.flow.ip_proto, k.flow.src_port, k.flow.dst_port) == (3, 17, 77, 4789)


def test_vxlan_inner_has_no_runt_check():
    inner = bytes(Ether() / ARP())[:14]            # a bare 14-byte inner Ethernet header
    k = parse(pad(bytes(_vx(Raw(inner), vni=1))), 1)
    assert (k.exception, k.flow.tenant, k.flow.eth_type) == (EC.NONE, 1, 0x0806)


def test_headers_offsets():
    pkt = Ether() / Dot1Q() / IP(options=[IPOption_NOP()] * 4) / UDP(dport=4789) / VXLAN(flags=8, vni=2) \
        / Ether() / IPv6() / TCP()
    raw = bytes(pkt) + bytes(10)
    h = parse_headers(raw)
    assert (h.exception, h.l3_off, h.ip_hlen, h.l4_off, h.vxlan_off) == (0, 18, 24, 42, 50)
    assert h.l3_end == len(raw) - 10
    i = h.inner
    assert (i.eth_off, i.end, i.l3_off, i.l4_off, i.ip_version) == (58, len(raw) - 10, 72, 112, 6)
