"""The rule language (OpenFlow ``ovs-ofctl add-flows`` syntax) parser and formatter.

Every expected record below is written by hand from the OpenFlow/OVS meaning
of the text and the RuleEntry/ActionEntry field definitions (IPv4 addresses
IPv4-mapped, prefix length over the 128-bit address, MACs as the big-endian
integer of the wire bytes), never produced by the code under test.
"""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cxlnic.model.match import ACTION, PKEY, RULE, Rule, rule_matches
from cxlnic.model.rulelang import RuleSyntaxError, format_rule, load_rules, parse_rules


def one(text: str) -> Rule:
    rules = parse_rules(text)
    assert len(rules) == 1
    return rules[0]


def match_of(**fields):
    """The expected RuleEntry record: valid, default priority unless given, plus ``fields``."""
    fields.setdefault("priority", 32768)
    fields.setdefault("valid", 1)
    return RULE.new(**fields)


IP = dict(eth_type_care=1, eth_type=0x0800)
IP6 = dict(eth_type_care=1, eth_type=0x86DD)
TCP = dict(IP, ip_proto_care=1, ip_proto=6)
UDP = dict(IP, ip_proto_care=1, ip_proto=17)


# -- the file: lines, comments, defaults ------------------------------------------

def test_minimal_flow_and_defaults():
    r = one("actions=drop")
    assert r.priority == 32768
    assert r.match == match_of()
    assert r.actions == ACTION.new(drop=1)
    assert (r.text, r.line, r.source) == ("actions=drop", 1, "<rules>")


def test_comments_blank_lines_and_line_numbers():
    text = ("# a comment line\n"
            "\n"
            "   \t\n"
            "  priority=10,ip actions=output:1   # trailing comment\n"
            "#priority=11 actions=drop\n"
            "priority=12,arp actions=drop\r\n")
    rules = parse_rules(text, "f.of")
    assert [(r.line, r.priority, r.text, r.source) for r in rules] == [
        (4, 10, "priority=10,ip actions=output:1", "f.of"),
        (6, 12, "priority=12,arp actions=drop", "f.of"),
    ]
    assert rules[0].match == match_of(priority=10, **IP)
    assert rules[1].match == match_of(priority=12, eth_type_care=1, eth_type=0x0806)


def test_empty_file():
    assert parse_rules("") == []
    assert parse_rules("# nothing\n\n") == []


def test_separators_commas_and_whitespace():
    r = one("priority=7 tcp\tnw_dst=10.0.0.1,  tp_dst=22,actions=output:1")
    assert r.match == match_of(priority=7, dst_ip=0xFFFF0A000001, dst_plen=128, dst_port=22,
                               dst_port_mask=0xFFFF, **TCP)
    assert r.actions == ACTION.new(output=1, out_port=1)


def test_load_rules(tmp_path):
    p = tmp_path / "acl.of"
    p.write_text("priority=5,udp,tp_dst=53 actions=output:2\n")
    [r] = load_rules(p)
    assert r.source == str(p) and r.line == 1
    assert r.match == match_of(priority=5, dst_port=53, dst_port_mask=0xFFFF, **UDP)
    p.write_text("ok=1 actions=drop\n")
    with pytest.raises(RuleSyntaxError) as ei:
        load_rules(p)
    assert str(ei.value).startswith(f"{p}:1:1: error: unknown match field 'ok'")


# -- match fields -------------------------------------------------------------------

