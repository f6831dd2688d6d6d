"""Fuzzing every parser of mss: IIF, SIP, SDP and the relay's RTP/RTCP packet path.

Run ``python -m bench.fuzz --inputs 1000000`` (see ``bench/fuzz/README.md``). Not part of the test
suite: the crashes it finds become tests in ``tests/test_fuzz_regressions.py``.
"""
