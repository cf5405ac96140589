"""CxlMemSubordinate in Amaranth's simulator: every CXL.mem request/reply pair of CXL.md, and the hard cases.

Expected replies come from CXL.md's tables (written out below, not from the
RTL); expected data from a Python shadow memory updated in the order the DUT
accepted requests (:class:`ShadowChecker`).  The host side is the same
:class:`CxlMemHost` / :class:`BackendModel` the cocotb testbench uses, run
here through :class:`AmaranthIO`.  The bottom test runs ``tb/test_cxl_mem.py``
under Verilator.
"""

import os
import random

import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from cxlnic.hdl.cxl_mem import (
    CXL_MEM_STATS,
    CxlMemSubordinate,
    DrsOpcode,
    MemWrite,
    MetaField,
    MetaValue,
    NdrOpcode,
    ReqOpcode,
    RwdOpcode,
    SnpType,
)
from cxlnic.tb.cxl_mem_host import (
    ALL_ONES,
    AmaranthIO,
    BackendModel,
    CxlMemHost,
    CycleLoop,
    DeviceWriter,
    ShadowChecker,
    merge_line,
)

BASE, SIZE = 0x4000, 0x1000          # HDM range in lines
M0, NOOP = MetaField.META0_STATE, MetaField.NO_OP
I, A, S = MetaValue.I, MetaValue.A, MetaValue.S
SN0, SND, SNC, SNI = SnpType.NO_OP, SnpType.SNP_DATA, SnpType.SNP_CUR, SnpType.SNP_INV
CMP, CMP_S, CMP_E = NdrOpcode.CMP.value, NdrOpcode.CMP_S.value, NdrOpcode.CMP_E.value

#: CXL.md's legal request → reply table: (channel, opcode, MetaField, MetaValue, SnpType) →
#: (allowed NDR opcodes, DRS expected, the host may cache the line afterwards)
LEGAL = [
    (("req", ReqOpcode.MEM_RD, M0, A, SNI), ({CMP_E}, True, True)),
    (("req", ReqOpcode.MEM_RD, M0, S, SND), ({CMP_S, CMP_E}, True, True)),
    (("req", ReqOpcode.MEM_RD, NOOP, I, SNC), ({CMP}, True, False)),
    (("req", ReqOpcode.MEM_RD, NOOP, I, SNI), ({CMP}, True, False)),
    (("req", ReqOpcode.MEM_INV, M0, A, SNI), ({CMP_E}, False, True)),
    (("req", ReqOpcode.MEM_INV_NT, M0, A, SNI), ({CMP_E}, False, True)),
    (("req", ReqOpcode.MEM_INV, M0, I, SNI), ({CMP}, False, False)),
    (("req", ReqOpcode.MEM_RD_DATA, NOOP, I, SND), ({CMP_S, CMP_E}, True, True)),
    (("req", ReqOpcode.MEM_CLN_EVCT, M0, I, SN0), ({CMP}, False, False)),
    (("rwd", RwdOpcode.MEM_WR, M0, I, SN0), ({CMP}, False, False)),
    (("rwd", RwdOpcode.MEM_WR, M0, A, SN0), ({CMP}, False, True)),
    (("rwd", RwdOpcode.MEM_WR, M0, I, SNI), ({CMP}, False, False)),
    (("rwd", RwdOpcode.MEM_WR_PTL, M0, I, SNI), ({CMP}, False, False)),
]

#: combinations outside the legal table (and opcodes outside the subset): Cmp (+ MemData for a
#: read opcode), no effect
ILLEGAL = [
    ("req", ReqOpcode.MEM_RD, M0, I, SNI),
    ("req", ReqOpcode.MEM_RD, M0, A, SND),
    ("req", ReqOpcode.MEM_RD, M0, S, SNI),
    ("req", ReqOpcode.MEM_RD, NOOP, I, SND),
    ("req", ReqOpcode.MEM_RD_DATA, M0, A, SND),
    ("req", ReqOpcode.MEM_INV, M0, S, SNI),
    ("req", ReqOpcode.MEM_INV, M0, A, SN0),
    ("req", ReqOpcode.MEM_INV_NT, M0, I, SNI),
    ("req", ReqOpcode.MEM_CLN_EVCT, M0, A, SN0),
    ("req", 0b0101, M0, A, SNI),
    ("req", 0b1111, NOOP, I, SN0),
    ("rwd", RwdOpcode.MEM_WR, M0, S, SN0),
    ("rwd", RwdOpcode.MEM_WR, NOOP, I, SN0),
    ("rwd", RwdOpcode.MEM_WR, M0, A, SNI),
    ("rwd", RwdOpcode.MEM_WR_PTL, M0, I, SN0),
    ("rwd", 0b0000, M0, I, SN0),
    ("rwd", 0b0111, M0, I, SNI),
]


