"""The credits page shows the numbers credits.balance.get and credits.ledger.list answer,
each ledger entry linked to its job."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_the_credits_page_shows_the_balance_and_the_ledger(portal, portal_server, viewport):
    portal.sign_in(portal_server.token)
    portal.go("#/credits")
    portal.wait_ready("credits")
    with portal_server.sdk() as sdk:
        balance = sdk.credits.balance("demo")
        entries = list(sdk.credits.ledger("demo", max_items=50))
    for key in ("available", "held", "captured_total", "granted_total"):
        cell = portal.find(f"#balance-{key}")
        assert int(cell.get_attribute("data-value")) == getattr(balance, key), key
        assert cell.text == f"{getattr(balance, key):,}"
    rows = portal.find_all("#ledger tbody tr")
    assert [r.get_attribute("data-entry-id") for r in rows] == [str(e.id) for e in entries]
    for row, entry in zip(rows, entries, strict=True):
        links = row.find_elements("css selector", "a")
        assert [a.get_attribute("href").split("#", 1)[1] for a in links] == (
            [f"/jobs/{entry.job_id}"] if entry.job_id else []
        )
    portal.screenshot("credits")
