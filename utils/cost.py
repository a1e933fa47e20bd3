"""What a run costs: wall time, throughput, peak memory, device name, number of processes."""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field

import torch

from utils.distributed import info as dist_info


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def peak_memory_gb(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA; peak resident set size of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


@dataclass
class CostMeter:
    """Counts images and wall time of one run; ``fields()`` gives the log.txt cost fields."""

    device: torch.device
    images: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, images: int) -> None:
        self.images += images

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def fields(self) -> dict[str, object]:
        seconds = self.seconds
        procs = dist_info().world_size
        return {
            "wall_s": round(seconds, 1),
            "images_per_s": round(self.images * procs / max(seconds, 1e-9), 2),
            "peak_mem_gb": round(peak_memory_gb(self.device), 3),
            "device": device_name(self.device),
            "procs": procs,
        }
