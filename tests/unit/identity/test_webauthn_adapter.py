"""The py_webauthn relying party against a software authenticator: the happy paths, and every
tampering failing with the same InvalidCredentials (reason only for the audit)."""

from __future__ import annotations

import json

import pytest

from adapters.identity.webauthn import PyWebAuthnRelyingParty
from domain.identity import InvalidCredentials
from tests.unit.identity.soft_authenticator import SoftAuthenticator, b64url

ORIGIN = "http://localhost:8080"


@pytest.fixture
def rp() -> PyWebAuthnRelyingParty:
    return PyWebAuthnRelyingParty("localhost", "Lumina", [ORIGIN])


@pytest.fixture
def device() -> SoftAuthenticator:
    return SoftAuthenticator(rp_id="localhost", origin=ORIGIN)


def _register(rp: PyWebAuthnRelyingParty, device: SoftAuthenticator):
    options, challenge = rp.registration_options(user_id="u1", user_name="a@x.io", display_name="A", exclude=[])
    response, cred = device.create(options)
    return rp.verify_registration(response, challenge), cred


def test_registration_then_authentication(rp: PyWebAuthnRelyingParty, device: SoftAuthenticator) -> None:
    new, cred = _register(rp, device)
    assert new.credential_id == cred.credential_id and new.sign_count == 0 and new.transports == ("internal",)
    options, challenge = rp.authentication_options([new.credential_id])
    assertion = device.get(options)
    assert rp.credential_id_of(assertion) == cred.credential_id
    assert rp.verify_authentication(assertion, challenge, new.public_key, new.sign_count) == 1


def test_registration_options_require_resident_key_and_user_verification(rp: PyWebAuthnRelyingParty) -> None:
    options = json.loads(rp.registration_options(user_id="u1", user_name="a", display_name="", exclude=[b"x"])[0])
    assert options["rp"]["id"] == "localhost"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["excludeCredentials"][0]["id"] == b64url(b"x")


def test_foreign_origin_fails_registration(rp: PyWebAuthnRelyingParty, device: SoftAuthenticator) -> None:
    options, challenge = rp.registration_options(user_id="u1", user_name="a", display_name="", exclude=[])
    response, _ = device.create(options, origin="https://evil.example")
    with pytest.raises(InvalidCredentials) as err:
        rp.verify_registration(response, challenge)
    assert str(err.value) == "invalid credentials" and "origin" in err.value.reason


def test_wrong_rp_id_fails_registration(rp: PyWebAuthnRelyingParty, device: SoftAuthenticator) -> None:
    options, challenge = rp.registration_options(user_id="u1", user_name="a", display_name="", exclude=[])
    response, _ = device.create(options, rp_id="evil.example")
    with pytest.raises(InvalidCredentials) as err:
        rp.verify_registration(response, challenge)
    assert "rp id" in err.value.reason


def test_other_challenge_fails(rp: PyWebAuthnRelyingParty, device: SoftAuthenticator) -> None:
    new, _ = _register(rp, device)
    options, challenge = rp.authentication_options([])
    with pytest.raises(InvalidCredentials) as err:
        rp.verify_authentication(device.get(options, challenge=b"replayed-old-challenge"), challenge, new.public_key, 0)
    assert "challenge" in err.value.reason


@pytest.mark.parametrize("bad", ["origin", "rp_id"])
def test_foreign_origin_or_rp_fails_assertion(rp: PyWebAuthnRelyingParty, device: SoftAuthenticator, bad: str) -> None:
    new, _ = _register(rp, device)
    options, challenge = rp.authentication_options([])
    kwargs = {"origin": "https://evil.example"} if bad == "origin" else {"rp_id": "evil.example"}
    with pytest.raises(InvalidCredentials) as err:
        rp.verify_authentication(device.get(options, **kwargs), challenge, new.public_key, 0)
    assert str(err.value) == "invalid credentials"


def test_sign_count_regression_fails(rp: PyWebAuthnRelyingParty, device: SoftAuthenticator) -> None:
    new, _ = _register(rp, device)
    options, challenge = rp.authentication_options([])
    with pytest.raises(InvalidCredentials) as err:
        rp.verify_authentication(device.get(options, sign_count=3), challenge, new.public_key, 5)
    assert err.value.reason == "assertion: sign count regression"


def test_signature_by_another_key_fails(rp: PyWebAuthnRelyingParty, device: SoftAuthenticator) -> None:
    first, _ = _register(rp, device)
    _register(rp, device)  # the device now signs with its second credential's key
    options, challenge = rp.authentication_options([])
    with pytest.raises(InvalidCredentials):
        rp.verify_authentication(device.get(options), challenge, first.public_key, 0)


@pytest.mark.parametrize("garbage", ["", "{}", "not json", json.dumps({"id": "x", "rawId": "x", "response": {}})])
def test_malformed_responses_fail_uniformly(rp: PyWebAuthnRelyingParty, garbage: str) -> None:
    with pytest.raises(InvalidCredentials) as reg:
        rp.verify_registration(garbage, b"c" * 32)
    with pytest.raises(InvalidCredentials) as auth:
        rp.verify_authentication(garbage, b"c" * 32, b"k", 0)
    assert str(reg.value) == str(auth.value) == "invalid credentials"
