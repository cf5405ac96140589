"""Golden-model packet rewrite: apply one ActionEntry record to a frame.

:func:`apply_actions` runs the steps in the fixed order documented on
:class:`~cxlnic.hdl.layouts.ActionEntry`, whatever order the rule text
named them in:

1. ``vxlan_decap``: if :func:`~cxlnic.model.parser.parse_headers` (with its
   runt/oversize checks) sees a VXLAN frame with no exception, the frame
   becomes the inner frame: exactly the bytes after the VXLAN header up to
   the end of the UDP datagram (outer Ethernet padding is dropped).
   Otherwise nothing changes.
2. ``vlan_pop``: if the frame is tagged (0x8100 at bytes 12-13 and the
   4-byte tag plus the inner ethertype present, i.e. >= 18 bytes), the 4 tag
   bytes are removed.
3. set fields, in this order: ``set_eth_src`` (bytes 6-11), ``set_eth_dst``
   (bytes 0-5), ``set_ipv4_src``, ``set_ipv4_dst``, ``set_tp_src``,
   ``set_tp_dst``.  The MAC rewrites need a 14-byte Ethernet header.  The
   IP and port rewrites need a non-exception parse of the *current* frame's
   outer headers (``parse_headers(frame, check_size=False, tunnels=False)``:
   no size check because a decapsulated or popped frame is legitimately
   shorter than the port minimum; no tunnel descent because the rewrite
   targets the outermost headers).  ``set_ipv4_*`` applies only to IPv4;
   it writes the address, recomputes the IPv4 header checksum over the
   whole header (4*IHL bytes; a wrong incoming header checksum is thus
   repaired), and for TCP/UDP updates the L4 checksum incrementally.
   ``set_tp_*`` applies only to TCP/UDP (over IPv4 or IPv6) and updates the
   L4 checksum the same way.  Because the parse must have no exception,
   fragments, truncated L4 headers and IPv6 extension headers are never
   rewritten (the IPv4 address of a fragment is left alone too).  Other
   protocols (ICMP, ...) get only the address and IP checksum rewrite: their
   checksums do not cover a pseudo-header.
4. ``vlan_set`` (mod_vlan_vid): on a tagged frame (as in step 2) replace the
   12-bit VID, keeping PCP and DEI; otherwise push a tag (TPID 0x8100, TCI =
   ``vlan_pcp << 13 | vlan_vid``) after the MAC addresses.
5. ``vxlan_encap``: prepend outer Ethernet / IPv4 / UDP / VXLAN headers (see
   :func:`vxlan_encap`).
6. ``ct_commit``: no packet change; the slow path commits the connection.
7. verdict: ``drop`` beats ``to_host`` beats ``output``; no verdict flag
   means DROP.

Incremental L4 checksum (RFC 1624 eqn. 3): for every 16-bit word of the
rewritten field (two for an IPv4 address, one for a port; applied whether
or not that word's value changes, so the hardware needs no comparator),
``HC' = ~(~HC + ~m + m')`` in 16-bit one's-complement arithmetic (sums fold
the carry back in).  For UDP a checksum of 0 ("no checksum") stays 0, and a
result of 0x0000 is sent as 0xFFFF (RFC 768).  For a correct incoming
checksum this gives exactly the value a full recomputation would.  The
rule is applied to UDP over IPv6 as well (where a zero checksum is not
legal on the wire, but a zero stays zero: we never invent a checksum).

Integer encodings of ActionEntry fields: a MAC address is the 48-bit
integer whose big-endian bytes are the wire bytes (``aa:bb:cc:dd:ee:ff`` ->
``0xaabbccddeeff``); an IPv4 address is the 32-bit integer whose big-endian
bytes are the wire bytes (``10.0.0.1`` -> ``0x0a000001``); ports and the
VNI are plain numbers, big-endian on the wire.  :func:`mac_to_int` and
:func:`ip4_to_int` convert.

Outputs are never padded: a frame that shrinks below 60 bytes (pop, decap)
is returned as is; the MAC pads it on transmit.
"""

from __future__ import annotations

import enum
import ipaddress
from typing import NamedTuple

