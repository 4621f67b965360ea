"""The classify version picker shows each version's test accuracy, so users pick the good one."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from harness.stack import Served

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_version_picker_shows_each_versions_test_accuracy(served: Served, page: Any) -> None:
    url = served.stack.url
    info = httpx.get(f"{url}/v1/models/{served.model}", timeout=10).json()
    (version,) = [v for v in info["versions"] if v["version"] == served.version]
    accuracy = version["metrics"]["test_accuracy"]
    page.goto(f"{url}/ui/")
    # Whichever digit model the page opens with (the package's other tests serve several).
    page.wait_for_function("() => document.getElementById('digit-model').value !== ''")
    page.fill("#digit-model", served.model)
    option = page.locator(f"#digit-version option[value='v:{served.version}']")
    option.wait_for(state="attached")
    assert option.inner_text() == f"v{served.version} · test {accuracy * 100:.1f}%"
