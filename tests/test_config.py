"""Settings have one source: QuantSettings' fields and Literal types make the CLI options, recipe keys and
README table; these tests fail when any of them drifts."""
import dataclasses
import os
import re
import subprocess
import sys
import typing

import click
import pytest
from conftest import ROOT

from edgekit import cli, config
from edgekit.cli import main
from edgekit.config import QuantSettings, Recipe, apply_quant_overrides, choices, settings_table
from edgekit.errors import ExitCode, UsageError

README = (ROOT / "README.md").read_text()


def _options(command: str) -> dict[str, click.Option]:
    return {p.name: p for p in main.commands[command].params if isinstance(p, click.Option)}


def test_every_quant_setting_has_a_flag_or_is_profile_only():
    flagged = {f.name for f in dataclasses.fields(QuantSettings) if f.metadata["flag"]}
    assert set(cli.QUANT_FLAGS.values()) == flagged
    assert {f.name for f in dataclasses.fields(QuantSettings)} - flagged == {"percentile", "auto_search"}
    options = _options("export")
    for param, name in cli.QUANT_FLAGS.items():
        hint = typing.get_type_hints(QuantSettings)[name]
        option = options[param]
        if typing.get_origin(hint) is typing.Literal:
            assert tuple(option.type.choices) == typing.get_args(hint), name
        assert option.default is None, f"--{param} must not hide the target's own {name}"
        if hint is bool:  # a recipe's `auto = true` could not be turned off: there was no --no-auto
            assert option.secondary_opts, f"--{param} has no --off flag"


def test_an_off_flag_overrides_the_recipes_on(tmp_path):
    recipe = tmp_path / "edgekit.toml"
    recipe.write_text('[model]\nsource = "m.onnx"\n[quantize]\nauto = true\nquantize_state = true\n')
    result = main.commands["export"].make_context("export", [str(recipe), "--no-auto", "--no-quantize-state"])
    flags = {k: v for k, v in result.params.items() if k in cli.QUANT_FLAGS}
    assert cli.recipe_from(str(recipe), flags).quantize == {"auto": False, "quantize_state": False}
    # a repeated list flag kept its last value alone
    repeated = main.commands["export"].make_context("export", [
        str(recipe), "--exclude-nodes", "/0/Conv", "--exclude-nodes", "/2/Conv,/6/Gemm", "--op-types", "Conv"])
    flags = {k: v for k, v in repeated.params.items() if k in cli.QUANT_FLAGS}
    assert cli.recipe_from(str(recipe), flags).quantize == {
        "auto": True, "quantize_state": True, "exclude_nodes": ("/0/Conv", "/2/Conv", "/6/Gemm"), "op_types": ("Conv",)}


def test_cli_choices_come_from_the_literal_types():
    export, prune, distill = _options("export"), _options("prune"), _options("distill")
    assert tuple(export["exporter"].type.choices) == choices(Recipe, "exporter")
    assert tuple(export["task"].type.choices) == choices(Recipe, "task")
    assert tuple(prune["method"].type.choices) == choices(config.PruneSpec, "method")
    assert prune["importance"].default == config.PruneSpec.importance
    assert distill["epochs"].default == config.DistillSettings.epochs
    assert tuple(distill["optimizer"].type.choices) == choices(config.DistillSettings, "optimizer")


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(QuantSettings)])
def test_every_quant_setting_is_a_recipe_key(field):
    value = getattr(QuantSettings(), field)
    merged = apply_quant_overrides(QuantSettings(), {field: list(value) if isinstance(value, tuple) else value}, "t")
    assert getattr(merged, field) == value
    hint = typing.get_type_hints(QuantSettings)[field]
    if typing.get_origin(hint) is typing.Literal:
        with pytest.raises(UsageError, match=f"{field} = 'nope' is not one of {', '.join(typing.get_args(hint))}"):
            apply_quant_overrides(QuantSettings(), {field: "nope"}, "t")


def test_readme_exit_codes_are_the_exit_code_enum():
    """ExitCode is the one source of the codes: README's list names each, busy (a retryable lock) apart from usage."""
    said = " ".join(README.split("Exit codes: ")[1].split("Errors are one line")[0].split())
    assert {int(c) for c in ExitCode} <= {int(n) for n in re.findall(r"(?:^|· )(\d+) ", said)}, said
    assert f"· {int(ExitCode.BUSY)} busy: another edgekit run is writing `--out`" in said


