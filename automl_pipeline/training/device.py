"""Device choice, CPU thread count and mixed-precision context."""
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


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op context on CPU (fp32 is faster and safer there)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def warm_up(device: torch.device) -> float:
    """Pay one-time costs up front (the first optimizer construction imports torch._dynamo,
    ~6 s measured; CUDA/cuDNN kernel loading); call once during setup. Returns seconds spent."""
    start = time.perf_counter()
    conv = torch.nn.Conv2d(1, 2, 3).to(device)
    for opt in (torch.optim.AdamW(conv.parameters()), torch.optim.SGD(conv.parameters(), lr=0.1)):
        with autocast_context(device):
            out = conv(torch.zeros(2, 1, 4, 4, device=device))
        out.float().sum().backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
