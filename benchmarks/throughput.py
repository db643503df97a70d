"""Training throughput of what a run trains, against the plain CNN, CPU or CUDA (issue 7;
"Quality per second" item 1).

    python benchmarks/throughput.py --device cpu --quick          # the whole table in ~3 min on 2 cores
    python benchmarks/throughput.py --device cpu --steps 20
    python benchmarks/throughput.py --device cuda --steps 30 --concurrency 1,2,4

Side by side on the same machine, on synthetic 28x28x1 and 32x32x3 data (10 classes):
  (1) `plain CNN`: the network the user would write (benchmarks/plain_cnn.build_plain_cnn: 3 blocks of
      conv3x3-BN-ReLU-maxpool with 32/64/128 channels, FC 256);
  (2) `default`: the pipeline's default network exactly as the run builds it (phases.common.first_model_spec =
      phases.common.network_spec(data, DEFAULT_GENOTYPE) = bohb.worker.config_to_network_spec of
      {n_cells 3, base_channels 32}: a pooling stem on sides >= 16, DEFAULT_GENOTYPE, a linear head);
  (3) `bohb c<n>/b<w>`: the extremes BOHB can draw (n_cells 2 and 5 x base_channels 16 and 32, default cell);
all trained by the real `train_model` loop with one TrainConfig, the pipeline's
phases.common.default_train_config (AdamW, one-cycle, augmentation, its default loss, batch `--batch` = 128, no
validation), and reported as images/s, seconds per epoch of EPOCH_IMAGES = 50,000 training images
(CIFAR-10 sized) and images/s as a multiple of the plain CNN's on the same data and precision;
  (4) the DARTS search step of each proxy in phases.architecture.DARTS_PROXIES (phases.architecture.darts_config(proxy, side,
      epochs=1, seed=0): batch DARTS_BATCH, images resized to the proxy side, the run's focal loss),
      stepping darts.search._Search (an alpha step on a val batch plus a weight step on a train batch):
      seconds per step, architecture steps per minute, train images/s.
On CUDA each is measured fp32 vs bf16 autocast and contiguous vs channels_last; on CPU fp32 only.
Each configuration: `--warmup` untimed steps (cuDNN autotuning, allocator), then `--steps` timed
steps ended by a device sync. (Older versions measured the stacked network without its pooling stem
and the DARTS supernet at DartsConfig defaults; neither is what a run trains any more.)

CUDA only, for the question "should BOHB run several trials at once on one GPU":
  - GPU utilisation while the default network trains: `nvidia-smi` sampled in a thread
    (utilization.gpu, % of time a kernel ran) and, with torch.profiler, the summed CUDA
    kernel time / wall time;
  - `--concurrency 1,2,4`: k processes on the same GPU each train the default network;
    aggregate images/s against k = 1.

Prints markdown tables; writes benchmarks/out/throughput_<device>.json (date, machine,
command, rows, darts_rows).
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

# Before torch loads OpenMP, as the CLI does (cli.py): idle OpenMP threads sleep instead of spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from common import DEFAULT_OUT, command_line, ensure_repo_on_path, machine_info, now_iso, write_results

ensure_repo_on_path()

import torch  # noqa: E402

from automl_pipeline.bohb.worker import config_to_network_spec  # noqa: E402
from automl_pipeline.darts.search import _Search  # noqa: E402
from automl_pipeline.phases.architecture import DARTS_BATCH, DARTS_PROXIES, darts_config  # noqa: E402
from automl_pipeline.phases.common import default_train_config, first_model_spec  # noqa: E402
from automl_pipeline.search_space import NetworkSpec, build_network  # noqa: E402
from automl_pipeline.training import TensorData, configure_threads, make_loss, resolve_device, train_model  # noqa: E402
from automl_pipeline.training.device import configure_device  # noqa: E402
from automl_pipeline.training.losses import CLASS_WEIGHT_SMOOTHING, FOCAL_GAMMA  # noqa: E402
from plain_cnn import build_plain_cnn  # noqa: E402

EPOCH_IMAGES = 50_000
N_CLASSES = 10
SHAPES = ((28, 1), (32, 3))          # (side, channels)
BATCH = 128                          # the run's batch on >= 5,000 training images (phases.common.RunData.batch_size)
UTIL_BATCHES = (128, 256)
BOHB_EXTREMES = tuple((n, b) for n in (2, 5) for b in (16, 32))   # space.py: n_cells 2..5, base 16/24/32
PLAIN = "plain CNN"
DEFAULT = "default"
QUICK_STEPS, QUICK_WARMUP = 2, 1


def synthetic(n: int, side: int, channels: int, device: torch.device, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, side, side, generator=g)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    return TensorData(x.to(device), y.to(device))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def variants(device: torch.device) -> list[tuple[str, bool]]:
    """(precision, channels_last) pairs to measure on this device."""
    if device.type != "cuda":
        return [("fp32", False)]
    return [("fp32", False), ("bf16", False), ("bf16", True), ("fp32", True)]


def row(kind: str, side: int, channels: int, batch: int, precision: str, channels_last: bool,
        images: int, seconds: float, **extra) -> dict:
    ips = images / seconds if seconds > 0 else float("nan")
    return {"kind": kind, "data": f"{side}x{side}x{channels}", "batch": batch, "precision": precision,
            "channels_last": channels_last, "images": images, "seconds": round(seconds, 4),
            "images_per_s": round(ips, 1), "epoch_s": round(EPOCH_IMAGES / ips, 2), **extra}


# --------------------------------------------------------------------------- the networks


def default_spec(side: int, channels: int) -> NetworkSpec:
    """The default network a run builds (phases.common.first_model_spec)."""
    return first_model_spec(SimpleNamespace(in_channels=channels, n_classes=N_CLASSES, image_side=side))


def run_spec(side: int, channels: int, n_cells: int | None = None, base: int | None = None) -> NetworkSpec:
    """The NetworkSpec a run builds: the default network, or BOHB's config_to_network_spec of
    {n_cells, base_channels} with the default cell."""
    if n_cells is None or base is None:
        return default_spec(side, channels)
    return config_to_network_spec({"n_cells": n_cells, "base_channels": base}, darts=None, in_channels=channels,
                                  n_classes=N_CLASSES, image_side=side)


def stacked_model(side: int, channels: int, base: int, device: torch.device, n_cells: int = 3) -> torch.nn.Module:
    """The stacked network as a run builds it (run_spec), on `device`."""
    return build_network(run_spec(side, channels, n_cells, base)).to(device)


def networks(side: int, channels: int) -> list[tuple[str, dict, callable]]:
    """(name, facts, builder) of every network in the training table, the plain CNN first."""
    out = [(PLAIN, {"n_cells": None, "base_channels": None, "stem_pool": None},
            lambda: build_plain_cnn(channels, N_CLASSES, side))]
    default = default_spec(side, channels)
    specs = [(DEFAULT, default)] + [(f"bohb c{n}/b{b}", run_spec(side, channels, n, b)) for n, b in BOHB_EXTREMES]
    for name, spec in specs:
        out.append((name, {"n_cells": spec.n_cells, "base_channels": spec.base_channels, "stem_pool": spec.stem_pool},
                    lambda spec=spec: build_network(spec)))
    return out


# --------------------------------------------------------------------------- training (train_model)


def train_once(model, data: TensorData, batch: int, precision: str, channels_last: bool, *,
               epochs_only: bool = False) -> float:
    """Seconds of one train_model epoch over all of `data` with the pipeline's default TrainConfig
    (phases.common.default_train_config, ours: its default loss), no validation: the whole call, or with
    `epochs_only` the epoch's own time (history "seconds": the batches up to the epoch's loss read,
    a device sync; without train_model's set-up and final state copy, as the run's
    train_images_per_s and plain_cnn.py's count it)."""
    config = dataclasses.replace(default_train_config(epochs=1, batch_size=batch, seed=0),
                                 precision="auto" if precision == "bf16" else "fp32", channels_last=channels_last)
    result = train_model(model, data, None, config, time_left=lambda: 1e9, n_classes=N_CLASSES)
    return sum(h["seconds"] for h in result.history) if epochs_only else result.seconds


