"""Traffic scenarios: checked against scapy's dissectors, the rule parser and the packet parser.

The generator's own bookkeeping (``meta``, ``connections``) is only used to
say what a frame was *meant* to be; whether it *is* that is decided by
scapy (layers, flags, checksums, VNIs), by :func:`parse_rules` (rules text)
and by the golden-model packet parser plus :func:`rule_matches` (the rules
route every conversation to where its peer's packets come from).
"""

from collections import defaultdict
from functools import cache

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw
from scapy.utils import rdpcap

from cxlnic.model.match import rule_matches
from cxlnic.model.rulelang import parse_rules
from cxlnic.model.scenario import SCENARIOS, generate, ports_path, read_pcap, write_pcap

NAMES = sorted(SCENARIOS)
# The traces most tests look at (dissecting them in scapy is the slow part: done once each).
MIXED = ("mixed", 3000, 5)
BAD = ("malformed", 3000, 2)
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
HOST_UNDERLAY = "192.168.0.1"


@cache
def scen(name, packets=1500, seed=7, **kw):
    return generate(name, packets=packets, seed=seed, **kw)


@cache
def dissected(name, packets=1500, seed=7):
    return [Ether(p.frame) for p in scen(name, packets, seed).packets]


def good_indices(s):
    return [i for i in range(len(s.packets)) if i not in s.malformed]


def inner(pkt):
    """The tenant frame: the VXLAN payload, or the frame itself."""
    return pkt[VXLAN].payload if VXLAN in pkt else pkt


def endpoints(pkt):
    """(proto, (src, sport), (dst, dport)) of the innermost IP packet, or None."""
    f = inner(pkt)
    ip = f[IPv6] if IPv6 in f else f[IP] if IP in f else None
    if ip is None:
        return None
    l4 = f[TCP] if TCP in f else f[UDP] if UDP in f else None
    if l4 is not None:
        return (ip.nh if IPv6 in f else ip.proto), (ip.src, l4.sport), (ip.dst, l4.dport)
    return (ip.nh if IPv6 in f else ip.proto), (ip.src, 0), (ip.dst, 0)


# -- basics --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_scenario_generates_parses_and_is_time_ordered(name):
    s = scen(name)
    rules = parse_rules(s.rules_text)                  # raises on any error
    assert len(rules) == s.meta["rules"]
    assert len(s.packets) == 1500
    times = [p.time for p in s.packets]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    assert {p.in_port for p in s.packets} <= {0, 1, 2, 3, 4}
    assert {p.in_port for p in s.packets} >= {0, 1, 2, 3, 4}
    for i, p in enumerate(s.packets):
        if s.malformed.get(i) != "runt":
            assert len(p.frame) >= 60, (i, len(p.frame))
    covered = sorted([i for c in s.connections for i in c.packets] + list(s.malformed))
    assert covered == list(range(len(s.packets)))


def test_unknown_scenario_lists_valid_names():
    with pytest.raises(ValueError) as e:
        generate("bogus", packets=100)
    for n in NAMES:
        assert n in str(e.value)
    assert "bogus" in str(e.value)


def test_deterministic_for_a_seed():
    a = generate("mixed", packets=800, seed=11)
    b = generate("mixed", packets=800, seed=11)
    c = generate("mixed", packets=800, seed=12)
    assert a.packets == b.packets and a.rules_text == b.rules_text and a.meta == b.meta
    assert [p.frame for p in a.packets] != [p.frame for p in c.packets]
    # the rules differ, the traffic does not
    st, ct = generate("static", packets=800, seed=11), generate("conntrack", packets=800, seed=11)
    assert st.packets == ct.packets and st.rules_text != ct.rules_text


def test_packet_and_connection_counts():
    s = generate("conntrack", packets=2000, seed=3, connections=40)
    assert len(s.packets) == 2000 and len(s.connections) == 40 == s.meta["n_connections"]
    assert generate("static", packets=3000, seed=3).meta["n_connections"] == 100     # packets // 30
    with pytest.raises(ValueError, match="cannot hold"):
        generate("static", packets=100, connections=90)