MATCH_CASES = [
    ("priority=0", dict(priority=0)),
    ("priority=65535", dict(priority=65535)),
    ("priority=0x100", dict(priority=256)),
    ("in_port=7", dict(in_port_care=1, in_port=7)),
    ("in_port=0xff", dict(in_port_care=1, in_port=255)),
    ("dl_type=0x88cc", dict(eth_type_care=1, eth_type=0x88CC)),
    ("dl_type=2048", IP),
    ("ip", IP),
    ("ipv6", IP6),
    ("arp", dict(eth_type_care=1, eth_type=0x0806)),
    ("tcp", TCP),
    ("udp", UDP),
    ("icmp", dict(IP, ip_proto_care=1, ip_proto=1)),
    ("tcp6", dict(IP6, ip_proto_care=1, ip_proto=6)),
    ("udp6", dict(IP6, ip_proto_care=1, ip_proto=17)),
    ("icmp6", dict(IP6, ip_proto_care=1, ip_proto=58)),
    ("ip,nw_proto=47", dict(IP, ip_proto_care=1, ip_proto=47)),
    ("dl_type=0x86dd,nw_proto=132", dict(IP6, ip_proto_care=1, ip_proto=132)),
    ("dl_vlan=100", dict(vlan_care=1, vlan_valid=1, vlan_id=100, vlan_id_mask=0xFFF)),
    ("dl_vlan=0", dict(vlan_care=1, vlan_valid=1, vlan_id=0, vlan_id_mask=0xFFF)),
    ("dl_vlan=4095", dict(vlan_care=1, vlan_valid=1, vlan_id=4095, vlan_id_mask=0xFFF)),
    ("dl_vlan=0xffff", dict(vlan_care=1)),
    ("ip,nw_src=10.1.0.0/16", dict(IP, src_ip=0xFFFF0A010000, src_plen=112)),
    ("ip,nw_dst=192.168.1.7", dict(IP, dst_ip=0xFFFFC0A80107, dst_plen=128)),
    ("ip,ip_src=10.1.2.3/255.255.0.0", dict(IP, src_ip=0xFFFF0A010000, src_plen=112)),
    ("ip,ip_dst=172.16.5.4/12", dict(IP, dst_ip=0xFFFFAC100000, dst_plen=108)),
    ("ip,nw_src=0.0.0.0/0", dict(IP, src_ip=0xFFFF00000000, src_plen=96)),
    ("ip,nw_dst=1.2.3.4/255.255.255.255", dict(IP, dst_ip=0xFFFF01020304, dst_plen=128)),
    ("ip,nw_dst=1.2.3.4/0.0.0.0", dict(IP, dst_ip=0xFFFF00000000, dst_plen=96)),
    ("ipv6,ipv6_src=2001:db8::/32", dict(IP6, src_ip=0x20010DB8 << 96, src_plen=32)),
    ("ipv6,ipv6_dst=fe80::1", dict(IP6, dst_ip=0xFE80 << 112 | 1, dst_plen=128)),
    ("ipv6,ipv6_src=2001:db8:ffff::1/ffff:ffff::", dict(IP6, src_ip=0x20010DB8 << 96, src_plen=32)),
    ("ipv6,ipv6_dst=::/0", dict(IP6)),
    ("tcp,tp_dst=80", dict(TCP, dst_port=80, dst_port_mask=0xFFFF)),
    ("udp,tp_src=0x1000/0xf000", dict(UDP, src_port=0x1000, src_port_mask=0xF000)),
    ("tcp,tcp_dst=0x1234/0xff00", dict(TCP, dst_port=0x1200, dst_port_mask=0xFF00)),
    ("tcp,tcp_src=65535", dict(TCP, src_port=65535, src_port_mask=0xFFFF)),
    ("udp6,udp_src=53", dict(IP6, ip_proto_care=1, ip_proto=17, src_port=53, src_port_mask=0xFFFF)),
    ("udp,udp_dst=0/0", dict(UDP)),
    ("tcp,tcp_flags=+syn-ack", dict(TCP, tcp_flags=0x02, tcp_flags_mask=0x12)),
    ("tcp,tcp_flags=0x02/0x12", dict(TCP, tcp_flags=0x02, tcp_flags_mask=0x12)),
    ("tcp,tcp_flags=+fin+rst+psh+urg+ece+cwr", dict(TCP, tcp_flags=0xED, tcp_flags_mask=0xED)),
    ("tcp,tcp_flags=-syn-fin", dict(TCP, tcp_flags=0, tcp_flags_mask=0x03)),
    ("tcp,tcp_flags=0x11", dict(TCP, tcp_flags=0x11, tcp_flags_mask=0xFF)),
    ("tcp,tcp_flags=0x13/0x12", dict(TCP, tcp_flags=0x12, tcp_flags_mask=0x12)),     # value & mask, as OVS
    ("tcp6,tcp_flags=+rst", dict(IP6, ip_proto_care=1, ip_proto=6, tcp_flags=0x04, tcp_flags_mask=0x04)),
    ("tun_id=5001", dict(tenant_care=1, owner=5001)),
    ("tun_id=0", dict(tenant_care=1, owner=0)),
    ("tun_id=0x10/0xffffff", dict(tenant_care=1, owner=0x10)),
    ("tun_id=0xffffff/0xffffffffffffffff", dict(tenant_care=1, owner=0xFFFFFF)),
    ("ct_state=+trk+est-new", dict(ct_state=0x22, ct_state_mask=0x23)),
    ("ct_state=+rel+rpl-inv", dict(ct_state=0x0C, ct_state_mask=0x1C)),
    ("ct_state=-trk", dict(ct_state=0, ct_state_mask=0x20)),
    ("ct_state=0x21/0x21", dict(ct_state=0x21, ct_state_mask=0x21)),
    ("ct_state=0x22", dict(ct_state=0x22, ct_state_mask=0x3F)),
    ("ct_state=0x23/0x21", dict(ct_state=0x21, ct_state_mask=0x21)),
    ("table=0,ip", IP),
    # prerequisites are checked on the whole flow: order does not matter (as in OVS)
    ("nw_src=10.0.0.0/8,ip", dict(IP, src_ip=0xFFFF0A000000, src_plen=104)),
    ("tp_dst=443,nw_proto=6,dl_type=0x0800", dict(TCP, dst_port=443, dst_port_mask=0xFFFF)),
]


@pytest.mark.parametrize("text, fields", MATCH_CASES, ids=[c[0] for c in MATCH_CASES])
def test_match_field(text, fields):
    r = one(f"{text} actions=drop")
    assert r.match == match_of(**fields)
    assert r.priority == r.match.priority


def test_everything_on_one_line():
    r = one("priority=300,in_port=2,dl_vlan=12,tun_id=77,tcp,nw_src=10.9.0.0/16,nw_dst=10.8.7.6,"
            "tp_src=1024/0xfc00,tp_dst=80,tcp_flags=+syn,ct_state=+trk+new actions=drop")
    assert r.match == match_of(
        priority=300, in_port_care=1, in_port=2, vlan_care=1, vlan_valid=1, vlan_id=12, vlan_id_mask=0xFFF,
        tenant_care=1, owner=77, src_ip=0xFFFF0A090000, src_plen=112, dst_ip=0xFFFF0A080706, dst_plen=128,
        src_port=0x0400, src_port_mask=0xFC00, dst_port=80, dst_port_mask=0xFFFF,
        tcp_flags=0x02, tcp_flags_mask=0x02, ct_state=0x21, ct_state_mask=0x21, **TCP)


# -- actions -------------------------------------------------------------------------

ENC = dict(vxlan_encap=1, encap_vni=5000, encap_eth_src=0x020000000001, encap_eth_dst=0x020000000002,
           encap_ip_src=0xC0000201, encap_ip_dst=0xC0000202)
