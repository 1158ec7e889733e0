"""The three distributions carry the licence they declare, with its text, and the sample
data's own terms travel beside it (NOTICE)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("distribution", ["geopera-kernel", "geopera-api", "geopera-sdk"])
def test_each_distribution_declares_apache_2_and_ships_its_text(distribution):
    metadata = importlib.metadata.metadata(distribution)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "LICENSE" in metadata.get_all("License-File")
    assert "Typing :: Typed" in metadata.get_all("Classifier")
    shipped = [f for f in importlib.metadata.files(distribution) if f.name == "LICENSE"]
    assert shipped and "Apache License" in shipped[0].read_text() and "Version 2.0" in shipped[0].read_text()


def test_the_licence_texts_are_one_text_and_the_notice_names_the_data_terms():
    text = (REPO / "LICENSE").read_text()
    assert (REPO / "generated" / "LICENSE").read_text() == text
    assert (REPO / "clients" / "python" / "LICENSE").read_text() == text
    notice = (REPO / "NOTICE").read_text()
    assert "Copernicus Sentinel data" in notice
    assert (REPO / "data" / "s2_slovenia" / "LICENSE.eo-learn").exists()
    assert "NOTICE" in importlib.metadata.metadata("geopera-kernel").get_all("License-File")
