"""cocotb testbench: the Datapath top under Verilator against the golden model, packet by packet.

DRAM is cocotbext-axi's AxiRam (random stalls on every channel).  The table
image is built by the golden model (rules of a generated scenario, flows
installed by running the first part of its trace through
:class:`SlowPath`), then written line by line through the DUT's ``mw``
port, the path the CXL agent will use: the DUT writes DRAM and fills its
CAM and action mirrors and its hash key from these writes alone.  The rest
of the trace goes through the DUT; every output frame, upcall and drop is
compared byte for byte, in order, with :meth:`SlowPath.fast_path`; upcalled
frames are reinjected with the action the host picks and compared with
:meth:`SlowPath.execute`; finally every counter is read through the DUT
and compared with the model's.  Run through
``tests/test_datapath_rtl.py`` (``pytest -m sim``).
"""

from __future__ import annotations

import os

import cocotb
from cocotb.triggers import RisingEdge

from cxlnic.config import NicConfig
from cxlnic.hdl.datapath import UpcallReason
from cxlnic.model.match import ACTION, FKEY
from cxlnic.model.memory import BytearrayMemory, format_image
from cxlnic.model.parser import parse
from cxlnic.model.rulelang import parse_rules
from cxlnic.model.scenario import generate
from cxlnic.model.slowpath import FENTRY, SlowPath
from cxlnic.tb.datapath_tb import DatapathTB, expect_reinject, expect_rx
from cxlnic.tb.test_cuckoo import churn_writes

PACKETS = int(os.environ.get("CXLNIC_DP_PACKETS", "2400"))


def tb_config() -> NicConfig:
    """The geometry shared by the DUT build (pytest side) and this testbench."""
    return NicConfig(n_buckets=256, n_stash=1, n_rules=128, cam_entries=64, n_actions=256, n_tenants=4,
                     n_ports=16, max_frame=1518)


def build_model(seed: int, warm: float = 0.5):
    """Scenario rules + the first ``warm`` of its trace through the model; returns the model,
    the remaining packets, and the model's counters reset to zero (as the DUT's start)."""
    cfg = tb_config()
    sc = generate("mixed", packets=PACKETS, seed=seed, tenants=2)
    mem = BytearrayMemory(cfg.image_lines)
    mem.apply(format_image(cfg))
    sp = SlowPath(mem, cfg)
    sp.install_rules(parse_rules(sc.rules_text))
    n = int(len(sc.packets) * warm)
    for p in sc.packets[:n]:
        sp.process(p.frame, p.in_port, p.time)
    sp.counters.packets = [0] * sp.counters.n
    sp.counters.bytes = [0] * sp.counters.n
    return sp, sc.packets[n:]


async def load_image(tb: DatapathTB, sp: SlowPath) -> None:
    """Write every table line (all regions before the counters) through ``mw``; wait for all Cmps."""
    end = sp.geom.counters_off
    lines = list(range(end))
    for line in lines:
        tb.write_line(line, sp.mem.read_line(line))
    await tb.run(until=lambda: len(tb.visible) >= len(lines))
    assert tb.mw_done == lines, "mw_done must report every write once, in order"
    dram = tb.ram.read(0, end * 64)
    assert dram == bytes(sp.mem.buf[:end * 64]), "DRAM differs from the model's image after the load"


def compare(dut, name, got, want) -> int:
    bad = [(n, g, w) for n, (g, w) in enumerate(zip(got, want, strict=False)) if g != w]
    for n, g, w in bad[:10]:
        dut._log.error("%s #%d: rtl %s\n   model %s", name, n, _short(g), _short(w))
    if len(got) != len(want):
        dut._log.error("%s: rtl produced %d, model %d", name, len(got), len(want))
    return len(bad) + abs(len(got) - len(want))


def _short(x):
    return tuple(v.hex()[:48] + f"..({len(v)}B)" if isinstance(v, bytes) else v for v in x)