from cxlnic.config import NicConfig
from cxlnic.model.parser import (
    DEFAULT_CONFIG,
    ETH_HLEN,
    ETH_IPV4,
    ETH_VLAN,
    IP_TCP,
    IP_UDP,
    UDP_HLEN,
    VLAN_HLEN,
    VXLAN_HLEN,
    VXLAN_PORT,
    parse_headers,
)

__all__ = [
    "Verdict", "Result", "apply_actions",
    "vxlan_decap", "vlan_pop", "vlan_set", "vxlan_encap",
    "set_eth_src", "set_eth_dst", "set_ipv4_src", "set_ipv4_dst", "set_tp_src", "set_tp_dst",
    "mac_to_int", "int_to_mac", "ip4_to_int", "int_to_ip4",
    "ones_sum", "ipv4_header_checksum", "csum_replace16", "VXLAN_OVERHEAD",
]

#: Bytes :func:`vxlan_encap` adds: Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
VXLAN_OVERHEAD = ETH_HLEN + 20 + UDP_HLEN + VXLAN_HLEN


class Verdict(enum.IntEnum):
    DROP = 0
    OUTPUT = 1
    TO_HOST = 2


class Result(NamedTuple):
    """What the rewrite stage does with a packet.

    ``frame`` is the rewritten frame whatever the verdict (the host gets the
    packet as modified, as with OpenFlow's controller action).  ``out_port``
    is the action's ``out_port`` for OUTPUT and 0 otherwise.
    """
    verdict: Verdict
    out_port: int
    frame: bytes


# -- address helpers ----------------------------------------------------------

def mac_to_int(mac: str | bytes) -> int:
    """``"aa:bb:cc:dd:ee:ff"`` (or ``-`` separated, or 6 wire bytes) -> 0xaabbccddeeff."""
    if isinstance(mac, str):
        raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    else:
        raw = bytes(mac)
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return int.from_bytes(raw, "big")


def int_to_mac(x: int) -> str:
    """0xaabbccddeeff -> ``"aa:bb:cc:dd:ee:ff"``."""
    return ":".join(f"{b:02x}" for b in x.to_bytes(6, "big"))


def ip4_to_int(ip: str | bytes) -> int:
    """``"10.0.0.1"`` (or 4 wire bytes) -> 0x0a000001."""
    if isinstance(ip, str):
        return int(ipaddress.IPv4Address(ip))
    raw = bytes(ip)
    if len(raw) != 4:
        raise ValueError(f"not an IPv4 address: {ip!r}")
    return int.from_bytes(raw, "big")


def int_to_ip4(x: int) -> str:
    """0x0a000001 -> ``"10.0.0.1"``."""
    return str(ipaddress.IPv4Address(x))


# -- checksums ----------------------------------------------------------------

