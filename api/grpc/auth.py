"""``AuthService``: sign-up, login, second factors, passkeys (registration, login, listing,
removal), recovery, OIDC (and which sign-in options a tenant offers) and API keys.

``AuthOperations`` holds the calls once, edge-neutral: a request message and the ``Caller`` (its raw
bearer credential, address and resolved principal) in, a response message out. ``AuthServicer``
(gRPC) and ``api/rest/auth.py`` (REST, JSON mirror of the same messages) are thin wrappers.

Which calls need what is in ``api.auth``: public calls run without a credential; session calls
hand the raw session token to their use case (a pending session finishing its login, a
single-factor one enrolling a factor); every other call runs as the principal the edge resolved.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC

import grpc

from api.auth import (
    AUTH_SERVICE,
    TrustedProxies,
    client_of_peer,
    client_var,
    credential_from,
    principal_var,
)
from api.errors import Unimplemented
from api.grpc.timestamps import timestamp
from application.identity import (
    BeginPasskeyLogin,
    BeginPasskeyRegistration,
    BeginTotpEnrolment,
    ChangePassword,
    ConfirmTotpEnrolment,
    CreateApiKey,
    DeletePasskey,
    EndSession,
    EndUserSessions,
    FinishPasskeyLogin,
    FinishPasskeyRegistration,
    IdentityContext,
    IssuedSession,
    ListApiKeys,
    ListPasskeys,
    ListSessions,
    LoginOptions,
    Logout,
    PasswordLogin,
    RequestPasswordReset,
    ResetPassword,
    RevokeApiKey,
    SessionView,
    UpdateTenantPolicy,
    VerifySecondFactor,
)
from application.identity.profile import DescribePrincipal
from application.identity.signup import SignUp
from domain.errors import InvalidRequest, NotFound
from domain.identity import (
    ApiKey,
    Forbidden,
    InvalidCredentials,
    PasskeyCredential,
    Principal,
    SessionExpired,
)
from domain.identity.credentials import API_KEY_SCHEME
from lumina.v1 import auth_pb2 as pb
from lumina.v1 import auth_pb2_grpc

__all__ = ["AuthOperations", "AuthServicer", "Caller", "OidcLogin", "add_auth_service", "rpc_names"]

OidcBegin = Callable[[str, str], Awaitable[tuple[str, str]]]
OidcFinish = Callable[..., Awaitable[tuple[IssuedSession, bool, bool]]]


@dataclass(frozen=True, slots=True)
class OidcLogin:
    """``BeginOidcLogin(ctx, client)`` and ``FinishOidcLogin(ctx, client)`` of application/identity/oidc.py."""

    begin: OidcBegin
    finish: OidcFinish


@dataclass(frozen=True, slots=True)
class Caller:
    credential: str  # the raw bearer credential ('' when none)
    client: str  # the caller's address: brute-force limiter keys and audit events
    principal: Principal | None  # resolved by the edge for the calls that need one

    @property
    def session_token(self) -> str:
        """The credential when it can be a session token (an API key never is)."""
        return "" if self.credential.startswith(f"{API_KEY_SCHEME}_") else self.credential

    def require_session(self) -> str:
        token = self.session_token
        if not token:
            raise SessionExpired("no session token")
        return token

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise InvalidCredentials("no principal")
        return self.principal


def _key(key: ApiKey) -> pb.ApiKey:
    return pb.ApiKey(
        id=key.id, prefix=key.prefix, name=key.name, user_id=key.user_id, created_at=timestamp(key.created_at),
        expires_at=timestamp(key.expires_at), last_used_at=timestamp(key.last_used_at), revoked_at=timestamp(key.revoked_at),
    )


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _from_b64url(text: str) -> bytes:
    """A passkey id (base64url, padding optional); NotFound when it cannot be one."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise NotFound("passkey", "") from None
    if not raw or len(raw) > 1023:  # WebAuthn credential ids are 16..1023 bytes
        raise NotFound("passkey", "")
    return raw


def _passkey(p: PasskeyCredential) -> pb.Passkey:
    return pb.Passkey(
        id=_b64url(p.credential_id), name=p.name, created_at=timestamp(p.created_at), last_used_at=timestamp(p.last_used_at),
        transports=list(p.transports),
    )


