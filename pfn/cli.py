"""Command line: ``pfn train CONFIG`` and ``pfn bench NAME`` (also ``python -m pfn``)."""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import shlex
import sys
from pathlib import Path

import torch

from pfn.checkpoint import CheckpointError
from pfn.config import ConfigError, load_recipe


def _train(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    stages = recipe.stage_configs(out)
    folders = recipe.folders(out)
    if args.dry_run:
        from pfn.train import check_stage

        for k, (config, folder) in enumerate(zip(stages, folders, strict=True), start=1):
            check_stage(config)
            start = f", from {config.train.init_from}" if config.train.init_from else ""
            print(
                f"stage {k}/{len(stages)}: {config.train.steps} steps x {config.train.batch_size} datasets"
                f"{start} -> {folder}"
            )
        return 0
    command = "pfn train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    if not args.quiet:  # where no progress bar shows (output not a terminal), the trainer logs lines
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from pfn.checkpoint import load_state
    from pfn.train import STATE_FILE, train

    for k, (config, folder) in enumerate(zip(stages, folders, strict=True), start=1):
        state_path = folder / STATE_FILE
        if state_path.is_file() and load_state(state_path)[1]["step"] >= config.train.steps:
            continue  # a finished stage
        state = train(
            config,
            folder,
            command=command if len(stages) == 1 else f"{command}  # stage {k} of {len(stages)}",
            stop_at=args.stop_at,
            device=args.device,
            backend=args.backend,
            sampler_workers=args.sampler_workers,
            progress=not args.quiet,
        )
        if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
            print(
                f"{config.name} stage {k}/{len(stages)}: step {state.step}/{config.train.steps}, "
                f"{state.datasets_seen} datasets, weights and card in {folder}"
            )
        if state.step < config.train.steps:
            return 0  # stopped by --stop-at: later stages wait for this one
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
    options = {key: getattr(args, key) for key in BENCH_OPTIONS if getattr(args, key) not in (None, False)}
    accepted = inspect.signature(run).parameters
    refused = [f"--{key.replace('_', '-')}" for key in options if BENCH_OPTIONS[key] not in accepted]
    if refused:
        raise ConfigError(f"benchmark {args.name!r} takes no {', '.join(refused)}")
    kwargs = {BENCH_OPTIONS[key]: value for key, value in options.items()}
    run(out=out, quick=args.quick, model=args.model, **kwargs)
    return 0


# benchmark-specific command-line options -> the run function's parameter names
BENCH_OPTIONS = {
    "update_card": "update_card",
    "data": "data",
    "caps": "caps",
    "repeats": "repeats",
    "learners": "learner_names",
    "docs": "docs",
    "config": "config",
    "arms": "arms",
    "budget": "budget_minutes",
    "split": "split",
}


def _demo(args: argparse.Namespace) -> int:
    from pfn.demo import main as demo

    demo()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pfn", description="Prior-data fitted networks")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="fit a PFN to the prior of a config file (resumes if --out holds a run)")
    p.add_argument("config", help="a TOML recipe, e.g. configs/gp.toml (its stages run in order)")
    p.add_argument("--out", help="run folder (default runs/NAME; earlier stages in OUT/stage-K)")
    p.add_argument("--stop-at", type=int, help="stop when the stage in progress reaches this step (rerun to resume)")
    p.add_argument("--dry-run", action="store_true", help="check that every stage resolves, train nothing")
    p.add_argument(
        "--device", default="cpu", help="cpu or cuda (each torchrun process takes the GPU of its local rank)"
    )
    p.add_argument("--backend", default="auto", help="under torchrun: auto (nccl on cuda, gloo on cpu), gloo or nccl")
    p.add_argument(
        "--sampler-workers",
        type=int,
        default=0,
        help="processes that draw the prior's datasets ahead of the steps (0: in the training loop)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    p.set_defaults(run=_train)
    b = sub.add_parser("bench", help="run a benchmark; writes JSON and plots to --out")
    b.add_argument("name", help="benchmark name, e.g. gp")
    b.add_argument("--quick", action="store_true", help="a small version for CI (under a minute)")
    b.add_argument("--out", help="output folder (default bench-results/NAME)")
    b.add_argument("--model", help="checkpoint name or path (default: the benchmark's shipped model)")
    b.add_argument("--threads", type=int, help="torch CPU threads")
    b.add_argument("--update-card", action="store_true", help="record the figures in the checkpoint's card")
    b.add_argument(
        "--data",
        help="tabular, large: folder with classification/ and regression/ CSV files; curves: LCDB's accuracy CSV",
    )
    b.add_argument(
        "--split", choices=["odd", "even"], help="curves: LCDB datasets with odd (default) or even (held-out) ids"
    )
    b.add_argument(
        "--caps",
        type=int,
        nargs="+",
        help="tabular, large: caps on the train rows (default 100 500 1000; large: 1000 5000 10000 50000)",
    )
    b.add_argument(
        "--repeats",
        type=int,
        help="tabular, large: train/test splits per table (default 5; large: 1); bo: seeds (default 10)",
    )
    b.add_argument(
        "--learners",
        nargs="+",
        help="tabular, large, bo: run only these learners (optimisers), merged into --out's results",
    )
    b.add_argument("--docs", help="tabular: splice the report into this Markdown file (between markers)")
    b.add_argument("--config", help="recipe: the base run config of the ladder (default configs/gp.toml)")
    b.add_argument("--arms", nargs="+", help="recipe: arms to train, e.g. baseline muon muon+thinking-16")
    b.add_argument("--budget", type=float, help="recipe: process CPU minutes of training per arm (default 30)")
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