def ones_sum(data, start: int = 0, end: int | None = None) -> int:
    """16-bit one's-complement sum of big-endian words of ``data[start:end]`` (even length)."""
    chunk = bytes(data[start:end])
    s = sum(int.from_bytes(chunk[i:i + 2], "big") for i in range(0, len(chunk), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ipv4_header_checksum(hdr) -> int:
    """The checksum of an IPv4 header given with its checksum field (bytes 10-11) zeroed."""
    return ~ones_sum(hdr) & 0xFFFF


def csum_replace16(hc: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3: ``HC' = ~(~HC + ~m + m')`` for one 16-bit word ``old`` -> ``new``."""
    s = (~hc & 0xFFFF) + (~old & 0xFFFF) + new
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


# -- steps --------------------------------------------------------------------

def _tagged(buf) -> bool:
    return len(buf) >= ETH_HLEN + VLAN_HLEN and buf[12] == ETH_VLAN >> 8 and buf[13] == ETH_VLAN & 0xFF


def vxlan_decap(frame: bytes, cfg: NicConfig = DEFAULT_CONFIG) -> bytes:
    """The inner frame of a VXLAN frame the parser accepts; ``frame`` unchanged otherwise."""
    h = parse_headers(frame, cfg)
    if h.exception or h.inner is None:
        return bytes(frame)
    return bytes(frame[h.vxlan_off + VXLAN_HLEN:h.inner.end])


def vlan_pop(frame: bytes) -> bytes:
    """Remove the 802.1Q tag of a tagged frame; others unchanged."""
    if not _tagged(frame):
        return bytes(frame)
    return bytes(frame[:12]) + bytes(frame[16:])


def vlan_set(frame: bytes, vid: int, pcp: int) -> bytes:
    """mod_vlan_vid: rewrite the VID of a tagged frame (PCP/DEI kept), else push a tag.

    A frame shorter than 14 bytes (no Ethernet header) is returned unchanged.
    """
    buf = bytearray(frame)
    if _tagged(buf):
        tci = (buf[14] << 8 | buf[15]) & 0xF000 | (vid & 0xFFF)
        buf[14:16] = tci.to_bytes(2, "big")
        return bytes(buf)
    if len(buf) < ETH_HLEN:
        return bytes(buf)
    tci = (pcp & 7) << 13 | (vid & 0xFFF)
    return bytes(buf[:12]) + ETH_VLAN.to_bytes(2, "big") + tci.to_bytes(2, "big") + bytes(buf[12:])


def _set_mac(frame: bytes, at: int, mac: int) -> bytes:
    if len(frame) < ETH_HLEN:
        return bytes(frame)
    buf = bytearray(frame)
    buf[at:at + 6] = mac.to_bytes(6, "big")
    return bytes(buf)


def set_eth_src(frame: bytes, mac: int) -> bytes:
    """Overwrite bytes 6-11 (frames of at least 14 bytes)."""
    return _set_mac(frame, 6, mac)


def set_eth_dst(frame: bytes, mac: int) -> bytes:
    """Overwrite bytes 0-5 (frames of at least 14 bytes)."""
    return _set_mac(frame, 0, mac)


def _l4_csum_offset(h) -> int | None:
    """Offset of the TCP/UDP checksum of cleanly parsed headers ``h``, else None."""
    if h.ip_proto == IP_TCP:
        return h.l4_off + 16
    if h.ip_proto == IP_UDP:
        return h.l4_off + 6
    return None


def _replace_words(buf: bytearray, h, at: int, new: bytes) -> None:
    """Write ``new`` (even length) at ``at``, updating the L4 checksum word by word."""
    cs_at = _l4_csum_offset(h)
    if cs_at is not None:
        hc = buf[cs_at] << 8 | buf[cs_at + 1]
        udp = h.ip_proto == IP_UDP
        if not (udp and hc == 0):          # UDP: 0 means "no checksum" and stays 0
            for i in range(0, len(new), 2):
                hc = csum_replace16(hc, buf[at + i] << 8 | buf[at + i + 1], new[i] << 8 | new[i + 1])
            if udp and hc == 0:
                hc = 0xFFFF
            buf[cs_at:cs_at + 2] = hc.to_bytes(2, "big")
    buf[at:at + len(new)] = new


def _set_ipv4(frame: bytes, which: int, addr: int) -> bytes:
    h = parse_headers(frame, check_size=False, tunnels=False)
    if h.exception or h.ip_version != 4:
        return bytes(frame)
    buf = bytearray(frame)
    l3 = h.l3_off
    _replace_words(buf, h, l3 + which, addr.to_bytes(4, "big"))
    buf[l3 + 10:l3 + 12] = b"\0\0"
    buf[l3 + 10:l3 + 12] = ipv4_header_checksum(buf[l3:l3 + h.ip_hlen]).to_bytes(2, "big")
    return bytes(buf)


def set_ipv4_src(frame: bytes, addr: int) -> bytes:
    """Rewrite the IPv4 source address (see the module docstring for when and how)."""
    return _set_ipv4(frame, 12, addr)


def set_ipv4_dst(frame: bytes, addr: int) -> bytes:
    """Rewrite the IPv4 destination address (see the module docstring for when and how)."""
    return _set_ipv4(frame, 16, addr)


def _set_tp(frame: bytes, which: int, port: int) -> bytes:
    h = parse_headers(frame, check_size=False, tunnels=False)
    if h.exception or not h.l4_ok:
        return bytes(frame)
    buf = bytearray(frame)
    _replace_words(buf, h, h.l4_off + which, port.to_bytes(2, "big"))
    return bytes(buf)


def set_tp_src(frame: bytes, port: int) -> bytes:
    """Rewrite the TCP/UDP source port (IPv4 or IPv6), updating the L4 checksum."""
    return _set_tp(frame, 0, port)


def set_tp_dst(frame: bytes, port: int) -> bytes:
    """Rewrite the TCP/UDP destination port (IPv4 or IPv6), updating the L4 checksum."""
    return _set_tp(frame, 2, port)


def vxlan_encap(frame: bytes, *, eth_src: int, eth_dst: int, ip_src: int, ip_dst: int,
                udp_src: int, vni: int) -> bytes:
    """Prepend Ethernet / IPv4 / UDP / VXLAN headers to ``frame``.

    Ethernet(dst, src, type 0x0800); IPv4(version 4, IHL 5, TOS 0, total
    length 36 + len(frame), ID 0, DF set, fragment offset 0, TTL 64, proto
    17, header checksum, src, dst); UDP(sport ``udp_src``, dport 4789,
    length 16 + len(frame), checksum 0); VXLAN(flags 0x08, 3 reserved zero
    bytes, VNI, 1 reserved zero byte).  Raises ValueError if the result
    would not fit the 16-bit IP total length (never for frames within
    ``NicConfig.max_frame``).
    """
    n = len(frame)
    total = 20 + UDP_HLEN + VXLAN_HLEN + n
    if total > 0xFFFF:
        raise ValueError(f"frame of {n} bytes is too long to encapsulate")
    ip = bytearray(b"\x45\x00" + total.to_bytes(2, "big") + b"\x00\x00\x40\x00\x40\x11\x00\x00"
                   + ip_src.to_bytes(4, "big") + ip_dst.to_bytes(4, "big"))
    ip[10:12] = ipv4_header_checksum(ip).to_bytes(2, "big")
    udp = (udp_src.to_bytes(2, "big") + VXLAN_PORT.to_bytes(2, "big")
           + (UDP_HLEN + VXLAN_HLEN + n).to_bytes(2, "big") + b"\0\0")
    vxlan = b"\x08\0\0\0" + vni.to_bytes(3, "big") + b"\0"
    eth = eth_dst.to_bytes(6, "big") + eth_src.to_bytes(6, "big") + ETH_IPV4.to_bytes(2, "big")
    return eth + bytes(ip) + udp + vxlan + bytes(frame)


def apply_actions(frame: bytes, action, cfg: NicConfig = DEFAULT_CONFIG) -> Result:
    """Apply ActionEntry record ``action`` to ``frame`` in the fixed order (module docstring)."""
    a = action
    f = bytes(frame)
    if a.vxlan_decap:
        f = vxlan_decap(f, cfg)
    if a.vlan_pop:
        f = vlan_pop(f)
    if a.set_eth_src:
        f = set_eth_src(f, a.eth_src)
    if a.set_eth_dst:
        f = set_eth_dst(f, a.eth_dst)
    if a.set_ipv4_src:
        f = set_ipv4_src(f, a.ipv4_src)
    if a.set_ipv4_dst:
        f = set_ipv4_dst(f, a.ipv4_dst)
    if a.set_tp_src:
        f = set_tp_src(f, a.tp_src)
    if a.set_tp_dst:
        f = set_tp_dst(f, a.tp_dst)
    if a.vlan_set:
        f = vlan_set(f, a.vlan_vid, a.vlan_pcp)
    if a.vxlan_encap:
        f = vxlan_encap(f, eth_src=a.encap_eth_src, eth_dst=a.encap_eth_dst, ip_src=a.encap_ip_src,
                        ip_dst=a.encap_ip_dst, udp_src=a.encap_udp_src, vni=a.encap_vni)
    # ct_commit changes nothing in the packet: the slow path commits the connection.
    if a.drop:
        return Result(Verdict.DROP, 0, f)
    if a.to_host:
        return Result(Verdict.TO_HOST, 0, f)
    if a.output:
        return Result(Verdict.OUTPUT, a.out_port, f)
    return Result(Verdict.DROP, 0, f)
