"""Browser tests of the portal (Selenium + chromium); see conftest.py."""
