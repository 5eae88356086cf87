#!/usr/bin/env python
"""Check a retcodec report.html in headless Chromium: horizontal overflow and full-page screenshots.

Usage::

    python tools/check_report.py OUT/report.html [--widths 1000 1280 1400] [--shots DIR]

For every width the report is opened in headless Chromium (the system's
``chromium``, found on PATH or given with ``--chromium`` / ``$CHROMIUM``; no
download, no network). A small script injected into a temporary copy of the
page measures, once everything has loaded:

* the page's horizontal overflow: ``scrollWidth - clientWidth`` of the document (px);
* every visible element whose box reaches past the right (or left) edge of the
  viewport, reported by a CSS selector and the start of its text (and the
  sideways-scrolling box it sits in, if any: a reader must scroll to see it);
  only the outermost offender of a subtree is listed; these fail the check
  unless ``--allow-scroll`` is given and they sit in a scrolling box;
* every element whose content is wider than its own box (``scrollWidth >
  clientWidth``: a table scrolled or clipped inside its wrapper), as a note
  (a failure with ``--strict``).

Full-page screenshots are written to ``DIR/report_<width>.png`` (default: a
``report_check`` folder next to the report); ``--slice-height 2000`` also cuts
them into ``report_<width>_01.png``, ... pieces that an image viewer shows legibly. The exit status is 1 when the
page or any element overflows at any width, 0 when all widths pass. When no
Chromium is found the check is skipped with a message and exit status 0 (or 3
with ``--require-browser``). Install one with ``apt-get install -y chromium``.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["find_chromium", "measure", "screenshot", "slice_image", "check", "main"]

#: viewport widths checked by default, px (a laptop, a desktop and a wide window)
WIDTHS = (1000, 1280, 1400)
#: viewport height used while measuring, px
MEASURE_HEIGHT = 900
#: tallest full-page screenshot, px (taller pages are cut there)
MAX_SHOT_HEIGHT = 40000
#: seconds one Chromium call may take
TIMEOUT = 120
#: tolerance for sub-pixel rounding, px
SLACK = 1
EXIT_OK, EXIT_OVERFLOW, EXIT_USAGE, EXIT_NO_BROWSER = 0, 1, 2, 3

#: names of the Chromium executables tried in order on PATH
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

RESULT_ID = "retcodec-check-result"

#: measures after the load event, writes base64 JSON into an attribute of a new <meta>
PROBE = r"""
<script>
window.addEventListener("load", function () {
  function selector(el) {
    var parts = [];
    for (var node = el; node && node.nodeType === 1 && parts.length < 4; node = node.parentElement) {
      var part = node.tagName.toLowerCase();
      if (node.id) { parts.unshift(part + "#" + node.id); break; }
      if (node.classList.length) part += "." + Array.prototype.join.call(node.classList, ".");
      var parent = node.parentElement;
      if (parent) {
        var same = Array.prototype.filter.call(parent.children, function (c) { return c.tagName === node.tagName; });
        if (same.length > 1) part += ":nth-of-type(" + (same.indexOf(node) + 1) + ")";
      }
      parts.unshift(part);
      if (part === "body") break;
    }
    return parts.join(" > ");
  }
  function text(el) {
    var t = (el.getAttribute("alt") || el.getAttribute("src") || el.innerText || el.textContent || "")
      .replace(/\s+/g, " ").trim();
    if (t.indexOf("data:") === 0) t = "(embedded image)";
    return t.slice(0, 70);
  }
  function visible(el, r) {
    if (r.width === 0 || r.height === 0) return false;
    var s = getComputedStyle(el);
    return s.visibility !== "hidden" && s.display !== "none";
  }
  var doc = document.documentElement, vw = doc.clientWidth;
  var out = {viewport: vw, scroll_width: doc.scrollWidth, page_height: doc.scrollHeight,
             overflow: Math.max(0, doc.scrollWidth - vw), elements: [], scrolling: []};
  var reported = [];
  var all = document.body ? document.body.getElementsByTagName("*") : [];
  for (var i = 0; i < all.length; i++) {
    var el = all[i];
    if (el.tagName === "SCRIPT" || el.tagName === "STYLE") continue;
    var r = el.getBoundingClientRect();
    if (!visible(el, r)) continue;
    var beyond = Math.max(r.right - vw, -r.left);
    if (beyond > SLACK && !reported.some(function (p) { return p.contains(el); })) {
      reported.push(el);
      var scroller = null;
      for (var a = el.parentElement; a && a !== document.body; a = a.parentElement) {
        var aox = getComputedStyle(a).overflowX;
        if (aox !== "visible" && a.scrollWidth > a.clientWidth + SLACK) { scroller = a; break; }
      }
      out.elements.push({selector: selector(el), text: text(el), left: Math.round(r.left),
                         right: Math.round(r.right), width: Math.round(r.width),
                         beyond: Math.round(beyond), scroller: scroller ? selector(scroller) : null});
    }
    if (el.scrollWidth > el.clientWidth + SLACK && el.clientWidth > 0) {
      var ox = getComputedStyle(el).overflowX;
      if (ox !== "visible") {
        out.scrolling.push({selector: selector(el), text: text(el), box: el.clientWidth,
                            content: el.scrollWidth, overflow_x: ox});
      }
    }
  }
  var json = JSON.stringify(out);
  var meta = document.createElement("meta");
  meta.id = "RESULT_ID";
  meta.setAttribute("content", btoa(unescape(encodeURIComponent(json))));
  document.head.appendChild(meta);
});
</script>
"""


class CheckError(RuntimeError):
    """Chromium could not open or measure the page."""


@dataclass
class WidthResult:
    """What one viewport width showed: page overflow (px), offending elements, a screenshot."""
    width: int
    viewport: int
    overflow: int
    page_height: int
    elements: list[dict] = field(default_factory=list)
    scrolling: list[dict] = field(default_factory=list)
    screenshot: Path | None = None

    strict: bool = False
    allow_scroll: bool = False

    @property
    def failing(self) -> list[dict]:
        """Elements past the viewport that count (with ``allow_scroll``, not those inside a scrolling box)."""
        return [e for e in self.elements if not (self.allow_scroll and e.get("scroller"))]

    @property
    def passed(self) -> bool:
        """No page overflow, no element past the viewport (and, if strict, nothing scrolling in its box)."""
        return self.overflow <= SLACK and not self.failing and not (self.strict and self.scrolling)


def find_chromium(explicit: str | None = None) -> str | None:
    """Path of a Chromium executable: ``explicit``, ``$CHROMIUM``, or the first candidate on PATH."""
    for name in (explicit, os.environ.get("CHROMIUM"), *CANDIDATES):
        if name:
            path = shutil.which(name)
            if path:
                return path
    return None


def _chromium(browser: str, profile: Path, width: int, height: int, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--no-default-browser-check", "--disable-extensions",
               "--disable-background-networking", "--disable-sync", "--mute-audio",
               f"--user-data-dir={profile}", f"--window-size={width},{height}",
               "--virtual-time-budget=10000", *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired as err:
        raise CheckError(f"Chromium took more than {TIMEOUT} s: {' '.join(command)}") from err


def _probed_copy(report: Path, folder: Path) -> Path:
    """A copy of ``report`` with the probe script and a <base> so relative links still resolve."""
    source = report.read_text(encoding="utf-8", errors="replace")
    base = f'<base href="{report.parent.resolve().as_uri()}/">'
    probe = PROBE.replace("RESULT_ID", RESULT_ID).replace("SLACK", str(SLACK))
    head = re.search(r"<head[^>]*>", source, flags=re.IGNORECASE)
    source = (source[:head.end()] + base + source[head.end():]) if head else base + source
    end = source.lower().rfind("</body>")
    source = source[:end] + probe + source[end:] if end >= 0 else source + probe
    copy = folder / "probed.html"
    copy.write_text(source, encoding="utf-8")
    return copy


def measure(report: str | os.PathLike, width: int, browser: str) -> WidthResult:
    """Open ``report`` at ``width`` px and measure its horizontal overflow."""
    report = Path(report)
    with tempfile.TemporaryDirectory(prefix="check_report_") as tmp:
        copy = _probed_copy(report, Path(tmp))
        done = _chromium(browser, Path(tmp) / "profile", width, MEASURE_HEIGHT, "--dump-dom", copy.as_uri())
    match = re.search(rf'<meta id="{RESULT_ID}" content="([^"]*)"', done.stdout)
    if not match:
        raise CheckError(f"Chromium returned no measurement for {report} at {width} px "
                         f"(exit {done.returncode}): {done.stderr.strip()[-400:]}")
    data = json.loads(base64.b64decode(html.unescape(match.group(1))).decode("utf-8"))
    return WidthResult(width=width, viewport=int(data["viewport"]), overflow=int(data["overflow"]),
                       page_height=int(data["page_height"]), elements=data["elements"],
                       scrolling=data["scrolling"])


def screenshot(report: str | os.PathLike, width: int, height: int, path: str | os.PathLike,
               browser: str) -> Path:
    """A full-page PNG of ``report`` at ``width`` px (``height`` capped at MAX_SHOT_HEIGHT)."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="check_report_") as tmp:
        done = _chromium(browser, Path(tmp) / "profile", width, min(max(height, 200), MAX_SHOT_HEIGHT),
                         f"--screenshot={path}", Path(report).resolve().as_uri())
    if not path.exists():
        raise CheckError(f"Chromium wrote no screenshot {path} (exit {done.returncode}): "
                         f"{done.stderr.strip()[-400:]}")
    return path