ENC_TEXT = ("vxlan_encap(vni=5000,eth_src=02:00:00:00:00:01,eth_dst=02:00:00:00:00:02,"
            "ip_src=192.0.2.1,ip_dst=192.0.2.2")

ACTION_CASES = [
    # (match part, action list, expected ActionEntry fields)
    ("ip", "output:3", dict(output=1, out_port=3)),
    ("ip", "output=4", dict(output=1, out_port=4)),
    ("ip", "5", dict(output=1, out_port=5)),
    ("ip", "output:255", dict(output=1, out_port=255)),
    ("ip", "output:0", dict(output=1, out_port=0)),
    ("ip", "drop", dict(drop=1)),
    ("ip", "", dict(drop=1)),
    ("ip", "controller", dict(to_host=1)),
    ("ip", "controller:1500", dict(to_host=1)),
    ("ip", "controller(reason=no_match,max_len=128)", dict(to_host=1)),
    ("ip", "LOCAL", dict(to_host=1)),
    ("ip", "output:LOCAL", dict(to_host=1)),
    ("ip", "output:CONTROLLER", dict(to_host=1)),
    ("ip", "mod_vlan_vid:100,output:1", dict(vlan_set=1, vlan_vid=100, output=1, out_port=1)),
    ("ip", "mod_vlan_vid:7,mod_vlan_pcp:5,output:1", dict(vlan_set=1, vlan_vid=7, vlan_pcp=5, output=1,
                                                           out_port=1)),
    ("ip", "mod_vlan_pcp:7,mod_vlan_vid:4095,output:1", dict(vlan_set=1, vlan_vid=4095, vlan_pcp=7, output=1,
                                                              out_port=1)),
    ("ip", "strip_vlan,output:1", dict(vlan_pop=1, output=1, out_port=1)),
    ("ip", "pop_vlan,output:2", dict(vlan_pop=1, output=1, out_port=2)),
    ("ip", "strip_vlan,mod_vlan_vid:9,output:2",
     dict(vlan_pop=1, vlan_set=1, vlan_vid=9, output=1, out_port=2)),
    ("ip", "set_field:00:11:22:33:44:55->eth_src,output:1",
     dict(set_eth_src=1, eth_src=0x001122334455, output=1, out_port=1)),
    ("ip", "set_field:0:1:2:3:4:5->dl_dst,output:1", dict(set_eth_dst=1, eth_dst=0x000102030405, output=1,
                                                          out_port=1)),
    ("arp", "mod_dl_src:aa:bb:cc:dd:ee:ff,mod_dl_dst:02:00:00:00:00:09,output:1",
     dict(set_eth_src=1, eth_src=0xAABBCCDDEEFF, set_eth_dst=1, eth_dst=0x020000000009,
          output=1, out_port=1)),
    ("ip", "set_field:10.0.0.1->ip_src,output:1", dict(set_ipv4_src=1, ipv4_src=0x0A000001, output=1,
                                                       out_port=1)),
    ("ip", "set_field:1.2.3.4->nw_dst,output:1", dict(set_ipv4_dst=1, ipv4_dst=0x01020304, output=1,
                                                      out_port=1)),
    ("tcp", "mod_nw_src:192.168.0.254,mod_nw_dst:8.8.4.4,output:1",
     dict(set_ipv4_src=1, ipv4_src=0xC0A800FE, set_ipv4_dst=1, ipv4_dst=0x08080404, output=1, out_port=1)),
    ("tcp", "set_field:8080->tp_dst,output:1", dict(set_tp_dst=1, tp_dst=8080, output=1, out_port=1)),
    ("tcp", "set_field:0x50->tcp_src,output:1", dict(set_tp_src=1, tp_src=80, output=1, out_port=1)),
    ("udp", "set_field:53->udp_dst,mod_tp_src:1024,output:1",
     dict(set_tp_dst=1, tp_dst=53, set_tp_src=1, tp_src=1024, output=1, out_port=1)),
    ("udp6", "mod_tp_dst:4789,output:1", dict(set_tp_dst=1, tp_dst=4789, output=1, out_port=1)),
    ("ip", "ct(commit),output:2", dict(ct_commit=1, output=1, out_port=2)),
    ("ip", "ct(commit),controller", dict(ct_commit=1, to_host=1)),
    ("ip", "ct( commit )", dict(ct_commit=1, drop=1)),
    # no output at all: the packet is dropped (OpenFlow), explicit in the record
    ("ip", "mod_vlan_vid:5", dict(vlan_set=1, vlan_vid=5, drop=1)),
    ("ip", "vxlan_decap,output:1", dict(vxlan_decap=1, output=1, out_port=1)),
    ("ip", ENC_TEXT + "),output:7", dict(ENC, encap_udp_src=49152, output=1, out_port=7)),
    ("ip", ENC_TEXT + ",udp_src=4789),output:7", dict(ENC, encap_udp_src=4789, output=1, out_port=7)),
    ("ip", "vxlan_encap( vni=0x1388 , ip_dst=192.0.2.2, ip_src=192.0.2.1, eth_dst=02:00:00:00:00:02,"
           " eth_src=02:00:00:00:00:01 ) 7", dict(ENC, encap_udp_src=49152, output=1, out_port=7)),
    ("tcp", "vxlan_decap,strip_vlan,mod_dl_src:02:00:00:00:00:0a,mod_nw_dst:10.0.0.2,mod_tp_dst:80,"
            "mod_vlan_vid:3,mod_vlan_pcp:1," + ENC_TEXT + "),ct(commit),output:9",
     dict(ENC, vxlan_decap=1, vlan_pop=1, set_eth_src=1, eth_src=0x02000000000A, set_ipv4_dst=1,
          ipv4_dst=0x0A000002, set_tp_dst=1, tp_dst=80, vlan_set=1, vlan_vid=3, vlan_pcp=1,
          encap_udp_src=49152, ct_commit=1, output=1, out_port=9)),
]


