"""Training throughput of the two hot loops, CPU or CUDA (issue 7).

    python benchmarks/throughput.py --device cpu --steps 3
    python benchmarks/throughput.py --device cuda --steps 30 --concurrency 1,2,4

Measures images/s and seconds per epoch (of EPOCH_IMAGES = 50,000 training images,
CIFAR-10 sized) for
  (a) the DARTS supernet search step (`darts.search._Search.step`: an alpha step on a
      val batch plus a weight step on a train batch; images/s counts train images),
      DartsConfig defaults (3 cells, base 16, the template ops);
  (b) the stacked network (`build_network` with DEFAULT_GENOTYPE, 3 cells, base 16 and
      32) trained by the real `train_model` loop (focal loss, AdamW, OneCycle,
      augmentation, no validation),
at batch 64 and 256, fp32 vs bf16 autocast (bf16 on CUDA only), contiguous vs
channels_last (CUDA only), on synthetic 28x28x1 and 32x32x3 data (10 classes).
Each configuration: `--warmup` untimed steps (cuDNN autotuning, allocator), then
`--steps` timed steps ended by a device sync.

CUDA only, for the question "should BOHB run several trials at once on one GPU":
  - GPU utilisation while one stacked network trains: `nvidia-smi` sampled in a thread
    (utilization.gpu, % of time a kernel ran) and, with torch.profiler, the summed CUDA
    kernel time / wall time;
  - `--concurrency 1,2,4`: k processes on the same GPU each train the stacked network;
    aggregate images/s against k = 1.

Prints markdown tables; writes benchmarks/out/throughput_<device>.json (date, machine,
command, rows).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import DEFAULT_OUT, command_line, ensure_repo_on_path, machine_info, now_iso, write_results

ensure_repo_on_path()

import torch  # noqa: E402

from automl_pipeline.darts.search import DartsConfig, _Search  # noqa: E402
from automl_pipeline.search_space import DEFAULT_GENOTYPE, NetworkSpec, build_network  # noqa: E402
from automl_pipeline.training import TensorData, TrainConfig, configure_threads, resolve_device, train_model  # noqa: E402
from automl_pipeline.training.device import configure_device  # noqa: E402

EPOCH_IMAGES = 50_000
N_CLASSES = 10
SHAPES = ((28, 1), (32, 3))          # (side, channels)
BATCHES = (64, 256)
BASE_CHANNELS = (16, 32)


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


# --------------------------------------------------------------------------- (a) DARTS supernet


def bench_darts(device, side, channels, batch, precision, channels_last, steps, warmup) -> dict:
    n = batch * (steps + warmup)
    train, val = synthetic(n, side, channels, device, 0), synthetic(n, side, channels, device, 1)
    config = DartsConfig(epochs=1, batch_size=batch)
    search = _Search(train, val, N_CLASSES, config, torch.nn.CrossEntropyLoss(),
                     amp=precision == "bf16", channels_last=channels_last)
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
    return row("darts_supernet", side, channels, batch, precision, channels_last, steps * batch,
               time.perf_counter() - t0, base_channels=config.base_channels)


# --------------------------------------------------------------------------- (b) stacked network


def stacked_model(side: int, channels: int, base: int, device: torch.device) -> torch.nn.Module:
    spec = NetworkSpec(DEFAULT_GENOTYPE, in_channels=channels, n_classes=N_CLASSES, image_side=side,
                       n_cells=3, base_channels=base)
    return build_network(spec).to(device)


def train_once(model, data: TensorData, batch: int, precision: str, channels_last: bool) -> float:
    """Seconds of one train_model epoch over all of `data` (ends with a device sync)."""
    config = TrainConfig(epochs=1, batch_size=batch, precision="auto" if precision == "bf16" else "fp32",
                         channels_last=channels_last)
    result = train_model(model, data, None, config, time_left=lambda: 1e9, n_classes=N_CLASSES)
    return result.seconds


def bench_stacked(device, side, channels, base, batch, precision, channels_last, steps, warmup) -> dict:
    model = stacked_model(side, channels, base, device)
    train_once(model, synthetic(batch * max(warmup, 1), side, channels, device, 2), batch, precision, channels_last)
    data = synthetic(batch * steps, side, channels, device, 3)
    seconds = train_once(model, data, batch, precision, channels_last)
    return row("stacked", side, channels, batch, precision, channels_last, batch * steps, seconds,
               base_channels=base)


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
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (cuDNN autotune)")
    ap.add_argument("--util-seconds", type=float, default=5.0, help="CUDA: seconds of training for nvidia-smi")
    ap.add_argument("--concurrency", default="", help="CUDA: comma-separated process counts, e.g. 1,2,4")
    ap.add_argument("--concurrency-steps", type=int, default=150)
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/out/throughput_<device>.json)")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    threads = configure_threads()
    configure_device(device)
    started = now_iso()
    rows = []
    for side, channels in SHAPES:
        for batch in BATCHES:
            for precision, cl in variants(device):
                rows.append(bench_darts(device, side, channels, batch, precision, cl, args.steps, args.warmup))
                print(rows[-1], flush=True)
                for base in BASE_CHANNELS:
                    rows.append(bench_stacked(device, side, channels, base, batch, precision, cl,
                                              args.steps, args.warmup))
                    print(rows[-1], flush=True)
    util, conc = [], []
    if device.type == "cuda":
        for batch in BATCHES:
            util.append(gpu_utilisation(device, 32, 3, 32, batch, args.util_seconds))
            print(util[-1], flush=True)
    ks = [int(k) for k in args.concurrency.split(",") if k.strip()]
    if ks:
        conc = concurrency(device, 32, 3, 32, 64, args.concurrency_steps, ks)
        for r in conc:
            print(r, flush=True)

    cols = ["kind", "base_channels", "data", "batch", "precision", "channels_last", "images_per_s", "epoch_s"]
    md = [f"device: {machine_info(str(device)).get('device_name')}, torch {torch.__version__}, "
          f"threads {threads}, {args.steps} timed steps after {args.warmup} warm-up; "
          f"epoch_s = seconds per {EPOCH_IMAGES:,} training images", "", table(rows, cols)]
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
                        "steps": args.steps, "warmup": args.warmup, "rows": rows, "gpu_utilisation": util,
                        "concurrency": conc, "markdown": "\n".join(md)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