# -- rules -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_rule_table_size_and_cam_overflow(name):
    rules = parse_rules(scen(name).rules_text)
    m = scen(name).meta
    assert m["rules_beyond_cam"] == max(0, len(rules) - 64)
    prios = sorted((r.priority for r in rules), reverse=True)
    beyond = defaultdict(int)
    for p in prios[64:]:
        beyond[p] += 1
    assert m["beyond_cam_priorities"] == dict(beyond)
    if name == "static":
        assert len(rules) <= 64
        assert not any(r.actions.ct_commit or r.match.ct_state_mask for r in rules)
    else:
        assert 100 <= len(rules) <= 300
    if name == "reactive":
        assert not any(r.actions.ct_commit or r.match.ct_state_mask for r in rules)
    if name == "conntrack":
        assert sum(r.actions.ct_commit for r in rules) >= 4 * 8
    # the table-miss drop and the per-tenant defaults sit at the bottom
    assert rules[-1].priority == 0 and rules[-1].actions.drop
    assert any(r.actions.vlan_pop for r in rules) and any(r.actions.vlan_set for r in rules)
    assert any(r.actions.vxlan_encap for r in rules) and any(r.actions.vxlan_decap for r in rules)
    arp = [r for r in rules if r.match.eth_type_care and r.match.eth_type == 0x0806]
    assert arp and all(r.actions.to_host for r in arp)


def test_extra_acl_rules_parse_and_push_rules_past_the_cam():
    base = parse_rules(scen("mixed").rules_text)
    s = generate("mixed", packets=200, acl_rules=300)
    rules = parse_rules(s.rules_text)
    assert len(rules) == len(base) + 300 == s.meta["rules"]
    drops = [r for r in rules if r.priority == 300 and r.actions.drop]
    assert len(drops) >= 300
    assert any(r.match.eth_type == 0x86DD for r in drops)


# -- what the frames are, according to scapy -------------------------------------------------

def test_vxlan_layers_and_tenant_mapping():
    s, pk = scen(*MIXED), dissected(*MIXED)
    vnis = {t["vni"] for t in s.meta["tenants"]}
    hv_ips = set()
    where = defaultdict(set)       # VNI -> {(VM port, VLAN or None)} seen on the other side of conversations
    for c in s.connections:
        up = [pk[i] for i in c.packets if s.packets[i].in_port == 0]
        vm = [(s.packets[i].in_port, pk[i]) for i in c.packets if s.packets[i].in_port != 0]
        for p in up:
            assert p[IP].dst == HOST_UNDERLAY and p[UDP].dport == 4789 and p[UDP].chksum == 0
            assert p[VXLAN].flags & 0x08 and p[VXLAN].vni in vnis
            assert p[UDP].len == len(p[UDP])
            f = inner(p)
            assert isinstance(f, Ether) and (IP in f or IPv6 in f or ARP in f)
            hv_ips.add(p[IP].src)
        for port, p in vm:
            assert VXLAN not in p and not (UDP in p and p[UDP].dport == 4789)
            for vni in {u[VXLAN].vni for u in up}:
                where[vni].add((port, p[Dot1Q].vlan if Dot1Q in p else None))
    assert 2 <= len(hv_ips) <= 4
    # one VM port and VLAN per tenant, and no two tenants share both
    assert all(len(v) == 1 for v in where.values()), where
    assert len({next(iter(v)) for v in where.values()}) == len(where)
    assert any(v != {(p, None)} for v in where.values() for p in range(5))   # some tenants tagged


