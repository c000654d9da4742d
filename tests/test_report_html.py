"""report.html (issue 15 item 4): self-contained, escaped, and rendered by a real browser (Debian's Chromium,
headless), not only parsed."""
import html
import json
import platform
import re
import shutil
import sys

import pytest
from conftest import DIGITS, chromium_pixels, cli, colour_count

import edgekit
from edgekit import host, report_html


@pytest.fixture(scope="module")
def digits_package(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    result = cli(["export", DIGITS / "edgekit.toml", "-t", "desktop-x86", "--out", out, "--bench-runs", "5", "--json"])
    assert result.exit_code == 0, result.output
    return out / "desktop-x86", json.loads(result.stdout)["targets"][0]


def test_report_html_is_self_contained_with_charts_and_beside_the_manifest(digits_package):
    folder, manifest = digits_package
    page = (folder / "report.html").read_text()
    assert page.count("<svg") == 2  # latency and size; per-layer error
    # nothing fetched from outside the file: no scripts, links, imports or references but in-page (#id) ones
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert re.findall(r'(?:src|href)\s*=\s*"(?!#)', page) == []
    assert manifest["latency"]["where"] in page
    assert "reference kernels, not the int8 ones)" in page  # how the per-layer chart was measured
    a = manifest["accuracy"]  # the page showed the drop gate only
    assert f"Accuracy on {a['samples']} labelled samples" in page and f"int8 {a['int8']:.2f}" in page
    assert "report.html" in manifest["files"]  # hashed, like report.md: edited, it fails check
    assert edgekit.check(folder).passed  # and `edgekit check` takes the folder with it


def test_strings_from_the_run_are_escaped(tmp_path):
    model = tmp_path / "<img src=x onerror=alert(1)>.py"  # the file's name: a package names no folder of the user's
    shutil.copy(DIGITS / "model.py", model)
    result = cli(["export", f"{model}:build", "--weights", DIGITS / "digits_cnn.pt", "--input", "image:Nx1x8x8",
                  "--calibration", DIGITS / "data" / "calibration.npz", "--out", tmp_path / "o", "--no-bench"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "o" / "desktop-x86" / "report.html").read_text()
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_charts_need_no_plotting_library(digits_package, monkeypatch):
    from edgekit.reports import TargetReport
    from edgekit.search import Point, SearchReport

    folder, manifest = digits_package
    for name in ("matplotlib", "matplotlib.figure"):  # as where it is not installed
        monkeypatch.setitem(sys.modules, name, None)
    report = TargetReport(manifest["target"], None, None, None, None, None, [], [], manifest)
    page = report_html.page(report)
    assert page.count("<svg") == 1  # the per-layer chart (a report rebuilt this way has no latency or sizes)
    assert all(f"<title>{row['node']}</title>" in page for row in manifest["layers"])
    points = (Point(0, 99.0, 0.1, 0.2, True, {}), Point(1, 97.0, 0.05, 0.1, True, {}),
              Point(2, 98.0, 0.2, 0.3, False, {}))
    search = SearchReport("s", "sqlite:///x", "accuracy", {"latency_ms": 0.15}, points, (), points[:2], points[0],
                          1.0, "here", "host")
    page = report_html.search_page(search, "desktop-x86")
    # both panels: three trials each, the two front ones numbered; the legend's three marks; the budget's line
    assert page.count("<svg") == 1 and page.count("<circle") == 2 * 3 + 3 and page.count("<line") == 1
    assert ">infeasible (1)<" in page and ">front (2)<" in page


@pytest.mark.parametrize("values, expected", [([0.0, 1.0], [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
                                              ([97.3, 99.1], [97.0, 97.5, 98.0, 98.5, 99.0, 99.5]),
                                              ([0.05, 0.2, 0.15], [0.05, 0.1, 0.15, 0.2]),
                                              ([5.0], [4.7, 4.8, 4.9, 5.0, 5.1, 5.2, 5.3]),
                                              ([5.0, float("inf")], [4.7, 4.8, 4.9, 5.0, 5.1, 5.2, 5.3])])  # exit 5
def test_scatter_ticks_are_round_and_cover_the_values(values, expected):
    assert report_html._ticks(values) == pytest.approx(expected)


def _rects(svg: str) -> list[tuple[float, float]]:
    return [(float(x), float(w)) for x, w in re.findall(r'<rect x="([0-9.]+)" [^>]*width="([0-9.]+)"', svg)]


def test_bars_are_drawn_to_scale_from_their_start():
    [(x0, w1), (x1, w4)] = _rects(report_html.bars([("ms", [("int8", 1.0, "#111"), ("fp32", 4.0, "#222")])]))
    assert x0 == x1 and w4 == pytest.approx(4 * w1, rel=1e-3) and w1 > 0
    [(_, w90), (_, w95)] = _rects(report_html.bars([("%", [("a", 90.0, "#1"), ("b", 95.0, "#2")])], start=85.0))
    assert w95 == pytest.approx(2 * w90, rel=1e-3)
    # a negative loss goes left of zero, at its scale; a value that is not finite is printed without a bar
    svg = report_html.bars([("dB", [("gain", -6.0, "#1"), ("loss", 12.0, "#2"), ("odd", float("nan"), "#3")])])
    [(xn, wn), (xp, wp), (_, wnan)] = _rects(svg)
    assert xn + wn == pytest.approx(xp) and wp == pytest.approx(2 * wn, rel=1e-3) and wnan == 0 and ">nan<" in svg
    assert report_html.bars([("x", [("a", 1.0, "#1")])]) == report_html.bars([("x", [("a", 1.0, "#1")])])


def test_long_labels_keep_their_distinct_ends():
    names = [f"/encoder/encoder/layer.0/attention/self/{n}/MatMul" for n in ("query", "key", "value")]
    svg = report_html.bars([("dB", [(n, 1.0, "#1") for n in names])])
    shown = re.findall(r"</title>([^<]*)</text>", svg)
    assert len(set(shown)) == 3 and all(len(t) <= 36 for t in shown)
    assert all(f"<title>{n}</title>" in svg for n in names)


def test_chromium_renders_the_charts_without_console_errors(digits_package, tmp_path):
    folder, _ = digits_package
    pixels = chromium_pixels(folder / "report.html", tmp_path / "shot.png")
    assert pixels.std() > 20  # not a blank page
    # the charts' bar colours are on screen: int8 blue (#2a7ab0) and per-layer red (#c0504d)
    for colour in ((0x2a, 0x7a, 0xb0), (0xc0, 0x50, 0x4d)):
        assert colour_count(pixels, colour) > 500, colour


def test_every_parity_figure_says_where_and_by_whose_kernels(tmp_path):
    """An ARM target's parity came from this host's x86 kernels standing in for the device's: only stdout said so,
    not report.md's parity tables nor report.html's gates."""
    result = cli(["export", DIGITS / "edgekit.toml", "-t", "arm64-linux", "-t", "android-arm64", "--out", tmp_path,
                  "--no-bench"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "arm64-linux"
    manifest = json.loads((folder / "manifest.json").read_text())
    kernels = manifest["parity"]["quantization"]["int8_kernels"]
    md, page = (folder / "report.md").read_text(), (folder / "report.html").read_text()
    assert md.count("Computed on ") == 2 and f"int8 outputs from {kernels} (x86 exact kernels (stand-in))" in md
    # the float outputs said the int8 session's threads (the profile's 4), not the work threads they ran at
    fp32_line, int8_line = [line for line in md.splitlines() if line.startswith("Computed on ")]
    assert f" {host.work_threads()} thread(s)" in fp32_line and f" {manifest['host']['threads']} thread(s)" in int8_line
    # the profile's 4 on a host of fewer cores said so, as the latency caption does
    cores = manifest["host"]["cores"]
    assert (f"thread(s) (this host has {cores} cores)" in int8_line) == (manifest["host"]["threads"] > cores)
    # android-arm64's size column and chart showed model.int8.onnx; its budget and runtime take the .ort
    android = json.loads((tmp_path / "android-arm64" / "manifest.json").read_text())
    row = next(line.split() for line in result.stdout.splitlines() if line.startswith("android-arm64 "))
    ort, onnx_mb = (f"{android['sizes'][f'model.int8.{kind}'] / 1e6:.2f}" for kind in ("ort", "onnx"))
    assert row[1] == ort != onnx_mb
    assert "android-arm64: int8 MB is of the .ort the runtime loads" in result.stdout
    assert "int8 .ort" in (tmp_path / "android-arm64" / "report.html").read_text()
    assert f"Parity computed on host {platform.machine()} ({host.cpu_model()})" in page
    assert "(x86 exact kernels (stand-in))" in page
    # one line for the page's export and quantization gates said the int8 session's threads alone (1 beside fp32
    # outputs run at the work threads): each figure's are said where they differ
    threads, work = manifest["host"]["threads"], manifest["host"]["work_threads"]
    [line] = [html.unescape(x) for x in page.splitlines() if x.startswith("<p>Parity computed on ")]
    assert (f"int8 outputs at {threads} thread(s)" in line and f"ONNX fp32 outputs (export parity's, and the reference "
            f"int8 is held to) at {work} thread(s)" in line) if threads != work else f", {threads} thread(s)," in line
