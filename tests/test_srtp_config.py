"""[rtp] srtp: ``no`` (the default, plain RTP/AVP exactly as before) or ``passthrough``."""

from __future__ import annotations

from pathlib import Path

from mss import engine
from mss.config import RtpConfig, check_text
from tests.test_config import BASE, render


def test_srtp_defaults_to_no_and_the_call_settings_follow_it() -> None:
    result = check_text(render())
    assert result.errors == [] and result.config is not None
    assert result.config.rtp.srtp == RtpConfig().srtp == "no"
    settings = engine.call_settings(result.config, a_port=30000, b_port=30002, session_id=1)
    assert settings.srtp is False


def test_srtp_passthrough_is_read_into_the_call_settings() -> None:
    result = check_text(render(("rtp", "srtp", "passthrough")))
    assert result.errors == [] and result.config is not None
    assert result.config.rtp.srtp == "passthrough"
    settings = engine.call_settings(result.config, a_port=30000, b_port=30002, session_id=1)
    assert settings.srtp is True


def test_an_unknown_srtp_mode_is_a_clear_error() -> None:
    errors = [str(e) for e in check_text(render(("rtp", "srtp", "dtls"))).errors]
    assert len(errors) == 1
    assert "[rtp] srtp" in errors[0] and "dtls" in errors[0] and "passthrough" in errors[0]


def test_the_bundled_config_ini_documents_the_key() -> None:
    text = (Path(__file__).parent.parent / "config.ini").read_text(encoding="utf-8")
    assert ";srtp = no " in text and "passthrough" in text
    assert BASE["rtp"]  # the base the other cases edit
