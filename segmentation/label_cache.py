"""The one-pass labeller's store of each image's (label, confidence[, ground truth]) maps between
the forward pass and the writes (docs/method.md §2.1; :mod:`segmentation.labeling`): host memory
up to a budget (``--label-cache-gb``), then a scratch file read back with ``np.memmap``."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DEFAULT_CACHE_FRACTION = 0.25  # of MemAvailable, shared by the ranks of one machine
CACHE_FILE = ".label-cache-rank{rank}.bin"


def mem_available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (None where it cannot be read)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cache_budget_bytes(gb: float | None) -> int:
    """``--label-cache-gb`` in bytes; default :data:`DEFAULT_CACHE_FRACTION` of MemAvailable divided
    by the node's torchrun processes (1 GiB where MemAvailable is unknown). 0 = no cache."""
    if gb is not None:
        return int(gb * 2**30)
    available = mem_available_bytes()
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return int((available if available is not None else 2**30 * 4) * DEFAULT_CACHE_FRACTION / local)


class LabelCache:
    """Per-image arrays of one labelling pass, in insertion order: in memory while they fit in
    ``budget`` bytes, the rest appended to the scratch file ``scratch`` (8-byte aligned) and read
    back through one ``np.memmap``. :meth:`close` deletes the scratch file."""

    def __init__(self, budget: int, scratch: Path) -> None:
        self.budget, self.scratch = budget, scratch
        self.used = 0
        self.entries: dict[str, tuple] = {}  # id -> arrays (memory) or [(offset, dtype, shape), ...] (disk)
        self._file = None
        self._size = 0
        self._map: np.memmap | None = None

    @property
    def spilled(self) -> int:
        """Bytes in the scratch file."""
        return self._size

    def put(self, key: str, arrays: tuple[np.ndarray, ...]) -> None:
        nbytes = sum(a.nbytes for a in arrays)
        if self.used + nbytes <= self.budget:
            self.entries[key] = tuple(np.array(a, copy=True) for a in arrays)
            self.used += nbytes
            return
        if self._file is None:
            self._file = open(self.scratch, "wb")
        where = []
        for a in arrays:
            a = np.ascontiguousarray(a)
            self._file.write(a.tobytes())
            where.append((self._size, a.dtype.str, a.shape))
            pad = -a.nbytes % 8
            if pad:
                self._file.write(b"\0" * pad)
            self._size += a.nbytes + pad
        self.entries[key] = ("disk", where)

    def keys(self) -> list[str]:
        return list(self.entries)

    def get(self, key: str) -> tuple[np.ndarray, ...]:
        entry = self.entries[key]
        if not (len(entry) == 2 and isinstance(entry[0], str) and entry[0] == "disk"):
            return entry
        if self._map is None:
            self._file.close()
            self._map = np.memmap(self.scratch, dtype=np.uint8, mode="c", shape=(self._size,))
        out = []
        for offset, dtype, shape in entry[1]:
            dtype = np.dtype(dtype)
            count = int(np.prod(shape)) * dtype.itemsize
            out.append(self._map[offset: offset + count].view(dtype).reshape(shape))
        return tuple(out)

    def close(self) -> None:
        self._map = None
        if self._file is not None:
            self._file.close()
            self._file = None
        self.scratch.unlink(missing_ok=True)
        self.entries = {}
