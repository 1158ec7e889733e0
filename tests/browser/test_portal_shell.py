"""The portal's shell: served at the HTTP root with its security headers, sign in and
out, the project picker, and no console error on the way."""

from __future__ import annotations

import urllib.request

import pytest


def test_the_root_serves_the_portal_with_a_strict_content_security_policy(portal_server):
    with urllib.request.urlopen(portal_server.url) as response:
        body = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store"
    assert '<script type="module" src="/portal/app.js">' in body
    assert "default-src 'self'" in policy and "img-src 'self' data: blob:" in policy
    with urllib.request.urlopen(portal_server.url + "portal/app.js") as response:
        assert response.headers["Content-Type"].startswith("text/javascript")


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_sign_in_shows_the_catalog_and_sign_out_clears_the_token(portal, portal_server, viewport):
    portal.open()
    portal.wait_ready("signin")
    portal.screenshot("signin")
    portal.sign_in(portal_server.token)
    assert portal.session_token() == portal_server.token
    assert portal.find("#project-picker").get_attribute("value") == "demo"
    portal.screenshot("catalog")

    portal.find("#sign-out").click()
    portal.wait_ready("signin")
    assert portal.session_token() is None
    assert "signed out" in portal.find("#signin-flash").text
    # A signed-out visitor asking for a page is sent to sign in.
    portal.go("#/credits")
    portal.wait(lambda: portal.js("return location.hash") == "#/signin", what="the sign-in route")