def test_a_recipes_labels_file_is_beside_it(tmp_path):
    """`[model] labels` names a file relative to the recipe, as weights and data do."""
    (tmp_path / "edgekit.toml").write_text('[model]\nsource = "m.py:build"\nlabels = "names.txt"\n')
    assert config.load_recipe(tmp_path / "edgekit.toml").labels == str(tmp_path / "names.txt")


def test_readme_names_every_recipe_key():
    """[data] max_data_bytes and [export] archive, no_bench, step_timeout, emulate worked but were not named."""
    for section, keys in config.RECIPE_KEYS.items():
        assert f"`[{section}]` ({', '.join(keys)}" in " ".join(README.split()), section


def test_readme_settings_table_is_the_generated_one():
    assert settings_table() in README, ("README's settings table drifted from QuantSettings; paste the output of "
                                        "python -c 'from edgekit.config import settings_table; print(settings_table())'")


def test_readme_compression_table_is_the_generated_one():
    """[prune], [share] and [distill] keys were named nowhere (ratio, weight_decay, feature_weight, ...)."""
    assert config.compression_table() in README, (
        "README's [prune]/[share]/[distill] table drifted from their settings; paste the output of "
        "python -c 'from edgekit.config import compression_table; print(compression_table())'")


@pytest.mark.parametrize("section", list(config.COMPRESSION_SECTIONS))
def test_compression_flags_are_their_commands_options(section):
    """The table's flag column is what `edgekit prune`, `share` and `distill` take, and a key without one has none."""
    options = {o for p in main.commands[section].params for o in p.opts}
    for f in dataclasses.fields(config.COMPRESSION_SECTIONS[section]):
        if f.metadata["flag"]:
            assert f.metadata["flag"] in options, (section, f.name)
        else:
            assert config.flags(f)[0] not in options and f"--{f.name.replace('_', '-')}" not in options, f.name


def test_readme_python_section_runs(tmp_path):
    """The README's Python example, as written, from the repository root (its paths are relative to it)."""
    [code] = re.findall(r"## Python API.*?```python\n(.*?)```", README, re.S)
    code = code.replace('"dist/api"', repr(str(tmp_path / "api")))
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["desktop-x86", "True"], ["android-arm64", "True"]]


def test_device_section_and_flags_make_one_device_spec(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nsource = "m.onnx"\n[device]\nurl = "ssh://pi@board/~/pkg"\nknown_hosts = "kh"\n'
                      'identity = "~/.ssh/id_board"\n')
    kh, key = str(tmp_path / "kh"), os.path.expanduser("~/.ssh/id_board")  # beside the recipe, wherever it runs
    loaded = cli.recipe_from(str(recipe), {})
    assert loaded.device == config.DeviceSpec("ssh://pi@board/~/pkg", known_hosts=kh, identity=key)
    flagged = cli.recipe_from(str(recipe), {"device_python": "/opt/py/bin/python3"})
    assert flagged.device == config.DeviceSpec("ssh://pi@board/~/pkg", key, kh, python="/opt/py/bin/python3")
    replaced = cli.recipe_from(str(recipe), {"device": "ssh://other"})
    assert replaced.device == config.DeviceSpec("ssh://other")
    recipe.write_text('[model]\nsource = "m.onnx"\n[device]\nidentity = "k"\n')
    with pytest.raises(UsageError, match=r"\[device\]: missing required key 'url'"):
        cli.recipe_from(str(recipe), {})


def test_a_recipe_path_starting_with_a_tilde_no_user_has_is_beside_the_recipe(tmp_path, monkeypatch):
    """`~` and `~/dist` are the user's home, as a shell reads them; `~old` (no such user) is a folder beside the
    recipe, as a shell leaves it: Path.expanduser raised RuntimeError, `edgekit export` an internal error."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nsource = "~nosuchuser-m.onnx"\nweights = "~/w.pt"\n[data]\ncalibration = "~cal.npz"'
                      '\n[export]\nout = "~old"\n[device]\nurl = "ssh://pi@board/~/pkg"\nidentity = "~key"\n')
    loaded = cli.recipe_from(str(recipe), {})
    assert (loaded.source, loaded.weights) == (str(tmp_path / "~nosuchuser-m.onnx"), str(tmp_path / "home" / "w.pt"))
    assert (loaded.calibration, loaded.out) == (str(tmp_path / "~cal.npz"), str(tmp_path / "~old"))
    assert loaded.device.identity == str(tmp_path / "~key")


def test_the_cli_and_recipes_compression_data_take_a_tilde_as_the_api_does(tmp_path, monkeypatch):
    """A quoted `--out "~/dist"` (the shell leaves it) made a folder named `~` in the working folder, and a recipe's
    [prune]/[distill] data "~/d.npz" was a folder `~` beside the recipe, where the API and the recipe's other paths
    read the user's home; `~name` no user has stays as written (beside the recipe, for a recipe's path)."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nsource = "m.onnx"\n[prune]\ndata = "~/d.npz"\n'
                      '[distill]\ndata = "~nosuchuser/d.npz"\n')
    loaded = cli.recipe_from(str(recipe), {"out": "~/dist", "calibration": "~/c.npz", "validation": "~nosuchuser/v",
                                           "targets": ("~/t.toml", "desktop-x86")})
    assert (loaded.out, loaded.calibration) == (str(home / "dist"), str(home / "c.npz"))
    assert loaded.validation == "~nosuchuser/v" and loaded.targets == (str(home / "t.toml"), "desktop-x86")
    assert (loaded.prune.data, loaded.distill.data) == (str(home / "d.npz"), str(tmp_path / "~nosuchuser/d.npz"))
    assert cli.recipe_from("~/m.onnx", {}).source == str(home / "m.onnx")