@pytest.mark.parametrize("match, actions, fields", ACTION_CASES,
                         ids=[c[1] or "<empty>" for c in ACTION_CASES])
def test_action(match, actions, fields):
    r = one(f"{match} actions={actions}")
    assert r.actions == ACTION.new(**fields)


# -- errors -----------------------------------------------------------------------

ERROR_CASES = [
    # (line, column, a part of the message); columns counted by hand, 1-based
    ("nw_src=10.0.0.1 actions=drop", 1, "nw_src requires ip (dl_type=0x0800)"),
    ("ipv6,nw_src=10.0.0.1 actions=drop", 6, "nw_src requires ip (dl_type=0x0800), but the flow matches "
                                             "dl_type=0x86dd"),
    ("ip,ipv6_dst=::1 actions=drop", 4, "ipv6_dst requires ipv6 (dl_type=0x86dd)"),
    ("arp,nw_proto=6 actions=drop", 5, "nw_proto requires ip or ipv6"),
    ("ip,tp_dst=80 actions=drop", 4, "tp_dst requires tcp or udp (nw_proto=6 or 17)"),
    ("udp,tcp_dst=80 actions=drop", 5, "tcp_dst requires tcp (nw_proto=6), but the flow matches nw_proto=17"),
    ("tcp,udp_src=80 actions=drop", 5, "udp_src requires udp (nw_proto=17)"),
    ("udp,tcp_flags=+syn actions=drop", 5, "tcp_flags requires tcp (nw_proto=6)"),
    ("ip,nw_src=10.0.0.0/255.0.255.0 actions=drop", 11, "non-contiguous mask 255.0.255.0 is not supported by "
                                                        "the CAM format"),
    ("ipv6,ipv6_src=2001::/ffff::ffff actions=drop", 15, "non-contiguous mask"),
    ("ip,nw_src=10.0.0.0/33 actions=drop", 11, "prefix length 33 out of range 0..32"),
    ("ipv6,ipv6_dst=::/129 actions=drop", 15, "prefix length 129 out of range 0..128"),
    ("ip,nw_src=10.0.0.256 actions=drop", 11, "bad IPv4 address '10.0.0.256'"),
    ("ipv6,ipv6_src=2001:::1 actions=drop", 15, "bad IPv6 address"),
    ("dl_src=00:11:22:33:44:55 actions=drop", 1, "dl_src is not matched by cxlnic"),
    ("foo=1 actions=drop", 1, "unknown match field 'foo'; supported fields: priority, in_port"),
    ("ip,nw_src actions=drop", 4, "nw_src needs a value"),
    ("ip,nw_src= actions=drop", 11, "nw_src: missing value"),
    ("tcp,tp_dst=80,tp_dst=81 actions=drop", 15, "duplicate field: tp_dst given twice (first at column 5)"),
    ("ip,nw_src=1.2.3.4,ip_src=1.2.3.4 actions=drop", 19, "ip_src sets the same field as nw_src"),
    ("tcp,nw_proto=6 actions=drop", 5, "nw_proto sets the same field as tcp (first at column 1)"),
    ("ip,dl_type=0x0800 actions=drop", 4, "dl_type sets the same field as ip"),
    ("priority=1,priority=2 actions=drop", 12, "priority given twice"),
    ("priority=65536 actions=drop", 10, "priority 65536 out of range 0..65535"),
    ("priority=high actions=drop", 10, "expected a decimal or 0x hex number, got 'high'"),
    ("in_port=256 actions=drop", 9, "in_port 256 out of range 0..255"),
    ("in_port=LOCAL actions=drop", 9, "in_port=LOCAL is not supported"),
    ("dl_vlan=4096 actions=drop", 9, "dl_vlan 4096 out of range 0..4095"),
    ("tun_id=0x1000000 actions=drop", 8, "24-bit VXLAN VNI"),
    ("tun_id=5/0xff actions=drop", 8, "only an exact match (mask 0xffffff)"),
    ("ct_state=+trk+snat actions=drop", 10, "flag 'snat' is not supported"),
    ("ct_state=+foo actions=drop", 10, "unknown flag 'foo' (flags: new, est, rel, rpl, inv, trk)"),
    ("ct_state=+trk-trk actions=drop", 10, "flag 'trk' given twice"),
    ("ct_state=0x40/0x40 actions=drop", 10, "bits 0x40 are not supported"),
    ("ct_state=0x80 actions=drop", 10, "bits 0x80 are not supported"),
    ("tcp,tcp_flags=+ns actions=drop", 15, "flag 'ns' is not supported"),
    ("tcp,tcp_flags=syn actions=drop", 15, "expected a decimal or 0x hex number"),
    ("table=1,ip actions=drop", 7, "only table=0"),
    ("ip", 1, "flow has no actions="),
    ("   tcp,tp_dst=80", 4, "flow has no actions="),
    ("ip actions=output:256", 19, "output port 256 out of range 0..255"),
    ("ip actions=output:x", 19, "output: bad port 'x'"),
    ("ip actions=output:1,output:2", 21, "a flow has one output (already output:1 at column 12)"),
    ("ip actions=output:1,controller", 21, "a flow has one output"),
    ("ip actions=drop,output:1", 12, "drop must not be combined with other actions"),
    ("ip actions=mod_vlan_vid:3,drop", 27, "drop must not be combined with other actions"),
    ("ip actions=output:1,mod_vlan_vid:5", 21,
     "mod_vlan_vid after output:1: the output must be the last action"),
    ("ip actions=ct(commit),strip_vlan,output:1", 23, "strip_vlan after ct(commit): cxlnic applies actions "
                                                      "in the fixed order"),
    ("ip actions=mod_vlan_vid:5,strip_vlan,output:1", 27, "list strip_vlan before mod_vlan_vid"),
    ("ip actions=strip_vlan,vxlan_decap,output:1", 23, "list vxlan_decap before strip_vlan"),
    ("ip actions=strip_vlan,strip_vlan,output:1", 23, "only one VLAN tag can be popped"),
    ("ip actions=mod_vlan_vid:1,mod_vlan_vid:2", 27, "vlan_vid is set twice"),
    ("ip actions=mod_nw_dst:1.1.1.1,set_field:2.2.2.2->ip_dst", 31,
     "ip_dst is set twice (first at column 12)"),
    ("ip actions=mod_vlan_pcp:3,output:1", 12, "mod_vlan_pcp requires mod_vlan_vid"),
    ("ip actions=mod_vlan_vid:4096", 25, "mod_vlan_vid 4096 out of range 0..4095"),
    ("ip actions=mod_vlan_vid:1,mod_vlan_pcp:8", 40, "mod_vlan_pcp 8 out of range 0..7"),
    ("ip actions=mod_vlan_vid", 12, "mod_vlan_vid needs a value"),
    ("ip actions=strip_vlan:1", 12, "strip_vlan takes no argument"),
    ("ipv6 actions=set_field:::1->ipv6_src", 29, "IPv6 rewrites are not supported by the action format"),
    ("ipv6 actions=mod_nw_src:1.2.3.4", 14, "mod_nw_src requires a match on ip (dl_type=0x0800)"),
    ("ip actions=set_field:9.9.9.9->ip_dst", None, None),  # (valid: control case)
    ("ip actions=mod_tp_dst:53", 12, "mod_tp_dst requires tcp or udp (nw_proto=6 or 17)"),
    ("tcp actions=set_field:53->udp_dst", 13, "set_field ->udp_dst requires udp (nw_proto=17), but the flow "
                                              "matches nw_proto=6"),
    ("ip actions=set_field:1.2.3.0/24->ip_dst", 22, "masked set_field is not supported"),
    ("ip actions=set_field:5->vlan_vid", 25, "field 'vlan_vid' cannot be set; use mod_vlan_vid"),
    ("ip actions=set_field:5", 22, "expected set_field:VALUE->FIELD"),
    ("ip actions=set_field:00:11:22:33:44->eth_src", 22, "bad MAC address '00:11:22:33:44'"),
    ("ip actions=mod_nw_src:1.2.3", 23, "bad IPv4 address '1.2.3'"),
    ("tcp actions=mod_tp_src:65536", 24, "mod_tp_src 65536 out of range 0..65535"),
    ("ip actions=ct(commit,zone=5)", 22, "ct: zone is not supported"),
    ("ip actions=ct(table=1)", 15, "ct: table= (recirculation) is not supported"),
    ("ip actions=ct(commit,nat(src=1.1.1.1))", 22, "ct: nat is not supported"),
    ("ip actions=ct", 12, "only ct(commit) is supported"),
    ("ip actions=ct()", 12, "only ct(commit) is supported"),
    ("ip actions=ct(commit),ct(commit)", 23, "ct(commit) given twice"),
    ("ip actions=ct(commit)x", 22, "ct: unexpected text after ')'"),
    ("ip actions=vxlan_encap(vni=1)", 12, "vxlan_encap: missing eth_src, eth_dst, ip_src, ip_dst"),
    ("ip actions=vxlan_encap", 12, "vxlan_encap needs arguments"),
    ("ip actions=" + ENC_TEXT + ",ttl=3)", 119, "vxlan_encap: unknown argument 'ttl'"),
    ("ip actions=" + ENC_TEXT + ",vni=3)", 119, "vxlan_encap: vni given twice (first at column 24)"),
    ("ip actions=vxlan_encap(vni=0x1000000,eth_src=1:2:3:4:5:6,eth_dst=1:2:3:4:5:6,ip_src=1.2.3.4,"
     "ip_dst=1.2.3.4)", 28, "vxlan_encap vni 0x1000000 out of range 0..16777215"),
    ("ip actions=vxlan_encap(vni=1,eth_src=1:2:3:4:5:6,eth_dst=1:2:3:4:5,ip_src=1.2.3.4,ip_dst=1.2.3.4)",
     58, "vxlan_encap eth_dst: bad MAC address"),
    ("ip actions=vxlan_decap:1", 12, "vxlan_decap takes no argument"),
    ("ip actions=output:1,vxlan_decap", 21, "vxlan_decap after output:1"),
    ("ip actions=resubmit:1", 12, "action 'resubmit' is not supported by the cxlnic action format"),
    ("ip actions=frobnicate", 12, "unknown action 'frobnicate'; supported: output, drop"),
    ("ip actions=NORMAL", 12, "output to NORMAL is not supported"),
    ("ip actions=output:in_port", 19, "output to in_port is not supported"),
    ("ip actions=output:1)", 20, "unbalanced ')' in the action list"),
    ("ip actions=ct(commit", 14, "unclosed '(' in the action list"),
]


