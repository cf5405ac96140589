"""Ternary CAM match-action table: the CAM mirror of the first ``entries`` rule lines.

Bit-exact with :func:`cxlnic.model.match.rule_matches` ("lowest index wins") and
with the ``ct_rule`` check of :meth:`cxlnic.model.slowpath.SlowPath._cam`
(tested against both in Amaranth's simulator and under Verilator).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from cxlnic.hdl.layouts import PacketKey, RuleEntry
from cxlnic.hdl.util import checked_init

__all__ = ["TernaryCam", "CamWrite", "CamResult", "CamEntry", "GROUP"]

#: Entries per first-level priority-encoder group (stage 2); stage 3 encodes across groups.
GROUP = 16


def CamWrite(entries: int) -> data.StructLayout:
    """The write port's payload: a rule line for rule index ``index``."""
    return data.StructLayout({"index": _index_bits(entries), "line": RuleEntry})


def CamResult(entries: int) -> data.StructLayout:
    """The lookup result; see :class:`TernaryCam` for the meaning of each field."""
    return data.StructLayout({
        "hit": 1,
        "index": _index_bits(entries),
        "action": 20,
        "counter": 20,
        "ct_masked_hit": 1,
        "ct_conflict": 1,
    })


#: One CAM entry as the CAM stores it: a rule line decoded into (value, mask) over the
#: PacketKey, so a lookup is one masked compare per entry.  The valid bit is kept apart
#: (it is the only stored bit with a reset).
CamEntry = data.StructLayout({
    "value": PacketKey,
    "mask": PacketKey,
    "action": 20,
    "counter": 20,
})


def _index_bits(entries: int) -> int:
    return max(1, (entries - 1).bit_length())


