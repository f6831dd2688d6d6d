"""The SIP header section in its common form, cut in C (see mss/sip/_head.pyx)."""

def split_head(
    data: bytes, names: dict[str, tuple[str, str]]
) -> tuple[str, list[tuple[str, str, str]], dict[str, str], bool, bytes] | None:
    """``(start line, [(key, spelling, value)], {key: first value}, unique, rest)``, or None.

    None when the message is not in the common form (CRLF line ends, no folding, every header name
    in ``names``): the caller's Python code then reads it, or names what is wrong.
    """
