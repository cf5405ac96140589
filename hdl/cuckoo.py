"""Cuckoo flow-table lookup engine: exact-match lookups in device DRAM over an AXI4 read master.

Bit-exact with :meth:`cxlnic.model.flowtable.FlowTable.lookup_entry` (tested
against it in Amaranth's simulator and under Verilator with cocotbext-axi's
AxiRam).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cxlnic.hdl.hash import FlowHasher
from cxlnic.hdl.layouts import LINE_BITS, LINE_BYTES, SLOTS_PER_BUCKET, Bucket, BucketSlot, FlowEntry, FlowKey
from cxlnic.hdl.util import checked_init

__all__ = ["CuckooEngine", "LookupRequest", "LookupResult"]

_LINE_SHIFT = (LINE_BYTES - 1).bit_length()     # byte address = line << 6
_LINE_INDEX_BITS = 32
_ADDR_BITS = _LINE_INDEX_BITS + _LINE_SHIFT
_PTR_BITS = 31                                   # BucketSlot.entry


def LookupRequest(tag_bits: int) -> data.StructLayout:
    """Input payload: the key to look up and an opaque tag returned with its result."""
    return data.StructLayout({"key": FlowKey, "tag": tag_bits})


def LookupResult(tag_bits: int) -> data.StructLayout:
    """Output payload: ``entry`` is the FlowEntry line on a hit, all zero on a miss (``index`` 0 too)."""
    return data.StructLayout({"tag": tag_bits, "hit": 1, "index": _PTR_BITS, "entry": FlowEntry})


# Context states.  A context is one lookup in flight; its number is its ARID.  _ISSUE: a DRAM
# read to issue; _WAIT: its R beat outstanding; _PROBE: a bucket/stash line to look up in the
# bucket cache; _PWAIT: that cache read in flight.
_IDLE, _ISSUE, _WAIT, _DONE, _PROBE, _PWAIT = range(6)
# What the context's next (or outstanding) read returns.
_BUCKET, _ENTRY = range(2)
# Which bucket line the context is searching.
_PRIMARY, _SECONDARY, _STASH = range(3)


class CuckooEngine(wiring.Component):
    """Exact-match flow lookups in a DRAM-resident cuckoo table (``docs/flow-table.md``).

    Algorithm (the same reads, in the same order, as ``FlowTable.lookup``):
    hash the key (:class:`~cxlnic.hdl.hash.FlowHasher`), read the primary
    bucket line; for each valid slot whose signature matches, lowest slot
    first, read the entry line and compare ``valid`` and the full key; then
    the secondary bucket likewise, then each stash line.  The first matching
    entry is the hit.

    Ports
    -----
    * ``hash_key`` (512): the hash-key line, sampled every cycle.
    * ``i``: stream of :func:`LookupRequest` (key + ``tag``).  Accepted one
      per cycle while fewer than ``max_outstanding`` lookups are in flight
      (``i.ready`` depends only on that count).
    * ``o``: stream of :func:`LookupResult`, **in input order**, one per
      cycle at most; ``valid`` never depends on ``ready``.
    * ``m_axi_*``: AXI4 master, read channels only used: ``arlen`` 0,
      ``arsize`` 6 (one 64-byte line per read), ``arburst`` INCR,
      ``araddr`` = line × 64, ``arid`` = context number.  ``rready`` is
      constant 1 (responses are never stalled) and R beats may return in any
      order across IDs.  ``rresp`` is ignored.  The write channels exist only
      so that a full AXI4 slave model attaches; they are tied idle.
    * ``wr``: stream of line indices of host writes to bucket and stash
      lines, always ready; ``wr_pending`` (1): a host bucket/stash write is in
      flight (contract below).
    * ``lookups``, ``hits``, ``lines_read``, ``replays``, ``giveups``,
      ``cache_hits``: 32-bit running counters (results emitted, hits emitted,
      DRAM reads = AR handshakes, lookups restarted, lookups that reached
      ``max_replays`` and reported a miss while writes were still hitting
      their lines, bucket/stash lines served by the bucket cache).
      ``lines_read + cache_hits`` is the model's ``lookup_reads``.

    Outstanding lookups and ordering
    --------------------------------
    ``max_outstanding`` contexts form a ring: a lookup takes the context at
    the tail when it is accepted and frees it when its result leaves from the
    head, so the context number is the sequence number and the context table
    is the reorder buffer.  Every context has at most one read outstanding
    (ARID = context), so R beats may return in any order.  The R path never
    stalls: each beat is decided in the cycle after it arrives.

    Bucket cache
    ------------
    ``bucket_cache_lines`` (default ``n_buckets``; 0 = no cache; else a power
    of two <= ``n_buckets``): an on-chip copy of bucket lines, direct-mapped by
    bucket number (a tag of log2(n_buckets / bucket_cache_lines) bits when
    smaller; none at full size), plus one line per stash line.  Each entry is
    ``valid`` + tag + the 8 slots (384 bits): 4096 buckets at full size are
    4097 × 386 bits ≈ 1.58 Mbit (about 44 RAMB36).  The memory has two read
    ports and one write port (an FPGA build duplicates it, or maps it onto
    true-dual-port BRAM with the second lookup port sharing the write port).
    Lookups read it in three lanes that run in parallel with the R path, each
    deciding one line per cycle exactly as for an R beat: lane P reads the
    primary bucket in the cycle the hash leaves the hasher; lane S serves the
    secondary bucket and replayed primaries, lane T the stash lines (its own
    small memory), each taking the oldest context in state PROBE waiting for
    it.  So a miss whose lines are all cached is decided at one per cycle with
    one stash line (1/``n_stash`` per cycle with more).  A cache miss turns
    into the DRAM read.  So a hit normally costs one DRAM line (its entry
    line) and the throughput bound is min(1, 1 / DRAM lines per lookup) (one result per cycle).
    Fills: every R beat of a bucket/stash line is written into the cache
    unless (1) its lookup saw a ``wr`` report on its primary, secondary or a
    stash line since it (re)started (its ``dirty`` bit, which covers the time
    since this read was issued), (2) ``wr.valid`` (or ``wr_done.valid``) is high in the fill cycle
    (any report takes the write port: the report invalidates its line), or
    (3) ``wr_pending`` is high in the fill cycle.  Every ``wr`` report
    invalidates its line's cache entry.  The cache memories are not reset:
    after reset the engine clears them, one line per cycle
    (``bucket_cache_lines`` cycles); meanwhile every probe counts as a miss
    (lookups read DRAM) and nothing is filled.

    Write-report contract (for whoever drives ``wr`` / ``wr_pending``)
    ------------------------------------------------------------------
    Each host write to a bucket or stash line is reported twice: on ``wr``
    when it is issued to DRAM (no later than the first R beat whose data
    reflects it, as the replay scheme needs) and again, on ``wr`` or on
    ``wr_done``, at or after its B response, after which every read issued
    reflects it.  ``wr_pending`` is high in every cycle strictly between the
    two reports of any such write (it may be high in them too).  A write that
    becomes visible atomically in one cycle may instead be reported once, on
    ``wr``, in that cycle, with ``wr_pending`` low (issue = B response); the
    testbenches do that, and the split form with ``wr_pending``.
    ``wr_done`` (always ready) is a second report port with the effect of a
    ``wr`` report except the cache invalidation, which the second report
    never needs (the first one invalidated the line and ``wr_pending`` has
    kept fills out since): with it a writer can make an issue report and a B
    report in the same cycle (the datapath does).  Below, "report" means one
    on either port; a ``wr_done`` beat in the fill cycle drops the fill like
    a ``wr`` beat.

    Why a valid cache line always equals the line's newest content: take a
    fill of line X from a read issued (AR) in cycle a and written to the
    cache in cycle f.  For any write W to X: if W's B response (second
    report) came before a, the read reflects W; if either report of W falls in
    [a, f], rule (1) or (2) drops the fill (W's reports to X set the lookup's
    ``dirty`` bit, which was cleared before a); if W was issued before a and
    completes after f, ``wr_pending`` is high at f and rule (3) drops it; if
    W is issued after f, its first report invalidates the entry.  So while an
    entry is valid, it holds X as left by every write reported so far (all of
    them complete before its read was issued), i.e. the DRAM content of X at
    one point between two writes — exactly what a DRAM read of X issued at
    the probe could return.  A probe reads the cache content before the
    same cycle's invalidation, but that report also sets the probing
    lookup's ``dirty`` bit, so the replay argument below is unchanged: each
    bucket/stash line a lookup uses, from DRAM or from the cache, reflects
    the writes reported before its start unless a report on it came since.

    Replay guarantee (no false miss while the host moves entries)
    -------------------------------------------------------------
    Contract with the reporter of ``wr``: a write to a bucket or stash line
    is reported no later than the cycle in which the first R beat whose data
    reflects it arrives.  Each context has a ``dirty`` bit, cleared when the
    lookup (re)starts (before its primary read is issued) and set by any
    ``wr`` beat naming its primary bucket, its secondary bucket or a stash
    line.  A lookup that would miss with ``dirty`` set restarts from the
    primary read instead (a replay), at most ``max_replays`` times.

    Why a key K present throughout a lookup is found: if no reported write
    touched K's bucket or stash lines between the start and the miss
    decision, then every such line the lookup read reflects exactly the
    writes reported before the start (later ones are, by the contract, not
    yet in any beat it received, nor in the cache), i.e. one single state of
    the table between two line writes.  The host's copy-before-delete order
    keeps K in a slot of that state, and K's entry line is not rewritten
    while K is present (updates keep key and valid), so the search finds it.
    Otherwise the lookup replays, so a miss is only reported after a
    write-free pass over K's lines, or after ``max_replays`` replays (counted
    in ``giveups``: the host would have to rewrite one of the key's three
    lines more than ``max_replays`` times during one lookup, which a single
    writer whose inserts move at most ``max_moves`` slots does not do to one
    key).

    Latency and throughput
    ----------------------
    With DRAM read latency L cycles (AR handshake to R beat) and no
    backpressure, a lookup that reads n lines from DRAM takes about
    ``3 (hash) + 1 + n·(L + 3) + 2`` cycles from ``i`` to ``o`` without the
    cache, about ``L + 9`` for a hit whose buckets are cached (+ 2 per bucket
    probe that misses the cache).  Throughput is bounded by one R beat per
    cycle and one result per cycle, i.e. min(1, 1/n) lookups per cycle for n
    DRAM lines per lookup: without the cache about 1/2.1 at 90 % load for
    hits, 1/3 for misses with one stash line; with a warm full-size cache
    about 1 (one entry line per hit).  Because results retire in order, a
    context stays busy until every older lookup is done, so reaching the
    bound takes about rate × (latency + the wait behind slower older
    lookups) contexts: without the cache about 3·(L + 3); with the cache
    about L + 12 plus a margin for the few lookups that need a second DRAM
    read.  Reads and probes are issued oldest lookup first to keep that
    margin small.  Measured (scripts/bench_datapath.py, hits, 256 buckets):
    see ``docs/rtl.md``.
    """

    @checked_init
    def __init__(self, *, n_buckets: int, buckets_off: int, stash_off: int, n_stash: int, flows_off: int,
                 max_outstanding: int = 32, axi_id_bits: int = 8, tag_bits: int = 16, max_replays: int = 15,
                 bucket_cache_lines: int | None = None):
        if not isinstance(n_buckets, int) or n_buckets < 2 or n_buckets & (n_buckets - 1):
            raise ValueError(f"n_buckets = {n_buckets!r}: must be a power of two >= 2")
        for name, v in (("buckets_off", buckets_off), ("stash_off", stash_off), ("flows_off", flows_off)):
            if not isinstance(v, int) or not 0 <= v < 1 << _LINE_INDEX_BITS:
                raise ValueError(f"{name} = {v!r}: must be a line index in [0, 2**32)")
        if not isinstance(n_stash, int) or not 0 <= n_stash <= 16:
            raise ValueError(f"n_stash = {n_stash!r}: must be in [0, 16]")
        if (not isinstance(max_outstanding, int) or max_outstanding < 2
                or max_outstanding & (max_outstanding - 1)):
            raise ValueError(f"max_outstanding = {max_outstanding!r}: must be a power of two >= 2")
        ctx_bits = (max_outstanding - 1).bit_length()
        if not isinstance(axi_id_bits, int) or axi_id_bits < ctx_bits:
            raise ValueError(f"axi_id_bits = {axi_id_bits!r}: must be >= {ctx_bits} to name "
                             f"{max_outstanding} outstanding reads")
        if not isinstance(tag_bits, int) or tag_bits < 1:
            raise ValueError(f"tag_bits = {tag_bits!r}: must be >= 1")
        if not isinstance(max_replays, int) or not 0 <= max_replays <= 255:
            raise ValueError(f"max_replays = {max_replays!r}: must be in [0, 255]")
        if bucket_cache_lines is None:
            bucket_cache_lines = n_buckets
        if (not isinstance(bucket_cache_lines, int) or bucket_cache_lines < 0 or bucket_cache_lines > n_buckets
                or bucket_cache_lines & (bucket_cache_lines - 1)):
            raise ValueError(f"bucket_cache_lines = {bucket_cache_lines!r}: must be 0 (no cache) or a power of "
                             f"two <= n_buckets = {n_buckets}")
        self._cache_lines = bucket_cache_lines
        self._n_buckets = n_buckets
        self._buckets_off = buckets_off
        self._stash_off = stash_off
        self._n_stash = n_stash
        self._flows_off = flows_off
        self._max_outstanding = max_outstanding
        self._axi_id_bits = axi_id_bits
        self._tag_bits = tag_bits
        self._max_replays = max_replays
        super().__init__({
            "hash_key": In(LINE_BITS),
            "i": In(stream.Signature(LookupRequest(tag_bits))),
            "o": Out(stream.Signature(LookupResult(tag_bits))),
            "wr": In(stream.Signature(data.StructLayout({"line": _LINE_INDEX_BITS}))),
            "wr_done": In(stream.Signature(data.StructLayout({"line": _LINE_INDEX_BITS}))),
            "wr_pending": In(1),
            # AXI4 read address channel
            "m_axi_arvalid": Out(1), "m_axi_arready": In(1), "m_axi_araddr": Out(_ADDR_BITS),
            "m_axi_arid": Out(axi_id_bits), "m_axi_arlen": Out(8), "m_axi_arsize": Out(3),
            "m_axi_arburst": Out(2),
            # AXI4 read data channel
            "m_axi_rvalid": In(1), "m_axi_rready": Out(1), "m_axi_rdata": In(LINE_BITS),
            "m_axi_rid": In(axi_id_bits), "m_axi_rlast": In(1), "m_axi_rresp": In(2),
            # AXI4 write channels, tied idle
            "m_axi_awvalid": Out(1), "m_axi_awready": In(1), "m_axi_awaddr": Out(_ADDR_BITS),
            "m_axi_awid": Out(axi_id_bits), "m_axi_awlen": Out(8), "m_axi_awsize": Out(3),
            "m_axi_awburst": Out(2),
            "m_axi_wvalid": Out(1), "m_axi_wready": In(1), "m_axi_wdata": Out(LINE_BITS),
            "m_axi_wstrb": Out(LINE_BYTES), "m_axi_wlast": Out(1),
            "m_axi_bvalid": In(1), "m_axi_bready": Out(1), "m_axi_bid": In(axi_id_bits),
            "m_axi_bresp": In(2),
            # statistics
            "lookups": Out(32), "hits": Out(32), "lines_read": Out(32), "replays": Out(32),
            "giveups": Out(32), "cache_hits": Out(32),
        })

    @property
    def n_buckets(self) -> int:
        return self._n_buckets

    @property
    def buckets_off(self) -> int:
        return self._buckets_off

    @property
    def stash_off(self) -> int:
        return self._stash_off

    @property
    def n_stash(self) -> int:
        return self._n_stash

    @property
    def flows_off(self) -> int:
        return self._flows_off

    @property
    def max_outstanding(self) -> int:
        return self._max_outstanding

    @property
    def axi_id_bits(self) -> int:
        return self._axi_id_bits

    @property
    def tag_bits(self) -> int:
        return self._tag_bits

    @property
    def max_replays(self) -> int:
        return self._max_replays

    @property
    def bucket_cache_lines(self) -> int:
        return self._cache_lines

    def _decide(self, m, pfx, *, is_bucket, slots, c_mask, saved_ptrs, ehit, sig, phase, sidx, prim, sec, nrep,
                dirty_now, next_bucket, cur_ptr=None, primary_only=False):
        """Next-state logic for a context after one line (bucket/stash line or entry line) arrived.

        Shared by the R path and the two cache lanes (which only see bucket/stash lines).
        Returns a dict of signals named ``<pfx>_*``.
        """
        ns, bo, so, fo = self._n_stash, self._buckets_off, self._stash_off, self._flows_off
        sb = max(1, (ns - 1).bit_length()) if ns else 1
        rb = max(1, self._max_replays.bit_length())
        d = {k: Signal(w, name=f"{pfx}_{k}") for k, w in (
            ("state", 3), ("kind", 1), ("phase", 2), ("sidx", sb), ("line", _LINE_INDEX_BITS),
            ("mask", SLOTS_PER_BUCKET), ("cur", 3), ("hit", 1), ("nrep", rb), ("restart", 1), ("replay", 1),
            ("giveup", 1), ("cand", SLOTS_PER_BUCKET), ("first", 3), ("first_ptr", _PTR_BITS))}
        bmatch = Cat(*[s.valid & (s.sig == sig) for s in slots])
        cand, first = d["cand"], d["first"]
        m.d.comb += cand.eq(Mux(is_bucket, bmatch, c_mask))
        for j in reversed(range(SLOTS_PER_BUCKET)):
            with m.If(cand[j]):
                m.d.comb += first.eq(j)
        bptrs = Array([s.entry for s in slots])
        if saved_ptrs is None:
            m.d.comb += d["first_ptr"].eq(bptrs[first])
        else:
            m.d.comb += d["first_ptr"].eq(Mux(is_bucket, bptrs[first], saved_ptrs[first]))
        m.d.comb += [
            d["state"].eq(_ISSUE), d["kind"].eq(_BUCKET), d["phase"].eq(phase), d["sidx"].eq(sidx),
            d["mask"].eq(c_mask), d["cur"].eq(first), d["nrep"].eq(nrep), d["line"].eq(0),
        ]
        # a priority chain: (condition, statements); constant conditions are left out (Verilator
        # warns about the overlapping case patterns that constant-folded ones leave behind)
        chain = []
        if ehit is not None:
            # the line just read is the hit entry's: keep it (the result's index is line - flows_off)
            chain.append((ehit, [d["state"].eq(_DONE), d["hit"].eq(1), d["line"].eq(fo + cur_ptr)]))
        chain.append((cand.any(), [
            d["kind"].eq(_ENTRY), d["line"].eq(fo + d["first_ptr"]),
            d["mask"].eq(cand & ~(Const(1, SLOTS_PER_BUCKET) << first)),
        ]))
        to_secondary = [d["state"].eq(next_bucket), d["phase"].eq(_SECONDARY), d["line"].eq(bo + sec)]
        if primary_only:
            chain.append((None, to_secondary))
        else:
            chain.append((phase == _PRIMARY, to_secondary))
            if ns:
                chain.append((phase == _SECONDARY, [d["state"].eq(next_bucket), d["phase"].eq(_STASH),
                                                    d["sidx"].eq(0), d["line"].eq(so)]))
                if ns > 1:
                    chain.append((sidx != ns - 1, [d["state"].eq(next_bucket), d["sidx"].eq(sidx + 1),
                                                   d["line"].eq(so + sidx + 1)]))
            chain.append((dirty_now & (nrep != self._max_replays), [
                d["state"].eq(next_bucket), d["replay"].eq(1), d["restart"].eq(1), d["phase"].eq(_PRIMARY),
                d["line"].eq(bo + prim), d["nrep"].eq(nrep + 1),
            ]))
            chain.append((None, [d["state"].eq(_DONE), d["giveup"].eq(dirty_now)]))
        for k, (cond, stmts) in enumerate(chain):
            if cond is None:
                with m.Else():
                    m.d.comb += stmts
            else:
                with (m.If if k == 0 else m.Elif)(cond):
                    m.d.comb += stmts
        return d

    def elaborate(self, platform):
        m = Module()
        n = self._max_outstanding
        cb = (n - 1).bit_length()
        bb = (self._n_buckets - 1).bit_length()
        bo, so, fo, ns = self._buckets_off, self._stash_off, self._flows_off, self._n_stash
        sb = max(1, (ns - 1).bit_length()) if ns else 1
        rb = max(1, self._max_replays.bit_length())
        nc = self._cache_lines
        cache = nc > 0
        next_bucket = _PROBE if cache else _ISSUE

        # -- AXI constants and tie-offs ------------------------------------------------
        m.d.comb += [
            self.m_axi_arlen.eq(0), self.m_axi_arsize.eq(_LINE_SHIFT), self.m_axi_arburst.eq(1),
            self.m_axi_rready.eq(1), self.m_axi_bready.eq(1),
            self.m_axi_awvalid.eq(0), self.m_axi_wvalid.eq(0),
            self.m_axi_awsize.eq(_LINE_SHIFT), self.m_axi_awburst.eq(1), self.m_axi_wlast.eq(1),
            self.wr.ready.eq(1), self.wr_done.ready.eq(1),
        ]

        # -- context table (small per-lookup state in registers) -------------------------
        state = [Signal(3, name=f"c{c}_state") for c in range(n)]
        kind = [Signal(1, name=f"c{c}_kind") for c in range(n)]
        phase = [Signal(2, name=f"c{c}_phase") for c in range(n)]
        sidx = [Signal(sb, name=f"c{c}_sidx") for c in range(n)]
        line = [Signal(_LINE_INDEX_BITS, name=f"c{c}_line") for c in range(n)]
        mask = [Signal(SLOTS_PER_BUCKET, name=f"c{c}_mask") for c in range(n)]
        cur = [Signal(3, name=f"c{c}_cur") for c in range(n)]
        sig = [Signal(16, name=f"c{c}_sig") for c in range(n)]
        prim = [Signal(bb, name=f"c{c}_prim") for c in range(n)]
        sec = [Signal(bb, name=f"c{c}_sec") for c in range(n)]
        dirty = [Signal(name=f"c{c}_dirty") for c in range(n)]
        nrep = [Signal(rb, name=f"c{c}_nrep") for c in range(n)]
        hit = [Signal(name=f"c{c}_hit") for c in range(n)]
        a_state, a_line, a_hit = Array(state), Array(line), Array(hit)
        a_kind, a_phase, a_sidx, a_mask = Array(kind), Array(phase), Array(sidx), Array(mask)
        a_cur, a_sig, a_prim, a_sec, a_nrep = Array(cur), Array(sig), Array(prim), Array(sec), Array(nrep)

        # Wide per-lookup state in memories: key and tag (written on acceptance), the
        # entry pointers of the last bucket read, the hit entry line.
        m.submodules.key_mem = key_mem = Memory(shape=FlowKey, depth=n, init=[])
        m.submodules.tag_mem = tag_mem = Memory(shape=self._tag_bits, depth=n, init=[])
        m.submodules.ptr_mem = ptr_mem = Memory(shape=data.ArrayLayout(_PTR_BITS, SLOTS_PER_BUCKET),
                                                depth=n, init=[])
        m.submodules.res_mem = res_mem = Memory(shape=LINE_BITS, depth=n, init=[])
        key_w, tag_w, ptr_w, res_w = (key_mem.write_port(), tag_mem.write_port(), ptr_mem.write_port(),
                                      res_mem.write_port())
        key_r, ptr_r = key_mem.read_port(), ptr_mem.read_port()
        tag_r, res_r = tag_mem.read_port(), res_mem.read_port()

        head = Signal(cb)
        tail = Signal(cb)
        hptr = Signal(cb)
        count = Signal(cb + 1)

        # -- input: reserve the tail context, store key and tag, hash -------------------
        m.submodules.hasher = hasher = FlowHasher(n_buckets=self._n_buckets)
        i_fire = Signal()
        m.d.comb += [
            self.i.ready.eq(count != n),
            i_fire.eq(self.i.valid & self.i.ready),
            hasher.key.eq(self.hash_key),
            hasher.i.valid.eq(i_fire),
            hasher.i.payload.eq(self.i.payload.key),
            hasher.o.ready.eq(1),           # the context was reserved on acceptance
            key_w.addr.eq(tail), key_w.data.eq(self.i.payload.key), key_w.en.eq(i_fire),
            tag_w.addr.eq(tail), tag_w.data.eq(self.i.payload.tag), tag_w.en.eq(i_fire),
        ]
        with m.If(i_fire):
            m.d.sync += tail.eq(tail + 1)
        h_fire = hasher.o.valid
        hk = hasher.o.payload
        with m.If(h_fire):
            m.d.sync += hptr.eq(hptr + 1)

        # -- write reports: mark contexts whose lines were written ----------------------
        touched = [Signal(name=f"c{c}_touched") for c in range(n)]
        hits = [[] for _ in range(n)]
        for port in (self.wr, self.wr_done):
            wr_line = port.payload.line
            in_stash = Signal()
            if ns:
                m.d.comb += in_stash.eq((wr_line >= so) & (wr_line < so + ns))
            for c in range(n):
                hits[c].append(port.valid & (in_stash | (wr_line == bo + prim[c]) | (wr_line == bo + sec[c])))
        for c in range(n):
            m.d.comb += touched[c].eq(hits[c][0] | hits[c][1])
        a_dirty, a_dirty_now = Array(dirty), Array([dirty[c] | touched[c] for c in range(n)])

        def oldest(name, req):
            """The context nearest the head (oldest) among ``req``; results retire in order, so a
            young lookup served early would only wait in its context for the older ones anyway."""
            rot = Signal(n, name=f"{name}_rot")
            m.d.comb += rot.eq(Cat(req, req) >> head)
            age = Signal(cb, name=f"{name}_age")
            for c in reversed(range(n)):
                with m.If(rot[c]):
                    m.d.comb += age.eq(c)
            g = Signal(cb, name=f"{name}_grant")
            m.d.comb += g.eq(head + age)
            return g

        # -- AR: the oldest context with a read to issue ----------------------------------
        issue = Signal(n)
        m.d.comb += issue.eq(Cat(*[s == _ISSUE for s in state]))
        grant = oldest("ar", issue)
        ar_load = Signal()
        m.d.comb += ar_load.eq(issue.any() & (~self.m_axi_arvalid | self.m_axi_arready))
        with m.If(ar_load):
            m.d.sync += [
                self.m_axi_arvalid.eq(1),
                self.m_axi_araddr.eq(a_line[grant] << _LINE_SHIFT),
                self.m_axi_arid.eq(grant),
            ]
        with m.Elif(self.m_axi_arready):
            m.d.sync += self.m_axi_arvalid.eq(0)

        # -- R: register the beat (memories read by RID meanwhile), decide next cycle ----
        s1_valid = Signal()
        s1_ctx = Signal(cb)
        s1_data = Signal(LINE_BITS)
        m.d.sync += s1_valid.eq(self.m_axi_rvalid)
        with m.If(self.m_axi_rvalid):
            m.d.sync += [s1_ctx.eq(self.m_axi_rid[:cb]), s1_data.eq(self.m_axi_rdata)]
        m.d.comb += [key_r.addr.eq(self.m_axi_rid[:cb]), ptr_r.addr.eq(self.m_axi_rid[:cb])]

        c_kind, c_phase, c_sidx = a_kind[s1_ctx], a_phase[s1_ctx], a_sidx[s1_ctx]
        c_prim, c_sec = a_prim[s1_ctx], a_sec[s1_ctx]
        c_cur = Signal(3)
        m.d.comb += c_cur.eq(a_cur[s1_ctx])

        bucket = Bucket(s1_data)
        entry = FlowEntry(s1_data)
        is_bucket = Signal()
        m.d.comb += is_bucket.eq(c_kind == _BUCKET)
        ehit = Signal()
        m.d.comb += ehit.eq(~is_bucket & entry.valid & (entry.key.as_value() == key_r.data.as_value()))
        rd = self._decide(m, "r", is_bucket=is_bucket, slots=bucket.slots, c_mask=a_mask[s1_ctx],
                          saved_ptrs=ptr_r.data, ehit=ehit, sig=a_sig[s1_ctx], phase=c_phase, sidx=c_sidx,
                          prim=c_prim, sec=c_sec, nrep=a_nrep[s1_ctx], dirty_now=a_dirty_now[s1_ctx],
                          next_bucket=next_bucket, cur_ptr=ptr_r.data[c_cur])
        m.d.comb += [
            ptr_w.addr.eq(s1_ctx), ptr_w.en.eq(s1_valid & is_bucket),
            res_w.addr.eq(s1_ctx), res_w.data.eq(s1_data), res_w.en.eq(s1_valid & ehit),
        ]
        for j in range(SLOTS_PER_BUCKET):
            m.d.comb += ptr_w.data[j].eq(bucket.slots[j].entry)

        # -- bucket cache: three probe lanes (primary at hash time; secondary; stash) --------
        lanes = []                  # (valid, ctx, hit, decision, probe grant) of each cache lane
        cache_hit_count = Const(0, 2)
        if cache:
            lanes, cache_hit_count = self._cache(m, h_fire=h_fire, hk=hk, hptr=hptr, head=head, state=state,
                                                 phases=phase,
                                                 a_line=a_line, a_phase=a_phase, a_sidx=a_sidx, a_sig=a_sig,
                                                 a_prim=a_prim, a_sec=a_sec, a_nrep=a_nrep, a_mask=a_mask,
                                                 a_dirty=a_dirty, a_dirty_now=a_dirty_now, oldest=oldest,
                                                 ptr_mem=ptr_mem, fill=(s1_valid & is_bucket, s1_data, c_phase,
                                                                        c_prim, c_sec, c_sidx, a_dirty[s1_ctx]))

        # -- output: retire the head context when done -----------------------------------
        fire_a = Signal()
        o_hit = Signal()
        o_index = Signal(_PTR_BITS)
        m.d.comb += [
            fire_a.eq((a_state[head] == _DONE) & (~self.o.valid | self.o.ready)),
            tag_r.addr.eq(head), tag_r.en.eq(fire_a),
            res_r.addr.eq(head), res_r.en.eq(fire_a),
            self.o.payload.tag.eq(tag_r.data),
            self.o.payload.hit.eq(o_hit),
            self.o.payload.index.eq(o_index),
            self.o.payload.entry.eq(Mux(o_hit, res_r.data, 0)),
        ]
        with m.If(fire_a):
            m.d.sync += [
                self.o.valid.eq(1), o_hit.eq(a_hit[head]),
                o_index.eq(Mux(a_hit[head], (a_line[head] - fo)[:_PTR_BITS], 0)),
                head.eq(head + 1),
            ]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += count.eq(count + i_fire - fire_a)

        # -- per-context register updates (the sources touch contexts in distinct states) -
        def apply(c, d):
            m.d.sync += [
                state[c].eq(d["state"]), kind[c].eq(d["kind"]), phase[c].eq(d["phase"]), sidx[c].eq(d["sidx"]),
                line[c].eq(d["line"]), mask[c].eq(d["mask"]), cur[c].eq(d["cur"]), hit[c].eq(d["hit"]),
                nrep[c].eq(d["nrep"]),
            ]

        for c in range(n):
            restart = [h_fire & (hptr == c), s1_valid & (s1_ctx == c) & rd["restart"]]
            with m.If(h_fire & (hptr == c)):
                m.d.sync += [
                    state[c].eq(_PWAIT if cache else _ISSUE), kind[c].eq(_BUCKET), phase[c].eq(_PRIMARY),
                    line[c].eq(bo + hk.primary), sig[c].eq(hk.sig), prim[c].eq(hk.primary),
                    sec[c].eq(hk.secondary), nrep[c].eq(0), hit[c].eq(0),
                ]
            with m.Elif(ar_load & (grant == c)):
                m.d.sync += state[c].eq(_WAIT)
            with m.Elif(s1_valid & (s1_ctx == c)):
                apply(c, rd)
            for lv, lctx, lhit, ld, lgrant in lanes:
                with m.Elif(lv & (lctx == c)):
                    with m.If(lhit):
                        apply(c, ld)
                    with m.Else():
                        m.d.sync += state[c].eq(_ISSUE)     # not cached: read it from DRAM
                restart.append(lv & (lctx == c) & lhit & ld["restart"])
                if lgrant is not None:
                    with m.Elif(lgrant[0] & (lgrant[1] == c)):
                        m.d.sync += state[c].eq(_PWAIT)
            with m.Elif(fire_a & (head == c)):
                m.d.sync += state[c].eq(_IDLE)
            # A write report wins over a (re)start's clear: at worst one extra replay.
            with m.If(touched[c]):
                m.d.sync += dirty[c].eq(1)
            with m.Elif(Cat(*restart).any()):
                m.d.sync += dirty[c].eq(0)

        # -- statistics -------------------------------------------------------------------
        o_fire = self.o.valid & self.o.ready
        replays = s1_valid & rd["replay"]
        giveups = s1_valid & rd["giveup"]
        for lv, _lctx, lhit, ld, _lgrant in lanes:
            replays = replays + (lv & lhit & ld["replay"])
            giveups = giveups + (lv & lhit & ld["giveup"])
        m.d.sync += [
            self.lookups.eq(self.lookups + o_fire),
            self.hits.eq(self.hits + (o_fire & o_hit)),
            self.lines_read.eq(self.lines_read + (self.m_axi_arvalid & self.m_axi_arready)),
            self.replays.eq(self.replays + replays),
            self.giveups.eq(self.giveups + giveups),
            self.cache_hits.eq(self.cache_hits + cache_hit_count),
        ]
        return m

    def _cache(self, m, *, h_fire, hk, hptr, head, state, phases, a_line, a_phase, a_sidx, a_sig, a_prim, a_sec, a_nrep,
               a_mask, a_dirty, a_dirty_now, oldest, ptr_mem, fill):
        """The bucket cache and its two lanes; returns ``(lanes, number of cache hits this cycle)``."""
        nc, ns, bo, so = self._cache_lines, self._n_stash, self._buckets_off, self._stash_off
        n = self._max_outstanding
        cb = (n - 1).bit_length()
        bb = (self._n_buckets - 1).bit_length()
        ib = (nc - 1).bit_length()                  # index bits of a bucket in the cache
        tb = bb - ib                                # tag bits (0: every bucket has its own line)
        slots_bits = SLOTS_PER_BUCKET * 48
        # cache line: valid, tag, the bucket's slots; one memory for the buckets (direct-mapped), one
        # line per stash line in a second (tiny) one, so the big one keeps a power-of-two depth
        cl = data.StructLayout({"valid": 1, "tag": max(tb, 1), "slots": data.ArrayLayout(BucketSlot,
                                                                                            SLOTS_PER_BUCKET)})
        assert data.Layout.cast(cl).size == 1 + max(tb, 1) + slots_bits
        m.submodules.bucket_cache = cmem = Memory(shape=cl, depth=nc, init=[])
        cw = cmem.write_port()
        cr_p, cr_s = cmem.read_port(), cmem.read_port()
        if ns:
            # (at least 2 lines: a 1-line memory would have a 0-bit address)
            m.submodules.stash_cache = smem = Memory(shape=cl, depth=max(ns, 2), init=[])
            sw, sr = smem.write_port(), smem.read_port()

        def btag(b):
            return b[ib:bb] if tb else Const(0, 1)

        def bidx(b):
            return b[:ib] if ib else Const(0, 1)

        # write ports: a wr report invalidates its line (and takes precedence); otherwise an R-path fill.
        wr_line = self.wr.payload.line
        wb, ws = Signal(_LINE_INDEX_BITS), Signal(_LINE_INDEX_BITS)
        m.d.comb += [wb.eq(wr_line - bo), ws.eq(wr_line - so)]
        inv_b, inv_s = Signal(), Signal()
        m.d.comb += inv_b.eq(self.wr.valid & (wr_line >= bo) & (wr_line < bo + self._n_buckets))
        if ns:
            m.d.comb += inv_s.eq(self.wr.valid & (wr_line >= so) & (wr_line < so + ns))
        f_beat, f_data, f_phase, f_prim, f_sec, f_sidx, f_dirty = fill
        f_en, f_tag = Signal(), Signal(max(tb, 1))
        f_idx = Signal(max(ib, 1))
        # A beat of a lookup that saw no report on its lines since it (re)started (so none since
        # this read was issued, nor in this cycle: any report blocks fills) while no host
        # write is in flight: the data is the line's newest content (docstring).
        m.d.comb += f_en.eq(f_beat & ~f_dirty & ~self.wr.valid & ~self.wr_done.valid & ~self.wr_pending)
        with m.If(f_phase == _PRIMARY):
            m.d.comb += [f_idx.eq(bidx(f_prim)), f_tag.eq(btag(f_prim))]
        with m.Else():
            m.d.comb += [f_idx.eq(bidx(f_sec)), f_tag.eq(btag(f_sec))]
        fb = Bucket(f_data)
        f_stash = f_phase == _STASH
        # After reset the cache is cleared, one line per cycle (its memories are not reset); a probe
        # read while clearing counts as a miss (``clr_q``), and the sweep has the write ports.
        sdb = max(1, (max(ns, 2) - 1).bit_length())
        kb = max(ib, sdb if ns else 0)
        clr = Signal(kb + 1)
        clearing = Signal()
        m.d.comb += clearing.eq(~clr[kb])
        clr_q = Signal(init=1)
        m.d.sync += clr_q.eq(clearing)
        with m.If(clearing):
            m.d.sync += clr.eq(clr + 1)
            m.d.comb += [cw.addr.eq(clr[:ib] if ib else 0), cw.en.eq(1), cw.data.valid.eq(0)]
        with m.Elif(inv_b):
            m.d.comb += [cw.addr.eq(bidx(wb)), cw.en.eq(1), cw.data.valid.eq(0)]
        with m.Elif(f_en & ~f_stash):
            m.d.comb += [cw.addr.eq(f_idx), cw.en.eq(1), cw.data.valid.eq(1), cw.data.tag.eq(f_tag),
                         cw.data.slots.eq(fb.slots)]
        if ns:
            with m.If(clearing):
                m.d.comb += [sw.addr.eq(clr[:sdb]), sw.en.eq(1), sw.data.valid.eq(0)]
            with m.Elif(inv_s):
                m.d.comb += [sw.addr.eq(ws[:4]), sw.en.eq(1), sw.data.valid.eq(0)]
            with m.Elif(f_en & f_stash):
                m.d.comb += [sw.addr.eq(f_sidx), sw.en.eq(1), sw.data.valid.eq(1), sw.data.tag.eq(0),
                                 sw.data.slots.eq(fb.slots)]

        # lane P: the primary bucket, read in the cycle the hash leaves the hasher
        p_valid, p_ctx, p_sig = Signal(), Signal(cb), Signal(16)
        p_prim, p_sec = Signal(bb), Signal(bb)
        m.d.comb += cr_p.addr.eq(bidx(hk.primary))
        m.d.sync += [p_valid.eq(h_fire), p_ctx.eq(hptr), p_sig.eq(hk.sig), p_prim.eq(hk.primary),
                     p_sec.eq(hk.secondary)]
        p_hit = Signal()
        m.d.comb += p_hit.eq(p_valid & ~clr_q & cr_p.data.valid & (cr_p.data.tag == btag(p_prim)))
        pd = self._decide(m, "cp", is_bucket=Const(1), slots=cr_p.data.slots, c_mask=Const(0, SLOTS_PER_BUCKET),
                          saved_ptrs=None, ehit=None, sig=p_sig, phase=Const(_PRIMARY, 2), sidx=Const(0, 1),
                          prim=p_prim, sec=p_sec, nrep=Const(0, 1), dirty_now=Const(0), next_bucket=_PROBE,
                          primary_only=True)
        # lane S: secondary and replayed primary lines; lane T: stash lines (its own memory and
        # read port, so a miss's secondary and stash probes overlap with other lookups' and the
        # lanes together decide one miss per cycle); each serves the oldest waiting context
        probe = Cat(*[s == _PROBE for s in state])
        is_st = Cat(*[p == _STASH for p in phases])
        probe_s, probe_t = Signal(n), Signal(n)
        m.d.comb += [probe_s.eq(probe & ~is_st), probe_t.eq(probe & is_st)]

        def lane(name, req, lmem_port, stash):
            g = oldest(f"{name}probe", req)
            g_valid = Signal(name=f"{name}g_valid")
            m.d.comb += g_valid.eq(req.any())
            g_line = Signal(_LINE_INDEX_BITS, name=f"{name}g_line")
            m.d.comb += g_line.eq(a_line[g])
            gb = Signal(_LINE_INDEX_BITS, name=f"{name}gb")
            if stash:
                m.d.comb += [gb.eq(g_line - so), lmem_port.addr.eq(gb[:4])]
            else:
                m.d.comb += [gb.eq(g_line - bo), lmem_port.addr.eq(bidx(gb))]
            l_valid, l_ctx = Signal(name=f"{name}_valid"), Signal(cb, name=f"{name}_ctx")
            l_tag = Signal(max(tb, 1), name=f"{name}_tag")
            m.d.sync += [l_valid.eq(g_valid), l_ctx.eq(g), l_tag.eq(btag(gb))]
            l_data = lmem_port.data
            l_hit = Signal(name=f"{name}_hit")
            m.d.comb += l_hit.eq(l_valid & ~clr_q & l_data.valid & (Const(1) if stash else l_data.tag == l_tag))
            ld = self._decide(m, f"c{name}", is_bucket=Const(1), slots=l_data.slots,
                              c_mask=Const(0, SLOTS_PER_BUCKET), saved_ptrs=None, ehit=None, sig=a_sig[l_ctx],
                              phase=a_phase[l_ctx], sidx=a_sidx[l_ctx], prim=a_prim[l_ctx], sec=a_sec[l_ctx],
                              nrep=a_nrep[l_ctx], dirty_now=a_dirty_now[l_ctx], next_bucket=_PROBE)
            return (l_valid, l_ctx, l_hit, ld, (g_valid, g)), l_data

        lanes = [(p_valid, p_ctx, p_hit, pd, None)]
        datas = [cr_p.data]
        for name, req, port, stash in (("s", probe_s, cr_s, False),) + ((("t", probe_t, sr, True),) if ns else ()):
            ln, ldata = lane(name, req, port, stash)
            lanes.append(ln)
            datas.append(ldata)
        # the entry pointers of a cached bucket, for the entry beats of its later candidates
        for (lv, lctx, lhit, ld, _g), ldata in zip(lanes, datas, strict=True):
            pw = ptr_mem.write_port()
            m.d.comb += [pw.addr.eq(lctx), pw.en.eq(lv & lhit & ld["cand"].any())]
            for j in range(SLOTS_PER_BUCKET):
                m.d.comb += pw.data[j].eq(ldata.slots[j].entry)
        hits = Const(0, 2)
        for ln in lanes:
            hits = hits + ln[2]
        return lanes, hits
