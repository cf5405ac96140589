"""The host side of CXL.cache for the testbenches: a home agent over host memory.

:class:`HomeCore` is simulator-agnostic and cycle-stepped: host memory (a
bytearray of lines), a directory (what the device may hold per line: ``S``,
``E`` = exclusive/owned (E or M), absent = I), and one transaction per line
at a time (device requests and host accesses to one line are serialised in
arrival order; lines are independent).  Every H2D message waits a random
per-hop delay and, with ``reorder``, ready messages of one channel leave in
random order, so data may overtake its GO and vice versa.  One ordering is
kept, the one CXL's GO/snoop rule gives a real host: a transaction on a line
ends only when all its H2D messages have been delivered, so a snoop never
overtakes the GO or data of an earlier request to its line.

The Amaranth tests (``tests/test_cxl_cache_rtl.py``) and the cocotb wrapper
:class:`CxlHomeAgent` drive the same core: per clock cycle ``offer(ch)`` gives
the message to present on H2D channel ``ch`` (``"req"``, ``"rsp"``,
``"data"``), ``delivered(ch)`` reports its handshake, ``receive(ch, msg)``
hands over a D2H message, and ``step()`` ends the cycle.

Checks (each failure is appended to ``violations``): a device request or a
snoop answer that the directory does not allow (e.g. a ``*FwdM`` answer for a
line the device was only given S, a non-bogus DirtyEvict for a line a snoop
already took, a CleanEvict whose data differs from memory, a Bogus snoop
forward, an unknown UQID).
"""

from __future__ import annotations

import collections
import random

from cxlnic.hdl.cxl_cache import (
    D2HData,
    D2HReq,
    D2HReqOpcode,
    D2HRsp,
    D2HRspOpcode,
    GoState,
    H2DData,
    H2DReq,
    H2DReqOpcode,
    H2DRsp,
    H2DRspOpcode,
)
from cxlnic.hdl.layouts import LINE_BYTES
from cxlnic.model.codec import flat_fields
from cxlnic.model.memory import TableMemory

__all__ = ["Fut", "HomeCore", "CxlHomeAgent", "pack", "unpack", "D2H", "H2D"]

#: the Structs of each channel, by the short names the core uses
D2H = {"req": D2HReq, "rsp": D2HRsp, "data": D2HData}
H2D = {"req": H2DReq, "rsp": H2DRsp, "data": H2DData}
_FIELDS = {s: [(f.path, f.offset, f.width) for f in flat_fields(s)] for s in (*D2H.values(), *H2D.values())}


def pack(struct, **fields) -> int:
    """The integer of a message Struct from its fields (enum members or ints; missing fields 0)."""
    v = 0
    for name, off, width in _FIELDS[struct]:
        x = fields.pop(name, 0)
        x = getattr(x, "value", x)
        if not 0 <= x < 1 << width:
            raise ValueError(f"{struct.__name__}.{name} = {x} does not fit {width} bits")
        v |= x << off
    if fields:
        raise ValueError(f"{struct.__name__} has no field(s) {sorted(fields)}")
    return v


def unpack(struct, v: int) -> dict:
    return {name: (v >> off) & ((1 << width) - 1) for name, off, width in _FIELDS[struct]}


class Fut:
    """A one-shot result a transaction or a test waits on."""
    __slots__ = ("done", "value", "_cbs")

    def __init__(self):
        self.done, self.value, self._cbs = False, None, []

    def set(self, value=None):
        if self.done:
            raise RuntimeError("Fut set twice")
        self.done, self.value = True, value
        for cb in self._cbs:
            cb(value)

    def on_done(self, cb):
        if self.done:
            cb(self.value)
        else:
            self._cbs.append(cb)


_I_TYPE = {D2HRspOpcode.RSP_I_HIT_I, D2HRspOpcode.RSP_I_HIT_SE, D2HRspOpcode.RSP_I_FWD_M}
_S_TYPE = {D2HRspOpcode.RSP_S_HIT_SE, D2HRspOpcode.RSP_S_FWD_M}
_FWD = {D2HRspOpcode.RSP_I_FWD_M, D2HRspOpcode.RSP_S_FWD_M, D2HRspOpcode.RSP_V_FWD_V}
#: snoop answers a device may give, by snoop and by what the directory says it may hold
_LEGAL = {
    ("S", H2DReqOpcode.SNP_INV): {D2HRspOpcode.RSP_I_HIT_I, D2HRspOpcode.RSP_I_HIT_SE},
    ("S", H2DReqOpcode.SNP_DATA): {D2HRspOpcode.RSP_I_HIT_I, D2HRspOpcode.RSP_I_HIT_SE, D2HRspOpcode.RSP_S_HIT_SE},
    ("S", H2DReqOpcode.SNP_CUR): {D2HRspOpcode.RSP_I_HIT_I, D2HRspOpcode.RSP_I_HIT_SE, D2HRspOpcode.RSP_V_HIT_V},
    ("E", H2DReqOpcode.SNP_INV): _I_TYPE,
    ("E", H2DReqOpcode.SNP_DATA): _I_TYPE | _S_TYPE,
    ("E", H2DReqOpcode.SNP_CUR): set(D2HRspOpcode),
}