async def run_and_check(dut, tb, sp, packets, *, reinject=True, extra_frames=()):
    cap = tb.dut_cap
    exp = []
    for p in packets:
        tb.send(p.frame, p.in_port)
        exp.append(expect_rx(sp, p.frame, p.in_port, cap))
    for frame, port in extra_frames:
        tb.send(frame, port)
        exp.append(expect_rx(sp, frame, port, cap))
    await tb.run()
    bad = check_streams(dut, tb, exp)
    paths = {k: sum(e.path == k for e in exp) for k in ("flow", "cam", "upcall", "exception")}
    dut._log.info("%d frames: %s; %d out, %d upcalls, %d drops in %d cycles", len(exp), paths, len(tb.out),
                  len(tb.upcalls), len(tb.drops), tb.cycles)
    st = tb.stats()
    assert st["flow"] == paths["flow"] and st["cam"] == paths["cam"], f"path counters {st} vs model {paths}"
    assert st["exceptions"] == paths["exception"], f"exception counter {st} vs model {paths}"
    assert st["upcalls"] == paths["upcall"] + paths["exception"], f"upcall counter {st} vs model {paths}"
    if not reinject:
        return bad, exp
    # The host sends upcalled frames back with the action of the rule it classifies them to.
    bad_action = sp.cfg.n_actions + 5
    a_bad_port, _ = sp.rules.acquire_action(ACTION.new(output=1, out_port=sp.cfg.n_ports + 3))
    for line in range(sp.geom.actions_off, sp.geom.actions_off + sp.cfg.n_actions):
        tb.write_line(line, sp.mem.read_line(line))
    await tb.run()
    tb.out.clear(), tb.upcalls.clear(), tb.drops.clear()
    exp2 = []
    ups = [(e, p) for e, p in zip(exp, list(packets) + list(extra_frames), strict=True)
           if e.stream == "upcall" and e.arg != UpcallReason.EXCEPTION]
    for n, (_e, p) in enumerate(ups):
        frame, port = (p.frame, p.in_port) if hasattr(p, "frame") else p
        key = parse(frame, port, sp.cfg)
        key.ct_state = 0
        i = sp.rules.classify(key)
        if n % 17 == 3:
            action, counter = bad_action, 7
        elif n % 17 == 5:
            action, counter = a_bad_port, sp.rules.counter_of(0)
        elif n % 3 == 1 or i is None:             # any rule's action (outputs, rewrites, drops)
            j = tb.rng.randrange(len(sp.rules))
            action, counter = sp.rules.action_index_of(j), sp.rules.counter_of(j)
        else:
            action, counter = sp.rules.action_index_of(i), sp.rules.counter_of(i)
            counter = None if n % 5 == 0 else counter
        tb.send_reinject(frame, action, counter, port)
        exp2.append(expect_reinject(sp, frame, action, counter))
    await tb.run()
    bad += check_streams(dut, tb, exp2)
    st = tb.stats()
    assert st["reinjected"] == len(exp2), st
    dut._log.info("%d reinjected: %d out, %d upcalls, %d drops", len(exp2), len(tb.out), len(tb.upcalls),
                  len(tb.drops))
    return bad, exp + exp2


def check_streams(dut, tb, exp) -> int:
    want_out = [(e.arg, e.frame) for e in exp if e.stream == "out"]
    want_up = [(e.arg, e.frame) for e in exp if e.stream == "upcall"]
    want_drop = [e.arg for e in exp if e.stream == "drop"]
    bad = compare(dut, "out", tb.out, want_out)
    bad += compare(dut, "upcall", tb.upcalls, want_up)
    bad += compare(dut, "drop", [(r,) for r, _ in tb.drops], [(r,) for r in want_drop])
    return bad


