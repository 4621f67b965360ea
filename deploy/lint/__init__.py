"""Checks of the deployment files that need no Docker engine nor cluster.

Run them all with ``python -m deploy.lint`` (or ``make lint-deploy``). Every check takes the
repository root, so the test suite can run it on a copy with one file broken and see it fail.
"""
