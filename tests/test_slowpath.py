"""The golden model's decisions: conntrack, caches (flows, CAM) and their exactness.

The central property: whatever the caches (exact-match flows, the CAM, reactive
installs, established-flow actions, revalidation after rule changes) decide
must equal what an uncached reference decides by classifying every packet from
scratch with its true ct_state: a linear scan over the rule list in priority
order and a dictionary of connections.
"""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import ARP, ICMP, IP, TCP, UDP, Dot1Q, Ether, IPv6, raw

from cxlnic.config import NicConfig
from cxlnic.hdl.layouts import ConnState, CtState
from cxlnic.model.actions import Verdict, apply_actions
from cxlnic.model.match import rule_matches
from cxlnic.model.memory import BytearrayMemory, format_image
from cxlnic.model.parser import parse
from cxlnic.model.rulelang import parse_rules
from cxlnic.model.slowpath import Path, SlowPath, Timeouts, tcp_step, udp_step

S = ConnState
TRK, NEW, EST, RPL, INV = (int(CtState.TRK), int(CtState.NEW), int(CtState.EST), int(CtState.RPL),
                           int(CtState.INV))
F, SY, R, A = 0x01, 0x02, 0x04, 0x10


def make(cfg=None, **kw):
    cfg = cfg or NicConfig(cam_entries=8, n_rules=64, n_actions=128, n_buckets=128, n_tenants=2, **kw)
    mem = BytearrayMemory(cfg.image_lines)
    mem.apply(format_image(cfg))
    return SlowPath(mem, cfg), cfg


def tcp(src, dst, sport, dport, flags, payload=b"", vlan=None):
    l2 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return raw(l2 / ip / TCP(sport=sport, dport=dport, flags=flags) / payload).ljust(60, b"\0")


def udp(src, dst, sport, dport, payload=b""):
    return raw(Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload).ljust(60, b"\0")


# --- the TCP state machine, against a table written from the spec ----------------------
@pytest.mark.parametrize("state,reply,flags,fin_other,expect", [
    (S.SYN_SENT, False, SY, False, (S.SYN_SENT, TRK | NEW, False)),           # SYN retransmit
    (S.SYN_SENT, True, SY | A, False, (S.SYN_RECV, TRK | EST | RPL, False)),  # SYN-ACK
    (S.SYN_SENT, True, A, False, (S.SYN_SENT, TRK | INV | RPL, False)),       # ACK before SYN-ACK
    (S.SYN_RECV, False, A, False, (S.ESTABLISHED, TRK | EST, False)),         # handshake done
    (S.SYN_RECV, False, SY, False, (S.SYN_RECV, TRK | INV, False)),
    (S.ESTABLISHED, False, A, False, (S.ESTABLISHED, TRK | EST, False)),
    (S.ESTABLISHED, True, A, False, (S.ESTABLISHED, TRK | EST | RPL, False)),
    (S.ESTABLISHED, False, F | A, False, (S.FIN_WAIT, TRK | EST, True)),
    (S.FIN_WAIT, True, F | A, True, (S.CLOSING, TRK | EST | RPL, True)),
    (S.CLOSING, False, A, True, (S.TIME_WAIT, TRK | EST, False)),
    (S.ESTABLISHED, True, SY, False, (S.ESTABLISHED, TRK | INV | RPL, False)),
    (S.ESTABLISHED, True, R, False, (S.CLOSED, TRK | EST | RPL, False)),
    (S.SYN_SENT, True, R | A, False, (S.CLOSED, TRK | EST | RPL, False)),
    (S.CLOSED, False, A, False, (S.CLOSED, TRK | INV, False)),
])
def test_tcp_state_machine(state, reply, flags, fin_other, expect):
    assert tcp_step(state, reply, flags, fin_other) == expect


def test_udp_pseudo_states():
    assert udp_step(S.UDP_UNREPLIED, False) == (S.UDP_UNREPLIED, TRK | NEW)
    assert udp_step(S.UDP_UNREPLIED, True) == (S.UDP_REPLIED, TRK | EST | RPL)
    assert udp_step(S.UDP_REPLIED, False) == (S.UDP_REPLIED, TRK | EST)


# --- a directed connection lifecycle ---------------------------------------------------
CT_RULES = """
priority=300,arp,actions=controller
priority=200,tcp,ct_state=+trk+new,tp_dst=80,actions=ct(commit),output:1
priority=200,tcp,ct_state=+trk+est-rpl,actions=output:1
priority=200,tcp,ct_state=+trk+est+rpl,actions=output:0
priority=100,ct_state=+trk+inv,actions=drop
priority=50,udp,actions=output:2
"""


