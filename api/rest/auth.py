"""REST mirror of ``AuthService`` under ``/v1/auth`` (routes in ``api.auth.AUTH_HTTP_ROUTES``).

Bodies are the proto messages in their JSON form with the proto's field names (``{"email": …,
"password": …}`` in, ``{"session": {"token": …}}`` out; timestamps RFC 3339), so one contract serves
both edges. Errors are problem+json like everywhere else. The bearer credential is the same
``Authorization: Bearer`` header; the backend reads no cookies (the console keeps its session in
its own cookie and sends it as a bearer token), so there is no ambient credential to forge a
request with.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from litestar import Request, Response, Router, route
from litestar.enums import HttpMethod

from api.auth import AUTH_HTTP_ROUTES, client_var, principal_var
from api.grpc.auth import AuthOperations, Caller, rpc_names
from domain.errors import InvalidRequest
from lumina.v1 import auth_pb2 as pb

__all__ = ["create_auth_router"]

_MAX_BODY = 256 * 1024  # WebAuthn responses are the largest bodies here (a few KiB)


def _request_type(rpc: str) -> type[Message]:
    descriptor = pb.DESCRIPTOR.services_by_name["AuthService"].methods_by_name[rpc].input_type
    return getattr(pb, descriptor.name)  # type: ignore[no-any-return]


def _credential(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("x-api-key", "").strip()


def _handler(operations: AuthOperations, rpc: str, method: str, path: str) -> Any:
    message_type = _request_type(rpc)
    operation = getattr(operations, rpc_names()[rpc])

    async def handle(request: Request[Any, Any, Any]) -> Response[bytes]:
        body = await request.body() if method in ("POST", "PUT", "PATCH") else b""
        if len(body) > _MAX_BODY:
            raise InvalidRequest.single("body", f"larger than {_MAX_BODY} bytes")
        message = message_type()
        try:
            json_format.Parse(body.decode() if body.strip() else "{}", message)
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            raise InvalidRequest.single("body", str(exc)) from None
        for name, value in request.path_params.items():  # e.g. DELETE /v1/auth/api-keys/{id}
            setattr(message, name, value)
        if method == "GET":  # e.g. GET /v1/auth/login-options?tenant_id=acme
            for name, value in request.query_params.items():
                field = message.DESCRIPTOR.fields_by_name.get(name)
                if field is None or field.type != field.TYPE_STRING or field.is_repeated:
                    raise InvalidRequest.single(name, "not a query parameter of this call")
                setattr(message, name, value[:1024])
        client = client_var.get() or (request.client.host if request.client else "")  # the middleware's
        caller = Caller(credential=_credential(request), client=client, principal=principal_var.get())
        answer = await operation(message, caller)
        payload = json_format.MessageToJson(answer, preserving_proto_field_name=True, indent=None)
        return Response(payload.encode(), media_type="application/json", headers={"cache-control": "no-store"})

    handle.__name__ = f"auth_{rpc_names()[rpc]}"
    return route(path, http_method=[HttpMethod(method)], status_code=200)(handle)


def create_auth_router(operations: AuthOperations) -> Router:
    return Router(
        path="/",
        route_handlers=[_handler(operations, rpc, method, path) for rpc, (method, path) in AUTH_HTTP_ROUTES.items()],
    )