@pytest.mark.parametrize("which", [MIXED, BAD], ids=lambda w: w[0])
def test_checksums_agree_with_scapy(which):
    s, pk = scen(*which), dissected(*which)
    for i in good_indices(s)[:1000]:
        p = pk[i].copy()
        for layer in (IP, TCP, UDP, ICMP):
            for lyr in p.iterpayloads():
                if isinstance(lyr, layer) and not (layer is UDP and lyr.dport == 4789):
                    lyr.chksum = None
        for lyr in p.iterpayloads():
            if isinstance(lyr, (ICMPv6EchoRequest, ICMPv6EchoReply)):
                lyr.cksum = None
        assert bytes(p) == s.packets[i].frame, (i, pk[i].summary())


def tcp_conversations(s, pk):
    """Group the TCP packets by their unordered endpoint pair, from the bytes alone."""
    groups = defaultdict(list)
    for i in good_indices(s):
        e = endpoints(pk[i])
        if e and e[0] == 6:
            f = inner(pk[i])
            data = len(f[Raw].load) if Raw in f else 0         # not the Ethernet padding
            groups[frozenset((e[1], e[2]))].append((e[1], int(f[TCP].flags), data))
    return groups


def test_tcp_handshake_and_teardown_order():
    s, pk = scen(*MIXED), dissected(*MIXED)
    groups = tcp_conversations(s, pk)
    kinds = [c.kind for c in s.connections if c.proto == 6]
    assert len(groups) == len(kinds)                   # every 5-tuple is one conversation
    seen = defaultdict(int)
    for pkts in groups.values():
        client = pkts[0][0]
        flags = [f & 0x3F for _src, f, _n in pkts]
        assert flags[0] == SYN
        replies = [f for (src, f, _n) in pkts if src != client]
        if not replies:                                # blocked: SYN retransmissions only
            assert set(flags) == {SYN}
            seen["blocked"] += 1
            continue
        assert replies[0] in (SYN | ACK, RST | ACK)
        if replies[0] == RST | ACK:                    # refused
            assert len(pkts) == 2
            seen["refused"] += 1
            continue
        assert flags[1] == SYN | ACK and flags[2] == ACK
        assert all((f & ACK or f == RST) and not f & SYN for f in flags[2:])
        end = next((j for j, f in enumerate(flags) if f & (FIN | RST)), len(flags))
        tail = pkts[end:]
        assert all(not f & (FIN | RST) for f in flags[:end])
        assert all(n == 0 for _s, _f, n in tail)       # nothing but teardown after the first FIN/RST
        if not tail:
            seen["open"] += 1
        elif flags[end] & RST:
            assert len(tail) == 1
            seen["rst"] += 1
        else:
            fins = [src for src, f, _n in tail if f & FIN]
            assert len(fins) == 2 and fins[0] != fins[1] and flags[-1] == ACK
            seen["close"] += 1
    assert seen["close"] == kinds.count("tcp_close") > 0
    assert seen["rst"] == kinds.count("tcp_rst") > 0
    assert seen["open"] == kinds.count("tcp_open") > 0
    assert seen["refused"] == kinds.count("tcp_refused")
    assert seen["blocked"] == kinds.count("tcp_blocked")


def test_traffic_mix():
    s, pk = scen(*MIXED), dissected(*MIXED)
    kinds = defaultdict(int)
    v6_convs = set()
    payloads = []
    for i in good_indices(s):
        f = inner(pk[i])
        kinds["vxlan" if VXLAN in pk[i] else "plain"] += 1
        kinds["vlan"] += Dot1Q in pk[i]
        for layer in (TCP, UDP, ICMP, ARP):
            kinds[layer.__name__] += layer in f
        if IPv6 in f:
            v6_convs.add(frozenset(endpoints(pk[i])[1:]))
        if TCP in f:
            payloads.append(len(f[Raw].load) if Raw in f else 0)
    assert kinds["TCP"] > kinds["UDP"] > kinds["ICMP"] > 0 and kinds["ARP"] > 0
    assert kinds["vxlan"] > 0.3 * len(s.packets) and kinds["plain"] > 0.3 * len(s.packets)
    assert kinds["vlan"] > 0
    assert 0.04 < len(v6_convs) / len(s.connections) < 0.2
    assert max(payloads) == 1400 and min(payloads) == 0
    assert len(s.malformed) == 30                      # 1%


