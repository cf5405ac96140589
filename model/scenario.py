"""Default traffic scenarios: a rules file plus a packet trace for ``make sim`` and the benchmarks.

:func:`generate` builds a :class:`Scenario`: OpenFlow rules in the cxlnic
rule language (``docs/rule-language.md``), a time-ordered list of
:class:`Packet` (arrival time, ingress port, Ethernet frame without FCS) and
a ``meta`` dict of counts.  The same ``(name, packets, seed, tenants,
connections, acl_rules)`` always gives the same bytes (one
``random.Random(seed)`` drives everything); frames are assembled from
``struct`` templates with correct IPv4/TCP/UDP/ICMP checksums, so 100k
packets take a second or two.  scapy is used only for pcap I/O.

Topology
--------
* Port 0 is the uplink.  Tenant traffic arrives there VXLAN-encapsulated
  (outer IPv4, UDP 4789, checksum 0, per-flow source port) from one of four
  remote hypervisors, ``192.168.0.11``..``14`` with MACs
  ``02:aa:00:00:00:0b``..``0e``, to this host, ``192.168.0.1`` /
  ``02:aa:00:00:00:01``.  Tenant ``t`` (1..200) has VNI ``100 + t``.
* Ports 1..4 are VM ports.  Tenant ``t``'s four local VMs sit on port
  ``1 + (t - 1) % 4`` and send plain Ethernet, 802.1Q-tagged with VLAN
  ``100 + t`` except tenants 1 and 3, which are untagged (so at most one
  untagged tenant per port).  Local VMs are ``10.t.1.1-4`` /
  ``fd00:0:t:1::1-4``, MAC ``02:00:t:01:00:i``.  Remote VMs behind
  hypervisor ``h`` are in ``10.t.(10+h).0/24`` / ``fd00:0:t:(10+h)::/64``.
* Frames entering on a VM port are padded to 60 bytes like a NIC pads them;
  VXLAN frames are longer than that anyway (the inner frame is not padded).

Traffic (the same generator for every scenario)
-----------------------------------------------
Conversations ("connections", default ``packets // 30``) start at uniform
random times (a Poisson process) during an *active phase* of about
``packets / rate`` seconds and interleave.  60% are initiated by a remote VM
(inbound, to a service port of a local VM), 40% by a local VM.  Kinds:

``tcp_close``
    SYN, SYN+ACK, ACK (SYN/SYN+ACK carry MSS and window-scale options), data
    both ways (PSH|ACK or ACK, payload 0..1400 bytes, sequence and
    acknowledgement numbers consistent), then a FIN teardown started by
    either side (FIN+ACK, ACK, FIN+ACK, ACK or the three-packet form).
``tcp_rst``
    as above but ended by one RST (or RST+ACK) from either side.
``tcp_open``
    handshake and data, never closed: left for the aging sweep.  About a
    third are *resumed*: one more data packet and its ACK arrive after the
    idle gap (a packet for a flow that may have been aged out).
``tcp_refused``
    SYN to port 8080 answered by RST+ACK.
``tcp_blocked``
    SYN from a source the tenant ACL drops (``10.t.14.192/26``) or to
    telnet (port 23), retransmitted up to twice, never answered.
``udp`` / ``udp_oneway``
    request, reply, more datagrams both ways / datagrams one way only.
``ping``
    1-4 ICMP echo request/reply pairs (ICMPv6 for IPv6).
``arp``
    a local VM's broadcast request, or a remote VM's request (VXLAN) and the
    local VM's unicast reply.

About 10% of TCP/UDP/ping conversations are IPv6.  Data packets are shared
out over the TCP/UDP conversations with heavy-tailed (Pareto) weights, so a
few elephant flows carry many packets; the packet count is exact.  Every
5-tuple occurs in exactly one conversation.

After the active phase comes ``idle_gap`` seconds (default 115 s) of
silence, then a short final burst with ~1% of the conversations (``late``)
and the resumed ``tcp_open`` packets.  Every conversation of the active
phase is thus followed by > 40 s of idle time, long enough for a slow path
with short conntrack timeouts to age it out; the trace spans ~120 s for
100k packets.  Times are whole microseconds (exact in a pcap) and strictly
increasing.

Scenarios
---------
``static``
    rules without ct: per-tenant subnet forwarding (VXLAN decap to the VM
    port, VLAN push for tagged tenants; VM traffic VLAN-stripped and VXLAN
    encapsulated to the right hypervisor by destination subnet), tenant ACL
    drops, defaults.  60 rules for 4 tenants: all in a 64-entry CAM.
``reactive``
    rules without ct but fine-grained (per local VM and per remote subnet),
    ~180 rules for 4 tenants, most beyond the CAM: the first packet of a
    flow misses in hardware and the slow path installs an exact-match flow.
``conntrack``
    ct rules only: ``+trk+inv`` drops, ``+trk+new`` with ``ct(commit)`` for
    the tenant's services (inbound) and for VM traffic to remote subnets
    (outbound), ``+trk+est`` / ``+trk+est+rpl`` / ``+trk+rel`` forwarding,
    ICMP without ct, ACL drops, defaults.
``malformed``
    the ``mixed`` rules and traffic plus 5% malformed frames (see
    :data:`MALFORMED_KINDS`): runts, truncated IP datagrams, VXLAN frames
    cut inside the inner headers, bad VXLAN flags or length, wrong IP
    version, IHL < 5, fragments, IPv6 extension headers, oversize frames
    and random garbage.
``mixed`` (the default of ``make sim``)
    tenants 1, 2, 5, 6, ... use the conntrack rules, tenants 3, 4, 7, 8, ...
    the reactive ones; plus 1% malformed frames.

Every scenario has the provider rules: ARP and LLDP to the controller,
non-VXLAN traffic on the uplink to the controller, and a priority-0 drop.
``acl_rules=N`` adds N random prefix-drop rules (priority 300, tenant
sources on the uplink or VM destinations, 1 in 8 IPv6) in front of the
forwarding rules.  ``meta["rules_beyond_cam"]`` counts the rules at index
>= 64 when the table is ordered as the rule table orders it (priority
descending, then file order) and ``meta["beyond_cam_priorities"]`` says
which priorities they have.

For one seed, ``static``, ``reactive`` and ``conntrack`` carry the very same
packets; ``mixed`` and ``malformed`` have the same conversation kinds,
tenants and hypervisors but fewer data packets (room for the malformed
frames), and so different random details.

Note for connection tracking: the two directions of a conversation enter
the NIC differently (one as VXLAN on port 0 with tenant = VNI, the other
untunnelled on the VM port with tenant 0, possibly VLAN-tagged), as on a
real hypervisor NIC.  The reply key is therefore not the plain swap of the
original's key; the ``ct`` rules assume the tracker relates the two (e.g.
from the committing action's output port and encap/decap).

pcap files
----------
A pcap stores no ingress port.  :meth:`Scenario.write` therefore writes a
sidecar ``<pcap>.ports`` (:func:`ports_path`) with one port number per line,
and :func:`read_pcap` uses it when it exists; without a sidecar every packet
enters on port 0 (:data:`DEFAULT_IN_PORT`).
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import random
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from cxlnic.config import NicConfig

__all__ = [
    "SCENARIOS", "MALFORMED_KINDS", "DEFAULT_IN_PORT", "UPLINK", "VM_PORTS", "HYPERVISORS",
    "Packet", "Connection", "Scenario", "generate", "write_pcap", "read_pcap", "ports_path",
    "tenant_vni", "tenant_port", "tenant_vlan", "hypervisor_ip", "LOCAL_UNDERLAY_IP",
]

#: Scenario names accepted by :func:`generate`.
SCENARIOS = frozenset({"reactive", "conntrack", "static", "malformed", "mixed"})
#: Kinds of malformed frame (values of :attr:`Scenario.malformed`).
MALFORMED_KINDS = (
    "runt", "truncated", "truncated_vxlan", "bad_vxlan", "bad_vxlan_len", "bad_ip_version",
    "bad_ihl", "fragment", "ipv6_ext", "oversize", "garbage",
)
_MALFORMED_WEIGHTS = (25, 20, 10, 10, 5, 5, 3, 4, 2, 1, 15)
_MALFORMED_FRACTION = {"malformed": 0.05, "mixed": 0.01}

#: Ingress port of a packet read from a pcap without a ports sidecar.
DEFAULT_IN_PORT = 0
UPLINK = 0
VM_PORTS = (1, 2, 3, 4)
HYPERVISORS = 4
VMS_PER_TENANT = 4
REMOTE_VMS_PER_HV = 16
MAX_TENANTS = 200
CAM_ENTRIES = NicConfig().cam_entries
_MAX_FRAME = NicConfig().max_frame

LOCAL_UNDERLAY_IP = bytes((192, 168, 0, 1))
_LOCAL_MAC = bytes((2, 0xAA, 0, 0, 0, 1))
_BCAST = b"\xff" * 6

_ET_IP4, _ET_IP6, _ET_ARP, _ET_VLAN = b"\x08\x00", b"\x86\xdd", b"\x08\x06", b"\x81\x00"
_TCP, _UDP, _ICMP, _ICMP6 = 6, 17, 1, 58
_VXLAN_PORT = 4789
_FIN, _SYN, _RST, _PSH, _ACK = 0x01, 0x02, 0x04, 0x08, 0x10

_TCP_IN = (80, 443, 22, 8080)
_TCP6_IN = (80, 443)
_UDP_IN = (53, 123)
_UDP6_IN = (53,)
_TCP_OUT = (80, 443, 5432, 6379, 9092)
_UDP_OUT = (53, 123, 8125)
_REFUSED_PORT = 8080
_TELNET = 23
_SYSLOG = 514

# Conversation kinds, their share of all conversations, and the packets they
# always have (data packets come on top for the elastic kinds).
_KIND_WEIGHTS = {
    "tcp_close": 41, "tcp_rst": 8, "tcp_open": 8.5, "tcp_refused": 3.5, "tcp_blocked": 5,
    "udp": 22, "udp_oneway": 4, "ping": 5, "arp": 3,
}
_ELASTIC = ("tcp_close", "tcp_rst", "tcp_open", "udp", "udp_oneway")
_IPV6_SHARE = 0.12        # of tcp_close/rst/open, udp, udp_oneway and ping: ~10% of all


class Packet(NamedTuple):
    """One frame as it reaches the NIC: arrival ``time`` (s), ingress ``in_port``, bytes without FCS."""
    time: float
    in_port: int
    frame: bytes


@dataclass
class Connection:
    """One conversation of the trace and where its packets are.

    ``client`` and ``server`` are ``(address, port)`` with the address as
    text (for ping the client "port" is the ICMP identifier and the
    server's is 0; both are 0 for ARP).  ``inbound`` means the client is a
    remote VM (its packets arrive VXLAN-encapsulated on port 0).
    ``packets`` are indices into :attr:`Scenario.packets` in time order and
    ``from_client[i]`` says which side sent ``packets[i]``.
    """
    kind: str
    tenant: int
    ip_version: int          # 4 or 6; 0 for ARP
    proto: int               # 6, 17, 1, 58; 0 for ARP
    inbound: bool
    client: tuple[str, int]
    server: tuple[str, int]
    hypervisor: int          # 1..HYPERVISORS: where the remote VM lives
    late: bool = False       # starts in the final burst after the idle gap
    resumed: bool = False    # tcp_open with packets again after the idle gap
    packets: list[int] = field(default_factory=list)
    from_client: list[bool] = field(default_factory=list)


@dataclass
class Scenario:
    """A rules text and a packet trace (see the module docstring for what each scenario holds).

    ``packets`` is sorted by strictly increasing time.  ``connections``
    lists every conversation; ``malformed`` maps the index of each malformed
    packet to its kind (one of :data:`MALFORMED_KINDS`).
    """
    name: str
    rules_text: str
    packets: list[Packet]
    meta: dict
    connections: list[Connection] = field(default_factory=list)
    malformed: dict[int, str] = field(default_factory=dict)

    def write(self, rules_path, pcap_path) -> None:
        """Write the rules text, the pcap (with the packet times) and its ``.ports`` sidecar."""
        Path(rules_path).write_text(self.rules_text, encoding="utf-8")
        write_pcap(pcap_path, self.packets)


# -- pcap I/O -----------------------------------------------------------------------------

def ports_path(pcap_path) -> Path:
    """The ingress-port sidecar of a pcap: ``<pcap>.ports``, one decimal port per packet per line."""
    p = Path(pcap_path)
    return p.with_name(p.name + ".ports")


def write_pcap(pcap_path, packets, ports: bool = True) -> None:
    """Write ``packets`` (Packet or (time, in_port, frame)) as an Ethernet pcap, µs timestamps.

    With ``ports`` (the default) also write the :func:`ports_path` sidecar;
    otherwise remove a stale one, so that :func:`read_pcap` gives port 0.
    """
    from scapy.utils import RawPcapWriter

    w = RawPcapWriter(str(pcap_path), linktype=1, sync=False)
    try:
        w.write_header(None)          # also for an empty trace
        for t, _port, frame in packets:
            us = round(t * 1e6)
            w.write_packet(frame, sec=us // 1_000_000, usec=us % 1_000_000)
    finally:
        w.close()
    side = ports_path(pcap_path)
    if ports:
        side.write_text("".join(f"{p}\n" for _t, p, _f in packets), encoding="ascii")
    elif side.exists():
        side.unlink()


#: pcap (µs and ns, both byte orders) and pcapng section-header magics
_PCAP_MAGICS = {bytes.fromhex(m) for m in ("d4c3b2a1", "a1b2c3d4", "4d3cb2a1", "a1b23c4d", "0a0d0d0a")}


def read_pcap(pcap_path) -> list[Packet]:
    """Read a pcap into Packets: ports from the sidecar if present, else :data:`DEFAULT_IN_PORT`."""
    from scapy.utils import RawPcapReader

    with open(pcap_path, "rb") as fh:
        magic = fh.read(4)
    if magic not in _PCAP_MAGICS:
        raise ValueError(f"{pcap_path}: not a pcap or pcapng file (starts with {magic.hex() or 'nothing'})")
    out = []
    with RawPcapReader(str(pcap_path)) as r:
        for data, md in r:
            sub = getattr(md, "usec", None)
            if sub is None:                    # pcapng metadata: one timestamp in resolution units
                t = ((md.tshigh << 32) | md.tslow) / md.tsresol
            else:
                t = md.sec + sub / (1e9 if getattr(r, "nano", False) else 1e6)
            out.append([t, DEFAULT_IN_PORT, bytes(data)])
    side = ports_path(pcap_path)
    if side.exists():
        ports = [int(x) for x in side.read_text(encoding="ascii").split()]
        if len(ports) != len(out):
            raise ValueError(f"{side}: {len(ports)} ports for {len(out)} packets in {pcap_path}")
        for p, port in zip(out, ports, strict=True):
            p[1] = port
    return [Packet(t, port, f) for t, port, f in out]


# -- addressing ---------------------------------------------------------------------------

def tenant_vni(t: int) -> int:
    return 100 + t


def tenant_port(t: int) -> int:
    return VM_PORTS[(t - 1) % len(VM_PORTS)]


def tenant_vlan(t: int) -> int | None:
    """VLAN of tenant ``t`` on its VM port, or None when untagged (tenants 1 and 3)."""
    return None if t in (1, 3) else 100 + t


def hypervisor_ip(h: int) -> bytes:
    return bytes((192, 168, 0, 10 + h))


def _hv_mac(h: int) -> bytes:
    return bytes((2, 0xAA, 0, 0, 0, 10 + h))


def _ip4(t: int, sub: int, host: int) -> bytes:
    return bytes((10, t, sub, host))


def _ip6(t: int, sub: int, host: int) -> bytes:
    return bytes((0xFD, 0, 0, 0, t >> 8, t & 0xFF, 0, sub)) + bytes(7) + bytes((host,))


def _mac(t: int, sub: int, host: int) -> bytes:
    return bytes((2, 0, t, sub, 0, host))


def _s_ip4(b: bytes) -> str:
    return ".".join(map(str, b))


def _s_ip6(b: bytes) -> str:
    return str(ipaddress.IPv6Address(b))


def _s_mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


# -- header builders ----------------------------------------------------------------------

_IP4_HDR = struct.Struct("!BBHHHBBH4s4s")
_IP6_HDR = struct.Struct("!IHBB16s16s")
_TCP_HDR = struct.Struct("!HHIIBBHHH")
_UDP_HDR = struct.Struct("!HHHH")
_SYN_OPTS = bytes((2, 4, 0x05, 0xB4, 1, 3, 3, 7))     # MSS 1460, NOP, window scale 7


def _csum(data: bytes) -> int:
    """Internet checksum (RFC 1071) of ``data``: the 16-bit word sum is the integer mod 0xFFFF."""
    if len(data) & 1:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    return 0xFFFF - s if s else 0


def _ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int, flags_frag: int = 0x4000,
          ihl: int = 5, total: int | None = None) -> bytes:
    n = 4 * max(ihl, 5)
    tl = n + len(payload) if total is None else total
    h = _IP4_HDR.pack(0x40 | ihl, 0, tl, ident & 0xFFFF, flags_frag, 64, proto, 0, src, dst)
    if n > 20:
        h += bytes(n - 20)
    c = _csum(h)
    return h[:10] + c.to_bytes(2, "big") + h[12:] + payload


def _ipv6(src: bytes, dst: bytes, nh: int, payload: bytes, flow: int) -> bytes:
    return _IP6_HDR.pack(0x60000000 | flow, len(payload), nh, 64, src, dst) + payload


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + bytes((0, proto)) + length.to_bytes(2, "big")
    return src + dst + length.to_bytes(4, "big") + bytes((0, 0, 0, proto))


def _tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, win: int,
         payload: bytes = b"", opts: bytes = b"") -> bytes:
    seg = _TCP_HDR.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (5 + len(opts) // 4) << 4,
                        flags, win, 0, 0) + opts + payload
    c = _csum(_pseudo(src, dst, _TCP, len(seg)) + seg)
    return seg[:16] + c.to_bytes(2, "big") + seg[18:]


def _udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    n = 8 + len(payload)
    seg = _UDP_HDR.pack(sport, dport, n, 0) + payload
    c = _csum(_pseudo(src, dst, _UDP, n) + seg) or 0xFFFF
    return seg[:6] + c.to_bytes(2, "big") + seg[8:]


def _icmp(src: bytes, dst: bytes, v6: bool, typ: int, ident: int, seq: int, payload: bytes) -> bytes:
    msg = struct.pack("!BBHHH", typ, 0, 0, ident, seq) + payload
    c = _csum(_pseudo(src, dst, _ICMP6, len(msg)) + msg) if v6 else _csum(msg)
    return msg[:2] + c.to_bytes(2, "big") + msg[4:]


def _arp(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha + spa + tha + tpa


def _vlan_tag(vlan: int | None) -> bytes:
    return b"" if vlan is None else _ET_VLAN + vlan.to_bytes(2, "big")


def _pad(frame: bytes) -> bytes:
    return frame + bytes(60 - len(frame)) if len(frame) < 60 else frame


class _Side:
    """How the packets one endpoint sends reach the NIC: VXLAN on port 0, or plain on a VM port."""
    __slots__ = ("in_port", "vxlan", "l2", "outer_eth", "hv_ip", "vx", "sport", "ident")

    def __init__(self, *, src_mac: bytes, dst_mac: bytes, t: int, hv: int, remote: bool, sport: int,
                 ident: int):
        self.vxlan = remote
        if remote:
            self.in_port = UPLINK
            self.l2 = dst_mac + src_mac
            self.outer_eth = _LOCAL_MAC + _hv_mac(hv) + _ET_IP4
            self.hv_ip = hypervisor_ip(hv)
            self.vx = bytes((0x08, 0, 0, 0)) + (tenant_vni(t) << 8).to_bytes(4, "big")
            self.sport = sport
            self.ident = ident
        else:
            self.in_port = tenant_port(t)
            self.l2 = dst_mac + src_mac + _vlan_tag(tenant_vlan(t))

    def frame(self, ethertype: bytes, l3: bytes, dst_mac: bytes | None = None) -> bytes:
        l2 = self.l2 if dst_mac is None else dst_mac + self.l2[6:]
        if not self.vxlan:
            return _pad(l2 + ethertype + l3)
        inner = l2 + ethertype + l3
        ulen = 16 + len(inner)
        self.ident = (self.ident + 1) & 0xFFFF
        udp = _UDP_HDR.pack(self.sport, _VXLAN_PORT, ulen, 0)
        return self.outer_eth + _ipv4(self.hv_ip, LOCAL_UNDERLAY_IP, _UDP, udp + self.vx + inner,
                                      self.ident)


# -- conversations ------------------------------------------------------------------------

class _Conv:
    """Frame factory for the two directions of one conversation."""
    __slots__ = ("c", "s", "cip", "sip", "cport", "sport", "v6", "et", "cid", "sid", "flow")

    def __init__(self, rng: random.Random, t: int, hv: int, inbound: bool, v6: bool, local_host: int,
                 remote_host: int, cport: int, sport: int):
        sub = 10 + hv
        lip = (_ip6 if v6 else _ip4)(t, 1, local_host)
        rip = (_ip6 if v6 else _ip4)(t, sub, remote_host)
        lmac, rmac = _mac(t, 1, local_host), _mac(t, sub, remote_host)
        entropy = 49152 + rng.randrange(16384)
        local = _Side(src_mac=lmac, dst_mac=rmac, t=t, hv=hv, remote=False, sport=0, ident=0)
        remote = _Side(src_mac=rmac, dst_mac=lmac, t=t, hv=hv, remote=True, sport=entropy,
                       ident=rng.randrange(65536))
        if inbound:
            self.c, self.s, self.cip, self.sip = remote, local, rip, lip
        else:
            self.c, self.s, self.cip, self.sip = local, remote, lip, rip
        self.cport, self.sport = cport, sport
        self.v6 = v6
        self.et = _ET_IP6 if v6 else _ET_IP4
        self.cid, self.sid = rng.randrange(65536), rng.randrange(65536)
        self.flow = rng.randrange(1 << 20)

    def ip(self, from_client: bool, proto: int, l4: bytes) -> tuple[int, bytes]:
        side = self.c if from_client else self.s
        src, dst = (self.cip, self.sip) if from_client else (self.sip, self.cip)
        if self.v6:
            l3 = _ipv6(src, dst, proto, l4, self.flow)
        else:
            if from_client:
                self.cid += 1
                ident = self.cid
            else:
                self.sid += 1
                ident = self.sid
            l3 = _ipv4(src, dst, proto, l4, ident)
        return side.in_port, side.frame(self.et, l3)

    def tcp(self, from_client: bool, seq: int, ack: int, flags: int, payload: bytes = b"",
            win: int = 502) -> tuple[int, bytes]:
        if from_client:
            src, dst, sp, dp = self.cip, self.sip, self.cport, self.sport
        else:
            src, dst, sp, dp = self.sip, self.cip, self.sport, self.cport
        opts = _SYN_OPTS if flags & _SYN else b""
        if flags & _SYN:
            win = 64240
        return self.ip(from_client, _TCP, _tcp(src, dst, sp, dp, seq, ack, flags, win, payload, opts))

    def udp(self, from_client: bool, payload: bytes) -> tuple[int, bytes]:
        if from_client:
            seg = _udp(self.cip, self.sip, self.cport, self.sport, payload)
        else:
            seg = _udp(self.sip, self.cip, self.sport, self.cport, payload)
        return self.ip(from_client, _UDP, seg)

    def icmp(self, from_client: bool, ident: int, seq: int, payload: bytes) -> tuple[int, bytes]:
        src, dst = (self.cip, self.sip) if from_client else (self.sip, self.cip)
        if self.v6:
            typ = 128 if from_client else 129
        else:
            typ = 8 if from_client else 0
        return self.ip(from_client, _ICMP6 if self.v6 else _ICMP,
                       _icmp(src, dst, self.v6, typ, ident, seq, payload))


@dataclass
class _Plan:
    kind: str
    tenant: int
    hv: int
    inbound: bool
    v6: bool
    resumed: bool = False
    late: bool = False
    fixed: int = 0           # packets the kind always has
    extra: int = 0           # data packets on top
    weight: float = 0.0
    arp_pair: bool = False
    ping_pairs: int = 0
    retries: int = 0
    close3: bool = False


class _Gen:
    """All the random choices of one scenario, in a fixed order (determinism)."""

    def __init__(self, rng: random.Random, tenants: int):
        self.rng = rng
        self.tenants = tenants
        self.blob = rng.randbytes(1 << 16)
        self.used: set = set()
        self.next_port: dict = {}

    def payload(self, n: int) -> bytes:
        o = self.rng.randrange(len(self.blob) - n + 1)
        return self.blob[o:o + n]

    def client_port(self, key, server_key) -> int:
        rng = self.rng
        p = self.next_port.get(key)
        if p is None:
            p = rng.randint(32768, 50000)
        while True:
            p += rng.randint(1, 9)
            if p > 60999:
                p = 32768 + rng.randrange(64)
            if (key, p, server_key) not in self.used:
                self.used.add((key, p, server_key))
                self.next_port[key] = p
                return p

    # -- plans ---------------------------------------------------------------------------
    def plan(self, kind: str) -> _Plan:
        rng = self.rng
        t = rng.randint(1, self.tenants)
        hv = rng.randint(1, HYPERVISORS)
        inbound = rng.random() < 0.6
        v6 = kind in _ELASTIC + ("ping",) and rng.random() < _IPV6_SHARE
        p = _Plan(kind, t, hv, inbound, v6)
        if kind == "tcp_close":
            p.close3 = rng.random() < 0.3
            p.fixed = 3 + (3 if p.close3 else 4)
        elif kind == "tcp_rst":
            p.fixed = 4
        elif kind == "tcp_open":
            p.resumed = rng.random() < 0.35
            p.fixed = 3 + (2 if p.resumed else 0)
        elif kind == "tcp_refused":
            p.fixed = 2
        elif kind == "tcp_blocked":
            p.inbound = True
            p.retries = rng.randint(0, 2)
            p.fixed = 1 + p.retries
        elif kind == "udp":
            p.fixed = 2
        elif kind == "udp_oneway":
            p.fixed = 1
        elif kind == "ping":
            p.ping_pairs = rng.randint(1, 4)
            p.fixed = 2 * p.ping_pairs
        elif kind == "arp":
            p.arp_pair = rng.random() < 0.5
            p.inbound = p.arp_pair
            p.fixed = 2 if p.arp_pair else 1
        if kind in _ELASTIC:
            p.weight = min(rng.paretovariate(1.2), 300.0)
        return p

    # -- conversations -------------------------------------------------------------------
    def conversation(self, p: _Plan) -> tuple[Connection, list]:
        """The Connection record and its packets as (gap_us_before, from_client, in_port, frame)."""
        rng = self.rng
        t, hv = p.tenant, p.hv
        kind = p.kind
        if kind == "arp":
            return self._arp(p)
        local_host = rng.randint(1, VMS_PER_TENANT)
        remote_host = rng.randint(1, REMOTE_VMS_PER_HV)
        proto = _TCP if kind.startswith("tcp") else _UDP if kind.startswith("udp") else (
            _ICMP6 if p.v6 else _ICMP)
        # server port
        if kind == "tcp_refused":
            sport = _REFUSED_PORT
        elif kind == "tcp_blocked":
            if rng.random() < 0.5:
                sport = _TELNET
            else:
                sport = rng.choice(_TCP_IN)
                hv, remote_host = HYPERVISORS, 200 + rng.randrange(4)    # in 10.t.14.192/26
                p.hv = hv
        elif kind == "ping":
            sport = 0
        elif p.inbound:
            if proto == _TCP:
                sport = rng.choice(_TCP6_IN if p.v6 else _TCP_IN)
            elif kind == "udp_oneway" and not p.v6:
                sport = 123
            else:
                sport = rng.choice(_UDP6_IN if p.v6 else _UDP_IN)
        else:
            if proto == _TCP:
                sport = rng.choice(_TCP_OUT)
            elif kind == "udp_oneway":
                sport = _SYSLOG
            else:
                sport = rng.choice(_UDP_OUT)
        v6 = p.v6
        lip = (_ip6 if v6 else _ip4)(t, 1, local_host)
        rip = (_ip6 if v6 else _ip4)(t, 10 + hv, remote_host)
        cip, sip = (rip, lip) if p.inbound else (lip, rip)
        if kind == "ping":
            cport = rng.randrange(1, 65536)
            while (cip, cport, sip) in self.used:
                cport = rng.randrange(1, 65536)
            self.used.add((cip, cport, sip))
        else:
            cport = self.client_port(cip, (sip, sport, proto))
        cv = _Conv(rng, t, hv, p.inbound, v6, local_host, remote_host, cport, sport)
        s_ip = _s_ip6 if v6 else _s_ip4
        conn = Connection(kind, t, 6 if v6 else 4, proto, p.inbound, (s_ip(cip), cport),
                          (s_ip(sip), sport), hv, p.late, p.resumed)
        rtt = min(max(rng.lognormvariate(math.log(300.0), 0.8), 30.0), 5000.0)
        if proto == _TCP:
            pk = self._tcp(p, cv, rtt)
        elif proto == _UDP:
            pk = self._udp(p, cv, rtt, sport)
        else:
            pk = []
            for i in range(p.ping_pairs):
                pl = self.payload(56)
                pk.append((rng.uniform(500, 1500) * rtt if i else 0.0, True, *cv.icmp(True, cport, i + 1, pl)))
                pk.append((rtt, False, *cv.icmp(False, cport, i + 1, pl)))
        return conn, pk

    def _tcp(self, p: _Plan, cv: _Conv, rtt: float) -> list:
        rng = self.rng
        out = []
        gap = rtt / 2

        def add(g, fc, seq, ack, flags, payload=b""):
            out.append((g, fc, *cv.tcp(fc, seq, ack, flags, payload)))

        cs, ss = rng.getrandbits(32), rng.getrandbits(32)
        add(0.0, True, cs, 0, _SYN)
        if p.kind == "tcp_blocked":
            rto = 200_000.0
            for _ in range(p.retries):
                add(rto, True, cs, 0, _SYN)
                rto *= 2
            return out
        if p.kind == "tcp_refused":
            add(gap, False, 0, cs + 1, _RST | _ACK)
            return out
        cs += 1
        add(gap, False, ss, cs, _SYN | _ACK)
        ss += 1
        add(gap, True, cs, ss, _ACK)
        for _ in range(p.extra):
            fc = rng.random() < 0.35
            r = rng.random()
            if fc:
                n = 0 if r < 0.6 else rng.randint(40, 600)
            else:
                n = 0 if r < 0.25 else 1400 if r < 0.7 else rng.randint(1, 1400)
            flags = _ACK | (_PSH if n and rng.random() < 0.5 else 0)
            g = rng.expovariate(3.0 / rtt) + 1.0
            if fc:
                add(g, True, cs, ss, flags, self.payload(n) if n else b"")
                cs += n
            else:
                add(g, False, ss, cs, flags, self.payload(n) if n else b"")
                ss += n
        if p.kind == "tcp_close":
            cfirst = rng.random() < 0.5
            a, b = (cs, ss) if cfirst else (ss, cs)      # a: closer's next seq
            g = rng.expovariate(2.0 / rtt) + 1.0
            add(g, cfirst, a, b, _FIN | _ACK)
            a += 1
            if p.close3:
                add(gap, not cfirst, b, a, _FIN | _ACK)
                b += 1
                add(gap, cfirst, a, b, _ACK)
            else:
                add(gap, not cfirst, b, a, _ACK)
                add(rng.uniform(1, 4) * gap, not cfirst, b, a, _FIN | _ACK)
                b += 1
                add(gap, cfirst, a, b, _ACK)
        elif p.kind == "tcp_rst":
            fc = rng.random() < 0.5
            a, b = (cs, ss) if fc else (ss, cs)
            add(rng.expovariate(2.0 / rtt) + 1.0, fc, a, b, _RST | (_ACK if rng.random() < 0.5 else 0))
        elif p.resumed:
            n = rng.randint(40, 600)
            add(None, True, cs, ss, _PSH | _ACK, self.payload(n))    # gap None: after the idle gap
            cs += n
            add(gap, False, ss, cs, _ACK)
        return out

    def _udp(self, p: _Plan, cv: _Conv, rtt: float, sport: int) -> list:
        rng = self.rng

        def size(fc):
            if sport == 53:
                return rng.randint(28, 60) if fc else rng.randint(60, 480)
            if sport == 123:
                return 48
            return rng.randint(20, 1400)

        out = [(0.0, True, *cv.udp(True, self.payload(size(True))))]
        if p.kind == "udp":
            out.append((rtt, False, *cv.udp(False, self.payload(size(False)))))
        for _ in range(p.extra):
            fc = True if p.kind == "udp_oneway" else rng.random() < 0.5
            out.append((rng.expovariate(2.0 / rtt) + 1.0, fc, *cv.udp(fc, self.payload(size(fc)))))
        return out

    def _arp(self, p: _Plan) -> tuple[Connection, list]:
        rng = self.rng
        t, hv = p.tenant, p.hv
        lh, rh = rng.randint(1, VMS_PER_TENANT), rng.randint(1, REMOTE_VMS_PER_HV)
        lip, rip = _ip4(t, 1, lh), _ip4(t, 10 + hv, rh)
        lmac, rmac = _mac(t, 1, lh), _mac(t, 10 + hv, rh)
        local = _Side(src_mac=lmac, dst_mac=rmac, t=t, hv=hv, remote=False, sport=0, ident=0)
        if p.arp_pair:      # a remote VM asks (flooded to us by its hypervisor), our VM answers
            remote = _Side(src_mac=rmac, dst_mac=lmac, t=t, hv=hv, remote=True,
                           sport=49152 + rng.randrange(16384), ident=rng.randrange(65536))
            req = remote.frame(_ET_ARP, _arp(1, rmac, rip, bytes(6), lip), dst_mac=_BCAST)
            rep = local.frame(_ET_ARP, _arp(2, lmac, lip, rmac, rip))
            pk = [(0.0, True, UPLINK, req), (rng.uniform(20, 200), False, local.in_port, rep)]
            conn = Connection("arp", t, 0, 0, True, (_s_ip4(rip), 0), (_s_ip4(lip), 0), hv)
        else:
            req = local.frame(_ET_ARP, _arp(1, lmac, lip, bytes(6), rip), dst_mac=_BCAST)
            pk = [(0.0, True, local.in_port, req)]
            conn = Connection("arp", t, 0, 0, False, (_s_ip4(lip), 0), (_s_ip4(rip), 0), hv)
        conn.late = p.late
        return conn, pk

    # -- malformed frames ----------------------------------------------------------------
    def malformed(self, kind: str) -> tuple[int, bytes]:
        rng = self.rng
        t = rng.randint(1, self.tenants)
        hv = rng.randint(1, HYPERVISORS)
        lh, rh = rng.randint(1, VMS_PER_TENANT), rng.randint(1, REMOTE_VMS_PER_HV)
        lip, rip = _ip4(t, 1, lh), _ip4(t, 10 + hv, rh)
        lmac, rmac = _mac(t, 1, lh), _mac(t, 10 + hv, rh)
        local = _Side(src_mac=lmac, dst_mac=rmac, t=t, hv=hv, remote=False, sport=0, ident=0)
        remote = _Side(src_mac=rmac, dst_mac=lmac, t=t, hv=hv, remote=True,
                       sport=49152 + rng.randrange(16384), ident=rng.randrange(65536))
        sp, dp = rng.randint(32768, 60999), rng.choice(_TCP_OUT)
        ident = rng.randrange(65536)

        def tcp4(n=0, flags=_ACK):
            return _tcp(lip, rip, sp, dp, rng.getrandbits(32), rng.getrandbits(32), flags, 502,
                        self.payload(n))

        port = local.in_port
        if kind == "runt":
            if rng.random() < 0.3:          # an ARP request the sender forgot to pad
                f = _BCAST + local.l2[6:] + _ET_ARP + _arp(1, lmac, lip, bytes(6), rip)
            else:                           # cut inside the Ethernet/IP/TCP headers
                f = local.l2 + _ET_IP4 + _ipv4(lip, rip, _TCP, tcp4(), ident)
                f = f[:rng.randint(20, len(f) - 1)]
        elif kind == "truncated":           # IP total length claims more than the frame holds
            if rng.random() < 0.8:
                f = local.l2 + _ET_IP4 + _ipv4(lip, rip, _TCP, tcp4(rng.randint(200, 1400), _PSH | _ACK),
                                               ident)
            else:
                f = local.l2 + _ET_IP6 + _ipv6(_ip6(t, 1, lh), _ip6(t, 10 + hv, rh), _UDP,
                                               _UDP_HDR.pack(sp, 53, 8 + 300, 0) + self.payload(300), 0)
            f = f[:rng.randint(80, len(f) - 1)]
        elif kind == "truncated_vxlan":     # outer headers consistent, inner frame cut in its headers
            inner = lmac + rmac + _ET_IP4 + _ipv4(rip, lip, _TCP, tcp4(), ident)
            inner = inner[:rng.randint(14 + 2, 14 + 20 + 19)]
            udp = _UDP_HDR.pack(remote.sport, _VXLAN_PORT, 16 + len(inner), 0)
            f = remote.outer_eth + _ipv4(remote.hv_ip, LOCAL_UNDERLAY_IP, _UDP, udp + remote.vx + inner,
                                         ident)
            port = UPLINK
        elif kind in ("bad_vxlan", "bad_vxlan_len"):
            inner = lmac + rmac + _ET_IP4 + _ipv4(rip, lip, _TCP, tcp4(rng.randint(0, 200)), ident)
            vx = remote.vx
            ulen = 16 + len(inner)
            if kind == "bad_vxlan":
                vx = bytes((rng.choice((0x00, 0x04, 0x80, 0x02)),)) + vx[1:]
            else:
                ulen = rng.choice((rng.randint(8, 15), ulen + rng.randint(1, 100)))
            udp = _UDP_HDR.pack(remote.sport, _VXLAN_PORT, ulen, 0)
            f = remote.outer_eth + _ipv4(remote.hv_ip, LOCAL_UNDERLAY_IP, _UDP, udp + vx + inner, ident)
            port = UPLINK
        elif kind == "bad_ip_version":      # ethertype IPv4, version nibble 6
            f = local.l2 + _ET_IP4 + _ipv6(_ip6(t, 1, lh), _ip6(t, 10 + hv, rh), _TCP, tcp4(), 0)
        elif kind == "bad_ihl":
            f = local.l2 + _ET_IP4 + _ipv4(lip, rip, _TCP, tcp4(rng.randint(0, 100)), ident,
                                           ihl=rng.randint(0, 4))
        elif kind == "fragment":            # first fragment (MF) of a large UDP datagram
            body = _UDP_HDR.pack(sp, 5000, 3000, 0) + self.payload(rng.randint(100, 1000))
            f = local.l2 + _ET_IP4 + _ipv4(lip, rip, _UDP, body, ident, flags_frag=0x2000)
        elif kind == "ipv6_ext":            # hop-by-hop options header in front of UDP
            src6, dst6 = _ip6(t, 1, lh), _ip6(t, 10 + hv, rh)
            hbh = bytes((_UDP, 0, 5, 2, 0, 0, 1, 0))        # router alert + PadN
            f = local.l2 + _ET_IP6 + _ipv6(src6, dst6, 0, hbh + _udp(src6, dst6, sp, 53, self.payload(40)),
                                           0)
        elif kind == "oversize":
            n = _MAX_FRAME + rng.randint(1, 200) - 14 - 20 - 8 - len(local.l2) + 12
            f = local.l2 + _ET_IP4 + _ipv4(lip, rip, _UDP, _udp(lip, rip, sp, 9000, bytes(n)), ident)
        elif kind == "garbage":
            n = rng.randint(60, 300)
            et = rng.choice((_ET_IP4, _ET_IP6, _ET_VLAN, rng.randbytes(2)))
            f = bytes((rng.randrange(256) & 0xFE,)) + rng.randbytes(11) + et + rng.randbytes(n - 14)
            port = rng.choice((UPLINK,) + VM_PORTS)
        else:   # pragma: no cover - MALFORMED_KINDS and this function disagree
            raise AssertionError(kind)
        return port, (f if kind == "runt" else _pad(f))


# -- rules ----------------------------------------------------------------------------------

def _encap(t: int, h: int) -> str:
    return (f"vxlan_encap(vni={tenant_vni(t)},eth_src={_s_mac(_LOCAL_MAC)},eth_dst={_s_mac(_hv_mac(h))},"
            f"ip_src={_s_ip4(LOCAL_UNDERLAY_IP)},ip_dst={_s_ip4(hypervisor_ip(h))},"
            f"udp_src={49152 + 16 * t + h})")


def _vm_match(t: int) -> str:
    v = tenant_vlan(t)
    return f"in_port={tenant_port(t)},dl_vlan={'0xffff' if v is None else v}"


def _decap(t: int) -> str:
    """Actions delivering a decapsulated tenant frame to its VM port (VLAN pushed when tagged)."""
    v = tenant_vlan(t)
    return "vxlan_decap," + ("" if v is None else f"mod_vlan_vid:{v},")


def _strip(t: int) -> str:
    return "" if tenant_vlan(t) is None else "strip_vlan,"


def _net6(t: int, sub: int, plen: int = 64) -> str:
    return f"{_s_ip6(_ip6(t, sub, 0))}/{plen}"


def _acl_rules(t: int) -> list[tuple[int, str]]:
    vni = tenant_vni(t)
    return [
        (300, f"priority=300,tun_id={vni},ip,nw_src=10.{t}.{10 + HYPERVISORS}.192/26 actions=drop"),
        (300, f"priority=300,tun_id={vni},tcp,tp_dst={_TELNET} actions=drop"),
    ]


def _defaults(t: int) -> list[tuple[int, str]]:
    return [
        (1, f"priority=1,tun_id={tenant_vni(t)} actions=drop"),
        (1, f"priority=1,{_vm_match(t)} actions=controller"),
    ]


def _static_rules(t: int) -> list[tuple[int, str]]:
    vni, port = tenant_vni(t), tenant_port(t)
    r = _acl_rules(t)
    r.append((200, f"priority=200,tun_id={vni},ip,nw_dst=10.{t}.1.0/24 actions={_decap(t)}output:{port}"))
    r.append((200, f"priority=200,tun_id={vni},ipv6,ipv6_dst={_net6(t, 1)} actions={_decap(t)}output:{port}"))
    for h in range(1, HYPERVISORS + 1):
        r.append((200, f"priority=200,{_vm_match(t)},ip,nw_src=10.{t}.1.0/24,nw_dst=10.{t}.{10 + h}.0/24 "
                       f"actions={_strip(t)}{_encap(t, h)},output:0"))
        r.append((200, f"priority=200,{_vm_match(t)},ipv6,ipv6_src={_net6(t, 1)},ipv6_dst={_net6(t, 10 + h)} "
                       f"actions={_strip(t)}{_encap(t, h)},output:0"))
    return r + _defaults(t)


def _reactive_rules(t: int) -> list[tuple[int, str]]:
    vni, port = tenant_vni(t), tenant_port(t)
    r = _acl_rules(t)
    for i in range(1, VMS_PER_TENANT + 1):
        r.append((200, f"priority=200,tun_id={vni},ip,nw_dst=10.{t}.1.{i} actions={_decap(t)}output:{port}"))
        r.append((200, f"priority=200,tun_id={vni},ipv6,ipv6_dst={_s_ip6(_ip6(t, 1, i))} "
                       f"actions={_decap(t)}output:{port}"))
    for i in range(1, VMS_PER_TENANT + 1):
        for h in range(1, HYPERVISORS + 1):
            r.append((200, f"priority=200,{_vm_match(t)},ip,nw_src=10.{t}.1.{i},nw_dst=10.{t}.{10 + h}.0/24 "
                           f"actions={_strip(t)}{_encap(t, h)},output:0"))
            r.append((200, f"priority=200,{_vm_match(t)},ipv6,ipv6_src={_s_ip6(_ip6(t, 1, i))},"
                           f"ipv6_dst={_net6(t, 10 + h)} actions={_strip(t)}{_encap(t, h)},output:0"))
    return r + _defaults(t)


def _ct_rules(t: int) -> list[tuple[int, str]]:
    vni, port = tenant_vni(t), tenant_port(t)
    vm, dec, strip = _vm_match(t), _decap(t), _strip(t)
    r = [
        (400, f"priority=400,tun_id={vni},ct_state=+trk+inv actions=drop"),
        (400, f"priority=400,{vm},ct_state=+trk+inv actions=drop"),
    ]
    r += _acl_rules(t)
    r.append((250, f"priority=250,tun_id={vni},icmp actions={dec}output:{port}"))
    r.append((250, f"priority=250,tun_id={vni},icmp6 actions={dec}output:{port}"))
    net = f"10.{t}.1.0/24"
    for proto, ports, dst in (("tcp", _TCP_IN, f"nw_dst={net}"), ("udp", _UDP_IN, f"nw_dst={net}"),
                              ("tcp6", _TCP6_IN, f"ipv6_dst={_net6(t, 1)}"),
                              ("udp6", _UDP6_IN, f"ipv6_dst={_net6(t, 1)}")):
        for sp in ports:
            r.append((200, f"priority=200,tun_id={vni},{proto},ct_state=+trk+new,{dst},tp_dst={sp} "
                           f"actions={dec}ct(commit),output:{port}"))
    r.append((190, f"priority=190,tun_id={vni},ip,ct_state=+trk+est actions={dec}output:{port}"))
    r.append((190, f"priority=190,tun_id={vni},ipv6,ct_state=+trk+est actions={dec}output:{port}"))
    r.append((190, f"priority=190,tun_id={vni},ct_state=+trk+rel actions={dec}output:{port}"))
    for h in range(1, HYPERVISORS + 1):
        for fam, src, dst in (("ip", f"nw_src={net}", f"nw_dst=10.{t}.{10 + h}.0/24"),
                              ("ipv6", f"ipv6_src={_net6(t, 1)}", f"ipv6_dst={_net6(t, 10 + h)}")):
            enc = f"{strip}{_encap(t, h)}"
            r.append((200, f"priority=200,{vm},{fam},ct_state=+trk+new,{src},{dst} "
                           f"actions={enc},ct(commit),output:0"))
            r.append((195, f"priority=195,{vm},{fam},ct_state=+trk+est+rpl,{src},{dst} actions={enc},output:0"))
            r.append((190, f"priority=190,{vm},{fam},ct_state=+trk+est-rpl,{src},{dst} actions={enc},output:0"))
    return r + _defaults(t)


def _extra_acl(rng: random.Random, n: int, tenants: int) -> list[tuple[int, str]]:
    """``n`` prefix drops over external address space (never 10/8 or fd00::/8: tenant traffic)."""
    out = []
    for i in range(n):
        t = 1 + i % tenants
        plen = rng.randint(16, 32)
        if rng.random() < 0.125:
            a = bytes((0x20, 0x01, 0x0D, 0xB8)) + rng.randbytes(2) + bytes(10)
            addr = f"{_s_ip6(a)}/48"
            m = f"tun_id={tenant_vni(t)},ipv6,ipv6_src={addr}"
        else:
            a = (rng.choice((100, 198, 203, 185, 45)) << 24 | rng.getrandbits(24)) & (
                (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF)
            addr = f"{_s_ip4(a.to_bytes(4, 'big'))}/{plen}"
            m = (f"tun_id={tenant_vni(t)},ip,nw_src={addr}" if rng.random() < 0.5
                 else f"{_vm_match(t)},ip,nw_dst={addr}")
        out.append((300, f"priority=300,{m} actions=drop"))
    return out


def _provider_rules() -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    head = [
        (1000, "priority=1000,arp actions=controller"),
        (1000, "priority=1000,dl_type=0x88cc actions=controller"),
    ]
    tail = [
        (10, f"priority=10,in_port={UPLINK},tun_id=0 actions=controller"),
        (0, "priority=0 actions=drop"),
    ]
    return head, tail


def _tenant_mode(name: str, t: int) -> str:
    if name == "static":
        return "static"
    if name == "reactive":
        return "reactive"
    if name == "conntrack":
        return "ct"
    return "ct" if ((t - 1) // 2) % 2 == 0 else "reactive"


def _rules(name: str, tenants: int, acl_rules: int, rng: random.Random) -> tuple[str, list[int]]:
    head, tail = _provider_rules()
    lines = ["# cxlnic scenario rules: " + name,
             "# provider rules (no tun_id): ARP and LLDP to the host"]
    prios = []

    def emit(rs):
        for prio, text in rs:
            lines.append(text)
            prios.append(prio)

    emit(head)
    if acl_rules:
        lines.append(f"# {acl_rules} extra tenant ACL prefix drops")
        emit(_extra_acl(rng, acl_rules, tenants))
    builders = {"static": _static_rules, "reactive": _reactive_rules, "ct": _ct_rules}
    for t in range(1, tenants + 1):
        mode = _tenant_mode(name, t)
        vlan = tenant_vlan(t)
        lines.append(f"# tenant {t}: VNI {tenant_vni(t)}, VM port {tenant_port(t)}, "
                     f"{'untagged' if vlan is None else f'VLAN {vlan}'}, {mode} rules")
        emit(builders[mode](t))
    lines.append("# provider: non-VXLAN uplink traffic to the host; table miss drops")
    emit(tail)
    return "\n".join(lines) + "\n", prios


def _beyond_cam(prios: list[int], cam: int = CAM_ENTRIES) -> dict[int, int]:
    """Priorities (and how many rules of each) past the first ``cam`` lines of the rule table.

    The table orders rules by priority, highest first, then file order, so
    the lines past the CAM hold the ``len - cam`` lowest-priority rules.
    """
    return dict(sorted(Counter(sorted(prios, reverse=True)[cam:]).items(), reverse=True))


# -- the generator --------------------------------------------------------------------------

def generate(name: str = "reactive", *, packets: int = 100_000, seed: int = 1, tenants: int = 4,
             connections: int | None = None, acl_rules: int = 0, rate: float = 20_000.0,
             idle_gap: float = 115.0) -> Scenario:
    """Build scenario ``name`` (one of :data:`SCENARIOS`) with exactly ``packets`` packets.

    ``connections`` is the number of conversations (default ``packets //
    30``, at least 1); ``rate`` sets the active phase to ``packets / rate``
    seconds; ``idle_gap`` is the silence before the final burst.  Raises
    ValueError for an unknown name, or when ``packets`` cannot hold the
    requested conversations.
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; valid names: {', '.join(sorted(SCENARIOS))}")
    if not 1 <= tenants <= MAX_TENANTS:
        raise ValueError(f"tenants={tenants}: must be 1..{MAX_TENANTS}")
    if packets < 20:
        raise ValueError(f"packets={packets}: a scenario needs at least 20 packets")
    if acl_rules < 0 or rate <= 0 or idle_gap < 0:
        raise ValueError("acl_rules, rate and idle_gap must be non-negative (rate > 0)")
    rng = random.Random(seed)
    g = _Gen(rng, tenants)
    rules_text, prios = _rules(name, tenants, acl_rules, random.Random(rng.getrandbits(64)))

    frac = _MALFORMED_FRACTION.get(name, 0.0)
    n_bad = round(packets * frac)
    budget = packets - n_bad
    explicit = connections is not None
    n_conn = connections if explicit else max(1, packets // 30)
    if n_conn < 1:
        raise ValueError(f"connections={connections}: must be >= 1")
    kinds = list(_KIND_WEIGHTS)
    weights = list(_KIND_WEIGHTS.values())
    plans = [g.plan("tcp_close")] + [g.plan(k) for k in rng.choices(kinds, weights, k=n_conn - 1)]
    fixed = sum(p.fixed for p in plans)
    while fixed > budget and len(plans) > 1 and not explicit:
        fixed -= plans.pop().fixed
    if fixed > budget:
        raise ValueError(f"{packets} packets cannot hold {len(plans)} connections "
                         f"(they need at least {fixed + n_bad})")
    # The final burst: ~1% of the conversations, never the resumed ones or the first.
    cand = [i for i, p in enumerate(plans) if i and not p.resumed]
    n_late = min(len(cand), max(1 if len(plans) >= 10 else 0, round(len(plans) * 0.01)))
    for i in rng.sample(cand, n_late):
        plans[i].late = True
        plans[i].weight = min(plans[i].weight, 1.0) * 0.05
    # Share the remaining packets out as data packets (heavy-tailed).
    spare = budget - fixed
    elastic = [p for p in plans if p.kind in _ELASTIC]
    total_w = sum(p.weight for p in elastic)
    for p in elastic:
        p.extra = int(spare * p.weight / total_w)
    left = spare - sum(p.extra for p in elastic)
    for p in rng.choices(elastic, k=left):
        p.extra += 1

    active_us = max(packets / rate * 1e6, 2000.0)
    burst_start = active_us + idle_gap * 1e6
    burst_us = max(min(active_us * 0.02, 200_000.0), 500.0)

    events = []       # (time_us, order, conn_index or -1, from_client, in_port, frame)
    conns: list[Connection] = []
    for ci, p in enumerate(plans):
        conn, pk = g.conversation(p)
        conns.append(conn)
        resume_at = next((j for j, x in enumerate(pk) if x[0] is None), len(pk))
        main, rest = pk[:resume_at], pk[resume_at:]
        span = sum(x[0] for x in main)
        window = burst_us * 0.8 if p.late else active_us * 0.9
        scale = min(1.0, window / span) if span else 1.0
        t0 = (burst_start if p.late else 0.0) + rng.uniform(0.0, max(window - span * scale, 0.0))
        t = t0
        for gap, fc, port, frame in main:
            t += max(gap * scale, 1.0)
            events.append((t, len(events), ci, fc, port, frame))
        if rest:
            t = burst_start + rng.uniform(0.0, burst_us * 0.8)
            for gap, fc, port, frame in rest:
                t += max(gap or 0.0, 1.0)
                events.append((t, len(events), ci, fc, port, frame))
    bad_kinds = rng.choices(MALFORMED_KINDS, _MALFORMED_WEIGHTS, k=n_bad)
    for kind in bad_kinds:
        port, frame = g.malformed(kind)
        at = (burst_start + rng.uniform(0, burst_us)) if rng.random() < 0.01 else rng.uniform(0, active_us)
        events.append((at, len(events), -1, kind, port, frame))
    events.sort()

    out: list[Packet] = []
    malformed: dict[int, str] = {}
    last = -1
    for i, (t, _o, ci, fc, port, frame) in enumerate(events):
        us = max(int(t), last + 1)
        last = us
        out.append(Packet(us / 1e6, port, frame))
        if ci < 0:
            malformed[i] = fc
        else:
            conns[ci].packets.append(i)
            conns[ci].from_client.append(fc)

    meta = _meta(name, seed, tenants, out, conns, malformed, prios, active_us, burst_start, idle_gap)
    return Scenario(name, rules_text, out, meta, conns, malformed)


def _meta(name, seed, tenants, pkts, conns, malformed, prios, active_us, burst_start, idle_gap) -> dict:
    by_kind: Counter = Counter()
    for c in conns:
        k = "arp" if c.proto == 0 else {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}[c.proto]
        by_kind[k] += len(c.packets)
    by_kind["malformed"] = len(malformed)
    good = [pkts[i] for c in conns for i in c.packets]
    return {
        "name": name,
        "seed": seed,
        "packets": len(pkts),
        "bytes": sum(len(p.frame) for p in pkts),
        "tenants": [{"tenant": t, "vni": tenant_vni(t), "port": tenant_port(t), "vlan": tenant_vlan(t),
                     "mode": _tenant_mode(name, t)} for t in range(1, tenants + 1)],
        "connections": dict(sorted(Counter(c.kind for c in conns).items())),
        "n_connections": len(conns),
        "ipv6_connections": sum(c.ip_version == 6 for c in conns),
        "late_connections": sum(c.late for c in conns),
        "resumed_connections": sum(c.resumed for c in conns),
        "packets_by_kind": dict(sorted(by_kind.items())),
        "vxlan_packets": sum(p.in_port == UPLINK for p in good),
        "malformed": dict(sorted(Counter(malformed.values()).items())),
        "rules": len(prios),
        "cam_entries": CAM_ENTRIES,
        "rules_beyond_cam": max(0, len(prios) - CAM_ENTRIES),
        "beyond_cam_priorities": _beyond_cam(prios),
        "active_seconds": active_us / 1e6,
        "idle_gap_seconds": idle_gap,
        "burst_start_seconds": burst_start / 1e6,
        "duration_seconds": pkts[-1].time if pkts else 0.0,
    }


def main(argv=None) -> int:
    """``python -m cxlnic.model.scenario NAME --rules R.of --pcap T.pcap``: write a scenario."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("name", nargs="?", default="mixed", choices=sorted(SCENARIOS))
    ap.add_argument("-n", "--packets", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tenants", type=int, default=4)
    ap.add_argument("--connections", type=int, default=None)
    ap.add_argument("--acl-rules", type=int, default=0)
    ap.add_argument("--rules", default="scenario.of")
    ap.add_argument("--pcap", default="scenario.pcap")
    a = ap.parse_args(argv)
    s = generate(a.name, packets=a.packets, seed=a.seed, tenants=a.tenants, connections=a.connections,
                 acl_rules=a.acl_rules)
    s.write(a.rules, a.pcap)
    m = s.meta
    print(f"{a.name}: {m['packets']} packets, {m['n_connections']} connections, {m['rules']} rules "
          f"({m['rules_beyond_cam']} beyond the CAM) -> {a.rules}, {a.pcap}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
