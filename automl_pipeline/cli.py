"""Command line parsing: `run` (default), `compare` and `worker` sub-commands."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from automl_pipeline.search_options import SearchOptions, SearchOptionsError
from automl_pipeline.settings import DEVICES, METHODS, Settings, SettingsError


def build_run_parser() -> argparse.ArgumentParser:
    """The parser of the main job (`python run.py --time-limit T ...`)."""
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Find the best image classifier within a wall-clock limit, predict the test images "
                    "and report held-out metrics. Sub-commands: `compare` (baseline vs ours over seeds), "
                    "`worker` (a remote BOHB worker).")
    parser.add_argument("--time-limit", type=float, required=True, metavar="SECONDS",
                        help="wall-clock limit in seconds, counted from process start")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="npz file/folder, competition folder (train.csv, test.csv, images_train/, "
                             "images_test/) or ImageFolder tree; default: the built-in digits demo")
    parser.add_argument("--output-dir", type=Path, default=Path("output"), help="where results go (default ./output)")
    parser.add_argument("--seed", type=int, default=0, help="seed for splits and search (default 0)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto (CUDA if present), cpu or cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--method", choices=METHODS, default="ours",
                        help="ours (DARTS + BOHB, focal loss) or baseline (BOHB over a fixed CNN, plain CE)")
    parser.add_argument("--workers", type=int, default=1,
                        help="BOHB worker threads in this process (default 1); workers on other machines: "
                             "`run.py worker`")
    parser.add_argument("--nameserver-host", default="127.0.0.1",
                        help="address the BOHB name server binds to; set it to accept remote workers (off "
                             "loopback, AUTOML_BOHB_HMAC_KEY must be set)")
    parser.add_argument("--nameserver-port", type=int, default=0, help="name server port (0: any free port)")
    parser.add_argument("--max-image-side", type=int, default=None,
                        help="resize images larger than this (default: 32 on CPU, 64 on CUDA)")
    parser.add_argument("--search-config", type=Path, default=None, metavar="JSON",
                        help="a JSON file of search options (DARTS off/random/extra ops/second order/..., random "
                             "search instead of BOHB, a fixed loss); see automl_pipeline/search_options.py. "
                             "Default: the full method")
    parser.add_argument("--resume", action="store_true",
                        help="continue a killed run in the same --output-dir: keeps its splits, finished DARTS "
                             "epochs, finished BOHB trials and delivered model; the time limit is this run's own")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """argparse namespace -> the frozen Settings (raises SettingsError)."""
    try:
        search = SearchOptions() if args.search_config is None else SearchOptions.load(args.search_config)
    except SearchOptionsError as err:
        raise SettingsError(f"--search-config {err}") from None
    return Settings(time_limit_s=args.time_limit, data_dir=args.data_dir, output_dir=args.output_dir,
                    seed=args.seed, device=args.device, quiet=args.quiet, method=args.method,
                    workers=args.workers, nameserver_host=args.nameserver_host,
                    nameserver_port=args.nameserver_port, max_image_side=args.max_image_side,
                    resume=args.resume, search=search)


def exit_at_once(code: int) -> NoReturn:
    """End the process with `code` without the interpreter's teardown.

    Everything the run delivers is written (atomically, fsynced) before `main` returns; tearing down
    torch and waiting for leftover non-daemon threads took 2 s on a loaded 2-core machine, which ran
    a 25 s run past its limit after its report had been written at 23 s.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: list[str]) -> int:
    """Dispatch to a sub-command; returns the exit code."""
    # Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a busy machine
    # spinning threads made a training step 75x slower (measured on 2 cores under load).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if argv and argv[0] == "compare":
        from automl_pipeline.compare import add_compare_arguments, compare_main

        parser = argparse.ArgumentParser(prog="run.py compare",
                                         description="Baseline vs ours over seeds on the same data and splits.")
        add_compare_arguments(parser)
        return compare_main(parser.parse_args(argv[1:]))
    if argv and argv[0] == "worker":
        from automl_pipeline.bohb.remote import add_worker_arguments, worker_main

        parser = argparse.ArgumentParser(prog="run.py worker", description="A BOHB worker for a running search.")
        add_worker_arguments(parser)
        return worker_main(parser.parse_args(argv[1:]))
    args = build_run_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from automl_pipeline.pipeline import run

    return run(settings)
