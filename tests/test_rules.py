"""RuleTable: the rule/action regions of the image and the tuple-space classifier.

Expected answers come from the oracle (``linear_classify`` / ``rule_matches``
from model/match.py) evaluated over what is *in memory*, decoded line by
line, and from an independent statement of the ordering contract (stable
sort by descending priority) -- never from the code under test.
"""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxlnic.config import NicConfig
from cxlnic.model.match import (
    ACTION,
    PKEY,
    RULE,
    Rule,
    ipv4_mapped,
    linear_classify,
    rule_matches,
    steer_key,
)
from cxlnic.model.memory import BytearrayMemory, FormatError, Geometry, format_image
from cxlnic.model.rules import (
    RuleTable,
    TableFull,
    TupleSpaceClassifier,
    build_rules_for_bench,
    keys_for_bench,
    rule_mask_value,
)

CFG = NicConfig(n_rules=64, cam_entries=16, n_actions=32, n_buckets=16, n_tenants=2)
ALL128 = (1 << 128) - 1
ACTIONS = [ACTION.new(output=1, out_port=p) for p in range(1, 5)] + [ACTION.new(drop=1),
                                                                      ACTION.new(to_host=1)]


def examples(n):
    """``n`` examples under the default ("ci") profile, scaled up under "long"."""
    return n * max(1, settings.default.max_examples // 100)


def fresh(cfg=CFG):
    mem = BytearrayMemory(cfg.image_lines)
    mem.apply(format_image(cfg))
    return mem, RuleTable(mem)


def mem_rule_lines(mem):
    """Every rule line of the image, decoded from memory."""
    g = Geometry.read(mem)
    return [RULE.from_bytes(mem.read_line(g.rules_off + i)) for i in range(g.n_rules)]


def mem_action(mem, a):
    return ACTION.from_bytes(mem.read_line(Geometry.read(mem).actions_off + a))


def copy_mem(mem):
    m = BytearrayMemory(mem.n_lines)
    m.buf[:] = mem.buf
    return m


def match_content(r):
    """A rule record's match part: everything but the table-assigned action and counter."""
    c = RULE.unpack(RULE.pack(r))
    c.action = c.counter = 0
    return RULE.pack(c)


def expected_match(rule):
    m = RULE.unpack(RULE.pack(rule.match))
    m.valid, m.priority, m.action, m.counter = 1, rule.priority, 0, 0
    return RULE.pack(m)


# -- strategies ------------------------------------------------------------------
ADDRS = [ipv4_mapped(0x0A000001), ipv4_mapped(0x0A000102), ipv4_mapped(0x0A0101FF), ipv4_mapped(0xC0A80001),
         0x20010DB8 << 96, (0x20010DB8 << 96) | 0xFF]


@st.composite
def rules_st(draw, max_size=40):
    n = draw(st.integers(1, max_size))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        m = RULE.new(valid=1)
        pick = rng.random
        m.tenant_care, m.owner = pick() < 0.5, rng.randrange(3)
        m.in_port_care, m.in_port = pick() < 0.2, rng.randrange(3)
        m.eth_type_care, m.eth_type = pick() < 0.4, rng.choice((0x0800, 0x86DD))
        m.ip_proto_care, m.ip_proto = pick() < 0.4, rng.choice((6, 17))
        m.vlan_care, m.vlan_valid = pick() < 0.2, rng.randrange(2)
        m.vlan_id, m.vlan_id_mask = rng.randrange(4), rng.choice((0, 0xFFF, 1, 2))
        m.src_port, m.src_port_mask = rng.randrange(4), rng.choice((0, 0, 0xFFFF, 1, 0xFFFC))
        m.dst_port, m.dst_port_mask = rng.randrange(4), rng.choice((0, 0xFFFF, 0xFFFF, 2))
        m.tcp_flags, m.tcp_flags_mask = rng.randrange(4), rng.choice((0, 0, 2, 3))
        m.ct_state, m.ct_state_mask = rng.randrange(4), rng.choice((0, 0, 0x22, 1))
        # host bits beyond the prefix are left random: the rule must ignore them
        m.src_plen = rng.choice((0, 0, 96, 120, 127, 128, rng.randrange(129)))
        m.dst_plen = rng.choice((0, 104, 120, 128, rng.randrange(129)))
        m.src_ip = rng.choice(ADDRS) ^ (rng.getrandbits(8) if pick() < 0.3 else 0)
        m.dst_ip = rng.choice(ADDRS) ^ (rng.getrandbits(8) if pick() < 0.3 else 0)
        m.tenant_care, m.in_port_care, m.eth_type_care, m.ip_proto_care, m.vlan_care = (
            int(x) for x in (m.tenant_care, m.in_port_care, m.eth_type_care, m.ip_proto_care, m.vlan_care))
        prio = rng.choice((0, 1, 2, 3, 3, 7, 0xFFFF))
        m.priority = prio
        out.append(Rule(priority=prio, match=m, actions=rng.choice(ACTIONS)))
    return out


def random_key(rng):
    k = PKEY.new()
    f = k.flow
    f.tenant, f.in_port = rng.randrange(3), rng.randrange(3)
    f.eth_type, f.ip_proto = rng.choice((0x0800, 0x86DD, 0x0806)), rng.choice((6, 17, 1))
    f.vlan_valid, f.vlan_id = rng.randrange(2), rng.randrange(4)
    f.src_port, f.dst_port = rng.randrange(4), rng.randrange(4)
    f.src_ip = rng.choice(ADDRS) ^ rng.getrandbits(rng.choice((0, 8, 32)))
    f.dst_ip = rng.choice(ADDRS) ^ rng.getrandbits(rng.choice((0, 8, 32)))
    k.tcp_flags, k.ct_state = rng.randrange(4), rng.choice((0, 0x22, 0x21, 1))
    return k


def key_from_rule(rng, r):
    """A key that matches rule record ``r``: its masked bits from the rule, the rest random."""
    k = steer_key(random_key(rng), r)
    assert rule_matches(r, k)
    return k


def make_keys(seed, rules, n=30):
    rng = random.Random(seed)
    recs = [r.match for r in rules]
    return [key_from_rule(rng, rng.choice(recs)) if recs and i % 2 else random_key(rng) for i in range(n)]


def check_classify(mem, table, keys):
    in_mem = mem_rule_lines(mem)
    recs = table.rules()
    assert [RULE.pack(r) for r in recs] == [RULE.pack(r) for r in in_mem[:len(recs)]]
    hits = 0
    for k in keys:
        want = linear_classify(in_mem, k)
        assert table.classify(k) == want
        assert table.classify(PKEY.pack(k)) == want
        assert linear_classify(recs, k) == want
        hits += want is not None
    return hits


def split_batches(rules, seed):
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(rules):
        j = i + rng.randint(1, max(1, len(rules) // 2))
        out.append(rules[i:j])
        i = j
    return out


# -- classification vs the oracle --------------------------------------------------
@settings(max_examples=examples(60), deadline=None)
@given(rules=rules_st(), seed=st.integers(0, 2**32 - 1))
def test_classify_equals_linear_scan(rules, seed):
    mem, t = fresh()
    for batch in split_batches(rules, seed):
        t.install(batch)
    keys = make_keys(seed, rules)
    check_classify(mem, t, keys)
    # A second reader built from the same bytes classifies the same way.
    check_classify(mem, RuleTable(mem), keys)
    rng = random.Random(seed)
    while len(t):
        if rng.random() < 0.5:
            t.delete(rng.sample(range(len(t)), rng.randint(1, min(3, len(t)))))
        else:
            t.remove(rng.sample(t.ids(), 1))
        check_classify(mem, t, keys)
        if rng.random() < 0.3:
            more = rules[: rng.randint(0, 5)]
            if len(t) + len(more) <= CFG.n_rules:
                t.install(more)
                check_classify(mem, t, keys)
            break
    check_classify(mem, RuleTable(mem), keys)


@settings(max_examples=examples(100), deadline=None)
@given(rules=rules_st(max_size=5), seed=st.integers(0, 2**32 - 1))
def test_rule_mask_value_is_exact(rules, seed):
    rng = random.Random(seed)
    for rule in rules:
        mask, value = rule_mask_value(rule.match)
        for k in [random_key(rng) for _ in range(10)] + [key_from_rule(rng, rule.match) for _ in range(5)]:
            assert (PKEY.pack(k) & mask == value) == rule_matches(rule.match, k)


def test_classifier_partition_by_tenant():
    # Entries caring about the whole partition field are found only under their value.
    c = TupleSpaceClassifier(part_offset=0, part_width=4)
    c.add(5, 0xFF, 0x12)       # partitioned (mask covers the low nibble): tenant 2
    c.add(7, 0xF0, 0x10)       # not partitioned
    c.add(3, 0x0F, 0x03)       # partitioned: tenant 3
    assert c.lookup(0x12) == 5
    assert c.lookup(0x13) == 3
    assert c.lookup(0x14) == 7
    assert c.lookup(0x24) is None
    c.remove(5, 0xFF, 0x12)
    assert c.lookup(0x12) == 7
    c.add(6, 0xF0, 0x10)       # duplicate value, lower rank
    assert c.lookup(0x1F) == 6
    c.remove(6, 0xF0, 0x10)
    assert c.lookup(0x1F) == 7
    with pytest.raises(KeyError):
        c.remove(9, 0xF0, 0x10)
    assert len(c) == 2 and c.n_groups == 2


def test_classifier_early_stop_keeps_searching_lower_ranks():
    # Group B (lowest rank 1) is probed first and matches at rank 3; group A's
    # lowest rank, 2, is still below 3, so A must be probed too.
    c = TupleSpaceClassifier()
    c.add(1, 0xF0, 0x50)
    c.add(3, 0xF0, 0x10)
    c.add(2, 0x0F, 0x03)
    c.add(4, 0xFF, 0x13)
    assert c.lookup(0x13) == 2
    assert c.lookup(0x14) == 3
    assert c.lookup(0x53) == 1
    c.remove(2, 0x0F, 0x03)
    assert c.lookup(0x13) == 3
    c.remove(3, 0xF0, 0x10)
    assert c.lookup(0x13) == 4


# -- the table bytes ------------------------------------------------------------
@settings(max_examples=examples(60), deadline=None)
@given(rules=rules_st(), seed=st.integers(0, 2**32 - 1))
def test_table_bytes(rules, seed):
    mem, t = fresh()
    ids = []
    for batch in split_batches(rules, seed):
        ids += t.install(batch).ids
    # The contract, stated independently: stable sort by descending priority.
    installed = list(zip(ids, rules, strict=True))

    def check(installed):
        order = sorted(installed, key=lambda e: -e[1].priority)
        lines = mem_rule_lines(mem)
        assert all(RULE.pack(r) == 0 for r in lines[len(order):])
        valid = lines[:len(order)]
        assert [match_content(r) for r in valid] == [expected_match(rule) for _, rule in order]
        assert [r.counter for r in valid] == [rid for rid, _ in order] == t.ids()
        assert len(set(r.counter for r in valid)) == len(valid)
        assert all(r.counter < CFG.n_rules for r in valid)
        for i, (r, (_, rule)) in enumerate(zip(valid, order, strict=True)):
            assert ACTION.pack(mem_action(mem, r.action)) == ACTION.pack(rule.actions)
            assert ACTION.pack(t.action_of(i)) == ACTION.pack(rule.actions)
            assert t.counter_of(i) == r.counter
        # one line per distinct action record; unreferenced lines are zero
        used = {r.action for r in valid}
        assert len(used) == len({ACTION.pack(rule.actions) for _, rule in order})
        for a in range(CFG.n_actions):
            if a not in used:
                assert ACTION.pack(mem_action(mem, a)) == 0
        assert t.free_actions() == CFG.n_actions - len(used)
        assert t.free_counters() == CFG.n_rules - len(order)

    check(installed)
    rng = random.Random(seed)
    for _ in range(3):
        if not installed:
            break
        gone = set(rng.sample([rid for rid, _ in installed], rng.randint(1, len(installed))))
        t.remove(gone)
        installed = [e for e in installed if e[0] not in gone]
        check(installed)


def test_priority_order_and_tie_break():
    mem, t = fresh()

    def rule(prio, port):
        return Rule(priority=prio, match=RULE.new(dst_port=port, dst_port_mask=0xFFFF), actions=ACTIONS[0])

    t.install([rule(5, 1), rule(5, 2)])
    t.install([rule(5, 3)])
    t.install([rule(6, 4)])
    t.install([rule(4, 5), rule(6, 6), rule(5, 7)])
    assert [r.dst_port for r in mem_rule_lines(mem)[:len(t)]] == [4, 6, 1, 2, 3, 7, 5]
    assert [r.priority for r in mem_rule_lines(mem)[:len(t)]] == [6, 6, 5, 5, 5, 5, 4]


# -- write order -----------------------------------------------------------------
def test_single_insert_and_delete_write_pattern():
    mem, t = fresh()
    g = t.geom
    low = [Rule(priority=10, match=RULE.new(src_port=i, src_port_mask=0xFFFF), actions=ACTIONS[0])
           for i in range(5)]
    t.install(low)
    top = Rule(priority=20, match=RULE.new(src_port=99, src_port_mask=0xFFFF), actions=ACTIONS[1])
    w = t.install([top])
    # action first, then line 5 := rule 4, ..., line 1 := rule 0, line 0 := new
    assert w[0].index == g.actions_off + 1
    assert [x.index - g.rules_off for x in w[1:]] == [5, 4, 3, 2, 1, 0]
    assert [RULE.from_bytes(x.data).src_port for x in w[1:]] == [4, 3, 2, 1, 0, 99]
    # delete index 2: line 2 := rule 3, line 3 := rule 4, line 4 := rule 5, line 5 := invalid
    w = t.delete(2)
    assert [x.index - g.rules_off for x in w] == [2, 3, 4, 5]
    assert [RULE.from_bytes(x.data).src_port for x in w[:3]] == [2, 3, 4]
    assert w[3].data == bytes(64)
    # deleting the only user of an action: its line is zeroed after the rule lines
    w = t.delete(0)
    assert [x.index for x in w] == [g.rules_off + i for i in range(5)] + [g.actions_off + 1]
    assert w[-1].data == bytes(64)
    # appending below everything writes one line
    w = t.install([Rule(priority=1, match=RULE.new(), actions=ACTIONS[0])])
    assert [x.index - g.rules_off for x in w] == [4]


@st.composite
def atomic_case(draw):
    initial = draw(rules_st(max_size=30))
    extra = draw(rules_st(max_size=8))
    kind = draw(st.sampled_from(["install", "delete", "remove"]))
    return initial, extra, kind, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=examples(80), deadline=None)
@given(case=atomic_case())
def test_every_intermediate_state_gives_pre_or_post_answer(case):
    initial, extra, kind, seed = case
    rng = random.Random(seed)
    mem, t = fresh()
    t.install(initial)
    keys = make_keys(seed, initial + extra, n=40)
    before = mem_rule_lines(mem)
    if kind == "install":
        writes = t.install(extra, apply=False)
    elif kind == "delete":
        writes = t.delete(rng.sample(range(len(t)), rng.randint(1, len(t))), apply=False)
    else:
        writes = t.remove(rng.sample(t.ids(), rng.randint(1, len(t))), apply=False)
    assert mem_rule_lines(mem) == before      # apply=False: nothing written yet

    def answers(lines):
        out = []
        for k in keys:
            i = linear_classify(lines, k)
            out.append(None if i is None else RULE.pack(lines[i]))
        return out

    post_mem = copy_mem(mem)
    post_mem.apply(writes)
    after = mem_rule_lines(post_mem)
    pre, post = answers(before), answers(after)
    # every rule id's action record, from the pre and post images
    act = {}
    for m, lines in ((mem, before), (post_mem, after)):
        for r in lines:
            if r.valid:
                act[r.counter] = ACTION.pack(mem_action(m, r.action))
    for w in writes:
        mem.write_line(w.index, w.data)
        lines = mem_rule_lines(mem)
        for a, b, c in zip(answers(lines), pre, post, strict=True):
            assert a in (b, c)
        for r in lines:    # every referenced action line holds the rule's action
            if r.valid:
                assert ACTION.pack(mem_action(mem, r.action)) == act[r.counter]
    assert bytes(mem.buf) == bytes(post_mem.buf)
    # apply=False left the table in the post state
    assert [RULE.pack(r) for r in t.rules()] == [RULE.pack(r) for r in after if r.valid]
    check_classify(mem, t, keys)


# -- capacity ----------------------------------------------------------------------
def snapshot(mem, t, keys):
    return (bytes(mem.buf), [RULE.pack(r) for r in t.rules()], t.ids(), t.free_actions(),
            t.free_counters(), [t.classify(k) for k in keys])


def plain(i, prio=5, action=None):
    return Rule(priority=prio, match=RULE.new(valid=1, dst_port=i, dst_port_mask=0xFFFF),
                actions=action if action is not None else ACTIONS[i % len(ACTIONS)])


def test_table_full_rules():
    mem, t = fresh()
    t.install([plain(i) for i in range(60)])
    keys = make_keys(1, [plain(i) for i in range(70)])
    snap = snapshot(mem, t, keys)
    with pytest.raises(TableFull) as e:
        t.install([plain(i, prio=9) for i in range(60, 65)])
    assert e.value.resource == "rules"
    assert snapshot(mem, t, keys) == snap
    with pytest.raises(TableFull):
        t.install([plain(i, prio=9) for i in range(60, 65)], apply=False)
    assert snapshot(mem, t, keys) == snap
    t.install([plain(i, prio=9) for i in range(60, 64)])
    assert len(t) == 64
    check_classify(mem, t, keys)


def test_table_full_actions():
    cfg = CFG.with_(n_actions=4)
    mem, t = fresh(cfg)
    t.install([plain(i, action=ACTIONS[i % 3]) for i in range(6)])
    keys = make_keys(2, [plain(i) for i in range(10)])
    snap = snapshot(mem, t, keys)
    # two new distinct records but only one free line: the whole batch is refused
    with pytest.raises(TableFull) as e:
        t.install([plain(7, action=ACTIONS[0]), plain(8, action=ACTIONS[3]), plain(9, action=ACTIONS[4])])
    assert e.value.resource == "actions"
    assert snapshot(mem, t, keys) == snap
    t.install([plain(7, action=ACTIONS[0]), plain(8, action=ACTIONS[3]), plain(9, action=ACTIONS[3])])
    assert t.free_actions() == 0
    with pytest.raises(TableFull):
        t.acquire_action(ACTIONS[5])


def test_table_full_counters():
    cfg = CFG.with_(n_counters=6)
    mem, t = fresh(cfg)
    t.install([plain(i) for i in range(4)])
    keys = make_keys(3, [plain(i) for i in range(8)])
    snap = snapshot(mem, t, keys)
    with pytest.raises(TableFull) as e:
        t.install([plain(i) for i in range(4, 7)])
    assert e.value.resource == "counters"
    assert snapshot(mem, t, keys) == snap


def test_bad_rules_change_nothing():
    mem, t = fresh()
    t.install([plain(i) for i in range(3)])
    snap = snapshot(mem, t, [])
    with pytest.raises(ValueError):
        t.install([plain(5), Rule(priority=0x10000, match=RULE.new(), actions=ACTIONS[0])])
    with pytest.raises(ValueError):
        t.install([plain(5), Rule(priority=1, match=RULE.new(src_plen=129), actions=ACTIONS[0])])
    with pytest.raises(KeyError):
        t.remove([t.id_at(0), 12345])
    with pytest.raises(IndexError):
        t.delete([0, 3])
    assert snapshot(mem, t, []) == snap


# -- identity, counters, actions ----------------------------------------------------
def test_ids_are_counters_and_stable():
    mem, t = fresh()
    ids = t.install([plain(i, prio=1) for i in range(3)]).ids
    assert ids == [0, 1, 2]
    t.install([plain(10 + i, prio=9) for i in range(2)])
    for i, rid in enumerate(ids):
        assert t.rule_at(t.index_of(rid)).dst_port == i
        assert t.rule_at(t.index_of(rid)).counter == rid
    t.remove([1])
    assert [t.rule_at(i).dst_port for i in range(len(t))] == [10, 11, 0, 2]
    assert t.install([plain(20, prio=0)]).ids == [1]      # lowest free counter first
    assert t.counter_of(len(t) - 1) == 1
    t.delete(lambda r: r.dst_port >= 10)
    assert [t.rule_at(i).dst_port for i in range(len(t))] == [0, 2]


def test_action_sharing_and_external_references():
    mem, t = fresh()
    ids = t.install([plain(1, action=ACTIONS[2]), plain(2, action=ACTIONS[2])]).ids
    a = t.action_index_of(0)
    assert t.action_index_of(1) == a and t.action_refs(a) == 2
    line, w = t.acquire_action(ACTIONS[2])
    assert line == a and w == []
    t.remove(ids)
    assert ACTION.pack(mem_action(mem, a)) == ACTION.pack(ACTIONS[2])   # still held
    w = t.release_action(a)
    assert [x.data for x in w] == [bytes(64)] and ACTION.pack(mem_action(mem, a)) == 0
    line, w = t.acquire_action(ACTIONS[3])
    assert ACTION.pack(mem_action(mem, line)) == ACTION.pack(ACTIONS[3])
    # a reloaded table counts only rule references; an external holder re-registers
    t2 = RuleTable(mem)
    t2.retain_action(line)
    assert t2.install([plain(5, action=ACTIONS[4])]).ids == [0]
    assert t2.action_index_of(0) != line
    with pytest.raises(KeyError):
        t2.release_action(line + 5)


# -- loading an existing image -------------------------------------------------------
def test_load_rejects_inconsistent_images():
    mem, t = fresh()
    t.install([plain(i, prio=5 - i) for i in range(4)])
    g = t.geom
    lines = [mem.read_line(g.rules_off + i) for i in range(4)]
    assert RuleTable(mem).rules() == t.rules()

    bad = copy_mem(mem)          # a hole: not compact
    bad.write_line(g.rules_off + 1, bytes(64))
    with pytest.raises(FormatError, match="not compact"):
        RuleTable(bad)
    bad = copy_mem(mem)          # swapped: not in priority order
    bad.write_line(g.rules_off + 1, lines[2])
    bad.write_line(g.rules_off + 2, lines[1])
    with pytest.raises(FormatError, match="priority order"):
        RuleTable(bad)
    bad = copy_mem(mem)          # two rules, one counter
    r = RULE.from_bytes(lines[1])
    r.counter = RULE.from_bytes(lines[0]).counter
    bad.write_line(g.rules_off + 1, RULE.to_bytes(r))
    with pytest.raises(FormatError, match="counter"):
        RuleTable(bad)


# -- the benchmark rule sets -----------------------------------------------------------
def test_bench_rules_deterministic_and_classified_exactly():
    a = build_rules_for_bench(1500, seed=11)
    b = build_rules_for_bench(1500, seed=11)
    assert [(r.priority, RULE.pack(r.match), ACTION.pack(r.actions)) for r in a] == \
           [(r.priority, RULE.pack(r.match), ACTION.pack(r.actions)) for r in b]
    assert [RULE.pack(r.match) for r in build_rules_for_bench(50, seed=12)] != \
           [RULE.pack(r.match) for r in a[:50]]
    cfg = NicConfig(n_rules=2048, cam_entries=64, n_actions=64, n_buckets=16, n_tenants=2)
    mem, t = fresh(cfg)
    t.install(a)
    assert len(t) == 1500
    keys = keys_for_bench(a, 150, seed=5)
    assert [PKEY.pack(k) for k in keys] == [PKEY.pack(k) for k in keys_for_bench(a, 150, seed=5)]
    in_mem = mem_rule_lines(mem)
    answers = [linear_classify(in_mem, k) for k in keys]
    assert [t.classify(k) for k in keys] == answers
    assert len({i for i in answers if i is not None}) > 20      # many different rules hit
