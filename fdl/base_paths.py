"""The rule for a model's base path that the model server and the writers of ``models.config``
share: TF Serving refuses a relative one (``server_core.cc``, ``ValidateModelConfigList``).

It lives here, with no imports of ours, so that the model server takes it without the rest of
:mod:`fdl.model_config`.
"""

from __future__ import annotations

import re

# tsl's ParseURI: a scheme is a letter, then at least one letter, digit or dot, then "://".
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9.]+://")


def uri_is_relative_path(uri: str) -> bool:
    """``UriIsRelativePath``: no scheme and a path not starting with ``/`` (so ``""``,
    ``models/m`` and ``./m`` are relative; ``/m`` and ``s3://bucket/m`` are not)."""
    return _SCHEME.match(uri) is None and not uri.startswith("/")