@pytest.mark.parametrize("text, col, msg", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_error(text, col, msg):
    if col is None:
        parse_rules(text)       # the control case parses
        return
    with pytest.raises(RuleSyntaxError) as ei:
        parse_rules("# header\n" + text, "rules.of")
    errs = ei.value.errors
    assert len(errs) == 1, errs
    f, line, c, m = errs[0]
    assert (f, line, c) == ("rules.of", 2, col), errs
    assert msg in m
    assert str(ei.value) == f"rules.of:2:{col}: error: {m}"
    assert isinstance(ei.value, ValueError)


def test_unknown_field_lists_supported_fields():
    with pytest.raises(RuleSyntaxError) as ei:
        parse_rules("nw_tos=4 actions=drop")
    msg = ei.value.errors[0][3]
    for name in ("in_port", "dl_type", "dl_vlan", "nw_src", "ipv6_dst", "nw_proto", "tp_src", "tcp_flags",
                 "tun_id", "ct_state", "tcp6"):
        assert name in msg


def test_all_errors_collected_in_file_order():
    text = ("priority=1,ip actions=output:1\n"                    # fine
            "nw_dst=10.0.0.1,dl_src=00:00:00:00:00:01 actions=drop\n"  # two errors
            "\n"
            "tcp,tp_dst=99999 actions=output:1,output:2\n"        # two more
            "ip actions=output:3\n"                               # fine
            "ip,nw_src=1.2.3.4/255.0.255.0\n")                   # bad mask, no actions=
    with pytest.raises(RuleSyntaxError) as ei:
        parse_rules(text, "acl.of")
    e = ei.value
    assert [(f, ln, c) for f, ln, c, _ in e.errors] == [
        ("acl.of", 2, 1), ("acl.of", 2, 17), ("acl.of", 4, 12), ("acl.of", 4, 35),
        ("acl.of", 6, 1), ("acl.of", 6, 11)]
    msgs = [m for *_, m in e.errors]
    assert msgs[0] == "nw_dst requires ip (dl_type=0x0800)"
    assert msgs[1].startswith("dl_src is not matched by cxlnic")
    assert msgs[2] == "tp_dst 99999 out of range 0..65535 (0xffff)"
    assert msgs[3].startswith("output:2: a flow has one output")
    assert msgs[4].startswith("flow has no actions=")
    assert msgs[5].startswith("nw_src: non-contiguous mask")
    lines = str(e).splitlines()
    assert len(lines) == 6
    assert lines[0] == "acl.of:2:1: error: nw_dst requires ip (dl_type=0x0800)"
    assert lines[2] == "acl.of:4:12: error: tp_dst 99999 out of range 0..65535 (0xffff)"


def test_several_errors_on_one_token_line():
    with pytest.raises(RuleSyntaxError) as ei:
        parse_rules("ip actions=" + "vxlan_encap(vni=x,eth_src=1,eth_dst=02:00:00:00:00:02,ip_src=1.2.3.4,"
                    "ip_dst=1.2.3.4)")
    assert [(c, m.split(":")[0]) for _, _, c, m in ei.value.errors] == [
        (28, "vxlan_encap vni"), (38, "vxlan_encap eth_src")]


_WORDS = ["ip", "tcp", "udp6", "nw_src=", "ipv6_dst=", "tp_dst=", "actions=", "output:", "(", ")", ",", "=",
          ":", "->", "/", "set_field:", "ct(", "commit", "vxlan_encap(", "vni=", "1", "0x", "ff", "10.0.0.1",
          "::1", " ", "#", "\n", "drop", "mod_vlan_vid:", "tcp_flags=", "+syn", "-", "ct_state=", "tun_id=",
          "LOCAL", "dl_vlan=", "priority=", "02:00:00:00:00:01", "strip_vlan", "\t", "\r"]


@given(st.lists(st.sampled_from(_WORDS), max_size=25).map("".join))
def test_garbage_gives_rules_or_located_errors(text):
    """Any text parses or raises RuleSyntaxError whose columns lie on their line; never anything else."""
    try:
        rules = parse_rules(text)
    except RuleSyntaxError as e:
        assert e.errors
        lines = text.split("\n")
        for _, line, col, msg in e.errors:
            assert msg and 1 <= col <= len(lines[line - 1]) + 1
        return
    for r in rules:
        back = one(format_rule(r))
        assert (back.match, back.actions) == (r.match, r.actions)


# -- semantics: the records match what OpenFlow says the text matches -------------

def key(tcp_flags=0, ct_state=0, **flow):
    k = PKEY.new(tcp_flags=tcp_flags, ct_state=ct_state)
    for name, v in flow.items():
        setattr(k.flow, name, v)
    return k


def v4(s):
    return 0xFFFF00000000 | int(ipaddress.IPv4Address(s))


def v6(s):
    return int(ipaddress.IPv6Address(s))


def tcp4(src="10.1.2.3", dst="10.9.9.9", sport=1234, dport=80, **kw):
    return key(eth_type=0x0800, ip_proto=6, src_ip=v4(src), dst_ip=v4(dst), src_port=sport, dst_port=dport,
               **kw)


SEMANTIC_CASES = [
    ("tcp,nw_src=10.1.0.0/16,tp_dst=80", tcp4(src="10.1.200.3"), True),
    ("tcp,nw_src=10.1.0.0/16,tp_dst=80", tcp4(src="10.2.0.1"), False),
    ("tcp,nw_src=10.1.0.0/16,tp_dst=80", tcp4(dport=81), False),
    ("udp,nw_src=10.1.0.0/16,tp_dst=80", tcp4(), False),
    ("ip,nw_src=10.1.2.3/255.255.255.0", tcp4(src="10.1.2.200"), True),
    ("ip,nw_src=10.1.2.3/255.255.255.0", tcp4(src="10.1.3.3"), False),
    ("ip,nw_dst=0.0.0.0/0", tcp4(), True),
    ("ip", key(eth_type=0x86DD), False),
    ("ipv6,ipv6_dst=2001:db8::/32", key(eth_type=0x86DD, dst_ip=v6("2001:db8:1::5")), True),
    ("ipv6,ipv6_dst=2001:db8::/32", key(eth_type=0x86DD, dst_ip=v6("2001:db9::5")), False),
    ("in_port=3", key(in_port=3), True),
    ("in_port=3", key(in_port=4), False),
    ("dl_vlan=0xffff", key(vlan_valid=0), True),
    ("dl_vlan=0xffff", key(vlan_valid=1, vlan_id=0), False),
    ("dl_vlan=10", key(vlan_valid=1, vlan_id=10), True),
    ("dl_vlan=10", key(vlan_valid=1, vlan_id=11), False),
    ("dl_vlan=10", key(vlan_valid=0, vlan_id=10), False),
    ("tun_id=0", key(tenant=0), True),
    ("tun_id=0", key(tenant=5), False),
    ("tun_id=5", key(tenant=5), True),
    ("ip", tcp4(tenant=5), True),           # no tun_id: matches every tenant
    ("ct_state=+trk+est-new", key(ct_state=0x22), True),
    ("ct_state=+trk+est-new", key(ct_state=0x23), False),
    ("ct_state=+trk+est-new", key(ct_state=0x02), False),
    ("ct_state=+trk+est-new", key(ct_state=0x26), True),     # rel is a don't-care
    ("tcp,tcp_flags=+syn-ack", tcp4(tcp_flags=0x02), True),
    ("tcp,tcp_flags=+syn-ack", tcp4(tcp_flags=0x12), False),
    ("tcp,tcp_flags=+syn-ack", tcp4(tcp_flags=0x0A), True),
    ("tcp,tp_src=0x1000/0xf000", tcp4(sport=0x1ABC), True),
    ("tcp,tp_src=0x1000/0xf000", tcp4(sport=0x2000), False),
]


@pytest.mark.parametrize("text, k, expect", SEMANTIC_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SEMANTIC_CASES)])
def test_semantics(text, k, expect):
    assert rule_matches(one(f"{text} actions=drop").match, k) is expect


