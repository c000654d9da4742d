"""ARM truth without a device: packages checked on real aarch64 onnxruntime kernels under qemu user mode.

Needs Debian's qemu-user-static and mmdebstrap (`.ci/run` installs them where it is root) and the package
registries once, to build the cached arm64 root and wheels (~15 s); without the tools these tests skip.
"""
import json
import os
import platform
import shutil

import numpy as np
import pytest
from conftest import DIGITS, cli, rehash, write_manifest
from models import tied_residual_images

from edgekit import emulator, host
from edgekit.errors import InputError

needs_tools = pytest.mark.skipif(any(shutil.which(t) is None for t in emulator.TOOLS),
                                 reason=f"needs {', '.join(emulator.TOOLS)} (Debian: qemu-user-static mmdebstrap)")


@pytest.fixture(scope="module")
def digits_arm(tmp_path_factory):
    out = tmp_path_factory.mktemp("emu") / "dist"
    result = cli(["export", DIGITS / "edgekit.toml", "-t", "arm64-linux", "-t", "android-arm64", "--out", out,
                  "--no-bench"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """TiedResidual exported for arm64-linux, and its export arguments (for other profiles)."""
    tmp = tmp_path_factory.mktemp("tied")
    np.savez(tmp / "cal.npz", image=tied_residual_images(64, 0, bright=True))
    np.savez(tmp / "val.npz", image=tied_residual_images(16, 1, bright=False))
    args = ["export", "models:tied_residual", "--input", "image:Nx3x16x16", "--calibration", tmp / "cal.npz",
            "--validation", tmp / "val.npz", "--no-bench"]
    result = cli([*args, "-t", "arm64-linux", "--out", tmp / "dist"])
    assert result.exit_code == 0, result.output
    return tmp, args


@needs_tools
def test_digits_passes_on_emulated_arm_kernels(digits_arm, tmp_path):
    junit = tmp_path / "parity.xml"
    result = cli(["check", digits_arm, "--emulate", "aarch64", "--json", "--junit", junit])
    assert result.exit_code == 0, result.output
    parity = [c for c in json.loads(result.stdout)["cases"] if c["name"].startswith("parity")]
    assert len(parity) == 3  # arm64-linux's .onnx, android's .onnx and .ort
    for case in parity:
        assert case["passed"] and case["where"].startswith("aarch64 (emulated, neoverse-n1)"), case
        assert case["message"].startswith("0 of ") and "quantized output values differ" in case["message"], case
    assert "aarch64 (emulated, neoverse-n1)" in junit.read_text()
    # another core; the digits outputs are bit-identical to the golden ones there too
    result = cli(["check", digits_arm / "arm64-linux", "--emulate", "aarch64:cortex-a53"])
    assert result.exit_code == 0 and "aarch64 (emulated, cortex-a53)" in result.output, result.output


@needs_tools
def test_tied_residual_add_differs_on_arm_and_probe_names_the_add(tied):
    folder = tied[0] / "dist"
    here = cli(["check", folder, "--json"])
    assert here.exit_code == 0, here.output  # the x86 stand-in passes...
    result = cli(["check", folder, "--emulate", "aarch64", "--probe", "--json"])
    assert result.exit_code == 1, result.output  # ...the real ARM kernels do not
    cases = {c["name"]: c for c in json.loads(result.stdout)["cases"]}
    parity = cases["parity model.int8.onnx"]
    assert not parity["passed"] and "quantized output values differ, by up to" in parity["message"], parity
    differ, total = (int(n.replace(",", "")) for n in parity["message"].split("; ")[1].split()[0:3:2])
    assert 0.05 * total < differ < total, parity["message"]
    probe = cases["probe model.int8.onnx"]
    assert probe["message"].startswith("first difference at /Add (QLinearAdd): "), probe
    assert "up to 1 step(s)" in probe["message"], probe
    assert probe["seconds"] > 0  # it runs the model there and here (it said 0.0)


@needs_tools
def test_tolerance_in_steps_accepts_the_arm_rounding(tied, tmp_path):
    profile = tmp_path / "arm-steps.toml"
    profile.write_text('name = "arm-steps"\n[runtime]\narch = "arm64"\n[package]\ngolden_tolerance_steps = 2\n')
    result = cli([*tied[1], "-t", profile, "--out", tmp_path / "dist", "--json"])
    assert result.exit_code == 0, result.output
    [m] = json.loads(result.stdout)["targets"]
    step = m["golden"]["steps"]["output"]
    assert m["golden"]["models"]["model.int8.onnx"]["atol"]["output"] == pytest.approx(2.5 * step)  # 2 steps + half
    assert "2 quantization step(s) for output" in m["golden"]["tolerance"]
    result = cli(["check", tmp_path / "dist", "--emulate", "aarch64"])
    assert result.exit_code == 0, result.output


def test_emulate_usage_errors(digits_arm, tmp_path, monkeypatch):
    only = "only aarch64[:CPU] and x86_64[:CPU] are emulated"
    for spec, why in (("riscv64", only), ("aarch64:cortex-m4", "is not one of"), ("x86_64:zen4", "is not one of"),
                      ("", only)):  # "" (an unset $EMU) once checked on this host
        result = cli(["check", digits_arm, "--emulate", spec])
        assert result.exit_code == 2 and why in result.output, result.output
    result = cli(["check", digits_arm, "--probe"])
    assert result.exit_code == 2 and "give it --emulate or --device" in result.output, result.output
    monkeypatch.setenv("PATH", str(tmp_path))  # a host without the tools
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    result = cli(["check", digits_arm, "--emulate", "aarch64"])
    assert result.exit_code == 2, result.output
    assert "install Debian's qemu-user-static mmdebstrap" in result.output, result.output
    assert not (tmp_path / "cache").exists()  # nothing built, nothing left behind


needs_x86 = pytest.mark.skipif(shutil.which("qemu-x86_64-static") is None or host.arch_of(platform.machine()) != "x86_64",
                               reason="needs an x86-64 host and qemu-x86_64-static (Debian: qemu-user-static)")


@pytest.fixture(scope="module")
def saturating(tmp_path_factory):
    """models:saturating_mlp's recipe arguments, with data in [0, 1]: its full-range u8s8 sums pass int16."""
    tmp = tmp_path_factory.mktemp("saturating")
    rng = np.random.default_rng(0)
    np.savez(tmp / "cal.npz", x=rng.random((64, 64), dtype=np.float32))
    np.savez(tmp / "val.npz", x=rng.random((16, 64), dtype=np.float32))
    return tmp, ["export", "models:saturating_mlp", "--input", "x:Nx64", "--calibration", tmp / "cal.npz",
                 "--validation", tmp / "val.npz", "--no-bench"]


@needs_x86
def test_full_range_weights_saturate_on_emulated_avx2_kernels_and_check_says_how_to_run_them(saturating):
    """A desktop package made on a VNNI host keeps 8-bit weights (reduce_range auto is off there): on the project's
    AVX2 hosts onnxruntime's default u8s8 kernels (VPMADDUBSW) saturate. Measured on real AVX2 kernels here, not
    assumed; an AVX-only CPU's kernels (SSE) do not saturate, so edgekit does not take them to."""
    tmp, args = saturating
    out = tmp / "full"
    assert cli([*args, "--reduce-range", "false", "--out", out]).exit_code == 0
    result = cli(["check", out, "--emulate", "x86_64", "--json"])
    assert result.exit_code == 1, result.output
    [parity] = [c for c in json.loads(result.stdout)["cases"] if c["name"].startswith("parity")]
    assert not parity["passed"] and parity["where"].startswith("x86_64 (emulated, epyc-milan)"), parity
    assert "saturate" in parity["message"] and "session.x64quantprecision=1" in parity["message"], parity
    assert "--reduce-range true" in parity["message"], parity
    assert cli(["check", out]).exit_code == 0  # this host's exact kernels agree with golden
    result = cli(["check", out, "--emulate", "x86_64:sandybridge"])
    assert result.exit_code == 0 and "x86_64 (emulated, sandybridge)" in result.output, result.output
    assert "sse" not in host.SATURATING_X86 and not emulator.setup("x86_64:sandybridge").saturates


@needs_x86
def test_the_avx2_decision_runs_right_on_real_avx2_kernels(saturating, monkeypatch):
    """EDGEKIT_HOST_ISA=avx2 takes the decisions of an AVX2 host (reduce_range on) whatever this CPU is: the
    package it makes passes on emulated AVX2 kernels, bit for bit, with onnxruntime's default session."""
    tmp, args = saturating
    monkeypatch.setenv("EDGEKIT_HOST_ISA", "avx2")
    assert cli([*args, "--out", tmp / "avx2"]).exit_code == 0
    monkeypatch.delenv("EDGEKIT_HOST_ISA")
    manifest = json.loads((tmp / "avx2" / "desktop-x86" / "manifest.json").read_text())
    assert manifest["quantization"]["reduce_range"] is True
    for cpu in ("epyc-milan", "haswell"):
        result = cli(["check", tmp / "avx2", "--emulate", f"x86_64:{cpu}"])
        assert result.exit_code == 0, result.output
        assert f"x86_64 (emulated, {cpu})" in result.output and "0 of 64 quantized output values differ" in result.output


@needs_x86
def test_x86_emulation_leaves_an_arm_package_to_this_host_and_an_arm_only_export_refuses_it(digits_arm, tmp_path):
    result = cli(["check", digits_arm / "arm64-linux", "--emulate", "x86_64", "--probe", "--json"])
    assert result.exit_code == 0, result.output
    [parity] = [c for c in json.loads(result.stdout)["cases"] if c["name"].startswith("parity")]
    assert "(not emulated, not probed: a package for arm64: --emulate aarch64 runs ARM's kernels)" in \
        parity["where"], parity
    result = cli(["export", DIGITS / "edgekit.toml", "-t", "arm64-linux", "--emulate", "x86_64", "--out",
                  tmp_path / "dist", "--no-bench"])
    assert result.exit_code == 2 and "none of the targets is x86_64 (arm64-linux)" in result.output, result.output
    assert not (tmp_path / "dist").exists()


def _emulated_export(args: list, out, *extra) -> tuple:
    """(the CLI's result, each target's manifest by name) of `args` exported to `out` as a VNNI host decides."""
    result = cli([*args, "--out", out, "--json", *extra], env={"EDGEKIT_HOST_ISA": "avx512-vnni"})
    manifests = {m["target"]: m for m in json.loads(result.stdout)["targets"]} if result.stdout.strip() else {}
    return result, manifests


@needs_x86
def test_export_emulating_avx2_records_its_figures_and_the_samples_its_kernels_change(saturating):
    """A VNNI host keeps 8-bit weights; `export --emulate x86_64` runs the int8 model on emulated AVX2 kernels too:
    its figures, its gates and how many samples differ from this host's are recorded, and are the kernels' own
    (counted again here); 7-bit weights never saturate, so none differ. An ARM target beside is left as it was."""
    from edgekit.runtime import int8_session, run_onnx

    tmp, args = saturating
    out = tmp / "emulated"
    result, found = _emulated_export([*args, "--task", "other", "-t", "desktop-x86", "-t", "arm64-linux"], out,
                                     "--emulate", "x86_64", "--reduce-range", "false")
    assert result.exit_code == 0, result.output
    m, arm = found["desktop-x86"], found["arm64-linux"]
    emulated = m["emulated_kernels"]
    assert emulated["kernels"] == f"x86_64 (emulated, epyc-milan), onnxruntime {m['versions']['onnxruntime']}"
    assert emulated["parity"]["int8_kernels"] == emulated["kernels"] and emulated["parity"]["samples"] == 16
    int8 = out / "desktop-x86" / "model.int8.onnx"
    feeds = [{"x": x[None]} for x in np.load(tmp / "val.npz")["x"]]
    name = m["outputs"][0]["name"]
    there = np.concatenate([o[0] for o in emulator.setup("x86_64").outputs(int8, feeds, [name])])
    here = np.concatenate([o[0] for o in run_onnx(int8_session(int8)[0], feeds)])
    step = m["golden"]["steps"][name]
    differ = np.abs(there - here)
    assert emulated["difference"] == {
        "samples": 16, "differing_samples": int((differ.max(1) > 0).sum()), "values": differ.size,
        "differing_values": int(np.count_nonzero(differ)), "max_abs": pytest.approx(float(differ.max())),
        "max_steps": pytest.approx(float(differ.max()) / step, abs=1e-3)}
    assert emulated["difference"]["differing_samples"] > 0 and emulated["difference"]["max_steps"] > 1
    gates = {g["name"]: g for g in m["gates"]}
    assert gates["emulated_quant_sqnr_db"]["value"] == emulated["parity"]["outputs"][0]["sqnr_db"] < \
        gates["quant_sqnr_db"]["value"]  # saturation costs SQNR this host's kernels do not lose
    assert "emulated_kernels" not in arm and not any(g["name"].startswith("emulated_") for g in arm["gates"])
    assert "x86_64 (emulated, epyc-milan)" in (out / "desktop-x86" / "report.md").read_text()
    assert cli(["check", out]).exit_code == 0  # check accepts the gates it writes...
    del m["gates"][[g["name"] for g in m["gates"]].index("emulated_quant_sqnr_db")]
    write_manifest(out / "desktop-x86", m)
    result = cli(["check", out / "desktop-x86"])  # ...and misses one deleted
    assert result.exit_code == 1 and "gates emulated_quant_sqnr_db are missing" in result.output, result.output
    result, found = _emulated_export([*args, "--task", "other"], tmp / "seven", "--emulate", "x86_64",
                                     "--reduce-range", "true")
    assert result.exit_code == 0, result.output
    assert found["desktop-x86"]["emulated_kernels"]["difference"]["differing_samples"] == 0


@needs_x86
def test_an_export_whose_avx2_figures_fail_a_gate_fails_naming_the_kernels(saturating):
    """The saturating MLP with 8-bit weights passes on this VNNI host's exact kernels; on emulated AVX2 kernels its
    int8 outputs' top class moves (task auto holds it on unlabelled data): `export --emulate x86_64` fails, saying
    which kernels and what to do, where the same export without it passes."""
    tmp, args = saturating
    result, _ = _emulated_export(args, tmp / "here", "--reduce-range", "false")
    assert result.exit_code == 0, result.output
    result = cli([*args, "--reduce-range", "false", "--emulate", "x86_64", "--out", tmp / "avx2"],
                 env={"EDGEKIT_HOST_ISA": "avx512-vnni"})
    assert result.exit_code == 1, result.output
    assert "desktop-x86: int8 on x86_64 (emulated, epyc-milan)" in result.output and "FAIL: emulated_" in \
        result.output, result.output
    m = json.loads((tmp / "avx2" / "desktop-x86" / "manifest.json").read_text())
    failed = [g["name"] for g in m["gates"] if not g["passed"]]
    assert failed and all(name.startswith("emulated_") for name in failed) and not m["passed"], failed
    assert any("on x86_64 (emulated, epyc-milan), onnxruntime" in w and "--reduce-range true" in w
               for w in m["warnings"]), m["warnings"]


@needs_x86
def test_auto_under_emulate_picks_a_trial_that_passes_on_the_emulated_cpu_too(saturating, tmp_path):
    """--auto judged its trials on this VNNI host's exact kernels alone: it kept the 8-bit defaults, whose top class
    moves on emulated AVX2, and the export failed. Trials passing here are run there too, fastest first; the
    defaults fail there only, so their 7-bit twin is tried, passes both and is chosen, and the record says which
    trials ran there and how they did."""
    tmp, args = saturating
    np.savez(tmp_path / "val.npz", x=np.random.default_rng(0).random((96, 64), dtype=np.float32)[64:])
    result = cli([*args, "--validation", tmp_path / "val.npz", "--auto", "--emulate", "x86_64", "--out",
                  tmp_path / "out"], env={"EDGEKIT_HOST_ISA": "avx512-vnni"})
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "out" / "desktop-x86" / "manifest.json").read_text())
    t = m["tuning"]
    assert t["emulated_kernels"].startswith("x86_64 (emulated, epyc-milan)") and t["passed"], t
    defaults, chosen = t["trials"][0], t["trials"][t["chosen"]]
    assert defaults["passed"] and not defaults["reduce_range"], defaults
    assert defaults["emulated"]["failed_gates"] == ["emulated_top1_agreement"], defaults
    assert chosen["reduce_range"] and chosen["passed"] and chosen["emulated"]["passed"], chosen
    assert len(t["trials"]) == 2  # the first trial passing both ends the search
    assert m["quantization"]["reduce_range"] is True and m["passed"], m["quantization"]
    report = (tmp_path / "out" / "desktop-x86" / "report.md").read_text()
    assert "pass; emulated: fail: emulated_top1_agreement" in report, report
    assert cli(["check", tmp_path / "out", "--emulate", "x86_64"]).exit_code == 0


