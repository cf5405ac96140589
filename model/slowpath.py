"""The golden model of the NIC and its host slow path, over one table image.

:class:`SlowPath` decides every packet the way the whole system does: the
part the hardware decides on its own (flow-table hits, CAM hits) and the part
it hands to the host (upcalls), which this module's host code then handles
by reading the same table bytes: classification over all rules, connection
tracking, and flow installs as line writes.  It is the reference the RTL
and the system testbench are compared with, packet by packet.

Decision procedure for one frame (``docs/slow-path.md`` has the rationale):

1. Parse.  An exception code sends the packet to the host (path
   ``exception``), unchanged and uncounted by any rule.
2. Exact-match flow lookup on the packet's FlowKey.  A hit is *eligible* for
   the fast path when the entry has no ``nocache`` bit and its state is
   untracked (a reactive flow), ESTABLISHED without SYN/FIN/RST in the
   packet, or UDP_REPLIED.  Eligible hits apply the flow's action and count
   on the flow's counter (path ``flow``); other hits are upcalls
   (``flow_state``).
3. Otherwise the CAM: the lowest matching rule among the first
   ``cam_entries``, looked up with ``ct_state = 0`` (the hardware does not
   know connection state).  The CAM decides (path ``cam``) unless its rule
   commits a connection (upcall ``ct_commit``), or the packet is TCP/UDP and
   a rule at or above it that matches on ``ct_state`` matches the packet's
   other fields (upcall ``ct_rule``) — then the hardware's guess of
   ``ct_state`` could change the answer.  No CAM
   match is an upcall (``cam_miss``).
4. The host (path ``slow``): computes the true ``ct_state`` from the
   connection (state machine below), classifies over all rules, commits
   connections (``ct(commit)``), installs reactive exact-match flows when no
   rule at or above the decision that matches on ``ct_state`` or TCP flags
   matches the packet's other fields (so every packet of that exact flow gets
   the same decision), applies the action
   and counts on the rule's counter.  No matching rule drops the packet
   (reason ``no_match``).

Connection tracking covers TCP and UDP, in one zone (OVS's default zone
0: the 5-tuple and ethertype identify a connection, whatever the tenant or
port each direction arrives with).  As with
OVS's ``ct()``, a packet goes through conntrack (advances its connection's
state) only when the rule that decides it matches on ``ct_state`` or commits;
its ``ct_state`` is what tracking *would* say.  So connection state does not
depend on which path decided other packets, and the CAM's condition above
makes sure the hardware never decides a packet that conntrack must see.  A
connection is created by a ``ct(commit)`` rule on a NEW packet (original
direction entry); the reply-direction entry is installed by the first reply
packet that goes through conntrack; both entries carry the same state.  When a connection
becomes ESTABLISHED (or a UDP one is answered) each direction's entry gets the
action of the rules as classified with ``ct_state=+trk+est(+rpl)`` and TCP
flags ``ack``; if a rule at or above that answer that matches on TCP flags
could match the entry's key, the entry is marked ``nocache`` and its packets
keep going to the host.  Rule changes
flush reactive flows and re-resolve established ones.
"""

from __future__ import annotations

import enum
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import NamedTuple

from cxlnic.config import NicConfig
from cxlnic.hdl.layouts import ConnState, CtState, FlowEntry, TcpFlags
from cxlnic.model.actions import Verdict, apply_actions
from cxlnic.model.codec import codec
from cxlnic.model.counters import CounterBank
from cxlnic.model.flowtable import FlowTable
from cxlnic.model.flowtable import TableFull as FlowTableFull
from cxlnic.model.match import ACTION, PKEY, RULE, rule_matches
from cxlnic.model.memory import Geometry, TableMemory
from cxlnic.model.parser import parse
from cxlnic.model.rules import RuleTable

__all__ = ["SlowPath", "Decision", "Upcall", "Path", "Timeouts", "FENTRY"]

