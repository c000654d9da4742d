"""`edgekit search` (issue 15 items 1-2): Optuna trials of whole exports on digits, two worker processes on one
SQLite storage, the Pareto front, a trial re-exported, failures recorded without ending the search."""
import contextlib
import dataclasses
import glob
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import torch
from conftest import DIGITS, ROOT, SYSTEM_TMP, chromium_pixels, cli, colour_count

from edgekit import search
from edgekit.config import InputSpec, load_recipe, load_target
from edgekit.load import load_model

TRAIN = f"{ROOT / 'calibration' / 'readers.py'}:digits_train"


def _recipe(tmp_path, extra: str = "", distill: bool = True) -> str:
    text = ((DIGITS / "edgekit.toml").read_text().replace('source = "model.py:build"',
                                                          f'source = "{DIGITS / "model.py"}:build"')
            .replace('weights = "digits_cnn.pt"', f'weights = "{DIGITS / "digits_cnn.pt"}"')
            .replace('"data/', f'"{DIGITS}/data/').replace("runs = 300", "runs = 20"))
    path = tmp_path / "edgekit.toml"
    path.write_text(text + (f'\n[distill]\ndata = "{TRAIN}"\nepochs = 2\n' if distill else "") + extra)
    return str(path)


def test_two_workers_on_one_storage_find_a_front_and_a_trial_reexports(tmp_path):
    out = tmp_path / "search"
    result = cli(["search", _recipe(tmp_path), "-t", "desktop-x86", "--trials", "8", "--workers", "2",
                  "--budget", "size_mb=1", "--out", out, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["trials"] == 8 and report["failed"] == []
    trials = optuna.load_study(study_name="edgekit", storage=f"sqlite:///{out / 'search.db'}").trials
    assert len(trials) == 8 and len({t.user_attrs["worker"] for t in trials}) == 2  # both processes ran trials
    firsts = {}
    for t in trials:
        firsts.setdefault(t.user_attrs["worker"], t.params)
    assert len({json.dumps(p, sort_keys=True) for p in firsts.values()}) == 2  # one seed made both propose the same
    assert len(report["pareto"]) >= 2 and json.loads((out / "pareto.json").read_text())["pareto"] == report["pareto"]
    assert sorted(p["trial"] for p in report["points"]) == list(range(8))  # every trial's figures, front or not
    best = report["best"]
    assert best == report["pareto"][0] and best["feasible"] and best["size_mb"] <= 1
    exported = json.loads((out / "desktop-x86" / "manifest.json").read_text())
    assert exported["accuracy"]["int8"] == pytest.approx(best["accuracy"], abs=1e-3)
    assert {k: exported["search"][k] for k in ("study", "trial")} == {"study": "edgekit", "trial": best["trial"]}
    page = (out / "report.html").read_text()  # the Pareto scatter, drawn by a real browser
    assert page.count("<svg") == 1 and "<script" not in page and all(f"<td>{p['trial']}</td>" in page
                                                                    for p in report["pareto"])
    assert colour_count(chromium_pixels(out / "report.html", tmp_path / "shot.png"), (0x2a, 0x7a, 0xb0)) > 150
    point = report["pareto"][-1]
    again = cli(["export", _recipe(tmp_path), "-t", "desktop-x86", "--from-trial", point["trial"], "--storage",
                 f"sqlite:///{out / 'search.db'}", "--out", tmp_path / "again", "--no-bench", "--json"])
    assert again.exit_code == 0, again.output
    [m] = json.loads(again.stdout)["targets"]
    assert (m["search"]["trial"], m["search"]["storage"]) == (point["trial"], f"sqlite:///{out / 'search.db'}")
    assert m["quantization"]["calibrate_method"] == point["params"]["calibrate_method"]
    assert (m["compression"].get("prune") or {}).get("ratio", 0.0) == point["params"]["prune_ratio"]
    assert m["accuracy"]["int8"] == pytest.approx(point["accuracy"], abs=1e-3)  # the same model as the trial's


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path):
    """Pruning with an --ignore layer the model lacks fails every pruned trial, with edgekit's own message."""
    out = tmp_path / "search"
    recipe = _recipe(tmp_path, '\n[prune]\nignore = ["no_such_layer"]\n')
    result = cli(["search", recipe, "-t", "desktop-x86", "--trials", "5", "--sampler", "random", "--out", out,
                  "--json"])
    report = json.loads(result.stdout)
    assert report["failed"] and all("no layer named no_such_layer" in f["error"] for f in report["failed"])
    assert all(f["params"]["prune_ratio"] > 0 for f in report["failed"])
    assert report["trials"] == 5 and len(report["failed"]) < 5
    assert result.exit_code == (0 if report["best"] else 1)
    again = cli(["search", recipe, "-t", "desktop-x86", "--trials", "1", "--out", out, "--json"])
    assert again.exit_code in (0, 1) and json.loads(again.stdout)["trials"] == 6  # resumed from its storage


def test_the_space_spans_stages_importance_training_and_quantization(tmp_path):
    recipe = load_recipe(Path(_recipe(tmp_path)))
    space = search.space(recipe, {"latency_ms": 1.0})
    assert space["prune_importance"] == ["l1", "l2", "taylor"]  # taylor: [distill] has labels
    assert space[search.STAGE + "features"] == space[search.STAGE + "classifier"] == search.STAGE_SCALES
    assert space["distill_epochs"] == [0, 1, 2] and 4.0 in space["distill_temperature"] and 3e-3 in space["distill_lr"]
    assert space["precision"] == ["int8", "latency"] and space["float_fallback"] == [False, True]
    trial = {**{key: values[0] for key, values in space.items()}, "prune_ratio": 0.6, "prune_importance": "taylor",
             search.STAGE + "features": 0.5, search.STAGE + "classifier": 1.5, "distill_epochs": 2,
             "distill_temperature": 8.0, "float_fallback": True, "precision": "latency"}
    r = search.apply(recipe, trial, tmp_path / "t")
    assert r.prune.stage_ratios == {"features": 0.3, "classifier": search.MAX_RATIO}
    assert r.prune.importance == "taylor" and r.prune.data == recipe.distill.data  # its gradients' labels
    assert (r.distill.epochs, r.distill.temperature, r.distill.lr) == (2, 8.0, space["distill_lr"][0])
    assert r.quantize == {"calibrate_method": "minmax", "per_channel": True, "precision": "latency", "auto": True,
                          "auto_search": ("exclude_nodes",)}
    own = dataclasses.replace(recipe, quantize={"calibrate_method": "percentile", "percentile": 99.9})
    entropy = search.apply(own, {"calibrate_method": "entropy"}, tmp_path / "t")
    assert entropy.quantize == {"calibrate_method": "entropy"}
    assert search.apply(own, {}, tmp_path / "t").quantize == own.quantize  # the percentile goes with its method
    assert "precision" not in search.space(recipe, {"size_mb": 1.0})  # only a latency budget asks for speed
    kept = dataclasses.replace(recipe, share=search.ShareSpec(clusters=8, ignore=("classifier.3",)))
    assert search.apply(kept, {"clusters": 16}, tmp_path / "t").share.ignore == ("classifier.3",)  # was dropped
    # the target's rules: android's uint8 weights go per-tensor (NNAPI, XNNPACK); a search once tried per-channel
    phone = search.space(recipe, {}, load_target("android-arm64"))
    assert "per_channel" not in phone and phone["calibrate_method"] == ["minmax", "entropy"] and "float_fallback" in phone


def test_an_onnx_model_is_searched_over_quantization_only(tmp_path):
    from edgekit.config import InputSpec
    from edgekit.onnx_export import export_torch

    model = load_model(f"{DIGITS / 'model.py'}:build", str(DIGITS / "digits_cnn.pt")).module
    export_torch(model, (InputSpec.parse("image:Nx1x8x8"),), (), 17, tmp_path / "digits.onnx")
    recipe = tmp_path / "edgekit.toml"
    recipe.write_text(f'[model]\nsource = "{tmp_path / "digits.onnx"}"\n')
    assert search.space(load_recipe(recipe), {}) == search.QUANTIZE  # no torch knobs: every trial could run
    recipe.write_text(f'[model]\nsource = "{tmp_path / "digits.onnx"}"\n[prune]\nratio = 0.3\n')
    with pytest.raises(search.UsageError, match=r"\[prune\]/\[share\]/\[distill\] need a MODULE:FUNCTION"):
        search.space(load_recipe(recipe), {})  # dropped without a word, where export refuses it


def test_another_machine_joins_through_a_journal_file(tmp_path):
    """Optuna's journal storage on a shared disk: a second machine (here a second run, with its own OUT) adds
    its trials to the same study, and each run's front is drawn from all of them."""
    storage = f"journal:{tmp_path / 'shared' / 'study.log'}"
    (tmp_path / "shared").mkdir()
    args = ["search", _recipe(tmp_path, distill=False), "-t", "desktop-x86", "--trials", "2", "--storage", storage,
            "--study", "phone", "--sampler", "random", "--json"]
    first = cli([*args, "--out", tmp_path / "a"])
    assert first.exit_code in (0, 1), first.output
    second = cli([*args, "--out", tmp_path / "b"])
    assert second.exit_code in (0, 1), second.output
    report = json.loads(second.stdout)
    assert report["trials"] == 4 and report["storage"] == storage and report["study"] == "phone"
    assert not (tmp_path / "b" / "search.db").exists()  # the journal is the state, not a local SQLite file


@pytest.mark.parametrize("storage,why", [
    ("sqlite:///{tmp}/notes.txt", "is not an Optuna study"), ("mysql://nobody/x", "cannot be opened"),
    ("sqlite:///{tmp}/notes.db", "is not an Optuna study"),  # Optuna once added its tables to the user's database
    ("postgresql://edgekit:s3#cret@127.0.0.1:1/x", "cannot be opened"),  # the password once appeared in the message
    ("sqlite://", "an in-memory database"),
    ("sqlite:///file:{tmp}/x.db?mode=memory&uri=true", "an in-memory database"),  # 79 lines of Optuna's traceback
    ("journal:{tmp}/notes.txt", "is not an Optuna journal"), ("journal:/dev/null", "is not a regular file"),  # exit 5
    ("journal:{tmp}/deep.log", "is not an Optuna journal"),  # exit 5, RecursionError
    ("journal:{tmp}/fifo", "is not a regular file")])  # hung
def test_a_storage_that_cannot_be_opened_is_a_usage_error(tmp_path, storage, why):
    """Not a database, or no driver for it: exit 2 in one line (was exit 5, internal error), and no OUT made."""

    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "deep.log").write_text("[" * 20000 + "]" * 20000 + "\n")
    os.mkfifo(tmp_path / "fifo")
    with contextlib.closing(sqlite3.connect(tmp_path / "notes.db")) as db:
        db.execute("CREATE TABLE notes (text)")
    before = (tmp_path / "notes.db").read_bytes()
    url = storage.format(tmp=tmp_path)
    result = cli(["search", _recipe(tmp_path), "-t", "desktop-x86", "--trials", "1", "--storage", url,
                  "--out", tmp_path / "out" / "deeper"])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert f"--storage {url.replace('s3#cret', '***')}" in line and why in line and "cret" not in line, line
    assert not (tmp_path / "out").exists()  # nor the parent it made
    again = cli(["export", _recipe(tmp_path), "--from-trial", "0", "--storage", url, "--out", tmp_path / "again"])
    assert again.exit_code == 2 and "cret" not in again.stderr and not (tmp_path / "again").exists(), again.stderr
    assert (tmp_path / "notes.txt").read_text() == "my notes\n" and (tmp_path / "notes.db").read_bytes() == before
    if storage == "sqlite://":  # an OUT that cannot be made, as export tells it (was exit 5)
        result = cli(["search", _recipe(tmp_path), "--trials", "1", "--out", tmp_path / "notes.txt" / "out"])
        assert result.exit_code == 3 and "cannot create it (Not a directory)" in result.stderr, result.output


