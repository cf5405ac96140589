"""The rule language: OpenFlow flow syntax, as ``ovs-ofctl add-flows`` files write it.

A rules file holds one flow per line; blank lines and ``#`` comments (from
``#`` to the end of the line) are ignored.  A flow is comma- or
whitespace-separated ``field=value`` matches and protocol shorthands
(``tcp``, ``ip``, ...), then ``actions=`` followed by the action list
(everything after ``actions=``)::

    priority=200,tcp,nw_dst=10.0.0.0/24,tp_dst=80 actions=mod_vlan_vid:5,output:2
    priority=100,ip,ct_state=+trk+new actions=ct(commit),controller

:func:`parse_rules` turns a file's text into :class:`~cxlnic.model.match.Rule`
objects whose ``match`` is a RuleEntry record (``valid=1``, ``priority``,
the match fields, ``owner``/``tenant_care`` from ``tun_id``) and whose
``actions`` is an ActionEntry record.  All-or-nothing: a file with any
error raises :class:`RuleSyntaxError` listing every error in the file
(``file:line:column: error: message``), and no rule is returned.

:func:`format_rule` writes a rule back in canonical syntax; for every rule
``r`` that :func:`parse_rules` can produce, ``parse_rules(format_rule(r))``
gives back the same priority, match record and action record.

The user-facing description, with every field and action, the fixed action
order and the differences from Open vSwitch, is ``docs/rule-language.md``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from cxlnic.hdl.layouts import CtState, TcpFlags
from cxlnic.model.match import ACTION, RULE, Rule, ipv4_mapped

__all__ = [
    "RuleSyntaxError", "parse_rules", "load_rules", "format_rule",
    "DEFAULT_PRIORITY", "DEFAULT_ENCAP_UDP_SRC", "MATCH_FIELDS", "ACTIONS",
]

#: Priority of a flow that names none (as in OVS).
DEFAULT_PRIORITY = 0x8000
#: Outer UDP source port of ``vxlan_encap`` when ``udp_src`` is not given.
DEFAULT_ENCAP_UDP_SRC = 49152

ETH_IP, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMP6 = 1, 6, 17, 58
_U16, _U32 = 0xFFFF, 0xFFFFFFFF

#: Protocol shorthands: name -> (dl_type, nw_proto or None).
SHORTHANDS = {
    "ip": (ETH_IP, None), "ipv6": (ETH_IPV6, None), "arp": (ETH_ARP, None),
    "tcp": (ETH_IP, PROTO_TCP), "udp": (ETH_IP, PROTO_UDP), "icmp": (ETH_IP, PROTO_ICMP),
    "tcp6": (ETH_IPV6, PROTO_TCP), "udp6": (ETH_IPV6, PROTO_UDP), "icmp6": (ETH_IPV6, PROTO_ICMP6),
}

# Match field name -> the slot it sets (aliases share a slot; a slot may be set once per flow).
_FIELD_SLOT = {
    "priority": "priority", "in_port": "in_port", "dl_type": "dl_type", "nw_proto": "nw_proto",
    "dl_vlan": "dl_vlan", "tun_id": "tun_id", "ct_state": "ct_state", "tcp_flags": "tcp_flags",
    "nw_src": "src", "ip_src": "src", "ipv6_src": "src",
    "nw_dst": "dst", "ip_dst": "dst", "ipv6_dst": "dst",
    "tp_src": "tp_src", "tcp_src": "tp_src", "udp_src": "tp_src",
    "tp_dst": "tp_dst", "tcp_dst": "tp_dst", "udp_dst": "tp_dst",
    "table": "table",
}

#: Every match field name :func:`parse_rules` accepts (shorthands included).
MATCH_FIELDS = tuple(_FIELD_SLOT) + tuple(SHORTHANDS)

# OpenFlow match fields the cxlnic key does not carry (a more helpful error than "unknown").
_OVS_FIELDS_NOT_IN_KEY = {
    "dl_src", "dl_dst", "eth_src", "eth_dst", "vlan_tci", "dl_vlan_pcp", "vlan_pcp", "vlan_vid",
    "nw_tos", "ip_dscp", "nw_ecn", "ip_ecn", "nw_ttl", "nw_frag", "ip_frag", "icmp_type", "icmp_code",
    "icmpv6_type", "icmpv6_code", "arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha",
    "ipv6_label", "nd_target", "nd_sll", "nd_tll", "sctp", "sctp_src", "sctp_dst", "tun_src", "tun_dst",
    "tun_ipv6_src", "tun_ipv6_dst", "tun_flags", "metadata", "ct_zone", "ct_mark", "ct_label",
    "ct_nw_src", "ct_nw_dst", "ct_tp_src", "ct_tp_dst", "pkt_mark", "skb_priority", "mpls",
    "mpls_label", "mpls_tc", "mpls_bos", "rarp", "conj_id", "dp_hash", "recirc_id", "actset_output",
    "packet_type", "in_port_oxm", "cookie", "idle_timeout", "hard_timeout", "importance",
    "send_flow_rem", "check_overlap", "out_port", "out_group",
} | {f"reg{i}" for i in range(16)} | {f"xreg{i}" for i in range(8)}

_TCP_FLAG_NAMES = {m.name.lower(): int(m) for m in TcpFlags}
_CT_STATE_NAMES = {m.name.lower(): int(m) for m in CtState}
_CT_STATE_ALL = sum(_CT_STATE_NAMES.values())

# Fixed application order (ActionEntry): rank of each action kind.
_RANK_DECAP, _RANK_POP, _RANK_SET, _RANK_ENCAP, _RANK_CT, _RANK_VERDICT = range(6)
_ORDER_TEXT = ("vxlan_decap, strip_vlan, set_field/mod_* and mod_vlan_vid/mod_vlan_pcp, "
               "vxlan_encap, ct(commit), then output/controller")

#: Every action name :func:`parse_rules` accepts (plus a bare port number).
ACTIONS = (
    "output", "drop", "controller", "LOCAL", "mod_vlan_vid", "mod_vlan_pcp", "strip_vlan", "pop_vlan",
    "set_field", "mod_dl_src", "mod_dl_dst", "mod_nw_src", "mod_nw_dst", "mod_tp_src", "mod_tp_dst",
    "ct", "vxlan_decap", "vxlan_encap",
)

# OpenFlow/OVS actions the cxlnic action format cannot express.
_OVS_ACTIONS_NOT_SUPPORTED = {
    "push_vlan", "mod_dl_vlan", "mod_nw_tos", "mod_nw_ecn", "mod_nw_ttl", "dec_ttl", "set_tunnel",
    "set_tunnel64", "set_queue", "pop_queue", "resubmit", "load", "move", "push", "pop", "enqueue",
    "learn", "multipath", "bundle", "bundle_load", "note", "exit", "goto_table", "write_actions",
    "clear_actions", "write_metadata", "meter", "group", "sample", "clone", "check_pkt_larger",
    "push_mpls", "pop_mpls", "set_mpls_label", "set_mpls_tc", "set_mpls_ttl", "dec_mpls_ttl",
    "fin_timeout", "conjunction", "ct_clear", "nat", "encap", "decap", "dec_nsh_ttl",
}
# Reserved OpenFlow ports the action format cannot output to (LOCAL and CONTROLLER can: the host).
_UNSUPPORTED_PORTS = {"in_port", "normal", "flood", "all", "table", "none", "any"}

# set_field target -> (ActionEntry slot, prerequisite kind)
_SET_FIELDS = {
    "eth_src": "eth_src", "dl_src": "eth_src", "eth_dst": "eth_dst", "dl_dst": "eth_dst",
    "ip_src": "ip_src", "nw_src": "ip_src", "ip_dst": "ip_dst", "nw_dst": "ip_dst",
    "tp_src": "tp_src", "tcp_src": "tp_src", "udp_src": "tp_src",
    "tp_dst": "tp_dst", "tcp_dst": "tp_dst", "udp_dst": "tp_dst",
}
_MOD_FORMS = {
    "mod_dl_src": "eth_src", "mod_dl_dst": "eth_dst", "mod_nw_src": "ip_src", "mod_nw_dst": "ip_dst",
    "mod_tp_src": "tp_src", "mod_tp_dst": "tp_dst",
}

_ENCAP_ARGS = ("vni", "eth_src", "eth_dst", "ip_src", "ip_dst", "udp_src")

_ACTIONS_RE = re.compile(r"(?:^|(?<=[\s,]))actions=")
_TOKEN_RE = re.compile(r"[^\s,]+")
_NUM_RE = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")


class RuleSyntaxError(ValueError):
    """A rules file has errors; nothing from it may be installed.

    ``errors`` is the list of every error found, in file order, each a
    ``(filename, line, column, message)`` tuple with 1-based line and column
    (the column of the offending token).  ``str()`` gives one compiler-style
    line per error: ``rules.of:12:17: error: nw_src requires ip (dl_type=0x0800)``.
    """

    def __init__(self, errors):
        self.errors = sorted(errors, key=lambda e: (e[1], e[2]))
        super().__init__("\n".join(f"{f}:{ln}:{col}: error: {msg}" for f, ln, col, msg in self.errors))


class _Bad(Exception):
    """One error in a token; ``col`` overrides the caller's column when given."""

    def __init__(self, msg: str, col: int | None = None):
        super().__init__(msg)
        self.msg = msg
        self.col = col


