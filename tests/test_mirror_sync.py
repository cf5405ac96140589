"""MirrorSync (Type 1): loading the datapath's on-chip copies and following the host's writes.

Amaranth simulator.  The AXI slave is a host memory whose lines the test rewrites (as a host
would after snooping the device); expected values come from that memory and from
``cfg.regions()``, never from the block.
"""

import random

import pytest
from amaranth.sim import Simulator

from cxlnic.config import NicConfig
from cxlnic.hdl.axi import LINE_SHIFT
from cxlnic.hdl.smartnic import MirrorSync, mirror_lines, tracked_range

CFG = NicConfig(n_buckets=64, n_stash=1, n_rules=16, cam_entries=4, n_actions=8, n_tenants=2, n_ports=4,
                max_frame=1518)


def _mirror_set(cfg):
    return [first + k for first, n in mirror_lines(cfg) for k in range(n)]


def test_mirror_lines_and_tracked_range_follow_the_layout():
    r = CFG.regions()
    assert mirror_lines(CFG) == [(r["hashkey"][0], 1), (r["rules"][0], 4), (r["actions"][0], 8)]
    lo, hi = tracked_range(CFG)
    assert lo == r["hashkey"][0] and hi == r["flows"][0]          # through the last stash line
    assert all(lo <= x < hi for x in _mirror_set(CFG))
    assert all(lo <= r["buckets"][0] + b < hi for b in range(CFG.n_buckets))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_load_refetch_and_bucket_reports(seed):
    rng = random.Random(seed)
    dut = MirrorSync(CFG)
    r = CFG.regions()
    mirrored = _mirror_set(CFG)
    buckets = list(range(r["buckets"][0], r["stash"][0] + r["stash"][1]))
    others = list(range(r["flows"][0], r["flows"][0] + 8)) + [r["tenants"][0], r["rules"][0] + 10]
    mem = {x: rng.getrandbits(512) for x in range(CFG.image_lines)}
    held = set()               # mirrored lines the device has read (and so will be snooped for)
    writes = []                # (cycle, addr, data) on mw
    reads = []                 # lines read, in order
    inval_q = []               # entries offered on inval: (line, cycle pushed)
    report_delay = []
    n_err = 0

    async def bench(ctx):
        nonlocal n_err
        pending = None          # (line, cycles left) of the one outstanding read
        cycle = 0
        loaded_at = None
        while cycle < 6000:
            # -- AXI slave: one read at a time, random AR stall and latency, some error answers --
            ctx.set(dut.m_axi_arready, int(rng.random() < 0.6))
            if pending is not None and pending[1] == 0:
                ctx.set(dut.m_axi_rvalid, 1)
                bad = rng.random() < 0.1
                ctx.set(dut.m_axi_rresp, 2 if bad else 0)
                ctx.set(dut.m_axi_rdata, mem[pending[0]])
            else:
                ctx.set(dut.m_axi_rvalid, 0)
            # -- inval entries: the host snoops lines away, then writes them --
            if not inval_q and cycle > 50 and rng.random() < 0.05:
                kind = rng.random()
                if kind < 0.4 and held:
                    line = rng.choice(sorted(held))
                    held.discard(line)            # the snoop takes it; the host writes it after
                elif kind < 0.8:
                    line = rng.choice(buckets)
                else:
                    line = rng.choice(others)
                inval_q.append((line, cycle))
            ctx.set(dut.inval.valid, int(bool(inval_q)))
            if inval_q:
                ctx.set(dut.inval.payload, inval_q[0][0])
            ctx.set(dut.mw.ready, 1)
            # -- sample --
            if ctx.get(dut.m_axi_arvalid) and ctx.get(dut.m_axi_arready):
                assert pending is None, "a second read while one is outstanding"
                assert ctx.get(dut.m_axi_arid) == 0 and ctx.get(dut.m_axi_arlen) == 0
                line = ctx.get(dut.m_axi_araddr) >> LINE_SHIFT
                reads.append(line)
                pending = (line, rng.randrange(1, 12))
            elif pending is not None and pending[1] > 0 and ctx.get(dut.m_axi_rvalid) == 0:
                pending = (pending[0], pending[1] - 1)
            if ctx.get(dut.m_axi_rvalid) and ctx.get(dut.m_axi_rready):
                if ctx.get(dut.m_axi_rresp):
                    n_err += 1
                elif pending[0] in mirrored:
                    held.add(pending[0])          # the device holds it again: the host will snoop it
                pending = None
            if ctx.get(dut.mw.valid) and ctx.get(dut.mw.ready):
                writes.append((cycle, ctx.get(dut.mw.payload.addr), ctx.get(dut.mw.payload.data)))
            if ctx.get(dut.inval.valid) and ctx.get(dut.inval.ready):
                line, t0 = inval_q.pop(0)
                if line in buckets:
                    report_delay.append(cycle - t0)
                    # a bucket report goes out in the cycle its entry is taken, whatever else is going on
                    assert writes and writes[-1][:2] == (cycle, line)
                # the host writes the line once the snoop is answered
                if line in mirrored:
                    mem[line] = rng.getrandbits(512)
            if loaded_at is None and ctx.get(dut.loaded):
                loaded_at = cycle
                got = [a for _c, a, _d in writes if a in mirrored]
                assert got[:len(mirrored)] == mirrored, "the load writes every mirrored line, in order"
            await ctx.tick()
            cycle += 1
        # quiet: let it finish
        ctx.set(dut.inval.valid, 0)
        for _ in range(200):
            ctx.set(dut.m_axi_arready, 1)
            ctx.set(dut.m_axi_rvalid, int(pending is not None))
            if pending is not None:
                ctx.set(dut.m_axi_rresp, 0)
                ctx.set(dut.m_axi_rdata, mem[pending[0]])
            if ctx.get(dut.m_axi_arvalid) and ctx.get(dut.m_axi_arready):
                pending = (ctx.get(dut.m_axi_araddr) >> LINE_SHIFT, 0)
                reads.append(pending[0])
            elif ctx.get(dut.m_axi_rvalid) and ctx.get(dut.m_axi_rready):
                pending = None
            if ctx.get(dut.mw.valid):
                writes.append((cycle, ctx.get(dut.mw.payload.addr), ctx.get(dut.mw.payload.data)))
            await ctx.tick()
            cycle += 1
        assert loaded_at is not None
        assert not ctx.get(dut.busy), "busy after everything was applied"
        assert ctx.get(dut.read_errors) == n_err
        assert ctx.get(dut.bucket_reports) == len(report_delay)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # the last write of each mirrored line carries the line's final host content
    last = {}
    for _c, a, d in writes:
        last[a] = d
    for x in mirrored:
        assert last[x] == mem[x], f"mirror of line {x} is stale"
    # only mirrored, bucket and stash lines ever reach the datapath
    assert {a for _c, a, _d in writes} <= set(mirrored) | set(buckets)
    assert not set(reads) - set(mirrored)
    assert n_err > 0 and report_delay, "the run exercised error answers and bucket reports"