def slice_image(path: str | os.PathLike, height: int) -> list[Path]:
    """Cut a tall screenshot into ``<stem>_01.png``, ``<stem>_02.png``, ... of ``height`` px (for viewers)."""
    from PIL import Image                              # pillow comes with matplotlib

    path = Path(path)
    with Image.open(path) as image:
        width, total = image.size
        pieces = []
        for k, top in enumerate(range(0, total, height), start=1):
            piece = path.with_name(f"{path.stem}_{k:02d}.png")
            image.crop((0, top, width, min(top + height, total))).save(piece)
            pieces.append(piece)
    return pieces


def check(report: str | os.PathLike, widths: tuple[int, ...] = WIDTHS, shots: str | os.PathLike | None = None,
          browser: str | None = None, slice_height: int = 0, strict: bool = False,
          allow_scroll: bool = False) -> list[WidthResult]:
    """Measure ``report`` at every width and save a full-page screenshot of each (when ``shots``).

    ``slice_height`` > 0 also cuts every screenshot into pieces that tall;
    ``strict`` also fails a width where content scrolls or is clipped inside its box;
    ``allow_scroll`` passes elements past the viewport that sit in a sideways-scrolling box.
    """
    browser = browser or find_chromium()
    if browser is None:
        raise CheckError("no Chromium found")
    results = []
    for width in widths:
        result = measure(report, width, browser)
        result.strict, result.allow_scroll = strict, allow_scroll
        if shots is not None:
            result.screenshot = screenshot(report, width, result.page_height,
                                           Path(shots) / f"report_{width}.png", browser)
            if slice_height > 0:
                slice_image(result.screenshot, slice_height)
        results.append(result)
    return results


