"""Audio checks on the phones' recordings (numpy only).

A recording is cut into frames of ``frame_ms``; each frame gets a Hann window and an FFT. A frame
is *silent* when its RMS is below ``silence_dbfs``. The checks:

``tone_fraction(path, hz, *, frame_ms=50, tol_hz=25, skip_s=0.0, silence_dbfs=-45.0) -> float``
    Fraction of the non-silent frames whose spectral peak lies within ``tol_hz`` of ``hz``
    (0.0 when every frame is silent). Through Kamailio with PCMU a 440 Hz or 1 kHz tone scores
    0.97-1.0; use ``skip_s`` to drop the start (ringback, early media) of a recording.
``dominant_frequency(path, *, frame_ms=50, skip_s=0.0, silence_dbfs=-45.0) -> float | None``
    The median peak frequency over the non-silent frames (``None`` when all are silent).
``silence_fraction(path, *, frame_ms=50, skip_s=0.0, silence_dbfs=-45.0) -> float``
    Fraction of frames that are silent.
``read_wav(path) -> (samples as float in [-1, 1], sample rate)``
    16-bit PCM WAV reader that also accepts a file whose header sizes were never finalised.
``duration(path) -> float``
    Length in seconds.
``describe(path, hz=None) -> str``
    One line for assertion messages: length, silence, dominant frequency, tone fraction.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "describe",
    "dominant_frequency",
    "duration",
    "frame_peaks",
    "read_wav",
    "silence_fraction",
    "tone_fraction",
]

Samples = npt.NDArray[np.float64]


def read_wav(path: Path | str) -> tuple[Samples, int]:
    """Samples (mono, float in [-1, 1]) and sample rate of a 16-bit PCM WAV file.

    The ``data`` size in the header is trusted only when it fits the file: a recording still
    being written, or cut off, is read up to its end.
    """
    raw = Path(path).read_bytes()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    pos, rate, channels, bits = 12, 0, 1, 16
    while pos + 8 <= len(raw):
        chunk, size = raw[pos : pos + 4], struct.unpack("<I", raw[pos + 4 : pos + 8])[0]
        body = pos + 8
        if chunk == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", raw[body : body + 8])
            bits = struct.unpack("<H", raw[body + 14 : body + 16])[0]
            if fmt != 1 or bits != 16:
                raise ValueError(f"{path}: only 16-bit PCM is supported (format {fmt}, {bits} bit)")
        elif chunk == b"data":
            end = len(raw) if size == 0 or body + size > len(raw) else body + size
            data = raw[body:end]
            data = data[: len(data) - len(data) % (2 * channels)]
            samples = np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0
            if channels > 1:
                samples = samples.reshape(-1, channels).mean(axis=1)
            if not rate:
                raise ValueError(f"{path}: data chunk before fmt chunk")
            return samples, rate
        pos = body + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


def duration(path: Path | str) -> float:
    """Length of the recording in seconds."""
    samples, rate = read_wav(path)
    return len(samples) / rate


def frame_peaks(
    path: Path | str,
    *,
    frame_ms: float = 50,
    skip_s: float = 0.0,
    until_s: float | None = None,
    silence_dbfs: float = -45.0,
) -> tuple[Samples, npt.NDArray[np.bool_]]:
    """Per frame of the recording from ``skip_s`` to ``until_s`` (the end when None): the peak
    frequency (Hz) of the Hann-windowed spectrum, and whether the frame is silent (RMS below
    ``silence_dbfs``)."""
    samples, rate = read_wav(path)
    end = len(samples) if until_s is None else int(until_s * rate)
    samples = samples[int(skip_s * rate) : end]
    size = int(rate * frame_ms / 1000)
    count = len(samples) // size
    if count == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    frames = samples[: count * size].reshape(count, size)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    silent = rms < 10 ** (silence_dbfs / 20)
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(size), axis=1))
    spectrum[:, 0] = 0.0  # ignore DC
    peaks = np.argmax(spectrum, axis=1) * rate / size
    return peaks.astype(np.float64), silent


def tone_fraction(
    path: Path | str,
    hz: float,
    *,
    frame_ms: float = 50,
    tol_hz: float = 25,
    skip_s: float = 0.0,
    until_s: float | None = None,
    silence_dbfs: float = -45.0,
) -> float:
    """Fraction of non-silent frames (from ``skip_s`` to ``until_s``) whose peak is within ``tol_hz``
    of ``hz`` (0 if none)."""
    peaks, silent = frame_peaks(
        path, frame_ms=frame_ms, skip_s=skip_s, until_s=until_s, silence_dbfs=silence_dbfs
    )
    loud = peaks[~silent]
    if len(loud) == 0:
        return 0.0
    return float(np.mean(np.abs(loud - hz) <= tol_hz))


def dominant_frequency(
    path: Path | str,
    *,
    frame_ms: float = 50,
    skip_s: float = 0.0,
    silence_dbfs: float = -45.0,
) -> float | None:
    """Median peak frequency of the non-silent frames (``None`` when all are silent)."""
    peaks, silent = frame_peaks(path, frame_ms=frame_ms, skip_s=skip_s, silence_dbfs=silence_dbfs)
    loud = peaks[~silent]
    return float(np.median(loud)) if len(loud) else None


def silence_fraction(
    path: Path | str,
    *,
    frame_ms: float = 50,
    skip_s: float = 0.0,
    silence_dbfs: float = -45.0,
) -> float:
    """Fraction of frames whose RMS is below ``silence_dbfs`` (1.0 for an empty recording)."""
    _, silent = frame_peaks(path, frame_ms=frame_ms, skip_s=skip_s, silence_dbfs=silence_dbfs)
    return float(np.mean(silent)) if len(silent) else 1.0


def describe(path: Path | str, hz: float | None = None, *, skip_s: float = 0.0) -> str:
    """A one-line summary of a recording for assertion messages."""
    try:
        text = (
            f"{path}: {duration(path):.2f} s, silence {silence_fraction(path, skip_s=skip_s):.0%}, "
            f"dominant {dominant_frequency(path, skip_s=skip_s)} Hz"
        )
        if hz is not None:
            text += f", {hz:g} Hz in {tone_fraction(path, hz, skip_s=skip_s):.0%} of loud frames"
    except (OSError, ValueError) as exc:
        text = f"{path}: unreadable ({exc})"
    return text