def test_a_storage_inside_a_new_out_and_a_re_export_with_its_archive(tmp_path):
    """Found in review: a --storage naming a file inside OUT (made by the run) was refused, and `export
    --from-trial N --archive` dropped --archive and so took away the archive already beside OUT."""
    out = tmp_path / "out"
    result = cli(["search", _recipe(tmp_path, distill=False), "-t", "desktop-x86", "--trials", "1", "--storage",
                  f"sqlite:///{out / 'mine.db'}", "--out", out])
    assert result.exit_code == 0, result.output
    again = tmp_path / "again"
    for extra in ((), ("--from-trial", "0", "--storage", f"sqlite:///{out / 'mine.db'}")):
        done = cli(["export", _recipe(tmp_path, distill=False), "-t", "desktop-x86", "--archive", "--no-bench",
                    "--out", again, *extra])
        assert done.exit_code == 0, done.output
        assert (again / "desktop-x86.tar.gz").exists()
    # no search there: it said the default storage 'cannot be opened (OperationalError ...)'
    nowhere = cli(["export", _recipe(tmp_path, distill=False), "--from-trial", "0", "--out", tmp_path / "none"])
    assert nowhere.exit_code == 2 and "--from-trial: no search in" in nowhere.stderr, nowhere.output


def test_a_trial_re_exports_to_another_out_from_the_recipes_search(tmp_path):
    """The README's `export RECIPE --from-trial N --out NEW` ("give --out to keep both") looked for the search in
    NEW and stopped with exit 2."""
    recipe = Path(_recipe(tmp_path, distill=False))
    recipe.write_text(recipe.read_text().replace('out = "../../dist/digits"', 'out = "searched"'))
    assert cli(["search", recipe, "-t", "desktop-x86", "--trials", "1"]).exit_code == 0
    again = cli(["export", recipe, "-t", "desktop-x86", "--from-trial", "0", "--no-bench", "--out", tmp_path / "new"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "new" / "desktop-x86" / "manifest.json").exists()
    assert (tmp_path / "searched" / "desktop-x86" / "manifest.json").exists()  # the search's own package stays
    # another search on that search's own file: resumed, it would end this one's running trials as dead ones
    shared = cli(["search", recipe, "-t", "desktop-x86", "--trials", "1", "--storage",
                  f"sqlite:///{tmp_path / 'searched' / 'search.db'}", "--out", tmp_path / "other"])
    assert shared.exit_code == 2 and "is the search in" in shared.stderr, shared.output
    assert not (tmp_path / "other").exists()


def test_a_search_replaces_only_what_edgekit_made_in_out(tmp_path):
    """OUT's pareto.json, report.html, <target> and search.db are checked before any trial runs."""

    recipe = _recipe(tmp_path, distill=False)
    for name, make in (("report.html", lambda p: p.write_text("my notes")),
                       ("desktop-x86", lambda p: p.mkdir()),
                       ("search.db", lambda p: sqlite3.connect(p).execute("CREATE TABLE mine (x)").connection.commit()),
                       ("search.db", lambda p: sqlite3.connect(p).execute("CREATE TABLE studies (x)").connection.commit()),
                       ("search.db", lambda p: p.write_text("not a database"))):
        out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        make(out / name)
        before = sorted(p.name for p in out.iterdir())
        result = cli(["search", recipe, "-t", "desktop-x86", "--trials", "1", "--out", out])
        why = "is not an Optuna study" if name == "search.db" else "edgekit did not make it"
        assert result.exit_code == 2 and name in result.stderr and why in result.stderr, (name, result.output)
        assert sorted(p.name for p in out.iterdir()) == before, name  # no trial ran, nothing written
    forced = cli(["search", recipe, "-t", "desktop-x86", "--trials", "1", "--out", out, "--force"])
    assert forced.exit_code == 2 and "--storage" in forced.stderr  # --force replaces files, never opens a foreign db
    again = tmp_path / "out-0"
    forced = cli(["search", recipe, "-t", "desktop-x86", "--trials", "1", "--out", again, "--force", "--json"])
    assert forced.exit_code == 0, forced.output
    assert "edgekit search" in (again / "report.html").read_text() and (again / "desktop-x86" / "manifest.json").exists()


def test_float_fallback_and_stages_are_searched_only_where_they_apply(tmp_path):
    """A recipe's own `auto` is not narrowed to exclusions; unstructured pruning gets no stages or Taylor; a tiny
    learning rate does not round to 0; `[prune] data` alone offers Taylor."""
    recipe = load_recipe(Path(_recipe(tmp_path, '\n[quantize]\nauto = true\n[prune]\nmethod = "unstructured"\n')))
    space = search.space(recipe, {})
    assert "float_fallback" not in space and "prune_importance" not in space
    assert not any(key.startswith(search.STAGE) for key in space)
    tiny = dataclasses.replace(recipe, distill=dataclasses.replace(recipe.distill, lr=1e-7))
    assert search.space(tiny, {})["distill_lr"] == [3.33e-08, 1e-07, 3e-07]
    labelled = load_recipe(Path(_recipe(tmp_path, f'\n[prune]\ndata = "{TRAIN}"\n', distill=False)))
    assert search.space(labelled, {})["prune_importance"] == ["l1", "l2", "taylor"]


def test_a_trial_of_a_model_already_made_takes_its_figures_without_a_run(tmp_path):
    """Pruning at ratio 0 with another importance (or stage scales) is the same model: the second trial copies the
    first's figures and makes no package."""
    recipe = _recipe(tmp_path, distill=False)
    space = search.space(load_recipe(Path(recipe)), {})
    first = {key: values[0] for key, values in space.items()}
    assert first["prune_ratio"] == 0.0
    same = {**first, "prune_importance": "l2", search.STAGE + "classifier": 1.5}
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="edgekit", directions=["maximize", "minimize", "minimize"])
    study.enqueue_trial(first)
    study.enqueue_trial(same)
    result = cli(["search", recipe, "-t", "desktop-x86", "--trials", "2", "--storage", storage, "--out",
                  tmp_path / "s", "--json"])
    assert result.exit_code == 0, result.output
    a, b = optuna.load_study(study_name="edgekit", storage=storage).trials
    assert b.params["prune_importance"] == "l2" and b.user_attrs["same_as"] == a.number and b.values == a.values
    assert (tmp_path / "s" / "trials" / "0").is_dir() and not (tmp_path / "s" / "trials" / "1").exists()
    front = [p["trial"] for p in json.loads(result.stdout)["pareto"]]
    assert front == [a.number], front  # one model, one point (the copy was a second, identical row)


