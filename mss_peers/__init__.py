"""Real peers for the end-to-end tests and ``mss demo``, all on 127.0.0.0/8.

Test tools, not product: this package sits beside ``mss/`` in the source tree and is in no wheel
(``mss demo`` finds it there, see ``mss/demo.py``). It drives mss only as a process.

- ``kamailio``: Kamailio as the provider's SIP server (PSS), in ``auth`` or ``trunk`` mode.
- ``phone`` (+ ``phone_process``): pjsua2 phones, one process each, driven over JSON lines.
- ``audio``: tone and silence checks on the phones' WAV recordings.
- ``rawsip``: a minimal SIP client for probing the PSS (digest, routing answers).
- ``net``: free loopback ports, bounded waits, children that die with the test process.
- ``server``: mss as a process (``python -m mss run``) on a generated config.
- ``demo``: the scenario of ``mss demo``.

See README.md beside this file for an overview and the known quirks.
"""