# -- value parsers (each raises _Bad with a message naming the problem) --------

def _uint(s: str, what: str, maxv: int) -> int:
    if not _NUM_RE.fullmatch(s):
        raise _Bad(f"{what}: expected a decimal or 0x hex number, got {s!r}")
    v = int(s, 0) if s[:2].lower() == "0x" else int(s, 10)
    if v > maxv:
        raise _Bad(f"{what} {s} out of range 0..{maxv} ({maxv:#x})")
    return v


def _ipv4(s: str, what: str) -> int:
    try:
        return int(ipaddress.IPv4Address(s))
    except ValueError:
        raise _Bad(f"{what}: bad IPv4 address {s!r}") from None


def _ip_prefix(s: str, what: str, version: int) -> tuple[int, int]:
    """``addr``, ``addr/N`` or ``addr/mask`` (contiguous mask) -> (address & mask, N).

    ``version`` 4 or 6; the address and prefix are in that family's width.
    """
    cls, width = (ipaddress.IPv4Address, 32) if version == 4 else (ipaddress.IPv6Address, 128)
    full = (1 << width) - 1

    def addr_of(text: str, role: str) -> int:
        try:
            return int(cls(text))
        except ValueError:
            raise _Bad(f"{what}: bad IPv{version} {role} {text!r}") from None

    addr_s, slash, mask_s = s.partition("/")
    addr = addr_of(addr_s, "address")
    if not slash:
        return addr, width
    if ("." if version == 4 else ":") in mask_s:
        mask = addr_of(mask_s, "mask")
        inv = ~mask & full
        if inv & (inv + 1):
            raise _Bad(f"{what}: non-contiguous mask {mask_s} is not supported by the CAM format "
                       "(addresses match by prefix length)")
        plen = bin(mask).count("1")
    else:
        if not mask_s.isdigit():
            raise _Bad(f"{what}: bad prefix length {mask_s!r}")
        plen = int(mask_s)
        if plen > width:
            raise _Bad(f"{what}: prefix length {plen} out of range 0..{width}")
    return addr & ((full << (width - plen)) & full), plen


