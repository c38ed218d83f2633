"""``LocalKeyfileKms``: envelope encryption with a key-encryption key (KEK) kept in a local file.

Each ``encrypt`` makes a fresh 256-bit data key, encrypts the plaintext with it (AES-GCM), and wraps
the data key with the KEK (AES-GCM); both are bound to the context (canonical JSON as associated
data), so a ciphertext moved to another provider's row does not decrypt. Blob layout:

    b"LK1" | kek_id (8) | wrap nonce (12) | wrapped data key (48) | data nonce (12) | ciphertext

The keyfile (32 random bytes, hex) is created with mode 0600 on first use, its directory 0700.
Vault Transit will implement the same port later.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KmsError", "LocalKeyfileKms"]

_MAGIC = b"LK1"
_NONCE = 12
_WRAPPED = 32 + 16


class KmsError(Exception):
    """Encryption or decryption failed (wrong key, wrong context, corrupt blob). Carries no secret."""


class LocalKeyfileKms:
    def __init__(self, keyfile: str | os.PathLike[str]) -> None:
        self._path = Path(keyfile)
        self._kek: bytes | None = None
        self._lock = threading.Lock()

    @classmethod
    def in_data_dir(cls, data_dir: str | os.PathLike[str]) -> LocalKeyfileKms:
        return cls(Path(data_dir) / "secrets" / "kek.key")

    def _key(self) -> bytes:
        with self._lock:
            if self._kek is None:
                self._kek = self._load_or_create()
            return self._kek

    def _load_or_create(self) -> bytes:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(os.urandom(32).hex())
        try:
            key = bytes.fromhex(self._path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise KmsError(f"key file {self._path} is unreadable or malformed") from exc
        if len(key) != 32:
            raise KmsError(f"key file {self._path} does not hold a 256-bit key")
        return key

    @staticmethod
    def _aad(context: dict[str, str]) -> bytes:
        return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()

    def _kek_id(self, kek: bytes) -> bytes:
        return hashlib.sha256(b"lumina-kek-id" + kek).digest()[:8]

    def encrypt(self, plaintext: bytes, context: dict[str, str]) -> bytes:
        kek = self._key()
        aad = self._aad(context)
        data_key = AESGCM.generate_key(bit_length=256)
        data_nonce, wrap_nonce = os.urandom(_NONCE), os.urandom(_NONCE)
        ciphertext = AESGCM(data_key).encrypt(data_nonce, plaintext, aad)
        wrapped = AESGCM(kek).encrypt(wrap_nonce, data_key, aad)
        return _MAGIC + self._kek_id(kek) + wrap_nonce + wrapped + data_nonce + ciphertext

    def decrypt(self, ciphertext: bytes, context: dict[str, str]) -> bytes:
        kek = self._key()
        head = len(_MAGIC) + 8
        if len(ciphertext) < head + _NONCE + _WRAPPED + _NONCE + 16 or not ciphertext.startswith(_MAGIC):
            raise KmsError("not a local-keyfile ciphertext")
        if ciphertext[len(_MAGIC):head] != self._kek_id(kek):
            raise KmsError("ciphertext was sealed with another key-encryption key")
        aad = self._aad(context)
        pos = head
        wrap_nonce = ciphertext[pos : pos + _NONCE]
        pos += _NONCE
        wrapped = ciphertext[pos : pos + _WRAPPED]
        pos += _WRAPPED
        data_nonce = ciphertext[pos : pos + _NONCE]
        pos += _NONCE
        try:
            data_key = AESGCM(kek).decrypt(wrap_nonce, wrapped, aad)
            return AESGCM(data_key).decrypt(data_nonce, ciphertext[pos:], aad)
        except InvalidTag as exc:
            raise KmsError("ciphertext does not authenticate (wrong key or context)") from exc