def test_state_init_files_take_a_tilde_as_the_other_paths_do(tmp_path, monkeypatch):
    """A streaming model's state_init .npy file was the one path left out of config.expand_home: a recipe's
    "~/h0.npy" was a folder `~` beside the recipe, and a quoted `--state-init "h=~/h0.npy"` and the API's
    state_init={"h": "~/h0.npy"} a folder `~` in the working folder."""
    from edgekit import api

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nsource = "m.onnx"\nstate_init = {h = "~/h0.npy", c = "~nosuchuser/c0.npy"}\n')
    want = {"h": str(home / "h0.npy"), "c": str(tmp_path / "~nosuchuser/c0.npy")}
    assert config.load_recipe(recipe).state_init == want
    assert cli.recipe_from(str(recipe), {"state_init": ("h=~/h0.npy",)}).state_init == want
    built = api._recipe("m.onnx", (), None, None, ("desktop-x86",), tmp_path / "out",
                        {"state_init": {"h": "~/h0.npy", "c": "c0.npy"}})
    assert built.state_init == {"h": str(home / "h0.npy"), "c": "c0.npy"}


def test_a_device_specs_key_files_take_a_tilde_as_exports_flags_do(tmp_path, monkeypatch):
    """`export --identity "~/id"` read the home's key, where `check --identity "~/id"` and the API's DeviceSpec
    (check's and export's) said "device identity ~/id: no such file"; `~name` no user has stays as written."""
    from edgekit import api
    from edgekit.device import Device

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "id").write_text("key")
    (tmp_path / "kh").write_text("hosts")
    spec = api._device_spec(config.DeviceSpec("ssh://pi@board", identity="~/id", known_hosts="~/kh"))
    assert (spec.identity, spec.known_hosts) == (str(tmp_path / "id"), str(tmp_path / "kh"))
    assert Device(spec).spec.identity == str(tmp_path / "id")
    assert api._device_spec(config.DeviceSpec("ssh://b", identity="~nosuchuser/k")).identity == "~nosuchuser/k"
    assert api._device_spec("ssh://b") == config.DeviceSpec("ssh://b") and api._device_spec(None) is None


def test_round_to_is_a_multiple_or_auto_in_a_recipe():
    build = config.build
    assert build(config.PruneSpec, {"round_to": "auto"}, "r [prune]").round_to == "auto"
    assert build(config.PruneSpec, {"round_to": 16}, "r [prune]").round_to == 16
    for bad, why in (("fast", "wrong type"), (True, "wrong type"), (2048, "out of range")):
        with pytest.raises(UsageError, match=f"r \\[prune\\]: .*{why}"):
            build(config.PruneSpec, {"round_to": bad}, "r [prune]")


def test_prune_stage_ratios_and_data_in_a_recipe(tmp_path):
    build = config.build
    assert build(config.PruneSpec, {"stage_ratios": {"features": 0, "classifier": 0.5}}, "r [prune]").stage_ratios == {
        "features": 0.0, "classifier": 0.5}
    for bad, why in (({"features": 1.0}, r"in \[0, 1\)"), ({"features": "half"}, "expected a table"),
                     ([0.5], "expected a table")):
        with pytest.raises(UsageError, match=f"r \\[prune\\]: .*{why}"):
            build(config.PruneSpec, {"stage_ratios": bad}, "r [prune]")
    recipe = tmp_path / "r" / "edgekit.toml"
    recipe.parent.mkdir()
    recipe.write_text('[model]\nsource = "m.py:build"\n[prune]\nimportance = "taylor"\ndata = "train.npz"\n'
                      'stage_ratios = {features = 0.3}\n')
    prune = config.load_recipe(recipe).prune
    assert prune.data == str(tmp_path / "r" / "train.npz") and prune.stage_ratios == {"features": 0.3}


