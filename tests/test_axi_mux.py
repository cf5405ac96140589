"""hdl/axi.py's read and write muxes (Amaranth simulator): N masters share one AXI4 port.

Each master issues random single-beat reads and writes with its own IDs; the
slave is a Python memory answering out of order with random stalls.  Checked:
every master gets exactly the responses to its own requests, with its own
IDs and the data of the addresses it asked for; every write lands with the
data and strobes of its master; the downstream request stays stable while
it waits for ``ready`` (AXI's rule); AW and W of one write come from one
master.
"""

import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from cxlnic.hdl.axi import LINE_SHIFT, axi4_master_ports, read_mux, write_mux


class Harness(wiring.Component):
    """The muxes between ``n`` master port sets ``s{k}_m_axi_*`` (driven by the testbench) and
    ``m_axi_*`` (the shared port)."""

    def __init__(self, n: int, id_bits: int):
        self.n, self.child_id = n, id_bits
        self.top_id = id_bits + max(1, (n - 1).bit_length())
        members = dict(axi4_master_ports(self.top_id))
        for k in range(n):
            for name, mem in axi4_master_ports(id_bits).items():
                members[f"s{k}_{name}"] = mem.flip()
        super().__init__(members)

    def masters(self):
        class View:
            pass
        out = []
        for k in range(self.n):
            v = View()
            for name in axi4_master_ports(self.child_id):
                setattr(v, name, getattr(self, f"s{k}_{name}"))
            out.append(v)
        return out

    def elaborate(self, platform):
        m = Module()
        ms = self.masters()
        read_mux(m, ms, self, self.top_id)
        write_mux(m, ms, self, self.top_id)
        return m


def g(ctx, sig):
    return ctx.get(sig)


