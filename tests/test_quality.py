"""Call quality arithmetic: expected values worked out by hand from ITU-T G.107 (03/2005) and G.113
Appendix I, each with its working in a comment."""

from __future__ import annotations

import math

import pytest

from mss.errors import LocalProtocolError
from mss.quality import (
    CODECS,
    G711_NO_PLC,
    JitterSamples,
    LegQuality,
    delay_ms,
    estimate_mos,
    idd,
    ie_eff,
    leg_quality,
    loss_percent,
    mos_from_r,
)


def test_mos_from_r_follows_g107_annex_b() -> None:
    # B-4: MOS = 1 + 0.035 R + R (R - 60)(100 - R) 7e-6
    # R = 93.2: 1 + 3.262 + 93.2 * 33.2 * 6.8 * 7e-6 = 4.262 + 0.147286 = 4.409286
    assert mos_from_r(93.2) == pytest.approx(4.409286, abs=1e-6)
    # R = 80: 1 + 2.8 + 80 * 20 * 20 * 7e-6 = 4.024
    assert mos_from_r(80) == pytest.approx(4.024)
    # R = 50: 1 + 1.75 - 50 * 10 * 50 * 7e-6 = 2.575
    assert mos_from_r(50) == pytest.approx(2.575)
    # the ends: 1 below R = 0, 4.5 above R = 100; the polynomial's dip under 1 (R = 5: 0.992) held at 1
    assert (mos_from_r(-3), mos_from_r(0), mos_from_r(5), mos_from_r(100), mos_from_r(120)) == (
        1.0, 1.0, 1.0, 4.5, 4.5
    )


def test_ie_eff_follows_g107_with_g113_codec_values() -> None:
    # Ie_eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl), BurstR = 1
    assert ie_eff(CODECS["PCMU"], 0.0) == 0.0
    # G.711 with PLC (Bpl 25.1), 1 %: 95 * 1 / 26.1 = 3.639847
    assert ie_eff(CODECS["PCMA"], 1.0) == pytest.approx(3.639847, abs=1e-6)
    # G.711 without PLC (Bpl 4.3), 1 %: 95 * 1 / 5.3 = 17.924528
    assert ie_eff(G711_NO_PLC, 1.0) == pytest.approx(17.924528, abs=1e-6)
    # G.729 (Ie 11, Bpl 19), 2 %: 11 + 84 * 2 / 21 = 19
    assert ie_eff(CODECS["G729"], 2.0) == pytest.approx(19.0)
    # all lost: Ie + (95 - Ie) * 100 / (100 + Bpl) -> towards 95
    assert ie_eff(CODECS["G729"], 100.0) == pytest.approx(11 + 84 * 100 / 119)
    # bursty loss hurts more than random loss
    assert ie_eff(CODECS["PCMU"], 5.0, burst_r=2.0) > ie_eff(CODECS["PCMU"], 5.0)
    with pytest.raises(LocalProtocolError):
        ie_eff(CODECS["PCMU"], 101.0)


def test_idd_follows_g107() -> None:
    # Idd = 0 up to Ta = 100 ms
    assert idd(0) == idd(100) == 0.0
    # Ta = 200: X = 1; 25 * (2^(1/6) - 3 (1 + 1/729)^(1/6) + 2) = 25 * (1.122462 - 3.000686 + 2) = 3.044414
    assert idd(200) == pytest.approx(3.044414, abs=1e-5)
    # Ta = 400: X = 2; 25 * (65^(1/6) - 3 (1 + (2/3)^6)^(1/6) + 2) = 24.070089
    assert idd(400) == pytest.approx(24.070089, abs=1e-5)
    assert idd(150) < idd(200) < idd(300) < idd(400)


def test_loss_percent() -> None:
    assert loss_percent(0, 0) == 0.0
    assert loss_percent(0, 500) == 0.0
    assert loss_percent(10, 990) == pytest.approx(1.0)
    assert loss_percent(5, 0) == 100.0
    with pytest.raises(LocalProtocolError, match="must not be negative"):
        loss_percent(-1, 10)


def test_the_delay_is_packetization_lookahead_and_the_jitter_buffer() -> None:
    assert delay_ms(CODECS["PCMU"], 0.0) == 20.0
    assert delay_ms(CODECS["PCMU"], 5.0) == 30.0  # 20 + 2 * 5
    assert delay_ms(CODECS["G729"], 5.0) == 35.0  # 20 + 5 look-ahead + 2 * 5


