"""The model control plane: who decides which versions serve (``--model-control poll|explicit|none``).

Contracts:
- ``poll`` (default): the registry watcher loads, swaps and removes versions as the directory changes;
  RepositoryModelLoad/Unload are refused (FAILED_PRECONDITION, naming the mode and the flag to change).
- ``explicit``: the watcher does not run; only RepositoryModelLoad/Unload change what serves (and, under
  ``--auth-tokens``, only for a credential with the ``repository`` scope: gateway/auth.py).
- ``none``: models load at start only; the watcher does not run and both RPCs are refused.
- RepositoryModelLoad takes no ``parameters``: a ``config`` override or ``file:`` content is refused with
  INVALID_ARGUMENT (a load reads the registry as it is on disk; publish with ``infergate-registry``), never
  ignored. RepositoryModelUnload accepts only ``unload_dependents`` (there are no ensembles, so no
  dependents).
- :func:`guarded` wraps the servicer at registration, so every other RPC is the servicer's own method:
  nothing is added to the inference path.
"""

from __future__ import annotations

from typing import Any

import grpc

MODES = ("poll", "explicit", "none")
_UNLOAD_PARAMETERS = frozenset({"unload_dependents"})


def watcher_enabled(mode: str) -> bool:
    """Whether the registry watcher runs in ``mode``."""
    return mode == "poll"


class _Guarded:
    """The servicer, with RepositoryModelLoad/Unload checked against the control mode first."""

    def __init__(self, servicer: Any, mode: str) -> None:
        self._servicer = servicer
        self._mode = mode

    def __getattr__(self, name: str) -> Any:
        return getattr(self._servicer, name)

    async def _refuse_mode(self, method: str, context: Any) -> None:
        if self._mode != "explicit":
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{method} is refused: model control mode is '{self._mode}'"
                + (
                    " (the registry watcher decides what serves)"
                    if self._mode == "poll"
                    else " (models load at start only)"
                )
                + "; start the gateway with --model-control explicit to load and unload by RPC",
            )

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
        await self._refuse_mode("RepositoryModelLoad", context)
        if request.parameters:
            names = ", ".join(repr(k) for k in sorted(request.parameters))
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"RepositoryModelLoad parameters are not supported (got {names}): a load reads the "
                "registry as it is; publish new versions or model.toml with infergate-registry",
            )
        return await self._servicer.RepositoryModelLoad(request, context)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
        await self._refuse_mode("RepositoryModelUnload", context)
        unknown = set(request.parameters) - _UNLOAD_PARAMETERS
        if unknown:
            names = ", ".join(repr(k) for k in sorted(unknown))
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"RepositoryModelUnload parameters not supported: {names} (only 'unload_dependents')",
            )
        return await self._servicer.RepositoryModelUnload(request, context)


def guarded(servicer: Any, mode: str) -> Any:
    """``servicer`` as registered under ``mode`` (see the module's contracts)."""
    if mode not in MODES:
        raise ValueError(f"model_control must be one of {', '.join(MODES)}, got {mode!r}")
    return _Guarded(servicer, mode)