@needs_x86
def test_export_emulate_refuses_what_it_cannot_judge(saturating, tmp_path):
    """--emulate x86_64 with no x86-64 target, with a streaming model, or in a search (whose metric is this host's):
    exit 2 in one line, before any work."""
    tmp, args = saturating
    cases = [([*args, "-t", "arm64-linux", "--emulate", "x86_64"], "none of the targets is x86_64 (arm64-linux)"),
             (["export", "models:streaming", "--input", "x:Nx8", "--input", "state:Nx16", "--output-name", "score",
               "--output-name", "stateN", "--state", "state=stateN", "--no-bench", "--emulate", "x86_64:haswell"],
              "does not replay streaming models"),
             ([*args, "-t", "desktop-x86", "--emulate", "aarch64"], "none of the targets is arm64 (desktop-x86)")]
    for i, (command, why) in enumerate(cases):
        result = cli([*command, "--out", tmp_path / str(i)])
        assert result.exit_code == 2 and why in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / str(i)).exists()
    recipe = tmp_path / "edgekit.toml"
    recipe.write_text(f'[model]\nsource = "models:saturating_mlp"\ninputs = ["x:Nx64"]\n[data]\n'
                      f'calibration = "{tmp / "cal.npz"}"\nvalidation = "{tmp / "val.npz"}"\n')
    result = cli(["search", recipe, "-t", "desktop-x86", "--emulate", "x86_64", "--out", tmp_path / "s"])
    assert result.exit_code == 2 and "`edgekit export --emulate x86_64[:CPU]`" in result.output, result.output
    assert not (tmp_path / "s").exists()