HEADS = """import torch
from torch import nn


class Heads(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.flat = nn.Flatten()
        self.body = nn.Linear(64, 64) if body else nn.Identity()
        self.head_a, self.head_b = nn.Linear(64, 10), nn.Linear(64, 3)

    def forward(self, image):
        x = self.body(self.flat(image))
        return self.head_a(x), self.head_b(x)


def build():
    torch.manual_seed(0)
    return Heads(False)


def with_body():
    torch.manual_seed(0)
    return Heads(True)
"""


def test_output_layers_are_no_pruning_dimension_and_heads_alone_are_not_pruned(tmp_path, caplog):
    """A model of two output layers (an adversarial user's): each was a stage, every trial pruned nothing (two
    warnings) and was exported anew instead of taking the unpruned model's figures (same_as)."""
    (tmp_path / "heads.py").write_text(HEADS)
    text = (f'[model]\nsource = "{tmp_path / "heads.py"}:{{fn}}"\ninputs = ["image:Nx1x8x8"]\n'
            f'[data]\ncalibration = "{DIGITS / "data" / "calibration.npz"}"\n[bench]\nruns = 3\n')
    recipe = tmp_path / "heads.toml"
    recipe.write_text(text.format(fn="with_body"))
    space = search.space(load_recipe(recipe), {})  # heads are no stage: one stage left, so no stage scales
    assert space["prune_ratio"] == search.PRUNE_RATIOS and not any(k.startswith(search.STAGE) for k in space)
    recipe.write_text(text.format(fn="build") + '[prune]\nratio = 0.3\n')
    space = search.space(load_recipe(recipe), {})
    assert not any(k.startswith("prune_") for k in space), space  # nothing to prune: no ratio, importance, stage
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="edgekit", directions=["maximize", "minimize", "minimize"])
    first = {key: values[0] for key, values in space.items()}
    study.enqueue_trial({**first, "prune_ratio": 0.0})
    study.enqueue_trial({**first, "prune_ratio": 0.3, "prune_importance": "l2"})  # the same model
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        result = cli(["search", recipe, "-t", "desktop-x86", "--trials", "2", "--storage", storage, "--out",
                      tmp_path / "s", "--json"])
    assert result.exit_code == 0, result.output
    assert "holds no layer pruning resizes" not in caplog.text and "removed no channel" not in caplog.text
    a, b = optuna.load_study(study_name="edgekit", storage=storage).trials
    assert not any(k.startswith("prune_") for k in {**a.params, **b.params}), (a.params, b.params)
    assert b.user_attrs["same_as"] == a.number and not (tmp_path / "s" / "trials" / "1").exists()


