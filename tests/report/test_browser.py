"""The headless-browser check on small pages (real Chromium; skipped without it)."""

from __future__ import annotations

import pytest

from mechvalue.core.errors import MechvalueError
from mechvalue.report import browser

needs_chromium = pytest.mark.skipif(browser.find_chromium() is None,
                                    reason="no Chromium on this machine (apt-get install chromium)")


@needs_chromium
def test_browser_catches_planted_console_error(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body>hi<script>console.error("planted-x")</script>'
                   '<script>throw new Error("planted-boom")</script></body></html>')
    errors = browser.check_in_browser(bad)
    assert any("console.error" in e and "planted-x" in e for e in errors), errors
    assert any("uncaught exception" in e and "planted-boom" in e for e in errors), errors
    clean = tmp_path / "clean.html"
    clean.write_text("<html><body><p>fine</p><script>console.log('ok')</script></body></html>")
    assert browser.check_in_browser(clean) == []


@needs_chromium
def test_browser_flags_external_resources(tmp_path):
    page = tmp_path / "ext.html"
    page.write_text('<html><body><img src="https://example.invalid/x.png"></body></html>')
    errors = browser.check_in_browser(page)
    assert any(e.startswith("external request: https://example.invalid/x.png") for e in errors), errors


def test_browser_check_errors_clearly(tmp_path):
    with pytest.raises(MechvalueError, match="does not exist"):
        browser.check_in_browser(tmp_path / "missing.html")
    (tmp_path / "p.html").write_text("<p>x</p>")
    with pytest.raises(MechvalueError):
        browser.check_in_browser(tmp_path / "p.html", chromium="/bin/false", timeout=10)


def test_event_error_classifies_devtools_events():
    ev = browser._event_error
    assert ev({"method": "Runtime.consoleAPICalled", "params": {"type": "log", "args": []}}) is None
    assert ev({"method": "Network.requestWillBeSent", "params": {"request": {"url": "data:x"}}}) is None
    assert ev({"method": "Network.requestWillBeSent",
               "params": {"request": {"url": "http://h/x"}}}) == "external request: http://h/x"
    assert ev({"method": "Log.entryAdded", "params": {"entry": {"level": "error", "text": "boom", "url": "u"}}}) \
        == "log error: boom u"


def test_find_chromium_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MECHVALUE_CHROMIUM", str(tmp_path / "absent"))
    assert browser.find_chromium() is None
    exe = tmp_path / "chrome"
    exe.write_text("")
    monkeypatch.setenv("MECHVALUE_CHROMIUM", str(exe))
    assert browser.find_chromium() == str(exe)


@needs_chromium
def test_section_screenshot_clips_from_its_heading_to_the_next(tmp_path):
    import struct

    page = tmp_path / "s.html"
    page.write_text('<html><body style="margin:0"><h2 id="summary" style="margin:0;height:100px">S</h2>'
                    '<p style="margin:0;height:200px">text</p><h2 id="run" style="margin:0;height:900px">R</h2>'
                    '</body></html>')
    full, part = tmp_path / "full.png", tmp_path / "part.png"
    assert browser.check_in_browser(page, full) == []
    assert browser.check_in_browser(page, part, section="summary") == []
    height = lambda p: struct.unpack(">II", p.read_bytes()[16:24])[1]  # noqa: E731 (the PNG IHDR)
    assert height(part) == 300 and height(full) >= 1200
    with pytest.raises(MechvalueError, match="no section with id 'nope'"):
        browser.check_in_browser(page, part, section="nope")
