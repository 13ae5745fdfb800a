"""What the machine this process runs on has to spare."""
from __future__ import annotations

import os


def available_memory() -> int:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``; elsewhere the free physical pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
