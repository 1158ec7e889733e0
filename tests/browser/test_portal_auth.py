"""Tokens and scopes in the portal: an unknown token is refused at sign-in, a token
revoked mid-session sends the user back to sign in with a message, a token without a
scope gets a message naming it; every control is labelled and reachable by keyboard."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.keys import Keys

# Every control the pages draw has a name a screen reader reads: a <label for>, an
# aria-label(ledby), or its text.
UNNAMED_CONTROLS = """
return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter(el => !el.hidden && el.offsetParent !== null)
  .filter(el => !(el.id && document.querySelector(`label[for="${el.id}"]`))
             && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby')
             && !el.textContent.trim())
  .map(el => el.outerHTML.slice(0, 120));
"""


def test_an_unknown_token_is_refused_at_sign_in(portal):
    portal.allow_console(r"status of 401")
    portal.sign_in("gpk_not-a-real-token", expect="")
    error = portal.visible("#signin-error")
    assert "not valid" in error.text and "expired" in error.text
    assert portal.session_token() is None
    assert portal.js("return location.hash") == "#/signin"


def test_a_token_revoked_during_the_session_sends_the_user_back_to_sign_in(portal, portal_server):
    portal.allow_console(r"status of 401")
    token_id, token = portal_server.make_token(["catalog:read", "credits:read"])
    portal.sign_in(token)
    portal_server.revoke(token_id)
    portal.go("#/credits")
    portal.wait(lambda: portal.js("return location.hash") == "#/signin", what="the way back to sign-in")
    portal.wait_ready("signin")
    flash = portal.visible("#signin-flash").text
    assert "expired" in flash and "Sign in again" in flash
    assert portal.session_token() is None
    portal.screenshot("expired")


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_a_token_without_catalog_read_is_told_which_scope_it_lacks(portal, portal_server, viewport):
    portal.allow_console(r"status of 403")
    _, token = portal_server.make_token(["credits:read"])
    portal.sign_in(token)  # auth.whoami needs no scope; the catalog needs catalog:read
    message = portal.visible("#banner-text").text
    assert "Missing scope" in message and '"catalog:read"' in message and "items.list" in message
    in_page = portal.find(".page-catalog .page-error")
    assert in_page.get_attribute("data-reason") == "MISSING_SCOPE" and '"catalog:read"' in in_page.text
    portal.screenshot("missing-scope")
    # What the token may do still works.
    portal.go("#/credits")
    portal.wait_ready("credits")
    assert portal.find("#banner").get_attribute("hidden") is not None
    assert portal.find("#balance-available").get_attribute("data-value")


def test_the_pages_are_labelled_and_reachable_by_keyboard(portal, portal_server):
    portal.open("#/signin")
    portal.wait_ready("signin")
    assert portal.js(UNNAMED_CONTROLS) == []
    # The token field has the focus; Enter submits.
    assert portal.js("return document.activeElement.id") == "token"
    portal.driver.switch_to.active_element.send_keys(portal_server.token, Keys.ENTER)
    portal.wait_ready("catalog")
    portal.wait(lambda: portal.find_all("#catalog-list a"), what="the item list")
    assert portal.js(UNNAMED_CONTROLS) == []

    # From the first stop (the skip link) on, Tab by Tab.
    portal.js("document.getElementById('skip-link').focus()")
    reached = []
    for _ in range(80):
        focused = portal.driver.switch_to.active_element
        reached.append(focused.get_attribute("id") or focused.get_attribute("href") or focused.tag_name)
        if "#/items/" in (focused.get_attribute("href") or ""):
            break
        focused.send_keys(Keys.TAB)
    for wanted in ("project-picker", "sign-out", "filter-collection", "filter-from", "filter-apply", "catalog-map"):
        assert wanted in reached, (wanted, reached)
    assert any(str(r).endswith("#/credits") for r in reached), reached
    # Enter on an item's entry opens its page.
    portal.driver.switch_to.active_element.send_keys(Keys.ENTER)
    portal.wait_ready("item")
    portal.wait(lambda: portal.find_all("#item-lineage svg"), what="the lineage")
    assert portal.js(UNNAMED_CONTROLS) == []
    portal.go("#/credits")
    portal.wait_ready("credits")
    assert portal.js(UNNAMED_CONTROLS) == []