@pytest.fixture
def postgresql(tmp_path):
    """A throw-away PostgreSQL server (Debian's postgresql; .ci/run installs it as root) on a free local port:
    yields its URL. Run as the `postgres` user when the tests run as root (initdb refuses root)."""
    pytest.importorskip("psycopg2", reason="PostgreSQL needs its driver: pip install psycopg2-binary (test extra)")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("Debian's postgresql is not installed (.ci/run installs it where it runs as root)")
    bin_dir = Path(found[-1]).parent
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # not under pytest's 0700 folder (where conftest puts tempfile's): postgres must reach it
    home = Path(tempfile.mkdtemp(prefix="edgekit-pg-", dir=SYSTEM_TMP))
    if as_user:
        shutil.chown(home, "postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = home / "data"
    try:
        subprocess.run([*as_user, bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "edgekit"], check=True,
                       capture_output=True, timeout=120)
        subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-l", home / "log", "-w", "-o",
                        f"-p {port} -k {home} -c listen_addresses=127.0.0.1", "start"], check=True,
                       capture_output=True, timeout=120)
        yield f"postgresql+psycopg2://edgekit@127.0.0.1:{port}/postgres", lambda: subprocess.run(
            [*as_user, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True, timeout=120)
    finally:
        subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True,
                       timeout=120)
        shutil.rmtree(home, ignore_errors=True)