@needs_x86
def test_the_golden_samples_are_those_avx2_saturates_not_the_quiet_first_ones(saturating):
    """Golden samples were validation's first 8: quiet ones passed on AVX2 where the louder rest saturate. Now the
    samples whose int16 pair sums change outputs come first, so `check --emulate x86_64` runs them, and fails."""
    tmp, args = saturating
    rng = np.random.default_rng(1)
    val = rng.random((16, 64), dtype=np.float32)
    val[:8] *= 0.1  # the first samples: sums within int16
    np.savez(tmp / "quiet_first.npz", x=val)
    out = tmp / "quiet_first"
    assert cli([*args, "--validation", tmp / "quiet_first.npz", "--reduce-range", "false", "--out", out]).exit_code == 0
    chosen = json.loads((out / "desktop-x86" / "manifest.json").read_text())["golden"]["chosen"]
    assert chosen["at_risk"] == 8 and {s["sample"] for s in chosen["samples"]} == set(range(8, 16)), chosen
    changed = [s["changed_outputs"] for s in chosen["samples"]]
    assert changed == sorted(changed, reverse=True) and min(changed) > 0
    assert all(s["peak_pair_sum"] > 32767 for s in chosen["samples"]), chosen
    result = cli(["check", out, "--emulate", "x86_64", "--json"])
    assert result.exit_code == 1, result.output
    [parity] = [c for c in json.loads(result.stdout)["cases"] if c["name"].startswith("parity")]
    assert not parity["passed"] and "saturate" in parity["message"], parity


