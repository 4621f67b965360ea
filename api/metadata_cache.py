"""Input specs from ``GetModelMetadata``, cached per model version with a TTL.

A version's signature never changes, so ``(model, version)`` entries live ``ttl_s``. Which version
"latest" or a label points at does change (new versions, promotions), so that resolution is kept
only ``resolve_ttl_s`` and is dropped at once by :meth:`invalidate` (promotion) or when the
model server no longer serves the version it named.

"latest" is the newest *available* version. While a just-published version loads, that can be an
older one (a labelled version that stays loaded); such a resolution, older than the newest version
folder in the repository, is kept only ``catch_up_s``, so "latest" moves to the new version as soon
as the model server has loaded it, instead of ``resolve_ttl_s`` later.
"""

from __future__ import annotations

import time
from pathlib import Path

from api.input_spec import InputSpec
from api.serving_client import ServingClient
from fdl.repository_reads import list_versions

_Key = tuple[str, int | None, str | None]


class MetadataCache:
    def __init__(
        self,
        client: ServingClient,
        ttl_s: float,
        resolve_ttl_s: float = 2.0,
        model_dir: Path | None = None,
        catch_up_s: float = 0.25,
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.resolve_ttl_s = min(resolve_ttl_s, ttl_s)
        self.model_dir = model_dir
        self.catch_up_s = min(catch_up_s, self.resolve_ttl_s)
        self._entries: dict[_Key, tuple[float, InputSpec]] = {}

    def _lookup(self, key: _Key) -> InputSpec | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, spec = entry
        if time.monotonic() >= expires:
            del self._entries[key]
            return None
        return spec

    async def get(
        self,
        model: str,
        version: int | None = None,
        label: str | None = None,
        request_id: str | None = None,
    ) -> InputSpec:
        key = (model, version, label)
        cached = self._lookup(key)
        if cached is not None:
            return cached
        if version is None:
            spec = await self.client.input_spec(model, None, label, request_id)
            now = time.monotonic()
            ttl = self.resolve_ttl_s
            if label is None and self._behind(model, spec.version):
                ttl = self.catch_up_s
            self._entries[key] = (now + ttl, spec)
            self._entries[(model, spec.version, None)] = (now + self.ttl_s, spec)
            return spec
        spec = await self.client.input_spec(model, version, None, request_id)
        self._entries[key] = (time.monotonic() + self.ttl_s, spec)
        return spec

    def _behind(self, model: str, version: int) -> bool:
        """Whether the repository holds a newer version than the one "latest" resolved to."""
        if self.model_dir is None:
            return False
        try:
            versions = list_versions(self.model_dir / model)
        except OSError:
            return False
        return bool(versions) and versions[-1] > version

    def invalidate(self, model: str, version: int | None = None) -> None:
        for key in [k for k in self._entries if k[0] == model]:
            if version is None or key[1] == version or key[1] is None:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