def test_estimate_mos() -> None:
    # no loss, little jitter: R = 93.2 -> 4.409
    assert estimate_mos("PCMU", lost=0, received=1000, jitter_ms=1.0) == pytest.approx(4.409286, abs=1e-6)
    assert estimate_mos("pcma", lost=0, received=1000, jitter_ms=1.0) == pytest.approx(4.409286, abs=1e-6)
    # 1 % loss on G.711 (PLC): R = 93.2 - 3.639847 = 89.560153 -> 4.328075
    assert estimate_mos("PCMU", lost=10, received=990, jitter_ms=1.0) == pytest.approx(4.328075, abs=1e-6)
    # 2 % on G.729: R = 93.2 - 19 = 74.2 -> 1 + 2.597 + 74.2 * 14.2 * 25.8 * 7e-6 = 3.787287
    assert estimate_mos("G729", lost=20, received=980, jitter_ms=0.0) == pytest.approx(3.787287, abs=1e-6)
    # 140 ms of jitter: Ta = 20 + 2 * 140 = 300 ms, Idd = 14.760695, R = 78.439305 -> 3.963668
    assert estimate_mos("PCMU", lost=0, received=1000, jitter_ms=140.0) == pytest.approx(3.963668, abs=1e-6)
    # the MOS falls as loss grows
    mos = [estimate_mos("PCMU", lost=n, received=1000 - n, jitter_ms=2.0) for n in (0, 10, 50, 200)]
    assert all(m is not None for m in mos) and mos == sorted(mos, reverse=True)  # type: ignore[type-var]
    # nothing received, or a codec without E-model values here: no MOS
    assert estimate_mos("PCMU", lost=0, received=0, jitter_ms=0.0) is None
    assert estimate_mos("G722", lost=0, received=100, jitter_ms=0.0) is None
    assert estimate_mos(None, lost=0, received=100, jitter_ms=0.0) is None


def test_jitter_samples_keep_mean_and_max_in_constant_space() -> None:
    samples = JitterSamples()
    assert (samples.mean, samples.max) == (None, None)
    for ms in (2.0, 6.0, 1.0):
        samples.add(ms)
    assert (samples.count, samples.mean, samples.max) == (3, 3.0, 6.0)
    samples.add(0.0)
    assert (samples.mean, samples.max) == (2.25, 6.0)
    for bad in (-0.5, math.nan):
        with pytest.raises(LocalProtocolError, match="jitter must be a number >= 0"):
            samples.add(bad)
    assert samples.count == 4


def test_leg_quality_from_counters() -> None:
    samples = JitterSamples()
    samples.add(1.2)
    samples.add(3.456)
    q = leg_quality("PCMU", packets_in=990, bytes_in=170280, packets_out=1000, bytes_out=172000, lost=10,
                    jitter=samples)
    assert q == LegQuality(packets_in=990, bytes_in=170280, packets_out=1000, bytes_out=172000, lost=10,
                           jitter_mean_ms=2.33, jitter_max_ms=3.46, mos=4.33)


def test_a_leg_that_sent_nothing_has_counts_but_no_jitter_or_mos() -> None:
    samples = JitterSamples()
    samples.add(0.0)  # the relay's estimate reads 0 before the first packet
    q = leg_quality("PCMU", packets_in=0, bytes_in=0, packets_out=250, bytes_out=43000, lost=0,
                    jitter=samples)
    assert q == LegQuality(packets_in=0, bytes_in=0, packets_out=250, bytes_out=43000, lost=0,
                           jitter_mean_ms=None, jitter_max_ms=None, mos=None)


def test_an_invalid_leg_quality_cannot_be_built() -> None:
    with pytest.raises(LocalProtocolError, match="must not be negative"):
        LegQuality(packets_in=-1, bytes_in=0, packets_out=0, bytes_out=0, lost=0, jitter_mean_ms=None,
                   jitter_max_ms=None, mos=None)
    with pytest.raises(LocalProtocolError, match=r"mos must be 1\.\.4\.5"):
        LegQuality(packets_in=1, bytes_in=0, packets_out=0, bytes_out=0, lost=0, jitter_mean_ms=0.0,
                   jitter_max_ms=0.0, mos=4.8)