@pytest.mark.parametrize("flags, message", [
    (("--input", "image:Nx1x8x8", "--input", "image:Nx1x8x8"), "input 'image' is given twice"),
    (("--input", "image:Nx1x8x8", "--max-data-bytes", "-1"), "--max-data-bytes"),
    (("--input", "image:Nx1x8x8", "--step-timeout", "0"), "--step-timeout")])
def test_flags_out_of_their_range_are_usage_errors_before_any_work(tmp_path, flags, message):
    """Each was accepted: an input named twice failed in the model (exit 3), -1 bytes refused the data (exit 3),
    a 0 s step timeout passed unnoticed."""
    from conftest import DIGITS, cli as run_cli

    result = run_cli(["export", f"{DIGITS / 'model.py'}:build", "--weights", DIGITS / "digits_cnn.pt", *flags,
                      "--calibration", "random", "--out", tmp_path / "o", "--no-bench"])
    assert result.exit_code == 2, result.output
    assert message in result.output and not (tmp_path / "o").exists()
    with pytest.raises(config.UsageError, match="given twice"):
        config.InputSpec.parse_all(["x:Nx4", config.InputSpec.parse("x:Nx4")])


@pytest.mark.parametrize("args", [["export", "--nope"], ["targets", "bogus"], ["export"],
                                  ["export", "x.toml", "--max-data-bytes", "-1"],
                                  ["export", "x.toml", "--step-timeout", "nan"],  # click's FloatRange takes NaN
                                  ["search", "x.toml", "--time-budget", "-5"], ["prune", "m.py:f", "--ratio", "nan"],
                                  ["export", "x.toml", "--bench-runs", "2000000"],  # said "must be >= 1"
                                  ["distill", "t.py:f", "s.py:f", "--data", "d.npz", "--seed", "-1"]])
def test_click_usage_errors_are_one_line_like_edgekits_own(args):
    """click printed a four-line Usage/Try/Error block; the exit code (2) was already right."""
    from conftest import cli as run_cli

    result = run_cli(args)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("edgekit: error: ") and "-h` for help" in line


def test_a_misspelled_provider_in_a_profile_is_refused_with_the_nearest_name(tmp_path):
    """It was accepted, and the session quietly fell back to the CPU provider."""
    profile = tmp_path / "mine.toml"
    text = (ROOT / "targets" / "desktop-x86.toml").read_text()
    profile.write_text(text.replace('"CPUExecutionProvider"', '"CPUExecutionProvidr"'))
    with pytest.raises(UsageError, match=r"providers: 'CPUExecutionProvidr' is not .* 'CPUExecutionProvider'"):
        config.load_target(str(profile))
    profile.write_text(text.replace('"CPUExecutionProvider"', '"NnapiExecutionProvider", "CPUExecutionProvider"'))
    assert config.load_target(str(profile)).runtime.providers[0] == "NnapiExecutionProvider"  # known, not here


@pytest.mark.parametrize("name", ["edgekit-targets.json", "EdgeKit-Targets.JSON", "trials", "search.db",
                                  "edgekit-archives.json"])
def test_a_profile_named_as_a_file_edgekit_writes_in_out_is_refused(tmp_path, name):
    """OUT/edgekit-targets.json is OUT's record of its targets: a profile of that name failed after the whole export,
    exit 5 "internal error: IsADirectoryError" (a bare IsADirectoryError from edgekit.export()). A search's trials
    folder or study (search.db) was replaced by a package of that name (--force, exit 0)."""
    import edgekit

    profile = tmp_path / "mine.toml"
    profile.write_text(f'name = "{name}"\n')
    with pytest.raises(UsageError, match=f"name '{name}' is a file edgekit writes in OUT"):
        edgekit.export("m.onnx", calibration="random", targets=[str(profile)], out=str(tmp_path / "o"))


