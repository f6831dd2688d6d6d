"""Workers (``[callback] workers = N``): what each worker process gets, and when a dead one restarts.

Sans-IO: the supervisor (:mod:`mss.aio.supervisor`) runs the processes; this module decides.

Worker ``i`` of ``N`` (0-based) is the whole of mss with its own share of the config
(:func:`worker_config`):

* the IIF port is the same for all (each listener has SO_REUSEPORT: the kernel spreads the AS's
  connections and datagrams over the workers);
* SIP on ``[sip] local_port + i``;
* the relay on its slice of ``[rtp] port_min..port_max`` (:func:`rtp_slice`: equal even-sized slices,
  the last one taking what is left);
* the control socket ``<[control] socket>.i`` (the supervisor serves ``[control] socket`` itself and
  asks the workers), and ``/metrics`` on ``[metrics] listen``'s port + i;
* ``[callback] max_calls`` and the ``[peer.NAME]`` limits hold per worker: each worker admits alone.

A worker that dies is started again after :class:`Backoff`'s delay: short at first, doubling while it
keeps dying young, reset once one has run :data:`HEALTHY_RUN` seconds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mss.config import Config

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "HEALTHY_RUN",
    "Backoff",
    "rtp_slice",
    "worker_config",
    "worker_socket",
]

#: Seconds before the first restart of a dead worker: long enough for its ports to be released.
BACKOFF_FIRST = 0.5

#: Longest wait before a restart: a worker that cannot start is retried this often, not in a loop.
BACKOFF_MAX = 30.0

#: Seconds a worker must have run for its next death to count as new (the delay starts over).
HEALTHY_RUN = 30.0


def rtp_slice(port_min: int, port_max: int, worker: int, workers: int) -> tuple[int, int]:
    """Worker ``worker``'s part of the RTP range ``port_min..port_max``: starts on an even port, an even
    number of ports each, the last worker also taking the remainder."""
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} is not one of {workers}")
    size = ((port_max - port_min + 1) // workers) & ~1
    low = port_min + worker * size
    high = port_max if worker == workers - 1 else low + size - 1
    return low, high


def worker_config(config: Config, worker: int) -> Config:
    """The config worker ``worker`` runs with (see the module docstring); ``config`` unchanged when
    ``[callback] workers = 1``."""
    n = config.callback.workers
    if n == 1:
        return config
    low, high = rtp_slice(config.rtp.port_min, config.rtp.port_max, worker, n)
    ops = config.operations
    return dataclasses.replace(
        config,
        sip=dataclasses.replace(config.sip, local_port=config.sip.local_port + worker),
        rtp=dataclasses.replace(config.rtp, port_min=low, port_max=high),
        operations=dataclasses.replace(
            ops,
            control_socket=None if ops.control_socket is None else worker_socket(ops.control_socket, worker),
            metrics_listen=None if ops.metrics_listen is None
            else (ops.metrics_listen[0], ops.metrics_listen[1] + worker),
        ),
    )


def worker_socket(path: str, worker: int) -> str:
    """The control socket of worker ``worker`` beside the supervisor's ``path``."""
    return f"{path}.{worker}"


@dataclass(slots=True)
class Backoff:
    """When to start a dead worker again: ``delay(now)`` after its death, given when it started."""

    first: float = BACKOFF_FIRST
    """The delay after a worker that ran :attr:`healthy` seconds."""
    ceiling: float = BACKOFF_MAX
    """The delay at most."""
    healthy: float = HEALTHY_RUN
    """Seconds of running that reset the delay."""
    _next: float = dataclasses.field(default=0.0, init=False)

    def delay(self, started: float, died: float) -> float:
        """Seconds to wait before restarting a worker started at ``started`` and dead at ``died``."""
        if died - started >= self.healthy or self._next == 0.0:
            self._next = self.first
        else:
            self._next = min(self.ceiling, self._next * 2)
        return self._next