def _mac(s: str, what: str) -> int:
    if not re.fullmatch(r"[0-9a-fA-F]{1,2}(:[0-9a-fA-F]{1,2}){5}", s):
        raise _Bad(f"{what}: bad MAC address {s!r} (expected xx:xx:xx:xx:xx:xx)")
    return int.from_bytes(bytes(int(b, 16) for b in s.split(":")), "big")


def _masked(s: str, what: str, maxv: int) -> tuple[int, int]:
    """``N`` (exact: mask ``maxv``) or ``N/MASK`` -> (N & MASK, MASK)."""
    v_s, slash, m_s = s.partition("/")
    v = _uint(v_s, what, maxv)
    m = _uint(m_s, f"{what} mask", maxv) if slash else maxv
    return v & m, m


def _flags(s: str, what: str, names: dict[str, int], allowed: int,
           unsupported: dict[str, str]) -> tuple[int, int]:
    """OVS flag syntax ``+a-b+c`` or ``VALUE/MASK`` (``VALUE`` alone: mask = every allowed bit)."""
    if s[:1] not in "+-":
        v_s, slash, m_s = s.partition("/")
        v = _uint(v_s, what, 0xFF)
        m = _uint(m_s, f"{what} mask", 0xFF) if slash else allowed
        if (v | m) & ~allowed:
            raise _Bad(f"{what}: bits {(v | m) & ~allowed:#04x} are not supported "
                       f"(supported bits {allowed:#04x})")
        return v & m, m
    value = mask = 0
    items = re.findall(r"[+-][^+-]*", s)
    if "".join(items) != s:
        raise _Bad(f"{what}: bad flag list {s!r}")
    for item in items:
        sign, name = item[0], item[1:]
        if name in unsupported:
            raise _Bad(f"{what}: flag {name!r} is not supported ({unsupported[name]})")
        bit = names.get(name)
        if bit is None:
            raise _Bad(f"{what}: unknown flag {name!r} (flags: {', '.join(names)})")
        if mask & bit:
            raise _Bad(f"{what}: flag {name!r} given twice")
        mask |= bit
        if sign == "+":
            value |= bit
    return value, mask


def _fmt_flags(value: int, mask: int, names: dict[str, int]) -> str:
    out = []
    for name, bit in names.items():
        if mask & bit:
            out.append(("+" if value & bit else "-") + name)
    return "".join(out)


# -- one flow ------------------------------------------------------------------

@dataclass
class _Set:
    """A slot's value, and where (column, field name) the line set it."""
    value: object
    col: int
    name: str


@dataclass
class _ActState:
    """Actions seen so far in one flow's action list."""
    seen: dict = field(default_factory=dict)   # slot -> (column, action text)
    last: tuple | None = None                  # (rank, action text) of the previous action
    drop_col: int | None = None


