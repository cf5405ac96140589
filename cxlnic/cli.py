"""The ``cxlnic`` command line.

    cxlnic classify RULES IN.pcap -o OUT.pcap --stats STATS.json
    cxlnic gen [--scenario mixed] [--packets N] [--seed S] -o DIR
    cxlnic sim [--scenario mixed] [--packets N] [--seed S] [--pcap P --rules R] [--out build/sim] [--model-only]

Every error names the file (and line/column for rules) and exits with status
2 before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cxlnic.config import NicConfig

EXIT_USAGE = 2


class CliError(Exception):
    """A user error: printed as ``cxlnic: error: ...``, exit status 2."""


def _load_rules(path: str):
    from cxlnic.model.rulelang import RuleSyntaxError, load_rules

    p = Path(path)
    if not p.is_file():
        raise CliError(f"{path}: rules file not found")
    try:
        rules = load_rules(p)
    except RuleSyntaxError as e:
        raise CliError(f"{path}: {len(e.errors)} error(s) in the rules, nothing installed\n{e}") from None
    except UnicodeDecodeError as e:
        raise CliError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    if not rules:
        raise CliError(f"{path}: no rules in the file")
    return rules


def _load_pcap(path: str):
    from cxlnic.model.scenario import read_pcap

    p = Path(path)
    if not p.is_file():
        raise CliError(f"{path}: pcap file not found")
    try:
        packets = read_pcap(p)
    except ValueError as e:
        raise CliError(f"{path}: {e}") from None
    except Exception as e:  # scapy raises its own exception types for non-pcap input
        raise CliError(f"{path}: not a readable pcap file ({type(e).__name__}: {e})") from None
    for i in range(1, len(packets)):
        if packets[i].time < packets[i - 1].time:
            packets = sorted(packets, key=lambda x: x.time)   # stable: keeps capture order on ties
            break
    return packets


def _config(args, rules) -> NicConfig:
    n_rules = max(1024, 1 << (len(rules) - 1).bit_length())
    return NicConfig(cam_entries=args.cam, n_rules=n_rules, n_buckets=args.buckets)


def _check_config(args) -> None:
    if args.buckets < 2 or args.buckets & (args.buckets - 1):
        raise CliError(f"--buckets {args.buckets}: must be a power of two >= 2")
    if args.cam < 0 or args.cam > 1024:
        raise CliError(f"--cam {args.cam}: must be between 0 and 1024")


def _run(args, rules, packets, *, quiet=False):
    from cxlnic.model.rules import TableFull
    from cxlnic.runner import classify_trace

    cfg = _config(args, rules)
    try:
        return classify_trace(rules, packets, cfg, age_interval=args.age_interval,
                              progress=not quiet and sys.stderr.isatty() or args.progress)
    except TableFull as e:
        raise CliError(f"rules do not fit the table: {e}") from None


def _write_json(path: Path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def cmd_classify(args) -> int:
    from cxlnic.model.scenario import write_pcap
    from cxlnic.runner import report

    _check_config(args)
    rules = _load_rules(args.rules)
    packets = _load_pcap(args.pcap)
    res = _run(args, rules, packets)
    write_pcap(args.output, res.outputs)
    if args.host_pcap:
        write_pcap(args.host_pcap, res.to_host)
    doc = report(res)
    if args.stats:
        _write_json(Path(args.stats), doc)
    _print_summary(doc, sys.stdout)
    return 0 if doc["conservation"]["ok"] else 1


def cmd_gen(args) -> int:
    from cxlnic.model.scenario import generate

    sc = _generate(args, generate)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    sc.write(out / "rules.of", out / "trace.pcap")
    print(f"wrote {out / 'rules.of'} ({sc.rules_text.count(chr(10))} lines), {out / 'trace.pcap'} "
          f"({len(sc.packets)} packets) and {out / 'trace.pcap.ports'}")
    return 0


def _generate(args, generate):
    from cxlnic.model.scenario import SCENARIOS

    if args.scenario not in SCENARIOS:
        raise CliError(f"unknown scenario {args.scenario!r}; choose one of: {', '.join(sorted(SCENARIOS))}")
    if args.packets < 1:
        raise CliError(f"--packets {args.packets}: must be >= 1")
    return generate(args.scenario, packets=args.packets, seed=args.seed)


def _check_sim_args(args):
    """Every input check of ``sim``, before anything is built: returns (rules, packets, source) for a
    pcap run, (None, None, source) for a scenario run."""
    from cxlnic.tb.harness import SYSTEM_SCENARIOS, TYPE1_SCENARIOS, TYPE2_ONLY

    if args.type not in (1, 2):
        raise CliError(f"TYPE={args.type}: must be 1 (tables in host memory) or 2 (device memory)")
    if bool(args.pcap) != bool(args.rules):
        raise CliError("give PCAP and RULES together (or neither, to use the scenario generator)")
    if args.burst < 1:
        raise CliError(f"--burst {args.burst}: must be >= 1")
    if not args.model_only:
        # the RTL run simulates one device geometry (tb/harness.py system_config) and ages every 5 s
        for opt, val, default in (("--buckets", args.buckets, 4096), ("--cam", args.cam, 64),
                                  ("--age-interval", args.age_interval, 5.0)):
            if val != default:
                raise CliError(f"{opt} {val}: only with --model-only (the RTL system simulation has a fixed "
                               "geometry: docs/system-sim.md)")
    if args.pcap:
        rules, packets = _load_rules(args.rules), _load_pcap(args.pcap)
        if not packets:
            raise CliError(f"{args.pcap}: no packets in the capture")
        bad = next((n for n, p in enumerate(packets) if not 0 <= p.in_port <= 255), None)
        if bad is not None:
            raise CliError(f"{args.pcap}.ports: packet {bad + 1} has in_port {packets[bad].in_port}; "
                           "the device's ports are 0..255")
        return rules, packets, f"{args.pcap} + {args.rules}"
    scenarios = SYSTEM_SCENARIOS if not args.model_only else ("mixed", "reactive", "conntrack", "static",
                                                                "malformed")
    if args.scenario not in scenarios:
        raise CliError(f"unknown scenario {args.scenario!r}; choose one of: {', '.join(sorted(scenarios))}")
    if args.type == 1 and not args.model_only and args.scenario in TYPE2_ONLY:
        raise CliError(f"SCENARIO={args.scenario} with TYPE=1: that scenario gates frames on CXL.mem completions "
                       f"while writes stream, which needs Type 2; Type 1 runs {', '.join(TYPE1_SCENARIOS)}")
    if args.packets < 20:
        raise CliError(f"--packets {args.packets}: a scenario needs at least 20 packets")
    return None, None, f"scenario {args.scenario!r}, seed {args.seed}"


def _check_rules_fit(rules, source: str) -> None:
    from cxlnic.model.memory import BytearrayMemory, format_image
    from cxlnic.model.rules import TableFull
    from cxlnic.model.slowpath import SlowPath
    from cxlnic.tb.harness import system_config

    cfg = system_config()
    mem = BytearrayMemory(cfg.image_lines)
    mem.apply(format_image(cfg))
    try:
        SlowPath(mem, cfg).install_rules(rules)
    except TableFull as e:
        raise CliError(f"{source}: the rules do not fit the simulated device ({cfg.n_rules} rules, "
                       f"{cfg.n_actions} actions): {e}") from None


def cmd_sim(args) -> int:
    rules, packets, source = _check_sim_args(args)
    out = Path(args.out)
    if args.model_only:
        return _sim_model(args, rules, packets, source, out)
    if rules is not None:
        _check_rules_fit(rules, source)
    from cxlnic.tb.harness import run_system_sim
    from cxlnic.tb.simreport import print_report, write_plots

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").unlink(missing_ok=True)
    env = {"CXLNIC_SCENARIO": args.scenario, "CXLNIC_PACKETS": str(args.packets), "CXLNIC_SEED": str(args.seed),
           "CXLNIC_BURST": str(args.burst), "CXLNIC_SIM_OUT": str(out.resolve()), "CXLNIC_PROGRESS": "1"}
    if args.pcap:
        env |= {"CXLNIC_PCAP": str(Path(args.pcap).resolve()), "CXLNIC_RULES": str(Path(args.rules).resolve())}
    what = ("Type 2: tables in device DRAM behind CXL.mem" if args.type == 2 else
            "Type 1: tables in host memory behind CXL.cache")
    print(f"cxlnic sim: RTL SmartNic ({what}) under Verilator against the golden slow path; input: {source}\n"
          "building the simulation (Verilog, then Verilator: a few minutes the first time, reused after)...",
          flush=True)
    failed = None
    try:
        build = run_system_sim(env, seed=args.seed, cxl_type=args.type)
    except AssertionError as e:
        failed, build = str(e), None
    rep_path = out / "report.json"
    if not rep_path.exists():
        print(f"cxlnic sim: the simulation ended without a report: {failed}", file=sys.stderr)
        return 1
    doc = json.loads(rep_path.read_text())
    plots = write_plots(doc, out)
    print_report(doc, sys.stdout)
    waves = sorted(build.glob("*.fst")) + sorted(build.glob("*.vcd")) if build else []
    print(f"wrote {rep_path}, {out / 'out.pcap'}" + "".join(f", {p}" for p in plots)
          + "".join(f", waves {p}" for p in waves))
    if failed:
        print(f"cxlnic sim: FAILED: {failed}", file=sys.stderr)
        return 1
    return 0 if doc["mismatches"] == 0 else 1


def _sim_model(args, rules, packets, source, out) -> int:
    """``--model-only``: the golden model alone (Python slow path + fast-path emulation), no RTL."""
    from cxlnic.model.scenario import generate, write_pcap
    from cxlnic.runner import report

    _check_config(args)
    if rules is None:
        sc = _generate(args, generate)
        from cxlnic.model.rulelang import parse_rules
        rules, packets = parse_rules(sc.rules_text, "scenario"), sc.packets
    out.mkdir(parents=True, exist_ok=True)
    print(f"cxlnic sim --model-only: golden model only (Python slow path + fast-path emulation)\n"
          f"input: {source}: {len(rules)} rules, {len(packets)} packets", flush=True)
    res = _run(args, rules, packets)
    doc = report(res)
    doc["mode"] = "golden-model"
    doc["input"] = source
    _write_json(out / "report.json", doc)
    write_pcap(out / "out.pcap", res.outputs)
    _print_summary(doc, sys.stdout)
    print(f"wrote {out / 'report.json'}, {out / 'out.pcap'}")
    return 0 if doc["conservation"]["ok"] else 1


def _print_summary(doc, f) -> None:
    c = doc["conservation"]
    paths = doc["paths"]
    n = doc["packets"]

    def pct(x):
        return f"{x:>8} ({100 * x / n:5.1f}%)" if n else f"{x:>8}"
    print("\n== packets by path ==", file=f)
    for name in ("flow", "cam", "slow", "exception"):
        print(f"  {name:<10}{pct(paths.get(name, 0))}", file=f)
    print("== verdicts ==", file=f)
    for name in ("output", "to_host", "drop"):
        print(f"  {name:<10}{pct(c[name])}", file=f)
    if doc["drops"]:
        print(f"  drops by reason: {doc['drops']}", file=f)
    if doc["exceptions"]:
        print(f"  exceptions: {doc['exceptions']}", file=f)
    fl = doc["flows"]
    print(f"== flows == installed {fl['installed']}, deleted {fl['deleted']}, live {fl['live']} "
          f"(load {fl['load']:.3f}), install failures {fl['install_failures']}", file=f)
    print(f"== upcalls == {doc['upcalls']}", file=f)
    print(f"== table line writes == {doc['line_writes']}", file=f)
    m = doc["model"]
    print(f"== model == {m['seconds']} s, {m['packets_per_s']} packets/s; conservation "
          f"{'ok' if c['ok'] else 'VIOLATED'} ({c['in']} in = {c['output']} out + {c['to_host']} to host "
          f"+ {c['drop']} dropped)", file=f)


def cmd_verilog(args) -> int:
    from cxlnic.rtl import blocks, generate, lint

    names = list(blocks())
    unknown = [b for b in args.block if b not in names]
    if unknown:
        raise CliError(f"unknown block {unknown[0]!r}; choose from: {', '.join(names)}")
    print("writing the SmartNIC and datapath tops and each of their blocks at the default configuration")
    paths = generate(Path(args.out), only=args.block or None)
    if args.lint:
        failed = lint(paths)
        if failed:
            print(f"cxlnic: Verilator lint failed for: {', '.join(failed)}", file=sys.stderr)
            return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cxlnic", description="CXL SmartNIC model: golden model, RTL, simulation")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def table_opts(p):
        p.add_argument("--cam", type=int, default=64, help="CAM entries (default 64)")
        p.add_argument("--buckets", type=int, default=4096, help="cuckoo buckets, power of two (default 4096)")
        p.add_argument("--age-interval", type=float, default=5.0,
                       help="aging sweep every this many seconds of trace time (0: never)")
        p.add_argument("--progress", action="store_true", help="show progress even when stderr is not a TTY")

    p = sub.add_parser("classify", help="run the golden model over a pcap")
    p.add_argument("rules", help="OpenFlow rules file (docs/rule-language.md)")
    p.add_argument("pcap", help="input pcap (ingress ports from IN.pcap.ports if present, else port 0)")
    p.add_argument("-o", "--output", required=True, help="output pcap of forwarded packets (+ .ports sidecar)")
    p.add_argument("--stats", help="statistics JSON: per path, per rule, flows, conservation")
    p.add_argument("--host-pcap", help="also write the packets sent to the host")
    table_opts(p)
    p.set_defaults(func=cmd_classify)

    def scen_opts(p):
        p.add_argument("--scenario", default="mixed",
                       help="reactive, conntrack, static, malformed, mixed (sim also: storm, nearfull)")
        p.add_argument("--packets", type=int, default=100_000)
        p.add_argument("--seed", type=int, default=1)

    p = sub.add_parser("gen", help="write a scenario's rules file and pcap")
    scen_opts(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.set_defaults(func=cmd_gen)

    p = sub.add_parser("sim", help="run a full scenario and print a report")
    scen_opts(p)
    p.add_argument("--pcap", default="", help="use this pcap instead of the generator (with --rules)")
    p.add_argument("--rules", default="", help="use this rules file (with --pcap)")
    p.add_argument("--type", type=int, default=2, help="1: tables in host memory, 2: in device memory (default)")
    p.add_argument("--out", default="build/sim", help="output folder (default build/sim)")
    p.add_argument("--burst", type=int, default=1024, help="received frames per epoch between slow-path phases")
    p.add_argument("--model-only", action="store_true",
                   help="run the golden model alone (no RTL, no Verilator): fast, for rules and traces")
    table_opts(p)
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("verilog", help="generate Verilog for the RTL blocks (and lint it with Verilator)")
    p.add_argument("--out", default="build/verilog")
    p.add_argument("--block", action="append", default=[], help="only this block (repeatable)")
    p.add_argument("--lint", action="store_true", help="run verilator --lint-only -Wall on the output")
    p.set_defaults(func=cmd_verilog)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"cxlnic: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
