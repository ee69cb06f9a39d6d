"""How the server process runs its OpenMP threads.

By default OpenMP threads spin for 300,000 rounds before they sleep, taking the CPU the
event loop needs between batches; passive threads (no spinning) must be woken for each of
a forward pass's ~150 parallel regions, which made encoding ~30% slower. 20,000 rounds
bridge the gaps inside a forward pass and end soon after it: at 64 clients 1.06x and 1.38x
the requests/s of passive threads in two runs (docs/benchmarks.md). glibc's mmap threshold
is left alone: fixed at 1 MB, it mapped and faulted in every activation of 1 MB or more
afresh (0.6x the valid requests/s under the abuse test, whose memory stays flat without
it).
"""

from __future__ import annotations

import os

SERVER_ENV = {"GOMP_SPINCOUNT": "20000"}
# Either of these set by the user says how OpenMP threads wait: theirs is kept.
OPENMP_WAITING = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def restart_with_server_env(argv: list[str]) -> None:
    """Replace this process by `argv` (the server's own command line, argv[0] the program)
    run with SERVER_ENV, unless the user has set how OpenMP threads wait. OpenMP reads the
    setting when torch starts, so it cannot be changed in a running process; in the
    restarted one it is set, so this returns there."""
    if any(name in os.environ for name in OPENMP_WAITING):
        return
    os.execve(argv[0], argv, dict(os.environ) | SERVER_ENV)