class _Txn:
    __slots__ = ("gen", "what")

    def __init__(self, gen, what):
        self.gen, self.what = gen, what


class HomeCore:
    """Host memory + directory + home agent, stepped once per clock (see the module docstring).

    ``base`` is the host line number of line 0 of ``mem``.  Knobs (probabilities per message):
    ``p_poison`` (read data poisoned), ``p_goerr`` (GO-Err state instead of a read's GO),
    ``p_err_pull`` (GO_ERR_WritePull for ItoMWr/DirtyEvict: the host drops the data),
    ``p_drop`` (GO_WritePull_Drop for CleanEvict), ``p_snoop_s`` (snoop a line the device
    holds only in S on a host read), ``delay`` = (lo, hi) cycles per message.
    """

    def __init__(self, n_lines: int, *, base: int = 0, seed: int = 0, delay=(0, 4), reorder: bool = True,
                 p_poison: float = 0.0, p_goerr: float = 0.0, p_err_pull: float = 0.0, p_drop: float = 0.3,
                 p_snoop_s: float = 0.3, p_snp_cur: float = 0.3, rd_any_m: bool = True):
        self.mem = bytearray(n_lines * LINE_BYTES)
        self.base, self.rng, self.delay, self.reorder = base, random.Random(seed), delay, reorder
        self.p_poison, self.p_goerr, self.p_err_pull, self.p_drop = p_poison, p_goerr, p_err_pull, p_drop
        self.p_snoop_s, self.p_snp_cur, self.rd_any_m = p_snoop_s, p_snp_cur, rd_any_m
        self.dir: dict[int, str] = {}
        self.queues: dict[int, collections.deque] = {}
        self.out = {"req": [], "rsp": [], "data": []}
        self.presented = {"req": None, "rsp": None, "data": None}
        self.cycle = 0
        self.wait_rsp: dict[int, Fut] = {}
        self.wait_data: dict[int, Fut] = {}
        self._uq = 0
        self.runnable: collections.deque = collections.deque()
        self.violations: list[str] = []
        self.log: list[tuple] = []          # (cycle, direction, channel, message dict), for directed tests
        self.stats = collections.Counter()
        self.n_lines = n_lines

    # ---------------- channel side ----------------
    def offer(self, ch: str):
        """The H2D message (dict) to present on channel ``ch`` this cycle, or None."""
        if self.presented[ch] is None:
            ready = [e for e in self.out[ch] if e[0] <= self.cycle]
            if ready:
                e = self.rng.choice(ready) if self.reorder else ready[0]
                self.out[ch].remove(e)
                self.presented[ch] = e
        e = self.presented[ch]
        return None if e is None else e[1]

    def offer_bits(self, ch: str):
        msg = self.offer(ch)
        return None if msg is None else pack(H2D[ch], **msg)

    def delivered(self, ch: str):
        e, self.presented[ch] = self.presented[ch], None
        self.log.append((self.cycle, "h2d", ch, e[1]))
        e[2].set()

    def receive(self, ch: str, msg):
        """A D2H message (dict or packed int) accepted from the device this cycle."""
        if isinstance(msg, int):
            msg = unpack(D2H[ch], msg)
        self.log.append((self.cycle, "d2h", ch, msg))
        if ch == "req":
            self._new_request(msg)
        else:
            waiters = self.wait_rsp if ch == "rsp" else self.wait_data
            f = waiters.pop(msg["uqid"], None)
            if f is None:
                self.violations.append(f"cycle {self.cycle}: D2H {ch} with unexpected UQID {msg['uqid']}: {msg}")
            else:
                f.set(msg)

    def step(self):
        """End of a clock cycle: run the transactions whose awaited messages arrived."""
        self.cycle += 1
        while self.runnable:
            txn, value = self.runnable.popleft()
            self._advance(txn, value)

    def idle(self) -> bool:
        return not (self.queues or self.runnable or any(self.out.values()) or any(self.presented.values()))

    # ---------------- host side ----------------
    def host_read(self, line: int, *, downgrade: bool = False) -> Fut:
        """Read line ``line`` (relative to ``base``) as the host's CPU would; Fut value = bytes.
        ``downgrade``: a device owning the line is always snooped with SnpData (never SnpCur, which
        lets it keep E/M), so afterwards it no longer owns it."""
        f = Fut()
        self._enqueue(line, self._host_read(line, f, downgrade), f"host read {line}")
        return f

    def host_write(self, line: int, data: bytes) -> Fut:
        """Write a whole line as the host's CPU would (the device copy is snoop-invalidated first)."""
        if len(data) != LINE_BYTES:
            raise ValueError(f"host write of {len(data)} bytes")
        f = Fut()
        self._enqueue(line, self._host_write(line, bytes(data), f), f"host write {line}")
        return f

    def line(self, line: int) -> bytes:
        return bytes(self.mem[line * LINE_BYTES:(line + 1) * LINE_BYTES])

    # ---------------- internals ----------------
    def _uqid(self):
        for _ in range(4096):
            self._uq = (self._uq + 1) % 4096
            if self._uq not in self.wait_rsp and self._uq not in self.wait_data:
                return self._uq
        raise RuntimeError("out of UQIDs")

    def _send(self, ch, **fields) -> Fut:
        f = Fut()
        lo, hi = self.delay
        self.out[ch].append((self.cycle + self.rng.randint(lo, hi), fields, f))
        return f

    def _enqueue(self, line, gen, what):
        q = self.queues.setdefault(line, collections.deque())
        q.append(_Txn(gen, what))
        if len(q) == 1:
            self.runnable.append((q[0], None))

    def _advance(self, txn, value):
        try:
            w = txn.gen.send(value)
        except StopIteration:
            line = self._line_of(txn)
            q = self.queues[line]
            q.popleft()
            if q:
                self.runnable.append((q[0], None))
            else:
                del self.queues[line]
            return
        if isinstance(w, list):          # wait for all
            pending = [f for f in w if not f.done]
            if not pending:
                self.runnable.append((txn, None))
                return
            left = [len(pending)]

            def one(_):
                left[0] -= 1
                if left[0] == 0:
                    self.runnable.append((txn, None))
            for f in pending:
                f.on_done(one)
        else:
            w.on_done(lambda v: self.runnable.append((txn, v)))

    def _line_of(self, txn):
        for line, q in self.queues.items():
            if q and q[0] is txn:
                return line
        raise RuntimeError("transaction not at a queue head")

    def _bad(self, msg):
        self.violations.append(f"cycle {self.cycle}: {msg}")

    def _new_request(self, msg):
        line = msg["addr"] - self.base
        if not 0 <= line < self.n_lines:
            self._bad(f"D2H Req outside host memory: {msg}")
            return
        op = D2HReqOpcode(msg["opcode"])
        self.stats[op.name] += 1
        if op in (D2HReqOpcode.RD_CURR, D2HReqOpcode.RD_SHARED, D2HReqOpcode.RD_ANY, D2HReqOpcode.RD_OWN):
            gen = self._dev_read(op, msg["cqid"], line)
        elif op in (D2HReqOpcode.ITOM_WR, D2HReqOpcode.WR_CUR):
            gen = self._dev_write(op, msg["cqid"], line)
        elif op in (D2HReqOpcode.DIRTY_EVICT, D2HReqOpcode.CLEAN_EVICT, D2HReqOpcode.CLEAN_EVICT_NO_DATA):
            gen = self._dev_evict(op, msg["cqid"], line)
        else:
            self._bad(f"D2H Req opcode {op.name} not modelled")
            return
        self._enqueue(line, gen, f"{op.name} {line}")

    def _dev_read(self, op, cqid, line):
        d = self.dir.get(line)
        if op != D2HReqOpcode.RD_CURR and d == "E":
            self._bad(f"{op.name} of line {line} the device already owns")
        data = int.from_bytes(self.line(line), "little")
        poison = self.rng.random() < self.p_poison
        fd = self._send("data", cqid=cqid, poison=int(poison), go_err=0, data=data)
        if op == D2HReqOpcode.RD_CURR:
            yield fd
            return
        if op == D2HReqOpcode.RD_SHARED:
            st = GoState.S
        elif op == D2HReqOpcode.RD_OWN:
            st = self.rng.choice([GoState.E, GoState.M])
        else:
            st = self.rng.choice([GoState.S, GoState.E, GoState.M] if self.rd_any_m else [GoState.S, GoState.E])
        if self.rng.random() < self.p_goerr:
            st = GoState.ERR
        fg = self._send("rsp", opcode=H2DRspOpcode.GO, rsp_data=st.value, cqid=cqid)
        if poison or st == GoState.ERR:
            self.dir.pop(line, None)
        else:
            self.dir[line] = "S" if st == GoState.S else "E"
        yield [fd, fg]

    def _pull(self, cqid, opcode):
        u = self._uqid()
        fd = self.wait_data[u] = Fut()
        yield self._send("rsp", opcode=opcode, rsp_data=u, cqid=cqid)
        msg = yield fd
        return msg

    def _dev_write(self, op, cqid, line):
        if self.dir.pop(line, None) == "E":    # an S copy may have been dropped silently, an owned one not
            self._bad(f"{op.name} of line {line} the device owns")
        err = self.rng.random() < self.p_err_pull
        opc = H2DRspOpcode.GO_ERR_WRITE_PULL if err else self.rng.choice(
            [H2DRspOpcode.GO_WRITE_PULL, H2DRspOpcode.FAST_GO_WRITE_PULL])
        msg = yield from self._pull(cqid, opc)
        if msg["bogus"]:
            self._bad(f"{op.name} data of line {line} is Bogus")
        if not (err or msg["bogus"] or msg["poison"]):
            self.mem[line * LINE_BYTES:(line + 1) * LINE_BYTES] = msg["data"].to_bytes(LINE_BYTES, "little")

    def _dev_evict(self, op, cqid, line):
        d = self.dir.pop(line, None)
        if op == D2HReqOpcode.CLEAN_EVICT_NO_DATA:
            yield self._send("rsp", opcode=H2DRspOpcode.GO, rsp_data=GoState.I.value, cqid=cqid)
            return
        if op == D2HReqOpcode.CLEAN_EVICT and self.rng.random() < self.p_drop:
            yield self._send("rsp", opcode=H2DRspOpcode.GO_WRITE_PULL_DROP, rsp_data=0, cqid=cqid)
            return
        err = op == D2HReqOpcode.DIRTY_EVICT and self.rng.random() < self.p_err_pull
        msg = yield from self._pull(cqid, H2DRspOpcode.GO_ERR_WRITE_PULL if err else H2DRspOpcode.GO_WRITE_PULL)
        if msg["bogus"]:
            self.stats["bogus_evicts"] += 1
            return
        if d != "E":
            self._bad(f"{op.name} of line {line} with good data, but the device was not the owner ({d})")
        if op == D2HReqOpcode.CLEAN_EVICT:
            if msg["data"].to_bytes(LINE_BYTES, "little") != self.line(line):
                self._bad(f"CleanEvict data of line {line} differs from memory")
        elif not (err or msg["poison"]):
            self.mem[line * LINE_BYTES:(line + 1) * LINE_BYTES] = msg["data"].to_bytes(LINE_BYTES, "little")

    def _snoop(self, line, op):
        d = self.dir.get(line)
        u = self._uqid()
        fr = self.wait_rsp[u] = Fut()
        fd = self.wait_data[u] = Fut()
        self.stats[op.name] += 1
        yield self._send("req", opcode=op, addr=line + self.base, uqid=u)
        r = yield fr
        rsp = D2HRspOpcode(r["opcode"])
        self.stats[rsp.name] += 1
        if rsp not in _LEGAL[(d, op)]:
            self._bad(f"{op.name} of line {line} (directory {d}) answered {rsp.name}")
        if rsp in _FWD:
            m = yield fd
            if m["bogus"] or m["poison"]:
                self._bad(f"{rsp.name} data of line {line} is bogus/poisoned")
            else:
                self.mem[line * LINE_BYTES:(line + 1) * LINE_BYTES] = m["data"].to_bytes(LINE_BYTES, "little")
        else:
            self.wait_data.pop(u, None)
        if rsp in _I_TYPE:
            self.dir.pop(line, None)
        elif rsp in _S_TYPE:
            self.dir[line] = "S"
        return rsp

    def _host_read(self, line, f, downgrade=False):
        d = self.dir.get(line)
        if d == "E" or (d == "S" and self.rng.random() < self.p_snoop_s):
            cur = not downgrade and self.rng.random() < self.p_snp_cur
            op = H2DReqOpcode.SNP_CUR if cur else H2DReqOpcode.SNP_DATA
            yield from self._snoop(line, op)
        f.set(self.line(line))

    def _host_write(self, line, data, f):
        if self.dir.get(line) is not None:
            yield from self._snoop(line, H2DReqOpcode.SNP_INV)
        self.mem[line * LINE_BYTES:(line + 1) * LINE_BYTES] = data
        f.set()


