"""A headless Chromium for the dashboard tests, driven over the W3C WebDriver protocol."""
