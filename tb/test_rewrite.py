"""cocotb testbench: HeaderRewriter under Verilator against ``model.actions.apply_actions``.

Run through ``tests/test_rewrite_rtl.py::test_rewrite_verilator`` (``pytest -m sim``).
Traffic: the ``malformed`` scenario's frames (VLAN, IPv4 with options, IPv6, VXLAN,
ARP, fragments, truncated headers) plus truncated copies (14..70 bytes) and seeded
random byte strings, each with a random ActionEntry (random subset of the flags,
VXLAN decap and encap included, random values).  Fed in bursts, back-to-back and, in the stall variant,
with input gaps, late actions and output backpressure.  The input monitor records
the (frame, action) pairs the DUT accepted; the checker compares every output frame
with the model and counts mismatches.
"""

import os
import random

import cocotb
from amaranth.lib import data
from cocotb.triggers import ReadOnly, RisingEdge

from cxlnic.hdl.parser import Beat
from cxlnic.hdl.rewrite import RewriteOut
from cxlnic.model.actions import apply_actions
from cxlnic.model.match import ACTION
from cxlnic.model.parser import parse_headers
from cxlnic.model.scenario import generate
from cxlnic.tb.common import clock_and_reset, frame_beats

PACKETS = int(os.environ.get("CXLNIC_REWRITE_PACKETS", "2000"))
#: Cycles without any accepted input or output while frames are owed before the run is declared stuck.
WATCHDOG = 2000
FLAGS = ("output", "drop", "to_host", "ct_commit", "vlan_pop", "vlan_set", "set_eth_src", "set_eth_dst",
         "set_ipv4_src", "set_ipv4_dst", "set_tp_src", "set_tp_dst")
#: Probability of each VXLAN flag (about half the scenario's frames are clean VXLAN frames).
VXLAN_P = 0.3
VALUES = {"out_port": 8, "vlan_pcp": 3, "vlan_vid": 12, "eth_src": 48, "eth_dst": 48, "ipv4_src": 32,
          "ipv4_dst": 32, "tp_src": 16, "tp_dst": 16, "encap_eth_src": 48, "encap_eth_dst": 48,
          "encap_ip_src": 32, "encap_ip_dst": 32, "encap_udp_src": 16, "encap_vni": 24}
# bit positions of the fields of the input Beat and of the output payload (RewriteOut)
_B = {name: f.offset for name, f in data.Layout.cast(Beat)}
_O = {name: f.offset for name, f in data.Layout.cast(RewriteOut)}
_LAST, _PORT = _B["last"], _O["beat"] + _B["in_port"]
_VERDICT, _OUT_PORT = _O["verdict"], _O["out_port"]


def random_action(rng: random.Random):
    a = ACTION.new()
    for flag in FLAGS:
        setattr(a, flag, int(rng.random() < 0.4))
    for flag in ("vxlan_decap", "vxlan_encap"):
        setattr(a, flag, int(rng.random() < VXLAN_P))
    for name, width in VALUES.items():
        setattr(a, name, rng.getrandbits(width))
    return a