@pytest.mark.parametrize("n,stall", [(2, 0.0), (2, 0.4), (3, 0.3)])
def test_muxes_route_and_keep_order(n, stall):
    rng = random.Random(n * 100 + int(stall * 10))
    dut = Harness(n, id_bits=3)
    ms = dut.masters()
    sb = max(1, (n - 1).bit_length())
    low = dut.top_id - sb
    n_ops = 150
    mem = {}
    # per master: queue of requests (kind, line, id, data)
    # reads from lines 100.. (never written, data = line * 7919); master k writes lines k*32.. with
    # data naming the master and the line, so the slave can check AW/W pairing
    plans = []
    for k in range(n):
        ops = []
        for _ in range(n_ops):
            if rng.random() < 0.5:
                ops.append(("r", 100 + rng.randrange(16), rng.randrange(8), None))
            else:
                line = k * 32 + rng.randrange(16)
                ops.append(("w", line, rng.randrange(8), k << 40 | line << 20 | rng.getrandbits(20)))
        plans.append(ops)
    got_r = [[] for _ in range(n)]
    got_b = [[] for _ in range(n)]
    writes_seen = []

    async def bench(ctx):
        pending_r, pending_b = [], []      # (ready cycle, top id, data) / (ready cycle, top id)
        idx = [0] * n
        aw_sent = [False] * n
        w_sent = [False] * n
        held_ar = held_aw = held_w = None
        aw_q, w_q = [], []                 # AWs and Ws not yet paired
        for _cyc in range(20000):
            # masters present their next request (reads on AR, writes on AW+W), stable until taken
            for k in range(n):
                x = ms[k]
                op = plans[k][idx[k]] if idx[k] < n_ops else None
                ctx.set(x.m_axi_arvalid, int(op is not None and op[0] == "r"))
                ctx.set(x.m_axi_awvalid, int(op is not None and op[0] == "w" and not aw_sent[k]))
                ctx.set(x.m_axi_wvalid, int(op is not None and op[0] == "w" and not w_sent[k]))
                if op is not None:
                    ctx.set(x.m_axi_araddr, op[1] << LINE_SHIFT)
                    ctx.set(x.m_axi_arid, op[2])
                    ctx.set(x.m_axi_awaddr, op[1] << LINE_SHIFT)
                    ctx.set(x.m_axi_awid, op[2])
                    ctx.set(x.m_axi_wdata, op[3] or 0)
                    ctx.set(x.m_axi_wstrb, (1 << 64) - 1)
                    ctx.set(x.m_axi_wlast, 1)
                ctx.set(x.m_axi_rready, int(rng.random() >= stall))
                ctx.set(x.m_axi_bready, int(rng.random() >= stall))
            ctx.set(dut.m_axi_arready, int(rng.random() >= stall))
            ctx.set(dut.m_axi_awready, int(rng.random() >= stall))
            ctx.set(dut.m_axi_wready, int(rng.random() >= stall))
            # slave: responses in any order
            r = rng.choice(pending_r) if pending_r and rng.random() >= stall else None
            ctx.set(dut.m_axi_rvalid, int(r is not None))
            if r is not None:
                ctx.set(dut.m_axi_rid, r[0])
                ctx.set(dut.m_axi_rdata, r[1])
                ctx.set(dut.m_axi_rlast, 1)
            b = pending_b[0] if pending_b and rng.random() >= stall else None
            ctx.set(dut.m_axi_bvalid, int(b is not None))
            if b is not None:
                ctx.set(dut.m_axi_bid, b)
            # AXI stability: a request waiting downstream keeps its payload
            if held_ar is not None:
                assert g(ctx, dut.m_axi_arvalid) and (g(ctx, dut.m_axi_araddr), g(ctx, dut.m_axi_arid)) == held_ar
            if held_aw is not None:
                assert g(ctx, dut.m_axi_awvalid) and (g(ctx, dut.m_axi_awaddr), g(ctx, dut.m_axi_awid)) == held_aw
            if held_w is not None:
                assert g(ctx, dut.m_axi_wvalid) and g(ctx, dut.m_axi_wdata) == held_w
            # sample this cycle's handshakes
            ar = g(ctx, dut.m_axi_arvalid) and g(ctx, dut.m_axi_arready)
            held_ar = None if ar or not g(ctx, dut.m_axi_arvalid) else (g(ctx, dut.m_axi_araddr),
                                                                         g(ctx, dut.m_axi_arid))
            if ar:
                line = g(ctx, dut.m_axi_araddr) >> LINE_SHIFT
                pending_r.append((g(ctx, dut.m_axi_arid), line * 7919))
            aw = g(ctx, dut.m_axi_awvalid) and g(ctx, dut.m_axi_awready)
            w = g(ctx, dut.m_axi_wvalid) and g(ctx, dut.m_axi_wready)
            held_aw = None if aw or not g(ctx, dut.m_axi_awvalid) else (g(ctx, dut.m_axi_awaddr),
                                                                         g(ctx, dut.m_axi_awid))
            held_w = None if w or not g(ctx, dut.m_axi_wvalid) else g(ctx, dut.m_axi_wdata)
            if aw:
                aw_q.append((g(ctx, dut.m_axi_awid), g(ctx, dut.m_axi_awaddr) >> LINE_SHIFT))
            if w:
                w_q.append(g(ctx, dut.m_axi_wdata))
                writes_seen.append(w_q[-1])
            while aw_q and w_q:
                (tid, line), wd = aw_q.pop(0), w_q.pop(0)
                assert wd >> 20 & 0xFFFFF == line, "W paired with another write's AW"
                assert tid >> low == wd >> 40, "AW and W of one write from different masters"
                mem[line] = wd
                pending_b.append(tid)
            if r is not None and g(ctx, dut.m_axi_rready):
                pending_r.remove(r)
            if b is not None and g(ctx, dut.m_axi_bready):
                pending_b.pop(0)
            for k in range(n):
                x = ms[k]
                op = plans[k][idx[k]] if idx[k] < n_ops else None
                if g(ctx, x.m_axi_rvalid) and g(ctx, x.m_axi_rready):
                    got_r[k].append((g(ctx, x.m_axi_rid), g(ctx, x.m_axi_rdata)))
                if g(ctx, x.m_axi_bvalid) and g(ctx, x.m_axi_bready):
                    got_b[k].append(g(ctx, x.m_axi_bid))
                if op is None:
                    continue
                if op[0] == "r" and g(ctx, x.m_axi_arvalid) and g(ctx, x.m_axi_arready):
                    idx[k] += 1
                elif op[0] == "w":
                    aw_sent[k] |= bool(g(ctx, x.m_axi_awvalid) and g(ctx, x.m_axi_awready))
                    w_sent[k] |= bool(g(ctx, x.m_axi_wvalid) and g(ctx, x.m_axi_wready))
                    if aw_sent[k] and w_sent[k]:
                        aw_sent[k] = w_sent[k] = False
                        idx[k] += 1
            await ctx.tick()
            if all(i == n_ops for i in idx) and not pending_r and not pending_b:
                break
        else:
            raise AssertionError(f"muxes stuck: {idx}")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for k in range(n):
        reads = [op for op in plans[k] if op[0] == "r"]
        writes = [op for op in plans[k] if op[0] == "w"]
        assert sorted(got_r[k]) == sorted((op[2], op[1] * 7919) for op in reads), f"master {k}: reads"
        assert len(got_b[k]) == len(writes) and sorted(got_b[k]) == sorted(op[2] for op in writes)
    # every write's data came from some master's write of that data, each exactly once
    all_w = sorted(op[3] for p in plans for op in p if op[0] == "w")
    assert sorted(writes_seen) == all_w
    assert low >= 3