class _Line:
    """Parses one flow line; errors go to ``errs`` as (line, column, message)."""

    def __init__(self, lineno: int, errs: list):
        self.lineno = lineno
        self.errs = errs
        self.spec: dict[str, _Set] = {}

    def err(self, col: int, msg: str) -> None:
        self.errs.append((self.lineno, col, msg))

    # -- matches ---------------------------------------------------------------
    def set_slot(self, slot: str, value, col: int, name: str) -> None:
        prev = self.spec.get(slot)
        if prev is not None:
            what = (f"{name} given twice" if prev.name == name
                    else f"{name} sets the same field as {prev.name}")
            self.err(col, f"duplicate field: {what} (first at column {prev.col})")
            return
        self.spec[slot] = _Set(value, col, name)

    def match_token(self, tok: str, col: int) -> None:
        name, eq, value = tok.partition("=")
        if not eq:
            if tok in SHORTHANDS:
                dl_type, proto = SHORTHANDS[tok]
                self.set_slot("dl_type", dl_type, col, tok)
                if proto is not None:
                    self.set_slot("nw_proto", proto, col, tok)
                return
            if tok in _FIELD_SLOT:
                self.err(col, f"{tok} needs a value ({tok}=...)")
                return
        if name not in _FIELD_SLOT:
            if name in _OVS_FIELDS_NOT_IN_KEY:
                why = f"{name} is not matched by cxlnic (the packet key does not carry it)"
            elif name == "actions" or name == "action":
                why = f"{name!r} is misspelt or misplaced: the action list starts with 'actions='"
            else:
                why = f"unknown match field {name!r}"
            self.err(col, f"{why}; supported fields: {', '.join(MATCH_FIELDS)}")
            return
        vcol = col + len(name) + 1
        if not value:
            self.err(vcol, f"{name}: missing value")
            return
        try:
            parsed = self.match_value(name, value)
        except _Bad as e:
            self.err(e.col or vcol, e.msg)
            return
        if name == "table":
            return
        self.set_slot(_FIELD_SLOT[name], parsed, col, name)

    def match_value(self, name: str, v: str):
        if name == "priority":
            return _uint(v, name, _U16)
        if name == "in_port":
            if not _NUM_RE.fullmatch(v):
                raise _Bad(f"in_port={v} is not supported: in_port is a port number 0..255")
            return _uint(v, name, 0xFF)
        if name == "dl_type":
            return _uint(v, name, _U16)
        if name == "nw_proto":
            return _uint(v, name, 0xFF)
        if name == "dl_vlan":
            vid = _uint(v, name, _U16)
            if vid != _U16 and vid > 0xFFF:
                raise _Bad(f"dl_vlan {v} out of range 0..4095 (or 0xffff for untagged)")
            return vid
        if name == "table":
            if _uint(v, name, 0xFF) != 0:
                raise _Bad("cxlnic has a single flow table: only table=0 is accepted")
            return 0
        if name == "tun_id":
            vni_s, slash, mask_s = v.partition("/")
            vni = _uint(vni_s, "tun_id", (1 << 64) - 1)
            if slash and _uint(mask_s, "tun_id mask", (1 << 64) - 1) not in (0xFFFFFF, (1 << 64) - 1):
                raise _Bad("tun_id: only an exact match (mask 0xffffff) is supported: "
                           "a rule matches one whole VNI")
            if vni > 0xFFFFFF:
                raise _Bad(f"tun_id {vni_s} out of range 0..16777215 (tun_id is the 24-bit VXLAN VNI)")
            return vni
        if name == "ct_state":
            return _flags(v, name, _CT_STATE_NAMES, _CT_STATE_ALL,
                          {"snat": "no NAT in cxlnic", "dnat": "no NAT in cxlnic"})
        if name == "tcp_flags":
            return _flags(v, name, _TCP_FLAG_NAMES, 0xFF,
                          {"ns": "the key carries only the 8 flag bits of TCP header byte 13"})
        if name in ("nw_src", "nw_dst", "ip_src", "ip_dst"):
            addr, plen = _ip_prefix(v, name, 4)
            return ("ipv4", ipv4_mapped(addr), 96 + plen)
        if name in ("ipv6_src", "ipv6_dst"):
            addr, plen = _ip_prefix(v, name, 6)
            return ("ipv6", addr, plen)
        # tp_src/tp_dst and their tcp_/udp_ aliases
        return _masked(v, name, _U16)

    def get(self, slot: str, default=None):
        s = self.spec.get(slot)
        return default if s is None else s.value

    def check_prereqs(self) -> None:
        """OpenFlow prerequisites, checked once the whole match is known (order does not matter)."""
        dl_type = self.get("dl_type")
        proto = self.get("nw_proto")
        has = f", but the flow matches dl_type={dl_type:#06x}" if dl_type is not None else ""
        nw = self.spec.get("nw_proto")
        if nw is not None and dl_type not in (ETH_IP, ETH_IPV6):
            self.err(nw.col, f"{nw.name} requires ip or ipv6 (dl_type=0x0800 or 0x86dd){has}")
        for slot in ("src", "dst"):
            s = self.spec.get(slot)
            if s is None:
                continue
            if s.value[0] == "ipv4" and dl_type != ETH_IP:
                self.err(s.col, f"{s.name} requires ip (dl_type=0x0800){has}")
            elif s.value[0] == "ipv6" and dl_type != ETH_IPV6:
                self.err(s.col, f"{s.name} requires ipv6 (dl_type=0x86dd){has}")
        for slot in ("tp_src", "tp_dst"):
            s = self.spec.get(slot)
            if s is not None:
                self.check_l4(s.name, proto, s.col)
        s = self.spec.get("tcp_flags")
        if s is not None and proto != PROTO_TCP:
            self.err(s.col, "tcp_flags requires tcp (nw_proto=6)" + self.proto_note(proto))

    @staticmethod
    def proto_note(proto) -> str:
        return f", but the flow matches nw_proto={proto}" if proto is not None else ""

    def check_l4(self, name: str, proto, col: int, label: str | None = None) -> None:
        """Port field ``name`` needs nw_proto tcp or udp (``tcp_*``: tcp, ``udp_*``: udp)."""
        if name.startswith("tcp_"):
            need, text = (PROTO_TCP,), "tcp (nw_proto=6)"
        elif name.startswith("udp_"):
            need, text = (PROTO_UDP,), "udp (nw_proto=17)"
        else:
            need, text = (PROTO_TCP, PROTO_UDP), "tcp or udp (nw_proto=6 or 17)"
        if proto not in need:
            self.err(col, f"{label or name} requires {text}" + self.proto_note(proto))

    def build_match(self):
        m = RULE.new(valid=1)
        m.priority = self.get("priority", DEFAULT_PRIORITY)
        if (p := self.get("in_port")) is not None:
            m.in_port_care, m.in_port = 1, p
        if (t := self.get("dl_type")) is not None:
            m.eth_type_care, m.eth_type = 1, t
        if (p := self.get("nw_proto")) is not None:
            m.ip_proto_care, m.ip_proto = 1, p
        if (vid := self.get("dl_vlan")) is not None:
            m.vlan_care = 1
            if vid != _U16:
                m.vlan_valid, m.vlan_id, m.vlan_id_mask = 1, vid, 0xFFF
        if (vni := self.get("tun_id")) is not None:
            m.tenant_care, m.owner = 1, vni
        if (s := self.get("src")) is not None:
            _, m.src_ip, m.src_plen = s
        if (d := self.get("dst")) is not None:
            _, m.dst_ip, m.dst_plen = d
        if (tp := self.get("tp_src")) is not None:
            m.src_port, m.src_port_mask = tp
        if (tp := self.get("tp_dst")) is not None:
            m.dst_port, m.dst_port_mask = tp
        if (f := self.get("tcp_flags")) is not None:
            m.tcp_flags, m.tcp_flags_mask = f
        if (c := self.get("ct_state")) is not None:
            m.ct_state, m.ct_state_mask = c
        return m

    # -- actions ---------------------------------------------------------------
    def split_actions(self, s: str, base: int) -> list[tuple[str, int]]:
        """Split at commas/whitespace outside parentheses -> [(item, 1-based column)]."""
        items: list[tuple[str, int]] = []
        depth, start, opens, broken = 0, None, [], False
        for i, ch in enumerate(s):
            if depth == 0 and (ch == "," or ch.isspace()):
                if start is not None and not broken:
                    items.append((s[start:i], base + start + 1))
                start, broken = None, False
                continue
            if start is None:
                start = i
            if ch == "(":
                depth += 1
                opens.append(i)
            elif ch == ")":
                if depth == 0:
                    self.err(base + i + 1, "unbalanced ')' in the action list")
                    broken = True          # the item is reported; do not also parse it
                else:
                    depth -= 1
                    opens.pop()
        if depth:
            self.err(base + opens[0] + 1, "unclosed '(' in the action list")
        elif start is not None and not broken:
            items.append((s[start:], base + start + 1))
        return items

    def parse_actions(self, s: str, base: int):
        a = ACTION.new()
        st = _ActState()
        items = self.split_actions(s, base)
        for item, col in items:
            try:
                self.action(item, col, a, st)
            except _Bad as e:
                self.err(e.col or col, e.msg)
        if st.drop_col is not None and len(items) > 1:
            self.err(st.drop_col, "drop must not be combined with other actions (as in OVS)")
        if "vlan_pcp" in st.seen and "vlan_vid" not in st.seen:
            self.err(st.seen["vlan_pcp"][0], "mod_vlan_pcp requires mod_vlan_vid in the same flow "
                     "(the action format sets the PCP only of a tag that mod_vlan_vid pushes)")
        if not (a.output or a.to_host):
            a.drop = 1          # no output: the packet is dropped (OpenFlow), explicit in the record
        return a

    def step(self, st: _ActState, slot: str, rank: int, name: str, col: int) -> None:
        """Record an action kind: reject duplicates and anything out of the fixed order."""
        if slot in st.seen:
            pcol, pname = st.seen[slot]
            if slot == "verdict":
                raise _Bad(f"{name}: a flow has one output (already {pname} at column {pcol}); "
                           "the action format has one output port or the host")
            what = {"vlan_pop": "only one VLAN tag can be popped",
                    "vxlan_decap": "only one VXLAN header can be removed",
                    "vxlan_encap": "only one VXLAN header can be added",
                    "ct": "ct(commit) given twice"}.get(slot, f"{slot} is set twice")
            raise _Bad(f"{name}: {what} (first at column {pcol})")
        if st.last is not None and st.last[0] == _RANK_VERDICT:
            raise _Bad(f"{name} after {st.last[1]}: the output must be the last action")
        if st.last is not None and rank < st.last[0]:
            raise _Bad(f"{name} after {st.last[1]}: cxlnic applies actions in the fixed order "
                       f"{_ORDER_TEXT}, so list {name} before {st.last[1]}")
        st.seen[slot] = (col, name)
        st.last = (rank, name)

    def action(self, item: str, col: int, a, st: _ActState) -> None:
        cut = re.search(r"[:=(]", item)
        name = item[:cut.start()] if cut else item
        kind = cut.group() if cut else ""
        arg = item[cut.end():] if cut else None
        acol = col + cut.end() if cut else col
        if kind == "(":
            if not item.endswith(")"):
                raise _Bad(f"{name}: unexpected text after ')'", col + item.rindex(")") + 1)
            arg = arg[:-1]
        label = f"{name}{kind}{arg}" if kind == ":" and name in ("output", "controller") else name

        if name.isdigit() and not kind:
            self.output(item, col, col, a, st, item)
        elif name == "output":
            if kind == "(" or not arg:
                raise _Bad("output needs a port: output:N (0..255) or output:LOCAL")
            self.output(arg, acol, col, a, st, label)
        elif name.lower() in ("local", "controller") and not kind:
            self.step(st, "verdict", _RANK_VERDICT, name, col)
            a.to_host = 1
        elif name == "controller":    # controller:max_len / controller(...): arguments ignored
            self.step(st, "verdict", _RANK_VERDICT, label, col)
            a.to_host = 1
        elif name == "drop":
            self.no_arg(name, kind)
            st.drop_col = col
            a.drop = 1
        elif name in ("strip_vlan", "pop_vlan"):
            self.no_arg(name, kind)
            self.step(st, "vlan_pop", _RANK_POP, name, col)
            a.vlan_pop = 1
        elif name == "mod_vlan_vid":
            arg = self.need_arg(name, kind, arg, "mod_vlan_vid:N")
            vid = self.arg_value(lambda v: _uint(v, name, _U16), arg, acol)
            if vid > 0xFFF:
                raise _Bad(f"mod_vlan_vid {arg} out of range 0..4095", acol)
            self.step(st, "vlan_vid", _RANK_SET, name, col)
            a.vlan_set, a.vlan_vid = 1, vid
        elif name == "mod_vlan_pcp":
            arg = self.need_arg(name, kind, arg, "mod_vlan_pcp:N")
            pcp = self.arg_value(lambda v: _uint(v, name, 7), arg, acol)
            self.step(st, "vlan_pcp", _RANK_SET, name, col)
            a.vlan_pcp = pcp
        elif name == "set_field":
            value, arrow, target = self.need_arg(name, kind, arg, "set_field:VALUE->FIELD").rpartition("->")
            if not arrow:
                raise _Bad("set_field: expected set_field:VALUE->FIELD", acol)
            tcol = acol + len(value) + 2
            if target in ("ipv6_src", "ipv6_dst"):
                raise _Bad(f"set_field ->{target}: IPv6 rewrites are not supported by the action format",
                           tcol)
            slot = _SET_FIELDS.get(target)
            if slot is None:
                hint = "; use mod_vlan_vid" if target in ("vlan_vid", "vlan_tci") else ""
                raise _Bad(f"set_field: field {target!r} cannot be set{hint} "
                           f"(settable: {', '.join(_SET_FIELDS)})", tcol)
            if "/" in value:
                raise _Bad(f"set_field ->{target}: masked set_field is not supported", acol)
            self.set_field(slot, target, value, acol, col, a, st, f"set_field ->{target}")
        elif name in _MOD_FORMS:
            slot = _MOD_FORMS[name]
            arg = self.need_arg(name, kind, arg, f"{name}:VALUE")
            self.set_field(slot, slot, arg, acol, col, a, st, name)
        elif name == "ct":
            self.ct(kind, arg, col, acol, st, a)
        elif name == "vxlan_decap":
            self.no_arg(name, kind)
            self.step(st, "vxlan_decap", _RANK_DECAP, name, col)
            a.vxlan_decap = 1
        elif name == "vxlan_encap":
            if kind != "(":
                raise _Bad("vxlan_encap needs arguments: vxlan_encap(vni=N,eth_src=MAC,eth_dst=MAC,"
                           "ip_src=A.B.C.D,ip_dst=A.B.C.D[,udp_src=N])")
            self.encap(arg, acol, col, a, st)
        elif name.lower() in _UNSUPPORTED_PORTS and not kind:
            raise _Bad(f"output to {name} is not supported (the action format outputs to one numbered "
                       "port or to the host)")
        elif name in _OVS_ACTIONS_NOT_SUPPORTED:
            raise _Bad(f"action {name!r} is not supported by the cxlnic action format; "
                       f"supported: {', '.join(ACTIONS)}")
        else:
            raise _Bad(f"unknown action {name!r}; supported: {', '.join(ACTIONS)}")

    @staticmethod
    def no_arg(name: str, kind: str) -> None:
        if kind:
            raise _Bad(f"{name} takes no argument")

    @staticmethod
    def need_arg(name: str, kind: str, arg, form: str) -> str:
        if kind not in (":", "=") or not arg:
            raise _Bad(f"{name} needs a value: {form}")
        return arg

    @staticmethod
    def arg_value(fn, v: str, col: int):
        try:
            return fn(v)
        except _Bad as e:
            raise _Bad(e.msg, e.col or col) from None

    def output(self, port: str, pcol: int, col: int, a, st: _ActState, label: str) -> None:
        if port.upper() in ("LOCAL", "CONTROLLER"):
            self.step(st, "verdict", _RANK_VERDICT, label, col)
            a.to_host = 1
            return
        if port.lower() in _UNSUPPORTED_PORTS:
            raise _Bad(f"output to {port} is not supported (the action format outputs to one numbered "
                       "port or to the host)", pcol)
        if not port.isdigit():
            raise _Bad(f"output: bad port {port!r} (a number 0..255, LOCAL or CONTROLLER)", pcol)
        if int(port) > 0xFF:
            raise _Bad(f"output port {port} out of range 0..255 (the action format has an 8-bit port)", pcol)
        self.step(st, "verdict", _RANK_VERDICT, label, col)
        a.output, a.out_port = 1, int(port)

    def set_field(self, slot: str, target: str, value: str, vcol: int, col: int, a, st, label: str) -> None:
        dl_type, proto = self.get("dl_type"), self.get("nw_proto")
        if slot in ("eth_src", "eth_dst"):
            v = self.arg_value(lambda x: _mac(x, label), value, vcol)
            self.step(st, slot, _RANK_SET, label, col)
            if slot == "eth_src":
                a.set_eth_src, a.eth_src = 1, v
            else:
                a.set_eth_dst, a.eth_dst = 1, v
        elif slot in ("ip_src", "ip_dst"):
            v = self.arg_value(lambda x: _ipv4(x, label), value, vcol)
            if dl_type != ETH_IP:
                self.err(col, f"{label} requires a match on ip (dl_type=0x0800): "
                         "the action rewrites an IPv4 header")
            self.step(st, slot, _RANK_SET, label, col)
            if slot == "ip_src":
                a.set_ipv4_src, a.ipv4_src = 1, v
            else:
                a.set_ipv4_dst, a.ipv4_dst = 1, v
        else:
            v = self.arg_value(lambda x: _uint(x, label, _U16), value, vcol)
            self.check_l4(target, proto, col, label)
            self.step(st, slot, _RANK_SET, label, col)
            if slot == "tp_src":
                a.set_tp_src, a.tp_src = 1, v
            else:
                a.set_tp_dst, a.tp_dst = 1, v

    def ct(self, kind: str, arg, col: int, acol: int, st: _ActState, a) -> None:
        if kind != "(":
            raise _Bad("only ct(commit) is supported (conntrack state is looked up before matching)")
        words = [(m.group(), acol + m.start()) for m in _TOKEN_RE.finditer(arg)]
        for w, wcol in words:
            key = w.partition("=")[0].partition("(")[0]
            if w == "commit":
                continue
            if key == "zone":
                raise _Bad("ct: zone is not supported (cxlnic has one conntrack zone)", wcol)
            if key == "nat":
                raise _Bad("ct: nat is not supported", wcol)
            if key == "table":
                raise _Bad("ct: table= (recirculation) is not supported; conntrack state is looked up "
                           "before matching", wcol)
            raise _Bad(f"ct: argument {w!r} is not supported (only ct(commit))", wcol)
        if [w for w, _ in words] != ["commit"]:
            raise _Bad("only ct(commit) is supported (conntrack state is looked up before matching)")
        self.step(st, "ct", _RANK_CT, "ct(commit)", col)
        a.ct_commit = 1

    def encap(self, arg: str, acol: int, col: int, a, st: _ActState) -> None:
        got: dict[str, tuple[int, int]] = {}
        bad = False
        for m in _TOKEN_RE.finditer(arg):
            w, wcol = m.group(), acol + m.start()
            key, eq, v = w.partition("=")
            try:
                if key not in _ENCAP_ARGS:
                    raise _Bad(f"vxlan_encap: unknown argument {key!r} (arguments: {', '.join(_ENCAP_ARGS)})")
                if not eq or not v:
                    raise _Bad(f"vxlan_encap: {key} needs a value ({key}=...)")
                if key in got:
                    raise _Bad(f"vxlan_encap: {key} given twice (first at column {got[key][1]})")
                vcol = wcol + len(key) + 1
                if key == "vni":
                    val = self.arg_value(lambda x: _uint(x, "vxlan_encap vni", 0xFFFFFF), v, vcol)
                elif key in ("eth_src", "eth_dst"):
                    val = self.arg_value(lambda x, k=key: _mac(x, f"vxlan_encap {k}"), v, vcol)
                elif key in ("ip_src", "ip_dst"):
                    val = self.arg_value(lambda x, k=key: _ipv4(x, f"vxlan_encap {k}"), v, vcol)
                else:
                    val = self.arg_value(lambda x: _uint(x, "vxlan_encap udp_src", _U16), v, vcol)
                got[key] = (val, wcol)
            except _Bad as e:
                self.err(e.col or wcol, e.msg)
                bad = True
        missing = [k for k in _ENCAP_ARGS[:-1] if k not in got]
        if missing and not bad:
            raise _Bad(f"vxlan_encap: missing {', '.join(missing)} "
                       "(vxlan_encap(vni=N,eth_src=MAC,eth_dst=MAC,ip_src=A.B.C.D,ip_dst=A.B.C.D[,udp_src=N]))")
        self.step(st, "vxlan_encap", _RANK_ENCAP, "vxlan_encap", col)
        if bad or missing:
            return
        a.vxlan_encap = 1
        a.encap_vni = got["vni"][0]
        a.encap_eth_src, a.encap_eth_dst = got["eth_src"][0], got["eth_dst"][0]
        a.encap_ip_src, a.encap_ip_dst = got["ip_src"][0], got["ip_dst"][0]
        a.encap_udp_src = got.get("udp_src", (DEFAULT_ENCAP_UDP_SRC,))[0]


