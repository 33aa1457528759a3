"""Command line: ``pfn train CONFIG`` and ``pfn bench NAME`` (also ``python -m pfn``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from pfn.checkpoint import CheckpointError
from pfn.config import ConfigError, load_config


def _train(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path("runs") / config.name
    command = "pfn train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    from pfn.train import train

    state = train(config, out, command=command, stop_at=args.stop_at, device=args.device, progress=not args.quiet)
    print(
        f"{config.name}: step {state['step']}/{config.train.steps}, {state['datasets_seen']} datasets, "
        f"weights and card in {out}"
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    import benchmarks

    try:
        run = benchmarks.get(args.name)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path("bench-results") / args.name
    run(out=out, quick=args.quick, model=args.model, update_card=args.update_card)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pfn.demo import main as demo

    demo()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pfn", description="Prior-data fitted networks")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="fit a PFN to the prior of a config file (resumes if --out holds a run)")
    p.add_argument("config", help="a TOML run config, e.g. configs/gp.toml")
    p.add_argument("--out", help="run folder (default runs/NAME)")
    p.add_argument("--stop-at", type=int, help="end this sitting at this step; resume later")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_train)
    b = sub.add_parser("bench", help="run a benchmark; writes JSON and plots to --out")
    b.add_argument("name", help="benchmark name, e.g. gp")
    b.add_argument("--quick", action="store_true", help="a small version for CI (under a minute)")
    b.add_argument("--out", help="output folder (default bench-results/NAME)")
    b.add_argument("--model", help="checkpoint name or path (default: the benchmark's shipped model)")
    b.add_argument("--threads", type=int, help="torch CPU threads")
    b.add_argument("--update-card", action="store_true", help="record the figures in the checkpoint's card")
    b.set_defaults(run=_bench)
    d = sub.add_parser("demo", help="PFN estimators next to classic learners on scikit-learn's datasets")
    d.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, CheckpointError) as error:
        print(f"pfn: error: {error}", file=sys.stderr)
        return 2