@needs_x86
def test_passing_golden_samples_on_avx2_says_other_inputs_may_saturate(saturating):
    """Inputs none of whose sums reach int16's limit: the golden samples are the first ones, as always, and a pass
    on AVX2 still says that other inputs may saturate. (`--task other`: a tenth of the calibration range, its 8
    outputs' argmax flips, which task auto fails as class scores that lost their spread.)"""
    tmp, args = saturating
    np.savez(tmp / "quiet.npz", x=np.random.default_rng(1).random((16, 64), dtype=np.float32) * 0.1)
    out = tmp / "quiet"
    result = cli([*args, "--validation", tmp / "quiet.npz", "--reduce-range", "false", "--task", "other", "--out", out])
    assert result.exit_code == 0, result.output
    assert "chosen" not in json.loads((out / "desktop-x86" / "manifest.json").read_text())["golden"]
    result = cli(["check", out, "--emulate", "x86_64", "--json"])
    assert result.exit_code == 0, result.output
    [parity] = [c for c in json.loads(result.stdout)["cases"] if c["name"].startswith("parity")]
    assert parity["passed"] and "on the golden samples only" in parity["message"], parity
    assert "session.x64quantprecision=1" in parity["message"], parity


@needs_x86
def test_digits_golden_samples_hold_samples_avx2_kernels_change(tmp_path):
    """The digits desktop package with 8-bit weights: on emulated AVX2 kernels ~30 of its 600 validation images
    differ by a step, none among the first 8. Every one that differs is a sample the saturation score finds at risk,
    the golden samples (the riskiest) hold some, and `check --emulate x86_64` sees them differ; 7-bit weights never
    saturate, and their golden samples stay the first ones."""
    from edgekit import saturation
    from edgekit.runtime import int8_session, run_onnx

    out = tmp_path / "dist"
    assert cli(["export", DIGITS / "edgekit.toml", "-t", "desktop-x86", "--reduce-range", "false", "--out", out,
                "--no-bench"]).exit_code == 0
    int8 = out / "desktop-x86" / "model.int8.onnx"
    images = np.load(DIGITS / "data" / "validation.npz")["image"]
    feeds = [{"image": images[i:i + 1]} for i in range(len(images))]
    avx2 = np.concatenate([o[0] for o in emulator.setup("x86_64").outputs(int8, feeds, ["output"])])
    here = np.concatenate([o[0] for o in run_onnx(int8_session(int8)[0], feeds)])
    differ = set(np.nonzero(np.abs(avx2 - here).max(1) > 0)[0].tolist())
    at_risk = {i for i, r in enumerate(saturation.risks(int8, feeds)) if r.changed}
    assert differ and differ <= at_risk and len(at_risk) < len(images) / 4, (sorted(differ), len(at_risk))
    assert not differ & set(range(8))  # the first 8, golden before
    chosen = json.loads((out / "desktop-x86" / "manifest.json").read_text())["golden"]["chosen"]
    golden = {s["sample"] for s in chosen["samples"]}
    assert len(golden) == 8 and len(golden & differ) >= 4, (sorted(golden), sorted(differ))
    result = cli(["check", out, "--emulate", "x86_64", "--json"])
    [parity] = [c for c in json.loads(result.stdout)["cases"] if c["name"].startswith("parity")]
    assert not parity["message"].startswith("0 of "), parity  # the golden samples differ there now
    assert "on the golden samples only (the 8 of its validation samples riskiest on such a CPU)" in \
        parity["message"], parity
    assert cli(["export", DIGITS / "edgekit.toml", "-t", "desktop-x86", "--reduce-range", "true", "--out",
                tmp_path / "seven", "--no-bench"]).exit_code == 0
    assert "chosen" not in json.loads((tmp_path / "seven" / "desktop-x86" / "manifest.json").read_text())["golden"]