def test_a_recipes_profile_path_is_beside_the_recipe(tmp_path, monkeypatch):
    """It was read from the working folder: another profile of the same name there was used instead."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "edgekit.toml").write_text('[model]\nsource = "m.onnx"\n[export]\ntargets = ["mine.toml", '
                                                 '"desktop-x86"]\n')
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.toml").write_text('name = "wrong"\n')
    (tmp_path / "desktop-x86").write_text("not a profile")  # nor does a bundled name mean a file here
    recipe = config.load_recipe(tmp_path / "r" / "edgekit.toml")
    assert recipe.targets == (str(tmp_path / "r" / "mine.toml"), "desktop-x86")  # no falling back to the cwd
    with pytest.raises(UsageError, match=f"{tmp_path}/r/mine.toml: no such file"):
        config.load_targets(recipe.targets)  # when used: `-t desktop-x86` overrides a profile not made yet
    (tmp_path / "r" / "mine.toml").write_text('name = "mine"\n')
    assert [t.name for t in config.load_targets(recipe.targets)] == ["mine", "desktop-x86"]
    (tmp_path / "r" / "edgekit.toml").write_text('[model]\nsource = "m.onnx"\n[export]\ntargets = "mine.toml"\n')
    assert config.load_recipe(tmp_path / "r" / "edgekit.toml").targets == (str(tmp_path / "r" / "mine.toml"),)
    assert config.load_target("desktop-x86").path == str(config.TARGETS_DIR / "desktop-x86.toml")
    (tmp_path / "r" / "edgekit.toml").write_text('[model]\nsource = "m.onnx"\n[export]\ntargets = ["desktop-x68"]\n')
    with pytest.raises(UsageError, match="unknown target 'desktop-x68' \\(did you mean 'desktop-x86'\\?\\)"):
        config.load_recipe(tmp_path / "r" / "edgekit.toml")


def test_a_recipe_or_profile_that_is_not_a_small_regular_file_is_refused(tmp_path):
    """A FIFO hung `export -t` and `targets show`; /dev/zero grew until memory ran out (exit 5 under a ulimit)."""
    os.mkfifo(tmp_path / "fifo.toml")
    (tmp_path / "zero.toml").symlink_to("/dev/zero")
    (tmp_path / "big.toml").write_text("# padding\n" * 200_000)
    for name, why in (("fifo.toml", "not a regular file"), ("zero.toml", "not a regular file"),
                      ("big.toml", "too large for a recipe or profile")):
        with pytest.raises(UsageError, match=why):
            config.load_target(str(tmp_path / name))
        with pytest.raises(UsageError, match=why):
            config.load_recipe(tmp_path / name)
    with pytest.raises(UsageError, match="/dev/zero: not a regular file"):  # was "unknown target '/dev/zero'"
        config.load_target("/dev/zero")


@pytest.mark.parametrize("cls, table, message", [
    (config.DistillSettings, {"data": "d.npz", "weight_decay": -5.0}, "weight_decay = -5.0 is out of range"),
    (config.DistillSettings, {"data": "d.npz", "feature_weight": float("nan")}, "feature_weight = nan is out of range"),
    (config.ParitySpec, {"quant_sqnr_min_db": float("nan")}, "quant_sqnr_min_db = nan is out of range"),
    (config.DeviceSpec, {"url": "ssh://h", "timeout": -1.0}, "timeout = -1.0 is out of range"),
    (config.Recipe, {"source": "m.py:f", "image_uint8": 5}, "'image_uint8' has the wrong type"),
])
def test_settings_without_a_range_failed_late_with_the_wrong_exit_code(cls, table, message):
    """Each loaded, then failed deep in the run: exit 5 (torch's ValueError), exit 4 (NaN scales) or a gate."""
    with pytest.raises(UsageError, match=re.escape(message)):
        config.build(cls, table, "r")


def test_limits_are_finite_and_json_is_strict(tmp_path):
    """`size_mb_max = inf` was taken and written into manifest.json as `Infinity`, which JSON.parse refuses."""
    import json
    import math

    from edgekit.reports import json_text

    profile = tmp_path / "p.toml"
    for key in ("size_mb_max", "latency_p50_ms_max"):
        profile.write_text(f'name = "p"\n[budgets]\n{key} = inf\n')
        with pytest.raises(UsageError, match=f"{key} = inf is out of range"):
            config.load_target(str(profile))
    text = json_text({"a": [math.inf, -math.inf, math.nan, 1.5], "b": (2, {"c": math.nan})})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON token {c}")) == {
        "a": [None, None, None, 1.5], "b": [2, {"c": None}]}


def test_qoperator_with_16_bit_types_is_a_usage_error_before_any_work(tmp_path):
    """It was exit 4 from onnxruntime ("Only QuantFormat.QDQ supports 16-bit"), after export and calibration."""
    with pytest.raises(UsageError, match="16-bit activation or weight types need format QDQ"):
        apply_quant_overrides(QuantSettings(), {"format": "QOperator", "weight_type": "int16"}, "r")
    profile = tmp_path / "qop.toml"
    profile.write_text('name = "qop"\n[quantize]\nformat = "QOperator"\nper_channel = false\n')
    from conftest import DIGITS, cli as run_cli

    result = run_cli(["export", DIGITS / "edgekit.toml", "-t", profile, "--activation-type", "uint16", "--out",
                      tmp_path / "o", "--no-bench"])
    assert result.exit_code == 2 and "quantize overrides for qop: 16-bit" in result.stderr, result.output
    assert not (tmp_path / "o").exists()


