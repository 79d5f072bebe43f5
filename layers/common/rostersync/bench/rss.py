"""A process's own peak memory, as Lambda reports it ("Max Memory Used")."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """This process's peak resident set, in MiB.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec from the
    forked copy of the parent, so a worker started by a bench holding a large
    district would report the bench's size as its own.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