def bench_train(device, side, channels, name, facts, build, batch, precision, channels_last, steps, warmup) -> dict:
    torch.manual_seed(0)
    model = build().to(device)
    n_params = sum(p.numel() for p in model.parameters())
    train_once(model, synthetic(batch * max(warmup, 1), side, channels, device, 2), batch, precision, channels_last)
    data = synthetic(batch * steps, side, channels, device, 3)
    seconds = train_once(model, data, batch, precision, channels_last, epochs_only=True)
    return row("train", side, channels, batch, precision, channels_last, batch * steps, seconds,
               network=name, params=n_params, **facts)


def add_ratios(rows: list[dict]) -> None:
    """vs_plain: images/s over the plain CNN's on the same data, batch, precision and memory format."""
    def key(r: dict) -> tuple:
        return r["data"], r["batch"], r["precision"], r["channels_last"]

    plain = {key(r): r["images_per_s"] for r in rows if r["network"] == PLAIN}
    for r in rows:
        ref = plain.get(key(r))
        r["vs_plain"] = round(r["images_per_s"] / ref, 3) if ref else None


# --------------------------------------------------------------------------- DARTS proxies


def proxy_name(proxy) -> str:
    return f"{proxy.n_cells} cells x {proxy.n_nodes} nodes, base {proxy.base_channels}, <= {proxy.side} px"