def test_min_coverage_needs_the_providers_it_gates(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text('name = "p"\n[package]\nmin_coverage = 0.9\n')
    with pytest.raises(UsageError, match="min_coverage gates the coverage"):
        config.load_target(str(profile))


@pytest.mark.parametrize("options,said", [
    ('CoreMLExecutionProvider = {ModelFormat = "MLProgram"}', None),  # a coverage provider's
    ('XnnpackExecutionProvider = {intra_op_num_threads = 2}', "neither in providers nor a coverage provider"),
    ('CoreMLExecutionProvider = {ModelFormat = "MLprogram"}', "ModelFormat is MLProgram or NeuralNetwork"),
    ('CoreMLExecutionProvider = "MLProgram"', "wrong type"),
])
def test_provider_options_name_a_provider_the_profile_uses_and_are_strings_as_onnxruntime_takes_them(tmp_path, options,
                                                                                                      said):
    """A provider's options are part of the package's runtime contract (CoreML's ModelFormat decides what the EP
    builds and what coverage is predicted): options of a provider the profile never uses were a silent no-op."""
    profile = tmp_path / "p.toml"
    profile.write_text(f'name = "p"\n[runtime]\nprovider_options = {{{options}}}\n[package]\ncoverage = ["coreml"]\n')
    if said:
        with pytest.raises(UsageError, match=said):
            config.load_target(str(profile))
    else:
        assert config.load_target(str(profile)).runtime.provider_options == {
            "CoreMLExecutionProvider": {"ModelFormat": "MLProgram"}}


def test_min_verdict_needs_its_provider_and_one_of_the_checkers_verdicts(tmp_path):
    """A profile may gate a provider on onnxruntime's checker's verdict: only one it predicts, by a verdict it gives."""
    profile = tmp_path / "p.toml"
    profile.write_text('name = "p"\n[package]\nmin_verdict = "maybe"\n')
    with pytest.raises(UsageError, match="min_verdict gates the coverage"):
        config.load_target(str(profile))
    profile.write_text('name = "p"\n[package]\ncoverage = ["nnapi"]\nmin_verdict = "fine"\n')
    with pytest.raises(UsageError, match="min_verdict = 'fine' is not one of no, maybe, yes"):
        config.load_target(str(profile))


def test_search_budgets_are_positive_finite_and_given_once():
    """inf drew the report's axis into an OverflowError after trials were published (exit 5); NaN ran trials that
    could not meet it; a budget given twice kept one silently."""
    from edgekit.search import parse_budgets

    assert parse_budgets(["latency_ms=5", "size_mb=2"]) == {"latency_ms": 5.0, "size_mb": 2.0}
    for bad, why in ((["latency_ms=inf"], "finite"), (["latency_ms=nan"], "finite"),
                     (["latency_ms=5", "latency_ms=10"], "given twice")):
        with pytest.raises(UsageError, match=why):
            parse_budgets(bad)


@pytest.mark.parametrize("overrides, said", [
    ({"mode": "dynamic", "activation_type": "int8"}, "dynamic quantization computes uint8 activations"),
    ({"mode": "dynamic", "weight_type": "int16"}, "dynamic quantization computes uint8 activations"),
    ({"activation_type": "int8", "weight_type": "uint8"}, "not a combination onnxruntime quantizes")])
def test_type_combinations_onnxruntime_cannot_do_are_usage_errors(overrides, said):
    """Dynamic int8 activations were recorded in the manifest while onnxruntime made uint8 ones; dynamic int16
    weights and int8 activations with uint8 weights failed as exit 4 in onnxruntime's words."""
    with pytest.raises(UsageError, match=said):
        apply_quant_overrides(QuantSettings(), overrides, "t")
    assert apply_quant_overrides(QuantSettings(), {"mode": "dynamic", "weight_type": "uint8"}, "t").mode == "dynamic"


def test_numpy_bools_and_one_name_alone_are_taken_from_python():
    """`per_channel=np.bool_(False)` from a numpy sweep was "wrong type (bool); expected true/false", though numpy's
    integers and floats were taken; one name for a list setting is that name, not its letters."""
    import numpy as np

    from edgekit.config import PruneSpec, build

    settings = apply_quant_overrides(QuantSettings(), {"per_channel": np.bool_(False), "exclude_nodes": "/c/Conv"}, "")
    assert settings.per_channel is False and settings.exclude_nodes == ("/c/Conv",)
    assert build(PruneSpec, {"ignore": "head"}, "").ignore == ("head",)
    with pytest.raises(UsageError, match="wrong type"):
        apply_quant_overrides(QuantSettings(), {"per_channel": np.array([True, False])}, "")


def test_a_recipes_sizes_say_which_axis_is_wrong():
    """`sizes = {N = 3}` was "key 'sizes' has the wrong type (dict); expected a table"."""
    for sizes in ({"N": 3}, {"N": [3.5]}, {"N": []}):
        with pytest.raises(UsageError, match=r"sizes: N = .*: give a list of sizes"):
            config.build(Recipe, {"source": "m.py:f", "sizes": sizes}, "r.toml")
    assert config.build(Recipe, {"source": "m.py:f", "sizes": {"n": [3], "Seq": [4]}}, "r.toml").sizes == {
        "N": [3], "seq": [4]}


def test_a_table_or_list_of_the_wrong_things_says_what_it_holds():
    """`stage_ratios = {features = "x"}` was "wrong type (dict); expected a table", and `exclude_nodes = ["a", 1]`
    "wrong type (list); expected a list of strings": both read as no fault at all."""
    with pytest.raises(UsageError, match=r"'stage_ratios' has the wrong type \(a table of str\); expected a table of "
                                         r"numbers"):
        config.build(config.PruneSpec, {"ratio": 0.5, "stage_ratios": {"features": "x"}}, "r.toml [prune]")
    with pytest.raises(UsageError, match=r"'exclude_nodes' has the wrong type \(a list of int, str\); expected a list"):
        config.apply_quant_overrides(QuantSettings(), {"exclude_nodes": ["a", 1]}, "r.toml [quantize]")


def test_export_help_names_the_settings_defaults():
    """--seed, --exporter, --task and --bench-runs gave no default; --step-timeout retyped its 600."""
    defaults = {"seed": Recipe.seed, "exporter": Recipe.exporter, "task": Recipe.task,
                "step_timeout": Recipe.step_timeout, "bench_runs": config.BenchSpec.runs}
    options = _options("export")
    for name, default in defaults.items():
        assert f"(default: {default})" in options[name].help, name


def test_an_error_names_a_recipes_setting_as_toml_and_keeps_its_words():
    """The renamer read any word after a flag as its value and rewrote inside paths: '[model] weights = does not
    apply', '[data] validation = set.npz' inside a quoted path, '[export] out = "dist:" cannot create it'."""
    from edgekit.config import python_names, recipe_file_names
    from edgekit.errors import rename

    toml, python = recipe_file_names(), python_names()
    cases = {"--weights does not apply": ("[model] weights does not apply", "weights= does not apply"),
             "data '/tmp/my --validation set.npz': gone": ("data '/tmp/my --validation set.npz': gone",) * 2,
             "--out /tmp/dist: cannot create it": ('[export] out = "/tmp/dist": cannot create it',
                                                   "out=/tmp/dist: cannot create it"),
             "--out .: cannot write": ('[export] out = ".": cannot write', "out=.: cannot write"),
             "--input NAME:SHAPE, e.g.": ('[model] inputs = ["NAME:SHAPE"], e.g.', "inputs=NAME:SHAPE, e.g."),
             "--seed -1 or --per-tensor": ("[export] seed = -1 or [quantize] per_channel = false",
                                           "seed=-1 or per_channel=False")}
    for text, (as_toml, as_python) in cases.items():
        assert (rename(text, toml), rename(text, python)) == (as_toml, as_python), text


def test_a_bad_dimension_is_shown_as_typed():
    """`x:N,40,T` said "bad dimension 'n,40,t'": the spec lower-cased, and no word of the separator."""
    with pytest.raises(UsageError, match=r"bad dimension 'N,40,T' \(use a number or a name like N, separated by x: "
                                         r"'Nx40xT'\)"):
        config.InputSpec.parse("x:N,40,T")
    assert config.InputSpec.parse("x:NX40×Seq").shape == ("N", 40, "seq")


def test_an_input_name_may_be_any_identifier_and_a_bad_one_is_told_what_is_allowed():
    """`bild_größe:Nx3x16x16` was "bad input name 'bild_größe'" (ASCII only, no word of what is allowed), while a
    forward() parameter may be so named (PEP 3131) and onnxruntime takes any string."""
    assert config.InputSpec.parse("bild_größe:Nx3x16x16").name == "bild_größe"
    assert config.InputSpec.parse("input.1-a:N").name == "input.1-a"  # as torch's exporter names some
    for bad in ("bild größe", "1x", "-x", "x/y", "x\n"):
        with pytest.raises(UsageError, match=r"bad input name .* \(letters, digits, '_', '\.', '-' and ':', starting "
                                             r"with a letter or '_'\)"):
            config.InputSpec.parse(f"{bad}:N")


def test_an_input_name_may_hold_colons_as_tf2onnx_names_them(tmp_path):
    """`input_1:0` could not be given at all, though edgekit's own advice wrote it so: `input:0:Nx16x16x3` was
    "dimensions must be positive" (0 read as the shape), the advice's `input_1:0:unk__1x16x...:float32` "expected
    NAME:SHAPE[:DTYPE]". A spec is read from its right; a last field meant as a dtype still says it is unknown."""
    from edgekit import calib
    from edgekit.onnx_export import io_specs

    spec = config.InputSpec.parse
    assert spec("input:0:Nx16x16x3") == config.InputSpec("input:0", ("N", 16, 16, 3), "float32")
    assert spec("input_1:0:unk__1x16:int64") == config.InputSpec("input_1:0", ("unk__1", 16), "int64")
    assert spec("a:0::int64") == config.InputSpec("a:0", (), "int64") and spec("sr::int64").name == "sr"
    for typo in ("flaot32", "float64", "i32"):
        with pytest.raises(UsageError, match=f"unknown dtype '{typo}'"):
            spec(f"x:Nx3:{typo}")
    # the model's own names, and each spec advice writes of them, parse back to the same spec
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input_1:0"], ["Identity:0"])], "tf2onnx",
                              [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["unk__1", "H + 1", 3])],
                              [helper.make_tensor_value_info("Identity:0", TensorProto.FLOAT, None)])
    specs = io_specs(helper.make_model(graph), "m")[0]
    assert spec(specs[0].typed()) == config.InputSpec("input_1:0", ("unk__1", "h___1", 3)), specs
    data = calib.random_dataset(specs, 2, 0)
    advice = [*calib.fixed_shapes(specs, [data])[1], calib.random_sizes_said(specs, data.feeds[0])]
    written = [re.search(r"--input \((?:as )?([^ ,)]+)", a).group(1) for a in advice]
    assert specs[0].shape == ("unk__1", "H + 1", 3) and written == ["input_1:0:unk__1x16x3:float32"] * 2, advice
    assert spec(written[0]) == config.InputSpec("input_1:0", ("unk__1", 16, 3)) and str(spec(written[0])) == written[0]
    (tmp_path / "edgekit.toml").write_text('[model]\nsource = "m.onnx"\ninputs = ["input_1:0:Nx16x3"]\n')
    assert config.load_recipe(tmp_path / "edgekit.toml").inputs == (spec("input_1:0:Nx16x3"),)


