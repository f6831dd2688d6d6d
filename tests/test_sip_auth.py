"""Digest authentication: RFC 7616 / RFC 2617 vectors, challenge parsing, give-up rules."""

from __future__ import annotations

import itertools

import pytest

from mss.errors import SipError
from mss.sip.auth import (
    MAX_AUTH_ATTEMPTS,
    Authenticator,
    Challenge,
    authorization,
    digest_response,
    parse_auth_params,
    parse_challenge,
)
from mss.sip.message import Headers, Response

# RFC 7616 §3.9.1
RFC7616 = {
    "username": "Mufasa",
    "password": "Circle of Life",
    "realm": "http-auth@example.org",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "method": "GET",
    "uri": "/dir/index.html",
    "qop": "auth",
    "nc": "00000001",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    v = RFC7616
    got = digest_response(
        algorithm=algorithm, username=v["username"], password=v["password"], realm=v["realm"],
        nonce=v["nonce"], method=v["method"], uri=v["uri"], qop=v["qop"], nc=v["nc"], cnonce=v["cnonce"],
    )  # fmt: skip
    assert got == expected


def test_rfc7616_authorization_header() -> None:
    ch = Challenge(
        realm=RFC7616["realm"],
        nonce=RFC7616["nonce"],
        algorithm="SHA-256",
        qop=("auth", "auth-int"),
        opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    )
    value = authorization(
        ch, username="Mufasa", password="Circle of Life", method="GET", uri="/dir/index.html",
        cnonce=RFC7616["cnonce"],
    )  # fmt: skip
    assert value == (
        'Digest username="Mufasa", realm="http-auth@example.org", '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", uri="/dir/index.html", '
        'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", '
        'algorithm=SHA-256, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
        'nc=00000001, opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )


def test_rfc2617_vector() -> None:
    assert (
        digest_response(
            algorithm="MD5",
            username="Mufasa",
            password="Circle Of Life",
            realm="testrealm@host.com",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            method="GET",
            uri="/dir/index.html",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def test_rfc2069_and_sess_and_auth_int() -> None:
    import hashlib

    def dr(algorithm: str, qop: str | None, body: bytes = b"") -> str:
        return digest_response(
            algorithm=algorithm, username="u", password="p", realm="r", nonce="n", method="REGISTER",
            uri="sip:example.com", qop=qop, nc="00000001", cnonce="c", body=body,
        )  # fmt: skip

    def h(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1, ha2 = h("u:r:p"), h("REGISTER:sip:example.com")
    assert dr("MD5", None) == h(f"{ha1}:n:{ha2}")
    assert dr("MD5-SESS", "auth") == h(f"{h(f'{ha1}:n:c')}:n:00000001:c:auth:{ha2}")
    ha2_int = h(f"REGISTER:sip:example.com:{hashlib.md5(b'body').hexdigest()}")
    assert dr("MD5", "auth-int", b"body") == h(f"{ha1}:n:00000001:c:auth-int:{ha2_int}")


def test_parse_kamailio_challenge() -> None:
    ch = parse_challenge(
        'Digest realm="127.0.0.1", nonce="Z3p4YmZ6a2N0eHJ5", qop="auth", algorithm=MD5, stale=TRUE',
        proxy=True,
    )
    assert ch == Challenge(realm="127.0.0.1", nonce="Z3p4YmZ6a2N0eHJ5", algorithm="MD5", qop=("auth",),
                           stale=True, proxy=True)  # fmt: skip
    assert parse_challenge("Basic realm=x", proxy=False) is None
    assert parse_challenge('digest realm="a,b", nonce="n", qop="auth-int, auth"', proxy=False) == Challenge(
        realm="a,b", nonce="n", qop=("auth-int", "auth")
    )
    with pytest.raises(SipError, match="without realm or nonce"):
        parse_challenge('Digest realm="x"', proxy=False)


def test_parse_auth_params() -> None:
    assert parse_auth_params('a="x\\"y", b=tok , C="1,2",d="" ') == {
        "a": 'x"y',
        "b": "tok",
        "c": "1,2",
        "d": "",
    }
    assert parse_auth_params("opaque-data=here") == {"opaque-data": "here"}  # RFC 4475 regaut01
    for bad, reason in [
        ('a="x', "unterminated quoted value of 'a'"),
        ("a", "authentication parameter 'a' has no value"),
        ('a="x" b=1', "expected ',' after 'a'"),
        ("=1", "bad authentication parameter at '=1'"),
    ]:
        with pytest.raises(SipError) as info:
            parse_auth_params(bad)
        assert info.value.reason == reason


# --- the give-up rules ---------------------------------------------------------------------------


def challenge(status: int, *values: str) -> Response:
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    return Response(status, "", Headers([(name, v) for v in values]))


def authenticator() -> Authenticator:
    counter = itertools.count(1)
    return Authenticator("mss", "secret", make_cnonce=lambda: f"cn{next(counter)}")


def test_wrong_password_gives_up_on_the_next_challenge_even_with_a_fresh_nonce() -> None:
    auth = authenticator()
    first = auth.headers_for(challenge(401, 'Digest realm="r", nonce="n1", qop="auth"'), method="REGISTER",
                             uri="sip:r")  # fmt: skip
    assert first is not None
    [(name, value)] = first
    assert name == "Authorization" and 'nonce="n1"' in value and 'cnonce="cn1"' in value
    again = challenge(401, 'Digest realm="r", nonce="n2", qop="auth"')
    assert auth.headers_for(again, method="REGISTER", uri="sip:r") is None


def test_stale_nonce_is_answered_once_more() -> None:
    auth = authenticator()
    assert auth.headers_for(challenge(407, 'Digest realm="r", nonce="n1"'), method="INVITE", uri="sip:x")
    stale = challenge(407, 'Digest realm="r", nonce="n2", stale=true')
    result = auth.headers_for(stale, method="INVITE", uri="sip:x")
    assert result is not None and result[0][0] == "Proxy-Authorization"
    same_nonce = challenge(407, 'Digest realm="r", nonce="n2", stale=true')
    assert auth.headers_for(same_nonce, method="INVITE", uri="sip:x") is None


def test_attempts_are_capped() -> None:
    auth = authenticator()
    for i in range(MAX_AUTH_ATTEMPTS):
        assert auth.headers_for(challenge(401, f'Digest realm="r{i}", nonce="n"'), method="BYE", uri="sip:x")
    assert (
        auth.headers_for(challenge(401, 'Digest realm="other", nonce="n"'), method="BYE", uri="sip:x") is None
    )


def test_strongest_supported_challenge_is_chosen() -> None:
    auth = authenticator()
    result = auth.headers_for(
        challenge(
            401,
            'Digest realm="r", nonce="a", algorithm=MD5, qop="auth"',
            'Digest realm="r", nonce="b", algorithm=SHA-256, qop="auth"',
            'Digest realm="r", nonce="c", algorithm=UNKNOWN-HASH, qop="auth"',
            'Bearer realm="r"',
        ),
        method="REGISTER",
        uri="sip:r",
    )
    assert result is not None and len(result) == 1
    assert "algorithm=SHA-256" in result[0][1] and 'nonce="b"' in result[0][1]


def test_nothing_supported_gives_up() -> None:
    auth = authenticator()
    assert auth.headers_for(challenge(401, 'Digest realm="r", nonce="n", algorithm=SHA-1'), method="X",
                            uri="sip:x") is None  # fmt: skip
    assert auth.headers_for(challenge(401, 'Digest realm="r", nonce="n", qop="auth-conf"'), method="X",
                            uri="sip:x") is None  # fmt: skip
    assert auth.headers_for(challenge(401, "Digest broken"), method="X", uri="sip:x") is None
    assert auth.headers_for(Response(403, "Forbidden", Headers()), method="X", uri="sip:x") is None
