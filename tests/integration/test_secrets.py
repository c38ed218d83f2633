"""Local-keyfile envelope encryption, and provider keys at rest in Postgres."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import sqlalchemy as sa

from adapters.postgres.engine import create_engine
from adapters.postgres.uow import SqlAlchemyUnitOfWorkFactory
from adapters.secrets import KmsError, LocalKeyfileKms
from application.registry import RegistryAdmin
from domain.registry import ProviderKind, ProviderSpec
from adapters.system import TimeOrderedIds
from tests.unit.chat_fakes import FixedClock


def test_keyfile_is_created_0600_and_round_trips(tmp_path: Path) -> None:
    kms = LocalKeyfileKms.in_data_dir(tmp_path)
    blob = kms.encrypt(b"sk-secret", {"provider": "a"})
    keyfile = tmp_path / "secrets" / "kek.key"
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert b"sk-secret" not in blob
    assert LocalKeyfileKms(keyfile).decrypt(blob, {"provider": "a"}) == b"sk-secret"  # a fresh instance reads it
    assert kms.encrypt(b"sk-secret", {"provider": "a"}) != blob  # a fresh data key and nonce each time


def test_wrong_context_or_key_does_not_decrypt(tmp_path: Path) -> None:
    kms = LocalKeyfileKms(tmp_path / "k1")
    blob = kms.encrypt(b"x", {"provider": "a"})
    with pytest.raises(KmsError):
        kms.decrypt(blob, {"provider": "b"})
    with pytest.raises(KmsError):
        LocalKeyfileKms(tmp_path / "k2").decrypt(blob, {"provider": "a"})
    with pytest.raises(KmsError):
        kms.decrypt(blob[:-1] + bytes([blob[-1] ^ 1]), {"provider": "a"})


async def test_a_dump_of_the_secrets_table_has_no_plaintext(database_url: str, tmp_path: Path) -> None:
    engine = create_engine(database_url)
    try:
        uow = SqlAlchemyUnitOfWorkFactory(engine)
        kms = LocalKeyfileKms.in_data_dir(tmp_path)
        admin = RegistryAdmin(uow=uow, kms=kms, clock=FixedClock(), ids=TimeOrderedIds(), tenant_id="t")
        key = "sk-live-THISISTHEPLAINTEXTKEY-9876"
        view = await admin.put_provider(ProviderSpec("sec-prov", ProviderKind.OPENAI), key)
        assert view.api_key_set and view.api_key_hint == "sk-…9876"
        assert key not in repr(view) and key not in repr(await admin.list_providers())
        async with engine.connect() as conn:
            dump = "\n".join(r[0] for r in await conn.execute(sa.text("SELECT t::text FROM provider_secrets t")))
            raw = b"".join(bytes(r[0]) for r in await conn.execute(sa.text("SELECT ciphertext FROM provider_secrets")))
            outbox = b"".join(bytes(r[0]) for r in await conn.execute(sa.text("SELECT payload FROM outbox")))
        assert "sec-prov" in dump
        assert "THISISTHEPLAINTEXTKEY" not in dump and b"THISISTHEPLAINTEXTKEY" not in raw
        assert b"THISISTHEPLAINTEXTKEY" not in outbox
        assert "THISISTHEPLAINTEXTKEY".encode().hex() not in dump
        await admin.delete_provider("sec-prov")
    finally:
        await engine.dispose()
