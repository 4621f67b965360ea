"""Throwaway TLS material for tests, made with the ``openssl`` command-line tool."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)


def ssl_config(
    path: Path, pki: Path, client_verify: bool = False, key: str = "server", **pem: str
) -> Path:
    """An ascii SSLConfig; ``pem`` replaces a field's PEM text, None leaves the field out."""
    files = {"server_key": f"{key}.key", "server_cert": "server.pem", "custom_ca": "ca.pem"}
    texts = {field: (pki / name).read_text() for field, name in files.items()} | pem
    lines = [f"{field}: {json.dumps(text)}" for field, text in texts.items() if text is not None]
    path.write_text("\n".join([*lines, f"client_verify: {str(client_verify).lower()}", ""]))
    return path


def make_pki(folder: Path) -> Path:
    """A CA, a server certificate for localhost and 127.0.0.1, a client certificate."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(folder, "req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=fdl-test-ca")  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (folder / f"{name}.ext").write_text(ext + "\n")
        openssl(folder, "req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")  # fmt: skip
        openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem")  # fmt: skip
    return folder