def bench_darts(device, side, channels, proxy, precision, channels_last, steps, warmup) -> dict:
    """One proxy's search step as the run takes it (phases.architecture.darts_config; the run's focal loss)."""
    config = darts_config(proxy, side, epochs=1, seed=0)
    n = config.batch_size * (steps + warmup)
    train, val = synthetic(n, side, channels, device, 0), synthetic(n, side, channels, device, 1)
    counts = np.bincount(train.y.cpu().numpy(), minlength=N_CLASSES)
    loss = make_loss("focal", counts, gamma=FOCAL_GAMMA, smoothing=CLASS_WEIGHT_SMOOTHING,
                     device=device)                # as phases.architecture.search_architecture
    search = _Search(train, val, N_CLASSES, config, loss, amp=precision == "bf16", channels_last=channels_last)
    batches = search.train_batches()
    for _ in range(warmup):
        search.step(*next(batches))
    sync(device)
    t0 = time.perf_counter()
    totals = None
    for _ in range(steps):
        out = search.step(*next(batches))
        totals = out if totals is None else {k: totals[k] + v for k, v in out.items()}
    search.to_floats(totals)                      # the one read per epoch, as in run_darts
    sync(device)
    seconds = time.perf_counter() - t0
    step_s = seconds / steps
    searched = config.proxy_side or side
    return row("darts", side, channels, config.batch_size, precision, channels_last, steps * config.batch_size,
               seconds, proxy=proxy_name(proxy), searched_side=searched, stem_pool=config.stem_pool,
               step_s=round(step_s, 4), arch_steps_per_min=round(60.0 / step_s, 1))


# --------------------------------------------------------------------------- GPU utilisation