class Bench:
    """The DUT with a host, a backend and the device-write port, all in Python, in Amaranth's simulator."""

    def __init__(self, dut=None, *, seed=0, delay=0, s2m_ready=1.0, latency=(0, 0), be_ready=1.0, ok_ready=1.0,
                 mem=None, base=BASE, size=SIZE, **kw):
        kw.setdefault("filter_entries", 8)
        self.dut = dut or CxlMemSubordinate(depth=16, **kw)
        rng = random.Random(seed)
        self.base, self.size = base, size
        self.host = CxlMemHost(rng=random.Random(rng.getrandbits(32)), delay=delay, s2m_ready=s2m_ready,
                               hdm=(base, size))
        self.backend = BackendModel(rng=random.Random(rng.getrandbits(32)), latency=latency, ready=be_ready,
                                    mem={a - base: d for a, d in (mem or {}).items()})
        self.dev = DeviceWriter(self.backend, rng=random.Random(rng.getrandbits(32)), ok_ready=ok_ready)
        self.checker = ShadowChecker(self.host, self.dev, mem=mem)
        self.loop = CycleLoop(AmaranthIO(self.dut), [self.host, self.backend, self.dev])
        self.stats = None

    def run(self, script, max_cycles=50_000):
        """``script(bench)`` is an async function run with the cycle loop; then run until everything drained."""
        dut = self.dut

        async def bench(ctx):
            ctx.set(dut.hdm_base, self.base)
            ctx.set(dut.hdm_size, self.size)
            self.ctx = ctx
            await script(self)
            await self.until(self.idle, max_cycles)
            await self.cycles(4)
            self.stats = {n: ctx.get(dut.stats[n]) for n in CXL_MEM_STATS}

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()
        return self

    async def until(self, cond, max_cycles=50_000):
        await self.loop.run_amaranth(self.ctx, cond, max_cycles)

    async def cycles(self, n):
        end = self.loop.cycle + n
        await self.until(lambda: self.loop.cycle >= end)

    def idle(self):
        return self.host.idle() and self.backend.idle() and not self.dev.q

    def check(self):
        assert not self.host.errors, self.host.errors[:5]
        assert self.checker.mismatches == 0, self.checker.errors
        assert self.checker.violations == 0, self.checker.errors


def rand_line(rng):
    return rng.getrandbits(512)


# ------------------------------------------------------------------------------------------------ tables

@pytest.mark.parametrize("delay,s2m_ready", [(0, 1.0), ((0, 3), 0.5)])
def test_every_legal_pair(delay, s2m_ready):
    rng = random.Random(1)
    mem = {BASE + i: rand_line(rng) for i in range(len(LEGAL))}
    b = Bench(seed=2, delay=delay, s2m_ready=s2m_ready, latency=(0, 5), mem=mem)
    sent = []

    async def script(b):
        for i, ((ch, op, mf, mv, snp), _) in enumerate(LEGAL):
            d, be = rand_line(rng), rng.getrandbits(64) | 1
            r = b.host.submit(ch, op, BASE + i, meta_field=mf, meta_value=mv, snp=snp, data=d, be=be,
                              ld_id=i % 16)
            sent.append((r, d, be))

    b.run(script)
    b.check()
    for ((_, op, mf, mv, snp), (ndrs, drs, _)), (r, d, be) in zip(LEGAL, sent, strict=True):
        name = f"{op.name} {mf.name}/{mv.name} {snp.name}"
        assert r.done, name
        assert r.ndr is not None and r.ndr.opcode in ndrs, (name, r.ndr)
        assert r.ndr.tag == r.tag and r.ndr.ld_id == r.ld_id, name
        if drs:
            assert r.drs is not None and r.drs.opcode == DrsOpcode.MEM_DATA.value and r.drs.poison == 0, name
            assert r.drs.tag == r.tag and r.drs.ld_id == r.ld_id
            assert r.drs.data == mem[r.addr], name
        else:
            assert r.drs is None, name
        if r.ndr.opcode == CMP_E:
            assert (r.ndr.meta_field, r.ndr.meta_value) == (M0.value, A.value), name
        if r.ndr.opcode == CMP_S:
            assert (r.ndr.meta_field, r.ndr.meta_value) == (M0.value, S.value), name
        line = r.addr - BASE
        if op == RwdOpcode.MEM_WR:
            assert b.backend.mem[line] == d, name
        elif op == RwdOpcode.MEM_WR_PTL:
            assert b.backend.mem[line] == merge_line(mem[r.addr], d, be), name
        else:
            assert b.backend.mem.get(line, 0) == mem[r.addr], name
    assert b.stats["illegal"] == 0 and b.stats["unmapped"] == 0
    assert b.stats["writes"] == 4 and b.stats["partials"] == 1


