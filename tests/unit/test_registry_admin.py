"""``RegistryAdmin`` driven through in-memory fakes of its ports (registry repository, unit of work,
KMS, provider factory, catalogue), and the REST admin router on top of it (model names with '/')."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pytest
from litestar import Litestar

from api.rest.admin import create_admin_router
from api.rest.principal import authentication_middleware
from api.rest.problems import EXCEPTION_HANDLERS
from application.registry import LiveProviderPool, RegistryAdmin
from domain.chat import ChatRequest, Chunk, EmbeddingRequest, Embeddings
from domain.cost import Price
from domain.errors import InvalidRequest, NotFound, Unavailable
from domain.events import RegistryChanged
from domain.registry import (
    CatalogueEntry,
    ModelCapabilities,
    ModelRoute,
    ModelSource,
    ProviderKind,
    ProviderSpec,
)
from tests.unit.chat_fakes import FixedClock, SequentialIds
from tests.unit.fakes import FakeUnitOfWorkFactory, IntegrityViolation, fake_decode
from tests.unit.auth_fakes import authenticator, bearer

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
KEY = "sk-live-0123456789abcdef"


class XorKms:
    """A reversible stand-in for the local keyfile KMS: the context must match to decrypt."""

    def encrypt(self, plaintext: bytes, context: dict[str, str]) -> bytes:
        return repr(sorted(context.items())).encode() + b"|" + bytes(b ^ 0x5A for b in plaintext)

    def decrypt(self, ciphertext: bytes, context: dict[str, str]) -> bytes:
        head, _, body = ciphertext.partition(b"|")
        if head != repr(sorted(context.items())).encode():
            raise ValueError("wrong context")
        return bytes(b ^ 0x5A for b in body)


class _Client:
    def __init__(self, name: str, key: str) -> None:
        self.name, self.key, self.closed = name, key, False

    def stream(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        raise NotImplementedError

    async def embed(self, upstream_model: str, request: EmbeddingRequest) -> Embeddings:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.closed = True


class ListingFactory:
    """``ProviderFactory`` whose providers list ``listing``; remembers the keys it was given."""

    def __init__(self, listing: Sequence[str]) -> None:
        self.listing = list(listing)
        self.keys: list[str] = []

    def build(self, spec: ProviderSpec, api_key: str) -> _Client:
        self.keys.append(api_key)
        return _Client(spec.name, api_key)

    async def list_models(self, spec: ProviderSpec, api_key: str) -> list[str]:
        self.keys.append(api_key)
        return list(self.listing)


class Catalogue:
    def entries(self) -> Sequence[CatalogueEntry]:
        caps = ModelCapabilities(context_window=128_000, max_output_tokens=16_384, tools=True)
        return [CatalogueEntry(ProviderKind.OPENAI, "gpt-4o-mini", caps, Price(0.15, 0.6), NOW - timedelta(days=30))]


def make_admin(uow: FakeUnitOfWorkFactory, factory: ListingFactory | None = None) -> tuple[RegistryAdmin, list[int]]:
    changes: list[int] = []

    async def on_change() -> None:
        changes.append(1)

    admin = RegistryAdmin(
        uow=uow, kms=XorKms(), clock=FixedClock(NOW), ids=SequentialIds("ev"), tenant_id="acme",
        factory=factory, catalogue=Catalogue(), on_change=on_change,
    )
    return admin, changes


def events(uow: FakeUnitOfWorkFactory) -> list[tuple[str, str, str]]:
    out = []
    for message in uow.db.unsent():
        event = fake_decode(message.payload)
        assert isinstance(event, RegistryChanged)
        out.append((event.entity, event.name, event.action))
    return out


async def test_provider_keys_are_sealed_and_never_shown() -> None:
    uow = FakeUnitOfWorkFactory()
    admin, changes = make_admin(uow)
    view = await admin.put_provider(ProviderSpec("oa", ProviderKind.OPENAI), KEY)
    assert (view.api_key_set, view.api_key_hint) == (True, "sk-…cdef")
    assert KEY not in repr(view) and KEY.encode() not in uow.db.secrets["oa"].ciphertext
    # omitting the key keeps it; the label changes
    again = await admin.put_provider(ProviderSpec("oa", ProviderKind.OPENAI, label="prod"))
    assert again.api_key_set and again.label == "prod"
    assert XorKms().decrypt(uow.db.secrets["oa"].ciphertext, {"purpose": "provider_api_key", "provider": "oa"}) == KEY.encode()
    with pytest.raises(InvalidRequest):
        await admin.put_provider(ProviderSpec("vllm", ProviderKind.OPENAI_COMPATIBLE))  # needs a base URL
    assert changes == [1, 1]
    assert events(uow) == [("provider", "oa", "upserted"), ("provider", "oa", "upserted")]


async def test_models_keep_their_price_history_and_deleting_a_provider_cascades() -> None:
    uow = FakeUnitOfWorkFactory()
    admin, _ = make_admin(uow)
    await admin.put_provider(ProviderSpec("local", ProviderKind.OPENAI_COMPATIBLE, base_url="http://127.0.0.1:1/v1"), KEY)
    with pytest.raises(NotFound):
        await admin.put_model(ModelRoute("m", "nope", "m"))
    name = "meta-llama/Llama-3-8B"
    await admin.put_model(ModelRoute(name, "local", name, Price(1, 2)), price_effective_from=NOW - timedelta(days=2))
    stored = await admin.put_model(ModelRoute(name, "local", name, Price(3, 4)))
    assert stored.price == Price(3, 4)
    assert [p.price for p in await admin.price_history(name)] == [Price(1, 2), Price(3, 4)]
    # a future price does not change the price in force now
    later = await admin.put_model(ModelRoute(name, "local", name, Price(9, 9)), price_effective_from=NOW + timedelta(days=1))
    assert later.price == Price(3, 4)
    assert len(await admin.price_history(name)) == 3

    await admin.delete_provider("local")
    assert uow.db.providers == {} and uow.db.models == {} and uow.db.prices == {} and uow.db.secrets == {}
    with pytest.raises(NotFound):
        await admin.get_model(name)
    with pytest.raises(NotFound):
        await admin.delete_provider("local")


async def test_discovery_merges_catalogue_and_listing_and_keeps_operator_switches() -> None:
    uow = FakeUnitOfWorkFactory()
    factory = ListingFactory(["gpt-4o-mini", "ft:custom"])
    admin, _ = make_admin(uow, factory)
    await admin.put_provider(ProviderSpec("oa", ProviderKind.OPENAI), KEY)
    found = {m.name: m for m in await admin.discover("oa")}
    assert factory.keys == [KEY]  # decrypted for the listing call only
    assert found["gpt-4o-mini"].priced and found["gpt-4o-mini"].capabilities.tools
    assert not found["ft:custom"].priced and found["ft:custom"].source is ModelSource.DISCOVERED
    assert [p.effective_from for p in await admin.price_history("gpt-4o-mini")] == [NOW - timedelta(days=30)]

    switched = await admin.get_model("gpt-4o-mini")
    switched.enabled = False  # a returned route is a copy: nothing stored changes ...
    assert (await admin.get_model("gpt-4o-mini")).enabled
    await admin.put_model(ModelRoute("gpt-4o-mini", "oa", "gpt-4o-mini", Price(0.15, 0.6), enabled=False,
                                     source=ModelSource.DISCOVERED))
    factory.listing = ["gpt-4o-mini"]
    again = {m.name: m for m in await admin.discover("oa")}
    assert again["gpt-4o-mini"].enabled is False  # ... and discovery keeps the operator's switch
    assert len(await admin.price_history("gpt-4o-mini")) == 1  # same price, no new period


async def test_a_failed_commit_changes_nothing_and_the_pool_follows_the_registry() -> None:
    uow = FakeUnitOfWorkFactory()
    admin, _ = make_admin(uow)
    uow.db.fail_next_commit = IntegrityViolation("boom")
    with pytest.raises(IntegrityViolation):
        await admin.put_provider(ProviderSpec("oa", ProviderKind.OPENAI), KEY)
    assert uow.db.providers == {} and uow.db.secrets == {} and uow.db.outbox == []

    factory = ListingFactory([])
    pool = LiveProviderPool(uow, XorKms(), factory)
    await admin.put_provider(ProviderSpec("oa", ProviderKind.OPENAI), KEY)
    await pool.reload()
    first = pool.get("oa")
    assert factory.keys == [KEY]
    await admin.put_provider(ProviderSpec("oa", ProviderKind.OPENAI), "sk-rotated-0000000000000")
    await pool.reload()
    assert pool.get("oa") is not first and factory.keys[-1] == "sk-rotated-0000000000000"
    await admin.delete_provider("oa")
    await pool.reload()
    with pytest.raises(NotFound):
        pool.get("oa")
    await pool.aclose()
    assert first.closed  # type: ignore[attr-defined]


async def test_rest_admin_takes_model_names_with_slashes_without_deprecations() -> None:
    uow = FakeUnitOfWorkFactory()
    admin, _ = make_admin(uow)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Litestar's deprecated inferred parameter styles
        app = Litestar(route_handlers=[create_admin_router(admin, platform_tenant="acme")],
                       exception_handlers=EXCEPTION_HANDLERS, middleware=[authentication_middleware(authenticator("acme"))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin", headers=bearer()) as http:
        r = await http.put("/admin/providers/local", json={"kind": "openai_compatible", "base_url": "http://127.0.0.1:1/v1"})
        assert r.status_code == 200, r.text
        name = "meta-llama/Llama-3-8B"
        for price, since in ((1.0, "2025-12-01T00:00:00Z"), (2.0, None)):
            body = {"provider": "local", "price": {"input_per_mtok": price, "effective_from": since}}
            r = await http.put(f"/admin/models/{name}", json=body)
            assert r.status_code == 200, r.text
        assert r.json()["name"] == name and r.json()["upstream_model"] == name
        assert (await http.get(f"/admin/models/{name}")).json()["price"]["input_per_mtok"] == 2.0
        assert (await http.get("/admin/models/meta-llama%2FLlama-3-8B")).json()["name"] == name
        history = [p["input_per_mtok"] for p in (await http.get(f"/admin/models/{name}/prices")).json()]
        assert history == [1.0, 2.0]
        assert [p["input_per_mtok"] for p in (await http.get(f"/admin/prices/{name}")).json()] == history
        assert [m["name"] for m in (await http.get("/admin/models", params={"provider": "local"})).json()] == [name]
        missing = await http.get("/admin/models/meta-llama/nope")
        assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
        assert (await http.delete(f"/admin/models/{name}")).status_code == 204
        assert (await http.get("/admin/models")).json() == []


async def test_a_reload_builds_no_client_until_a_provider_is_asked_for() -> None:
    """Start-up and every RegistryChanged reload read the registry only: a deployment (or a test
    database) with many providers does not pay for building every SDK client at each reload."""
    uow = FakeUnitOfWorkFactory()
    admin, _ = make_admin(uow)
    for i in range(50):
        await admin.put_provider(ProviderSpec(f"p{i}", ProviderKind.OPENAI), f"sk-key-{i:020d}")
    factory = ListingFactory([])
    pool = LiveProviderPool(uow, XorKms(), factory)
    await pool.reload()
    assert factory.keys == [] and len(pool.names()) == 50
    client = pool.get("p7")
    assert factory.keys == [f"sk-key-{7:020d}"] and pool.get("p7") is client  # built once
    await pool.reload()  # nothing changed: the built client stays
    assert pool.get("p7") is client and len(factory.keys) == 1
    await pool.aclose()


async def test_a_key_that_cannot_be_decrypted_disables_its_provider_only() -> None:
    """A secret sealed under another key-encryption key (another data dir, a botched rotation) used
    to fail the whole reload, and with it the backend's start; now only that provider is unusable,
    with a clear error that names it and shows nothing of the key."""
    uow = FakeUnitOfWorkFactory()
    admin, _ = make_admin(uow)
    await admin.put_provider(ProviderSpec("good", ProviderKind.OPENAI), KEY)
    await admin.put_provider(ProviderSpec("sealed-elsewhere", ProviderKind.OPENAI), "sk-other-000000000000000")
    secret = uow.db.secrets["sealed-elsewhere"]
    uow.db.secrets["sealed-elsewhere"] = msgspec.structs.replace(secret, ciphertext=b"another-kek|" + secret.ciphertext)
    factory = ListingFactory([])
    pool = LiveProviderPool(uow, XorKms(), factory)
    await pool.reload()  # does not raise
    assert pool.get("good").key == KEY  # type: ignore[attr-defined]
    for _ in range(2):  # and keeps failing the same way (nothing half-built is cached)
        with pytest.raises(Unavailable) as failed:
            pool.get("sealed-elsewhere")
        assert "sealed-elsewhere" in failed.value.message and "sk-" not in failed.value.message
    await pool.aclose()