class CxlHomeAgent(TableMemory):
    """cocotb home agent: drives the DUT's ``h2d_*`` inputs and takes its ``d2h_*`` outputs every clock.

    Also the golden model's :class:`~cxlnic.model.memory.TableMemory` over host memory.  The model is
    synchronous, CXL is not; they are reconciled like this: ``write_line`` queues the write (and
    later ``read_line`` calls see it: read-your-writes) and ``await drain()`` performs the queued writes
    in order as host writes (snoop-invalidate the device copy, then write); ``read_line`` returns host
    memory, which is exact for every line the device does not own: ``await sync()`` first (drains,
    then snoops back every line the directory says the device owns), and keep the device from
    writing while the model reads.  ``dirty_reads`` counts reads of lines the device owned.
    """

    def __init__(self, dut, n_lines: int, *, clk=None, d2h_stall: float = 0.0, **core_kw):
        import cocotb
        self.dut, self.clk = dut, clk if clk is not None else dut.clk
        self.core = HomeCore(n_lines, **core_kw)
        self.d2h_stall = d2h_stall
        self.rng = random.Random(self.core.rng.getrandbits(32))
        self.pending: list[tuple[int, bytes]] = []
        self.overlay: dict[int, bytes] = {}
        self.dirty_reads = 0
        self._task = cocotb.start_soon(self._run())

    # TableMemory
    @property
    def n_lines(self) -> int:
        return self.core.n_lines

    def read_line(self, index: int) -> bytes:
        if index in self.overlay:
            return self.overlay[index]
        if self.core.dir.get(index) == "E":
            self.dirty_reads += 1
        return self.core.line(index)

    def write_line(self, index: int, data: bytes) -> None:
        if len(data) != LINE_BYTES or not 0 <= index < self.n_lines:
            raise ValueError(f"bad write of line {index}")
        self.pending.append((index, bytes(data)))
        self.overlay[index] = bytes(data)

    async def drain(self):
        futs = [self.core.host_write(i, d) for i, d in self.pending]
        self.pending.clear()
        for f in futs:
            await self.wait(f)
        self.overlay.clear()

    async def sync(self):
        await self.drain()
        for line in [ln for ln, d in self.core.dir.items() if d == "E"]:
            await self.wait(self.core.host_read(line, downgrade=True))   # SnpData: the device gives it up

    async def host_read_line(self, line: int) -> bytes:
        return await self.wait(self.core.host_read(line))

    async def host_write_line(self, line: int, data: bytes) -> None:
        await self.wait(self.core.host_write(line, data))

    async def wait(self, fut: Fut):
        from cocotb.triggers import Event
        if not fut.done:
            ev = Event()
            fut.on_done(lambda _: ev.set())
            await ev.wait()
        return fut.value

    async def _run(self):
        from cocotb.triggers import ReadOnly, RisingEdge
        d, core = self.dut, self.core
        h2d = {ch: (getattr(d, f"h2d_{ch}__valid"), getattr(d, f"h2d_{ch}__ready"), getattr(d, f"h2d_{ch}__payload"))
               for ch in ("req", "rsp", "data")}
        d2h = {ch: (getattr(d, f"d2h_{ch}__valid"), getattr(d, f"d2h_{ch}__ready"), getattr(d, f"d2h_{ch}__payload"))
               for ch in ("req", "rsp", "data")}
        while True:
            for ch, (v, _, p) in h2d.items():
                bits = core.offer_bits(ch)
                v.value = int(bits is not None)
                if bits is not None:
                    p.value = bits
            for _, r, _ in d2h.values():
                r.value = int(self.rng.random() >= self.d2h_stall)
            await ReadOnly()
            for ch, (v, r, _) in h2d.items():
                if v.value and r.value:
                    core.delivered(ch)
            for ch, (v, r, p) in d2h.items():
                if v.value and r.value:
                    core.receive(ch, p.value.to_unsigned())
            await RisingEdge(self.clk)
            core.step()