def traffic(seed: int, packets: int):
    """``[(frame, in_port, action)]``: scenario frames, short cuts of them, random bytes."""
    rng = random.Random(seed)
    frames = [(p.frame, p.in_port) for p in generate("malformed", packets=packets, seed=seed).packets]
    for k in range(len(frames)):
        if rng.random() < 0.1:
            f, port = frames[k]
            frames[k] = (f[:rng.randrange(14, 71)], port)
    for _ in range(packets // 20):
        buf = bytearray(rng.randbytes(rng.randrange(0, 301)))
        if len(buf) > 14 and rng.random() < 0.7:
            buf[12:14] = rng.choice([b"\x08\x00", b"\x86\xdd", b"\x81\x00"])
            buf[14] = rng.choice([0x45, 0x46, 0x60, 0x08, rng.getrandbits(8)])
        frames.insert(rng.randrange(len(frames) + 1), (bytes(buf), rng.getrandbits(8)))
    return [(f, port, random_action(rng)) for f, port in frames]


def expected(frame: bytes, in_port: int, a) -> tuple:
    r = apply_actions(frame, a)
    return int(r.verdict), r.out_port, r.frame, in_port


class TB:
    """Owns the clock, reset, the beat and action drivers and the output monitor."""

    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = random.Random(seed)

    async def reset(self):
        await clock_and_reset(self.dut, {"i__valid": 0, "act__valid": 0, "o__ready": 0})

    async def run(self, items, stall: float):
        """Drive every (frame, port, action); returns (accepted inputs, outputs) in order."""
        dut, rng = self.dut, self.rng
        beats = [(b, n == 0, k) for k, (f, p, _) in enumerate(items) for n, b in enumerate(frame_beats(f, p, rng))]
        accepted, out, cur = [], [], []
        sent, nact, offering, quiet = 0, 0, False, 0
        burst, idle = rng.randrange(1, 64), 0
        while len(out) < len(items):
            dut.o__ready.value = int(stall == 0.0 or rng.random() >= stall)
            if not offering and sent < len(beats):
                if idle:
                    idle -= 1
                else:
                    offering = True
                    dut.i__payload.value = beats[sent][0]
                    burst -= 1
                    if burst == 0 and stall:
                        burst, idle = rng.randrange(1, 64), rng.randrange(1, 8)
            dut.i__valid.value = int(offering)
            act_on = nact < len(items) and (stall == 0.0 or rng.random() >= stall)
            if act_on:
                dut.act__payload.value = ACTION.pack(items[nact][2])
            dut.act__valid.value = int(act_on)
            await ReadOnly()
            if act_on and dut.act__ready.value:
                nact += 1
            if offering and dut.i__ready.value:
                # input monitor: the pair the DUT took (a frame's action goes with its first beat)
                if beats[sent][1]:
                    assert nact == beats[sent][2] + 1, "action not consumed with the frame's first beat"
                if beats[sent][0] >> _LAST & 1:
                    accepted.append(items[beats[sent][2]])
                sent, offering, quiet = sent + 1, False, 0
            if dut.o__valid.value and dut.o__ready.value:
                v = dut.o__payload.value.to_unsigned()
                cur.append(v)
                quiet = 0
                if v >> _LAST & 1:
                    out.append(self.decode(cur))
                    cur = []
            quiet += 1
            if quiet > WATCHDOG:
                stuck = "i (i.ready held low)" if sent < len(beats) and not dut.i__ready.value else "o"
                raise AssertionError(f"HeaderRewriter stream {stuck} stuck for {WATCHDOG} cycles: "
                                     f"{len(out)} frames out of {len(items)}, {len(accepted)} accepted")
            await RisingEdge(dut.clk)
        return accepted, out

    @staticmethod
    def decode(words):
        buf = b""
        tags = {(w >> _VERDICT & 3, w >> _OUT_PORT & 0xFF) for w in words}
        for w in words:
            keep = w >> 512 & (1 << 64) - 1
            n = keep.bit_length()
            buf += (w & (1 << 512) - 1).to_bytes(64, "little")[:n] if keep == (1 << n) - 1 else b"<bad keep>"
        tag = tags.pop() if len(tags) == 1 else (-1, -1)      # differing tags never match
        return (*tag, buf, words[0] >> _PORT & 0xFF)


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.3])
async def rewrite_matches_model(dut, stall):
    seed = cocotb.RANDOM_SEED
    tb = TB(dut, seed=seed)
    await tb.reset()
    items = traffic(seed, PACKETS)
    accepted, got = await tb.run(items, stall)
    want = [expected(f, p, a) for f, p, a in accepted]
    mismatches = [(i, g, e) for i, (g, e) in enumerate(zip(got, want, strict=True)) if g != e]
    for i, g, e in mismatches[:10]:
        f, _, a = accepted[i]
        dut._log.error("frame %d (%d bytes) action %#x: rtl %s, model %s; frame %s", i, len(f), ACTION.pack(a),
                       (g[0], g[1], g[2].hex()), (e[0], e[1], e[2].hex()), f[:96].hex())
    shifted = sum(len(e[2]) != len(f) for e, (f, _, _) in zip(want, accepted, strict=True))
    changed = sum(e[2] != f for e, (f, _, _) in zip(want, accepted, strict=True))
    decapped = 0
    for f, _, a in accepted:
        h = parse_headers(f)
        decapped += bool(a.vxlan_decap and not h.exception and h.inner is not None)
    encapped = sum(a.vxlan_encap for _, _, a in accepted)
    dut._log.info("seed %d: %d frames, %d rewritten, %d resized (push/pop/decap/encap), %d decapsulated, "
                  "%d encapsulated; %d mismatches", seed, len(items), changed, shifted, decapped, encapped,
                  len(mismatches))
    assert not mismatches, f"{len(mismatches)} mismatches of {len(items)}"
    assert len(items) < 200 or (decapped and encapped), "the mix lacks VXLAN decap or encap"
