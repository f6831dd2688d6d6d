"""Hold N mss relay sessions open for the benchmark: prints "PAIRS a b a b ..." and forwards until
stdin closes. Run pinned, e.g. ``taskset -c 0 python bench/relay/mss_host.py --calls 1000``.

Uses only the library surface: ``Relay(host, port_min, port_max)``, ``open_session()``,
``s.a_port``/``s.b_port``, ``close()``. No remote is signalled (the generator's ports are not known
here), so endpoint learning is off by default (``--learn-ms 0``: each leg latches onto its first
source) and every leg is latched when the measurement starts; learning costs nothing once a leg has
latched. ``--learn-ms 2000`` measures with mss's default window (the warm-up must then outlast it).
``--kernel-forwarding yes`` hands each latched leg to the kernel fast path; its own counters are
printed at the end (``KSTATS installs install_ns entries errors``: install_ns is the control-plane
time spent installing entries, in the packet loop's thread).
"""

from __future__ import annotations

import argparse
import resource
import sys

from mss.relay import FIELDS, LEARN_PACKETS, Relay


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port-min", type=int, default=20000)
    ap.add_argument("--port-max", type=int, default=29999)
    ap.add_argument("--calls", type=int, required=True)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--gather-us", type=int, default=200)
    ap.add_argument("--learn-ms", type=int, default=0)
    ap.add_argument("--kernel-forwarding", default="no", choices=["no", "yes", "auto"])
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with Relay(
        args.host,
        args.port_min,
        args.port_max,
        backend=args.backend,
        gather_us=args.gather_us,
        learn_ms=args.learn_ms,
        learn_packets=1 if args.learn_ms == 0 else LEARN_PACKETS,
        kernel_forwarding=args.kernel_forwarding,
    ) as relay:
        sessions = [relay.open_session() for _ in range(args.calls)]
        ports = " ".join(f"{s.a_port} {s.b_port}" for s in sessions)
        print(f"PAIRS {ports}", flush=True)
        print(f"BACKEND {relay.backend}", file=sys.stderr, flush=True)
        sys.stdin.read()  # until the driver closes our stdin
        print(f"loop {relay.loop_stats()}", file=sys.stderr)
        if relay.kernel_forwarding_active:
            k = relay.kernel_stats()
            print(f"KSTATS {k['installs']} {k['install_ns']} {k['entries']} {k['errors']}", file=sys.stderr)
            relay._live().kernel_sync()  # the counters below include what the kernel forwarded
        totals = relay.counters.sum(axis=(0, 1))
        for name, value in zip(FIELDS, totals, strict=True):
            if name.startswith(("rtp_", "rtcp_", "drop_")):
                print(f"{name} {int(value)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