def test_a_spec_whose_colon_name_ends_in_a_shape_or_dtype_is_refused_as_ambiguous():
    """`x:Nx3x16x16:long` (a dtype typo) parsed as input 'x:Nx3x16x16' of shape ['long'], then exit 3 "model does not
    run on inputs"; `x:Nx3:float32:extra` as input 'x:Nx3:float32'. tf2onnx's `input_1:0` still parses."""
    spec = config.InputSpec.parse
    with pytest.raises(UsageError, match=r"unknown dtype 'long' \(one of float32"):
        spec("x:Nx3x16x16:long")
    with pytest.raises(UsageError, match="bad dimension"):
        spec("x:seq:xx")
    with pytest.raises(UsageError, match="extra field 'extra' after dtype 'float32'"):
        spec("x:Nx3:float32:extra")
    assert spec("input_1:0:Nx3") == config.InputSpec("input_1:0", ("N", 3))
    assert spec("input_1:00:N:int8") == config.InputSpec("input_1:00", ("N",), "int8")
    # a name's word or number before the shape is the name's (image:data, tf2onnx's second output input:1)
    assert spec("image:data:1x3") == config.InputSpec("image:data", (1, 3))
    assert spec("input:1:1x3:int64") == config.InputSpec("input:1", (1, 3), "int64")


def test_nearest_names_a_name_differing_only_in_case():
    """difflib rates 'hn' against 'hN' 0.5: `--state h=hn` named no output to mean."""
    assert config.nearest("hn", ["logits", "hN"]) == " (did you mean 'hN'?)"
    assert config.nearest("calibraton", ["calibration", "validation"]) == " (did you mean 'calibration'?)"
