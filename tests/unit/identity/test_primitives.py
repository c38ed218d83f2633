"""argon2id hashing and rehash, zxcvbn, TOTP matching and QR, secrets, events codec round trip."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pyotp

from adapters.events_codec import decode_event, encode_event
from adapters.identity import Argon2PasswordHasher, PyOtpTotp, SystemSecrets, ZxcvbnStrength
from domain.events import AuthenticationAudited


def test_argon2id_with_asvs_parameters_and_rehash_on_change() -> None:
    hasher = Argon2PasswordHasher()
    stored = hasher.hash("correct horse battery staple")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert hasher.verify(stored, "correct horse battery staple")
    assert not hasher.verify(stored, "correct horse battery stapl")
    assert not hasher.verify("garbage", "x")
    assert not hasher.needs_rehash(stored)
    assert Argon2PasswordHasher(time_cost=3).needs_rehash(stored)
    assert Argon2PasswordHasher(memory_kib=8 * 1024, time_cost=1).needs_rehash(stored)


def test_dummy_verify_costs_about_a_real_verification() -> None:
    hasher = Argon2PasswordHasher()
    stored = hasher.hash("some password 123")
    hasher.dummy_verify("warm-up")
    t0 = time.perf_counter()
    for _ in range(3):
        hasher.verify(stored, "wrong password")
    real = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(3):
        hasher.dummy_verify("wrong password")
    dummy = time.perf_counter() - t0
    assert 0.5 < dummy / real < 2.0


def test_zxcvbn_flags_common_and_uses_user_inputs() -> None:
    strength = ZxcvbnStrength()
    assert strength.estimate("password1", []).common
    assert strength.estimate("correct horse battery staple", []).score >= 3
    alone = strength.estimate("ann.lovelace.1815", []).score
    assert strength.estimate("ann.lovelace.1815", ["ann.lovelace", "1815"]).score < alone


def test_totp_match_window_and_uri_and_qr() -> None:
    engine = PyOtpTotp()
    secret = engine.new_secret()
    at = datetime(2025, 3, 1, 12, 0, 10, tzinfo=UTC)
    totp = pyotp.TOTP(secret)
    code = totp.at(at)
    assert engine.match(secret, code, at) == totp.timecode(at)
    assert engine.match(secret, code, at + timedelta(seconds=30)) == totp.timecode(at)  # one step late is fine
    assert engine.match(secret, code, at + timedelta(seconds=90)) is None
    assert engine.match(secret, "12345", at) is None and engine.match(secret, "abcdef", at) is None
    uri = engine.provisioning_uri(secret, "ann@example.com", "Lumina")
    assert uri.startswith("otpauth://totp/Lumina:ann%40example.com?secret=") and "issuer=Lumina" in uri
    svg = engine.qr_svg(uri)
    assert svg.startswith("<svg") and "path" in svg


def test_secrets() -> None:
    s = SystemSecrets()
    assert len(s.token(32)) >= 43 and s.token() != s.token()
    code = s.short_code()
    assert len(code) == 11 and code[5] == "-"
    assert s.digest("x") == s.digest("x") != s.digest("y") and len(s.digest("x")) == 64
    assert s.equal("abc", "abc") and not s.equal("abc", "abd")


def test_audit_event_round_trips_through_the_protobuf_envelope() -> None:
    event = AuthenticationAudited(
        event_id="e1", tenant_id="acme", occurred_at=datetime(2025, 1, 1, tzinfo=UTC), method="totp",
        outcome="failed", user_id="u1", reason="code already used", client_address="10.0.0.1",
    )
    message = encode_event(event)
    assert message.subject == "lumina.acme.auth.audited"
    assert decode_event(message.payload) == event