def test_tcp_connection_lifecycle():
    sp, _ = make()
    sp.install_rules(parse_rules(CT_RULES))
    c, s = ("10.0.0.1", "10.0.0.2", 1234, 80), ("10.0.0.2", "10.0.0.1", 80, 1234)
    steps = [  # (frame, port, expected path, verdict, out_port, ct_state seen by the deciding stage)
        (tcp(*c, "S"), 0, Path.SLOW, Verdict.OUTPUT, 1, TRK | NEW),       # commit
        (tcp(*s, "SA"), 1, Path.SLOW, Verdict.OUTPUT, 0, TRK | EST | RPL),
        (tcp(*c, "A"), 0, Path.SLOW, Verdict.OUTPUT, 1, TRK | EST),       # -> ESTABLISHED
        (tcp(*c, "PA", b"x" * 100), 0, Path.FLOW, Verdict.OUTPUT, 1, 0),
        (tcp(*s, "A"), 1, Path.FLOW, Verdict.OUTPUT, 0, 0),
        (tcp(*c, "FA"), 0, Path.SLOW, Verdict.OUTPUT, 1, TRK | EST),      # FIN leaves the fast path
        (tcp(*s, "FA"), 1, Path.SLOW, Verdict.OUTPUT, 0, TRK | EST | RPL),
        (tcp(*c, "A"), 0, Path.SLOW, Verdict.OUTPUT, 1, TRK | EST),       # -> TIME_WAIT
        (tcp("10.0.0.9", "10.0.0.2", 1, 80, "A"), 0, Path.SLOW, Verdict.DROP, 0, TRK | INV),  # mid-stream
    ]
    for n, (frame, port, path, verdict, out, ct) in enumerate(steps):
        d = sp.process(frame, port, n)
        assert (d.path, d.verdict, d.out_port, d.key.ct_state) == (path, verdict, out, ct), n
    states = sorted((e.reply, e.conn_state, e.fin) for _, e in sp.flows.entries())
    assert states == [(0, S.TIME_WAIT, 1), (1, S.TIME_WAIT, 1)]
    # the flow counters counted exactly the two fast-path packets of each direction
    o = next(e for _, e in sp.flows.entries() if not e.reply)
    assert sp.counters.get(o.counter) == (1, len(tcp(*c, "PA", b"x" * 100)))


def test_arp_decided_by_cam_and_udp_in_overflow_goes_to_host():
    sp, _ = make(NicConfig(cam_entries=2, n_rules=64, n_actions=64, n_buckets=64, n_tenants=2))
    sp.install_rules(parse_rules(CT_RULES))
    d = sp.process(raw(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP()).ljust(60, b"\0"), 3)
    assert (d.path, d.verdict, d.rule) == (Path.CAM, Verdict.TO_HOST, 0)
    d = sp.process(udp("1.1.1.1", "2.2.2.2", 5, 6), 3)
    assert (d.path, d.upcall, d.verdict, d.out_port) == (Path.SLOW, "cam_miss", Verdict.OUTPUT, 2)


def test_reactive_flow_installed_then_fast_path():
    sp, _ = make(NicConfig(cam_entries=1, n_rules=64, n_actions=64, n_buckets=64, n_tenants=2))
    sp.install_rules(parse_rules("priority=10,arp,actions=drop\npriority=5,udp,tp_dst=53,actions=output:3\n"))
    q = udp("10.1.1.1", "10.2.2.2", 999, 53)
    first, second = sp.process(q, 1), sp.process(q, 1)
    assert (first.path, first.installed, first.out_port) == (Path.SLOW, 1, 3)
    assert (second.path, second.out_port, second.frame) == (Path.FLOW, 3, q)
    # a rule change flushes reactive flows (they may now be wrong)
    sp.install_rules(parse_rules("priority=20,udp,actions=drop\n"))
    assert len(sp.flows) == 0
    d = sp.process(q, 1)
    assert (d.path, d.verdict, d.rule) == (Path.CAM, Verdict.DROP, 0)   # the new rule is index 0: in the CAM