FENTRY = codec(FlowEntry)

TRK, NEW, EST, RPL, INV = CtState.TRK, CtState.NEW, CtState.EST, CtState.RPL, CtState.INV
SYN, ACK, FIN, RST = TcpFlags.SYN, TcpFlags.ACK, TcpFlags.FIN, TcpFlags.RST
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
S = ConnState


class Path(str, enum.Enum):
    EXCEPTION = "exception"
    FLOW = "flow"        # fast path: exact-match flow hit
    CAM = "cam"          # fast path: CAM rule hit
    SLOW = "slow"        # decided by the host after an upcall


@dataclass(frozen=True)
class Timeouts:
    """Idle timeouts in seconds per connection state (conntrack-like defaults, shortened)."""
    syn_sent: int = 30
    syn_recv: int = 30
    established: int = 300
    fin_wait: int = 60
    closing: int = 30
    time_wait: int = 10
    closed: int = 5
    udp_unreplied: int = 30
    udp_replied: int = 60
    untracked: int = 30

    def of(self, state: int) -> int:
        return {
            S.NONE: self.untracked, S.SYN_SENT: self.syn_sent, S.SYN_RECV: self.syn_recv,
            S.ESTABLISHED: self.established, S.FIN_WAIT: self.fin_wait, S.CLOSING: self.closing,
            S.TIME_WAIT: self.time_wait, S.CLOSED: self.closed, S.UDP_UNREPLIED: self.udp_unreplied,
            S.UDP_REPLIED: self.udp_replied,
        }[state]


class Upcall(NamedTuple):
    """A packet the hardware hands to the host: its parsed key, the flow hit that was not
    eligible for the fast path (``(index, entry)`` or None) and the reason."""
    key: object
    hit: tuple | None
    reason: str


@dataclass(slots=True)
class Decision:
    """What happened to one packet."""
    path: Path
    verdict: Verdict
    out_port: int
    frame: bytes
    key: object                      # PacketKey record (ct_state as the decision saw it)
    rule: int | None = None          # rule index at decision time
    rule_id: int | None = None       # stable rule id (its counter index)
    flow: int | None = None          # flow entry index for fast-path flow hits
    counter: int | None = None       # counter incremented
    upcall: str | None = None        # why the hardware handed it to the host
    drop_reason: str | None = None   # "action", "no_match" or "bad_port" when verdict is DROP
    installed: int = 0               # flow entries this packet installed


def _tracked(f) -> bool:
    return f.eth_type in (ETH_IPV4, ETH_IPV6) and f.ip_proto in (6, 17)


def _conn_tuple(f, reverse: bool = False) -> tuple:
    """A connection's identity: one conntrack zone, as OVS's default zone 0.

    The tenant is left out on purpose: the two directions of a tenant's
    conversation can arrive with different tenant ids (VXLAN from the uplink
    carries the VNI, the VM port's replies are untunnelled).
    """
    if reverse:
        return (f.eth_type, f.ip_proto, f.dst_ip, f.src_ip, f.dst_port, f.src_port)
    return (f.eth_type, f.ip_proto, f.src_ip, f.dst_ip, f.src_port, f.dst_port)


