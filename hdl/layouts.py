"""The cxlnic binary table format: every line, key and record, defined once.

These ``amaranth.lib.data.Struct`` layouts are the single source of truth.
The HDL uses them as signal shapes; the golden model derives its pack/unpack
from their field offsets and widths (:mod:`cxlnic.model.codec`); the table
format document (``docs/table-format.md``) is generated from them
(``make docs``).  Bit 0 of a layout is the least significant bit of byte 0
of its line: a 64-byte line is the little-endian integer of its bytes, which
is also how a 512-bit AXI4 beat carries it.

Every entry the host installs (rule, action, bucket, flow, tenant) is exactly
one 64-byte line, so one CXL line write updates it atomically.
"""

from amaranth.lib import data, enum

__all__ = [
    "LINE_BYTES", "LINE_BITS", "MAGIC", "FORMAT_VERSION", "SLOTS_PER_BUCKET",
    "CtState", "TcpFlags", "ExceptionCode", "ConnState",
    "FlowKey", "PacketKey", "RuleEntry", "ActionEntry", "BucketSlot", "Bucket",
    "FlowEntry", "Counter", "CounterLine", "TenantEntry", "Header", "HashKeyLine",
    "LINE_LAYOUTS",
]

LINE_BYTES = 64
LINE_BITS = 8 * LINE_BYTES
#: "CXLN" read as a little-endian 32-bit word.
MAGIC = int.from_bytes(b"CXLN", "little")
FORMAT_VERSION = 1
SLOTS_PER_BUCKET = 8


class CtState(enum.IntEnum, shape=8):
    """Bits of the OpenFlow ``ct_state`` match field (same values as OVS)."""
    NEW = 0x01
    EST = 0x02
    REL = 0x04
    RPL = 0x08
    INV = 0x10
    TRK = 0x20


class TcpFlags(enum.IntEnum, shape=8):
    """TCP flag bits as they appear in byte 13 of the TCP header."""
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


class ExceptionCode(enum.IntEnum, shape=4):
    """Why the parser could not produce a trustworthy key.

    Any code other than ``NONE`` sends the packet to the host, counted per
    code; the pipeline keeps flowing.
    """
    NONE = 0
    RUNT = 1            # frame shorter than the minimum (60 bytes without FCS)
    OVERSIZE = 2        # frame longer than the configured maximum
    TRUNCATED = 3       # a header runs past the end of the frame
    BAD_IP_VERSION = 4  # IP version nibble disagrees with the ethertype
    BAD_IP_HEADER = 5   # IPv4 IHL < 5, or total/payload length smaller than the headers
    FRAGMENT = 6        # IPv4 fragment (MF set or offset != 0): no L4 ports
    UNSUPPORTED = 7     # IPv6 extension header, or an encapsulation we do not parse
    BAD_VXLAN = 8       # VXLAN header without the I flag


class ConnState(enum.IntEnum, shape=4):
    """Connection-tracking state kept in a flow entry (both directions agree)."""
    NONE = 0          # not tracked (flow installed by a rule without ct)
    SYN_SENT = 1
    SYN_RECV = 2
    ESTABLISHED = 3
    FIN_WAIT = 4      # one side sent FIN
    CLOSING = 5       # both sides sent FIN
    TIME_WAIT = 6     # last ACK seen after both FINs
    CLOSED = 7        # RST seen
    UDP_UNREPLIED = 8
    UDP_REPLIED = 9


class FlowKey(data.Struct):
    """The exact-match part of a packet key: what identifies one flow.

    IPv4 addresses are stored IPv4-mapped (``::ffff:a.b.c.d``); ``ip_proto``
    and the ports are zero for non-IP traffic.  ``tenant`` is the VXLAN VNI
    of tunnelled traffic, 0 otherwise.
    """
    tenant: 24
    in_port: 8
    eth_type: 16
    vlan_id: 12
    vlan_valid: 1
    _rsvd: 3
    ip_proto: 8
    src_port: 16
    dst_port: 16
    src_ip: 128
    dst_ip: 128


class PacketKey(data.Struct):
    """The parser's output: the flow key plus per-packet match fields."""
    flow: FlowKey
    tcp_flags: 8
    ct_state: 8
    exception: ExceptionCode


class ActionEntry(data.Struct):
    """One action record (a line of the action region).

    Applied in this fixed order whatever order the rule text names them:
    VXLAN decap, VLAN pop, set fields, VLAN push/modify, VXLAN encap,
    ct commit, then the verdict (drop beats to-host beats output).
    """
    output: 1
    drop: 1
    to_host: 1
    ct_commit: 1
    vlan_pop: 1
    vlan_set: 1          # mod_vlan_vid: rewrite the VID, pushing a tag if none
    vxlan_decap: 1
    vxlan_encap: 1
    set_eth_src: 1
    set_eth_dst: 1
    set_ipv4_src: 1
    set_ipv4_dst: 1
    set_tp_src: 1
    set_tp_dst: 1
    _rsvd0: 2
    out_port: 8
    vlan_pcp: 3
    _rsvd1: 1
    vlan_vid: 12
    eth_src: 48
    eth_dst: 48
    ipv4_src: 32
    ipv4_dst: 32
    tp_src: 16
    tp_dst: 16
    encap_eth_src: 48
    encap_eth_dst: 48
    encap_ip_src: 32
    encap_ip_dst: 32
    encap_udp_src: 16
    encap_vni: 24
    _rsvd2: 80


