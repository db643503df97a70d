"""A BOHB worker in its own process (or on another machine) joining a running phase.

The master's phase (`run_bohb`) starts the Pyro4 name server and writes its
address to OUT/bohb/nameserver.json; a worker started with the same run_id and
that address registers with the dispatcher and evaluates trials on its own
TrialContext (its own copy of the data, on its own device) until the master
shuts it down or its own `time_left()` runs out.

When the name server (or this worker's --host) is off loopback, the worker
needs the main run's shared secret from AUTOML_BOHB_HMAC_KEY or
AUTOML_BOHB_HMAC_KEY_FILE (see nameserver.py); it exits with code 2 and says
so when the key is missing or the name server refuses it.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import Pyro4
import Pyro4.constants
import Pyro4.errors

from automl_pipeline.bohb.nameserver import HMAC_KEY_ENV, HmacKeyError, is_loopback, pyro_hmac, require_hmac_key
from automl_pipeline.bohb.serialization import register_numpy_serializers
from automl_pipeline.bohb.worker import TrialContext, TrialWorker, evaluate_config
from automl_pipeline.darts import DartsResult
from automl_pipeline.search_space import TEMPLATE_OPS

_LOG = logging.getLogger("automl_pipeline.bohb.remote")


def wait_for_nameserver(host: str, port: int, time_left: Callable[[], float], poll_s: float = 0.5) -> bool:
    """True once a Pyro4 name server answers at host:port; False when time runs out first.
    Raises HmacKeyError when the name server answers but refuses this process's HMAC key (or its
    lack of one): waiting longer would not help."""
    uri = f"PYRO:{Pyro4.constants.NAMESERVER_NAME}@{host}:{port}"
    while time_left() > 0:
        try:
            with Pyro4.Proxy(uri) as ns:
                ns.ping()
            return True
        except Pyro4.errors.PyroError as err:
            if "hmac" in str(err).lower():
                raise HmacKeyError(HMAC_KEY_ENV, (
                    f"the name server at {host}:{port} refused this worker ({err}); set {HMAC_KEY_ENV} "
                    f"to the main run's shared secret")) from err
            time.sleep(min(poll_s, max(0.0, time_left())))
    return False


def run_remote_worker(run_id: str, nameserver: str, nameserver_port: int, ctx: TrialContext,
                      time_left: Callable[[], float], *, host: str | None = None, worker_id: str | None = None,
                      hmac_key: bytes | None = None, evaluate: Callable[..., dict] = evaluate_config,
                      log: Callable[[str], None] = print) -> dict:
    """Serve trials for the BOHB run `run_id` until the master shuts this worker down or
    `time_left()` (this process's budget) runs out. Blocks; returns {"worker", "trials", "reason"}.

    host: the address of this machine's interface the master can reach (None: Pyro's
    default, localhost - enough when master and workers share a machine).
    hmac_key: the main run's shared secret (nameserver.require_hmac_key); every Pyro4
    message of this process is signed with it while the worker runs. Raises
    HmacKeyError when the name server refuses it.
    Each trial's deadline is the earlier of the master's phase deadline (sent with
    the job) and this worker's time_left().
    """
    register_numpy_serializers()
    with pyro_hmac(hmac_key):
        return _serve(run_id, nameserver, nameserver_port, ctx, time_left, host=host, worker_id=worker_id,
                      evaluate=evaluate, log=log)


def _serve(run_id, nameserver, nameserver_port, ctx, time_left, *, host, worker_id, evaluate, log) -> dict:
    if not wait_for_nameserver(nameserver, nameserver_port, time_left):
        log(f"bohb worker: no name server at {nameserver}:{nameserver_port} before the deadline")
        return {"worker": None, "trials": 0, "reason": "no name server"}
    count = [0]

    def counting_evaluate(*args, **kwargs):
        count[0] += 1
        return evaluate(*args, **kwargs)

    worker = TrialWorker(ctx, time_left=time_left, run_id=run_id, nameserver=nameserver,
                         nameserver_port=nameserver_port, host=host, id=worker_id,
                         logger=logging.getLogger("automl_pipeline.bohb.worker"), evaluate=counting_evaluate)
    errors: list[str] = []

    def serve():
        try:
            worker._run()
        except Exception as exc:   # noqa: BLE001 - e.g. the name server went away before we unregistered
            errors.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=serve, name="bohb-remote-worker", daemon=True)
    thread.start()
    log(f"bohb worker {worker.worker_id}: serving run {run_id!r} via {nameserver}:{nameserver_port}")
    reason = "shut down by the master"
    while thread.is_alive():
        if time_left() <= 0:
            reason = "own deadline"
            try:
                worker.pyro_daemon.shutdown()
            except Exception:   # noqa: BLE001
                _LOG.exception("could not stop the worker's Pyro daemon")
            thread.join(1.0)
            break
        thread.join(0.2)
    if errors and reason != "own deadline":
        _LOG.info("worker exit: %s", errors[0])
    log(f"bohb worker {worker.worker_id}: {count[0]} trial(s), stopped ({reason})")
    return {"worker": worker.worker_id, "trials": count[0], "reason": reason}


# --------------------------------------------------------------------------- `python run.py worker`


def load_darts_cells(path: Path) -> DartsResult:
    """Read the main run's DARTS result (DartsResult.from_report): OUT/checkpoints/darts_outcome.json
    (written when its DARTS phase ends) or a finished run's report.json."""
    saved = json.loads(Path(path).read_text(encoding="utf-8"))
    section = saved.get("result") or saved.get("darts")
    try:
        return DartsResult.from_report(section)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: no DARTS result in it (DARTS skipped, or not a darts_outcome.json/report.json)"
                         ) from None


