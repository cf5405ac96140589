"""cocotb testbench: TernaryCam under Verilator against model/match.py's ``rule_matches``.

Run through ``tests/test_cam_rtl.py::test_cam_verilator`` (``pytest -m sim``).  The
random rule/key generators and the reference lookup here are also used by the
Amaranth-simulator tests in ``tests/test_cam_rtl.py``.
"""

import os
import random

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from cxlnic.hdl.cam import CamResult, CamWrite
from cxlnic.model.match import PKEY, RULE, rule_matches, steer_key
from cxlnic.tb.common import clock_and_reset

ENTRIES = int(os.environ.get("CXLNIC_CAM_ENTRIES", "64"))
TIMEOUT_CYCLES = 2000      # cycles without progress before a stream is declared stuck
RESULT_FIELDS = ("hit", "index", "action", "counter", "ct_masked_hit", "ct_conflict")


def random_rule(rng, *, valid_p=0.9, broad_p=0.15):
    """A random RuleEntry record: random care bits, masks, prefix lengths, owners, some ct masks;
    a fraction ``broad_p`` of them wildcard almost everything."""
    r = RULE.new(valid=int(rng.random() < valid_p))
    r.in_port_care, r.eth_type_care, r.ip_proto_care = (int(rng.random() < 0.3) for _ in range(3))
    r.vlan_care, r.tenant_care = int(rng.random() < 0.3), int(rng.random() < 0.4)
    r.owner = rng.choice([0, 1, 2, rng.getrandbits(24)])
    r.priority = rng.getrandbits(16)
    r.action, r.counter = rng.getrandbits(20), rng.getrandbits(20)
    r.in_port, r.eth_type, r.ip_proto = rng.getrandbits(8), rng.choice([0x800, 0x86DD]), rng.choice([6, 17])
    r.vlan_valid, r.vlan_id, r.vlan_id_mask = rng.getrandbits(1), rng.getrandbits(12), rng.getrandbits(12)
    for f in ("src_port", "dst_port"):
        setattr(r, f, rng.getrandbits(16))
        setattr(r, f + "_mask", rng.choice([0, 0, 0xFFFF, 0xFF00, rng.getrandbits(16)]))
    r.tcp_flags, r.tcp_flags_mask = rng.getrandbits(8), rng.choice([0, 0, 0x12, rng.getrandbits(8)])
    if rng.random() < 0.3:
        r.ct_state, r.ct_state_mask = rng.getrandbits(8), rng.choice([0x20, 0x22, rng.getrandbits(8)])
    r.src_plen, r.dst_plen = (rng.choice([0, 0, 8, 24, 32, 64, 120, 128, rng.randint(0, 128)]) for _ in range(2))
    r.src_ip, r.dst_ip = rng.getrandbits(128), rng.getrandbits(128)
    if rng.random() < broad_p:
        # a wildcard rule: shadows the specific rules after it, so priority and the
        # ct-conflict window (entries up to the hit only) are exercised
        r.in_port_care = r.vlan_care = r.eth_type_care = 0
        r.src_port_mask = r.dst_port_mask = r.tcp_flags_mask = 0
        r.src_plen, r.dst_plen = rng.choice([2, 4, 8]), 0
        if rng.random() < 0.3:
            r.ct_state, r.ct_state_mask = rng.getrandbits(8), rng.choice([0x20, 0x22, rng.getrandbits(8)])
    return r


def random_key(rng, rules):
    """A random PacketKey; half of them built from a rule so that it (probably) hits."""
    k = PKEY.new()
    f = k.flow
    f.tenant, f.in_port, f.eth_type = rng.choice([0, 1, 2, rng.getrandbits(24)]), rng.getrandbits(8), 0x800
    f.vlan_valid, f.vlan_id, f.ip_proto = rng.getrandbits(1), rng.getrandbits(12), rng.choice([6, 17, 1])
    f.src_port, f.dst_port = rng.getrandbits(16), rng.getrandbits(16)
    f.src_ip, f.dst_ip = rng.getrandbits(128), rng.getrandbits(128)
    k.tcp_flags = rng.getrandbits(8)
    k.ct_state = 0 if rng.random() < 0.7 else rng.getrandbits(8)
    if rules and rng.random() < 0.5:
        # keep ct_state half the time: a ct rule may then match only with ct_state ignored
        steer_key(k, rng.choice(rules), ct_state=rng.random() < 0.5)
    return k


