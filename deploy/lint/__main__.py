"""``python -m deploy.lint [--root DIR] [CHECK ...]``: run the deployment checks (1: errors)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from deploy.lint import compose, dockerfile, k8s, probes, serving_config
from deploy.lint.common import REPO_ROOT, Errors

CHECKS: dict[str, Callable[[Path], Errors]] = {
    "dockerfile": dockerfile.check,
    "compose": compose.check,
    "serving-config": serving_config.check,
    "k8s": k8s.check,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.lint", description=__doc__)
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    parser.add_argument(
        "checks", nargs="*", metavar="CHECK", help=f"any of {', '.join(CHECKS)} (default: all)"
    )
    args = parser.parse_args(argv)
    unknown = [c for c in args.checks if c not in CHECKS]
    if unknown:
        parser.error(f"unknown check {unknown[0]!r}; choose from {', '.join(CHECKS)}")
    failed = False
    for name in args.checks or list(CHECKS):
        errors = CHECKS[name](args.root)
        if errors:
            failed = True
            print(f"FAIL {name}")
            for error in errors:
                print("  " + error.replace("\n", "\n    "))
        else:
            print(f"ok   {name}")
    for note in probes.notes():
        print(f"note: {note}")
    if not k8s.kustomize_available():
        print(
            "note: kubectl not on PATH: kustomize builds not rendered (each manifest file and "
            "kustomization was still checked)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
