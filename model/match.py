"""Reference semantics of a ternary rule, and the rule object the model passes around.

:func:`rule_matches` is the definition the CAM, the fast classifier and the
RTL are all checked against; :func:`linear_classify` is the brute-force scan
("lowest index wins") used as the oracle in property tests and as the
baseline of the classification benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cxlnic.hdl.layouts import ActionEntry, FlowKey, PacketKey, RuleEntry
from cxlnic.model.codec import codec

__all__ = [
    "Rule", "RULE", "ACTION", "PKEY", "FKEY", "rule_matches", "linear_classify", "steer_key",
    "prefix_mask", "ipv4_mapped", "IPV4_MAPPED_PREFIX",
]

RULE = codec(RuleEntry)
ACTION = codec(ActionEntry)
PKEY = codec(PacketKey)
FKEY = codec(FlowKey)

IPV4_MAPPED_PREFIX = 0xFFFF << 32
ALL128 = (1 << 128) - 1


def ipv4_mapped(addr32: int) -> int:
    """The 128-bit IPv4-mapped form (::ffff:a.b.c.d) of a 32-bit IPv4 address."""
    return IPV4_MAPPED_PREFIX | addr32


def prefix_mask(plen: int) -> int:
    """128-bit mask of the first ``plen`` bits (bit 127 = first address bit)."""
    if not 0 <= plen <= 128:
        raise ValueError(f"prefix length {plen} outside 0..128")
    return (ALL128 << (128 - plen)) & ALL128


@dataclass
class Rule:
    """A rule as the control plane states it, before it has a table slot.

    ``match`` is a RuleEntry record with the match fields, ``valid``,
    ``owner`` and ``tenant_care`` filled; its ``priority`` equals
    ``priority``; its ``action`` and ``counter`` fields are assigned when the
    rule is installed.  ``actions`` is an ActionEntry record.
    """
    priority: int
    match: object
    actions: object
    text: str = ""
    line: int = 0
    source: str = field(default="", repr=False)


def rule_matches(r, k) -> bool:
    """Does RuleEntry record ``r`` match PacketKey record ``k``?"""
    if not r.valid:
        return False
    f = k.flow
    if r.tenant_care and f.tenant != r.owner:
        return False
    if r.in_port_care and f.in_port != r.in_port:
        return False
    if r.eth_type_care and f.eth_type != r.eth_type:
        return False
    if r.ip_proto_care and f.ip_proto != r.ip_proto:
        return False
    if r.vlan_care and (f.vlan_valid != r.vlan_valid or (f.vlan_id ^ r.vlan_id) & r.vlan_id_mask):
        return False
    if (f.src_port ^ r.src_port) & r.src_port_mask:
        return False
    if (f.dst_port ^ r.dst_port) & r.dst_port_mask:
        return False
    if (k.tcp_flags ^ r.tcp_flags) & r.tcp_flags_mask:
        return False
    if (k.ct_state ^ r.ct_state) & r.ct_state_mask:
        return False
    if (f.src_ip ^ r.src_ip) & prefix_mask(r.src_plen):
        return False
    if (f.dst_ip ^ r.dst_ip) & prefix_mask(r.dst_plen):
        return False
    return True


def linear_classify(rules, k) -> int | None:
    """Index of the first (lowest-index) rule record in ``rules`` matching ``k``."""
    for i, r in enumerate(rules):
        if r is not None and rule_matches(r, k):
            return i
    return None


def steer_key(k, r, *, ct_state: bool = True):
    """Overwrite the bits of PacketKey record ``k`` that rule record ``r`` matches on with the
    rule's values (other bits unchanged), so that ``rule_matches(r, k)`` holds if ``r`` is
    valid.  With ``ct_state=False`` the key's ct_state is left as it is.  For test and
    benchmark traffic that must hit given rules."""
    def merge(x, v, mask):
        return (x & ~mask) | (v & mask)
    f = k.flow
    if r.tenant_care:
        f.tenant = r.owner
    if r.in_port_care:
        f.in_port = r.in_port
    if r.eth_type_care:
        f.eth_type = r.eth_type
    if r.ip_proto_care:
        f.ip_proto = r.ip_proto
    if r.vlan_care:
        f.vlan_valid, f.vlan_id = r.vlan_valid, merge(f.vlan_id, r.vlan_id, r.vlan_id_mask)
    f.src_port = merge(f.src_port, r.src_port, r.src_port_mask)
    f.dst_port = merge(f.dst_port, r.dst_port, r.dst_port_mask)
    k.tcp_flags = merge(k.tcp_flags, r.tcp_flags, r.tcp_flags_mask)
    if ct_state:
        k.ct_state = merge(k.ct_state, r.ct_state, r.ct_state_mask)
    f.src_ip = merge(f.src_ip, r.src_ip, prefix_mask(r.src_plen))
    f.dst_ip = merge(f.dst_ip, r.dst_ip, prefix_mask(r.dst_plen))
    return k