def _describe(result: WidthResult, limit: int) -> list[str]:
    status = "ok" if result.passed else ("OVERFLOW" if result.overflow > SLACK or result.failing
                                          else "SCROLLS (strict)")
    lines = [f"{result.width} px: {status}: page {result.overflow} px wider than the viewport "
             f"({result.viewport} px), {len(result.elements)} element(s) past its edge, "
             f"page height {result.page_height} px"]
    for el in result.elements[:limit]:
        where = f"  (in sideways-scrolling {el['scroller']})" if el.get("scroller") else ""
        lines.append(f"    overflow {el['beyond']:>5} px  width {el['width']:>5} px  {el['selector']}"
                     f"  \"{el['text']}\"{where}")
    if len(result.elements) > limit:
        lines.append(f"    ... {len(result.elements) - limit} more")
    for el in result.scrolling[:limit]:
        lines.append(f"    note: scrolls inside its box ({el['content']} px content in {el['box']} px, "
                     f"overflow-x {el['overflow_x']})  {el['selector']}  \"{el['text']}\"")
    if result.screenshot is not None:
        note = f" (cut at {MAX_SHOT_HEIGHT} px)" if result.page_height > MAX_SHOT_HEIGHT else ""
        lines.append(f"    screenshot {result.screenshot}{note}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="the report.html to check")
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS), help="viewport widths, px")
    parser.add_argument("--shots", type=Path, default=None,
                        help="folder for full-page screenshots (default: report_check next to the report)")
    parser.add_argument("--no-shots", action="store_true", help="measure only")
    parser.add_argument("--chromium", default=None, help="Chromium executable (default: $CHROMIUM or PATH)")
    parser.add_argument("--require-browser", action="store_true",
                        help=f"exit {EXIT_NO_BROWSER} instead of 0 when no Chromium is found")
    parser.add_argument("--slice-height", type=int, default=0,
                        help="also cut each screenshot into pieces this tall, px (easier to view)")
    parser.add_argument("--strict", action="store_true",
                        help="also fail when content scrolls or is clipped inside its own box (e.g. a table "
                             "in an overflow-x:auto wrapper)")
    parser.add_argument("--allow-scroll", action="store_true",
                        help="do not fail elements past the viewport that sit inside a sideways-scrolling box")
    parser.add_argument("--limit", type=int, default=15, help="offending elements listed per width")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"check_report: {args.report} is not a file; give the path of a report.html", file=sys.stderr)
        return EXIT_USAGE
    if any(w < 200 for w in args.widths):
        print(f"check_report: widths must be >= 200 px, got {args.widths}", file=sys.stderr)
        return EXIT_USAGE
    browser = find_chromium(args.chromium)
    if browser is None:
        print("check_report: SKIPPED: no Chromium found (tried --chromium, $CHROMIUM and "
              f"{', '.join(CANDIDATES)} on PATH); install one with `apt-get install -y chromium`")
        return EXIT_NO_BROWSER if args.require_browser else EXIT_OK
    shots = None if args.no_shots else (args.shots or args.report.parent / "report_check")
    try:
        results = check(args.report, tuple(args.widths), shots, browser, args.slice_height, args.strict,
                        args.allow_scroll)
    except CheckError as err:
        print(f"check_report: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"check_report: {args.report} with {browser}")
    for result in results:
        print("\n".join(_describe(result, args.limit)))
    failed = [r.width for r in results if not r.passed]
    print(f"check_report: {'FAILED at ' + ', '.join(map(str, failed)) + ' px' if failed else 'passed'}")
    return EXIT_OVERFLOW if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