def tcp_step(state: int, reply: bool, flags: int, fin_other: bool) -> tuple[int, int, bool]:
    """One TCP packet through the connection state machine.

    Returns ``(new state, ct_state of this packet, this direction sent FIN)``.
    ``fin_other`` says whether the other direction has sent a FIN.
    """
    rpl = RPL if reply else 0
    syn, ack, fin, rst = flags & SYN, flags & ACK, flags & FIN, flags & RST
    if state == S.CLOSED:
        return state, TRK | INV | rpl, False
    if rst:
        return S.CLOSED, TRK | EST | rpl, False
    if state == S.SYN_SENT:
        if not reply and syn and not ack:
            return state, TRK | NEW, False
        if reply and syn and ack:
            return S.SYN_RECV, TRK | EST | RPL, False
        return state, TRK | INV | rpl, False
    if state == S.SYN_RECV:
        if reply and syn and ack:
            return state, TRK | EST | RPL, False
        if reply or syn or not ack:
            return state, TRK | INV | rpl, False
        state = S.ESTABLISHED           # the handshake's final ACK (it may carry a FIN too)
    # ESTABLISHED, FIN_WAIT, CLOSING, TIME_WAIT
    if syn:
        return state, TRK | INV | rpl, False
    if fin:
        if state != S.TIME_WAIT:
            state = S.CLOSING if fin_other else S.FIN_WAIT
        return state, TRK | EST | rpl, True
    if state == S.CLOSING and ack:
        state = S.TIME_WAIT
    return state, TRK | EST | rpl, False


def udp_step(state: int, reply: bool) -> tuple[int, int]:
    if state == S.UDP_UNREPLIED:
        return (S.UDP_REPLIED, TRK | EST | RPL) if reply else (state, TRK | NEW)
    return state, TRK | EST | (RPL if reply else 0)


@dataclass
class Stats:
    packets: int = 0
    bytes: int = 0
    paths: Tally = field(default_factory=Tally)
    upcalls: Tally = field(default_factory=Tally)
    verdicts: Tally = field(default_factory=Tally)
    drops: Tally = field(default_factory=Tally)
    exceptions: Tally = field(default_factory=Tally)
    flows_installed: Tally = field(default_factory=Tally)   # by kind: reactive, conntrack
    flows_deleted: Tally = field(default_factory=Tally)     # by reason: aged, reopened, flushed
    install_failures: int = 0
    line_writes: Tally = field(default_factory=Tally)       # by region

    def as_dict(self) -> dict:
        return {
            "packets": self.packets, "bytes": self.bytes,
            "paths": dict(sorted(self.paths.items())), "upcalls": dict(sorted(self.upcalls.items())),
            "verdicts": dict(sorted(self.verdicts.items())), "drops": dict(sorted(self.drops.items())),
            "exceptions": dict(sorted(self.exceptions.items())),
            "flows_installed": dict(sorted(self.flows_installed.items())),
            "flows_deleted": dict(sorted(self.flows_deleted.items())),
            "install_failures": self.install_failures,
            "line_writes": dict(sorted(self.line_writes.items())),
        }