def test_idle_gap_lets_flows_age_out():
    s = scen("mixed", 3000, 9)
    times = [p.time for p in s.packets]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    big = max(range(len(gaps)), key=gaps.__getitem__)
    assert gaps[big] > 40.0 and 100.0 < times[-1] < 140.0
    cut = times[big]
    quiet = [c for c in s.connections if s.packets[c.packets[-1]].time <= cut]
    assert len(quiet) > 0.9 * len(s.connections)
    assert any(c.kind == "tcp_open" for c in quiet)
    after = [c for c in s.connections if s.packets[c.packets[-1]].time > cut]
    assert after and any(c.late for c in after) and all(c.late or c.resumed for c in after)


# -- pcap ------------------------------------------------------------------------------------

def test_write_and_read_pcap_round_trip(tmp_path):
    s = scen(*BAD)
    rp, pp = tmp_path / "r.of", tmp_path / "t.pcap"
    s.write(rp, pp)
    assert rp.read_text() == s.rules_text
    back = read_pcap(pp)
    assert len(back) == len(s.packets)
    for a, b in zip(s.packets, back, strict=True):
        assert a.frame == b.frame and a.in_port == b.in_port
        assert abs(a.time - b.time) < 1e-6
    assert [bytes(p) for p in rdpcap(str(pp))] == [p.frame for p in s.packets]   # an independent reader
    ports_path(pp).unlink()
    assert {p.in_port for p in read_pcap(pp)} == {0}
    write_pcap(pp, s.packets[:3])
    ports_path(pp).write_text("1\n2\n")
    with pytest.raises(ValueError, match="2 ports for 3 packets"):
        read_pcap(pp)
    write_pcap(pp, s.packets[:3], ports=False)
    assert not ports_path(pp).exists() and len(read_pcap(pp)) == 3


# -- malformed frames -----------------------------------------------------------------------

def test_malformed_frames_are_malformed():
    s, pk = scen(*BAD), dissected(*BAD)
    assert len(s.malformed) == 150                     # 5%
    by = defaultdict(list)
    for i, k in s.malformed.items():
        by[k].append(i)
    assert len(by["runt"]) > 10 and all(len(s.packets[i].frame) < 60 for i in by["runt"])
    for i in by["truncated"]:                          # IP length says more than the frame carries
        p = pk[i]
        ip = p[IPv6] if IPv6 in p else p[IP]
        claimed = ip.plen + 40 if IPv6 in p else ip.len
        assert claimed > len(ip), p.summary()
    for i in by["truncated_vxlan"]:                    # the inner headers are cut
        f = inner(pk[i])
        assert TCP not in f, f.summary()
        assert IP not in f or f[IP].len > len(f[IP])
    for i in by["bad_vxlan"]:
        assert not pk[i][VXLAN].flags & 0x08
    for i in by["bad_vxlan_len"]:
        u = pk[i][UDP]
        assert u.dport == 4789 and (u.len < 16 or u.len > len(u))
    for i in by["bad_ip_version"]:
        assert pk[i].type == 0x0800 or pk[i][Dot1Q].type == 0x0800
        assert s.packets[i].frame[14 + 4 * (Dot1Q in pk[i])] >> 4 == 6
    for i in by["fragment"]:
        assert pk[i][IP].flags.MF
    runts_cut_in_headers = [i for i in by["runt"] if ARP not in pk[i]]
    assert any(TCP not in pk[i] for i in runts_cut_in_headers)


