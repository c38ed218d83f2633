"""WebAuthn relying party on py_webauthn (``WebAuthnRelyingParty``). Every verification failure
(malformed JSON or CBOR, foreign origin, wrong RP id, challenge mismatch, bad signature, sign-count
regression) becomes the same ``InvalidCredentials``; its ``reason`` names the cause for the audit."""

from __future__ import annotations

import json
from collections.abc import Sequence

from webauthn import (
    base64url_to_bytes,
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from application.identity.ports import NewPasskey
from domain.identity import InvalidCredentials

__all__ = ["PyWebAuthnRelyingParty"]


class PyWebAuthnRelyingParty:
    """``rp_id`` is the registrable domain (e.g. ``localhost``), ``origins`` the exact origins the
    console is served from (e.g. ``http://localhost:8080``). User verification is required, so a
    passkey is a multi-factor authenticator (ASVS V6.5)."""

    def __init__(self, rp_id: str, rp_name: str, origins: Sequence[str], *, timeout_ms: int = 120_000) -> None:
        self._rp_id = rp_id
        self._rp_name = rp_name
        self._origins = list(origins)
        self._timeout = timeout_ms

    def registration_options(
        self, *, user_id: str, user_name: str, display_name: str, exclude: Sequence[bytes]
    ) -> tuple[str, bytes]:
        options = generate_registration_options(
            rp_id=self._rp_id,
            rp_name=self._rp_name,
            user_id=user_id.encode(),
            user_name=user_name,
            user_display_name=display_name or user_name,
            timeout=self._timeout,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=c) for c in exclude],
        )
        return options_to_json(options), options.challenge

    def verify_registration(self, response_json: str, challenge: bytes) -> NewPasskey:
        try:
            verified = verify_registration_response(
                credential=response_json,
                expected_challenge=challenge,
                expected_rp_id=self._rp_id,
                expected_origin=self._origins,
                require_user_verification=True,
            )
            transports = json.loads(response_json).get("response", {}).get("transports", []) or []
        except Exception as exc:  # py_webauthn raises many types for malformed input
            raise InvalidCredentials(_reason("registration", exc)) from exc
        return NewPasskey(
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=tuple(str(t) for t in transports if isinstance(t, str))[:8],
        )

    def authentication_options(self, allow: Sequence[bytes]) -> tuple[str, bytes]:
        options = generate_authentication_options(
            rp_id=self._rp_id,
            timeout=self._timeout,
            allow_credentials=[PublicKeyCredentialDescriptor(id=c) for c in allow],
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        return options_to_json(options), options.challenge

    def credential_id_of(self, response_json: str) -> bytes:
        try:
            data = json.loads(response_json)
            raw = base64url_to_bytes(data["rawId"])
        except Exception as exc:
            raise InvalidCredentials("assertion: malformed") from exc
        if not raw:
            raise InvalidCredentials("assertion: malformed")
        return raw

    def verify_authentication(self, response_json: str, challenge: bytes, public_key: bytes, sign_count: int) -> int:
        try:
            verified = verify_authentication_response(
                credential=response_json,
                expected_challenge=challenge,
                expected_rp_id=self._rp_id,
                expected_origin=self._origins,
                credential_public_key=public_key,
                credential_current_sign_count=sign_count,
                require_user_verification=True,
            )
        except Exception as exc:
            raise InvalidCredentials(_reason("assertion", exc)) from exc
        return verified.new_sign_count


def _reason(ceremony: str, exc: Exception) -> str:
    text = str(exc).lower()
    for needle, label in (
        ("origin", "foreign origin"),
        ("rp id", "wrong rp id"),
        ("challenge", "challenge mismatch"),
        ("sign count", "sign count regression"),
        ("signature", "bad signature"),
        ("user was not", "user not present or verified"),
    ):
        if needle in text:
            return f"{ceremony}: {label}"
    return f"{ceremony}: malformed ({type(exc).__name__})"
