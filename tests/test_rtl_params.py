"""RTL blocks reject bad parameters with an error that names the parameter."""

import pytest

from cxlnic.hdl.cam import TernaryCam
from cxlnic.hdl.counters import CounterBlock
from cxlnic.hdl.cuckoo import CuckooEngine
from cxlnic.hdl.hash import FlowHasher
from cxlnic.hdl.parser import PacketParser
from cxlnic.hdl.rewrite import HeaderRewriter

CUCKOO_OK = dict(n_buckets=16, buckets_off=10, stash_off=26, n_stash=1, flows_off=27)


@pytest.mark.parametrize("make,exc,msg", [
    (lambda: FlowHasher(n_buckets=100), ValueError, "n_buckets = 100"),
    (lambda: TernaryCam(entries=48), ValueError, "entries = 48"),
    (lambda: TernaryCam(entries="64"), TypeError, "entries = '64'"),
    (lambda: PacketParser(min_frame=100, max_frame=50), ValueError, "min_frame = 100"),
    (lambda: CuckooEngine(**dict(CUCKOO_OK, n_buckets=3)), ValueError, "n_buckets = 3"),
    (lambda: CuckooEngine(**dict(CUCKOO_OK, max_outstanding=33)), ValueError, "max_outstanding = 33"),
    (lambda: CounterBlock(n_counters=10, counters_off=0), ValueError, "n_counters = 10"),
    (lambda: HeaderRewriter(max_frame=10), ValueError, "max_frame = 10"),
])
def test_bad_parameters_name_the_parameter(make, exc, msg):
    with pytest.raises(exc, match=msg):
        make()
