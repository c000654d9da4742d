import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
DIGITS = ROOT / "examples" / "digits"
sys.path.insert(0, str(TESTS))
# what onnxruntime reads as "running in CI" (it then keeps no telemetry store): cleared where a test must mean the
# same on a laptop and in CI
CI_MARKS = {"CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL", "CODEBUILD_BUILD_ID",
            "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER", "ORT_RUNNING_UNIT_TESTS"}
SYSTEM_TMP = tempfile.gettempdir()  # before temporary_files_in_pytests_folder: for a folder others must reach


def cli(args, env=None):
    """The edgekit CLI run in-process (click's runner): `cli(["export", model, "--json"])`. Callers assert
    the exit code before they parse any output, so a failure shows the real error."""
    from click.testing import CliRunner

    from edgekit.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def check_cases(result) -> list[dict]:
    """`check --json`'s cases, each with its `label`: the target, with its folder where that is named otherwise
    (`arm64-linux (prev)`, `v2/arm64-linux`), as the text and JUnit name it."""
    import json

    from edgekit.reports import Case

    return [{**c, "label": Case(**c).label} for c in json.loads(result.stdout)["cases"]]


def rehash(folder, *names):
    """Package files changed on purpose: their sha256 and size in manifest.json made to match, so `check` reads
    them (instead of failing integrity first)."""
    import hashlib
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    for name in names:
        manifest["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        manifest["sizes"][name] = (folder / name).stat().st_size
    write_manifest(folder, manifest, keep=names)


def write_manifest(folder, manifest, keep=()):
    """manifest.json edited on purpose, and its reports rendered again from it and re-hashed (but those in `keep`,
    edited on purpose too), as edgekit renders them: check then reads the claim under test, not report.md's own
    (which test_check_claims tests). One they cannot be rendered from, or of another edgekit version, keeps them."""
    import hashlib
    import json

    import edgekit
    from edgekit.package import rendered_pages

    (folder / "manifest.json").write_text(json.dumps(manifest))
    try:
        pages = rendered_pages(manifest) if manifest["edgekit_version"] == edgekit.__version__ else {}
    except Exception:  # a manifest mistyped on purpose
        return
    for name, text in ((n, t) for n, t in pages.items() if n not in keep):
        (folder / name).write_text(text, encoding="utf-8")
        if name in manifest["files"]:
            manifest["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
            manifest["sizes"][name] = (folder / name).stat().st_size
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    """The CLI run in-process installs its handlers, and a signal held back leaves them ignored: a later test (and CI's
    SIGTERM to pytest) must find them as they were."""
    from edgekit import signals

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signals.RECEIVED.clear()  # what the program's handler recorded in a test's in-process run


@pytest.fixture(autouse=True)
def temporary_files_in_pytests_folder(tmp_path_factory, monkeypatch):
    """tempfile's folder is one of pytest's (which pytest prunes) for each test, and a test leaving an output folder
    there fails: edgekit.export(out=None) keeps the folder it makes for the user, and the suite left dozens of
    /tmp/edgekit-* behind per run. A test passes `out` (tmp_path), as a user who keeps the package does. Children
    inherit it as TMPDIR (edgekit's bounded steps, a test's `python -c` script): what they left in the system's was
    missed. A test needing a folder others reach (a device, a user's) takes SYSTEM_TMP, one setting TMPDIR its own."""
    scratch = tmp_path_factory.mktemp("tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    yield
    left = sorted(p.name for p in scratch.glob("edgekit-*"))
    assert not left, f"the test left {', '.join(left)} in the temporary folder: give edgekit.export() out=tmp_path"


@pytest.fixture
def cnn_data(tmp_path):
    """Calibration and validation .npz for models:small_cnn (image:Nx3x16x16)."""
    rng = np.random.default_rng(0)
    cal = tmp_path / "cal.npz"
    val = tmp_path / "val.npz"
    np.savez(cal, image=rng.random((40, 3, 16, 16), dtype=np.float32))
    np.savez(val, image=rng.random((12, 3, 16, 16), dtype=np.float32))
    return cal, val


def encoder_feeds(n, seed, seq=12):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 64, (n, seq)).astype(np.int64)
    mask = np.ones((n, seq), dtype=np.int64)
    for i in range(n):
        mask[i, rng.integers(4, seq):] = 0
    return ids * mask, mask


@pytest.fixture
def encoder_data(tmp_path):
    ids, mask = encoder_feeds(48, 0)
    vids, vmask = encoder_feeds(12, 1)
    cal, val = tmp_path / "enc_cal.npz", tmp_path / "enc_val.npz"
    np.savez(cal, input_ids=ids, attention_mask=mask)
    np.savez(val, input_ids=vids, attention_mask=vmask)
    return cal, val


def chromium_pixels(page: Path, shot: Path) -> np.ndarray:
    """`page` as Debian's Chromium (headless) draws it: the screenshot's RGB pixels. Fails on console errors;
    skips, saying why, where chromium is not installed."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it where it runs as root)")
    from PIL import Image

    run = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          "--window-size=1000,1400", f"--screenshot={shot}", "--enable-logging=stderr", "--v=0",
                          page.as_uri()], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    assert "CONSOLE" not in run.stderr and "Uncaught" not in run.stderr, run.stderr[-2000:]
    return np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)


def colour_count(pixels: np.ndarray, colour: tuple[int, int, int]) -> int:
    """How many pixels are (nearly) `colour`: a chart's marks are on screen."""
    return int((np.abs(pixels - np.array(colour)).sum(axis=2) < 12).sum())
