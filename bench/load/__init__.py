"""The system load benchmark of mss: a stateless Kamailio far end, mss as a process, an AS driver.

    .venv/bin/python -m bench.load soak --minutes 3
    .venv/bin/python -m bench.load sweep --rates 20,50,100

Modules: ``farend`` (Kamailio answering statelessly, the media sink), ``mssproc`` (mss with a
generated config), ``driver`` (the asyncio AS: paced and sequential callbacks, every check),
``procstat`` (CPU, RSS, descriptors from /proc), ``run`` (one run end to end), ``__main__`` (the
commands, tables and result files). See bench/README.md, "Load".
"""
