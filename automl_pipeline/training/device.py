"""Device choice, CPU thread count, the CUDA fast-path settings and mixed-precision context.

GPU path (issue 7): data lives on the device as tensors (tensors.py), batches are
augmented there, the forward runs under bf16 autocast on CUDA, optimizers are the
fused CUDA kernels, and the training/search loops do not read device values back
per batch (see trainer.py and darts/search.py). `configure_device` turns on cuDNN
autotuning and TF32 once per process.
"""
from __future__ import annotations

import contextlib
import os
import time

import psutil
import torch


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda if available else cpu; "cpu"; "cuda" (ValueError when no GPU is usable)."""
    key = name.strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available "
                             "(no GPU or no CUDA build of torch); use --device cpu or auto")
        return torch.device(key)
    raise ValueError(f"unknown device {name!r}; expected 'auto', 'cpu' or 'cuda'")


def usable_cores() -> int:
    """CPU cores this process may run on (affinity where the OS says, else physical cores)."""
    if hasattr(os, "sched_getaffinity"):
        n = len(os.sched_getaffinity(0))
    else:
        n = psutil.cpu_count(logical=False) or 1
    return max(1, n)


def configure_threads() -> int:
    """Set torch's intra-op thread count to the usable cores; return that number."""
    n = usable_cores()
    torch.set_num_threads(n)
    return n


# channels_last (NHWC) activations on CUDA: measured by benchmarks/throughput.py for the
# stacked network and the supernet (see benchmarks/RESULTS.md, "Throughput"); off unless
# the measurement shows a gain. Callers can force it either way per run.
CHANNELS_LAST_ON_CUDA = False

def configure_device(device: torch.device) -> None:
    """Process-wide fast-path switches for `device`; idempotent, cheap to call again.

    CUDA: cudnn.benchmark = True (autotunes conv kernels per input shape; the loops use
    a handful of shapes: the batch size, the epoch's remainder batch, prediction chunks)
    and TF32 matmuls/convs for whatever runs outside bf16 autocast. CPU: nothing.
    """
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def use_channels_last(device: torch.device, requested: bool | None = None) -> bool:
    """Whether to run a model in channels_last: `requested` when given, else the measured
    default for the device (CHANNELS_LAST_ON_CUDA on CUDA, never on CPU)."""
    if requested is not None:
        return bool(requested)
    return device.type == "cuda" and CHANNELS_LAST_ON_CUDA


def optimizer_kwargs(device: torch.device) -> dict:
    """Extra optimizer arguments: the fused (single-kernel) AdamW/SGD/Adam step on CUDA."""
    return {"fused": True} if device.type == "cuda" else {}


def autocast_context(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (unless enabled=False); a no-op context on CPU (fp32 is faster
    and safer there)."""
    if device.type == "cuda" and enabled:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# What a device allocation failure raises (torch.OutOfMemoryError; the same class as
# torch.cuda.OutOfMemoryError on current torch, and importable on CPU-only builds).
OutOfMemory = torch.cuda.OutOfMemoryError


def release_cached_memory(device: torch.device) -> None:
    """Give the caching allocator's free blocks back after an OOM (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def warm_up(device: torch.device) -> float:
    """Pay one-time costs up front (the first optimizer construction imports torch._dynamo,
    ~6 s measured; CUDA/cuDNN kernel loading); call once during setup. Returns seconds spent."""
    start = time.perf_counter()
    configure_device(device)
    conv = torch.nn.Conv2d(1, 2, 3).to(device)
    extra = optimizer_kwargs(device)
    for opt in (torch.optim.AdamW(conv.parameters(), **extra), torch.optim.SGD(conv.parameters(), lr=0.1, **extra)):
        with autocast_context(device):
            out = conv(torch.zeros(2, 1, 4, 4, device=device))
        out.float().sum().backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
