"""One configuration object read by the HDL, the golden model and the testbenches."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from cxlnic.hdl.layouts import LINE_BYTES, SLOTS_PER_BUCKET

__all__ = ["NicConfig", "MS_RSS_KEY", "DEFAULT_HASH_KEY", "ConfigError"]

#: The 40-byte key of Microsoft's RSS verification suite (and most NICs' default).
MS_RSS_KEY = bytes.fromhex(
    "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")
#: A full 64-byte Toeplitz key: the MS key followed by its first 24 bytes, so the
#: first 32 output bits of any input of up to 36 bytes equal the standard RSS hash.
DEFAULT_HASH_KEY = MS_RSS_KEY + MS_RSS_KEY[:24]


class ConfigError(ValueError):
    """A configuration parameter is out of range; the message names it."""


def _pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


@dataclass(frozen=True)
class NicConfig:
    """Geometry and limits of one NIC instance.

    Region sizes are in entries (one entry = one 64-byte line, except
    counters: four per line).  The memory image lays regions out in the order
    header, hash key, tenants, rules, actions, buckets, stash, flows,
    counters; offsets are written into the header, and readers take them
    from there.
    """
    cam_entries: int = 64        # rules mirrored into the CAM (the first N of the rule region)
    n_rules: int = 1024          # rule region: CAM mirror + software-only overflow
    n_actions: int = 4096
    n_buckets: int = 4096        # cuckoo buckets (power of two, >= 2)
    n_stash: int = 1             # stash lines (each a bucket of slots), 0 for none
    n_flows: int = 0             # flow-entry pool; 0 = one per bucket slot (+ stash)
    n_counters: int = 0          # 0 = one per rule + one per flow entry
    n_tenants: int = 16
    n_ports: int = 16
    max_moves: int = 8           # cuckoo path length cap
    min_frame: int = 60          # shorter frames are runts (bytes, no FCS)
    max_frame: int = 9216        # longer frames are oversize
    hash_key: bytes = field(default=DEFAULT_HASH_KEY, repr=False)

    def __post_init__(self):
        def bad(name, why):
            raise ConfigError(f"NicConfig.{name} = {getattr(self, name)!r}: {why}")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != "hash_key" and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                bad(f.name, "must be a non-negative integer")
        if not _pow2(self.n_buckets) or self.n_buckets < 2:
            bad("n_buckets", "must be a power of two >= 2")
        if self.cam_entries > self.n_rules:
            bad("cam_entries", f"exceeds n_rules ({self.n_rules})")
        if self.n_rules < 1:
            bad("n_rules", "must be >= 1")
        if self.n_actions < 1:
            bad("n_actions", "must be >= 1")
        if not isinstance(self.hash_key, (bytes, bytearray)) or len(self.hash_key) != LINE_BYTES:
            bad("hash_key", f"must be {LINE_BYTES} bytes")
        if self.n_flows >= 1 << 31:
            bad("n_flows", "must be < 2**31 (31-bit entry pointers)")
        if self.max_moves < 1:
            bad("max_moves", "must be >= 1")
        if self.min_frame < 14 or self.max_frame < self.min_frame:
            bad("max_frame", "frame limits must satisfy 14 <= min_frame <= max_frame")
        if self.n_ports > 256:
            bad("n_ports", "must be <= 256 (8-bit port numbers)")
        for name in ("n_rules", "n_actions", "n_tenants", "cam_entries"):
            if getattr(self, name) > 0xFFFFF and name != "n_tenants":
                bad(name, "must fit 20 bits")
        if self.n_tenants >= 1 << 16 or self.n_stash >= 1 << 16 or self.cam_entries >= 1 << 16:
            bad("n_tenants", "n_tenants, n_stash and cam_entries must fit 16 bits")

    # -- derived geometry -------------------------------------------------
    @property
    def slots(self) -> int:
        return SLOTS_PER_BUCKET

    @property
    def flows(self) -> int:
        """Flow-entry pool size."""
        return self.n_flows or (self.n_buckets + self.n_stash) * SLOTS_PER_BUCKET

    @property
    def counters(self) -> int:
        return self.n_counters or self.n_rules + self.flows

    @property
    def flow_counter_base(self) -> int:
        """Counter index of flow entry 0 (rules own counters 0..n_rules-1 by default)."""
        return self.n_rules

    def regions(self) -> dict[str, tuple[int, int]]:
        """``{name: (first line, number of lines)}`` of the memory image."""
        sizes = [
            ("header", 1), ("hashkey", 1), ("tenants", self.n_tenants), ("rules", self.n_rules),
            ("actions", self.n_actions), ("buckets", self.n_buckets), ("stash", self.n_stash),
            ("flows", self.flows), ("counters", (self.counters + 3) // 4),
        ]
        out, at = {}, 0
        for name, n in sizes:
            out[name] = (at, n)
            at += n
        return out

    @property
    def image_lines(self) -> int:
        first, n = self.regions()["counters"]
        return first + n

    def with_(self, **kw) -> NicConfig:
        return replace(self, **kw)