# -- public API ------------------------------------------------------------------

def parse_rules(text: str, filename: str = "<rules>") -> list[Rule]:
    """Parse a rules file's text into Rules, one per flow line, in file order.

    Each Rule has ``priority``, ``match`` (RuleEntry record: ``valid=1``,
    ``priority``, match fields, ``owner``/``tenant_care`` from ``tun_id``;
    ``action`` and ``counter`` 0), ``actions`` (ActionEntry record, exactly
    one of ``output``/``to_host``/``drop`` set), ``text`` (the line without
    comment and surrounding blanks), ``line`` (1-based) and ``source``
    (``filename``).  Raises :class:`RuleSyntaxError` with every error of the
    file if there is any; then no rule is returned.
    """
    errs: list[tuple[int, int, str]] = []
    rules: list[Rule] = []
    for lineno, raw in enumerate(text.split("\n"), 1):    # lines as editors count them
        body = raw.split("#", 1)[0]
        stripped = body.strip()
        if not stripped:
            continue
        ln = _Line(lineno, errs)
        before = len(errs)
        m = _ACTIONS_RE.search(body)
        match_part = body if m is None else body[:m.start()]
        for t in _TOKEN_RE.finditer(match_part):
            ln.match_token(t.group(), t.start() + 1)
        if m is None:
            ln.err(len(body) - len(body.lstrip()) + 1,
                   "flow has no actions= (every flow needs an action list; actions=drop drops)")
            continue
        ln.check_prereqs()
        actions = ln.parse_actions(body[m.end():], m.end())
        if len(errs) == before:
            match = ln.build_match()
            rules.append(Rule(priority=match.priority, match=match, actions=actions, text=stripped,
                              line=lineno, source=filename))
    if errs:
        raise RuleSyntaxError([(filename, ln_, col, msg) for ln_, col, msg in errs])
    return rules


