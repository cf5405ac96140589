"""Ternary priority rules and their action records in the table image, with a fast classifier.

:class:`RuleTable` owns the rule region (``geom.n_rules`` RuleEntry lines,
lowest index wins, the first ``geom.cam_entries`` mirrored into the device
CAM) and the action region (``geom.n_actions`` ActionEntry lines).  Every
operation returns the ordered list of :class:`LineWrite` that carries it out;
the order is chosen so that a reader scanning the rule region between any two
of those writes (the CAM snooping them one by one, or the host slow path)
never sees a wrong answer:

* an **install** makes room with a bottom-up shift in which every line that
  will hold a new rule first receives a *copy* of the old rule that follows
  it (so the region only ever holds old rules, in order, with harmless
  duplicates), then writes the new rules one line each in ascending index
  order.  Between any two writes every key gets either its pre-install or its
  post-install answer.  For a single rule at position ``p`` of ``n`` this is
  exactly "line n := rule n-1, ..., line p+1 := rule p, line p := new".
* a **delete** first overwrites each deleted line with a copy of the next
  kept rule (or an invalid line), in descending index order, then compacts
  top-down.  Again every key sees its pre- or its post-delete answer.  For a
  single rule this is "line p := rule p+1, ..., last := invalid".
* action lines are written before the first rule line that references them
  and zeroed only after the last rule line referencing them is gone.

Writes whose bytes already equal the line's current content are left out.

Rule identity: a rule's id is its counter index.  Counters are allocated
lowest-free-first from ``0 .. min(n_rules, n_counters) - 1`` and follow the
rule when it moves between lines.  A reused counter is *not* zeroed (the
device owns the counter lines and may be updating a neighbour in the same
line); readers take a baseline when a rule is installed.

Single-writer assumption: a RuleTable is the only writer of the rule and
action regions of its memory.  It reads those regions once, at construction,
and from then on keeps a shadow copy of their bytes, which it uses to plan
writes.  Anything else that writes those regions invalidates the shadow.
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cxlnic.hdl.layouts import LINE_BYTES, CtState, TcpFlags
from cxlnic.model.match import ACTION, FKEY, PKEY, RULE, Rule, ipv4_mapped, prefix_mask
from cxlnic.model.memory import FormatError, Geometry, LineWrite, TableMemory

__all__ = [
    "RuleTable", "TableFull", "InstallResult", "TupleSpaceClassifier", "rule_mask_value",
    "build_rules_for_bench", "keys_for_bench",
]

_MAX_PRIORITY = 0xFFFF
# A rule's rank orders the whole table: higher priority first, then insertion
# order.  It never changes while the rule is installed, so the classifier can
# index ranks instead of line positions (which shift on every insert/delete).
_SEQ_BITS = 40
_INF = 1 << 80

# Bit offsets of the PacketKey fields a rule can match, in the packed key.
_PK = {f.path: f.offset for f in PKEY.fields}
_RULE_ACTION = RULE.field("action")


class TableFull(Exception):
    """An operation needs more rule lines, action lines or counters than are free.

    Raised before anything is written or any state changes.  ``resource`` is
    ``"rules"``, ``"actions"`` or ``"counters"``.
    """

    def __init__(self, resource: str, needed: int, free: int):
        super().__init__(f"rule table full: need {needed} {resource}, {free} free")
        self.resource = resource
        self.needed = needed
        self.free = free


class InstallResult(list):
    """The line writes of an install (a ``list[LineWrite]``), plus ``ids``: the
    ids (counter indices) of the installed rules, in the order they were given."""

    def __init__(self, writes, ids):
        super().__init__(writes)
        self.ids = list(ids)


def rule_mask_value(r) -> tuple[int, int]:
    """``(mask, value)`` over the packed PacketKey such that ``rule_matches(r, k)``
    is exactly ``PKEY.pack(k) & mask == value`` for a valid rule record ``r``.

    Every match field of a rule is a masked equality (prefix lengths are
    masks too), so this is exact, not an approximation.  Raises ValueError
    for a prefix length over 128 (which :func:`rule_matches` rejects too).
    """
    m = v = 0

    def put(path, val, mask):
        nonlocal m, v
        off = _PK[path]
        m |= mask << off
        v |= (val & mask) << off

    if r.tenant_care:
        put("flow.tenant", r.owner, 0xFFFFFF)
    if r.in_port_care:
        put("flow.in_port", r.in_port, 0xFF)
    if r.eth_type_care:
        put("flow.eth_type", r.eth_type, 0xFFFF)
    if r.ip_proto_care:
        put("flow.ip_proto", r.ip_proto, 0xFF)
    if r.vlan_care:
        put("flow.vlan_valid", r.vlan_valid, 1)
        put("flow.vlan_id", r.vlan_id, r.vlan_id_mask)
    put("flow.src_port", r.src_port, r.src_port_mask)
    put("flow.dst_port", r.dst_port, r.dst_port_mask)
    put("tcp_flags", r.tcp_flags, r.tcp_flags_mask)
    put("ct_state", r.ct_state, r.ct_state_mask)
    put("flow.src_ip", r.src_ip, prefix_mask(r.src_plen))
    put("flow.dst_ip", r.dst_ip, prefix_mask(r.dst_plen))
    return m, v


class _Group:
    """Entries sharing one mask: masked value -> ranks of the entries with that value."""
    __slots__ = ("mask", "best", "dups", "ranks", "part_ranks")

    def __init__(self, mask: int, partitioned: bool):
        self.mask = mask
        self.best: dict[int, int] = {}          # value -> lowest rank (what a lookup probes)
        self.dups: dict[int, list[int]] = {}    # value -> sorted ranks, only when more than one
        self.ranks: list[int] = []              # all ranks, sorted
        # For a group whose mask covers the whole partition field: partition
        # value -> sorted ranks of its entries (they can only match keys of it).
        self.part_ranks: dict[int, list[int]] | None = {} if partitioned else None


class TupleSpaceClassifier:
    """Tuple-space search (as in Open vSwitch's classifier) over (rank, mask, value) entries.

    Entries with the same mask form a group with a hash table ``value ->
    lowest rank``.  A lookup masks the key once per group and probes, visiting
    groups in order of their lowest rank and stopping as soon as a group's
    lowest rank is above the best match so far, so it returns the lowest-rank
    entry whose ``key & mask == value`` (exact, not heuristic).

    Partitioning (OVS partitions its classifier by the metadata field the same
    way): with ``part_offset``/``part_width`` naming a key field (the tenant),
    a group whose mask covers that whole field can only match keys whose field
    equals one of its entries'.  A lookup for partition value t visits only the
    groups that do not care about the field plus the groups holding an entry
    of t, ordered and cut off by the lowest rank *of t's entries*.  Tenants'
    rules always care about the tenant, so a tenant's packet never visits a
    group that holds only other tenants' rules.

    Cost: a lookup is one AND and one dict probe per visited group.  ``add``
    and ``remove`` are O(size of the entry's group) (sorted rank lists); the
    probe order of a partition value is re-sorted lazily, O(G log G), on its
    first lookup after any change.
    """

    def __init__(self, part_offset: int = 0, part_width: int = 0):
        self._groups: dict[int, _Group] = {}
        self._probes: dict[int, list[tuple[int, int, dict]]] = {}   # partition value -> probe order
        self._n = 0
        self._pshift = part_offset
        self._pmask = (1 << part_width) - 1
        self._pfull = self._pmask << part_offset

    def __len__(self) -> int:
        return self._n

    @property
    def n_groups(self) -> int:
        return len(self._groups)

    def _part_of(self, g: _Group, value: int) -> int | None:
        return None if g.part_ranks is None else (value >> self._pshift) & self._pmask

    def add(self, rank: int, mask: int, value: int) -> None:
        g = self._groups.get(mask)
        if g is None:
            g = self._groups[mask] = _Group(mask, bool(self._pfull) and mask & self._pfull == self._pfull)
        old = g.best.get(value)
        if old is None:
            g.best[value] = rank
        else:
            lst = g.dups.get(value)
            if lst is None:
                lst = g.dups[value] = [old]
            insort(lst, rank)
            g.best[value] = lst[0]
        insort(g.ranks, rank)
        t = self._part_of(g, value)
        if t is not None:
            insort(g.part_ranks.setdefault(t, []), rank)
        self._n += 1
        self._probes.clear()

    def remove(self, rank: int, mask: int, value: int) -> None:
        g = self._groups[mask]
        lst = g.dups.get(value)
        if lst is None:
            if g.best.get(value) != rank:
                raise KeyError(rank)
            del g.best[value]
        else:
            lst.pop(bisect_left(lst, rank))
            g.best[value] = lst[0]
            if len(lst) == 1:
                del g.dups[value]
        g.ranks.pop(bisect_left(g.ranks, rank))
        t = self._part_of(g, value)
        if t is not None:
            pr = g.part_ranks[t]
            pr.pop(bisect_left(pr, rank))
            if not pr:
                del g.part_ranks[t]
        if not g.ranks:
            del self._groups[mask]
        self._n -= 1
        self._probes.clear()

    def _build(self, t: int):
        order = []
        for g in self._groups.values():
            if g.part_ranks is None:
                order.append((g.ranks[0], g.mask, g.best))
            else:
                pr = g.part_ranks.get(t)
                if pr:
                    order.append((pr[0], g.mask, g.best))
        order.sort(key=lambda e: e[0])
        self._probes[t] = order
        return order

    def lookup(self, key: int) -> int | None:
        """Lowest rank whose entry matches the packed key ``key``, or None."""
        t = (key >> self._pshift) & self._pmask
        probe = self._probes.get(t)
        if probe is None:
            probe = self._build(t)
        best = _INF
        for gmin, mask, table in probe:
            if gmin >= best:
                break
            r = table.get(key & mask)
            if r is not None and r < best:
                best = r
        return None if best == _INF else best


@dataclass
class _Prepared:
    priority: int
    match: object        # a private copy of the RuleEntry record
    action: int          # packed ActionEntry


class RuleTable:
    """The rule and action regions of one table image, and a classifier over them.

    Ordering contract: rules are kept sorted by OpenFlow priority, higher
    priority at the lower index; rules of equal priority keep insertion order
    (a new rule goes after every installed rule of its priority; a batch is
    inserted in the order given).  Rule lines ``0 .. len-1`` are valid, the
    rest invalid.

    Every mutating method returns the ordered ``list[LineWrite]`` that performs
    it (see the module docstring for why that order is safe for concurrent
    readers) and, with ``apply=True``, applies it to ``mem``.  With
    ``apply=False`` the table's state is updated as if the writes were applied;
    the caller must apply them, in order, before the next operation.

    Cost: install of k rules into n is O(n + k) plus O(n - p) line writes for
    the shifted tail from the first insert position p; delete likewise.  The
    position map (rank-sorted list) is rebuilt per operation, O(n), which is
    microseconds at 10k rules; the classifier updates incrementally.
    """

    def __init__(self, mem: TableMemory, geom: Geometry | None = None):
        self.mem = mem
        self.geom = geom if geom is not None else Geometry.read(mem)
        g = self.geom
        self._lines = [int.from_bytes(mem.read_line(g.rules_off + i), "little") for i in range(g.n_rules)]
        self._alines = [int.from_bytes(mem.read_line(g.actions_off + i), "little")
                        for i in range(g.n_actions)]
        self._counter_pool = min(g.n_rules, g.n_counters)
        self._ids: list[int] = []        # rule ids in index order
        self._ranks: list[int] = []      # their ranks, ascending (parallel to _ids)
        self._rank: dict[int, int] = {}
        self._packed: dict[int, int] = {}             # id -> packed rule line
        self._mv: dict[int, tuple[int, int]] = {}     # id -> (mask, value) in the classifier
        self._aref = [0] * g.n_actions
        self._aby: dict[int, int] = {}                # packed action -> a line holding it (dedupe)
        tenant = PKEY.field("flow.tenant")
        self._cls = TupleSpaceClassifier(tenant.offset, tenant.width)
        self._load()

    # -- loading -----------------------------------------------------------
    def _load(self):
        g = self.geom
        prev_prio = _MAX_PRIORITY
        ended = None
        for i, v in enumerate(self._lines):
            r = RULE.unpack(v)
            if not r.valid:
                if ended is None:
                    ended = i
                continue
            where = f"rule line {i} (line {g.rules_off + i})"
            if ended is not None:
                raise FormatError(f"{where} is valid after invalid rule line {ended}: "
                                  "the rule region is not compact")
            if r.priority > prev_prio:
                raise FormatError(f"{where}: priority {r.priority} above the previous rule's {prev_prio}: "
                                  "rules are not in priority order")
            if r.counter in self._rank:
                raise FormatError(f"{where}: counter {r.counter} already used by another rule")
            if r.action >= g.n_actions:
                raise FormatError(f"{where}: action {r.action} outside the {g.n_actions}-line action region")
            if r.src_plen > 128 or r.dst_plen > 128:
                raise FormatError(f"{where}: prefix length over 128")
            prev_prio = r.priority
            rid = r.counter
            rank = ((_MAX_PRIORITY - r.priority) << _SEQ_BITS) | i
            self._ids.append(rid)
            self._ranks.append(rank)
            self._index_rule(rid, rank, v, r)
            self._aref[r.action] += 1
        self._seq = len(self._ids)
        # Lines no rule references are free whatever they hold; see retain_action.
        for a, n in enumerate(self._aref):
            if n:
                self._aby.setdefault(self._alines[a], a)
        self._afree = [a for a, n in enumerate(self._aref) if not n]
        heapq.heapify(self._afree)
        self._cfree = [c for c in range(self._counter_pool) if c not in self._rank]
        heapq.heapify(self._cfree)

    def _index_rule(self, rid, rank, packed, rec):
        self._rank[rid] = rank
        self._packed[rid] = packed
        mv = rule_mask_value(rec)
        self._mv[rid] = mv
        self._cls.add(rank, *mv)

    # -- queries -----------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def rules(self) -> list:
        """The rule records (fresh RuleEntry records) in index order."""
        return [RULE.unpack(self._packed[rid]) for rid in self._ids]

    def ids(self) -> list[int]:
        """Rule ids (counter indices) in index order."""
        return list(self._ids)

    def rule_at(self, i: int):
        return RULE.unpack(self._packed[self._ids[i]])

    def id_at(self, i: int) -> int:
        return self._ids[i]

    def index_of(self, rule_id: int) -> int:
        """Current line index (within the rule region) of rule ``rule_id``; KeyError if absent."""
        return bisect_left(self._ranks, self._rank[rule_id])

    def counter_of(self, i: int) -> int:
        return self._ids[i]

    def action_index_of(self, i: int) -> int:
        return self._action_line(self._ids[i])

    def action_of(self, i: int):
        """The ActionEntry record of the rule at index ``i`` (from the action line it references)."""
        return ACTION.unpack(self._alines[self.action_index_of(i)])

    def classify(self, key) -> int | None:
        """Index of the lowest-index rule matching ``key`` (a PacketKey record or
        its packed int), or None; equal to ``linear_classify(self.rules(), key)``."""
        pk = key if isinstance(key, int) else PKEY.pack(key)
        rank = self._cls.lookup(pk)
        return None if rank is None else bisect_left(self._ranks, rank)

    @property
    def n_groups(self) -> int:
        """Number of distinct mask signatures (tuple-space groups)."""
        return self._cls.n_groups

    def free_actions(self) -> int:
        return len(self._afree)

    def free_counters(self) -> int:
        return len(self._cfree)

    # -- helpers -----------------------------------------------------------
    def _action_line(self, rid: int) -> int:
        return (self._packed[rid] >> _RULE_ACTION.offset) & ((1 << _RULE_ACTION.width) - 1)

    def _rule_write(self, writes, i, content):
        if self._lines[i] != content:
            self._lines[i] = content
            writes.append(LineWrite(self.geom.rules_off + i, content.to_bytes(LINE_BYTES, "little"),
                                    f"rule {i}"))

    def _action_write(self, writes, a, content):
        if self._alines[a] != content:
            self._alines[a] = content
            writes.append(LineWrite(self.geom.actions_off + a, content.to_bytes(LINE_BYTES, "little"),
                                    f"action {a}"))

    def _finish(self, writes, apply):
        if apply:
            self.mem.apply(writes)
        return writes

    @staticmethod
    def _prepare(rule: Rule) -> _Prepared:
        if not isinstance(rule.priority, int) or not 0 <= rule.priority <= _MAX_PRIORITY:
            raise ValueError(f"rule priority {rule.priority!r} outside 0..{_MAX_PRIORITY}")
        m = RULE.unpack(RULE.pack(rule.match))     # range-checks every field; private copy
        if m.src_plen > 128 or m.dst_plen > 128:
            raise ValueError(f"rule prefix lengths {m.src_plen}/{m.dst_plen}: must be <= 128")
        return _Prepared(rule.priority, m, ACTION.pack(rule.actions))

    # -- install -------------------------------------------------------------
    def install(self, rules: Iterable[Rule], apply: bool = True) -> InstallResult:
        """Insert ``rules`` (a batch) at their priority positions.

        The batch is planned whole: if it needs more rule lines, action lines
        or counters than are free, :class:`TableFull` is raised with nothing
        written and no state changed (also ValueError for an out-of-range
        field).  Written in order: each new distinct action record, once, into
        the lowest free action line (an identical record already in the table
        is shared, refcounted); then the bottom-up shift with copies; then the
        new rule lines in ascending index order.  Each stored rule is the
        Rule's match record with ``valid=1``, ``priority``, ``action`` and
        ``counter`` set; the caller's objects are not modified.  Returns the
        writes, with ``.ids`` the new rules' ids.
        """
        prepared = [self._prepare(r) for r in rules]
        k = len(prepared)
        n_old = len(self._ids)
        if n_old + k > self.geom.n_rules:
            raise TableFull("rules", k, self.geom.n_rules - n_old)
        if k > len(self._cfree):
            raise TableFull("counters", k, len(self._cfree))
        new_actions = list(dict.fromkeys(p.action for p in prepared if p.action not in self._aby))
        if len(new_actions) > len(self._afree):
            raise TableFull("actions", len(new_actions), len(self._afree))
        if not k:
            return InstallResult([], [])

        # Nothing can fail from here on.
        writes: list[LineWrite] = []
        for val in new_actions:
            a = heapq.heappop(self._afree)
            self._aby[val] = a
            self._action_write(writes, a, val)
        new_ids = []
        new_ranks = []
        for p in prepared:
            rid = heapq.heappop(self._cfree)
            a = self._aby[p.action]
            self._aref[a] += 1
            m = p.match
            m.valid, m.priority, m.action, m.counter = 1, p.priority, a, rid
            rank = ((_MAX_PRIORITY - p.priority) << _SEQ_BITS) | self._seq
            self._seq += 1
            self._index_rule(rid, rank, RULE.pack(m), m)
            new_ids.append(rid)
            new_ranks.append(rank)

        # New ranks exceed every old rank of the same priority (larger seq), so
        # sorting by rank puts each new rule after its equal-priority peers.
        merged = sorted(zip(self._ranks + new_ranks, self._ids + new_ids, strict=True))
        new_set = set(new_ids)
        final_ids = [rid for _, rid in merged]
        new_pos = [i for i, rid in enumerate(final_ids) if rid in new_set]
        p0 = new_pos[0]
        # Pass 1, bottom-up: shift old rules down; a line that will hold a new
        # rule gets a copy of the old rule after it (or stays/turns invalid at
        # the tail), so the region holds only old rules in order.
        nxt = 0
        for i in range(n_old + k - 1, p0 - 1, -1):
            rid = final_ids[i]
            if rid in new_set:
                self._rule_write(writes, i, nxt)
            else:
                nxt = self._packed[rid]
                self._rule_write(writes, i, nxt)
        # Pass 2: new rules in ascending index order; each write adds one rule
        # above all not-yet-visible new rules, so answers go from pre to post.
        for i in new_pos:
            self._rule_write(writes, i, self._packed[final_ids[i]])

        self._ranks = [r for r, _ in merged]
        self._ids = final_ids
        return InstallResult(self._finish(writes, apply), new_ids)

    # -- delete --------------------------------------------------------------
    def delete(self, which: int | Callable | Iterable[int], apply: bool = True) -> list[LineWrite]:
        """Delete by index, by a predicate over the rule records, or by a list of indices.

        The indices are the ones before the delete.  See :meth:`remove` for the
        write order.  IndexError (nothing changed) for an index out of range.
        """
        n = len(self._ids)
        if callable(which):
            recs = self.rules()
            positions = [i for i, r in enumerate(recs) if which(r)]
        elif isinstance(which, int):
            positions = [which]
        else:
            positions = list(which)
        for i in positions:
            if not isinstance(i, int) or not 0 <= i < n:
                raise IndexError(f"rule index {i!r} outside 0..{n - 1}")
        return self._delete_positions(positions, apply)

    def remove(self, rule_ids: Iterable[int], apply: bool = True) -> list[LineWrite]:
        """Delete the rules with these ids (KeyError, nothing changed, if one is absent).

        Written in order: each deleted line, in descending index order, is
        overwritten with a copy of the next kept rule (invalid if none); the
        kept rules are compacted top-down, the freed tail lines made invalid;
        then each action line no rule references any more is zeroed.  The
        rules' counters return to the free pool.
        """
        ids = list(rule_ids)
        for rid in ids:
            if rid not in self._rank:
                raise KeyError(f"no installed rule with id {rid}")
        return self._delete_positions([self.index_of(rid) for rid in ids], apply)

    def _delete_positions(self, positions, apply):
        dset = set(positions)
        if not dset:
            return []
        writes: list[LineWrite] = []
        n_old = len(self._ids)
        first = min(dset)
        # Pass 1, descending: each deleted line becomes a copy of the next kept rule.
        nxt = 0
        for i in range(n_old - 1, first - 1, -1):
            if i in dset:
                self._rule_write(writes, i, nxt)
            else:
                nxt = self._packed[self._ids[i]]
        # Pass 2, top-down compaction: the region only ever holds kept rules in order.
        dead = [self._ids[i] for i in sorted(dset)]
        kept = [e for i, e in enumerate(zip(self._ranks, self._ids, strict=True)) if i not in dset]
        self._ranks = [r for r, _ in kept]
        self._ids = [rid for _, rid in kept]
        n_new = len(self._ids)
        for i in range(first, n_old):
            self._rule_write(writes, i, self._packed[self._ids[i]] if i < n_new else 0)
        # Only now may action lines go: no rule line references them any more.
        for rid in dead:
            a = self._action_line(rid)
            self._cls.remove(self._rank.pop(rid), *self._mv.pop(rid))
            del self._packed[rid]
            if rid < self._counter_pool:
                heapq.heappush(self._cfree, rid)
            self._release(writes, a)
        return self._finish(writes, apply)

    # -- action references held outside the rule region ---------------------
    def _release(self, writes, a):
        self._aref[a] -= 1
        if self._aref[a] == 0:
            if self._aby.get(self._alines[a]) == a:
                del self._aby[self._alines[a]]
            self._action_write(writes, a, 0)
            heapq.heappush(self._afree, a)

    def acquire_action(self, record, apply: bool = True) -> tuple[int, list[LineWrite]]:
        """Take a reference to an action line holding ``record`` (shared if one
        exists, else written to the lowest free line): ``(line, writes)``.

        For holders outside the rule region (e.g. flow entries), so the line is
        not freed and reused under them.  TableFull if no line is free.
        """
        val = ACTION.pack(record)
        writes: list[LineWrite] = []
        a = self._aby.get(val)
        if a is None:
            if not self._afree:
                raise TableFull("actions", 1, 0)
            a = heapq.heappop(self._afree)
            self._aby[val] = a
            self._action_write(writes, a, val)
        self._aref[a] += 1
        return a, self._finish(writes, apply)

    def retain_action(self, a: int) -> None:
        """Add a reference to action line ``a`` as it is (e.g. a flow entry found
        pointing at it after a reload: the loader counts only rule references)."""
        if not 0 <= a < self.geom.n_actions:
            raise IndexError(f"action line {a} outside 0..{self.geom.n_actions - 1}")
        if self._aref[a] == 0:
            self._afree.remove(a)
            heapq.heapify(self._afree)
            self._aby.setdefault(self._alines[a], a)
        self._aref[a] += 1

    def release_action(self, a: int, apply: bool = True) -> list[LineWrite]:
        """Drop a reference taken with :meth:`acquire_action`/:meth:`retain_action`;
        the line is zeroed (the returned write) when no reference is left."""
        if not 0 <= a < self.geom.n_actions or self._aref[a] == 0:
            raise KeyError(f"action line {a} holds no reference")
        writes: list[LineWrite] = []
        self._release(writes, a)
        return self._finish(writes, apply)

    def action_refs(self, a: int) -> int:
        return self._aref[a]


# -- benchmark rule sets -------------------------------------------------------
_ETH_IPV4, _ETH_IPV6 = 0x0800, 0x86DD
_TCP, _UDP, _ICMP = 6, 17, 1
# (src_plen, dst_plen, weight) of IPv4 ACL entries: mostly "any/subnet -> subnet/host".
_V4_PLENS = [(0, 32, 6), (0, 24, 5), (24, 32, 3), (32, 32, 3), (16, 24, 2), (24, 24, 2), (0, 16, 1)]
_V6_PLENS = [(0, 64, 3), (0, 128, 3), (48, 128, 1), (64, 64, 1)]
_PORT_MASKS = [0xFC00, 0xFF00, 0xFFF0]   # port ranges as masked matches (e.g. 1024-2047)
_SERVICE_PORTS = (22, 53, 80, 443, 3306, 5432, 6379, 8080, 8443, 9090)
_PROVIDER_NET = (10 << 24) | (250 << 16)   # 10.250.0.0/16: provider infrastructure


def _bench_action(rng: random.Random):
    x = rng.random()
    if x < 0.55:
        return ACTION.new(output=1, out_port=rng.randrange(16))
    if x < 0.8:
        return ACTION.new(drop=1)
    if x < 0.9:
        return ACTION.new(to_host=1)
    return ACTION.new(ct_commit=1, output=1, out_port=rng.randrange(16))


def _weighted(rng, items):
    return rng.choices(items, weights=[t[-1] for t in items])[0][:-1]


def _v4_host(rng, tenant):
    """A host address of ``tenant``: one of its sixteen /24 subnets 10.t.s.0/24."""
    return (10 << 24) | (tenant << 16) | (rng.randrange(16) << 8) | rng.randrange(256)


def _v6_host(rng, tenant):
    return (0x20010DB8 << 96) | (tenant << 80) | (rng.randrange(16) << 64) | rng.getrandbits(64)


def build_rules_for_bench(n: int, seed: int = 0, n_tenants: int = 8) -> list[Rule]:
    """``n`` ACL-like rules (as :class:`Rule` objects), deterministic for ``seed``.

    Modelled on a multi-tenant security-group/ACL table (ClassBench-like
    shapes, first-match priorities):

    * per tenant (when ``n >= 2 * n_tenants``): a top-priority
      ``ct_state=+trk+est`` allow and a priority-1 default drop;
    * ~92 % tenant rules (``tenant_care``, owner 1..n_tenants, addresses in
      the tenant's sixteen /24s of 10.t.0.0/16), ~8 % provider rules matching
      every tenant towards the provider's 10.250.0.0/16;
    * ~92 % IPv4 with (src, dst) prefix lengths from seven /0../32 pairs, ~6 %
      IPv6 (/48../128), ~2 % ``+trk+new`` SYN rules;
    * L4: exact TCP/UDP destination port (60 %), a masked port range (15 %),
      protocol only (12 %), ICMP (8 %), none (5 %); 3 % also pin ``in_port``;
    * priorities: 64 levels 1000..1630 in ACL order (so many ties); the few
      broad rules (dst wider than /24 or no L4 match) sit at 100..190, below
      the specific ones, as an ACL's catch-alls do;
    * actions from ~34 distinct records, so they deduplicate.

    That gives ~90 distinct mask signatures at 1k rules, ~170 at 10k.
    """
    rng = random.Random(seed)
    out = []
    if n >= 2 * n_tenants:
        for t in range(1, n_tenants + 1):
            m = RULE.new(valid=1, tenant_care=1, owner=t, priority=5000,
                         ct_state=CtState.TRK | CtState.EST, ct_state_mask=CtState.TRK | CtState.EST)
            out.append(Rule(priority=5000, match=m, actions=ACTION.new(output=1, out_port=t % 16)))
            m = RULE.new(valid=1, tenant_care=1, owner=t, priority=1)
            out.append(Rule(priority=1, match=m, actions=ACTION.new(drop=1)))
    while len(out) < n:
        m = RULE.new(valid=1)
        tenant = rng.randrange(1, n_tenants + 1)
        provider = rng.random() < 0.08
        if not provider:
            m.tenant_care, m.owner = 1, tenant
        x = rng.random()
        ct = x >= 0.98
        if x < 0.92 or ct:
            m.eth_type_care, m.eth_type = 1, _ETH_IPV4
            splen, dplen = (0, 24) if ct else _weighted(rng, _V4_PLENS)
            m.src_plen = 96 + splen if splen else 0
            m.dst_plen = 96 + dplen if dplen else 0
            dst = _PROVIDER_NET | rng.getrandbits(12) if provider else _v4_host(rng, tenant)
            m.src_ip = ipv4_mapped(_v4_host(rng, rng.randrange(1, n_tenants + 1))) & prefix_mask(m.src_plen)
            m.dst_ip = ipv4_mapped(dst) & prefix_mask(m.dst_plen)
        else:
            m.eth_type_care, m.eth_type = 1, _ETH_IPV6
            m.src_plen, m.dst_plen = _weighted(rng, _V6_PLENS)
            m.src_ip = _v6_host(rng, rng.randrange(1, n_tenants + 1)) & prefix_mask(m.src_plen)
            m.dst_ip = _v6_host(rng, 0 if provider else tenant) & prefix_mask(m.dst_plen)
        l4 = True
        if ct:
            m.ip_proto_care, m.ip_proto = 1, _TCP
            m.ct_state_mask = CtState.TRK | CtState.NEW
            m.ct_state = CtState.TRK | CtState.NEW
            m.tcp_flags = m.tcp_flags_mask = TcpFlags.SYN
        else:
            y = rng.random()
            if y < 0.6:
                m.ip_proto_care, m.ip_proto = 1, rng.choice((_TCP, _TCP, _UDP))
                m.dst_port = rng.choice(_SERVICE_PORTS) if rng.random() < 0.7 else rng.randrange(1, 65536)
                m.dst_port_mask = 0xFFFF
            elif y < 0.75:
                m.ip_proto_care, m.ip_proto = 1, rng.choice((_TCP, _UDP))
                m.dst_port_mask = rng.choice(_PORT_MASKS)
                m.dst_port = rng.randrange(65536) & m.dst_port_mask
            elif y < 0.87:
                m.ip_proto_care, m.ip_proto = 1, rng.choice((_TCP, _UDP))
            elif y < 0.95:
                m.ip_proto_care, m.ip_proto = 1, _ICMP
            else:
                l4 = False
        if rng.random() < 0.03:
            m.in_port_care, m.in_port = 1, rng.randrange(16)
        broad = not l4 or (m.eth_type == _ETH_IPV4 and 0 < m.dst_plen < 96 + 24) or m.dst_plen == 0
        prio = (100 if broad else 1000) + 10 * rng.randrange(10 if broad else 64)
        m.priority = prio
        out.append(Rule(priority=prio, match=m, actions=_bench_action(rng)))
    return out


def keys_for_bench(rules, n: int, seed: int = 0, hit_fraction: float = 0.5, n_tenants: int = 8) -> list:
    """``n`` PacketKey records, deterministic for ``seed``.

    A ``hit_fraction`` share is built from a random rule's match (each masked
    bit from the rule, the rest random), so it matches that rule or one above
    it; the rest is random traffic between the tenants' hosts (and towards the
    provider net) with well-known or random ports.  ``ct_state`` is mostly
    untracked or ``+trk+new``: established traffic is the flow table's, not
    the rule classifier's.  ``rules`` are :class:`Rule` objects or RuleEntry
    records.
    """
    rng = random.Random(seed)
    recs = [getattr(r, "match", r) for r in rules]
    keys = []
    for _ in range(n):
        k = PKEY.new()
        f = k.flow = FKEY.new()
        f.tenant = rng.randrange(1, n_tenants + 1)
        f.in_port = rng.randrange(16)
        v6 = rng.random() < 0.06
        f.eth_type = _ETH_IPV6 if v6 else _ETH_IPV4
        f.ip_proto = rng.choice((_TCP, _TCP, _TCP, _UDP, _ICMP))
        if f.ip_proto != _ICMP:
            f.src_port = rng.randrange(1024, 65536)
            f.dst_port = rng.choice(_SERVICE_PORTS) if rng.random() < 0.6 else rng.randrange(65536)
        if v6:
            f.src_ip = _v6_host(rng, rng.randrange(1, n_tenants + 1))
            f.dst_ip = _v6_host(rng, f.tenant)
        else:
            f.src_ip = ipv4_mapped(_v4_host(rng, rng.randrange(1, n_tenants + 1)))
            dst = _PROVIDER_NET | rng.getrandbits(12) if rng.random() < 0.05 else _v4_host(rng, f.tenant)
            f.dst_ip = ipv4_mapped(dst)
        if f.ip_proto == _TCP:
            k.tcp_flags = rng.choice((TcpFlags.SYN, TcpFlags.ACK, TcpFlags.ACK | TcpFlags.PSH))
        k.ct_state = rng.choices((0, CtState.TRK | CtState.NEW, CtState.TRK | CtState.EST),
                                 weights=(6, 3, 1))[0]
        pk = PKEY.pack(k)
        if recs and rng.random() < hit_fraction:
            mask, value = rule_mask_value(rng.choice(recs))
            pk = value | (pk & ~mask)
        keys.append(PKEY.unpack(pk))
    return keys