class SlowPath:
    """The golden model: fast-path emulation plus the host slow path, over ``mem``.

    ``mem`` must hold a formatted image (:func:`~cxlnic.model.memory.format_image`).
    This object is the only writer of the rule, action, bucket and flow
    regions; counters are kept in ``counters`` (the device's part) and
    rendered by ``counters.writes()``.
    """

    def __init__(self, mem: TableMemory, cfg: NicConfig | None = None, *,
                 timeouts: Timeouts = Timeouts(), counters: CounterBank | None = None):
        self.mem = mem
        self.cfg = cfg or NicConfig()
        self.geom = Geometry.read(mem)
        self.rules = RuleTable(mem, self.geom)
        self.flows = FlowTable(mem, self.geom, max_moves=self.cfg.max_moves)
        self.counters = counters if counters is not None else CounterBank(mem, self.geom)
        self.timeouts = timeouts
        self.stats = Stats()
        self._conns: dict[tuple, int] = {}      # original-direction tuple -> entry index
        self._drop_action: int | None = None
        self._action_cache: dict[int, object] = {}
        self._masks_valid = False
        for idx, e in self.flows.entries():
            if e.conn_state != S.NONE and not e.reply:
                self._conns[_conn_tuple(e.key)] = idx

    # -- rule management ----------------------------------------------------
    def install_rules(self, rules):
        """Install rules (see RuleTable.install); returns its InstallResult (writes + ``ids``)."""
        writes = self.rules.install(rules)
        self.stats.line_writes["rules+actions"] += len(writes)
        self._rules_changed()
        return writes

    def delete_rules(self, which) -> list:
        writes = self.rules.delete(which)
        self.stats.line_writes["rules+actions"] += len(writes)
        self._rules_changed()
        return list(writes)

    def _rules_changed(self) -> None:
        self._masks_valid = False
        self._action_cache.clear()
        self.revalidate()

    def _masked_rules(self) -> list:
        """``(index, rule without ct mask, without TCP-flag mask, without both)`` of every
        rule that matches on ct_state or TCP flags, in index order (cached per rule set)."""
        if not self._masks_valid:
            out = []
            for i, r in enumerate(self.rules.rules()):
                if r.ct_state_mask or r.tcp_flags_mask:
                    no_ct, no_tf, none = (RULE.unpack(RULE.pack(r)) for _ in range(3))
                    no_ct.ct_state_mask = none.ct_state_mask = 0
                    no_tf.tcp_flags_mask = none.tcp_flags_mask = 0
                    out.append((i, r, no_ct, no_tf, none))
            self._masked = out
            self._masks_valid = True
        return self._masked

    def _depends(self, key, i: int, *, on_ct: bool, on_tcp_flags: bool) -> bool:
        """Could the decision for ``key`` (rule ``i``) change with its ct_state (``on_ct``) or its
        TCP flags (``on_tcp_flags``)?  True when a rule at or above ``i`` that matches on those
        fields matches the key's other fields; the hardware computes the same from a second
        CAM match vector with those fields wildcarded."""
        for j, r, no_ct, no_tf, none in self._masked_rules():
            if j > i:
                break
            if on_ct and on_tcp_flags:
                if rule_matches(none, key):
                    return True
            elif on_ct:
                if r.ct_state_mask and rule_matches(no_ct, key):
                    return True
            elif r.tcp_flags_mask and rule_matches(no_tf, key):
                return True
        return False

    def _action(self, a: int):
        rec = self._action_cache.get(a)
        if rec is None:
            rec = self._action_cache[a] = ACTION.from_bytes(self.mem.read_line(self.geom.actions_off + a))
        return rec

    # -- the packet path ------------------------------------------------------
    def process(self, frame: bytes, in_port: int, now: float = 0.0) -> Decision:
        """Decide one frame received on ``in_port`` at time ``now`` (seconds)."""
        self.stats.packets += 1
        self.stats.bytes += len(frame)
        d = self.fast_path(frame, in_port)
        if isinstance(d, Upcall):
            d = self._host(d.key, frame, d.hit, d.reason, int(now))
        return self._account(d)

    def fast_path(self, frame: bytes, in_port: int) -> Decision | Upcall:
        """The part of :meth:`process` the hardware does on its own, for one frame.

        Returns the :class:`Decision` of an exception (sent to the host as is), a flow
        hit or a CAM hit (counted on its counter, as the device's counter block does),
        or the :class:`Upcall` the hardware hands to the host.  Reads the tables and
        changes nothing but ``counters``; the RTL datapath is checked against it.
        """
        key = parse(frame, in_port, self.cfg)
        if key.exception:
            return Decision(Path.EXCEPTION, Verdict.TO_HOST, 0, bytes(frame), key, upcall="exception")
        hit = self.flows.lookup_entry(key.flow)
        if hit is not None:
            idx, e = hit
            if self._eligible(e, key.tcp_flags):
                self.counters.add(e.counter, len(frame))
                return self._execute(Path.FLOW, frame, key, self._action(e.action), flow=idx, counter=e.counter)
            return Upcall(key, hit, "flow_state")
        d = self._cam(key, frame)
        return Upcall(key, None, d) if isinstance(d, str) else d

    def execute(self, frame: bytes, action: int, counter: int | None) -> Decision:
        """A frame the host sends back (reinjects) to go out with action record ``action``,
        counted on ``counter`` (None: not counted): the datapath's reinject port."""
        if counter is not None:
            self.counters.add(counter, len(frame))
        return self._execute(Path.SLOW, frame, None, self._action(action), counter=counter)

    def _execute(self, path: Path, frame: bytes, key, act, **kw) -> Decision:
        """Apply action record ``act``: the rewrite plus the output-port check
        (an OUTPUT to a port >= ``cfg.n_ports`` is dropped, reason ``bad_port``)."""
        res = apply_actions(frame, act, self.cfg)
        if res.verdict == Verdict.OUTPUT and res.out_port >= self.cfg.n_ports:
            return Decision(path, Verdict.DROP, 0, res.frame, key, drop_reason="bad_port", **kw)
        return Decision(path, res.verdict, res.out_port, res.frame, key,
                        drop_reason="action" if res.verdict == Verdict.DROP else None, **kw)

    @staticmethod
    def _eligible(e, tcp_flags: int) -> bool:
        if e.nocache:
            return False
        s = e.conn_state
        if s == S.NONE or s == S.UDP_REPLIED:
            return True
        return s == S.ESTABLISHED and not tcp_flags & (SYN | FIN | RST)

    def _cam(self, key, frame):
        """The hardware's CAM step: a Decision, or the upcall reason."""
        key.ct_state = 0
        i = self.rules.classify(key)
        if i is None or i >= self.geom.cam_entries:
            return "cam_miss"
        act = self.rules.action_of(i)
        if act.ct_commit:
            return "ct_commit"
        if _tracked(key.flow) and self._depends(key, i, on_ct=True, on_tcp_flags=False):
            return "ct_rule"
        c = self.rules.counter_of(i)
        self.counters.add(c, len(frame))
        return self._execute(Path.CAM, frame, key, self._action(self.rules.action_index_of(i)), rule=i,
                             rule_id=self.rules.id_at(i), counter=c)

    def _host(self, key, frame, hit, upcall: str, now: int) -> Decision:
        """The host's handling of an upcall: conntrack, full classification, installs."""
        f = key.flow
        installed = 0
        orig_idx, reply = None, False
        if hit is not None:
            idx, e = hit
            if e.conn_state != S.NONE:
                orig_idx, reply = (e.peer if e.reply else idx), bool(e.reply)
        elif _tracked(f):
            orig_idx = self._conns.get(_conn_tuple(f))
            if orig_idx is None:
                orig_idx = self._conns.get(_conn_tuple(f, reverse=True))
                reply = orig_idx is not None
        step = self._conn_step(orig_idx, reply, key) if orig_idx is not None else None
        reopen = step == "reopen"
        if step is not None and not reopen:
            key.ct_state = step[0]
        elif _tracked(f):
            key.ct_state = TRK | NEW if (f.ip_proto == 17 or key.tcp_flags & (SYN | ACK) == SYN) \
                else TRK | INV
        else:
            key.ct_state = 0
        i = self.rules.classify(key)
        if i is None:
            return Decision(Path.SLOW, Verdict.DROP, 0, bytes(frame), key, upcall=upcall,
                            drop_reason="no_match")
        a = self.rules.action_index_of(i)
        act = self._action(a)
        # Only packets whose deciding rule involves conntrack (matches ct_state or
        # commits) go through it, as with OVS's ct(); that keeps connection state
        # independent of which path (CAM, flow, host) decided the other packets.
        through_ct = bool(act.ct_commit or self.rules.rule_at(i).ct_state_mask)
        if through_ct:
            if reopen:
                self._delete_conn(orig_idx, "reopened")
                orig_idx = None
            if orig_idx is not None:
                installed += self._conn_commit_step(orig_idx, reply, key, step, now)
            elif act.ct_commit and key.ct_state & NEW:
                installed += self._commit(key, a, now)
        elif orig_idx is None and hit is None:
            if not self._depends(key, i, on_ct=True, on_tcp_flags=True):
                e = FENTRY.new(key=f, conn_state=S.NONE, action=a, last_seen=now)
                installed += self._install(e, "reactive") is not None
        c = self.rules.counter_of(i)
        self.counters.add(c, len(frame))
        return self._execute(Path.SLOW, frame, key, act, rule=i, rule_id=self.rules.id_at(i), counter=c,
                             upcall=upcall, installed=installed)

    def _account(self, d: Decision) -> Decision:
        st = self.stats
        st.paths[d.path.value] += 1
        st.verdicts[d.verdict.name.lower()] += 1
        if d.path == Path.EXCEPTION:
            st.exceptions[d.key.exception] += 1
        if d.upcall:
            st.upcalls[d.upcall] += 1
        if d.verdict == Verdict.DROP:
            if d.drop_reason is None:
                d.drop_reason = "action"
            st.drops[d.drop_reason] += 1
        return d

    # -- connection tracking ----------------------------------------------------
    def _conn_step(self, orig_idx: int, reply: bool, key):
        """What this packet does to the connection of ``orig_idx`` (nothing is written).

        Returns ``(ct_state, new state, this direction sent FIN)``, or "reopen"
        for a fresh SYN on a closed connection (it then counts as NEW).
        """
        o = self.flows.read_entry(orig_idx)
        r = self.flows.read_entry(o.peer) if o.has_peer else None
        if key.flow.ip_proto == 6:
            flags = key.tcp_flags
            if (o.conn_state in (S.CLOSED, S.TIME_WAIT) and not reply
                    and flags & (SYN | ACK) == SYN):
                return "reopen"
            fin_other = bool((o if reply else r) and (o if reply else r).fin)
            new_state, ct, fin = tcp_step(o.conn_state, reply, flags, fin_other)
        else:
            new_state, ct = udp_step(o.conn_state, reply)
            fin = False
        return ct, new_state, fin

    def _conn_commit_step(self, orig_idx: int, reply: bool, key, upd, now: int) -> int:
        """Write the state change (and the reply entry on the first reply) to the table."""
        _, new_state, fin = upd
        o = self.flows.read_entry(orig_idx)
        installed = 0
        if reply and not o.has_peer:
            e = FENTRY.new(key=key.flow, reply=1, conn_state=new_state, action=o.action,
                           peer=orig_idx, has_peer=1, last_seen=now, fin=int(fin))
            ridx = self._install(e, "conntrack")
            if ridx is not None:
                installed = 1
                o.peer, o.has_peer = ridx, 1
        old_state = o.conn_state
        changed = new_state != old_state or fin
        if not changed and now - o.last_seen < 1:
            if installed:
                self._update(orig_idx, o)
            return installed
        o.conn_state = new_state
        o.last_seen = now
        if fin and not reply:
            o.fin = 1
        r = self.flows.read_entry(o.peer) if o.has_peer else None
        if r is not None:
            r.conn_state = new_state
            r.last_seen = now
            if fin and reply:
                r.fin = 1
        if new_state != old_state and new_state in (S.ESTABLISHED, S.UDP_REPLIED):
            self._resolve(o)
            if r is not None:
                self._resolve(r)
        self._update(orig_idx, o)
        if r is not None:
            self._update(o.peer, r)
        return installed

    def _resolve(self, e) -> None:
        """Give an established entry the action its packets get from the rules now."""
        pk = PKEY.new(flow=e.key, tcp_flags=ACK if e.key.ip_proto == 6 else 0,
                      ct_state=TRK | EST | (RPL if e.reply else 0))
        i = self.rules.classify(pk)
        if i is None:
            a = self._drop_action_index()
            nocache = 0
        else:
            a = self.rules.action_index_of(i)
            nocache = int(e.key.ip_proto == 6 and self._depends(pk, i, on_ct=False, on_tcp_flags=True))
        if a != e.action:
            self.rules.retain_action(a)
            self._release_action(e.action)
            e.action = a
        e.nocache = nocache

    def _drop_action_index(self) -> int:
        if self._drop_action is None:
            a, writes = self.rules.acquire_action(ACTION.new(drop=1))
            self.stats.line_writes["rules+actions"] += len(writes)
            self._drop_action = a
        return self._drop_action

    def _release_action(self, a: int) -> None:
        writes = self.rules.release_action(a)
        self.stats.line_writes["rules+actions"] += len(writes)
        self._action_cache.pop(a, None)

    def _commit(self, key, action: int, now: int) -> int:
        f = key.flow
        state = S.SYN_SENT if f.ip_proto == 6 else S.UDP_UNREPLIED
        e = FENTRY.new(key=f, conn_state=state, action=action, last_seen=now)
        idx = self._install(e, "conntrack")
        if idx is None:
            return 0
        self._conns[_conn_tuple(f)] = idx
        return 1

    def _install(self, e, kind: str) -> int | None:
        """Insert a flow entry (holding a reference on its action line); None if the table is full."""
        try:
            op = self.flows.insert(e)
        except FlowTableFull:
            self.stats.install_failures += 1
            return None
        self.rules.retain_action(e.action)
        self.stats.flows_installed[kind] += 1
        self.stats.line_writes["flows"] += len(op.writes)
        return op.index

    def _update(self, idx: int, e) -> None:
        op = self.flows.update_entry(idx, e)
        self.stats.line_writes["flows"] += len(op.writes)

    def _delete_entry(self, idx: int, reason: str) -> None:
        e = self.flows.read_entry(idx)
        op = self.flows.delete(e.key)
        self.stats.line_writes["flows"] += len(op.writes)
        self.stats.flows_deleted[reason] += 1
        self._release_action(e.action)

    def _delete_conn(self, orig_idx: int, reason: str) -> None:
        o = self.flows.read_entry(orig_idx)
        self._conns.pop(_conn_tuple(o.key), None)
        if o.has_peer:
            self._delete_entry(o.peer, reason)
        self._delete_entry(orig_idx, reason)

    # -- maintenance ------------------------------------------------------------
    def revalidate(self) -> None:
        """After a rule change: flush reactive flows, re-resolve established connections."""
        for idx, e in list(self.flows.entries()):
            if e.conn_state == S.NONE:
                self._delete_entry(idx, "flushed")
            elif e.conn_state in (S.ESTABLISHED, S.UDP_REPLIED):
                old = (e.action, e.nocache)
                self._resolve(e)
                if (e.action, e.nocache) != old:
                    self._update(idx, e)

    def age(self, now: float) -> int:
        """Aging sweep: refresh active flows from their counters, delete idle ones.

        A flow is active if its counter moved since the last sweep (the
        low 32 bits of its packet count differ from ``seen_packets``); an
        inactive flow older than its state's timeout is deleted, both
        directions of a connection together.  Returns the flows deleted.
        """
        now = int(now)
        deleted = 0
        for idx, e in list(self.flows.entries()):
            if e.reply and e.has_peer:
                continue            # handled with its original direction
            pair = [(idx, e)]
            if e.has_peer:
                pair.append((e.peer, self.flows.read_entry(e.peer)))
            active = False
            for pidx, pe in pair:
                seen = self.counters.get(pe.counter)[0] & 0xFFFFFFFF
                if seen != pe.seen_packets:
                    pe.seen_packets, pe.last_seen = seen, now
                    self._update(pidx, pe)
                    active = True
            if active:
                continue
            last = max(pe.last_seen for _, pe in pair)
            if now - last > self.timeouts.of(e.conn_state):
                if e.conn_state == S.NONE:
                    self._delete_entry(idx, "aged")
                else:
                    self._delete_conn(idx, "aged")
                deleted += len(pair)
        return deleted
