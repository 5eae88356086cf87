"""tools/check_report.py: overflow found and located, screenshots written, a clear skip without Chromium."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "check_report.py"
spec = importlib.util.spec_from_file_location("check_report", TOOL)
check_report = importlib.util.module_from_spec(spec)
sys.modules.setdefault("check_report", check_report)       # dataclasses look their module up
spec.loader.exec_module(check_report)

NARROW = "<html><head><title>r</title></head><body><h1>report</h1><p>fits</p></body></html>"
WIDE = ("<html><head></head><body><p>fits</p>"
        "<table class='contrib'><tr><td style='min-width:1600px'>ten columns</td></tr></table>"
        "<div style='overflow-x:auto'><pre style='width:1500px'>scrolls in its box</pre></div></body></html>")
browser = check_report.find_chromium()
needs_browser = pytest.mark.skipif(browser is None, reason="no Chromium on this machine")


def test_probe_is_injected_into_a_copy_with_a_base(tmp_path):
    report = tmp_path / "report.html"
    report.write_text(NARROW)
    copy = check_report._probed_copy(report, tmp_path)
    text = copy.read_text()
    assert f'<base href="{tmp_path.resolve().as_uri()}/">' in text
    assert text.index("<base") < text.index("<h1>") < text.index(check_report.RESULT_ID) < text.index("</body>")
    assert report.read_text() == NARROW                              # the report itself is untouched


def test_no_chromium_skips_with_a_message(tmp_path, monkeypatch, capsys):
    report = tmp_path / "report.html"
    report.write_text(NARROW)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CHROMIUM", raising=False)
    assert check_report.main([str(report)]) == check_report.EXIT_OK
    assert "SKIPPED: no Chromium found" in capsys.readouterr().out
    assert check_report.main([str(report), "--require-browser"]) == check_report.EXIT_NO_BROWSER


def test_bad_arguments_say_what_to_fix(tmp_path, capsys):
    assert check_report.main([str(tmp_path / "missing.html")]) == check_report.EXIT_USAGE
    assert "is not a file" in capsys.readouterr().err
    report = tmp_path / "report.html"
    report.write_text(NARROW)
    assert check_report.main([str(report), "--widths", "50"]) == check_report.EXIT_USAGE


@needs_browser
def test_overflowing_element_is_found_and_named(tmp_path, capsys):
    report = tmp_path / "report.html"
    report.write_text(WIDE)
    status = check_report.main([str(report), "--widths", "1000", "--shots", str(tmp_path / "shots"),
                                "--slice-height", "300"])
    out = capsys.readouterr().out
    assert status == check_report.EXIT_OVERFLOW
    assert "1000 px: OVERFLOW" in out and "table.contrib" in out and "ten columns" in out
    assert "scrolls inside its box" in out and "pre" in out
    shot = tmp_path / "shots" / "report_1000.png"
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "shots" / "report_1000_01.png").exists()


@needs_browser
def test_fitting_page_passes_and_strict_fails_scrolling_boxes(tmp_path):
    report = tmp_path / "report.html"
    report.write_text(NARROW)
    result, = check_report.check(report, (1280,), shots=None, browser=browser)
    assert result.passed and result.viewport == 1280 and result.overflow == 0 and not result.elements
    report.write_text("<html><body><div style='overflow-x:auto;width:400px'>"
                      "<pre style='width:900px'>wide code</pre></div></body></html>")
    result, = check_report.check(report, (1280,), shots=None, browser=browser)
    assert result.passed and result.scrolling[0]["content"] >= 900 and result.scrolling[0]["box"] == 400
    result, = check_report.check(report, (1280,), shots=None, browser=browser, strict=True)
    assert not result.passed
    # a table past the viewport inside a scrolling wrapper: fails, unless scrolling is allowed
    report.write_text("<html><body><div class='wrap' style='overflow-x:auto'>"
                      "<table><tr><td style='min-width:1500px'>ten columns</td></tr></table></div></body></html>")
    result, = check_report.check(report, (1280,), shots=None, browser=browser)
    assert result.overflow == 0 and not result.passed and result.elements[0]["scroller"] == "body > div.wrap"
    result, = check_report.check(report, (1280,), shots=None, browser=browser, allow_scroll=True)
    assert result.passed