def test_parser_agrees_on_exception_codes():
    parser = pytest.importorskip("cxlnic.model.parser")
    from cxlnic.hdl.layouts import ExceptionCode as E
    s = scen(*BAD)
    expect = {"runt": E.RUNT, "truncated": E.TRUNCATED, "truncated_vxlan": E.TRUNCATED,
              "bad_vxlan": E.BAD_VXLAN, "bad_vxlan_len": E.TRUNCATED, "bad_ip_version": E.BAD_IP_VERSION,
              "bad_ihl": E.BAD_IP_HEADER, "fragment": E.FRAGMENT, "ipv6_ext": E.UNSUPPORTED,
              "oversize": E.OVERSIZE}
    big = generate("malformed", packets=20_000, seed=2)    # oversize frames are rare
    for sc in (s, big):
        for i, kind in sc.malformed.items():
            if kind in expect:
                p = sc.packets[i]
                assert parser.parse(p.frame, p.in_port).exception == expect[kind], (i, kind)
    assert "oversize" in big.malformed.values()
    for i in good_indices(s):
        p = s.packets[i]
        k = parser.parse(p.frame, p.in_port)
        assert k.exception == E.NONE, (i, Ether(p.frame).summary())


# -- the rules route the traffic ---------------------------------------------------------------

def ct_states(s):
    """A minimal connection tracker: the initiator is +new until its peer answers, then +est;
    the responder is +est+rpl.  ARP is not tracked."""
    out = {}
    for c in s.connections:
        answered = False
        for i, fc in zip(c.packets, c.from_client, strict=True):
            if c.proto == 0:
                out[i] = 0
            elif fc:
                out[i] = 0x20 | (0x02 if answered else 0x01)
            else:
                answered = True
                out[i] = 0x20 | 0x02 | 0x08
    return out


@pytest.mark.parametrize("which", [("static", 1500, 7), ("reactive", 1500, 7), ("conntrack", 1500, 7), MIXED],
                         ids=lambda w: w[0])
def test_rules_deliver_each_conversation_to_its_peer(which):
    parser = pytest.importorskip("cxlnic.model.parser")
    name = which[0]
    s, pk = scen(*which), dissected(*which)
    rules = sorted(parse_rules(s.rules_text), key=lambda r: -r.priority)
    ct = ct_states(s)
    checked = 0
    for c in s.connections:
        sides = {True: [], False: []}
        for i, fc in zip(c.packets, c.from_client, strict=True):
            sides[fc].append(i)
        for fc, mine in sides.items():
            peer = sides[not fc]
            for i in mine:
                p = s.packets[i]
                k = parser.parse(p.frame, p.in_port)
                k.ct_state = ct[i]
                hit = next((r for r in rules if rule_matches(r.match, k)), None)
                assert hit is not None, (i, c.kind)
                a = hit.actions
                what = (name, i, c.kind, hit.text)
                if c.kind == "arp":
                    assert a.to_host, what
                    continue
                if c.kind == "tcp_blocked":
                    assert a.drop, what
                    continue
                assert a.output and not a.drop, what
                if p.in_port == 0:
                    assert a.vxlan_decap and not a.vxlan_encap, what
                    if peer:
                        q = pk[peer[0]]
                        assert a.out_port == s.packets[peer[0]].in_port, what
                        assert bool(a.vlan_set) == (Dot1Q in q), what
                        if Dot1Q in q:
                            assert a.vlan_vid == q[Dot1Q].vlan, what
                else:
                    assert a.vxlan_encap and a.out_port == 0, what
                    assert bool(a.vlan_pop) == (Dot1Q in pk[i]), what
                    if peer:
                        q = pk[peer[0]]
                        assert a.encap_vni == q[VXLAN].vni, what
                        assert a.encap_ip_dst == int.from_bytes(bytes(map(int, q[IP].src.split("."))), "big")
                        assert a.encap_eth_dst == int(q[Ether].src.replace(":", ""), 16), what
                        assert a.encap_ip_src == 0xC0A80001 and q[IP].dst == HOST_UNDERLAY
                    if a.ct_commit:
                        assert ct[i] & 0x01, what
                checked += 1
    assert checked > 1000