@needs_x86
def test_a_qemu_without_avx2_is_told_not_taken_for_an_avx2_cpu(saturating, tmp_path, monkeypatch):
    """qemu before 7.2 drops AVX2 from its CPU models with a warning: onnxruntime then ran its SSE kernels, which do
    not saturate, and a package that fails on AVX2 passed. The runner asks the CPU (CPUID), not the cpuinfo overlay."""
    tmp, args = saturating
    out = tmp / "full"
    if not out.exists():
        assert cli([*args, "--reduce-range", "false", "--out", out]).exit_code == 0
    old = tmp_path / "bin" / "qemu-x86_64-static"
    old.parent.mkdir()
    old.write_text('#!/bin/bash\nargs=("$@"); args[1]="${args[1]},-avx2,-fma"\n'
                   f'exec {shutil.which("qemu-x86_64-static")} "${{args[@]}}"\n')
    old.chmod(0o755)
    monkeypatch.setenv("PATH", f"{old.parent}{os.pathsep}{os.environ['PATH']}")
    result = cli(["check", out, "--emulate", "x86_64"])
    assert result.exit_code == 2 and "runs no AVX2, FMA3 on -cpu EPYC-Milan-v1" in result.output, result.output
    assert "qemu 7.2 or newer" in result.output


@needs_x86
def test_an_emulated_run_keeps_to_the_step_timeout_and_this_hosts_release_runs_whatever_numpy(tmp_path):
    """--step-timeout bounds the emulated run (it was always 600 s); a package made with this host's onnxruntime and
    another numpy ran on wheels fetched for it (~200 MB, and offline a failure); `emulate=1` was exit 5."""
    import onnxruntime

    import edgekit
    from edgekit.errors import UsageError

    out = tmp_path / "dist"
    assert cli(["export", DIGITS / "edgekit.toml", "-t", "desktop-x86", "--out", out, "--no-bench"]).exit_code == 0
    result = cli(["check", out, "--emulate", "x86_64", "--step-timeout", "0.5"])
    assert result.exit_code == 4 and "x86_64 (emulated, epyc-milan) run" in result.output, result.output
    found = emulator.setup("x86_64", onnxruntime.__version__, "1.0.0")  # no wheels fetched: numpy only carries arrays
    assert found.site == emulator._own_site() and found.python
    assert emulator.parse("X86_64:Haswell") == ("x86_64", "haswell")
    with pytest.raises(UsageError, match="emulate takes a string"):
        edgekit.check(out, emulate=1)


@needs_x86
def test_a_package_no_emulator_can_be_made_for_is_named(saturating, tmp_path):
    """check OUT checks several packages: one whose recorded onnxruntime is no version was told without its name."""
    tmp, args = saturating
    out = tmp_path / "dist"
    assert cli([*args, "--out", out]).exit_code == 0
    manifest = json.loads((out / "desktop-x86" / "manifest.json").read_text())
    manifest["versions"]["onnxruntime"] = manifest["runtime"]["onnxruntime"]["minimum"] = "1.32.0 --index-url x"
    write_manifest(out / "desktop-x86", manifest)
    result = cli(["check", out, "--emulate", "x86_64"])
    assert result.exit_code == 3, result.output
    assert "desktop-x86: the package's manifest records onnxruntime version" in result.output, result.output


def test_a_manifests_versions_that_are_not_numbers_are_bad_input():
    """They were exit 2, a usage error, as if the user had typed them; none reaches pip."""
    place = emulator.for_package("aarch64")
    for versions in ({"onnxruntime": "abc"}, {"numpy": "1.26; --index-url http://x"}, {"onnxruntime": {"x": 1}}):
        with pytest.raises(InputError, match="the package's manifest records .* version .*, not a version number"):
            place({"arm_kernels": "aarch64", "versions": versions})