class TernaryCam(wiring.Component):
    """Ternary CAM, lowest index wins, one lookup per cycle.

    Ports (Verilog names ``w__valid``, ``w__ready``, ``w__payload``, ``i__*``, ``o__*``):

    * ``w``: :func:`CamWrite` stream, the only programming path (``index`` is
      log2(``entries``) bits wide, so every index names an entry).  ``ready`` is
      constantly 1: a write is accepted every cycle it is valid and never stalls
      lookups.  The line is decoded on the way in (prefix lengths to 128-bit
      masks, care bits to field masks, ``tenant_care``/``owner`` to a tenant
      mask).  A prefix length above 128 is treated as 128.  Entries reset to
      invalid.
    * ``i``: PacketKey stream of lookups (``ct_state`` is matched as given).
    * ``o``: :func:`CamResult` stream.

    Result fields:

    * ``hit``/``index``: the lowest-index entry ``e`` with ``rule_matches(e, key)``;
      ``action``/``counter``: that entry's fields (all zero on a miss).
    * ``ct_conflict``: on a hit at index *h*, some entry at index <= *h* (the hit
      entry included) has a nonzero ``ct_state_mask`` and matches the key with
      ``ct_state`` ignored -- the slow path's
      ``_depends(key, h, on_ct=True, on_tcp_flags=False)``.  0 on a miss.
    * ``ct_masked_hit``: the second match vector (ct_state wildcarded in every
      entry) has a hit: some valid entry matches the key with ``ct_state``
      ignored.  Equals ``hit`` unless a ct-matching rule could match the packet
      under another ``ct_state``.

    Ordering (the *completion cycle* of a write is the cycle after it is
    accepted): a lookup accepted in the completion cycle of a write or later
    sees the new entry; a lookup accepted in the write's own cycle or earlier
    sees the old one, whatever backpressure delays it afterwards (a lookup
    compares and snapshots the entries' action/counter in its accept cycle).
    Equivalently: a lookup sees exactly the writes accepted in cycles strictly
    before its own accept cycle.

    Timing: throughput one lookup per cycle; latency 3 cycles (a lookup
    accepted in cycle *t* is presented on ``o`` in cycle *t* + 3 without
    backpressure).  Stage 1 compares into the match vectors, stage 2
    priority-encodes groups of :data:`GROUP` entries, stage 3 encodes across
    the groups.  The pipeline stalls as a whole while ``o.ready`` is low;
    ``o.valid`` never depends on ``o.ready``.
    """

    @checked_init
    def __init__(self, *, entries: int = 64):
        if not isinstance(entries, int) or isinstance(entries, bool) or entries < 2 or entries & (entries - 1):
            if not isinstance(entries, int) or isinstance(entries, bool):
                raise TypeError(f"entries = {entries!r}: must be an int")
            raise ValueError(f"entries = {entries}: must be a power of two >= 2")
        self._entries = entries
        super().__init__({
            "w": In(stream.Signature(CamWrite(entries))),
            "i": In(stream.Signature(PacketKey)),
            "o": Out(stream.Signature(CamResult(entries))),
        })

    @property
    def entries(self) -> int:
        return self._entries

    @staticmethod
    def _prefix_mask(m, plen, name):
        """128-bit mask of the first ``plen`` address bits (bit 127 = first address bit)."""
        mask = Signal(128, name=name)
        m.d.comb += mask.eq(Cat(*[plen >= 128 - j for j in range(128)]))
        return mask

    def _decode(self, m, line):
        """A RuleEntry line -> a CamEntry (value, mask) record."""
        e = Signal(CamEntry)
        v, k = e.value, e.mask
        m.d.comb += [
            e.action.eq(line.action),
            e.counter.eq(line.counter),
            v.flow.tenant.eq(line.owner),
            k.flow.tenant.eq(line.tenant_care.replicate(24)),
            v.flow.in_port.eq(line.in_port),
            k.flow.in_port.eq(line.in_port_care.replicate(8)),
            v.flow.eth_type.eq(line.eth_type),
            k.flow.eth_type.eq(line.eth_type_care.replicate(16)),
            v.flow.ip_proto.eq(line.ip_proto),
            k.flow.ip_proto.eq(line.ip_proto_care.replicate(8)),
            v.flow.vlan_valid.eq(line.vlan_valid),
            k.flow.vlan_valid.eq(line.vlan_care),
            v.flow.vlan_id.eq(line.vlan_id),
            k.flow.vlan_id.eq(line.vlan_id_mask & line.vlan_care.replicate(12)),
            v.flow.src_port.eq(line.src_port),
            k.flow.src_port.eq(line.src_port_mask),
            v.flow.dst_port.eq(line.dst_port),
            k.flow.dst_port.eq(line.dst_port_mask),
            v.tcp_flags.eq(line.tcp_flags),
            k.tcp_flags.eq(line.tcp_flags_mask),
            v.ct_state.eq(line.ct_state),
            k.ct_state.eq(line.ct_state_mask),
            v.flow.src_ip.eq(line.src_ip),
            k.flow.src_ip.eq(self._prefix_mask(m, line.src_plen, "w_src_mask")),
            v.flow.dst_ip.eq(line.dst_ip),
            k.flow.dst_ip.eq(self._prefix_mask(m, line.dst_plen, "w_dst_mask")),
        ]
        return e

    @staticmethod
    def _node(m, name, lo, hi):
        """Combine two priority-encoder nodes; ``lo`` covers the lower indices and wins."""
        n = {key: Signal(len(sig), name=f"{name}_{key}") for key, sig in lo.items()}
        m.d.comb += [
            n["any"].eq(lo["any"] | hi["any"]),
            n["index"].eq(Mux(lo["any"], lo["index"], hi["index"])),
            n["action"].eq(Mux(lo["any"], lo["action"], hi["action"])),
            n["counter"].eq(Mux(lo["any"], lo["counter"], hi["counter"])),
            # ct entries up to and including the first hit
            n["conf"].eq(lo["conf"] | (~lo["any"] & hi["conf"])),
            n["masked"].eq(lo["masked"] | hi["masked"]),
        ]
        return n

    def _encode(self, m, name, leaves):
        """Balanced priority-encoder tree over ``leaves`` (index order); every node a Signal,
        so no expression is shared (pysim would inline it once per use)."""
        level = 0
        while len(leaves) > 1:
            leaves = [self._node(m, f"{name}_l{level}_{j}", leaves[2 * j], leaves[2 * j + 1])
                      for j in range(len(leaves) // 2)]
            level += 1
        return leaves[0]

    def elaborate(self, platform):
        m = Module()
        n = self._entries
        ib = _index_bits(n)
        group = min(GROUP, n)
        n_groups = n // group

        # -- storage and the write port ---------------------------------------------
        m.d.comb += self.w.ready.eq(1)
        dec = self._decode(m, self.w.payload.line)
        # Only the valid bits need a reset: an invalid entry's other fields are don't-care.
        ent = [Signal(CamEntry, name=f"entry{j}", reset_less=True) for j in range(n)]
        ent_valid = [Signal(name=f"entry{j}_valid") for j in range(n)]
        for j in range(n):
            with m.If(self.w.valid & (self.w.payload.index == j)):
                m.d.sync += [ent[j].eq(dec), ent_valid[j].eq(self.w.payload.line.valid)]

        adv = Signal()                  # the whole lookup pipeline moves this cycle
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        m.d.comb += self.i.ready.eq(adv)

        # -- stage 1: compare (two match vectors) and snapshot the results ------------
        key = self.i.payload
        hit1 = Signal(n)                # rule_matches
        masked1 = Signal(n)             # rule_matches with ct_state ignored
        conf1 = Signal(n)               # ... and the entry matches on ct_state
        act1 = [Signal(20, name=f"s1_action{j}", reset_less=True) for j in range(n)]
        cnt1 = [Signal(20, name=f"s1_counter{j}", reset_less=True) for j in range(n)]
        v1 = Signal()
        hit_c, masked_c, conf_c = [], [], []
        # ct_state is compared apart from the other fields: the same compare gives both
        # match vectors (with and without ct_state).
        for j, e in enumerate(ent):
            other = Signal(name=f"m_other{j}")
            ct = Signal(name=f"m_ct{j}")
            m.d.comb += [
                other.eq(ent_valid[j]
                         & (((key.flow.as_value() ^ e.value.flow.as_value()) & e.mask.flow.as_value()) == 0)
                         & (((key.tcp_flags ^ e.value.tcp_flags) & e.mask.tcp_flags) == 0)),
                ct.eq(((key.ct_state ^ e.value.ct_state) & e.mask.ct_state) == 0),
            ]
            hit_c.append(other & ct)
            masked_c.append(other)
            conf_c.append(other & e.mask.ct_state.any())
        # Writes never stall, so an entry may be rewritten while a lookup that compared against
        # it is still in the pipeline: the lookup carries a snapshot of every entry's action and
        # counter from its compare cycle, keeping its result consistent with its match vector.
        with m.If(adv):
            m.d.sync += [hit1.eq(Cat(*hit_c)), masked1.eq(Cat(*masked_c)), conf1.eq(Cat(*conf_c)),
                         v1.eq(self.i.valid)]
            m.d.sync += [act1[j].eq(ent[j].action) for j in range(n)]
            m.d.sync += [cnt1[j].eq(ent[j].counter) for j in range(n)]

        # -- stage 2: priority-encode each group of entries ---------------------------
        groups2 = []
        for g in range(n_groups):
            leaves = [{
                "any": hit1[j], "index": Const(j, ib), "action": act1[j], "counter": cnt1[j],
                "conf": conf1[j], "masked": masked1[j],
            } for j in range(g * group, (g + 1) * group)]
            top = self._encode(m, f"s2g{g}", leaves)
            # qualified by v2: no reset needed
            reg = {k: Signal(len(s), name=f"s2g{g}_{k}", reset_less=True) for k, s in top.items()}
            with m.If(adv):
                m.d.sync += [reg[k].eq(top[k]) for k in top]
            groups2.append(reg)
        v2 = Signal()
        with m.If(adv):
            m.d.sync += v2.eq(v1)

        # -- stage 3: encode across the groups ----------------------------------------
        top = self._encode(m, "s3", groups2)
        o = self.o.payload
        with m.If(adv):
            m.d.sync += [
                self.o.valid.eq(v2),
                o.hit.eq(top["any"]),
                o.index.eq(Mux(top["any"], top["index"], 0)),
                o.action.eq(Mux(top["any"], top["action"], 0)),
                o.counter.eq(Mux(top["any"], top["counter"], 0)),
                o.ct_conflict.eq(top["any"] & top["conf"]),
                o.ct_masked_hit.eq(top["masked"]),
            ]
        return m
