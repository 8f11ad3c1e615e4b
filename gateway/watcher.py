"""Registry watcher: polls the registry directory and reloads what changed (DESIGN.md §4).

Contracts:
- Every ``interval`` seconds it scans the registry (directory listings, READY markers, ``pin``,
  ``model.toml``) and stats the key files of the versions each policy selects; nothing large is read.
- A model whose fingerprint changed (new or removed READY versions, pin, config, or a selected version's
  files) is handed to :meth:`ModelTable.load_model`, which keeps serving while it loads. A model that left
  the registry is drained and forgotten. A model unloaded through RepositoryModelUnload stays unloaded
  until an explicit RepositoryModelLoad.
- A failed poll is logged and retried at the next interval; it never stops the watcher.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from gateway.background import cancel_and_wait
from gateway.errors import GatewayError
from gateway.loader import version_stamp
from gateway.models import ModelTable
from registry.layout import ModelInfo, scan_registry, select_versions, version_info

log = logging.getLogger(__name__)


def fingerprints(root: Path) -> tuple[dict[str, ModelInfo], dict[str, Any]]:
    """Blocking: the scan and, per model, a value that changes whenever a reload could be needed."""
    infos = scan_registry(root)
    prints: dict[str, Any] = {}
    for name, info in infos.items():
        selected = select_versions(info) if info.config_error is None else ()
        stamps = tuple(version_stamp(version_info(root, name, v)) for v in selected)
        prints[name] = (info, stamps)
    return infos, prints


class RegistryWatcher:
    """Background task owned by the server: ``start()`` it, ``await stop()`` it."""

    def __init__(self, table: ModelTable, interval: float) -> None:
        if interval <= 0:
            raise ValueError("poll interval must be positive")
        self.table = table
        self.interval = interval
        self._seen: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="registry-watcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def poll_once(self) -> None:
        """One scan; reloads changed models and forgets removed ones."""
        infos, prints = await asyncio.to_thread(fingerprints, self.table.registry)
        for name in sorted(infos):
            if self.table.is_unloaded(name) or self._seen.get(name) == prints[name]:
                continue
            try:
                await self.table.load_model(name, infos[name])
            except GatewayError as exc:
                log.error("registry watcher: %s", exc)
            self._seen[name] = prints[name]
        for name in sorted(set(self._seen) - set(infos)):
            log.info("registry watcher: model %s left the registry; unloading it", name)
            await self.table.remove_model(name)
            del self._seen[name]

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll_once()
            except Exception:
                log.exception("registry watcher: poll failed; retrying in %.1f s", self.interval)
