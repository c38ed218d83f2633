"""A software WebAuthn authenticator for tests: an ES256 key pair per credential, attestation
"none" and assertions built byte by byte per the WebAuthn Level 2 spec (authenticator data,
client data JSON, COSE key, CBOR attestation object, signature over authData || SHA-256(cData))."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftCredential:
    credential_id: bytes
    key: ec.EllipticCurvePrivateKey
    user_handle: bytes
    sign_count: int = 0

    def cose_public_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})


@dataclass
class SoftAuthenticator:
    rp_id: str
    origin: str
    credentials: list[SoftCredential] = field(default_factory=list)

    def _client_data(self, kind: str, challenge: bytes, origin: str | None) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": b64url(challenge), "origin": origin or self.origin, "crossOrigin": False}
        ).encode()

    def create(self, options_json: str, *, origin: str | None = None, rp_id: str | None = None) -> tuple[str, SoftCredential]:
        options = json.loads(options_json)
        cred = SoftCredential(
            credential_id=os.urandom(32), key=ec.generate_private_key(ec.SECP256R1()),
            user_handle=unb64url(options["user"]["id"]),
        )
        auth_data = (
            hashlib.sha256((rp_id or self.rp_id).encode()).digest()
            + bytes([UP | UV | AT])
            + struct.pack(">I", cred.sign_count)
            + bytes(16)  # AAGUID
            + struct.pack(">H", len(cred.credential_id))
            + cred.credential_id
            + cred.cose_public_key()
        )
        client_data = self._client_data("webauthn.create", unb64url(options["challenge"]), origin)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        self.credentials.append(cred)
        response = {
            "id": b64url(cred.credential_id), "rawId": b64url(cred.credential_id), "type": "public-key",
            "response": {"clientDataJSON": b64url(client_data), "attestationObject": b64url(attestation),
                         "transports": ["internal"]},
            "clientExtensionResults": {},
        }
        return json.dumps(response), cred

    def get(
        self, options_json: str, cred: SoftCredential | None = None, *, origin: str | None = None,
        rp_id: str | None = None, sign_count: int | None = None, challenge: bytes | None = None,
    ) -> str:
        options = json.loads(options_json)
        cred = cred or self.credentials[-1]
        cred.sign_count = cred.sign_count + 1 if sign_count is None else sign_count
        auth_data = hashlib.sha256((rp_id or self.rp_id).encode()).digest() + bytes([UP | UV]) + struct.pack(">I", cred.sign_count)
        client_data = self._client_data(
            "webauthn.get", challenge if challenge is not None else unb64url(options["challenge"]), origin
        )
        signature = cred.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        return json.dumps({
            "id": b64url(cred.credential_id), "rawId": b64url(cred.credential_id), "type": "public-key",
            "response": {"clientDataJSON": b64url(client_data), "authenticatorData": b64url(auth_data),
                         "signature": b64url(signature), "userHandle": b64url(cred.user_handle)},
            "clientExtensionResults": {},
        })
