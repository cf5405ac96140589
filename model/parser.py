"""Golden-model packet parser: frame bytes -> :class:`~cxlnic.hdl.layouts.PacketKey`.

The RTL parser is checked bit-for-bit against :func:`parse`, so every rule
here is a fixed sequence of bounds and field checks with no loops over
variable-length structures (IP options are skipped by IHL, IPv6 extension
headers are refused, not walked).

Rules, in the order they are checked (the first failing check sets the
exception code; later checks are not made):

Frame (outer only)
    ``len < cfg.min_frame`` -> RUNT, ``len > cfg.max_frame`` -> OVERSIZE.
    Lengths exclude the FCS.
Ethernet
    Needs 14 bytes (TRUNCATED).  Ethertype at bytes 12-13.  If it is 0x8100
    the 4-byte tag must be present (TRUNCATED): ``vlan_valid = 1``,
    ``vlan_id = TCI & 0xFFF``, ``eth_type`` = the two bytes after the tag.
    Only one tag is parsed: a second 0x8100 (or an outer 0x88a8) is simply
    the ``eth_type``.  Non-IP ethertypes (ARP, ...) give a key with only
    ``eth_type`` and the VLAN fields set, and no exception.
IPv4 (0x0800)
    ``avail`` = bytes from the IP header to the end of the frame.
    avail < 20 -> TRUNCATED; version != 4 -> BAD_IP_VERSION; IHL < 5 ->
    BAD_IP_HEADER; 4*IHL > avail -> TRUNCATED; total_length < 4*IHL ->
    BAD_IP_HEADER; total_length > avail -> TRUNCATED; MF set or fragment
    offset != 0 -> FRAGMENT.  Bytes after ``total_length`` are Ethernet
    padding and are ignored.  Options (IHL > 5) are skipped, not
    interpreted.  The header checksum is **not** verified (a NIC that
    forwards at line rate has no use for it: a corrupted header would merely
    miss its flow; the host stack verifies it anyway).  Addresses are stored
    IPv4-mapped (``::ffff:a.b.c.d``).
IPv6 (0x86DD)
    avail < 40 -> TRUNCATED; version != 6 -> BAD_IP_VERSION; payload_length
    > avail - 40 -> TRUNCATED; next header in :data:`IPV6_EXT_HEADERS` ->
    UNSUPPORTED (extension headers are not walked); otherwise ``ip_proto`` =
    next header.
L4 (bounded by the IP length, never by the frame)
    TCP (6): 20 bytes needed else TRUNCATED; ports and ``tcp_flags`` (byte
    13).  The data offset is not validated: options are irrelevant to the
    key, and a bogus data offset only affects the payload.  UDP (17): 8
    bytes else TRUNCATED; the UDP length field is not checked (except for
    VXLAN, below).  Other protocols: ports 0, flags 0.
VXLAN (outer UDP with destination port 4789, over IPv4 or IPv6)
    ``ulen`` = the UDP length field.  ``ulen`` > the IP payload or ``ulen``
    < 16 (no room for the 8-byte VXLAN header inside the datagram) ->
    TRUNCATED; VXLAN flags byte without the I bit (0x08) -> BAD_VXLAN.
    ``tenant`` = VNI.  The inner frame is the bytes from the end of the
    VXLAN header to the end of the UDP datagram; it is parsed with the
    Ethernet/IP/L4 rules above (no runt/oversize check, no second
    decapsulation: inner UDP 4789 is ordinary UDP).  The key then describes
    the **inner** packet (VLAN, ethertype, addresses, ports, flags) with
    the outer ``in_port`` and ``tenant`` = VNI.  Untunnelled traffic has
    tenant 0.

On any exception the key is all zero except ``flow.in_port`` and
``exception``.  ``ct_state`` is always 0 here (connection tracking fills it
later).  :func:`parse` never raises on any byte string.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxlnic.config import NicConfig
from cxlnic.hdl.layouts import ExceptionCode
from cxlnic.model.match import IPV4_MAPPED_PREFIX, PKEY

__all__ = [
    "Headers", "parse", "parse_headers", "key_from_headers",
    "ETH_IPV4", "ETH_IPV6", "ETH_VLAN", "IP_TCP", "IP_UDP", "VXLAN_PORT", "IPV6_EXT_HEADERS",
    "ETH_HLEN", "VLAN_HLEN", "IPV4_HLEN", "IPV6_HLEN", "TCP_HLEN", "UDP_HLEN", "VXLAN_HLEN",
    "DEFAULT_CONFIG",
]

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = 0x8100
IP_TCP = 6
IP_UDP = 17
VXLAN_PORT = 4789
#: IPv6 next-header values that are extension headers (RFC 8200 and the IANA
#: "IPv6 Extension Header Types" registry) plus No-Next-Header (59 is *not*
#: included: it is a terminal value, treated like any other protocol).
IPV6_EXT_HEADERS = frozenset({0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254})

ETH_HLEN = 14
VLAN_HLEN = 4
IPV4_HLEN = 20
IPV6_HLEN = 40
TCP_HLEN = 20
UDP_HLEN = 8
VXLAN_HLEN = 8

DEFAULT_CONFIG = NicConfig()

_NONE = int(ExceptionCode.NONE)
_RUNT = int(ExceptionCode.RUNT)
_OVERSIZE = int(ExceptionCode.OVERSIZE)
_TRUNCATED = int(ExceptionCode.TRUNCATED)
_BAD_IP_VERSION = int(ExceptionCode.BAD_IP_VERSION)
_BAD_IP_HEADER = int(ExceptionCode.BAD_IP_HEADER)
_FRAGMENT = int(ExceptionCode.FRAGMENT)
_UNSUPPORTED = int(ExceptionCode.UNSUPPORTED)
_BAD_VXLAN = int(ExceptionCode.BAD_VXLAN)


@dataclass(slots=True)
class Headers:
    """Where the headers of one Ethernet frame are, and what they say.

    All offsets are absolute byte offsets into the buffer given to
    :func:`parse_headers` (so the inner frame's offsets point into the outer
    frame).  ``exception`` is the first failing check scanning from this
    frame's Ethernet header downwards, including anything inside a VXLAN
    tunnel it carries.  Fields belonging to checks after the failing one
    keep their defaults; fields established before it stay valid (e.g. a
    fragment has ``ip_version == 4`` and valid addresses but ``l4_ok`` False).
    """
    exception: int = _NONE
    eth_off: int = 0          # first byte of the Ethernet header
    end: int = 0              # one past the last byte of this frame
    vlan_valid: int = 0
    vlan_tci: int = 0         # whole TCI (PCP, DEI, VID) of the one parsed tag
    vlan_id: int = 0
    eth_type: int = 0         # after the tag when there is one
    l3_off: int = 0           # first byte after the Ethernet header (and tag)
    ip_version: int = 0       # 4 or 6 once the IP header has passed its checks, else 0
    ip_hlen: int = 0          # 4*IHL, or 40
    l3_end: int = 0           # one past the IP datagram (start + total length); rest is padding
    ip_proto: int = 0
    src_ip: int = 0           # 128-bit, IPv4-mapped for IPv4
    dst_ip: int = 0
    fragment: bool = False
    l4_off: int = 0
    l4_ok: bool = False       # a complete TCP (20 B) or UDP (8 B) header lies inside the IP datagram
    src_port: int = 0
    dst_port: int = 0
    tcp_flags: int = 0
    vxlan_off: int = 0        # offset of the VXLAN header, 0 when not tunnelled
    vni: int = 0
    inner: Headers | None = None   # the encapsulated frame when ``vxlan_off`` is set

    @property
    def vxlan(self) -> bool:
        return self.vxlan_off != 0


def _parse_eth(buf, off: int, end: int, h: Headers, tunnels: bool) -> int:
    """Parse the Ethernet frame ``buf[off:end]`` into ``h``; return the exception code."""
    h.eth_off = off
    h.end = end
    if end - off < ETH_HLEN:
        return _TRUNCATED
    et = buf[off + 12] << 8 | buf[off + 13]
    l3 = off + ETH_HLEN
    if et == ETH_VLAN:
        if end - off < ETH_HLEN + VLAN_HLEN:
            return _TRUNCATED
        tci = buf[off + 14] << 8 | buf[off + 15]
        h.vlan_valid = 1
        h.vlan_tci = tci
        h.vlan_id = tci & 0xFFF
        et = buf[off + 16] << 8 | buf[off + 17]
        l3 += VLAN_HLEN
    h.eth_type = et
    h.l3_off = l3
    avail = end - l3

    if et == ETH_IPV4:
        if avail < IPV4_HLEN:
            return _TRUNCATED
        b0 = buf[l3]
        if b0 >> 4 != 4:
            return _BAD_IP_VERSION
        hlen = (b0 & 0xF) << 2
        if hlen < IPV4_HLEN:
            return _BAD_IP_HEADER
        if hlen > avail:
            return _TRUNCATED
        total = buf[l3 + 2] << 8 | buf[l3 + 3]
        if total < hlen:
            return _BAD_IP_HEADER
        if total > avail:
            return _TRUNCATED
        proto = buf[l3 + 9]
        h.ip_version = 4
        h.ip_hlen = hlen
        h.l3_end = l4end = l3 + total
        h.ip_proto = proto
        h.src_ip = IPV4_MAPPED_PREFIX | int.from_bytes(buf[l3 + 12:l3 + 16], "big")
        h.dst_ip = IPV4_MAPPED_PREFIX | int.from_bytes(buf[l3 + 16:l3 + 20], "big")
        if (buf[l3 + 6] & 0x3F) | buf[l3 + 7]:      # MF (0x20) or any fragment-offset bit
            h.fragment = True
            return _FRAGMENT
        l4 = l3 + hlen
    elif et == ETH_IPV6:
        if avail < IPV6_HLEN:
            return _TRUNCATED
        if buf[l3] >> 4 != 6:
            return _BAD_IP_VERSION
        plen = buf[l3 + 4] << 8 | buf[l3 + 5]
        if plen > avail - IPV6_HLEN:
            return _TRUNCATED
        proto = buf[l3 + 6]
        h.ip_version = 6
        h.ip_hlen = IPV6_HLEN
        h.l3_end = l4end = l3 + IPV6_HLEN + plen
        h.src_ip = int.from_bytes(buf[l3 + 8:l3 + 24], "big")
        h.dst_ip = int.from_bytes(buf[l3 + 24:l3 + 40], "big")
        if proto in IPV6_EXT_HEADERS:
            return _UNSUPPORTED
        h.ip_proto = proto
        l4 = l3 + IPV6_HLEN
    else:
        return _NONE

    h.l4_off = l4
    if proto == IP_TCP:
        if l4end - l4 < TCP_HLEN:
            return _TRUNCATED
        h.l4_ok = True
        h.src_port = buf[l4] << 8 | buf[l4 + 1]
        h.dst_port = buf[l4 + 2] << 8 | buf[l4 + 3]
        h.tcp_flags = buf[l4 + 13]
    elif proto == IP_UDP:
        if l4end - l4 < UDP_HLEN:
            return _TRUNCATED
        h.l4_ok = True
        h.src_port = buf[l4] << 8 | buf[l4 + 1]
        dport = h.dst_port = buf[l4 + 2] << 8 | buf[l4 + 3]
        if tunnels and dport == VXLAN_PORT:
            ulen = buf[l4 + 4] << 8 | buf[l4 + 5]
            if ulen > l4end - l4 or ulen < UDP_HLEN + VXLAN_HLEN:
                return _TRUNCATED
            vx = l4 + UDP_HLEN
            if not buf[vx] & 0x08:
                return _BAD_VXLAN
            h.vxlan_off = vx
            h.vni = buf[vx + 4] << 16 | buf[vx + 5] << 8 | buf[vx + 6]
            inner = h.inner = Headers()
            # The inner frame is never decapsulated again (tunnels=False).
            code = inner.exception = _parse_eth(buf, vx + VXLAN_HLEN, l4 + ulen, inner, False)
            return code
    return _NONE


def parse_headers(frame, cfg: NicConfig = DEFAULT_CONFIG, *, check_size: bool = True,
                  tunnels: bool = True) -> Headers:
    """Locate and check the headers of ``frame`` (bytes-like); never raises.

    ``check_size=False`` skips the runt/oversize checks (used by the rewrite
    stage on frames that are no longer the ingress frame).  ``tunnels=False``
    treats UDP 4789 as ordinary UDP (only the outer headers are parsed).
    """
    h = Headers()
    n = len(frame)
    if check_size:
        if n < cfg.min_frame:
            h.exception = _RUNT
            h.end = n
            return h
        if n > cfg.max_frame:
            h.exception = _OVERSIZE
            h.end = n
            return h
    h.exception = _parse_eth(frame, 0, n, h, tunnels)
    return h


def key_from_headers(h: Headers, in_port: int):
    """The PacketKey record the parser emits for parsed headers ``h``."""
    k = PKEY.record()
    f = k.flow
    f.in_port = in_port
    if h.exception:
        k.exception = h.exception
        return k
    if h.inner is not None:
        f.tenant = h.vni
        h = h.inner
    f.eth_type = h.eth_type
    f.vlan_valid = h.vlan_valid
    f.vlan_id = h.vlan_id
    if h.ip_version:
        f.ip_proto = h.ip_proto
        f.src_ip = h.src_ip
        f.dst_ip = h.dst_ip
        f.src_port = h.src_port
        f.dst_port = h.dst_port
        k.tcp_flags = h.tcp_flags
    return k


def parse(frame, in_port: int, cfg: NicConfig = DEFAULT_CONFIG):
    """Parse one frame received on ``in_port`` (0..255) into a PacketKey record.

    ``frame`` is the Ethernet frame without FCS (bytes, bytearray or
    memoryview).  Never raises; a malformed frame yields a key whose
    ``exception`` says why, with every other field zero except
    ``flow.in_port``.  See the module docstring for the exact rules.
    """
    return key_from_headers(parse_headers(frame, cfg), in_port)