def test_snoop_filter_follows_the_table():
    """After each legal request the filter holds the line exactly when the table says the host may cache
    it: a device write of the line then needs a BISnp (and the host is told to give the line up)."""
    rng = random.Random(3)

    async def script(b):
        for i, ((ch, op, mf, mv, snp), _) in enumerate(LEGAL):
            b.host.submit(ch, op, BASE + 0x100 + i, meta_field=mf, meta_value=mv, snp=snp, data=rand_line(rng),
                          be=1)
        await b.until(b.host.idle)
        for i in range(len(LEGAL)):
            n0 = len(b.host.received["bisnp"])
            b.dev.request(0x100 + i)
            await b.until(lambda i=i: not b.dev.q and b.dev.grants and b.dev.grants[-1][1] == 0x100 + i)
            snooped = [rec.addr for _, rec in b.host.received["bisnp"][n0:]]
            b.cached.append(BASE + 0x100 + i in snooped)

    b = Bench(seed=4, filter_entries=16)
    b.cached = []
    b.run(script)
    b.check()
    assert b.cached == [cache for _, (_, _, cache) in LEGAL]


def test_unmapped():
    lines = [BASE - 1, BASE + SIZE, 0, (1 << 46) - 1]

    async def script(b):
        b.reqs = []
        for a in lines:
            b.reqs += [b.host.read(a, "A"), b.host.read(a), b.host.read_data(a), b.host.invalidate(a, "A"),
                       b.host.write(a, 5), b.host.write_partial(a, 7, 3), b.host.invalidate(a, "I")]

    b = Bench(seed=5).run(script)
    b.check()
    for r in b.reqs:
        if r.expect_drs:
            assert r.ndr is None and r.drs.opcode == DrsOpcode.MEM_DATA_NXM.value and r.drs.data == ALL_ONES
            assert r.drs.poison == 1 and r.drs.tag == r.tag
        else:
            assert r.ndr.opcode == CMP and r.drs is None
    assert not b.backend.accepted_w and not b.backend.accepted_r, "unmapped requests reached the backend"
    assert b.stats["unmapped"] == len(b.reqs)


def test_poison():
    rng = random.Random(6)
    x, y = BASE + 3, BASE + 9
    mem = {x: rand_line(rng), y: rand_line(rng)}

    async def script(b):
        host = b.host
        b.r = []

        async def do(r):
            await b.until(lambda: r.done)
            return r
        await do(host.write(x, rand_line(rng), poison=1))
        b.r.append(await do(host.read(x)))
        await do(host.write_partial(y, rand_line(rng), 0xF0, poison=1))
        b.r.append(await do(host.read(y)))
        await do(host.write_partial(y, rand_line(rng), 0x0F))    # a clean partial write leaves it poisoned
        b.r.append(await do(host.read(y)))
        b.unchanged = (b.backend.mem[x - BASE], b.backend.mem[y - BASE])
        await do(host.write(x, 1234))                              # a clean full-line write heals it
        b.r.append(await do(host.read(x)))
        b.dev.request(y - BASE)                                    # so does a device write
        await b.until(lambda: b.dev.grants)
        b.r.append(await do(host.read(y)))

    b = Bench(seed=7, mem=mem, latency=(0, 6)).run(script)
    b.check()
    assert b.unchanged == (mem[x], mem[y]), "poisoned data was written"
    assert [r.drs.poison for r in b.r] == [1, 1, 1, 0, 0]
    assert b.r[3].drs.data == 1234
    assert b.stats["poison_writes"] == 2 and b.stats["poison_reads"] == 3