def add_worker_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of `python run.py worker`: the run to join and the same data settings as the main run."""
    parser.add_argument("--run-id", required=True, help="the main run's BOHB run id (OUT/bohb/nameserver.json)")
    parser.add_argument("--nameserver", required=True, help="the main run's name server host")
    parser.add_argument("--nameserver-port", type=int, required=True, help="the main run's name server port")
    parser.add_argument("--data-dir", type=Path, default=None, help="the same data as the main run (default: digits)")
    parser.add_argument("--seed", type=int, default=0, help="the main run's --seed (it fixes the splits)")
    parser.add_argument("--max-image-side", type=int, required=True,
                        help="the main run's working image side (report.json data.image_size)")
    parser.add_argument("--darts-result", type=Path, default=None,
                        help="the main run's OUT/checkpoints/darts_outcome.json (or its OUT/report.json), "
                             "needed for DARTS-based cells (and for the random cell of `darts: random`)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--host", default=None, help="this machine's address the master can reach")
    parser.add_argument("--time-limit", type=float, default=24 * 3600.0,
                        help="seconds this worker serves at most (default 24 h)")
    return parser


def worker_main(args: argparse.Namespace) -> int:
    """Load the data as the main run did, then serve trials until the master shuts this worker down."""
    from automl_pipeline.data import load_dataset, make_splits
    from automl_pipeline.errors import InputError
    from automl_pipeline.training import channel_stats, configure_threads, resolve_device, to_tensor_data
    from automl_pipeline.training.planning import batch_size_for

    deadline = time.monotonic() + args.time_limit
    try:
        # the key is needed as soon as the name server or this worker's own address is off loopback
        off_loopback = next((h for h in (args.nameserver, args.host) if not is_loopback(h)), None)
        hmac_key = require_hmac_key(off_loopback)
        device = resolve_device(args.device)
        dataset = load_dataset(args.data_dir, max_side=args.max_image_side)
        darts = load_darts_cells(args.darts_result) if args.darts_result is not None else None
    except (InputError, ValueError, OSError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    configure_threads()
    splits = make_splits(dataset, seed=args.seed)
    mean, std = channel_stats(splits.train.images)
    height, _, channels = dataset.image_shape
    ctx = TrialContext(train=to_tensor_data(splits.train.images, splits.train.labels, device, mean, std),
                       val=to_tensor_data(splits.val.images, splits.val.labels, device, mean, std),
                       n_classes=dataset.n_classes, in_channels=channels, image_side=height, darts=darts,
                       device=device, seed=args.seed,
                       darts_ops=darts.ops if darts is not None else TEMPLATE_OPS,
                       batch_size=batch_size_for(len(splits.train)))
    try:
        outcome = run_remote_worker(args.run_id, args.nameserver, args.nameserver_port, ctx,
                                    lambda: deadline - time.monotonic(), host=args.host, hmac_key=hmac_key,
                                    log=lambda message: print(message, file=sys.stderr, flush=True))
    except HmacKeyError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"worker done: {outcome['trials']} trials ({outcome['reason']})", file=sys.stderr)
    return 0