# -- format_rule ----------------------------------------------------------------

FORMAT_CASES = [
    ("tp_dst=80,tcp,nw_dst=10.0.0.9/24,priority=200 actions=output:2",
     "priority=200,tcp,nw_dst=10.0.0.0/24,tp_dst=80 actions=output:2"),
    ("actions=", "priority=32768 actions=drop"),
    ("dl_type=0x0800,nw_proto=17,in_port=3,dl_vlan=0xffff,tun_id=7,tp_src=4096/0xf000 actions=LOCAL",
     "priority=32768,udp,tun_id=7,in_port=3,dl_vlan=0xffff,tp_src=0x1000/0xf000 actions=controller"),
    ("ipv6,nw_proto=132,ipv6_src=2001:DB8:0:0::1 actions=ct(commit)",
     "priority=32768,ipv6,nw_proto=132,ipv6_src=2001:db8::1 actions=ct(commit)"),
    ("ct_state=-new+trk,tcp6,tcp_flags=0x12/0x12 actions=strip_vlan,mod_tp_dst:80,output:1",
     "priority=32768,tcp6,ct_state=-new+trk,tcp_flags=+syn+ack "
     "actions=strip_vlan,set_field:80->tp_dst,output:1"),
    ("dl_type=0x88cc,dl_vlan=5 actions=mod_vlan_pcp:3,mod_vlan_vid:5,mod_dl_dst:02:00:00:00:00:01,1",
     "priority=32768,dl_type=0x88cc,dl_vlan=5 actions=set_field:02:00:00:00:00:01->eth_dst,mod_vlan_vid:5,"
     "mod_vlan_pcp:3,output:1"),
    ("ip actions=vxlan_decap," + ENC_TEXT + ")",
     "priority=32768,ip actions=vxlan_decap," + ENC_TEXT + ",udp_src=49152)"),
]