def test_illegal_combinations():
    rng = random.Random(8)
    mem = {BASE + i: rand_line(rng) for i in range(len(ILLEGAL))}

    async def script(b):
        b.r = []
        for i, (ch, op, mf, mv, snp) in enumerate(ILLEGAL):
            b.r.append(b.host.submit(ch, op, BASE + i, meta_field=mf, meta_value=mv, snp=snp, data=rand_line(rng),
                                     be=0))
        await b.until(b.host.idle)
        # nothing cached: device writes of every line are granted without a BISnp
        for i in range(len(ILLEGAL)):
            b.dev.request(i)
        await b.until(lambda: len(b.dev.grants) == len(ILLEGAL))
        b.r.append(b.host.read(BASE))

    b = Bench(seed=9, mem=mem).run(script)
    b.check()
    for (ch, op, *_), r in zip(ILLEGAL, b.r, strict=False):
        assert r.ndr.opcode == CMP and r.ndr.tag == r.tag, (op, r.ndr)
        is_read = ch == "req" and op in (ReqOpcode.MEM_RD, ReqOpcode.MEM_RD_DATA)
        assert (r.drs is not None) == is_read
        if is_read:
            assert r.drs.data == mem[r.addr]
    assert not b.backend.accepted_w, "an illegal write changed memory"
    assert not b.host.received["bisnp"]
    assert b.stats["illegal"] == len(ILLEGAL)
    assert b.r[-1].done and b.r[-1].drs.data == b.dev.grants[0][2]      # still serving


def test_spec_read_and_forwards_have_no_completion():
    async def script(b):
        for op in (ReqOpcode.MEM_SPEC_RD, ReqOpcode.MEM_RD_FWD, ReqOpcode.MEM_WR_FWD):
            b.host.submit("req", op, BASE + 1, meta_field=NOOP, snp=SN0)
        b.last = b.host.read(BASE + 1)

    b = Bench(seed=10).run(script)
    b.check()
    assert len(b.host.received["ndr"]) == 1 and len(b.host.received["drs"]) == 1
    assert b.stats["spec_dropped"] == 1 and b.stats["fwd_ignored"] == 2


# ------------------------------------------------------------------------------------------------ ordering

def test_duplicate_tags_echoed_in_order():
    rng = random.Random(11)
    mem = {BASE + i: rand_line(rng) for i in range(24)}

    async def script(b):
        b.r = [b.host.read(BASE + i, tag=7) if i % 3 else b.host.write(BASE + i, i, tag=7) for i in range(24)]

    b = Bench(seed=12, mem=mem, latency=(0, 9), be_ready=0.7).run(script)
    b.check()
    assert all(r.done for r in b.r)
    assert [r.tag for _, r in b.host.received["ndr"]] == [7] * 24
    for i, r in enumerate(b.r):
        if i % 3:
            assert r.drs.data == mem[BASE + i]


def test_many_outstanding():
    """32 reads and 32 writes back to back over a 40-cycle backend: at least 16 in flight at once."""
    async def script(b):
        for i in range(32):
            b.host.read(BASE + i)
            b.host.write(BASE + 100 + i, i)
        peak = 0
        while not b.host.idle():
            inflight = len(b.backend.rq) + len(b.backend.wq)
            peak = max(peak, inflight)
            await b.cycles(1)
        b.peak = peak

    b = Bench(CxlMemSubordinate(depth=32, filter_entries=8), seed=13, latency=(40, 40)).run(script)
    b.check()
    assert b.peak >= 16, b.peak


@pytest.mark.parametrize("stall", [False, True])
def test_per_line_ordering_random(stall):
    """Reads, writes and partial writes to four lines, many in flight, random backend latency (a write may
    land before an earlier read samples): each read returns the shadow at its acceptance."""
    rng = random.Random(14 + stall)
    lines = [BASE + i for i in range(4)]
    mem = {a: rand_line(rng) for a in lines}

    async def script(b):
        for _ in range(400):
            a = rng.choice(lines)
            k = rng.random()
            if k < 0.4:
                b.host.read(a)
            elif k < 0.7:
                b.host.write(a, rand_line(rng))
            else:
                b.host.write_partial(a, rand_line(rng), rng.getrandbits(64) or 1)
            if rng.random() < 0.2:
                await b.cycles(rng.randint(0, 3))

    kw = dict(delay=(0, 2), s2m_ready=0.6, be_ready=0.6) if stall else {}
    b = Bench(seed=15, mem=mem, latency=(0, 12), **kw).run(script)
    b.check()
    assert b.checker.checked > 100
    # every write reached the backend in acceptance order, one mw_done each
    assert len(b.backend.done_log) == b.stats["writes"]


# ------------------------------------------------------------------------------------------------ HDM-DB