def test_exceptions_go_to_host_unchanged_and_are_counted():
    sp, _ = make()
    sp.install_rules(parse_rules("priority=1,actions=output:1\n"))
    runt = bytes(20)
    trunc = raw(Ether() / IP(src="10.0.0.1", dst="10.0.0.2", len=200) / TCP() / (b"p" * 20))  # IP len > frame
    for f in (runt, trunc):
        d = sp.process(f, 2)
        assert (d.path, d.verdict, d.frame) == (Path.EXCEPTION, Verdict.TO_HOST, f)
    assert sp.stats.exceptions == {1: 1, 3: 1}   # ExceptionCode.RUNT, ExceptionCode.TRUNCATED


def test_aging_deletes_idle_and_keeps_active():
    sp, _ = make()
    sp.timeouts = Timeouts(udp_unreplied=10, udp_replied=10, untracked=10)
    sp.install_rules(parse_rules("priority=5,udp,ct_state=+trk,actions=ct(commit),output:1\n"))
    a, b = udp("10.0.0.1", "10.0.0.2", 1, 2), udp("10.0.0.3", "10.0.0.4", 3, 4)
    sp.process(a, 0, 0)
    sp.process(udp("10.0.0.2", "10.0.0.1", 2, 1), 1, 0)     # reply: UDP_REPLIED, both directions
    sp.process(b, 0, 0)
    assert len(sp.flows) == 3
    for t in range(1, 30, 2):
        assert sp.process(a, 0, t).path == Path.FLOW      # keeps connection a busy on the fast path
        sp.age(t)
    keys = {e.key.src_port for _, e in sp.flows.entries()}
    assert keys == {1, 2}                                  # b aged out, a (both directions) kept
    assert sp.stats.flows_deleted["aged"] == 1
    sp.age(100)
    assert len(sp.flows) == 0


def test_full_flow_table_still_decides_every_packet():
    cfg = NicConfig(cam_entries=0, n_rules=16, n_actions=16, n_buckets=2, n_stash=0, n_tenants=1)
    sp, _ = make(cfg)
    sp.install_rules(parse_rules("priority=5,udp,actions=output:1\n"))
    for i in range(40):
        d = sp.process(udp("10.0.0.1", "10.0.0.2", 1000 + i, 53), 0)
        assert (d.verdict, d.out_port) == (Verdict.OUTPUT, 1)
    assert len(sp.flows) == 16 and sp.stats.install_failures == 24