class SmiSampler(threading.Thread):
    """Samples `nvidia-smi --query-gpu=utilization.gpu` every `period` s until stopped."""

    def __init__(self, index: int, period: float = 0.1):
        super().__init__(daemon=True)
        self.index, self.period, self.samples = index, period, []
        self._halt = threading.Event()

    def run(self) -> None:
        cmd = ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self._halt.is_set():
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip()
                self.samples.append(float(out.splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return
            self._halt.wait(self.period)

    def stop(self) -> list[float]:
        self._halt.set()
        self.join(timeout=10)
        return self.samples


def gpu_utilisation(device, side, channels, base, batch, seconds_target: float) -> dict:
    """nvidia-smi utilisation over ~seconds_target of training, and kernel time / wall from
    torch.profiler over a shorter run (profiling adds CPU overhead: a lower bound)."""
    model = stacked_model(side, channels, base, device)
    train_once(model, synthetic(batch * 5, side, channels, device, 2), batch, "bf16", False)
    probe = train_once(model, synthetic(batch * 20, side, channels, device, 3), batch, "bf16", False)
    steps = max(20, int(seconds_target / max(probe / 20, 1e-4)))
    data = synthetic(batch * steps, side, channels, device, 4)
    out = {"data": f"{side}x{side}x{channels}", "base_channels": base, "batch": batch, "precision": "bf16",
           "steps": steps}
    sampler = SmiSampler(device.index or 0) if shutil.which("nvidia-smi") else None
    if sampler is not None:
        sampler.start()
    seconds = train_once(model, data, batch, "bf16", False)
    samples = sampler.stop() if sampler is not None else []
    # drop the first/last sample (they straddle start-up and the end)
    inner = samples[1:-1] if len(samples) > 3 else samples
    out.update(seconds=round(seconds, 3), images_per_s=round(batch * steps / seconds, 1),
               smi_samples=len(samples), smi_util_mean=round(statistics.fmean(inner), 1) if inner else None)
    try:
        from torch.profiler import ProfilerActivity, profile
        prof_data = synthetic(batch * 30, side, channels, device, 5)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            wall = train_once(model, prof_data, batch, "bf16", False)
        kernel_us = 0.0
        for evt in prof.key_averages():
            if str(getattr(evt, "device_type", "")).endswith("CUDA"):
                kernel_us += getattr(evt, "self_device_time_total", getattr(evt, "self_cuda_time_total", 0.0))
        out.update(profiled_wall_s=round(wall, 3), kernel_s=round(kernel_us / 1e6, 3),
                   kernel_fraction=round(kernel_us / 1e6 / wall, 3))
    except Exception as err:  # noqa: BLE001 - the profiler is optional; record why it failed
        out["profiler_error"] = repr(err)
    return out


# --------------------------------------------------------------------------- concurrent trials


def _concurrent_worker(device_name, side, channels, base, batch, steps, barrier, results) -> None:
    device = torch.device(device_name)
    configure_threads()
    model = stacked_model(side, channels, base, device)
    train_once(model, synthetic(batch * 5, side, channels, device, 2), batch, "bf16", False)
    data = synthetic(batch * steps, side, channels, device, 3)
    sync(device)
    barrier.wait()
    t0 = time.perf_counter()
    seconds = train_once(model, data, batch, "bf16", False)
    results.put((batch * steps, seconds, t0, time.perf_counter()))


def concurrency(device, side, channels, base, batch, steps, ks) -> list[dict]:
    ctx = mp.get_context("spawn")
    rows = []
    for k in ks:
        barrier, results = ctx.Barrier(k), ctx.Queue()
        procs = [ctx.Process(target=_concurrent_worker,
                             args=(str(device), side, channels, base, batch, steps, barrier, results))
                 for _ in range(k)]
        for p in procs:
            p.start()
        got = [results.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        images = sum(g[0] for g in got)
        span = max(g[3] for g in got) - min(g[2] for g in got)
        rows.append({"processes": k, "data": f"{side}x{side}x{channels}", "base_channels": base, "batch": batch,
                     "images": images, "wall_s": round(span, 3), "aggregate_images_per_s": round(images / span, 1),
                     "per_process_images_per_s": round(statistics.fmean(g[0] / g[1] for g in got), 1)})
    base_ips = rows[0]["aggregate_images_per_s"]
    for r in rows:
        r["speedup_vs_1"] = round(r["aggregate_images_per_s"] / base_ips, 2)
    return rows


# --------------------------------------------------------------------------- output


def table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


TRAIN_COLUMNS = [("network", "network"), ("n_cells", "cells"), ("base_channels", "base"), ("stem_pool", "stem pool"),
                 ("params", "params"), ("data", "data"), ("batch", "batch"), ("precision", "precision"),
                 ("channels_last", "channels_last"), ("images_per_s", "images/s"),
                 ("vs_plain", "images/s vs plain CNN"), ("epoch_s", "s / epoch of 50k")]
DARTS_COLUMNS = [("proxy", "DARTS proxy"), ("data", "data"), ("searched_side", "searched px"), ("batch", "batch"),
                 ("precision", "precision"), ("channels_last", "channels_last"), ("step_s", "s / step"),
                 ("arch_steps_per_min", "arch steps / min"), ("images_per_s", "train images/s")]


def named_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    renamed = [{title: r.get(key) for key, title in columns} for r in rows]
    return table(renamed, [title for _, title in columns])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--quick", action="store_true",
                    help=f"--steps {QUICK_STEPS} --warmup {QUICK_WARMUP} unless given: the whole CPU table in ~3 min")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default 20)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (cuDNN autotune; default 3)")
    ap.add_argument("--batch", type=int, default=BATCH, help="training batch (DARTS uses phases.architecture.DARTS_BATCH)")
    ap.add_argument("--shapes", default=",".join(f"{s}x{c}" for s, c in SHAPES),
                    help="comma-separated SIDExCHANNELS, default 28x1,32x3")
    ap.add_argument("--no-darts", action="store_true", help="skip the DARTS proxy rows")
    ap.add_argument("--util-seconds", type=float, default=5.0, help="CUDA: seconds of training for nvidia-smi")
    ap.add_argument("--concurrency", default="", help="CUDA: comma-separated process counts, e.g. 1,2,4")
    ap.add_argument("--concurrency-steps", type=int, default=150)
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/out/throughput_<device>.json)")
    args = ap.parse_args(argv)
    steps = args.steps if args.steps is not None else (QUICK_STEPS if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (QUICK_WARMUP if args.quick else 3)
    if steps < 1 or warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    try:
        shapes = [tuple(int(v) for v in s.strip().lower().split("x")) for s in args.shapes.split(",") if s.strip()]
        assert shapes and all(len(s) == 2 and s[0] >= 4 and s[1] >= 1 for s in shapes)
    except (ValueError, AssertionError):
        ap.error(f"--shapes: expected e.g. 28x1,32x3, got {args.shapes!r}")

    device = resolve_device(args.device)
    threads = configure_threads()
    configure_device(device)
    started = now_iso()
    rows, darts_rows = [], []
    for side, channels in shapes:
        for precision, cl in variants(device):
            for name, facts, build in networks(side, channels):
                rows.append(bench_train(device, side, channels, name, facts, build, args.batch, precision, cl,
                                        steps, warmup))
                print(rows[-1], flush=True)
            if not args.no_darts:
                for proxy in DARTS_PROXIES:
                    darts_rows.append(bench_darts(device, side, channels, proxy, precision, cl, steps, warmup))
                    print(darts_rows[-1], flush=True)
    add_ratios(rows)
    util, conc = [], []
    if device.type == "cuda":
        for batch in UTIL_BATCHES:
            util.append(gpu_utilisation(device, 32, 3, 32, batch, args.util_seconds))
            print(util[-1], flush=True)
    ks = [int(k) for k in args.concurrency.split(",") if k.strip()]
    if ks:
        conc = concurrency(device, 32, 3, 32, 64, args.concurrency_steps, ks)
        for r in conc:
            print(r, flush=True)

    md = [(f"device: {machine_info(str(device)).get('device_name')}, torch {torch.__version__}, "
           f"threads {threads}, {steps} timed steps after {warmup} warm-up; train_model with "
           f"phases.common.default_train_config (AdamW, one-cycle, augmentation, its default loss); "
           f"s / epoch of 50k = seconds per {EPOCH_IMAGES:,} training images"), "",
          named_table(rows, TRAIN_COLUMNS)]
    if darts_rows:
        md += ["", (f"DARTS search step (phases.architecture.DARTS_PROXIES, batch {DARTS_BATCH}: alpha step on a val batch + "
                    "weight step on a train batch)"), "", named_table(darts_rows, DARTS_COLUMNS)]
    if util:
        md += ["", table(util, ["data", "base_channels", "batch", "precision", "images_per_s", "smi_util_mean",
                                "smi_samples", "kernel_fraction"])]
    if conc:
        md += ["", table(conc, ["processes", "data", "base_channels", "batch", "aggregate_images_per_s",
                                "per_process_images_per_s", "speedup_vs_1"])]
    print("\n".join(md))
    out = args.out or DEFAULT_OUT / f"throughput_{device.type}.json"
    write_results(out, {"date": started, "finished": now_iso(), "command": command_line(),
                        "machine": machine_info(str(device)), "threads": threads, "epoch_images": EPOCH_IMAGES,
                        "steps": steps, "warmup": warmup, "batch": args.batch, "rows": rows,
                        "darts_rows": darts_rows, "gpu_utilisation": util, "concurrency": conc,
                        "markdown": "\n".join(md)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