def test_back_invalidate_before_device_write():
    """Lines the host holds (E, M after a local store, S) are snooped before the device may write them;
    a dirty line is written back first; an untracked line is granted without a snoop."""
    rng = random.Random(16)
    x, y, z, u = BASE + 1, BASE + 2, BASE + 3, BASE + 4

    async def script(b):
        host = b.host
        for a, meta in ((x, "A"), (y, "A"), (z, "S")):
            host.read(a, meta)
        await b.until(host.idle)
        b.dirty = rand_line(rng)
        host.store_local(y, b.dirty)
        for a in (x, y, z, u):
            b.dev.request(a - BASE)
        await b.until(lambda: len(b.dev.grants) == 4)
        b.after = host.read(y)

    b = Bench(seed=17, delay=(1, 4)).run(script)
    b.check()
    snooped = [rec.addr for _, rec in b.host.received["bisnp"]]
    assert sorted(snooped) == [x, y, z]
    assert b.host.stats["writebacks"] == 1
    assert b.stats["bisnp"] == 3 and b.stats["dev_grants"] == 4 and b.stats["birsp_errors"] == 0
    assert all(b.host.state(a) == "I" for a in (x, y, z))
    assert b.after.drs.data == b.dev.grants[1][2]


def test_filter_victims():
    """More lines cached than filter entries: victims are back-invalidated, the host gives them up."""
    async def script(b):
        for i in range(40):
            b.host.read(BASE + i, "A" if i % 2 else "S")
            if i % 4 == 3:
                await b.cycles(3)

    b = Bench(seed=18, delay=(0, 3)).run(script)
    b.check()
    held = [a for a in range(BASE, BASE + 40) if b.host.state(a) != "I"]
    assert b.stats["victims"] >= 40 - 8 and len(held) <= 8
    assert b.host.stats["bisnp"] >= 32 and b.stats["birsp_errors"] == 0


def _conflict_run(late):
    """The device wants to write a line while a request of the host to it is pending, so the BISnp meets
    it and the host sends BIConflict with the request's Tag.  Early: a clean eviction (MemClnEvct) the
    device has not seen yet (the ack overtakes its Cmp).  Late: a MemRd A the device has served, its
    Cmp-E and data held in the device (S2M not ready) while the BISnp passes."""
    x = BASE + 5

    async def script(b):
        host = b.host
        if late:
            host.hold |= {"s2m_ndr", "s2m_drs"}
            req = host.read(x, "A")
            await b.until(lambda: req.accept_cycle >= 0)
            b.dev.request(x - BASE)
            await b.until(lambda: host.stats["conflicts"] and not host.rwd_ch.q)
            await b.cycles(10)
            host.hold.clear()
        else:
            host.read(x, "A")
            await b.until(host.idle)
            req = host.evict(x)
            host.req_ch.q[-1] = (b.loop.cycle + 60,) + host.req_ch.q[-1][1:]   # the eviction is late
            b.dev.request(x - BASE)
        await b.until(lambda: b.dev.grants and req.done)
        b.req = req

    b = Bench(seed=19).run(script)
    b.check()
    ndrs = [(rec.tag, rec.opcode) for _, rec in b.host.received["ndr"]][0 if late else 1:]
    return b, ndrs


def test_bi_conflict_early():
    b, ndrs = _conflict_run(late=False)
    assert b.host.stats["conflicts"] == 1 and b.host.stats["early"] == 1
    tag = b.req.tag
    assert ndrs == [(tag, NdrOpcode.BI_CONFLICT_ACK.value), (tag, CMP)], ndrs
    assert b.stats["conflicts"] == 1 and b.stats["dev_grants"] == 1


def test_bi_conflict_late():
    b, ndrs = _conflict_run(late=True)
    assert b.host.stats["conflicts"] == 1 and b.host.stats["late"] == 1
    tag = b.req.tag
    # the ack pushes the earlier Cmp-E of that Tag; the host then gives the line up
    assert ndrs == [(tag, CMP_E), (tag, NdrOpcode.BI_CONFLICT_ACK.value)], ndrs
    assert b.host.state(BASE + 5) == "I" and b.stats["dev_grants"] == 1