def load_rules(path) -> list[Rule]:
    """:func:`parse_rules` of the UTF-8 file at ``path`` (errors name it as given)."""
    return parse_rules(Path(path).read_text(encoding="utf-8"), str(path))


def _fmt_addr(field: str, eth_type, ip: int, plen: int) -> str | None:
    if ip == 0 and plen == 0:
        return None
    if eth_type == ETH_IP and plen >= 96 and ip >> 32 == 0xFFFF:
        a = ipaddress.IPv4Address(ip & _U32)
        return f"nw_{field}={a}" if plen == 128 else f"nw_{field}={a}/{plen - 96}"
    a = ipaddress.IPv6Address(ip)
    return f"ipv6_{field}={a}" if plen == 128 else f"ipv6_{field}={a}/{plen}"


def _fmt_port(field: str, value: int, mask: int) -> str | None:
    if mask == _U16:
        return f"{field}={value}"
    if value == 0 and mask == 0:
        return None
    return f"{field}={value:#06x}/{mask:#06x}"


def _fmt_mac(x: int) -> str:
    return ":".join(f"{b:02x}" for b in x.to_bytes(6, "big"))


def _format_match(m) -> list[str]:
    out = [f"priority={m.priority}"]
    et = m.eth_type if m.eth_type_care else None
    if m.eth_type_care:
        proto = m.ip_proto if m.ip_proto_care else None
        short = {v: k for k, v in SHORTHANDS.items()}.get((m.eth_type, proto))
        if short:
            out.append(short)
        else:
            out.append({ETH_IP: "ip", ETH_IPV6: "ipv6", ETH_ARP: "arp"}.get(m.eth_type,
                                                                          f"dl_type={m.eth_type:#06x}"))
            if proto is not None:
                out.append(f"nw_proto={proto}")
    elif m.ip_proto_care:
        out.append(f"nw_proto={m.ip_proto}")
    if m.tenant_care:
        out.append(f"tun_id={m.owner}")
    if m.in_port_care:
        out.append(f"in_port={m.in_port}")
    if m.vlan_care:
        out.append(f"dl_vlan={m.vlan_id}" if m.vlan_valid else "dl_vlan=0xffff")
    if m.ct_state_mask or m.ct_state:
        out.append(f"ct_state={_fmt_flags(m.ct_state, m.ct_state_mask, _CT_STATE_NAMES) or '0/0'}")
    out += filter(None, [_fmt_addr("src", et, m.src_ip, m.src_plen),
                         _fmt_addr("dst", et, m.dst_ip, m.dst_plen),
                         _fmt_port("tp_src", m.src_port, m.src_port_mask),
                         _fmt_port("tp_dst", m.dst_port, m.dst_port_mask)])
    if m.tcp_flags_mask or m.tcp_flags:
        out.append(f"tcp_flags={_fmt_flags(m.tcp_flags, m.tcp_flags_mask, _TCP_FLAG_NAMES) or '0/0'}")
    return out