@pytest.mark.parametrize("text, canonical", FORMAT_CASES, ids=[c[0] for c in FORMAT_CASES])
def test_format_canonical(text, canonical):
    r = one(text)
    assert format_rule(r) == canonical
    back = one(canonical)
    assert (back.priority, back.match, back.actions) == (r.priority, r.match, r.actions)


def test_format_hand_built_rule():
    m = RULE.new(valid=1, priority=5, eth_type_care=1, eth_type=0x86DD, ip_proto_care=1, ip_proto=58,
                 action=17, counter=3)   # table slots are not part of the text
    assert format_rule(Rule(5, m, ACTION.new(to_host=1))) == "priority=5,icmp6 actions=controller"


@pytest.mark.parametrize("match, actions", [
    (match_of(src_ip=0xFFFF0A000001, src_plen=104, **IP), ACTION.new(drop=1)),     # host bits below prefix
    (match_of(src_ip=0x0A000000, src_plen=8, **IP), ACTION.new(drop=1)),           # IPv4 not IPv4-mapped
    (match_of(vlan_care=1, vlan_valid=1, vlan_id=5, vlan_id_mask=0xF), ACTION.new(drop=1)),  # partial VID
    (match_of(owner=3), ACTION.new(drop=1)),                                        # owner without care
    (match_of(ip_proto_care=1, ip_proto=6), ACTION.new(drop=1)),                    # nw_proto without ip
    (match_of(valid=0), ACTION.new(drop=1)),
    (match_of(), ACTION.new(output=1, to_host=1)),
    (match_of(), ACTION.new()),                                                     # no verdict flag
    (match_of(), ACTION.new(drop=1, out_port=3)),                                   # stray value field
    (match_of(), ACTION.new(output=1, vlan_pcp=2)),                                 # pcp without vlan_set
])
def test_format_rejects_records_without_text(match, actions):
    with pytest.raises(ValueError, match="no rule-language form"):
        format_rule(Rule(match.priority, match, actions))


