"""Seed-corpus mutations for text protocols and binary headers: each one small, bounded and seeded.

:class:`Mutator` applies one to :data:`MAX_STACK` mutations picked at random to a seed. Beside the
generic ones (bit flips, byte insert/delete, splice, repeat, truncation) it knows what breaks
parsers of numbers and lines: digit runs inflated to thousands of digits (past the 4,300 that
``int()`` converts), boundary numbers (2**31, 2**32, 2**63, 65536, ...), non-ASCII digits, line
duplication (a header twice), line ends changed, and tokens replaced by hostile ones.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

__all__ = ["BOUNDARY_NUMBERS", "MAX_STACK", "Mutator"]

#: Most mutations stacked on one input: more makes inputs mostly noise that fails the first check.
MAX_STACK = 4

#: Numbers at the edges of the fields parsers keep them in, as written on the wire.
BOUNDARY_NUMBERS: tuple[bytes, ...] = (
    *(str(n).encode() for n in (
        0, 1, 7, 8, 11, 12, 15, 16, 99, 100, 127, 128, 199, 200, 255, 256, 699, 700, 999, 1000,
        1023, 1024, 1025, 4300, 4301, 8000, 65535, 65536, 86400, 86401, 2**31 - 1, 2**31,
        2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**10 - 1, 10**10, 10**19, 10**20,
    )),
    b"-1", b"+1", b"00000000000000000000000000001", b"1e9", b"0x10", b"1.5", b" 1", b"",
)

#: Digit runs this long reach Python's int() limit of 4,300 digits.
_HUGE_DIGITS = (4299, 4300, 4301, 5000, 12000)

#: Strings that look like digits or separators to a careless parser.
_HOSTILE_TOKENS: tuple[bytes, ...] = (
    "²".encode(), "٤٠٠٠".encode(), "１２".encode(), "\u2028".encode(), "\u0085".encode(),
    b"\x00", b"\xff\xfe", b"%00", b"%", b"%zz", b"\\", b'"', b'"unterminated', b"<", b">", b"<<>>",
    b"[", b"]", b"[::1", b";", b";;", b"=", b"==", b",", b",,", b":", b"::", b"@", b"?", b"/", b"//",
    b"\t", b" ", b"   ", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\r\n ", b"SIP/2.0", b"sip:", b"tel:",
    b"*", b"#", b"\x1b[0m", b"NaN", b"inf",
)

_DIGIT_RUN = re.compile(rb"[0-9]+")
_TOKEN = re.compile(rb"[A-Za-z0-9._+*#%-]+")


class Mutator:
    """Mutates seeds; ``rng`` makes a run repeatable, ``max_size`` bounds every output."""

    def __init__(self, rng: random.Random, max_size: int) -> None:
        self.rng = rng
        self.max_size = max_size
        self._ops: list[tuple[int, Callable[[bytes, Sequence[bytes]], bytes]]] = [
            (6, self.flip_bits),
            (4, self.set_byte),
            (4, self.insert_bytes),
            (4, self.delete_range),
            (3, self.repeat_range),
            (3, self.splice),
            (5, self.inflate_digits),
            (5, self.boundary_number),
            (4, self.hostile_token),
            (4, self.duplicate_line),
            (3, self.insert_foreign_line),
            (2, self.delete_line),
            (2, self.swap_lines),
            (2, self.line_ends),
            (2, self.truncate),
            (1, self.change_case),
        ]
        self._weights = [w for w, _ in self._ops]

    def mutate(self, seed: bytes, corpus: Sequence[bytes]) -> bytes:
        """One to :data:`MAX_STACK` mutations of ``seed``; ``corpus`` feeds splices and foreign lines."""
        data = seed
        for _ in range(self.rng.randint(1, MAX_STACK)):
            op = self.rng.choices(self._ops, self._weights)[0][1]
            data = op(data, corpus)
        return data[: self.max_size]

    # --- generic --------------------------------------------------------------------------------

    def _pos(self, data: bytes) -> int:
        return self.rng.randint(0, len(data))

    def flip_bits(self, data: bytes, _corpus: Sequence[bytes]) -> bytes:
        if not data:
            return bytes([self.rng.randrange(256)])
        buf = bytearray(data)
        for _ in range(self.rng.randint(1, 8)):
            i = self.rng.randrange(len(buf))
            buf[i] ^= 1 << self.rng.randrange(8)
        return bytes(buf)

    def set_byte(self, data: bytes, _corpus: Sequence[bytes]) -> bytes:
        if not data:
            return data
        i = self.rng.randrange(len(data))
        value = self.rng.choice(b"\x00\x01\x7f\x80\xff\r\n\t ;:=,<>\"%/@0123456789")
        return data[:i] + bytes([value]) + data[i + 1 :]

    def insert_bytes(self, data: bytes, _corpus: Sequence[bytes]) -> bytes:
        i = self._pos(data)
        return data[:i] + self.rng.randbytes(self.rng.randint(1, 16)) + data[i:]

    def delete_range(self, data: bytes, _corpus: Sequence[bytes]) -> bytes:
        if not data:
            return data
        i = self.rng.randrange(len(data))
        return data[:i] + data[i + self.rng.randint(1, max(1, len(data) // 8)) :]

    def repeat_range(self, data: bytes, _corpus: Sequence[bytes]) -> bytes:
        if not data:
            return data
        i = self.rng.randrange(len(data))
        piece = data[i : i + self.rng.randint(1, 32)]
        times = self.rng.choice((2, 3, 10, 100, 1000, 10000))
        times = max(1, min(times, (self.max_size - len(data)) // max(1, len(piece))))
        return data[:i] + piece * times + data[i:]

    def splice(self, data: bytes, corpus: Sequence[bytes]) -> bytes:
        other = self.rng.choice(corpus)
        return data[: self._pos(data)] + other[self._pos(other) :]

    def truncate(self, data: bytes, _corpus: Sequence[bytes]) -> bytes:
        return data[: self._pos(data)]

    def change_case(self, data: bytes, _corpus: Sequence[bytes]) -> bytes:
        if not data:
            return data
        i = self.rng.randrange(len(data))
        j = i + self.rng.randint(1, 40)
        return data[:i] + data[i:j].swapcase() + data[j:]

    # --- numbers --------------------------------------------------------------------------------

    def _digit_run(self, data: bytes) -> tuple[int, int] | None:
        runs = [m.span() for m in _DIGIT_RUN.finditer(data)]
        return self.rng.choice(runs) if runs else None

    def inflate_digits(self, data: bytes, _corpus: Sequence[bytes]) -> bytes:
        """A digit run becomes thousands of digits (or a few dozen: past 32 and 64 bits)."""
        run = self._digit_run(data)
        i, j = run if run is not None else (self._pos(data),) * 2
        count = self.rng.choice((*_HUGE_DIGITS, 11, 20, 21, 40, 100))
        count = max(1, min(count, self.max_size - len(data) + (j - i)))
        if self.rng.random() < 0.2:  # zeros in front: a short number in a huge string
            digits = b"0" * (count - 1) + bytes([self.rng.choice(b"0123456789")])
        else:
            pattern = bytes([self.rng.choice(b"123456789")])
            pattern += bytes(self.rng.choice(b"0123456789") for _ in range(63))
            digits = (pattern * (count // len(pattern) + 1))[:count]
        return data[:i] + digits + data[j:]

    def boundary_number(self, data: bytes, _corpus: Sequence[bytes]) -> bytes:
        run = self._digit_run(data)
        i, j = run if run is not None else (self._pos(data),) * 2
        return data[:i] + self.rng.choice(BOUNDARY_NUMBERS) + data[j:]

    def hostile_token(self, data: bytes, _corpus: Sequence[bytes]) -> bytes:
        tokens = [m.span() for m in _TOKEN.finditer(data)]
        if tokens and self.rng.random() < 0.6:
            i, j = self.rng.choice(tokens)
            if self.rng.random() < 0.5:
                i = j  # append to the token rather than replace it
        else:
            i = j = self._pos(data)
        return data[:i] + self.rng.choice(_HOSTILE_TOKENS) + data[j:]

    # --- lines ----------------------------------------------------------------------------------

    def _lines(self, data: bytes) -> list[bytes]:
        return data.split(b"\n")

    def duplicate_line(self, data: bytes, _corpus: Sequence[bytes]) -> bytes:
        """A line (a header, an SDP attribute) written again, right after itself or elsewhere."""
        lines = self._lines(data)
        k = self.rng.randrange(len(lines))
        times = self.rng.choice((1, 1, 2, 5, 50, 300))
        at = k if self.rng.random() < 0.5 else self.rng.randrange(len(lines))
        lines[at:at] = [lines[k]] * times
        return b"\n".join(lines)[: self.max_size]

    def insert_foreign_line(self, data: bytes, corpus: Sequence[bytes]) -> bytes:
        lines = self._lines(data)
        donor = self._lines(self.rng.choice(corpus))
        lines.insert(self.rng.randrange(len(lines) + 1), self.rng.choice(donor))
        return b"\n".join(lines)

    def delete_line(self, data: bytes, _corpus: Sequence[bytes]) -> bytes:
        lines = self._lines(data)
        if len(lines) > 1:
            del lines[self.rng.randrange(len(lines))]
        return b"\n".join(lines)

    def swap_lines(self, data: bytes, _corpus: Sequence[bytes]) -> bytes:
        lines = self._lines(data)
        if len(lines) > 1:
            a, b = self.rng.randrange(len(lines)), self.rng.randrange(len(lines))
            lines[a], lines[b] = lines[b], lines[a]
        return b"\n".join(lines)

    def line_ends(self, data: bytes, _corpus: Sequence[bytes]) -> bytes:
        choice = self.rng.randrange(4)
        if choice == 0:
            return data.replace(b"\r\n", b"\n")
        if choice == 1:
            return data.replace(b"\r\n", b"\r")
        if choice == 2:
            return data.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
        i = self._pos(data)
        end = self.rng.choice((b"\r\n", b"\n", b"\r", b"\r\n ", b"\r\n\t", b"\r\n\r\n"))
        return data[:i] + end + data[i:]
