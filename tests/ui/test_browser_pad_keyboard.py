"""The Classify page's drawing pad without a mouse, in a real headless Chromium.

Before, the pad was a canvas that Tab passed over (``role="img"``, not focusable): a digit could
be drawn only with a pointer. It is now in the tab order, with an accessible name and the keys
it takes as its description (visible beside it): the arrow keys move the pen, Space puts it down
and lifts it (lifting classifies, as lifting a pointer does), Delete clears. The Classify page's
other controls stay reachable by Tab too.

A lone gateway (no model server): the drawing's classification is asked for, with the key; what
the gateway answers without a model server does not matter here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.gateway import ADMIN_KEY, Gateway

pytestmark = [pytest.mark.browser]

# The ink on the pad: how many pixels are lit, and the rows and columns they span.
INK = """() => {
  const pad = document.getElementById("pad");
  const { data } = pad.getContext("2d").getImageData(0, 0, pad.width, pad.height);
  let lit = 0, top = pad.height, bottom = -1, left = pad.width, right = -1;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] < 128) continue;
    const x = (i / 4) % pad.width, y = Math.floor(i / 4 / pad.width);
    lit += 1;
    top = Math.min(top, y); bottom = Math.max(bottom, y);
    left = Math.min(left, x); right = Math.max(right, x);
  }
  return { lit, height: bottom - top + 1, width: right - left + 1 };
}"""


@pytest.fixture
def gateway(lone_gateway: Callable[..., Any], redis_url: str) -> Iterator[Gateway]:
    with lone_gateway("gateway-pad-keyboard", redis_url) as running:
        yield running


def focused(page: Any) -> str:
    return str(page.evaluate("() => document.activeElement.id"))


def test_the_pad_is_reached_and_drawn_on_with_the_keyboard(page: Any, gateway: Gateway) -> None:
    from playwright.sync_api import expect

    # The key in the tab: the gateway's 401 to a classification without one opens the key dialog.
    page.add_init_script(f"sessionStorage.setItem('fdl.adminKey', {json.dumps(ADMIN_KEY)})")
    page.goto(f"{gateway.url}/ui/")
    page.fill("#digit-model", "mnist_logreg")
    # Every control of the Classify page, in order, by Tab alone.
    order = []
    for _ in range(6):
        page.keyboard.press("Tab")
        order.append(focused(page))
    assert order == [
        "digit-version",
        "pad",
        "pad-clear",
        "photo-model",
        "photo-version",
        "photo-input",
    ]
    pad = page.get_by_role("application", name="Drawing pad")
    assert pad.get_attribute("id") == "pad"
    expect(pad).to_have_accessible_description(re.compile("arrow keys move the pen"))
    assert page.locator("#pad-keys").is_visible()  # said on the page too, not to readers only
    pad.focus()
    assert page.evaluate(INK)["lit"] == 0
    # A "1": the pen down, ten steps down, lifted.
    page.keyboard.press("Space")
    for _ in range(10):
        page.keyboard.press("ArrowDown")
    with page.expect_request(
        lambda request: request.method == "POST" and ":classify" in request.url
    ) as sent:
        page.keyboard.press("Space")
    assert sent.value.url.endswith("/v1/models/mnist_logreg:classify")
    assert "multipart/form-data" in sent.value.headers["content-type"]  # the drawing, as a PNG
    ink = page.evaluate(INK)
    assert ink["height"] >= 120 and ink["width"] <= 40, ink
    assert page.locator("#pad-hint").is_hidden()
    # Moving with the pen up draws nothing; Delete clears.
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    assert page.evaluate(INK) == ink
    page.keyboard.press("Delete")
    assert page.evaluate(INK)["lit"] == 0
    assert page.locator("#pad-hint").is_visible()
    assert focused(page) == "pad"