def ref_lookup(rules, key):
    """The expected CamResult fields (a dict) for PacketKey record ``key`` over the CAM's entry
    records ``rules`` (None = never written), from ``rule_matches`` alone.

    ``ct_conflict`` and ``ct_masked_hit`` use copies of the rules with ``ct_state_mask``
    cleared (the CAM's second match vector)."""
    live = [r if r is not None else RULE.new() for r in rules]
    no_ct = []
    for r in live:
        if r.ct_state_mask:
            r = RULE.unpack(RULE.pack(r))
            r.ct_state_mask = 0
        no_ct.append(r)
    hit = next((i for i, r in enumerate(live) if rule_matches(r, key)), None)
    masked = int(any(rule_matches(c, key) for c in no_ct))
    if hit is None:
        return dict(hit=0, index=0, action=0, counter=0, ct_masked_hit=masked, ct_conflict=0)
    conflict = any(live[j].ct_state_mask and rule_matches(no_ct[j], key) for j in range(hit + 1))
    return dict(hit=1, index=hit, action=live[hit].action, counter=live[hit].counter,
                ct_masked_hit=masked, ct_conflict=int(conflict))


class TB:
    """Owns the clock, reset, the write driver, the lookup driver and the monitors of a TernaryCam."""

    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = random.Random(seed)
        self.wlay, self.rlay = CamWrite(ENTRIES), CamResult(ENTRIES)
        self.line_off = self.wlay["line"].offset
        self.rules = [None] * ENTRIES          # the entries as the DUT holds them (input monitor)
        self.accepted = []                      # (key, rules in force) per accepted lookup
        self.results = []                       # output monitor
        self.writes_accepted = 0

    async def reset(self):
        d = self.dut
        await clock_and_reset(d, {"w__valid": 0, "i__valid": 0, "o__ready": 0})
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        """Input monitor (accepted writes and lookups) and output monitor, sampled once per cycle
        (drivers change signals only right after a rising edge; a transfer sampled here
        happens at the next edge).

        A lookup sees the writes accepted in earlier cycles (the documented ordering),
        so the lookup is recorded before this cycle's write is applied."""
        d = self.dut
        while True:
            await ReadOnly()
            if d.rst.value:
                await RisingEdge(d.clk)
                continue
            if d.i__valid.value and d.i__ready.value:
                self.accepted.append((PKEY.unpack(d.i__payload.value.to_unsigned()), list(self.rules)))
            if d.w__valid.value and d.w__ready.value:
                w = self.wlay.from_bits(d.w__payload.value.to_unsigned())
                self.rules[int(w.index)] = RULE.unpack(w.line.as_value().value)
                self.writes_accepted += 1
            if d.o__valid.value and d.o__ready.value:
                r = self.rlay.from_bits(d.o__payload.value.to_unsigned())
                self.results.append({f: int(getattr(r, f)) for f in RESULT_FIELDS})
            await RisingEdge(d.clk)

    async def backpressure(self, stall):
        d = self.dut
        while True:
            d.o__ready.value = int(self.rng.random() >= stall)
            await RisingEdge(d.clk)

    async def write(self, index, rule):
        d = self.dut
        d.w__valid.value = 1
        d.w__payload.value = index | RULE.pack(rule) << self.line_off
        await RisingEdge(d.clk)             # ready is constantly 1: accepted in this cycle
        d.w__valid.value = 0

    async def load(self, rules):
        for i, r in enumerate(rules):
            await self.write(i, r)

    async def lookups(self, keys, *, burst=(1, 64), gap=(0, 4)):
        """Issue ``keys`` in back-to-back bursts separated by idle gaps (valid held while not ready)."""
        d = self.dut
        sent = 0
        while sent < len(keys):
            for _ in range(self.rng.randint(*burst)):
                if sent == len(keys):
                    break
                d.i__valid.value = 1
                d.i__payload.value = PKEY.pack(keys[sent])
                stuck = 0
                while True:
                    await ReadOnly()
                    fired = bool(d.i__ready.value)
                    await RisingEdge(d.clk)
                    if fired:
                        break
                    stuck += 1
                    if stuck > TIMEOUT_CYCLES:
                        raise AssertionError(f"CAM lookup stream i stuck: i.ready low for {stuck} cycles "
                                             f"({sent} of {len(keys)} lookups accepted)")
                sent += 1
            d.i__valid.value = 0
            for _ in range(self.rng.randint(*gap)):
                await RisingEdge(d.clk)

    async def drain(self, n):
        """Wait until ``n`` results came out on ``o``; fails naming the stuck stream."""
        last, idle = len(self.results), 0
        while len(self.results) < n:
            await RisingEdge(self.dut.clk)
            if len(self.results) == last:
                idle += 1
                if idle > TIMEOUT_CYCLES:
                    raise AssertionError(f"CAM result stream o stuck: {len(self.results)} of {n} results "
                                         f"after {idle} idle cycles ({len(self.accepted)} lookups accepted)")
            else:
                last, idle = len(self.results), 0

    def check(self):
        """Compare every result with the model; logs every mismatch, returns their count."""
        assert len(self.results) == len(self.accepted)
        bad = 0
        for n, (got, (key, rules)) in enumerate(zip(self.results, self.accepted, strict=True)):
            exp = ref_lookup(rules, key)
            if got != exp:
                bad += 1
                self.dut._log.error("lookup %d: rtl %s, model %s", n, got, exp)
        return bad


