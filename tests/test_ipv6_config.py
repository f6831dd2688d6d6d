"""Config keys with IPv6: literals are taken (and written compressed), and a relay on a wildcard
(``::`` dual-stack, or ``0.0.0.0``) needs ``[rtp] advertised_host``, since SDP must name an address
the phones can reach."""

from __future__ import annotations

from pathlib import Path

import pytest

from mss.config import check_text
from tests.test_iif_server import config_text


def _config(tmp_path: Path, **rtp: str) -> tuple[str, list[str]]:
    peers = {"as1": "::ffff:127.0.0.1"}
    text = config_text(4000, tmp_path / "journal.sqlite3", listen_host="::", peers=peers)
    text = text.replace("[rtp]\n", "[rtp]\n" + "".join(f"{k} = {v}\n" for k, v in rtp.items()), 1)
    text = text.replace("host = 127.0.0.1\nport_min", "port_min") if "host" in rtp else text
    result = check_text(text, base_dir=tmp_path)
    return text, [str(e) for e in result.errors]


def test_ipv6_literals_are_taken(tmp_path: Path) -> None:
    text, errors = _config(tmp_path, host="0:0:0:0:0:0:0:1")
    assert errors == []
    config = check_text(text, base_dir=tmp_path).config
    assert config is not None
    assert config.callback.listen_host == "::" and config.rtp.host == "::1"


@pytest.mark.parametrize("wildcard", ["::", "0.0.0.0"])
def test_a_wildcard_relay_needs_an_advertised_host(tmp_path: Path, wildcard: str) -> None:
    _, errors = _config(tmp_path, host=wildcard)
    assert errors == [f"[rtp] advertised_host: is required when host is {wildcard}"]
    _, errors = _config(tmp_path, host=wildcard, advertised_host="2001:db8::12")
    assert errors == []