def _format_actions(a) -> list[str]:
    out = []
    if a.vxlan_decap:
        out.append("vxlan_decap")
    if a.vlan_pop:
        out.append("strip_vlan")
    for flag, value, fmt, name in (
            (a.set_eth_src, a.eth_src, _fmt_mac, "eth_src"), (a.set_eth_dst, a.eth_dst, _fmt_mac, "eth_dst"),
            (a.set_ipv4_src, a.ipv4_src, ipaddress.IPv4Address, "ip_src"),
            (a.set_ipv4_dst, a.ipv4_dst, ipaddress.IPv4Address, "ip_dst"),
            (a.set_tp_src, a.tp_src, str, "tp_src"), (a.set_tp_dst, a.tp_dst, str, "tp_dst")):
        if flag:
            out.append(f"set_field:{fmt(value)}->{name}")
    if a.vlan_set:
        out.append(f"mod_vlan_vid:{a.vlan_vid}")
        if a.vlan_pcp:
            out.append(f"mod_vlan_pcp:{a.vlan_pcp}")
    if a.vxlan_encap:
        out.append(f"vxlan_encap(vni={a.encap_vni},eth_src={_fmt_mac(a.encap_eth_src)},"
                   f"eth_dst={_fmt_mac(a.encap_eth_dst)},ip_src={ipaddress.IPv4Address(a.encap_ip_src)},"
                   f"ip_dst={ipaddress.IPv4Address(a.encap_ip_dst)},udp_src={a.encap_udp_src})")
    if a.ct_commit:
        out.append("ct(commit)")
    if a.output:
        out.append(f"output:{a.out_port}")
    elif a.to_host:
        out.append("controller")
    elif not out:
        out.append("drop")
    return out