def random_rules(tb):
    """ENTRIES random rules; a quarter of them exact duplicates of an earlier rule's match
    (shadowed: only the lower index may ever hit)."""
    rules = []
    for _ in range(ENTRIES):
        if rules and tb.rng.random() < 0.25:
            r = RULE.unpack(RULE.pack(tb.rng.choice(rules)))
            r.action, r.counter = tb.rng.getrandbits(20), tb.rng.getrandbits(20)
        else:
            r = random_rule(tb.rng)
        rules.append(r)
    return rules


@cocotb.test(timeout_time=2, timeout_unit="ms")
@cocotb.parametrize(stall=[0.0, 0.4])
async def cam_matches_model(dut, stall):
    """Load ENTRIES random rules, then thousands of lookups in back-to-back bursts."""
    tb = TB(dut, seed=cocotb.RANDOM_SEED)
    await tb.reset()
    bp = cocotb.start_soon(tb.backpressure(stall))
    rules = random_rules(tb)
    await tb.load(rules)
    keys = [random_key(tb.rng, rules) for _ in range(3000)]
    await tb.lookups(keys)
    await tb.drain(len(keys))
    bp.cancel()
    bad = tb.check()
    hits = sum(r["hit"] for r in tb.results)
    dut._log.info("%d lookups, %d hits, %d ct conflicts, %d mismatches", len(keys), hits,
                  sum(r["ct_conflict"] for r in tb.results), bad)
    assert not bad, f"{bad} mismatches of {len(keys)}"
    assert 0.1 * len(keys) < hits < 0.95 * len(keys)


@cocotb.test(timeout_time=2, timeout_unit="ms")
@cocotb.parametrize(stall=[0.0, 0.4])
async def cam_rewrites_under_traffic(dut, stall):
    """Rule lines (some invalid) rewritten while lookups flow; each lookup is checked against
    the entries written in cycles before its accept cycle."""
    tb = TB(dut, seed=cocotb.RANDOM_SEED + 1)
    await tb.reset()
    bp = cocotb.start_soon(tb.backpressure(stall))
    rules = random_rules(tb)
    await tb.load(rules)

    async def writer():
        for _ in range(300):
            r = RULE.unpack(RULE.pack(tb.rng.choice(rules)))
            r.valid = int(tb.rng.random() < 0.85)
            await tb.write(tb.rng.randrange(ENTRIES), r)
            for _ in range(tb.rng.randint(0, 3)):
                await RisingEdge(dut.clk)

    w = cocotb.start_soon(writer())
    keys = [random_key(tb.rng, rules) for _ in range(1500)]
    await tb.lookups(keys)
    await w
    await tb.drain(len(keys))
    bp.cancel()
    bad = tb.check()
    assert tb.writes_accepted == ENTRIES + 300
    assert not bad, f"{bad} mismatches of {len(keys)}"
