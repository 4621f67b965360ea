"""``models.config`` for what a model repository holds now
(:meth:`fdl.repository.Repository.render`), a model whose folder cannot be listed keeping its entry
of the current config."""

from __future__ import annotations

import logging
from pathlib import Path

from fdl.model_config import check, render
from fdl.repository_files import Labels, kept_entry, with_entries
from fdl.repository_reads import config_entries, discover_models, servable_labels, versions_of

# The repository's logger (fdl/repository.py), whose lines these were before they moved here.
log = logging.getLogger("fdl.repository")


def render_repository(
    model_dir: Path,
    root: str,
    labels: Labels,
    config_path: Path,
    keep: dict[str, set[int]] | None = None,
) -> str:
    """The config for what ``model_dir`` holds now, with ``labels``, its base paths under ``root``.

    A model whose folder cannot be listed (its permissions, an I/O error) keeps its entry of
    the current config (``config_path``), served versions included, with a warning: a transient
    problem of one model never unloads it, nor stops the others' publishes and promotions.
    Its labels are still those of ``labels``, so the two files never disagree (a label
    removed meanwhile goes, one a rollback puts back comes back: :func:`kept_entry`). One
    the config has no entry for yet is rendered from its labels, its versions unknown.
    """
    models, unreadable = versions_of(model_dir, discover_models(model_dir))
    entries = config_entries(config_path) if unreadable else {}
    for name, error in unreadable.items():
        if name not in entries:  # none yet (a config written before the model came)
            log.warning("%s; rendered from its labels alone", error)
            models[name] = []
    listed = {name: entries[name] for name in unreadable if name not in models}
    servable = servable_labels(labels, {**models, **{name: [] for name in listed}})
    text = render(root, models, servable, keep)
    if not listed:
        return text
    kept = {name: kept_entry(entry, root, servable.get(name, {})) for name, entry in listed.items()}
    for name, entry in kept.items():
        how = "as it is" if entry == listed[name] else "(its base path and labels as now)"
        log.warning("%s; its entry in %s is kept %s", unreadable[name], config_path.name, how)
    text = with_entries(text, kept)
    check(text, {**models, **{name: [] for name in kept}}, servable, root)
    return text
