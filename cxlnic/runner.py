"""Run the golden model over a packet trace and report what happened.

Shared by ``cxlnic classify`` and ``cxlnic sim``: packets are processed in
time order, the aging sweep runs every ``age_interval`` seconds of trace
time, and the report accounts for every packet (conservation).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from cxlnic.config import NicConfig
from cxlnic.hdl.layouts import ExceptionCode
from cxlnic.model.actions import Verdict
from cxlnic.model.memory import BytearrayMemory, format_image
from cxlnic.model.scenario import Packet
from cxlnic.model.slowpath import SlowPath

__all__ = ["RunResult", "classify_trace", "report"]


@dataclass
class RunResult:
    sp: SlowPath
    cfg: NicConfig
    outputs: list[Packet] = field(default_factory=list)     # OUTPUT verdicts; in_port = the out port
    to_host: list[Packet] = field(default_factory=list)     # exceptions, controller actions
    rule_info: dict[int, object] = field(default_factory=dict)   # rule id -> Rule
    seconds: float = 0.0
    first_fast: dict = field(default_factory=dict)


class Progress:
    """A one-line progress display on stderr for long runs (no-op when disabled)."""

    def __init__(self, total: int, enabled: bool, label: str = "model"):
        self.total, self.enabled, self.label = total, enabled, label
        self.t0 = time.monotonic()
        self.step = max(1, total // 50)

    def update(self, n: int) -> None:
        if not self.enabled or (n % self.step and n != self.total):
            return
        dt = time.monotonic() - self.t0
        rate = n / dt if dt > 0 else 0.0
        eta = (self.total - n) / rate if rate else 0.0
        end = "\n" if n == self.total else ""
        print(f"\r[{self.label}] {n}/{self.total} packets  {rate:,.0f} pkt/s  eta {eta:4.0f} s",
              end=end, file=sys.stderr, flush=True)


def classify_trace(rules, packets, cfg: NicConfig | None = None, *, age_interval: float = 5.0,
                   progress: bool = False) -> RunResult:
    """Install ``rules`` into a fresh image and decide every packet of ``packets`` (time-ordered)."""
    cfg = cfg or NicConfig()
    mem = BytearrayMemory(cfg.image_lines)
    mem.apply(format_image(cfg))
    sp = SlowPath(mem, cfg)
    res = RunResult(sp, cfg)
    installed = sp.install_rules(rules)
    res.rule_info = dict(zip(installed.ids, rules, strict=True))
    prog = Progress(len(packets), progress)
    next_age = (packets[0].time if packets else 0.0) + age_interval
    t0 = time.perf_counter()
    for n, p in enumerate(packets, 1):
        # the sweep runs on a timer, also through idle gaps: activity is then
        # attributed to the sweep that follows it, at most one interval later
        while age_interval and p.time >= next_age:
            sp.age(next_age)
            next_age += age_interval
        d = sp.process(p.frame, p.in_port, p.time)
        if d.verdict == Verdict.OUTPUT:
            res.outputs.append(Packet(p.time, d.out_port, d.frame))
        elif d.verdict == Verdict.TO_HOST:
            res.to_host.append(Packet(p.time, p.in_port, d.frame))
        prog.update(n)
    res.seconds = time.perf_counter() - t0
    mem.apply(sp.counters.writes())      # the image ends with the counters the device would hold
    return res


def report(res: RunResult) -> dict:
    """The statistics JSON of a run: per path, per rule, flows, conservation."""
    sp = res.sp
    st = sp.stats.as_dict()
    st["exceptions"] = {ExceptionCode(int(k)).name: v for k, v in st["exceptions"].items()}
    v = sp.stats.verdicts
    n = sp.stats.packets
    st["conservation"] = {
        "in": n, "output": v["output"], "to_host": v["to_host"], "drop": v["drop"],
        "ok": n == v["output"] + v["to_host"] + v["drop"] == len(res.outputs) + len(res.to_host) + v["drop"],
    }
    rules = []
    for i, rid in enumerate(sp.rules.ids()):
        r = res.rule_info.get(rid)
        pk, by = sp.counters.get(rid)
        rules.append({"index": i, "id": rid, "cam": i < sp.geom.cam_entries,
                      "priority": sp.rules.rule_at(i).priority,
                      "line": getattr(r, "line", None), "text": getattr(r, "text", ""),
                      "packets": pk, "bytes": by})
    flow_pk = sum(sp.counters.packets[sp.geom.n_counters - sp.geom.n_flows:])
    flow_by = sum(sp.counters.bytes[sp.geom.n_counters - sp.geom.n_flows:])
    st["flows"] = {
        "installed": st.pop("flows_installed"), "deleted": st.pop("flows_deleted"),
        "install_failures": st.pop("install_failures"), "live": len(sp.flows),
        "load": round(sp.flows.load, 4), "counter_packets": flow_pk, "counter_bytes": flow_by,
    }
    st["rules"] = rules
    st["model"] = {"seconds": round(res.seconds, 3),
                   "packets_per_s": round(n / res.seconds) if res.seconds else None}
    c = res.cfg
    st["config"] = {"cam_entries": c.cam_entries, "n_rules": c.n_rules, "n_buckets": c.n_buckets,
                    "n_flows": c.flows, "n_actions": c.n_actions}
    return st
