"""Building the grpc.aio server: Lumina services behind the edge interceptor, the standard health
service, and server reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from lumina.v1 import chat_pb2, chat_pb2_grpc

from adapters.telemetry.metrics import Metrics
from api.auth import AUTH_SERVICE, Authenticator, TrustedProxies
from api.grpc.chat import ChatServicer
from api.grpc.interceptors import EdgeInterceptor

__all__ = ["build_grpc_server"]

SERVICES = (chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,)


def build_grpc_server(
    address: str, *, chat: ChatServicer, metrics: Metrics, authenticator: Authenticator, auth: object | None = None,
    proxies: TrustedProxies | None = None, reuse_port: bool = False,
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """The server, its health servicer, and the port it bound (useful when asked for port 0).
    Every Lumina call is authenticated by ``authenticator`` (api/auth.py); ``auth`` is the
    AuthService servicer (api/grpc/auth.py), when the backend has an identity module. ``proxies``:
    who may forward a client's address (default: the identity module's setting, else loopback).
    ``reuse_port``: sibling backend processes bind the same port (SO_REUSEPORT)."""
    proxies = proxies or getattr(auth, "proxies", None)
    server = grpc.aio.server(
        interceptors=[EdgeInterceptor(metrics, authenticator, proxies)],
        options=[("grpc.so_reuseport", int(reuse_port)), ("grpc.max_receive_message_length", 32 * 1024 * 1024)],
    )
    chat_pb2_grpc.add_ChatServiceServicer_to_server(chat, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    from api.grpc.budget import BUDGET_SERVICE, USAGE_SERVICE
    from api.grpc.memory import SERVICE_NAME as MEMORY_SERVICE
    from api.grpc.provider import SERVICE_NAME as PROVIDER_SERVICE

    names: tuple[str, ...] = (*SERVICES, PROVIDER_SERVICE, MEMORY_SERVICE, BUDGET_SERVICE, USAGE_SERVICE)
    if auth is not None:
        from api.grpc.auth import add_auth_service

        add_auth_service(server, auth)  # type: ignore[arg-type]
        names += (AUTH_SERVICE,)
    reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"gRPC port busy or unavailable: {address}")
    return server, health_servicer, port


async def mark_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *SERVICES):
        await health_servicer.set(name, status)
