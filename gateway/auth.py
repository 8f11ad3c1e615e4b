"""Authorization of gRPC calls: a ``grpc.aio`` server interceptor over :class:`gateway.grants.GrantStore`.

Contracts:
- Installed only when a token file is configured (``--auth-tokens``); without one no interceptor runs and
  every call costs what it did before.
- Each GRPCInferenceService method needs one scope (:data:`gateway.grants.METHOD_SCOPES`). A call with no
  credential, a malformed ``authorization`` header or an unknown one gets UNAUTHENTICATED; a known
  credential without the scope gets PERMISSION_DENIED naming the credential's *name* and the scope.
- Credentials: ``authorization: Bearer <token>`` metadata, or, when no token is sent on an mTLS port, the
  verified client certificate (its SAN, then its subject CN) looked up in the file's ``[[certificate]]``.
- ``grpc.health.v1`` is always open (probes). Reflection is ``open``, ``scoped`` (needs ``metadata``) or
  ``off`` (UNIMPLEMENTED). Any other method needs a known credential.
- On the hot path: one dict lookup of the method, a scan of the call's few metadata pairs, one sha256
  and one dict lookup of the digest, a constant-time compare; no logging when the call is allowed. The
  service's handler of each scoped method is looked up once and kept.
  Refusals are counted in ``infergate_auth_refused_total{reason}`` (missing, unknown_token,
  unknown_certificate, scope) and logged at most once per ``log_interval`` seconds per reason, with the
  method, never the token.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from prometheus_client import CollectorRegistry, Counter

from gateway.grants import METHOD_SCOPES, Grant, GrantStore

log = logging.getLogger(__name__)

REFLECTION_MODES = ("open", "scoped", "off")
_HEALTH = "/grpc.health.v1.Health/"
_REFLECTION = "/grpc.reflection."
_BEARER = "bearer "
_MISSING = "missing credential: send 'authorization: Bearer <token>'"

Denial = tuple[grpc.StatusCode, str]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


def bearer_token(metadata: Any) -> str | None:
    """The token of the call's ``authorization: Bearer`` header; '' when the header is malformed."""
    for key, value in metadata or ():
        if key == "authorization":
            if isinstance(value, bytes):
                return ""
            if value[:7].lower() != _BEARER:
                return ""
            return str(value[7:]).strip()
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses calls whose credential lacks the method's scope."""

    def __init__(
        self,
        store: GrantStore,
        *,
        reflection: str = "open",
        log_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if reflection not in REFLECTION_MODES:
            raise ValueError(f"reflection must be one of {', '.join(REFLECTION_MODES)}, got {reflection!r}")
        self.store = store
        self.reflection = reflection
        self.log_interval = log_interval
        self.clock = clock
        self.denied: dict[str, int] = {}
        self._handlers: dict[str, Handler] = {}
        self._logged_at: dict[str, float] = {}
        self._counter = Counter(
            "infergate_auth_refused",
            "Calls refused by the auth check, by reason (missing, unknown_token, unknown_certificate, scope)",
            ["reason"],
            registry=registry if registry is not None else CollectorRegistry(),
        )

    async def intercept_service(  # type: ignore[override]  # the stubs omit that a handler may be None
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        scope = METHOD_SCOPES.get(method)
        if scope is None:
            if method.startswith(_HEALTH):
                return await continuation(handler_call_details)
            if method.startswith(_REFLECTION):
                if self.reflection == "open":
                    return await continuation(handler_call_details)
                if self.reflection == "off":
                    return _denied(
                        await continuation(handler_call_details),
                        (grpc.StatusCode.UNIMPLEMENTED, "server reflection is disabled"),
                    )
                scope = "metadata"
        store = self.store
        store.maybe_reload()
        handler = self._handlers.get(method)
        if handler is None:  # the service's handler of a method never changes: look it up once
            handler = await continuation(handler_call_details)
            if handler is not None:
                self._handlers[method] = handler
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is not None:
            denial = self._decide(store.lookup(token) if token else None, scope, method, "token")
            return handler if denial is None else _denied(handler, denial)
        if store.grants.subjects or store.grants.sans:
            return _checked(handler, lambda context: self._check_certificate(context, scope, method))
        return _denied(handler, self._refuse("missing", method, grpc.StatusCode.UNAUTHENTICATED, _MISSING))

    def _decide(self, grant: Grant | None, scope: str | None, method: str, kind: str) -> Denial | None:
        if grant is None:
            return self._refuse(f"unknown_{kind}", method, grpc.StatusCode.UNAUTHENTICATED, f"unknown {kind}")
        if scope is None or scope in grant.scopes:
            return None
        short = method.rsplit("/", 1)[-1]
        message = f"credential {grant.name!r} lacks scope {scope!r} needed by {short}"
        return self._refuse("scope", method, grpc.StatusCode.PERMISSION_DENIED, message)

    def _check_certificate(self, context: Any, scope: str | None, method: str) -> Denial | None:
        auth = context.auth_context()
        names = auth.get("x509_common_name") or []
        subject = names[0].decode(errors="replace") if names else None
        sans = [s.decode(errors="replace") for s in auth.get("x509_subject_alternative_name") or []]
        if subject is None and not sans:
            return self._refuse("missing", method, grpc.StatusCode.UNAUTHENTICATED, _MISSING)
        return self._decide(self.store.lookup_certificate(subject, sans), scope, method, "certificate")

    def _refuse(self, reason: str, method: str, code: grpc.StatusCode, message: str) -> Denial:
        """Counts a refusal and logs it at most once per ``log_interval`` per reason (never the token)."""
        self.denied[reason] = self.denied.get(reason, 0) + 1
        self._counter.labels(reason).inc()
        now = self.clock()
        if now - self._logged_at.get(reason, -self.log_interval) >= self.log_interval:
            self._logged_at[reason] = now
            log.warning(
                "refused %s: %s [%d %s refusals so far]", method, message, self.denied[reason], reason
            )
        return code, message


def _denied(handler: Handler | None, denial: Denial) -> Handler:
    """A handler of the same shape as ``handler`` that only aborts with ``denial``."""
    code, message = denial

    async def unary(request: Any, context: Any) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # pragma: no cover - abort raises

    if handler is None or not handler.response_streaming:
        if handler is not None and handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(unary)
        return grpc.unary_unary_rpc_method_handler(unary)
    if handler.request_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming)
    return grpc.unary_stream_rpc_method_handler(streaming)


def _checked(handler: Handler | None, check: Callable[[Any], Denial | None]) -> Handler | None:
    """``handler`` with ``check(context)`` run first; a denial aborts the call."""
    if handler is None:
        return None
    serde = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if not handler.response_streaming:
        inner_unary: Any = handler.stream_unary if handler.request_streaming else handler.unary_unary

        async def unary(request: Any, context: Any) -> Any:
            denial = check(context)
            if denial is not None:
                await context.abort(*denial)
            return await inner_unary(request, context)

        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(unary, **serde)
        return grpc.unary_unary_rpc_method_handler(unary, **serde)
    inner_stream: Any = handler.stream_stream if handler.request_streaming else handler.unary_stream

    async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
        denial = check(context)
        if denial is not None:
            await context.abort(*denial)
        result = inner_stream(request, context)
        if inspect.isasyncgen(result):
            async for response in result:
                yield response
        else:
            await result

    if handler.request_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **serde)
    return grpc.unary_stream_rpc_method_handler(streaming, **serde)
