"""TOTP seeds are sealed at rest by the Kms port (local keyfile): the column holds ciphertext bound
to its tenant and user, a seed written before revision 0008 (plaintext) is sealed on first read,
and a database read with the wrong key fails loudly instead of yielding a seed."""

from __future__ import annotations

import base64

import pyotp
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.postgres.identity_repositories import totp_seed_context
from adapters.postgres.identity_uow import SqlIdentityUnitOfWorkFactory
from adapters.secrets import KmsError, LocalKeyfileKms
from application.identity import (
    BeginTotpEnrolment,
    ConfirmTotpEnrolment,
    PasswordLogin,
    VerifySecondFactor,
)
from domain.errors import Unavailable
from tests.integration.identity.conftest import PASSWORD, World


async def _row(engine: AsyncEngine, user_id: str) -> sa.Row:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text("SELECT secret, seed_ciphertext FROM totp_credentials WHERE user_id = :u"),
                                   {"u": user_id})).one()


async def test_totp_seed_is_not_stored_in_the_clear(world: World, tmp_path) -> None:
    user = await world.user()
    session = await PasswordLogin(world.ctx)(world.tenant, user.email, PASSWORD)
    enrolment = await BeginTotpEnrolment(world.ctx)(session.token)
    seed = enrolment.secret
    await ConfirmTotpEnrolment(world.ctx)(session.token, pyotp.TOTP(seed).at(world.clock.now()))

    row = await _row(world.engine, user.id)
    sealed = bytes(row.seed_ciphertext)
    assert row.secret is None
    assert seed.encode() not in sealed and base64.b32decode(seed) not in sealed
    assert world.kms.decrypt(sealed, totp_seed_context(world.tenant, user.id)) == seed.encode()
    with pytest.raises(KmsError):  # bound to its row: another user's context does not open it
        world.kms.decrypt(sealed, totp_seed_context(world.tenant, "someone-else"))

    # another key file cannot read it: the login's second step fails, it does not guess
    world.clock.advance(seconds=60)
    pending = await PasswordLogin(world.ctx)(world.tenant, user.email, PASSWORD)
    other = SqlIdentityUnitOfWorkFactory(world.engine, kms=LocalKeyfileKms(tmp_path / "other.key"))
    async with other() as uow:
        with pytest.raises(Unavailable, match="cannot unseal the TOTP seed"):
            await uow.totp.get(world.tenant, user.id)
    # the right key still works, and the code is accepted once
    await VerifySecondFactor(world.ctx)(pending.token, pyotp.TOTP(seed).at(world.clock.now()))


async def test_a_plaintext_seed_from_before_0008_is_sealed_on_first_read(world: World) -> None:
    user = await world.user()
    seed = pyotp.random_base32(32)
    async with world.engine.begin() as conn:
        await conn.execute(sa.text(
            "INSERT INTO totp_credentials (user_id, tenant_id, secret, confirmed, created_at)"
            " VALUES (:u, :t, :s, true, now())"), {"u": user.id, "t": world.tenant, "s": seed})

    async with world.ctx.uow() as uow:
        credential = await uow.totp.get(world.tenant, user.id)
        await uow.commit()

    assert credential is not None and credential.secret == seed
    row = await _row(world.engine, user.id)
    assert row.secret is None and seed.encode() not in bytes(row.seed_ciphertext)
    assert world.kms.decrypt(bytes(row.seed_ciphertext), totp_seed_context(world.tenant, user.id)) == seed.encode()


async def test_recovery_codes_are_stored_as_salted_argon2id_hashes(world: World) -> None:
    """50-bit lookup secrets need a password hash with a salt (ASVS V6.5.2), not a bare digest;
    a code stored as SHA-256 before that still works, once."""
    user = await world.user()
    session = await PasswordLogin(world.ctx)(world.tenant, user.email, PASSWORD)
    enrolment = await BeginTotpEnrolment(world.ctx)(session.token)
    enrolled = await ConfirmTotpEnrolment(world.ctx)(session.token, pyotp.TOTP(enrolment.secret).at(world.clock.now()))
    async with world.engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT code_hash FROM recovery_codes WHERE user_id = :u"),
                                     {"u": user.id})).scalars().all()
    assert len(stored) == len(enrolled.recovery_codes) == 10
    assert all(h.startswith("$argon2id$v=19$m=19456,t=2,p=1$") for h in stored)
    salts = {h.split("$")[4] for h in stored}
    assert len(salts) == 10 and all(len(base64.b64decode(s + "==")) >= 16 for s in salts)  # 128-bit salts
    digests = {world.ctx.secrets.digest(c.replace("-", "")) for c in enrolled.recovery_codes}
    assert not digests & set(stored) and not any(c in h for c in enrolled.recovery_codes for h in stored)

    pending = await PasswordLogin(world.ctx)(world.tenant, user.email, PASSWORD)
    full = await VerifySecondFactor(world.ctx)(pending.token, enrolled.recovery_codes[3].upper())  # typed loosely
    assert full.session.assurance_level == 2
    legacy = "abcde-fghij"
    async with world.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE recovery_codes SET code_hash = :h WHERE user_id = :u AND used_at IS NULL "
                                   "AND id = (SELECT min(id) FROM recovery_codes WHERE user_id = :u AND used_at IS NULL)"),
                           {"h": world.ctx.secrets.digest("abcdefghij"), "u": user.id})
    pending = await PasswordLogin(world.ctx)(world.tenant, user.email, PASSWORD)
    assert (await VerifySecondFactor(world.ctx)(pending.token, legacy)).session.assurance_level == 2