def test_conflict_with_pending_read_resnoops():
    """Early conflict with a MemRd A the device serves after its BISnp left but before the BIRsp came
    (long hops): the host answers BIRsp-I (it does not hold the line yet), the device sees the line
    inserted after its BISnp and snoops again before granting; the host gives the line up."""
    x = BASE + 6

    async def script(b):
        host = b.host
        r = host.read(x, "S")
        await b.until(lambda: r.done)
        host.read(x, "A")
        host.req_ch.q[-1] = (b.loop.cycle + 50,) + host.req_ch.q[-1][1:]
        b.dev.request(x - BASE)
        await b.until(lambda: b.dev.grants)

    b = Bench(seed=20, delay=20).run(script)
    b.check()
    assert b.host.stats["early"] == 1
    assert b.stats["bi_retries"] >= 1 and b.host.stats["bisnp"] >= 2
    assert b.host.state(x) == "I"


@pytest.mark.parametrize("seed", [21, 22])
def test_random_coherence(seed):
    """Random host traffic (caching reads, write-through, local stores, evictions, partials) and device
    writes: data-value invariant and no device write granted while the host may hold the line."""
    b = Bench(seed=seed, delay=(0, 3), s2m_ready=0.7, latency=(0, 8), be_ready=0.8, ok_ready=0.7)
    from cxlnic.tb.cxl_mem_host import random_traffic
    b.run(lambda b: random_traffic(b, random.Random(seed), n_ops=int(os.environ.get("CXL_MEM_OPS", "600")),
                                   lines=[BASE + i for i in range(12)]))
    b.check()
    assert b.checker.checked > 50 and b.dev.grants


# ------------------------------------------------------------------------------------------------ figures

def measure(depth=32, filter_entries=64, n=2000):
    """(line ops per cycle sustained with a zero-latency backend, write-to-Cmp latency in cycles)."""
    rng = random.Random(23)
    b = Bench(CxlMemSubordinate(depth=depth, filter_entries=filter_entries), seed=24)

    async def script(b):
        host = b.host
        r = host.write(BASE + 1, 5)
        await b.until(lambda: r.done)
        b.lat = r.done_cycle - r.accept_cycle - 1           # NDR valid cycle - RwD accept cycle
        first = len(b.host.received["ndr"]) + len(b.host.received["drs"])
        for i in range(n):
            a = BASE + rng.randrange(SIZE)
            if i % 2:
                host.read(a)
            else:
                host.write(a, i)
        await b.until(host.idle)
        acc = sorted(r.accept_cycle for r in _all)
        b.rate = n / (acc[-1] - acc[0] + 1)
        del first

    _all = []
    b.host.on_accept = lambda r, c, f=b.host.on_accept: (_all.append(r) if r.addr != BASE + 1 else None, f(r, c))
    b.run(script)
    b.check()
    return b.rate, b.lat


def test_throughput_and_latency():
    rate, lat = measure()
    print(f"CXL.mem subordinate: {rate:.3f} line ops/cycle (zero-latency backend), write-to-Cmp {lat} cycles")
    assert rate >= 0.9, rate
    assert lat <= 8, lat


# ------------------------------------------------------------------------------------------------ misc

def test_memwrite_layout_is_the_datapaths():
    from cxlnic.hdl.datapath import MemWrite as DpMemWrite
    assert dict(iter(MemWrite)) == dict(iter(DpMemWrite))


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(depth=8), ValueError, "depth = 8"),
    (dict(depth=24), ValueError, "depth = 24"),
    (dict(depth=16.0), TypeError, "depth = 16.0"),
    (dict(filter_entries=4), ValueError, "filter_entries = 4"),
    (dict(poison_entries=0), ValueError, "poison_entries = 0"),
    (dict(bi_id=1 << 12), ValueError, "bi_id"),
])
def test_bad_parameters(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        CxlMemSubordinate(**kw)


def test_elaborates_default():
    Fragment.get(CxlMemSubordinate(), None)


@pytest.mark.sim
def test_cxl_mem_lint(tmp_path):
    from cxlnic.rtl import lint
    from cxlnic.tb.sim import write_verilog
    p = write_verilog(CxlMemSubordinate(), "cxl_mem", tmp_path / "cxl_mem.v")
    assert lint([p]) == []


@pytest.mark.sim
def test_cxl_mem_verilator():
    from cxlnic.tb.sim import run_cocotb
    ops = os.environ.get("CXL_MEM_OPS") or ("100000" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "3000")
    run_cocotb(CxlMemSubordinate(depth=32, filter_entries=16), "cxlnic.tb.test_cxl_mem", params="d32f16", seed=1,
               extra_env={"CXL_MEM_OPS": ops, "CXL_MEM_FILTER": "16"})