def format_rule(rule: Rule) -> str:
    """``rule`` in canonical rule-language syntax (one line, no comment).

    Contract: ``parse_rules(format_rule(r))[0]`` has the same ``priority``,
    ``match`` and ``actions`` records as ``r``, ignoring the match's
    ``action`` and ``counter`` fields (table slots assigned at install).
    A rule with no such text (a record ``parse_rules`` cannot produce, e.g.
    a non-prefix address, both ``output`` and ``to_host``, or no verdict
    flag) raises ``ValueError`` naming the fields that would not survive.
    """
    m, a = rule.match, rule.actions
    if m.priority != rule.priority:
        raise ValueError(f"rule priority {rule.priority} differs from its match record's {m.priority}")
    text = " ".join([",".join(_format_match(m)), "actions=" + ",".join(_format_actions(a))])
    try:
        back = parse_rules(text, "<format_rule>")[0]
    except RuleSyntaxError as e:
        raise ValueError(f"rule has no rule-language form: {text!r} does not parse:\n{e}") from None
    bad = [f.name for f in fields(m) if f.name not in ("action", "counter")
           and getattr(back.match, f.name) != getattr(m, f.name)]
    bad += [f"actions.{f.name}" for f in fields(a) if getattr(back.actions, f.name) != getattr(a, f.name)]
    if bad:
        raise ValueError(f"rule has no rule-language form: {', '.join(bad)} would not survive {text!r}")
    return text