# --- equivalence with an uncached reference ----------------------------------------------
class Reference:
    """Every packet classified from scratch: no flow table, no CAM, no caches."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.rules = []          # Rule objects, priority order (stable by installation)
        self.conns = {}          # original-direction tuple -> [state, fin_orig, fin_reply]

    def install(self, rules):
        self.rules = sorted(self.rules + list(rules), key=lambda r: -r.priority)

    def process(self, frame, port):
        key = parse(frame, port, self.cfg)
        if key.exception:
            return Verdict.TO_HOST, 0, bytes(frame)
        f = key.flow
        tracked = f.eth_type in (0x0800, 0x86DD) and f.ip_proto in (6, 17)
        fwd = (f.eth_type, f.ip_proto, f.src_ip, f.dst_ip, f.src_port, f.dst_port)   # one zone
        rev = (f.eth_type, f.ip_proto, f.dst_ip, f.src_ip, f.dst_port, f.src_port)
        t, conn, reply = None, None, False
        if tracked and fwd in self.conns:
            t, conn = fwd, self.conns[fwd]
        elif tracked and rev in self.conns:
            t, conn, reply = rev, self.conns[rev], True
        reopen = False
        if conn is not None and f.ip_proto == 6:
            if conn[0] in (S.CLOSED, S.TIME_WAIT) and not reply and key.tcp_flags & (SY | A) == SY:
                reopen = True
            else:
                new, ct, fin = tcp_step(conn[0], reply, key.tcp_flags, bool(conn[1 if reply else 2]))
        elif conn is not None:
            (new, ct), fin = udp_step(conn[0], reply), False
        if conn is None or reopen:
            ct = (TRK | NEW if f.ip_proto == 17 or key.tcp_flags & (SY | A) == SY else TRK | INV) if tracked else 0
        key.ct_state = ct
        rule = next((r for r in self.rules if rule_matches(r.match, key)), None)
        if rule is None:
            return Verdict.DROP, 0, bytes(frame)
        if rule.actions.ct_commit or rule.match.ct_state_mask:
            if reopen:
                del self.conns[t]
                conn = None
            if conn is not None:
                conn[0] = new
                conn[2 if reply else 1] |= fin
            elif rule.actions.ct_commit and ct & NEW:
                self.conns[fwd] = [S.SYN_SENT if f.ip_proto == 6 else S.UDP_UNREPLIED, False, False]
        res = apply_actions(frame, rule.actions, self.cfg)
        return res.verdict, res.out_port, res.frame


RULE_POOL = [
    "priority={p},arp,actions=controller",
    "priority={p},tcp,ct_state=+trk+new,tp_dst=80,actions=ct(commit),output:1",
    "priority={p},tcp,ct_state=+trk+new,actions=ct(commit),output:2",
    "priority={p},tcp,ct_state=+trk+est-rpl,actions=output:1",
    "priority={p},tcp,ct_state=+trk+est+rpl,actions=mod_vlan_vid:7,output:0",
    "priority={p},ct_state=+trk+inv,actions=drop",
    "priority={p},udp,ct_state=+trk+new,actions=ct(commit),output:3",
    "priority={p},udp,ct_state=+trk+est,actions=output:4",
    "priority={p},udp,tp_dst=53,actions=output:5",
    "priority={p},udp,actions=mod_nw_dst:10.9.9.9,output:6",
    "priority={p},tcp,tcp_flags=+fin,actions=controller",
    "priority={p},tcp,tp_src=80,actions=output:7",
    "priority={p},tcp,nw_src=10.0.0.0/30,actions=strip_vlan,output:8",
    "priority={p},ip,actions=output:9",
    "priority={p},icmp,actions=drop",
    "priority={p},in_port=3,actions=drop",
    "priority={p},in_port=2,tcp,ct_state=+trk+new,actions=drop",      # ct rules that match only some packets
    "priority={p},tun_id=5,ct_state=+trk+inv,actions=drop",
    "priority={p},in_port=1,tcp,tcp_flags=+syn-ack,actions=output:10",
    "priority={p},actions=controller",
]
HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.5", "fd00::1", "fd00::2"]
FLAGS = ["S", "S", "SA", "A", "A", "PA", "FA", "R", "SA"]


def random_traffic(rng, n):
    out = []
    for _ in range(n):
        kind = rng.random()
        a, b = rng.sample(HOSTS[:3], 2) if rng.random() < 0.8 else rng.sample(HOSTS[3:], 2)
        pa, pb = rng.choice([80, 1234, 53]), rng.choice([80, 1234, 53])
        port = rng.randrange(4)
        if kind < 0.6:
            out.append((tcp(a, b, pa, pb, rng.choice(FLAGS), b"d" * rng.randrange(3),
                            vlan=rng.choice([None, None, 5])), port))
        elif kind < 0.85:
            out.append((udp(a if ":" not in a else "10.0.0.1", "10.0.0.2", pa, pb), port))
        elif kind < 0.92:
            out.append((raw(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()).ljust(60, b"\0"), port))
        elif kind < 0.96:
            out.append((raw(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP()).ljust(60, b"\0"), port))
        else:
            out.append((bytes(rng.randrange(80)), port))
    return out


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), cam=st.sampled_from([0, 3, 64]),
       n_rules=st.integers(3, 12))
def test_cached_decisions_equal_uncached_reference(seed, cam, n_rules):
    rng = random.Random(seed)
    cfg = NicConfig(cam_entries=cam, n_rules=64, n_actions=128, n_buckets=64, n_tenants=1)
    sp, _ = make(cfg)
    ref = Reference(cfg)
    texts = [rng.choice(RULE_POOL).format(p=rng.randrange(1, 400)) for _ in range(n_rules)]
    rules = parse_rules("\n".join(texts))
    sp.install_rules(rules)
    ref.install(rules)
    traffic = random_traffic(rng, 250)
    for n, (frame, port) in enumerate(traffic):
        if n == 150:   # a rule change under traffic: caches must be invalidated/re-resolved
            more = parse_rules(rng.choice(RULE_POOL).format(p=rng.randrange(1, 400)))
            sp.install_rules(more)
            ref.install(more)
        d = sp.process(frame, port, 0)
        assert (d.verdict, d.out_port, d.frame) == ref.process(frame, port), (n, d.path, d.upcall)
    st_ = sp.stats
    # conservation: every packet is output, sent to the host, or dropped with a reason
    assert st_.packets == len(traffic) == sum(st_.verdicts.values())
    assert st_.verdicts["drop"] == sum(st_.drops.values())
    assert sum(st_.paths.values()) == len(traffic)
    # counters sum to the packets decided by a rule or a flow
    decided = len(traffic) - sum(st_.exceptions.values()) - st_.drops["no_match"]
    assert sum(sp.counters.packets) == decided
    sp.flows.check()
