"""Shared pytest configuration: hypothesis profiles, and the longest tests first.

``HYPOTHESIS_PROFILE=ci`` (the default, used by ``make test``) keeps property
tests short; ``long`` (``make regress``) runs many more examples.

Test order: the Verilator tests (``sim`` mark: a build of minutes each) run
first, so that with pytest-xdist the long builds overlap the many short
tests instead of piling up at the end; within them, the ones known to take
longest first (the two system-harness groups, then the big blocks).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", deadline=None, max_examples=2000,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


#: Test files whose Verilator tests take longest, longest first (CI durations, build included).
_LONGEST = ("test_system_rtl", "test_cxl_cache_rtl", "test_cam_rtl", "test_smartnic_rtl", "test_bench_datapath",
            "test_rewrite_rtl", "test_cuckoo_rtl", "test_cxl_mem_rtl")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.stem
        heavy = item.get_closest_marker("sim") is not None or name == "test_bench_datapath"
        return (0 if heavy else 1, _LONGEST.index(name) if name in _LONGEST else len(_LONGEST))
    items.sort(key=rank)            # stable: the order within a file is kept