@needs_tools
def test_export_with_emulate_takes_golden_outputs_from_arm(tied, tmp_path):
    stand_in = json.loads((tied[0] / "dist" / "arm64-linux" / "manifest.json").read_text())
    assert stand_in["arm_kernels"] == "x86 exact kernels (stand-in)"
    result = cli([*tied[1], "-t", "arm64-linux", "-t", "desktop-x86", "--emulate", "aarch64", "--out",
                  tmp_path / "dist", "--json"])
    assert result.exit_code == 0, result.output
    arm, x86 = json.loads(result.stdout)["targets"]
    assert arm["arm_kernels"] == "aarch64 (emulated, neoverse-n1), onnxruntime " + arm["versions"]["onnxruntime"]
    assert arm["golden"]["models"]["model.int8.onnx"]["kernels"] == arm["arm_kernels"]
    assert x86["arm_kernels"] is None and "emulated" not in x86["golden"]["models"]["model.int8.onnx"]["kernels"]
    # the ARM package's golden outputs are ARM's: the emulated check passes, this x86 host's kernels do not, and
    # say where the golden outputs came from; the x86 package is checked here, not on aarch64 (it failed there)
    emulated = cli(["check", tmp_path / "dist", "--emulate", "aarch64", "--json"])
    assert emulated.exit_code == 0, emulated.output
    where = {c["target"]: c["where"] for c in json.loads(emulated.stdout)["cases"] if c["name"].startswith("parity")}
    assert where["arm64-linux"].startswith("aarch64 (emulated") and "not emulated: a package for x86_64" in \
        where["desktop-x86"] and "aarch64" not in where["desktop-x86"], where
    here = cli(["check", tmp_path / "dist" / "arm64-linux"])
    assert here.exit_code == 1 and "quantized output values differ" in here.output and \
        "its golden outputs come from aarch64 (emulated, neoverse-n1)" in here.output, here.output


@needs_tools
def test_search_scores_an_arm_target_on_emulated_kernels(tied, tmp_path):
    tmp, _ = tied
    recipe = tmp_path / "edgekit.toml"
    recipe.write_text(f'[model]\nsource = "models:tied_residual"\ninputs = ["image:Nx3x16x16"]\n[data]\n'
                      f'calibration = "{tmp / "cal.npz"}"\nvalidation = "{tmp / "val.npz"}"\n[bench]\nruns = 5\n')
    args = ["search", recipe, "--trials", "2", "--sampler", "random", "--json"]
    result = cli([*args, "-t", "arm64-linux", "--emulate", "aarch64", "--out", tmp_path / "s"])
    assert result.exit_code in (0, 1), result.output  # 1: no trial passed the target's gates
    report = json.loads(result.stdout)
    assert report["kernels"].startswith("aarch64 (emulated, neoverse-n1)") and report["trials"] == 2, report
    x86 = cli([*args, "-t", "desktop-x86", "--emulate", "aarch64", "--out", tmp_path / "x86"])
    assert x86.exit_code == 2 and "none of the targets is arm64" in x86.output and not (tmp_path / "x86").exists()


@needs_tools
def test_probe_sees_qoperator_ops_and_an_unreadable_model_is_a_failed_case(tied, tmp_path):
    """The probe exposed QuantizeLinear outputs only: a QOperator model that differs on ARM 'agreed bit for bit'.
    A model onnx cannot read was exit 5, with no JUnit written."""
    result = cli([*tied[1], "-t", "arm64-linux", "--format", "QOperator", "--out", tmp_path / "q"])
    assert result.exit_code == 0, result.output
    result = cli(["check", tmp_path / "q", "--emulate", "aarch64", "--probe", "--json"])
    cases = {c["name"]: c for c in json.loads(result.stdout)["cases"]}
    differ = int(cases["parity model.int8.onnx"]["message"].split(" of ")[0].split()[-1].replace(",", ""))
    probe = cases["probe model.int8.onnx"]["message"]
    assert probe.startswith("first difference at ") if differ else probe.startswith("all "), cases
    broken = tmp_path / "broken"
    shutil.copytree(tied[0] / "dist" / "arm64-linux", broken)
    (broken / "model.int8.onnx").write_bytes(b"not a model")
    from edgekit import mobile
    made = mobile.c_header(broken / "model.int8.onnx", broken)  # its C array too: a package that agrees with itself
    rehash(broken, "model.int8.onnx", *(p.name for p in made.values()))
    junit = tmp_path / "j.xml"
    result = cli(["check", broken, "--emulate", "aarch64", "--probe", "--junit", junit, "--json"])
    assert result.exit_code == 1, result.output
    cases = {c["name"]: c for c in json.loads(result.stdout)["cases"]}
    assert not cases["probe model.int8.onnx"]["passed"] and "cannot be probed" in cases["probe model.int8.onnx"][
        "message"], cases
    assert junit.is_file()


