"""The gateway's API keys as its settings give them: read from the key files, refused when weak.

FDL_API_KEYS / FDL_CLASSIFY_KEYS (comma-separated) plus FDL_API_KEYS_FILE /
FDL_CLASSIFY_KEYS_FILE (one key a line); api/settings.py's GatewaySettings calls these.
"""

from __future__ import annotations

from pathlib import Path

from fdl.settings import WeakKeyError, check_keys, split_keys


def read_key_file(path: Path | None, name: str = "key file") -> list[str]:
    """The keys of a key file, one a line; ``name`` (its setting) names it in an error."""
    if not (path and path.is_file()):
        return []
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM is no key
    except UnicodeDecodeError as error:  # its message would quote a byte of the secret
        raise WeakKeyError(
            f"{name} ({path}): not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    except OSError as error:
        raise WeakKeyError(f"{name} ({path}): cannot be read ({error.strerror})") from None
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def read_keys(inline: str | None, path: Path | None) -> list[str]:
    """Comma-separated keys plus one key per line of a file (``#`` comments allowed)."""
    return split_keys(inline) + read_key_file(path)


def check_gateway_keys(
    api_keys: str | None,
    api_keys_file: Path | None,
    classify_keys: str | None,
    classify_keys_file: Path | None,
) -> None:
    """Raise :class:`fdl.settings.WeakKeyError` naming each setting with a placeholder or short
    key, or a key file that is named but is not a file holding a key."""
    check_keys(
        [
            ("FDL_API_KEYS", split_keys(api_keys)),
            (
                f"FDL_API_KEYS_FILE ({api_keys_file})",
                read_key_file(api_keys_file, "FDL_API_KEYS_FILE"),
            ),
            ("FDL_CLASSIFY_KEYS", split_keys(classify_keys)),
            (
                f"FDL_CLASSIFY_KEYS_FILE ({classify_keys_file})",
                read_key_file(classify_keys_file, "FDL_CLASSIFY_KEYS_FILE"),
            ),
        ],
        " (on Kubernetes: the Secret fdl-api-keys, docs/deploy.md)",
    )
    # A key file that is named but missing or empty (a typo, a Secret not mounted, a file
    # never filled) would otherwise start a gateway with fewer keys than the operator meant.
    missing = [
        f"{name} ({path})"
        for name, path in (
            ("FDL_API_KEYS_FILE", api_keys_file),
            ("FDL_CLASSIFY_KEYS_FILE", classify_keys_file),
        )
        if path is not None and not (path.is_file() and read_key_file(path))
    ]
    if missing:
        raise WeakKeyError(
            f"refusing to start: {' and '.join(missing)} is not a file holding a key; mount "
            "the key file there or unset the setting"
        )