def test_two_workers_share_a_postgresql_study(tmp_path, postgresql):
    """Optuna's RDB storage on a real PostgreSQL server: what machines on a network share. Then the server stops
    under a running search: once exit 5 (Optuna's UnboundLocalError), now the step that failed."""
    postgresql, stop = postgresql
    result = cli(["search", _recipe(tmp_path, distill=False), "-t", "desktop-x86", "--trials", "4", "--workers", "2",
                  "--storage", postgresql, "--study", "lab", "--out", tmp_path / "s", "--json"])
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout)
    assert report["trials"] == 4 and report["storage"] == postgresql and report["failed"] == []
    trials = optuna.load_study(study_name="lab", storage=postgresql).trials
    assert len(trials) == 4 and len({t.user_attrs["worker"] for t in trials}) == 2
    assert not (tmp_path / "s" / "search.db").exists()
    run = subprocess.Popen([sys.executable, "-m", "edgekit", "search", _recipe(tmp_path, distill=False), "-t",
                            "desktop-x86", "--trials", "200", "--storage", postgresql, "--study", "lab", "--out",
                            tmp_path / "s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(optuna.load_study(study_name="lab", storage=postgresql).trials) < 6 and time.monotonic() < deadline:
        time.sleep(0.5)
    stop()
    _, err = run.communicate(timeout=120)
    assert run.returncode == 4 and "search storage failed" in err and "Traceback" not in err, err


def test_a_search_worker_keeps_to_its_share_of_the_cores(monkeypatch):
    """K workers on N cores: each runs torch and its float sessions at N/K threads, not N each; restored after."""
    import torch

    from edgekit import host

    monkeypatch.delenv(host.WORK_THREADS_ENV, raising=False)
    before, everything = torch.get_num_threads(), host.work_threads()
    with search.worker_threads(1):
        assert torch.get_num_threads() == 1 and host.work_threads() == 1
    assert torch.get_num_threads() == before and host.work_threads() == everything
    assert host.WORK_THREADS_ENV not in os.environ


def test_a_failed_trial_is_not_exported(tmp_path):
    """`--from-trial N` of a trial that failed exported its settings with exit 0."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="edgekit", storage=url)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    with pytest.raises(search.UsageError, match="trial 0 of study 'edgekit' did not complete \\(FAIL\\)"):
        search.from_trial(load_recipe(Path(_recipe(tmp_path))), url, "edgekit", 0)


def test_a_resumed_search_judges_every_trial_by_this_runs_budgets(tmp_path):
    """A trial's verdict was recorded with the budgets of its run: resumed with tighter ones, the old trials were
    still 'feasible' and the best broke the new budget."""
    out = tmp_path / "search"
    first = cli(["search", _recipe(tmp_path, distill=False), "-t", "desktop-x86", "--trials", "2", "--budget",
                 "size_mb=1", "--out", out, "--json"])
    assert first.exit_code == 0, first.output
    assert all(p["feasible"] for p in json.loads(first.stdout)["pareto"])
    exported = json.loads((out / "desktop-x86" / "manifest.json").read_text())
    [size] = [g for g in exported["gates"] if g["name"] == "size_mb"]  # the package's own gates hold the budget
    assert size["limit"] == 1 and size["passed"]
    tight = cli(["search", _recipe(tmp_path, distill=False), "-t", "desktop-x86", "--trials", "1", "--budget",
                 "size_mb=0.000001", "--out", out, "--json"])
    assert tight.exit_code == 1, tight.output
    report = json.loads(tight.stdout)
    assert report["trials"] == 3 and report["best"] is None and not any(p["feasible"] for p in report["pareto"])


def test_force_never_reaches_into_a_trials_folder_and_one_search_holds_out(tmp_path):
    out = tmp_path / "search"
    mine = out / "trials" / "0" / "desktop-x86"
    mine.mkdir(parents=True)
    (mine / "precious.txt").write_text("mine")
    from edgekit import outdir

    killed = out / "trials" / "7" / f"{outdir.STAGE_PREFIX}dead"  # a trial SIGKILLed mid-export left its stage
    killed.mkdir(parents=True)
    (killed / outdir.STAGE_MARK).touch()
    result = cli(["search", _recipe(tmp_path, distill=False), "-t", "desktop-x86", "--trials", "1", "--force",
                  "--out", out])
    assert not killed.exists()
    assert result.exit_code == 2 and "every trial failed" in result.output, result.output  # not "no trial met"
    assert "edgekit did not make it" in result.output and (mine / "precious.txt").read_text() == "mine"
    assert json.loads((out / "pareto.json").read_text())["failed"]  # the search's pages list the failures
    [trial] = optuna.load_study(study_name="edgekit", storage=f"sqlite:///{out / 'search.db'}").trials
    assert trial.user_attrs["final"] is False  # a folder in the way is no verdict on the model: tried again

    with outdir.lock(out / search.LOCK, out):  # another search running there
        busy = cli(["search", _recipe(tmp_path, distill=False), "-t", "desktop-x86", "--trials", "1", "--out", out])
    assert busy.exit_code == 7 and "another edgekit run" in busy.output, busy.output
    import fcntl
    fd = os.open(out / search.LOCK, os.O_CREAT | os.O_RDWR)  # held as another process holds it (not in _HELD)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # an export there mid-search was taken: the search then lost its result
        busy = cli(["export", _recipe(tmp_path, distill=False), "-t", "desktop-x86", "--out", out, "--no-bench"])
    finally:
        os.close(fd)
    assert busy.exit_code == 7 and "another edgekit run" in busy.output, busy.output


def test_a_study_edgekit_did_not_write_is_refused_or_read_with_care(tmp_path):
    recipe = _recipe(tmp_path, distill=False)
    out = tmp_path / "o"
    out.mkdir()
    url = f"sqlite:///{out / 'search.db'}"
    optuna.create_study(storage=url, study_name="edgekit", direction="maximize")  # one objective: once exit 5
    result = cli(["search", recipe, "-t", "desktop-x86", "--trials", "1", "--out", out])
    assert result.exit_code == 2 and "a study of other objectives" in result.output, result.output
    other = optuna.create_study(storage=url, study_name="other", directions=search.DIRECTIONS)
    for params in ({"width": 64}, {"prune_ratio": 0.0, "calibrate_method": "minmax"}):
        other.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: optuna.distributions.CategoricalDistribution([v]) for k, v in
                                          params.items()}, values=[90.0, 1.0, 1.0],
            user_attrs={"torch_threads": 10 ** 6}))  # torch crashed (rc 139) on that many threads
    again = cli(["export", recipe, "--from-trial", "0", "--study", "other", "--out", out])
    assert again.exit_code == 2 and "made for another recipe" in again.output, again.output
    _, threads = search.from_trial(load_recipe(Path(recipe)), url, "other", 1)
    assert threads is None
    # a trial whose figures are trial 2's (same_as, resumed with other --workers): trial 2's model, at its threads
    for attrs in ({"torch_threads": 2}, {"torch_threads": 1, "same_as": 2}):
        other.add_trial(optuna.trial.create_trial(
            params={"prune_ratio": 0.0}, distributions={"prune_ratio": optuna.distributions.CategoricalDistribution(
                [0.0])}, values=[90.0, 1.0, 1.0], user_attrs=attrs))
    assert search.from_trial(load_recipe(Path(recipe)), url, "other", 3)[1] == 2  # was 1: another model, exit 0
    typo = cli(["export", recipe, "--from-trial", "0", "--storage", f"sqlite:///{tmp_path / 'typo.db'}", "--out",
                tmp_path / "t"])
    assert typo.exit_code == 2 and "no such database file" in typo.output and not (tmp_path / "typo.db").exists()
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "search.db")  # sqlite's open of it hung, deaf to signals
    result = cli(["search", recipe, "-t", "desktop-x86", "--trials", "1", "--out", fifo])
    assert result.exit_code == 2 and "is not a regular file" in result.output, result.output


def test_a_database_server_that_does_not_answer_is_given_up_on(tmp_path):
    """A port that accepts but never speaks hung `search` for good (libpq ignores SIGTERM while it waits)."""
    pytest.importorskip("psycopg2", reason="PostgreSQL needs its driver: pip install psycopg2-binary (test extra)")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql+psycopg2://u:pw@127.0.0.1:{silent.getsockname()[1]}/db"
        code = f"from edgekit import search\nsearch.CONNECT_TIMEOUT = 2\nsearch._storage({url!r})"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "timeout expired" in done.stderr and "u:pw@" not in done.stderr, done.stderr


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_stopping_a_search_stops_its_workers(tmp_path, how):
    """SIGTERM (CI's cancel) once left the other workers running their whole share, printing tracebacks. Ctrl-C
    reaches the terminal's whole process group: a worker stopped by it, then by its parent's SIGTERM, said
    "search storage failed" (the second signal cut Optuna's recording short) and left its trial RUNNING."""
    out = tmp_path / "search"
    run = subprocess.Popen([sys.executable, "-m", "edgekit", "search", _recipe(tmp_path, distill=False), "-t",
                            "desktop-x86", "--trials", "40", "--workers", "2", "--out", out], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                           env={**os.environ, "TMPDIR": str(tmp_path)})  # the workers' job file: their command line
    db = f"sqlite:///{out / 'search.db'}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # both workers under way (read-only: Optuna's own load_study would create
        time.sleep(1)  # the tables the search is creating, and one of the two fail)
        with contextlib.suppress(Exception), contextlib.closing(sqlite3.connect(
                f"{(out / 'search.db').as_uri()}?mode=ro", uri=True)) as read:
            if len(read.execute("SELECT DISTINCT value_json FROM trial_user_attributes WHERE key = 'worker'")
                   .fetchall()) == 2:
                break
    if how == "SIGTERM":
        run.send_signal(signal.SIGTERM)
    else:
        os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130 and err.strip() == "edgekit: interrupted; any earlier output left as it was", err
    left = subprocess.run(["pgrep", "-f", f"edgekit.search {tmp_path}/"], capture_output=True, text=True)
    assert left.stdout == "", left.stdout
    trials = optuna.load_study(study_name="edgekit", storage=db).trials
    # the other worker did not run its whole share (the parent may have run its own before that worker started)
    assert len([t for t in trials if t.user_attrs.get("worker") != run.pid]) < 20, len(trials)
    assert not [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]


def test_a_worker_killed_mid_search_is_told_and_its_trial_is_not_left_running(tmp_path):
    """The OOM killer's SIGKILL to a worker went unnoticed: exit 0, "4 trial(s) done" of 8 asked, its trial RUNNING
    in the study for good."""
    out = tmp_path / "search"
    run = subprocess.Popen([sys.executable, "-m", "edgekit", "search", _recipe(tmp_path, distill=False), "-t",
                            "desktop-x86", "--trials", "12", "--workers", "2", "--out", out], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "TMPDIR": str(tmp_path)})  # the worker's job file: its command line
    deadline, worker = time.monotonic() + 120, ""
    while time.monotonic() < deadline and not worker:
        time.sleep(0.5)
        worker = subprocess.run(["pgrep", "-P", str(run.pid), "-f", r"edgekit\.search"], capture_output=True,
                                text=True).stdout.strip()
    time.sleep(4)  # under way, most likely in a trial (the assertions hold either way)
    os.kill(int(worker.split()[0]), signal.SIGKILL)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 4 and err.strip().splitlines()[-1].startswith(
        "edgekit: error: search failed: worker 1 was ended by SIGKILL (out of memory?): its running trial was marked "
        "failed"), err
    trials = optuna.load_study(study_name="edgekit", storage=f"sqlite:///{out / 'search.db'}").trials
    assert not [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    pareto = json.loads((out / "pareto.json").read_text())  # the front of the trials done, nothing exported
    assert pareto["export_error"].startswith("not exported: worker 1 was ended by SIGKILL") and pareto["points"]
    assert not (out / "desktop-x86").exists()


def test_a_locked_or_damaged_study_says_so(tmp_path):
    """A study another program held locked was "not an Optuna study; move it away" (all its trials); a damaged one
    was exit 5 in Optuna's words ("exceeding max length"), its database's own ("malformed") left out."""
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    made = optuna.create_study(storage=url, study_name="edgekit", directions=["maximize", "minimize", "minimize"])
    made.add_trial(optuna.trial.create_trial(params={}, distributions={}, values=[0.9, 1.0, 1.0]))
    del made
    args = ["export", _recipe(tmp_path, distill=False), "--from-trial", "0", "--storage", url, "--out", tmp_path / "o"]
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as holder:
        holder.execute("BEGIN EXCLUSIVE")
        locked = cli(args)
    assert locked.exit_code == 3 and "cannot be read: database is locked; a program holds it locked" in \
        locked.output and "not an Optuna study" not in locked.output, locked.output
    with open(db, "r+b") as f:  # the first page (the schema) whole, the tables' pages scribbled over
        f.seek(4096)
        f.write(b"\xff" * 8192)
    damaged = cli(args)
    assert damaged.exit_code in (3, 4) and "malformed" in damaged.output and "internal" not in damaged.output, \
        damaged.output


def test_pareto_json_says_when_the_best_points_export_did_not_finish(tmp_path, monkeypatch):
    """A full disk failed the export of the best point: the page said so, and pareto.json named the best trial with
    export_failed "", read as exported."""
    from edgekit import pipeline
    from edgekit.errors import InputError

    real = pipeline.run

    def run(recipe, targets, progress=True):  # the trials run; the best point's export (from_trial) meets a full disk
        if recipe.from_trial:
            raise InputError("--out x: no space left on device")
        return real(recipe, targets, progress)

    monkeypatch.setattr(pipeline, "run", run)
    out = tmp_path / "search"
    result = cli(["search", _recipe(tmp_path, distill=False), "-t", "desktop-x86", "--trials", "1", "--out", out])
    assert result.exit_code == 3 and "no space left on device" in result.stderr, result.output
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["best"] is not None and pareto["export_error"] == "--out x: no space left on device", pareto
    assert "its export did not finish: --out x: no space left on device" in (out / "report.html").read_text()


def test_an_interrupted_trial_is_not_counted_in_the_seconds_a_trial(tmp_path):
    """A trial a killed search left RUNNING ran, by its record, until the next search ended it (5 minutes, or a
    day): "67.0 s a trial" of trials taking 1-5 s."""
    import datetime

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize", "minimize"])
    start = datetime.datetime(2026, 1, 1)
    for state, seconds, attrs in ((optuna.trial.TrialState.COMPLETE, 2, {}), (optuna.trial.TrialState.FAIL, 4,
                                                                             {"error": "StageError: x"}),
                                  (optuna.trial.TrialState.FAIL, 86400, {})):  # interrupted: no verdict
        trial = optuna.trial.create_trial(params={}, distributions={}, state=state, user_attrs=attrs,
                                          values=[0.9, 1.0, 1.0] if state.name == "COMPLETE" else None)
        trial.datetime_start, trial.datetime_complete = start, start + datetime.timedelta(seconds=seconds)
        study.add_trial(trial)
    assert search.summary(storage, "s", {}).seconds_per_trial == 3.0


def test_only_edgekits_verdict_on_a_model_is_reused_not_an_interruption_or_a_full_disk(tmp_path):
    """A trial stopped by Ctrl-C, SIGTERM or a full disk blocked its values for good: every later trial of them
    'failed' as it without a run."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize", "minimize"])
    params = {"prune_ratio": 0.0}
    key = json.dumps(search.effective(params), sort_keys=True)
    for attrs in ({"effective": key},  # interrupted: no verdict recorded
                  {"effective": key, "error": "InputError: --out x: no space left on device", "final": False}):
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={"prune_ratio": optuna.distributions.CategoricalDistribution([0.0])},
            state=optuna.trial.TrialState.FAIL, user_attrs=attrs))
    assert search._done_before(study, 99, key) is None
    study.add_trial(optuna.trial.create_trial(
        params=params, distributions={"prune_ratio": optuna.distributions.CategoricalDistribution([0.0])},
        state=optuna.trial.TrialState.FAIL, user_attrs={"effective": key, "error": "StageError: x", "final": True}))
    assert search._done_before(study, 99, key).number == 2


@pytest.mark.parametrize("items", [["latency_ms=abc"], ["latency_ms=1_0"], ["latency_ms=nan"], ["size_mb=-1"],
                                   ["speed=1"], ["latency_ms=1", "latency_ms=2"], ["latency_ms=inf"]])
def test_a_budget_is_a_known_name_and_a_plain_positive_number(items):
    with pytest.raises(search.UsageError, match="--budget"):
        search.parse_budgets(items)
    assert search.parse_budgets(["latency_ms=5", "size_mb=0.5e1"]) == {"latency_ms": 5.0, "size_mb": 5.0}


def test_a_resumed_search_is_of_the_same_inputs_and_ends_what_its_killed_run_left(tmp_path, monkeypatch):
    """Resumed for another target, or with other weights in the same file, a study ranked the old trials with the
    new (a desktop-x86 per-channel trial exported as android-arm64's package, exit 0); a trial left RUNNING by a
    killed search stayed so, counted nowhere; 64 workers started for 4 trials; a --storage inside OUT/<target> was
    deleted by --force; a Ctrl-C after the search's pages were published said the previous output was there."""
    weights = tmp_path / "w.pt"
    shutil.copy(DIGITS / "digits_cnn.pt", weights)
    recipe = Path(_recipe(tmp_path, distill=False))
    recipe.write_text(recipe.read_text().replace(str(DIGITS / "digits_cnn.pt"), str(weights)))
    out = tmp_path / "search"
    first = cli(["search", recipe, "-t", "desktop-x86", "--trials", "1", "--out", out])
    assert first.exit_code == 0, first.output
    other = cli(["search", recipe, "-t", "android-arm64", "--trials", "1", "--out", out])
    assert other.exit_code == 2, other.output
    assert "holds trials of other inputs (target 'desktop-x86' changed to 'android-arm64')" in other.stderr
    state = torch.load(weights)
    state[next(iter(state))].zero_()
    torch.save(state, weights)
    retrained = cli(["search", recipe, "-t", "desktop-x86", "--trials", "1", "--out", out])
    assert retrained.exit_code == 2 and "(the weights file changed)" in retrained.stderr, retrained.output
    # re-exported with other weights, trial 0 was another model, published as it with exit 0
    again = cli(["export", recipe, "-t", "android-arm64", "--from-trial", "0", "--no-bench", "--out", tmp_path / "re",
                 "--storage", f"sqlite:///{out / 'search.db'}"])
    assert again.exit_code == 2, again.output
    assert "trial 0 of study 'edgekit' was measured on other inputs (the weights file changed)" in again.stderr
    inside = cli(["search", recipe, "-t", "desktop-x86", "--trials", "1", "--out", tmp_path / "o2", "--force",
                  "--storage", f"sqlite:///{tmp_path / 'o2' / 'desktop-x86' / 'study.db'}"])
    assert inside.exit_code == 2 and "which the search replaces" in inside.stderr, inside.output

    shutil.copy(DIGITS / "digits_cnn.pt", weights)  # the weights the study was made with
    study = optuna.load_study(study_name="edgekit", storage=f"sqlite:///{out / 'search.db'}")
    study.ask()  # the trial a SIGKILLed search was running
    started, popen = [], search.subprocess.Popen

    def worker_or_other(args, *more, **kw):  # search's workers counted; other children (bounded steps) run
        if "edgekit.search" in args:
            started.append(args)
        return popen(args, *more, **kw)

    monkeypatch.setattr(search.subprocess, "Popen", worker_or_other)
    real = search._publish_pages

    def published_then_interrupted(*args):
        real(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(search, "_publish_pages", published_then_interrupted)
    resumed = cli(["search", recipe, "-t", "desktop-x86", "--trials", "1", "--workers", "4", "--out", out])
    assert resumed.exit_code == 130, resumed.output
    assert resumed.stderr.strip() == "edgekit: interrupted after the new output was published"
    assert started == []  # one trial: one worker, this process
    report = json.loads((out / "pareto.json").read_text())
    assert report["trials"] == 3 and report["failed"] == [
        {"trial": 1, "params": {}, "error": "interrupted", "exit_code": 130}]


def test_a_study_records_the_files_a_recipe_names_not_the_folder_it_runs_in(tmp_path, monkeypatch):
    """An empty [prune] data digested the working folder (a new notes.txt refused the resume); FILE.py:FN lost FN
    (another model class in the same file was accepted)."""
    recipe = load_recipe(Path(_recipe(tmp_path, "\n[prune]\nratio = 0.3\n", distill=False)))
    target = load_target("desktop-x86")
    first = search.measured_on(recipe, target)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("the user's")
    monkeypatch.chdir(elsewhere)
    assert search.measured_on(recipe, target) == first
    assert sorted(first["files"]) == ["calibration", "source", "validation", "weights"]
    other = dataclasses.replace(recipe, source=recipe.source.replace(":build", ":other"))
    assert search.measured_on(other, target)["settings"] != first["settings"]


def test_c_name_leaves_a_studys_settings_hash_as_it_was_before_the_field(tmp_path):
    """c_name names C files, no figure: a recipe's hash included it, so --c-name kws refused a study's resume and
    studies recorded before the field was added hashed differently."""
    recipe = load_recipe(Path(_recipe(tmp_path, distill=False)))
    target = load_target("desktop-x86")
    before = dataclasses.make_dataclass("Recipe", [(f.name, f.type) for f in dataclasses.fields(recipe)
                                                   if f.name != "c_name"])
    old = before(**{f.name: getattr(recipe, f.name) for f in dataclasses.fields(before)})
    assert search.measured_on(recipe, target) == search.measured_on(old, target)
    assert search.measured_on(dataclasses.replace(recipe, c_name="kws"), target) == search.measured_on(old, target)


def test_declared_inputs_leave_a_studys_settings_hash_as_it_was(tmp_path):
    """InputSpec.declared (whose --input a data shape differs from) says how an input came, not what was measured:
    studies recorded before it resume."""
    recipe = load_recipe(Path(_recipe(tmp_path, distill=False)))
    target = load_target("desktop-x86")
    undeclared = tuple(InputSpec(s.name, s.shape, s.dtype) for s in recipe.inputs)
    assert recipe.inputs and all(s.declared for s in recipe.inputs) and not any(s.declared for s in undeclared)
    assert search.measured_on(recipe, target) == search.measured_on(dataclasses.replace(recipe, inputs=undeclared),
                                                                    target)


def test_a_signal_that_cut_the_best_points_export_short_publishes_no_pages(tmp_path, monkeypatch):
    """The front's pages were published on a failure a signal caused, and the search then said the previous output
    was left as it was."""
    from edgekit import signals

    out = tmp_path / "search"
    recipe = _recipe(tmp_path, distill=False)
    assert cli(["search", recipe, "-t", "desktop-x86", "--trials", "1", "--out", out]).exit_code == 0
    before = (out / "pareto.json").read_bytes()

    def cut_short(*_, **__):
        signals.RECEIVED.append(signal.SIGTERM)  # as the program's handler records it
        raise search.StageError("search storage", "UnboundLocalError")

    monkeypatch.setattr(search, "from_trial", cut_short)
    result = cli(["search", recipe, "-t", "desktop-x86", "--trials", "1", "--out", out])
    assert result.exit_code == 130 and \
        result.stderr.strip() == "edgekit: interrupted; any earlier output left as it was"
    assert (out / "pareto.json").read_bytes() == before


def test_a_stop_ends_the_search_however_the_trial_under_way_failed_and_leaves_no_trial_running(tmp_path,
                                                                                                  monkeypatch):
    """Seen in test_stopping_a_search_stops_its_workers: Ctrl-C inside an import made it "ImportError: initialization
    failed", recorded as that trial's error, and the worker ran its 19 other trials; a SIGTERM inside Optuna's
    recording of a finished trial left it RUNNING."""
    from edgekit import pipeline, signals

    out = tmp_path / "search"
    recipe = _recipe(tmp_path, distill=False)

    def import_cut_short(*_, **__):
        signals.RECEIVED.append(signal.SIGINT)  # as the program's handler records it
        raise ImportError("initialization failed")

    monkeypatch.setattr(pipeline, "run", import_cut_short)
    result = cli(["search", recipe, "-t", "desktop-x86", "--trials", "5", "--out", out])
    assert result.exit_code == 130, result.output
    db = f"sqlite:///{out / 'search.db'}"
    [trial] = optuna.load_study(study_name="edgekit", storage=db).trials
    assert trial.state == optuna.trial.TrialState.FAIL and "error" not in trial.user_attrs  # interrupted, not judged
    monkeypatch.undo()
    signals.RECEIVED.clear()

    def recording_cut_short(*args, run_id, **kwargs):  # the trial ran; the signal came while Optuna wrote its end
        s = search.study(args[6], args[7], args[5], args[3], 0)
        theirs = s.ask()  # another machine's search on the same storage, its worker's pid the same as ours
        theirs.set_user_attr("run", "another search")
        theirs.set_user_attr("worker", os.getpid())
        s.ask().set_user_attr("run", run_id)
        signals.RECEIVED.append(signal.SIGTERM)
        raise KeyboardInterrupt

    monkeypatch.setattr(search, "optimize", recording_cut_short)
    stopped = cli(["search", recipe, "-t", "desktop-x86", "--trials", "5", "--out", tmp_path / "other",
                   "--storage", f"sqlite:///{tmp_path / 'shared.db'}"])
    assert stopped.exit_code == 130, stopped.output
    trials = optuna.load_study(study_name="edgekit", storage=f"sqlite:///{tmp_path / 'shared.db'}").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL]


@pytest.mark.parametrize("where", ["after the trial", "inside the trial"])
def test_a_stop_during_a_storage_read_leaves_no_trial_running(tmp_path, monkeypatch, where):
    """1 run in 20 of test_stopping_a_search_stops_its_workers: SIGTERM came as Optuna read back the trial it had
    run; that read's SQLite cursor, kept alive in the traceback's frames, held the database's lock, the clean-up's
    write failed "database is locked" 5 s later, and the trial stayed RUNNING. Inside the trial (its look for an
    earlier run of the same values), Optuna's own write of the trial's end waited 5 s on that lock, and failed.
    Clearing those frames was not enough (1 run in 30 under load): SQLAlchemy's result objects kept the cursor too,
    and the clean-up waited on its own process's lock. The cursor is kept here, as they kept it."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from edgekit import signals

    armed, stopped, kept = [], [], []

    def stop(conn, cursor, statement, *_):  # the program's handler, run as the read's execute returns
        if armed and statement.lstrip().upper().startswith("SELECT"):
            armed.clear()
            stopped.append(time.monotonic())
            kept.append(cursor)  # unclosed, its SELECT unfinished: SQLite's shared lock held
            signals.RECEIVED.append(signal.SIGTERM)
            raise KeyboardInterrupt

    def read_cut_short(*args, run_id, **kwargs):
        s = search.study(args[6], args[7], args[5], args[3], 0)
        s.ask().set_user_attr("run", run_id)
        armed.append(True)
        s.trials  # a read from the storage

    def done_before(*args):
        armed.append(True)
        return done_before_itself(*args)

    done_before_itself = search._done_before
    if where == "after the trial":
        monkeypatch.setattr(search, "optimize", read_cut_short)
    else:
        monkeypatch.setattr(search, "_done_before", done_before)
    out = tmp_path / "search"
    event.listen(Engine, "after_cursor_execute", stop)
    try:
        result = cli(["search", _recipe(tmp_path, distill=False), "-t", "desktop-x86", "--out", out])
    finally:
        event.remove(Engine, "after_cursor_execute", stop)
    assert result.exit_code == 130 and len(stopped) == 1, result.output
    assert time.monotonic() - stopped[0] < 5  # SQLite's busy timeout: the clean-up did not wait on its lock
    [trial] = optuna.load_study(study_name="edgekit", storage=f"sqlite:///{out / 'search.db'}").trials
    assert trial.state == optuna.trial.TrialState.FAIL


def test_a_killed_searchs_trial_on_its_own_storage_is_reclaimed_once_its_heartbeat_stops(tmp_path, monkeypatch):
    """With --storage, a trial a killed search left RUNNING stayed so for ever, uncounted in pareto.json (only the
    default OUT/search.db, locked with OUT, was cleaned): Optuna's heartbeat now tells a dead trial from one live on
    another machine, and the next search marks it interrupted. One still beating is listed as running."""
    monkeypatch.setattr(search, "HEARTBEAT_S", 1)
    monkeypatch.setattr(search, "GRACE_S", 1)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    made = optuna.create_study(storage=search._storage(url), study_name="edgekit", directions=search.DIRECTIONS)
    dead = made.ask()
    made._storage.record_heartbeat(dead._trial_id)  # its search beat once, then was killed
    time.sleep(2.5)
    result = cli(["search", _recipe(tmp_path, distill=False), "-t", "desktop-x86", "--trials", "1", "--storage", url,
                  "--out", tmp_path / "o", "--json"])
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout)
    assert {"trial": 0, "params": {}, "error": "interrupted", "exit_code": 130} in report["failed"]
    assert report["running"] == [] and report["trials"] == 2
    live = made.ask()  # RUNNING (another machine's, live): not ended, but counted
    assert search.summary(url, "edgekit", {}).running == (live.number,)


def test_a_grid_search_that_runs_out_of_combinations_says_so(tmp_path):
    """`--sampler grid --trials 9` on an .onnx model (2 x 2 x 2 quantization knobs) ran 8 trials and said only
    "8 trial(s) done"."""
    sys.path.insert(0, str(DIGITS))
    try:
        from model import build
    finally:
        sys.path.remove(str(DIGITS))
    torch.onnx.export(build().eval(), (torch.zeros(1, 1, 8, 8),), str(tmp_path / "m.onnx"), input_names=["image"],
                      dynamic_axes={"image": {0: "N"}}, dynamo=False)
    recipe = tmp_path / "edgekit.toml"
    recipe.write_text(f'[model]\nsource = "{tmp_path / "m.onnx"}"\n[data]\ncalibration = '
                      f'"{DIGITS / "data" / "calibration.npz"}"\nvalidation = "{DIGITS / "data" / "validation.npz"}"\n'
                      '[bench]\nruns = 3\n')
    args = ["search", recipe, "-t", "desktop-x86", "--trials", "9", "--sampler", "grid", "--out", tmp_path / "o"]
    result = cli(args)
    assert result.exit_code in (0, 1), result.output
    assert "8 trial(s) done, 0 failed" in result.stdout and "the grid's 8 combinations are all tried" in result.stdout
    again = cli([*args, "--json"])  # resumed: nothing left to try
    assert again.exit_code in (0, 1) and json.loads(again.stdout)["grid_done"] == 8, again.output


def test_a_session_a_signal_left_open_is_released_before_the_clean_up(tmp_path):
    """Ctrl-C inside Optuna's session close left the session open in its registry, in a write holding SQLite's lock:
    the clean-up's write failed "database is locked" (after 5 s) and the trial stayed RUNNING."""
    url = f"sqlite:///{tmp_path / 'study.db'}?timeout=1"
    ours = search.study(url, "s", "random", {"prune_ratio": [0.0]}, 0)
    ours.ask()
    clean_up = search.study(url, "s", "random", {"prune_ratio": [0.0]}, 0)
    left_open = ours._storage._backend.scoped_session()  # what the cut-short close leaves: a write under way
    left_open.connection().exec_driver_sql("UPDATE trials SET state = state")
    with pytest.raises(Exception) as locked:
        search._end_running(clean_up, lambda trial: True)
    assert "database is locked" in str(locked.value.__cause__), locked.value
    search._release(ours)
    search._end_running(clean_up, lambda trial: True)
    assert [t.state for t in clean_up.trials] == [optuna.trial.TrialState.FAIL]


def test_a_second_study_in_one_out_is_refused_before_it_replaces_the_first_ones_trials(tmp_path):
    """Each study numbers its trials from 0: a new --study (the README's advice for changed inputs) in the same OUT
    replaced the first study's OUT/trials/0 package, exit 0, with nothing saying whose it was."""
    out, recipe = tmp_path / "search", _recipe(tmp_path, distill=False)
    args = ["search", recipe, "-t", "desktop-x86", "--trials", "1", "--sampler", "random", "--out", out]
    first = cli(args)
    assert first.exit_code in (0, 1), first.output
    package = (out / "trials" / "0" / "desktop-x86" / "model.int8.onnx").read_bytes()
    second = cli([*args, "--study", "s2"])
    assert second.exit_code == 2, second.output
    assert f"--out {out}: its trials are study 'edgekit' in search.db; each study numbers" in second.stderr
    assert (out / "trials" / "0" / "desktop-x86" / "model.int8.onnx").read_bytes() == package
    assert "s2" not in optuna.get_all_study_names(f"sqlite:///{out / 'search.db'}")
    again = cli([*args, "--storage", f"sqlite:///{out}/./search.db?timeout=30"])  # the first study, spelt anew
    assert again.exit_code in (0, 1) and (out / "trials" / "1").is_dir(), again.output
