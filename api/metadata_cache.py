"""Input specs from ``GetModelMetadata``, cached per model version with a TTL.

A version's signature never changes, so ``(model, version)`` entries live ``ttl_s``. Which version
"latest" or a label points at does change (new versions, promotions), so that resolution is kept
only ``resolve_ttl_s`` and is dropped at once by :meth:`invalidate` (promotion) or when the
model server no longer serves the version it named, or is loading it again. A lookup that was in
flight when :meth:`invalidate` ran may carry the old answer: its caller uses it (a version that is
gone is retried, api/classification.py), but it is not stored (a generation count per model).

"latest" is the newest *available* version. While a just-published version loads, that can be an
older one (a labelled version that stays loaded); such a resolution, older than the newest version
folder in the repository, is kept only ``catch_up_s``, so "latest" moves to the new version as soon
as the model server has loaded it, instead of ``resolve_ttl_s`` later. And once the model's status
route (``GET /v1/models/{model}``, what `fdl train` polls until it reports a version served) has
seen a version AVAILABLE, :meth:`served` drops a "latest" that names an older one and keeps a
lookup in flight from storing one: the next request by name answers from that version or newer.

Each version's spec carries the preprocessing profile its ``metadata.json`` records, read from the
repository (in a worker thread, bounded: api/repository.py) when its version entry is filled: once
per ``ttl_s`` per version, plus once per lookup that misses at the same time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

from api.input_spec import InputSpec
from api.repository import recorded_profile
from api.serving_client import ServingClient
from fdl.repository_reads import list_versions

_Key = tuple[str, int | None, str | None]
RESOLVE_TTL_S = 2.0  # how long which version "latest" or a label names is kept


class MetadataCache:
    def __init__(
        self,
        client: ServingClient,
        ttl_s: float,
        resolve_ttl_s: float = RESOLVE_TTL_S,
        model_dir: Path | None = None,
        catch_up_s: float = 0.25,
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.resolve_ttl_s = min(resolve_ttl_s, ttl_s)
        self.model_dir = model_dir
        self.catch_up_s = min(catch_up_s, self.resolve_ttl_s)
        self._entries: dict[_Key, tuple[float, InputSpec]] = {}
        self._generations: dict[str, int] = {}  # of each model: how many invalidations so far
        self._served: dict[str, int] = {}  # of each model: the newest version seen AVAILABLE

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
        generation = self._generations.get(model, 0)
        if version is None:
            spec = await self.client.input_spec(model, None, label, request_id)
            # The version's entry, when cached, already holds its recorded profile.
            spec = self._lookup((model, spec.version, None)) or await self._with_profile(
                spec, model
            )
            # In a worker thread (it lists the model's folder), and before the generation check:
            # no await between that check and storing the entries.
            behind = (
                label is None
                and self.model_dir is not None
                and await asyncio.to_thread(self._behind, model, spec.version)
            )
            if self._generations.get(model, 0) != generation:
                return spec  # asked before a change of labels: maybe the old version
            now = time.monotonic()
            ttl = self.catch_up_s if behind else self.resolve_ttl_s
            self._entries[key] = (now + ttl, spec)
            self._entries[(model, spec.version, None)] = (now + self.ttl_s, spec)
            return spec
        spec = await self.client.input_spec(model, version, None, request_id)
        spec = await self._with_profile(spec, model)
        if self._generations.get(model, 0) == generation:
            self._entries[key] = (time.monotonic() + self.ttl_s, spec)
        return spec

    async def _with_profile(self, spec: InputSpec, model: str) -> InputSpec:
        """``spec`` with the profile its version's metadata.json records (None: none, or no
        repository to read it from: the gateway then chooses by channel count)."""
        if self.model_dir is None:
            return spec
        profile = await asyncio.to_thread(recorded_profile, self.model_dir, model, spec.version)
        return dataclasses.replace(spec, profile=profile)

    def _behind(self, model: str, version: int) -> bool:
        """Whether the repository holds a newer version than the one "latest" resolved to (a
        listing of the model's folder: call it from a worker thread)."""
        if self.model_dir is None:
            return False
        try:
            versions = list_versions(self.model_dir / model)
        except OSError:
            return False
        return bool(versions) and versions[-1] > version

    def served(self, model: str, version: int) -> None:
        """The model server reports ``version`` of ``model`` AVAILABLE (the model's status route
        read it). A cached "latest" that names an older version is dropped; when ``version`` is
        newer than any seen so far, a "latest" lookup in flight now, maybe answered before the
        server had loaded it, stores nothing either."""
        key: _Key = (model, None, None)
        cached = self._entries.get(key)
        stale = cached is not None and cached[1].version < version
        if not stale and version <= self._served.get(model, 0):
            return
        self._served[model] = max(version, self._served.get(model, 0))
        self._generations[model] = self._generations.get(model, 0) + 1
        self._entries.pop(key, None)

    def invalidate(self, model: str, version: int | None = None) -> None:
        """Drop what ``latest`` and the labels of ``model`` name, and the entry of ``version``
        (None: of every version); lookups in flight now store nothing."""
        self._generations[model] = self._generations.get(model, 0) + 1
        for key in [k for k in self._entries if k[0] == model]:
            if version is None or key[1] == version or key[1] is None:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