class RuleEntry(data.Struct):
    """One ternary rule (a line of the rule region); lowest index wins.

    Addresses match by prefix length over the 128-bit (IPv4-mapped) address;
    other fields carry a mask, or a single care bit where OpenFlow only
    offers exact-or-wildcard.  ``owner`` is the tenant the rule belongs to;
    with ``tenant_care`` the rule matches only packets of tenant ``owner``
    (tenant 0 = untunnelled traffic).  A tenant's own rules always have
    ``tenant_care`` set (isolation); a provider rule (owner 0, no care bit)
    matches every tenant.  ``counter`` indexes the counter
    region.  The first ``cam_entries`` rules are mirrored into the CAM.
    """
    valid: 1
    in_port_care: 1
    eth_type_care: 1
    ip_proto_care: 1
    vlan_care: 1          # match vlan_valid (and vlan_id under vlan_id_mask)
    tenant_care: 1        # match the packet's tenant against ``owner``
    _rsvd0: 1
    priority: 16
    owner: 24
    action: 20
    counter: 20
    in_port: 8
    eth_type: 16
    ip_proto: 8
    vlan_valid: 1
    vlan_id: 12
    vlan_id_mask: 12
    src_port: 16
    src_port_mask: 16
    dst_port: 16
    dst_port_mask: 16
    tcp_flags: 8
    tcp_flags_mask: 8
    ct_state: 8
    ct_state_mask: 8
    src_plen: 8
    dst_plen: 8
    src_ip: 128
    dst_ip: 128


class BucketSlot(data.Struct):
    """A cuckoo bucket slot: signature and index of the flow entry line."""
    valid: 1
    sig: 16
    entry: 31


class Bucket(data.Struct):
    """One cuckoo bucket = one line of signature/pointer slots."""
    slots: data.ArrayLayout(BucketSlot, SLOTS_PER_BUCKET)
    _rsvd: 512 - SLOTS_PER_BUCKET * 48


class FlowEntry(data.Struct):
    """One exact-match flow (a line of the flow-entry pool).

    The entry stays at its index for its whole life; cuckoo moves only
    rewrite bucket slots.  ``seen_packets`` is the low 32 bits of the flow
    counter at the last aging sweep, so the sweep sees fast-path activity
    without the device ever writing this line.
    """
    valid: 1
    reply: 1             # this entry is the reply direction of a connection
    fin: 1               # this direction has sent a FIN
    nocache: 1           # the fast path must not decide this flow's packets (always upcall)
    conn_state: ConnState
    action: 20
    counter: 24
    peer: 31             # entry index of the other direction, if tracked
    has_peer: 1
    last_seen: 32        # slow-path time (seconds) of the last activity
    seen_packets: 32
    key: FlowKey
    _rsvd1: 4


class Counter(data.Struct):
    packets: 64
    bytes: 64


class CounterLine(data.Struct):
    """Four packet/byte counters per line; counter i is slot i % 4 of line i // 4."""
    counters: data.ArrayLayout(Counter, 4)


class TenantEntry(data.Struct):
    """A tenant context: the slices of each region it may read and write."""
    valid: 1
    _rsvd0: 7
    vni: 24
    rule_base: 32
    rule_count: 32
    action_base: 32
    action_count: 32
    flow_base: 32
    flow_count: 32
    counter_base: 32
    counter_count: 32
    _rsvd1: 224


class Header(data.Struct):
    """Line 0 of the image.  Offsets are in lines from the image base."""
    magic: 32
    version: 16
    slots_per_bucket: 8
    flags: 8
    rules_off: 32
    n_rules: 32
    actions_off: 32
    n_actions: 32
    buckets_off: 32
    n_buckets: 32
    stash_off: 32
    flows_off: 32
    n_flows: 32
    counters_off: 32
    n_counters: 32
    tenants_off: 32
    cam_entries: 16
    n_stash: 16
    n_tenants: 16
    hashkey_off: 16


class HashKeyLine(data.Struct):
    """The 64-byte Toeplitz key (byte 0 first), at ``Header.hashkey_off``."""
    key: data.ArrayLayout(8, 64)


#: Every layout that occupies exactly one line, by region name.
LINE_LAYOUTS = {
    "header": Header,
    "hashkey": HashKeyLine,
    "rule": RuleEntry,
    "action": ActionEntry,
    "bucket": Bucket,
    "flow": FlowEntry,
    "counter": CounterLine,
    "tenant": TenantEntry,
}

for _name, _layout in LINE_LAYOUTS.items():
    _size = data.Layout.cast(_layout).size
    if _size != LINE_BITS:  # pragma: no cover - a layout edit gone wrong
        raise AssertionError(f"{_name} layout is {_size} bits, not one {LINE_BITS}-bit line")
