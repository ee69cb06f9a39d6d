"""How the server process starts: its port checked first, its OpenMP threads set.

The port is bound once as uvicorn will bind it, before the model loads and before the
process restarts itself: one line and exit 2 at once, rather than uvicorn's error after
the load and the "serving" line.

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

import errno
import os
import socket

from cpt_embed.errors import InputError

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


def check_port(host: str, port: int) -> None:
    """Raise an InputError naming the fix unless `host:port` can be bound now. It binds
    and closes a socket on each address `host` resolves to, with SO_REUSEADDR, as
    uvicorn's asyncio server does (so a port left in TIME_WAIT still counts as free)."""
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as err:
        raise InputError(
            f"--host {host}: unknown ({err.strerror}); use 127.0.0.1, 0.0.0.0 or an address "
            "of this machine"
        ) from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as err:
                raise _bind_error(host, port, err) from None


def _bind_error(host: str, port: int, err: OSError) -> InputError:
    if err.errno == errno.EADDRINUSE:
        return InputError(
            f"port {port} on {host} is in use (another server?): choose a free one with "
            "--port N, or stop the process that holds it"
        )
    if err.errno == errno.EACCES and port < 1024:
        return InputError(
            f"port {port} on {host}: ports below 1024 need root; choose one above 1023 "
            "with --port N"
        )
    if err.errno == errno.EADDRNOTAVAIL:
        return InputError(
            f"--host {host}: not an address of this machine; use 127.0.0.1, 0.0.0.0 or one "
            "of its own addresses"
        )
    return InputError(f"cannot listen on {host}:{port} ({err.strerror or err})")