def _credential_id(credential_json: str) -> str:
    try:
        value = json.loads(credential_json).get("id", "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


class AuthOperations:
    def __init__(
        self,
        ctx: IdentityContext,
        *,
        default_tenant: str,
        signup_enabled: bool = True,
        on_revoke: Callable[[str], None] = lambda _key_id: None,
        oidc: OidcLogin | None = None,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self._ctx = ctx
        self._default_tenant = default_tenant
        self._signup_enabled = signup_enabled
        self._on_revoke = on_revoke
        self._oidc = oidc
        # who may forward a client's address: the edges serving this AuthService use it too
        self.proxies = proxies or TrustedProxies()

    def _session(self, issued: IssuedSession) -> pb.SessionToken:
        s, policy = issued.session, self._ctx.session_policy
        lifetime = policy.pending_timeout if s.pending_second_factor else policy.absolute_timeout
        return pb.SessionToken(
            token=issued.token, pending_second_factor=s.pending_second_factor, assurance_level=s.assurance_level,
            expires_at=timestamp(s.created_at + lifetime),
        )

    # --- signing in -------------------------------------------------------------------------

    async def sign_up(self, req: pb.SignUpRequest, caller: Caller) -> pb.SignUpResponse:
        if not self._signup_enabled:
            raise Forbidden("sign up (disabled on this server)")
        done = await SignUp(self._ctx)(
            req.email, req.password, req.display_name, req.organisation, tenant_id=req.tenant_id, client=caller.client
        )
        return pb.SignUpResponse(session=self._session(done.session), tenant_id=done.tenant.id, user_id=done.user.id)

    async def login(self, req: pb.LoginRequest, caller: Caller) -> pb.LoginResponse:
        issued = await PasswordLogin(self._ctx)(
            req.tenant_id or self._default_tenant, req.email, req.password, client=caller.client,
            current_token=caller.session_token,
        )
        return pb.LoginResponse(session=self._session(issued))

    async def verify_second_factor(self, req: pb.VerifySecondFactorRequest, caller: Caller) -> pb.VerifySecondFactorResponse:
        issued = await VerifySecondFactor(self._ctx)(caller.require_session(), req.code, client=caller.client)
        return pb.VerifySecondFactorResponse(session=self._session(issued))

    async def logout(self, req: pb.LogoutRequest, caller: Caller) -> pb.LogoutResponse:
        if not caller.credential:
            raise SessionExpired("no session token")
        if caller.session_token:
            await Logout(self._ctx)(caller.session_token)
        return pb.LogoutResponse()

    async def who_am_i(self, req: pb.WhoAmIRequest, caller: Caller) -> pb.WhoAmIResponse:
        profile = await DescribePrincipal(self._ctx)(caller.require_principal())
        p = profile.principal
        return pb.WhoAmIResponse(principal=pb.Principal(
            tenant_id=p.tenant_id, user_id=p.user_id, role=p.role.value, kind=p.kind.value, credential_id=p.credential_id,
            assurance_level=p.assurance_level, email=profile.email, display_name=profile.display_name,
            has_totp=profile.has_totp, passkey_count=profile.passkey_count,
            mfa_enrolment_required=profile.mfa_enrolment_required,
        ))

    async def change_password(self, req: pb.ChangePasswordRequest, caller: Caller) -> pb.ChangePasswordResponse:
        issued = await ChangePassword(self._ctx)(
            caller.require_session(), req.current_password, req.new_password, client=caller.client
        )
        return pb.ChangePasswordResponse(session=self._session(issued))

    # --- second factors ---------------------------------------------------------------------

    async def begin_totp_enrolment(self, req: pb.BeginTotpEnrolmentRequest, caller: Caller) -> pb.BeginTotpEnrolmentResponse:
        enrolment = await BeginTotpEnrolment(self._ctx)(caller.require_session())
        # one enrolment per user at a time: the id is informational (ConfirmTotpEnrolment takes the user's)
        return pb.BeginTotpEnrolmentResponse(
            enrolment_id="totp", otpauth_uri=enrolment.uri, qr_svg=enrolment.qr_svg, secret=enrolment.secret
        )

    async def confirm_totp_enrolment(
        self, req: pb.ConfirmTotpEnrolmentRequest, caller: Caller
    ) -> pb.ConfirmTotpEnrolmentResponse:
        done = await ConfirmTotpEnrolment(self._ctx)(caller.require_session(), req.code, client=caller.client)
        return pb.ConfirmTotpEnrolmentResponse(recovery_codes=list(done.recovery_codes), session=self._session(done.session))

    async def begin_passkey_registration(
        self, req: pb.BeginPasskeyRegistrationRequest, caller: Caller
    ) -> pb.BeginPasskeyRegistrationResponse:
        ceremony = await BeginPasskeyRegistration(self._ctx)(caller.require_session())
        return pb.BeginPasskeyRegistrationResponse(ceremony_id=ceremony.ceremony_id, options_json=ceremony.options_json)

    async def finish_passkey_registration(
        self, req: pb.FinishPasskeyRegistrationRequest, caller: Caller
    ) -> pb.FinishPasskeyRegistrationResponse:
        issued = await FinishPasskeyRegistration(self._ctx)(
            caller.require_session(), req.ceremony_id, req.credential_json, req.name or "passkey", client=caller.client
        )
        return pb.FinishPasskeyRegistrationResponse(
            credential_id=_credential_id(req.credential_json), session=self._session(issued)
        )

    async def begin_passkey_login(self, req: pb.BeginPasskeyLoginRequest, caller: Caller) -> pb.BeginPasskeyLoginResponse:
        begin = BeginPasskeyLogin(self._ctx)
        try:  # with a pending session: its user's passkeys (the second factor); else usernameless
            ceremony = await begin(caller.session_token)
        except SessionExpired:  # a stale token must not stand in the way of signing in afresh
            ceremony = await begin("")
        return pb.BeginPasskeyLoginResponse(ceremony_id=ceremony.ceremony_id, options_json=ceremony.options_json)

    async def finish_passkey_login(self, req: pb.FinishPasskeyLoginRequest, caller: Caller) -> pb.FinishPasskeyLoginResponse:
        finish = FinishPasskeyLogin(self._ctx)
        try:
            issued = await finish(req.ceremony_id, req.credential_json, token=caller.session_token, client=caller.client)
        except SessionExpired:
            issued = await finish(req.ceremony_id, req.credential_json, client=caller.client)
        return pb.FinishPasskeyLoginResponse(session=self._session(issued))

    async def list_passkeys(self, req: pb.ListPasskeysRequest, caller: Caller) -> pb.ListPasskeysResponse:
        passkeys = await ListPasskeys(self._ctx)(caller.require_principal())
        return pb.ListPasskeysResponse(passkeys=[_passkey(p) for p in passkeys])

    async def delete_passkey(self, req: pb.DeletePasskeyRequest, caller: Caller) -> pb.DeletePasskeyResponse:
        await DeletePasskey(self._ctx)(caller.require_session(), _from_b64url(req.id.strip()), client=caller.client)
        return pb.DeletePasskeyResponse()

    # --- recovery ---------------------------------------------------------------------------

    async def request_password_reset(
        self, req: pb.RequestPasswordResetRequest, caller: Caller
    ) -> pb.RequestPasswordResetResponse:
        await RequestPasswordReset(self._ctx)(req.tenant_id or self._default_tenant, req.email, client=caller.client)
        return pb.RequestPasswordResetResponse()

    async def reset_password(self, req: pb.ResetPasswordRequest, caller: Caller) -> pb.ResetPasswordResponse:
        await ResetPassword(self._ctx)(req.token, req.new_password, client=caller.client)
        return pb.ResetPasswordResponse()

    # --- OIDC -------------------------------------------------------------------------------

    async def begin_oidc_login(self, req: pb.BeginOidcLoginRequest, caller: Caller) -> pb.BeginOidcLoginResponse:
        if self._oidc is None:
            raise Unimplemented("OIDC sign-in is not configured on this server")
        url, state = await self._oidc.begin(req.tenant_id or self._default_tenant, req.redirect_uri)
        return pb.BeginOidcLoginResponse(authorization_url=url, state=state)

    async def finish_oidc_login(self, req: pb.FinishOidcLoginRequest, caller: Caller) -> pb.FinishOidcLoginResponse:
        if self._oidc is None:
            raise Unimplemented("OIDC sign-in is not configured on this server")
        issued, created, linked = await self._oidc.finish(
            req.state, req.code, req.redirect_uri, client=caller.client, current_token=caller.session_token
        )
        return pb.FinishOidcLoginResponse(session=self._session(issued), created=created, linked=linked)

    async def get_login_options(self, req: pb.GetLoginOptionsRequest, caller: Caller) -> pb.GetLoginOptionsResponse:
        oidc = self._oidc is not None and await LoginOptions(self._ctx)(req.tenant_id or self._default_tenant)
        return pb.GetLoginOptionsResponse(oidc_enabled=oidc, passkeys_allowed=True, signup_allowed=self._signup_enabled)

    # --- API keys ---------------------------------------------------------------------------

    async def create_api_key(self, req: pb.CreateApiKeyRequest, caller: Caller) -> pb.CreateApiKeyResponse:
        expires_at = req.expires_at.ToDatetime(tzinfo=UTC) if req.HasField("expires_at") else None
        if expires_at is not None and expires_at <= self._ctx.clock.now():
            raise InvalidRequest.single("expires_at", "must be in the future")
        created = await CreateApiKey(self._ctx)(
            caller.require_principal(), req.name.strip() or "api key", expires_at=expires_at, user_id=req.user_id
        )
        return pb.CreateApiKeyResponse(key=_key(created.key), raw_key=created.raw)

    async def list_api_keys(self, req: pb.ListApiKeysRequest, caller: Caller) -> pb.ListApiKeysResponse:
        return pb.ListApiKeysResponse(keys=[_key(k) for k in await ListApiKeys(self._ctx)(caller.require_principal())])

    async def revoke_api_key(self, req: pb.RevokeApiKeyRequest, caller: Caller) -> pb.RevokeApiKeyResponse:
        if not await RevokeApiKey(self._ctx)(caller.require_principal(), req.id):
            raise NotFound("api key", req.id)
        self._on_revoke(req.id)  # this replica stops accepting it at once
        return pb.RevokeApiKeyResponse()

    # --- sessions and tenant policy ---------------------------------------------------------------

    def _session_view(self, view: SessionView) -> pb.Session:
        s, policy = view.session, self._ctx.session_policy
        lifetime = policy.pending_timeout if s.pending_second_factor else policy.absolute_timeout
        return pb.Session(
            id=s.id, created_at=timestamp(s.created_at), last_seen_at=timestamp(s.last_seen_at), assurance_level=s.assurance_level,
            current=view.current, pending_second_factor=s.pending_second_factor,
            expires_at=timestamp(min(s.created_at + lifetime, s.last_seen_at + policy.idle_timeout)),
        )

    async def list_sessions(self, req: pb.ListSessionsRequest, caller: Caller) -> pb.ListSessionsResponse:
        views = await ListSessions(self._ctx)(caller.require_principal())
        return pb.ListSessionsResponse(sessions=[self._session_view(v) for v in views])

    async def end_session(self, req: pb.EndSessionRequest, caller: Caller) -> pb.EndSessionResponse:
        await EndSession(self._ctx)(caller.require_principal(), req.id.strip()[:128], client=caller.client)
        return pb.EndSessionResponse()

    async def end_user_sessions(self, req: pb.EndUserSessionsRequest, caller: Caller) -> pb.EndUserSessionsResponse:
        ended = await EndUserSessions(self._ctx)(caller.require_principal(), req.user_id.strip()[:128], client=caller.client)
        return pb.EndUserSessionsResponse(ended=ended)

    async def update_tenant_policy(
        self, req: pb.UpdateTenantPolicyRequest, caller: Caller
    ) -> pb.UpdateTenantPolicyResponse:
        if not req.HasField("require_mfa"):
            raise InvalidRequest.single("require_mfa", "required (true or false)")
        policy = await UpdateTenantPolicy(self._ctx)(
            caller.require_principal(), require_mfa=req.require_mfa, client=caller.client
        )
        return pb.UpdateTenantPolicyResponse(policy=pb.TenantPolicy(require_mfa=policy.require_mfa))


_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def rpc_names() -> dict[str, str]:
    """AuthService RPC name -> ``AuthOperations`` method name (``SignUp`` -> ``sign_up``)."""
    methods = pb.DESCRIPTOR.services_by_name["AuthService"].methods_by_name
    return {name: _SNAKE.sub("_", name).lower() for name in methods}


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """One method per RPC, each: the caller from metadata and peer, then its operation."""

    def __init__(self, operations: AuthOperations) -> None:
        self._ops = operations

    @property
    def proxies(self) -> TrustedProxies:
        return self._ops.proxies


def _rpc(operation: str) -> Callable[..., Awaitable[object]]:
    async def call(self: AuthServicer, request: object, context: grpc.aio.ServicerContext) -> object:
        caller = Caller(
            credential=credential_from(context.invocation_metadata() or ()),
            client=client_var.get() or client_of_peer(context.peer() or ""),  # set by the edge interceptor
            principal=principal_var.get(),
        )
        return await getattr(self._ops, operation)(request, caller)

    return call


for _name, _operation in rpc_names().items():
    if not hasattr(AuthOperations, _operation):  # pragma: no cover - caught by the tests at import
        raise TypeError(f"{AUTH_SERVICE}/{_name} has no AuthOperations.{_operation}")
    setattr(AuthServicer, _name, _rpc(_operation))


def add_auth_service(server: grpc.aio.Server, servicer: AuthServicer) -> None:
    auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)