def test_what_an_emulated_run_prints_back_is_bounded_and_only_the_outputs_asked_for():
    """A package's model can add a huge output golden does not hold: 256 MB of one took 8 GB here once."""
    import sys

    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgekit import runner
    from edgekit.errors import StageError

    with pytest.raises(StageError, match="printed more than 256 MiB"):
        emulator.run_json([sys.executable, "-c", "import sys; sys.stdout.write('x' * (300 << 20))"], {}, 120, "t")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["small"]), helper.make_node("Tile", ["x", "r"],
                                                                                               ["big"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("small", TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info("big", TensorProto.FLOAT, None)],
                              [helper.make_tensor("r", TensorProto.INT64, [2], [1, 1000])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    [run] = runner.replay(sess, [{"x": np.ones((1, 4), np.float32)}], {}, ["small"])
    assert list(run) == ["small"]


@needs_tools
def test_a_built_cache_on_a_read_only_mount_is_used(digits_arm, tmp_path, monkeypatch):
    """A CI image bakes the cache in read-only: every run rewrote the cpuinfo overlay and took the build lock
    (exit 3, `.lock: Read-only file system`), even with everything built."""
    import subprocess

    assert cli(["check", digits_arm / "arm64-linux", "--emulate", "aarch64"]).exit_code == 0  # built, overlay made
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", "-o", "ro", str(emulator.cache_dir()), str(ro)],
                                           capture_output=True).returncode != 0:
        pytest.skip("a read-only bind mount needs root (and mount permission in this container)")
    try:
        monkeypatch.setenv("EDGEKIT_CACHE", str(ro))
        result = cli(["check", digits_arm / "arm64-linux", "--emulate", "aarch64"])
        assert result.exit_code == 0, result.output
        home = ro / "emulator" / "aarch64"
        if cpu := next((c for c in emulator.CPUS if not (home / f"cpu-{c}").exists()), None):  # an overlay not made
            other = cli(["check", digits_arm / "arm64-linux", "--emulate", f"aarch64:{cpu}"])
            assert other.exit_code == 3 and "cannot be written" in other.output and "EDGEKIT_CACHE" in other.output
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_a_cache_entry_is_readable_by_others(tmp_path):
    """Built as root for a CI image, the wheels folder kept mkdtemp's 0700: the CI user's runs found no numpy."""
    built = emulator._built(tmp_path / "wheels", lambda tmp: (tmp / "numpy").mkdir(), "wheels", lambda _: None)
    assert built.stat().st_mode & 0o777 == 0o755 and (built / "numpy").is_dir()


@needs_tools
def test_a_damaged_cache_is_named_as_the_likely_cause(digits_arm, tmp_path, monkeypatch):
    """A truncated library (qemu's Bus error) or a wheels folder emptied was "run failed: exit code -7: no output"
    or "No module named 'numpy'", with nothing to say the cache was at fault or how to rebuild it."""
    assert cli(["check", digits_arm / "arm64-linux", "--emulate", "aarch64"]).exit_code == 0  # the real cache built
    built = emulator.cache_dir() / "emulator" / "aarch64"
    home = tmp_path / "cache" / "emulator" / "aarch64"
    home.mkdir(parents=True)
    (home / "root").symlink_to(built / "root")
    for wheels in built.glob("python-ort*"):
        (home / wheels.name).mkdir()  # the wheels gone
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    result = cli(["check", digits_arm / "arm64-linux", "--emulate", "aarch64"])
    assert result.exit_code != 0 and f"if the emulator's cache is damaged, remove {home}" in result.output, \
        result.output
    (home / "root").unlink()  # an empty root: its python3 gone ("exit code 1: no output", no hint)
    (home / "root").mkdir()
    for wheels in built.glob("python-ort*"):
        (home / wheels.name).rmdir()
        (home / wheels.name).symlink_to(wheels)
    result = cli(["check", digits_arm / "arm64-linux", "--emulate", "aarch64"])
    assert result.exit_code != 0 and f"if the emulator's cache is damaged, remove {home}" in result.output, \
        result.output


@needs_tools
def test_the_qemu_found_on_path_is_the_one_that_runs(digits_arm, tmp_path, monkeypatch):
    """Found on the user's PATH, qemu was then run by name with PATH=/usr/bin:/bin: one installed elsewhere (built
    from source, a CI cache) was exit 5, FileNotFoundError, and a wrapper first on PATH was never called."""
    real = shutil.which("qemu-aarch64-static")
    wrapper = tmp_path / "bin" / "qemu-aarch64-static"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho called >> "{tmp_path / "log"}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    result = cli(["check", digits_arm / "arm64-linux", "--emulate", "aarch64"])
    assert result.exit_code == 0 and (tmp_path / "log").read_text().startswith("called"), result.output


def _exact_only_flips(int8, fp32, feeds) -> list[int]:
    """The samples whose exact int8 top class is clearly not fp32's (package_check.top1_flips) where an emulated
    AVX2 CPU's saturating default kernels keep fp32's."""
    from edgekit.package_check import top1_flips
    from edgekit.runtime import int8_session, run_onnx, session

    avx2 = emulator.setup("x86_64").outputs(int8, feeds, ["output"])
    exact, reference = run_onnx(int8_session(int8)[0], feeds), run_onnx(session(fp32)[0], feeds)
    return [i for i, (f, e, s) in enumerate(zip(reference, exact, avx2))
            if top1_flips([f[0]], [e[0]])[0] and not top1_flips([f[0]], [s[0]])[0]]


@needs_x86
def test_a_package_made_on_avx2_kernels_with_8_bit_weights_passes_its_top1_check(tmp_path):
    """Made on an AVX2 host (its whole export run on emulated Haswell, its /proc/cpuinfo that CPU's) with
    --reduce-range false, a classifier's verdict is of its saturating default kernels and its golden outputs exact:
    the golden samples' clear flips there were none of the verdict's (top-1 1.0 over validation samples exact int8
    flips), and check (the export's own too) failed the truthful package on them."""
    import subprocess
    import sys

    rng = np.random.default_rng(6)
    np.savez(tmp_path / "cal.npz", image=np.random.default_rng(1).standard_normal((32, 3, 16, 16), np.float32))
    pool = rng.standard_normal((400, 3, 16, 16), np.float32)
    model = f"{os.path.dirname(__file__)}/models.py:small_cnn"
    args = [model, "--input", "image:Nx3x16x16", "--calibration", tmp_path / "cal.npz", "--task", "classify",
            "-t", "desktop-x86", "--no-bench", "--reduce-range", "false"]
    first = tmp_path / "first"
    assert cli(["export", *args, "--out", first], env={host.ISA_ENV: "avx2"}).exit_code in (0, 1)
    made = first / "desktop-x86"
    flips = _exact_only_flips(made / "model.int8.onnx", made / "model.onnx",
                              [{"image": pool[i:i + 1]} for i in range(len(pool))])
    assert flips, "no sample whose exact int8 flips where AVX2's does not"
    np.savez(tmp_path / "val.npz", image=np.concatenate([pool[flips[:8]], pool[-16:]]))
    haswell = emulator.setup("x86_64:haswell")
    run = subprocess.run([haswell.qemu, "-cpu", emulator.X86_CPUS["haswell"][0], "-L", str(haswell.prefix),
                          sys.executable, "-m", "edgekit", "export", *map(str, args), "--validation",
                          str(tmp_path / "val.npz"), "--out", str(tmp_path / "avx2")],
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, capture_output=True, text=True)
    manifest = json.loads((tmp_path / "avx2" / "desktop-x86" / "manifest.json").read_text())
    assert manifest["host"]["cpu_isa"] == "avx2" and manifest["quantization"]["reduce_range"] is False, run.stderr
    result = cli(["check", tmp_path / "avx2", "--json"])
    [gates] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "gates"]
    made = next(c for c in manifest["verification"] if c["name"] == "gates")
    assert "golden samples" not in gates["message"] and made["passed"], (gates, made)


@needs_x86
def test_check_holds_every_emulated_gate_to_the_figures_its_record_keeps(saturating, tmp_path):
    """A failed emulated gate deleted (task auto's top-1 on AVX2, the record kept), or edited to pass over the
    record's figure, with `passed` and the export's own check set true: check passed both packages."""
    tmp, args = saturating
    out = tmp_path / "avx2"
    result, found = _emulated_export(args, out, "--reduce-range", "false", "--emulate", "x86_64")
    assert result.exit_code == 1, result.output
    made = found["desktop-x86"]
    [failed] = [g["name"] for g in made["gates"] if not g["passed"]]
    assert failed == "emulated_top1_agreement"
    for edit in ("deleted", "edited"):
        m = json.loads(json.dumps(made))
        if edit == "deleted":
            m["gates"] = [g for g in m["gates"] if g["name"] != failed]
        else:
            [gate] = [g for g in m["gates"] if g["name"] == failed]
            gate.update(value=gate["limit"], passed=True)
        m["passed"] = True
        m["verification"] = [{**c, "passed": True, "message": ""} for c in m["verification"]]
        write_manifest(out / "desktop-x86", m)
        result = cli(["check", out / "desktop-x86"])
        assert result.exit_code == 1 and f"{failed}" in result.output and "emulated_kernels" in result.output, \
            (edit, result.output)


def test_outputs_of_another_length_count_no_more_differing_values_than_values_compared():
    """A length that follows the values (NonZero's, NMS's) differing on the emulated CPU counts every value of the
    longer output as differing: the values compared counted the shorter, and 5 of 2 values differed."""
    from edgekit.emulated_kernels import difference

    here = [[np.zeros((2, 4), np.float32), np.arange(3)], [np.zeros((1, 4), np.float32), np.arange(3)]]
    there = [[np.zeros((5, 4), np.float32), np.arange(3)], [np.ones((1, 4), np.float32), np.arange(3)]]
    found = difference(here, there, ["boxes", "ids"], {"boxes": 0.5})
    assert (found.samples, found.differing_samples) == (2, 2)
    assert found.differing_values == 20 + 4 and found.values == 20 + 3 + 4 + 3, found
    assert found.max_abs == 1.0 and found.max_steps == 2.0


@needs_x86
def test_an_export_whose_avx2_gates_pass_says_when_check_there_fails_its_golden_outputs(saturating, tmp_path):
    """Task other: the saturating MLP's AVX2 figures pass every gate (cosine 0.9999, SQNR 23.8 dB), and the export
    said `its gates pass`, exit 0; `check --emulate x86_64` on the same CPU then failed the package (its golden
    outputs are this host's, 25 steps off there). The export says so, with check's own words."""
    tmp, args = saturating
    out = tmp_path / "other"
    result, found = _emulated_export([*args, "--task", "other"], out, "--reduce-range", "false", "--emulate", "x86_64")
    assert result.exit_code == 0, result.output
    there = cli(["check", out, "--emulate", "x86_64"])
    assert there.exit_code == 1, there.output
    said = [w for w in found["desktop-x86"]["warnings"] if "check --emulate x86_64" in w]
    assert len(said) == 1 and "fails parity model.int8.onnx" in said[0] and "saturate" in said[0], said
    assert "check --emulate x86_64:epyc-milan" in (out / "desktop-x86" / "report.md").read_text()
    assert "check --emulate x86_64:epyc-milan` fails parity model.int8.onnx" in result.output
    assert cli(["check", out]).exit_code == 0  # this host's check: the report still renders from the manifest