async def check_counters(dut, tb, sp) -> int:
    idx = [i for i in range(sp.counters.n) if sp.counters.packets[i]]
    idx += tb.rng.sample(range(sp.counters.n), 64)
    tb.counters.clear()
    for i in idx:
        tb.read_counter(i)
    await tb.run(until=lambda: len(tb.counters) >= len(idx))
    want = [sp.counters.get(i) for i in idx]
    bad = compare(dut, "counter", tb.counters, want)
    # whole counter lines through the host read port, and table lines beside them (in one stream)
    g = sp.geom
    lines = sorted({g.counters_off + i // 4 for i in idx})
    lines += tb.rng.sample(range(g.counters_off), 32)
    tb.mr_lines.clear()
    for line in lines:
        tb.read_line(line)
    await tb.run(until=lambda: len(tb.mr_lines) >= len(lines))
    sp.mem.apply(sp.counters.writes())             # the model's counter lines, in the table format
    bad += compare(dut, "mr line", [(x,) for x in tb.mr_lines], [(sp.mem.read_line(x),) for x in lines])
    dut._log.info("%d counters read, %d of them nonzero in the model", len(idx), sum(1 for w in want if w[0]))
    return bad


async def setup(dut, seed, stall):
    sp, packets = build_model(seed)
    tb = DatapathTB(dut, sp.cfg, seed, dram_stall=stall, out_stall=stall)
    tb.dut_cap = int(os.environ["CXLNIC_DP_CAP_BYTES"])
    await tb.reset()
    await load_image(tb, sp)
    return tb, sp, packets


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.3])
async def packets_match_model(dut, stall):
    """The scenario's second half, plus oversize garbage, then reinjection and a counter read-out."""
    seed = cocotb.RANDOM_SEED + int(stall * 10)
    tb, sp, packets = await setup(dut, seed, stall)
    giant = [(tb.rng.randbytes(n), 3) for n in (1519, tb.dut_cap + 1, 3 * tb.dut_cap + 77)]
    bad, exp = await run_and_check(dut, tb, sp, packets, extra_frames=giant)
    bad += await check_counters(dut, tb, sp)
    await RisingEdge(dut.clk)
    st = tb.stats()
    dut._log.info("stats %s", st)
    assert st["trunc_beats"] > 0
    assert not bad, f"{bad} mismatches"


@cocotb.test()
async def no_false_miss_under_churn(dut):
    """Flow-hit traffic while the host inserts, deletes and moves entries through ``mw``."""
    seed = cocotb.RANDOM_SEED + 99
    tb, sp, packets = await setup(dut, seed, 0.1)
    # the packets the fast path decides from a flow entry, and those entries
    hot, hot_idx = [], set()
    for p in packets:
        key = parse(p.frame, p.in_port, sp.cfg)
        if key.exception:
            continue
        hit = sp.flows.lookup_entry(key.flow)
        if hit is not None and sp._eligible(hit[1], key.tcp_flags):
            hot.append(p)
            hot_idx.add(hit[0])
    assert len(hot) > 100, f"only {len(hot)} flow-path packets"
    others = [e.key for i, e in sp.flows.entries() if i not in hot_idx and e.conn_state == 0]

    def new_entry(rng):
        k = FKEY.new(tenant=rng.getrandbits(24), in_port=rng.getrandbits(8), eth_type=0x0800, ip_proto=6,
                     src_port=rng.getrandbits(16), dst_port=rng.getrandbits(16),
                     src_ip=0xFFFF << 32 | rng.getrandbits(32), dst_ip=0xFFFF << 32 | rng.getrandbits(32))
        return FENTRY.new(key=k, conn_state=0, action=0)

    exp = [expect_rx(sp, p.frame, p.in_port, tb.dut_cap) for p in hot * 3]
    writes = churn_writes(sp.flows, sp.mem, sp.cfg, sorted(hot_idx), others, tb.rng, 600, new_entry)
    n_writes = 0
    for line, raw, _report in writes:
        sp.mem.write_line(line, raw)         # the planner needs each write applied before the next
        tb.write_line(line, raw)
        n_writes += 1
    tb.mw_prob = 0.3                         # spread the writes over the traffic
    for p in hot * 3:
        tb.send(p.frame, p.in_port)
    await tb.run()
    bad = check_streams(dut, tb, exp)
    dut._log.info("%d flow-path frames during %d host line writes: %d mismatches", len(exp), n_writes, bad)
    assert n_writes > 1000
    assert not bad, f"{bad} mismatches (false misses show up as upcalls)"