def test_format_rejects_priority_mismatch():
    with pytest.raises(ValueError, match="priority"):
        format_rule(Rule(1, match_of(priority=2), ACTION.new(drop=1)))


# -- round trip: random valid rules built field by field from the spec ------------

_u = st.integers
_mac = _u(0, (1 << 48) - 1)
_ip4 = _u(0, (1 << 32) - 1)


@st.composite
def rules(draw):
    m = RULE.new(valid=1, priority=draw(_u(0, 0xFFFF)))
    eth, proto = draw(st.sampled_from([
        (None, None), (0x0800, None), (0x0800, 6), (0x0800, 17), (0x0800, 1), (0x0800, 47), (0x86DD, None),
        (0x86DD, 6), (0x86DD, 17), (0x86DD, 58), (0x86DD, 132), (0x0806, None), ("other", None)]))
    if eth == "other":
        eth = draw(_u(0, 0xFFFF))
    if eth is not None:
        m.eth_type_care, m.eth_type = 1, eth
    if proto is not None:
        m.ip_proto_care, m.ip_proto = 1, proto
    if draw(st.booleans()):
        m.in_port_care, m.in_port = 1, draw(_u(0, 255))
    vlan = draw(st.sampled_from(["any", "untagged", "vid"]))
    if vlan != "any":
        m.vlan_care = 1
    if vlan == "vid":
        m.vlan_valid, m.vlan_id, m.vlan_id_mask = 1, draw(_u(0, 4095)), 0xFFF
    if draw(st.booleans()):
        m.tenant_care, m.owner = 1, draw(_u(0, 0xFFFFFF))
    if draw(st.booleans()):
        m.ct_state_mask = draw(_u(0, 0x3F))
        m.ct_state = draw(_u(0, 0x3F)) & m.ct_state_mask
    for side in ("src", "dst"):
        if eth == 0x0800 and draw(st.booleans()):
            n = draw(_u(0, 32))
            addr = draw(_ip4) & (((1 << 32) - 1) << (32 - n)) & 0xFFFFFFFF
            setattr(m, f"{side}_ip", 0xFFFF00000000 | addr)
            setattr(m, f"{side}_plen", 96 + n)
        elif eth == 0x86DD and draw(st.booleans()):
            n = draw(_u(0, 128))
            addr = draw(_u(0, (1 << 128) - 1)) & (((1 << 128) - 1) << (128 - n)) & ((1 << 128) - 1)
            setattr(m, f"{side}_ip", addr)
            setattr(m, f"{side}_plen", n)
        if proto in (6, 17) and draw(st.booleans()):
            mask = draw(st.sampled_from([0xFFFF, 0xFF00, 0xFFF0, 0x8000, 0]) | _u(0, 0xFFFF))
            setattr(m, f"{side}_port_mask", mask)
            setattr(m, f"{side}_port", draw(_u(0, 0xFFFF)) & mask)
    if proto == 6 and draw(st.booleans()):
        m.tcp_flags_mask = draw(_u(0, 0xFF))
        m.tcp_flags = draw(_u(0, 0xFF)) & m.tcp_flags_mask

    a = ACTION.new()
    a.vxlan_decap = int(draw(st.booleans()))
    a.vlan_pop = int(draw(st.booleans()))
    if draw(st.booleans()):
        a.set_eth_src, a.eth_src = 1, draw(_mac)
    if draw(st.booleans()):
        a.set_eth_dst, a.eth_dst = 1, draw(_mac)
    if eth == 0x0800:
        if draw(st.booleans()):
            a.set_ipv4_src, a.ipv4_src = 1, draw(_ip4)
        if draw(st.booleans()):
            a.set_ipv4_dst, a.ipv4_dst = 1, draw(_ip4)
    if proto in (6, 17):
        if draw(st.booleans()):
            a.set_tp_src, a.tp_src = 1, draw(_u(0, 0xFFFF))
        if draw(st.booleans()):
            a.set_tp_dst, a.tp_dst = 1, draw(_u(0, 0xFFFF))
    if draw(st.booleans()):
        a.vlan_set, a.vlan_vid, a.vlan_pcp = 1, draw(_u(0, 4095)), draw(_u(0, 7))
    if draw(st.booleans()):
        a.vxlan_encap, a.encap_vni = 1, draw(_u(0, 0xFFFFFF))
        a.encap_eth_src, a.encap_eth_dst = draw(_mac), draw(_mac)
        a.encap_ip_src, a.encap_ip_dst = draw(_ip4), draw(_ip4)
        a.encap_udp_src = draw(_u(0, 0xFFFF))
    a.ct_commit = int(draw(st.booleans()))
    verdict = draw(st.sampled_from(["output", "to_host", "drop"]))
    if verdict == "output":
        a.output, a.out_port = 1, draw(_u(0, 255))
    elif verdict == "to_host":
        a.to_host = 1
    else:
        a.drop = 1
    return Rule(m.priority, m, a)


@given(rules())
def test_round_trip(r):
    text = format_rule(r)
    [back] = parse_rules(text)
    assert back.priority == r.priority
    assert back.match == r.match
    assert back.actions == r.actions
    assert format_rule(back) == text


@given(rules())
def test_round_trip_of_a_whole_file(r):
    """A file of formatted rules parses back rule by rule, with line numbers."""
    rs = [r, Rule(1, match_of(priority=1), ACTION.new(drop=1))]
    back = parse_rules("\n".join(format_rule(x) for x in rs) + "\n", "gen.of")
    assert [(b.line, b.match, b.actions) for b in back] == [(1, r.match, r.actions), (2, rs[1].match,
                                                                                         rs[1].actions)]
