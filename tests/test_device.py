"""Checking on a device over SSH, against a real OpenSSH server the test starts on 127.0.0.1 (a generated
host key and user key, a free port). The "device" is this machine, its Python the device's Python."""
import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

import edgekit
from conftest import DIGITS, cli, write_manifest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(not (os.access(SSHD, os.X_OK) and shutil.which("ssh") and shutil.which("ssh-keygen")),
                                reason="needs OpenSSH's sshd, ssh and ssh-keygen (Debian: openssh-server)")


def keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().split()[:2]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """(URL prefix ssh://user@127.0.0.1:PORT, identity, known_hosts, folder the device writes into)."""
    tmp = tmp_path_factory.mktemp("sshd")
    host_key, user_key = tmp / "host_key", tmp / "user_key"
    host_pub = keygen(host_key)
    (tmp / "authorized_keys").write_text(" ".join(keygen(user_key)) + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {tmp / 'authorized_keys'}\n"
        f"PidFile {tmp / 'sshd.pid'}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nLogLevel ERROR\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # its privilege-separation folder
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp / "sshd_config")], stderr=subprocess.PIPE)
    for _ in range(50):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if server.poll() is not None:
            pytest.skip(f"sshd did not start: {server.stderr.read().decode()[-300:]}")
        time.sleep(0.1)
    (tmp / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_pub)}\n")
    (tmp / "device").mkdir()
    yield f"ssh://{getpass.getuser()}@127.0.0.1:{port}", user_key, tmp / "known_hosts", tmp / "device"
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="module")
def digits_arm(tmp_path_factory):
    out = tmp_path_factory.mktemp("dev") / "dist"
    result = cli(["export", DIGITS / "edgekit.toml", "-t", "arm64-linux", "--out", out, "--no-bench", "--archive"])
    assert result.exit_code == 0, result.output
    return out


def device_check(url, identity, known_hosts, *extra):
    return cli(["check", *extra, "--device", url, "--identity", identity, "--known-hosts", known_hosts,
                "--device-python", sys.executable, "--json"])


def test_check_and_latency_on_the_device(sshd, digits_arm):
    url, identity, known_hosts, device = sshd
    result = device_check(f"{url}{device}/pkg", identity, known_hosts, digits_arm)
    assert result.exit_code == 0, result.output
    cases = {c["name"]: c for c in json.loads(result.stdout)["cases"]}
    parity, latency = cases["parity model.int8.onnx"], cases["latency"]
    for case in parity, latency:
        assert case["passed"] and case["where"].startswith(f"device {url[6:]}: "), case
        assert f"{os.cpu_count()} cores" in case["where"] and "onnxruntime " in case["where"], case
        # the providers the device's sessions ran with, as a host's figure names them (they were left out)
        assert "x86_64, CPUExecutionProvider, onnxruntime " in case["where"], case
    assert parity["message"].startswith("0 of "), parity
    threads = min(4, os.cpu_count())  # the profile's 4, at most the device's cores (and said so)
    assert latency["message"].startswith(f"{threads} thread(s): p50 fp32 ") and "; 1 thread(s)" in latency["message"]
    assert ("(the profile's 4 threads; it has" in latency["where"]) == (threads < 4), latency
    # the run's own folder went at the end, and so did the folder it had to make for the one named
    assert list(device.iterdir()) == []
    # a folder of the user's with a package's name in it: never written into, and kept
    mine = device / "mine" / "arm64-linux"
    mine.mkdir(parents=True)
    (mine / "model.onnx").write_text("the user's")
    result = device_check(f"{url}{device}/mine", identity, known_hosts, digits_arm / "arm64-linux.tar.gz")
    assert result.exit_code == 0, result.output
    assert [p.name for p in (device / "mine").iterdir()] == ["arm64-linux"]
    assert [p.name for p in mine.iterdir()] == ["model.onnx"] and (mine / "model.onnx").read_text() == "the user's"
    shutil.rmtree(device / "mine")


def test_an_arm_packages_budget_is_not_judged_on_another_kind_of_device(sshd, digits_arm, tmp_path):
    """This x86_64 "device" checking an arm64 package: its figures are shown, its budget (set here) left unjudged."""
    url, identity, known_hosts, device = sshd
    package = tmp_path / "arm64-linux"
    shutil.copytree(digits_arm / "arm64-linux", package)
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["gates"].append({"name": "latency_p50_ms", "value": 1e-9, "op": "<=", "limit": 1e-9, "passed": True})
    write_manifest(package, manifest)
    result = device_check(f"{url}{device}/budget", identity, known_hosts, package)
    assert result.exit_code == 0, result.output
    [latency] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "latency"]
    unjudged = "budget 1e-09 ms not judged: a device of kind x86_64 timed a package for arm64"
    assert latency["passed"] and unjudged in latency["message"], latency


def test_a_package_of_another_kind_is_marked_so_on_the_device(sshd, digits_arm, tmp_path):
    """An arm64 package on this x86_64 "device": parity and latency said to be another kind's (both passed unmarked);
    an x86_64 package there is marked with nothing."""
    url, identity, known_hosts, device = sshd
    result = cli(["export", DIGITS / "edgekit.toml", "-t", "desktop-x86", "--out", tmp_path, "--no-bench"])
    assert result.exit_code == 0, result.output
    shutil.copytree(digits_arm / "arm64-linux", tmp_path / "arm64-linux")
    result = device_check(f"{url}{device}/kinds", identity, known_hosts, tmp_path)
    assert result.exit_code == 0, result.output
    cases = {(c["target"], c["name"]): c for c in json.loads(result.stdout)["cases"]}
    parity, latency = cases["arm64-linux", "parity model.int8.onnx"], cases["arm64-linux", "latency"]
    assert parity["where"].endswith("(a device of kind x86_64, the package for arm64)"), parity
    assert latency["message"].endswith("; latency not judged: a device of kind x86_64 timed a package for arm64")
    for name in "parity model.int8.onnx", "latency":
        x86 = cases["desktop-x86", name]
        assert x86["passed"] and "kind" not in x86["where"] + x86["message"], x86


def fake_python(tmp_path, change: str):
    """A device Python whose runner answers, then has its answer changed by `change` (Python on `answer`)."""
    path = tmp_path / "python"
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\nif sys.argv[1] != '-':\n"
                    f"    os.execv({sys.executable!r}, [{sys.executable!r}, *sys.argv[1:]])\n"
                    "runner = {'__name__': 'runner'}\nexec(sys.stdin.read(), runner)\n"
                    f"answer = runner['serve'](json.loads(sys.argv[2]))\n{change}\nprint(json.dumps(answer))\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("change", [
    "answer['replay'] = []",  # a model's result missing: it once dropped out of the check, which passed
    "answer.pop('about')",
    "answer['providers'] = [['CPUExecutionProvider']]",
    "if answer.get('bench'): answer['bench']['times']['fp32'][0] = float('nan')",
    "if answer.get('bench'): answer['bench']['times']['int8'][0] = -5.0",
    "answer.get('bench') and answer['bench']['times'].update(int8=[])",
    # outputs for the first golden sample only: the other 7 were never compared, and the check passed
    "import base64, io, numpy as np; [d.update(outputs=runner['encode']([{k[2:]: v for k, v in np.load(io.BytesIO("
    "base64.b64decode(d['outputs']))).items() if k.startswith('0.')}])) for d in answer['replay']]",
    "answer['replay'][0]['outputs'] = 'not base64!'",  # these three were exit 5, an internal error
    "import base64, io, numpy as np; b = io.BytesIO(); np.savez(b, **{'0.output': np.array([{}], dtype=object)}); "
    "answer['replay'][0]['outputs'] = base64.b64encode(b.getvalue()).decode()",
    "import base64, io, numpy as np; b = io.BytesIO(); np.savez(b, **{'x.y': np.zeros(1)}); "
    "answer['replay'][0]['outputs'] = base64.b64encode(b.getvalue()).decode()",
    # 2 GiB of zeros, 2 MB deflated: decoded, it took 2 GiB of this host's memory
    "import base64, io, numpy as np; b = io.BytesIO(); np.savez_compressed(b, **{'0.output': np.zeros(1 << 28)}); "
    "answer['replay'][0]['outputs'] = base64.b64encode(b.getvalue()).decode()",
])
def test_an_answer_that_is_not_the_runners_fails_the_step(sshd, digits_arm, tmp_path, change):
    url, identity, known_hosts, device = sshd
    result = cli(["check", digits_arm, "--device", f"{url}{device}/bad", "--identity", identity, "--known-hosts",
                  known_hosts, "--device-python", fake_python(tmp_path, change)])
    assert result.exit_code == 4, result.output
    assert "device run failed" in result.output and "not the runner's result" in result.output, result.output
    assert "Traceback" not in result.output and list(device.iterdir()) == []



def test_an_answer_of_many_empty_entries_is_refused_before_its_directory_is_read(sshd, digits_arm, tmp_path):
    """A device's outputs of 60,000 empty entries (a million fit the answer's 256 MB: zipfile reads a directory whole,
    ~1 GB): refused by the count of its zip directory, at most the golden runs times the outputs each gives back."""
    url, identity, known_hosts, device = sshd
    change = ("import base64, io, zipfile; b = io.BytesIO(); z = zipfile.ZipFile(b, 'w')\n"
              "for k in range(60_000): z.writestr(f'0.o{k}', b'')\n"
              "z.close(); answer['replay'][0]['outputs'] = base64.b64encode(b.getvalue()).decode()")
    result = cli(["check", digits_arm, "--device", f"{url}{device}/bad", "--identity", identity, "--known-hosts",
                  known_hosts, "--device-python", fake_python(tmp_path, change)])
    assert result.exit_code == 4, result.output
    assert re.search(r"not the runner's result: its outputs: its zip directory lists 60000 entries \(at most \d+\)",
                     result.output), result.output

@pytest.mark.parametrize("answer", ['{"about": {}, "replay": []}', '{"run": 5, "made": []}',
                                    '{"run": "/tmp/edgekit-run-x", "made": [null]}', '{"run": "/root", "made": []}',
                                    '{"run": "/tmp/edgekit-run-x", "made": ["/etc"]}'])
def test_a_folder_step_answered_with_something_else_fails_the_step(sshd, digits_arm, tmp_path, answer):
    """It was kept before it was checked: the clean-up then read it, and its KeyError (exit 5, an internal error)
    hid the step's own error; a folder it did not make (/root) would have been removed."""
    url, identity, known_hosts, device = sshd
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\necho '{answer}'\n")
    python.chmod(0o755)
    result = cli(["check", digits_arm, "--device", f"{url}{device}/bad", "--identity", identity, "--known-hosts",
                  known_hosts, "--device-python", python])
    assert result.exit_code == 4 and "device folder failed" in result.output and \
        "did not say which folder it made" in result.output and "Traceback" not in result.output, result.output


def test_what_a_device_prints_back_is_bounded(sshd, digits_arm, tmp_path):
    url, identity, known_hosts, device = sshd
    loud = fake_python(tmp_path, "sys.stdout.buffer.write(b'x' * (300 << 20))")  # 300 MiB, then the answer
    result = cli(["check", digits_arm, "--device", f"{url}{device}/loud", "--identity", identity, "--known-hosts",
                  known_hosts, "--device-python", loud])
    assert result.exit_code == 4 and "printed more than 256 MiB" in result.output, result.output
    assert list(device.iterdir()) == []


def stuck_python(tmp_path, seconds):
    """A device Python whose runner (as sent, its own __main__ included) sleeps where it would answer."""
    stuck = tmp_path / "stuck-python"
    stuck.write_text(f"#!{sys.executable}\nimport os, sys\nif sys.argv[1] != '-':\n"
                     f"    os.execv({sys.executable!r}, [{sys.executable!r}, *sys.argv[1:]])\n"
                     "sys.argv = sys.argv[1:]\nexec(sys.stdin.read().replace('print(json.dumps(serve(asked)))', "
                     f"'time.sleep({seconds})'), {{'__name__': '__main__'}})\n")
    stuck.chmod(0o755)
    return stuck


def test_check_step_timeout_bounds_each_step_on_the_device(sshd, digits_arm, tmp_path):
    """`check --device` ignored --step-timeout: a device step had 600 s, whatever it said."""
    url, identity, known_hosts, device = sshd
    result = cli(["check", digits_arm, "--device", f"{url}{device}/slow", "--identity", identity, "--known-hosts",
                  known_hosts, "--device-python", stuck_python(tmp_path, 20), "--step-timeout", "3"])
    assert result.exit_code == 4, result.output
    assert "no answer within 3 s; raise it with --step-timeout" in result.output, result.output
    assert not (device / "slow").exists()


def test_a_stuck_runner_ends_itself_when_edgekit_stops_waiting(sshd, digits_arm, tmp_path):
    """A runner left behind on a timeout (or a dropped link, or Ctrl-C) would take the device's cores from every
    later timing: it watches its SSH session and its time, and goes."""
    url, identity, known_hosts, device = sshd
    stuck = stuck_python(tmp_path, 60)
    spec = edgekit.DeviceSpec(f"{url}{device}/stuck", str(identity), str(known_hosts), str(stuck), timeout=3)
    with pytest.raises(edgekit.StageError, match="no answer within 3 s"):
        edgekit.check(digits_arm / "arm64-linux", device=spec)
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", str(stuck)], capture_output=True, text=True).stdout.split()
    assert left == [], left
    assert list(device.iterdir()) == []


def test_a_wrong_host_key_is_refused(sshd, digits_arm, tmp_path):
    url, identity, _, device = sshd
    impostor = tmp_path / "impostor"
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{url.rsplit(':', 1)[1]} {' '.join(keygen(impostor))}\n")
    result = device_check(f"{url}{tmp_path}/never", identity, wrong, digits_arm)
    assert result.exit_code == 4, result.output
    assert "device folder failed" in result.output and "Host key verification failed" in result.output, result.output
    assert not (tmp_path / "never").exists()
    empty = tmp_path / "empty_known_hosts"  # an unknown key is never accepted silently either
    empty.write_text("")
    result = device_check(f"{url}{tmp_path}/never", identity, empty, digits_arm)
    assert result.exit_code == 4 and "Host key verification failed" in result.output, result.output


def test_unreachable_device_and_bad_urls(digits_arm, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "kh").write_text("")
    result = cli(["check", digits_arm, "--device", f"ssh://127.0.0.1:{port}/x", "--known-hosts", tmp_path / "kh"])
    assert result.exit_code == 4 and "device folder failed" in result.output, result.output
    assert "the SSH connection failed or dropped: ssh: connect to host 127.0.0.1 port " \
        f"{port}: Connection refused" in result.output, result.output  # ssh's own reason, not "exit code 255"
    export = cli(["export", DIGITS / "edgekit.toml", "-t", "arm64-linux", "--device", f"ssh://127.0.0.1:{port}/x",
                  "--known-hosts", tmp_path / "kh", "--out", tmp_path / "o"])  # was "device run failed"
    assert export.exit_code == 4 and "device connect failed" in export.output, export.output
    assert not (tmp_path / "o").exists()
    for url in ("http://host/x", "ssh://", "ssh://host:99999/x", "ssh://host:0/x", "ssh://host:/x", "ssh://h/a\nb"):
        result = cli(["check", digits_arm, "--device", url])
        assert result.exit_code == 2 and "expected ssh://" in result.output, result.output
    for url, why in (("ssh://u:pw@h/x", "a password in the URL is never used"), ("", "--device is empty"),
                     ("ssh://h/x", "known_hosts /nowhere: no such file")):
        result = cli(["check", digits_arm, "--device", url, "--known-hosts", "/nowhere"])
        assert result.exit_code == 2 and why in result.output, result.output
    result = cli(["check", digits_arm, "--device", "ssh://h/x", "--emulate", "aarch64"])
    assert result.exit_code == 2 and "not both" in result.output, result.output
    result = cli(["check", digits_arm, "--identity", tmp_path / "kh"])
    assert result.exit_code == 2 and "go with --device" in result.output, result.output
    result = cli(["check", digits_arm, "--device", "ssh://h/x", "--device-python", ""])  # was python3, silently
    assert result.exit_code == 2 and "--device-python is empty" in result.output, result.output
    from edgekit.config import DeviceSpec
    from edgekit.device import Device

    assert Device(DeviceSpec("ssh://u@[::1]:2222/x")).label == "device u@[::1]:2222"  # was ::1:2222


def test_export_times_and_checks_its_kind_of_target_on_the_device(sshd, tmp_path):
    url, identity, known_hosts, device = sshd
    flags = ["--device", f"{url}{device}/export", "--identity", identity, "--known-hosts", known_hosts,
             "--device-python", sys.executable, "--bench-runs", "5"]
    result = cli(["export", DIGITS / "edgekit.toml", "-t", "desktop-x86", "-t", "arm64-linux", "--out",
                  tmp_path / "dist", "--json", *flags])
    assert result.exit_code == 0, result.output
    x86, arm = json.loads(result.stdout)["targets"]
    assert x86["latency"]["where"].startswith(f"device {url[6:]}: "), x86["latency"]  # this "device" is x86_64
    assert x86["latency"]["int8"]["host"]["isa_source"] == "device" and x86["latency"]["int8"]["runs"] == 5
    assert ", CPUExecutionProvider, onnxruntime " in x86["latency"]["where"], x86["latency"]  # the device's providers
    assert x86["latency"]["int8"]["host"]["providers"] == ["CPUExecutionProvider"]
    [parity] = [c for c in x86["verification"] if c["name"] == "parity model.int8.onnx"]
    assert parity["passed"] and parity["where"].startswith(f"device {url[6:]}: "), parity
    assert not any(c["name"] == "latency" for c in x86["verification"])  # timed once, above
    assert x86["latency"]["on_device"]
    assert not any("on this host" in w for w in x86["warnings"]), x86["warnings"]  # the figures are the device's
    assert not arm["latency"]["where"].startswith("device") and not arm["latency"]["on_device"]  # the host stood in
    assert list(device.iterdir()) == []
    result = cli(["export", DIGITS / "edgekit.toml", "-t", "arm64-linux", "--out", tmp_path / "none", *flags])
    assert result.exit_code == 2 and "none of the targets is" in result.output, result.output
    assert not (tmp_path / "none").exists()


def test_search_budgets_latency_on_the_device(sshd, tmp_path):
    """`search --device`: every trial timed on the device, one at a time."""
    url, identity, known_hosts, device = sshd
    recipe = tmp_path / "edgekit.toml"
    recipe.write_text(f'[model]\nsource = "{DIGITS / "model.py"}:build"\nweights = "{DIGITS / "digits_cnn.pt"}"\n'
                      f'inputs = ["image:Nx1x8x8"]\n[data]\ncalibration = "{DIGITS / "data" / "calibration.npz"}"\n'
                      f'validation = "{DIGITS / "data" / "validation.npz"}"\n[bench]\nruns = 5\n')
    flags = ["--device", f"{url}{device}/search", "--identity", identity, "--known-hosts", known_hosts,
             "--device-python", sys.executable, "-t", "desktop-x86", "--budget", "latency_ms=100"]
    result = cli(["search", recipe, *flags, "--trials", "2", "--sampler", "random", "--out", tmp_path / "s", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["failed"] == [] and report["where"].startswith(f"device {url[6:]}: "), report
    two = cli(["search", recipe, *flags, "--workers", "2", "--out", tmp_path / "two"])
    assert two.exit_code == 2 and "one trial at a time" in two.output and not (tmp_path / "two").exists()
    arm = cli(["search", recipe, *flags[:-4], "-t", "arm64-linux", "--out", tmp_path / "arm"])
    assert arm.exit_code == 2 and "none of the targets is" in arm.output and not (tmp_path / "arm").exists()


def test_a_device_that_fails_a_search_is_no_verdict_on_its_trials(sshd, tmp_path):
    """A device folder that cannot be made failed every trial after its export, exit 1; a copy that failed in one
    trial was stored as that trial's final verdict (a search resumed after the device was fixed copied the failure
    to the same values); the device's folder counted as a measured setting (`--from-trial` with another folder was
    "measured on other inputs")."""
    import optuna

    url, identity, known_hosts, device = sshd
    recipe = tmp_path / "edgekit.toml"
    recipe.write_text(f'[model]\nsource = "{DIGITS / "model.py"}:build"\nweights = "{DIGITS / "digits_cnn.pt"}"\n'
                      f'inputs = ["image:Nx1x8x8"]\n[data]\ncalibration = "{DIGITS / "data" / "calibration.npz"}"\n'
                      f'validation = "{DIGITS / "data" / "validation.npz"}"\n[bench]\nruns = 3\n')
    (device / "blocker").write_text("a file")
    python = tmp_path / "python"  # the device's Python, failing the package copy (not the folder) while told to
    python.write_text(f'#!/bin/sh\ncase "$*" in *tarfile*) [ -e {tmp_path}/broken ] && exit 7;; esac\n'
                      f'exec {sys.executable} "$@"\n')
    python.chmod(0o755)

    def search(folder, out, *extra):
        return cli(["search", recipe, "--device", f"{url}{device}/{folder}", "--identity", identity, "--known-hosts",
                    known_hosts, "--device-python", python, "-t", "desktop-x86", "--trials", "1", "--sampler",
                    "random", "--out", tmp_path / out, *extra])

    blocked = search("blocker/sub", "blocked")
    assert blocked.exit_code == 4 and "device folder failed" in blocked.stderr, blocked.output
    assert not (tmp_path / "blocked").exists()
    (tmp_path / "broken").touch()
    failed = search("runs", "s")
    assert failed.exit_code != 0 and "device copy failed" in failed.output, failed.output
    [trial] = optuna.load_study(study_name="edgekit", storage=f"sqlite:///{tmp_path / 's' / 'search.db'}").trials
    assert trial.user_attrs["final"] is False, trial.user_attrs  # tried again, not taken as the model's verdict
    (tmp_path / "broken").unlink()
    assert search("runs", "s", "--trials", "2").exit_code in (0, 1)
    storage = f"sqlite:///{tmp_path / 's' / 'search.db'}"
    done = [t.number for t in optuna.load_study(study_name="edgekit", storage=storage).trials
            if t.state == optuna.trial.TrialState.COMPLETE]
    again = cli(["export", recipe, "--from-trial", done[0], "--storage", storage,
                 "--device", f"{url}{device}/elsewhere", "--identity", identity, "--known-hosts", known_hosts,
                 "--device-python", python, "-t", "desktop-x86", "--out", tmp_path / "again"])
    assert again.exit_code in (0, 1) and "measured on other inputs" not in again.output, again.output
    assert not [p for p in device.rglob("edgekit-run-*")], "a run folder was left on the device"


def test_key_and_known_hosts_paths_with_spaces_percent_signs_and_tildes(sshd, tmp_path, monkeypatch):
    """ssh split UserKnownHostsFile at a space, read `%d` in it and in `-i` as the home folder and a leading `~` as a
    home: a valid key and known_hosts failed as a wrong host key ("check the device's fingerprint") or a refused key."""
    from edgekit.config import DeviceSpec
    from edgekit.device import Device

    url, identity, known_hosts, device = sshd
    odd = tmp_path / 'my "keys" %d\\'
    odd.mkdir()
    shutil.copy(identity, odd / "id %d key")
    shutil.copy(known_hosts, odd / "~known hosts")
    monkeypatch.chdir(odd)  # relative paths: `~known hosts` is no home
    with Device(DeviceSpec(f"{url}{device}/odd", "id %d key", "~known hosts", sys.executable)) as reached:
        reached.make_run_folder()
        assert (device / "odd").is_dir()
    assert not (device / "odd").exists()
    with pytest.raises(edgekit.UsageError, match=r"with '\${' in it"):
        Device(DeviceSpec(f"{url}{device}/odd", "id %d key", str(shutil.copy(known_hosts, odd / "${HOME}"))))


@pytest.mark.parametrize("change, why", [
    ("os.kill(os.getpid(), 9)", r"device run failed: device .*: the runner was killed by SIGKILL \(out of memory\?\)"),
    # numpy's ABI error: the message on the lines after "ImportError:" (only the last line was said)
    ("raise ImportError('\\nA module that was compiled using NumPy 1.x cannot be run in\\nNumPy 2.0 may crash.')",
     "device run failed: device .*: ImportError: A module that was compiled using NumPy 1.x cannot be run in$"),
])
def test_a_failed_device_step_says_why(sshd, digits_arm, tmp_path, change, why):
    """A runner killed by a signal was "exit code 255", like a dropped link; an exception lost its message."""
    import re

    url, identity, known_hosts, device = sshd
    result = cli(["check", digits_arm, "--device", f"{url}{device}/why", "--identity", identity, "--known-hosts",
                  known_hosts, "--device-python", fake_python(tmp_path, change)])
    assert result.exit_code == 4 and re.search(why, result.output.strip()), result.output
    assert len(result.output.strip().splitlines()) == 1 and not (device / "why").exists()


def test_a_failed_clean_up_names_every_folder_it_left(sshd, digits_arm, tmp_path, caplog):
    """The warning named the run folder only, not the folders made for it, which clean-up also removes."""
    url, identity, known_hosts, device = sshd
    python = tmp_path / "python"  # the device's Python, failing the clean-up only
    python.write_text(f'#!/bin/sh\ncase "$*" in *rmtree*) exit 7;; esac\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    result = cli(["check", digits_arm, "--device", f"{url}{device}/left/deeper", "--identity", identity,
                  "--known-hosts", known_hosts, "--device-python", python])
    assert result.exit_code == 0, result.output
    [run] = (device / "left" / "deeper").iterdir()
    assert f"{run}, {device}/left/deeper, {device}/left are left there" in caplog.text, caplog.text
    shutil.rmtree(device / "left")


def test_urls_are_percent_decoded_and_a_tilde_user_is_refused(sshd, digits_arm):
    """ssh://…/tmp/a%20b made a folder named `a%20b`, ssh://r%6fot@… logged in as `r%6fot`, and /~root/x made a
    folder named `~root`."""
    from edgekit.config import DeviceSpec
    from edgekit.device import Device

    url, identity, known_hosts, device = sshd
    user, at, address = url[6:].rpartition("@")
    encoded = f"ssh://{''.join(f'%{ord(c):02x}' for c in user)}{at}{address}{device}/a%20b%25"
    with Device(DeviceSpec(encoded, str(identity), str(known_hosts), sys.executable)) as reached:
        assert reached.destination == f"{user}@127.0.0.1"
        reached.make_run_folder()
        assert (device / "a b%").is_dir()
    assert not (device / "a b%").exists()
    for url in ("ssh://h/~root/x", "ssh://h/%7Eroot"):
        result = cli(["check", digits_arm, "--device", url])
        assert result.exit_code == 2 and "/~user/ folders are not supported" in result.output, result.output
    result = cli(["check", digits_arm, "--device", "ssh://h/tmp/a%00b"])
    assert result.exit_code == 2 and "expected ssh://" in result.output, result.output


def test_a_device_check_times_as_the_export_did(sshd, digits_arm, tmp_path):
    """check --device timed 50 runs after 5 warm-up whatever the export used (digits: 20 warm-up, here 12 runs);
    the manifest's record is used now, and 5 and 50 only where it has none (--no-bench) or a mistyped one."""
    url, identity, known_hosts, device = sshd
    out = tmp_path / "dist"
    result = cli(["export", DIGITS / "edgekit.toml", "-t", "arm64-linux", "--out", out, "--bench-runs", "12"])
    assert result.exit_code == 0, result.output
    result = device_check(f"{url}{device}/timing", identity, known_hosts, out / "arm64-linux")
    assert result.exit_code == 0, result.output
    [latency] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "latency"]
    assert "; 12 runs after 20 warm-up" in latency["message"], latency
    from edgekit.package_check import timing

    manifest = json.loads((out / "arm64-linux" / "manifest.json").read_text())
    assert manifest["latency"]["int8"]["warmup"] == 20 and timing(manifest) == (20, 12)
    assert timing(json.loads((digits_arm / "arm64-linux" / "manifest.json").read_text())) == (5, 50)
    manifest["latency"]["int8"].update(runs=True, warmup=-1)  # not counts: a package is a file from others
    assert timing(manifest) == (5, 50)
    manifest["latency"]["int8"].update(runs=1_000_000, warmup=100_000)  # in range, but hours on a device
    assert timing(manifest) == (100, 1000)


@pytest.mark.skipif(shutil.which("qemu-x86_64-static") is None or os.uname().machine not in ("x86_64", "AMD64"),
                    reason="needs an x86-64 host and qemu-x86_64-static (Debian: qemu-user-static)")
def test_export_on_an_x86_device_with_emulate_x86_64_holds_both(sshd, tmp_path):
    """--device and --emulate x86_64 say different things of an x86-64 target, so both hold: the device times it and
    checks its package on its own kernels; the emulated AVX2 CPU holds its int8 figures to the emulated_ gates
    (the saturating MLP's 8-bit weights fail them there, as without --device)."""
    import numpy as np

    url, identity, known_hosts, device = sshd
    before = set(device.iterdir())  # the module's device folder: earlier tests leave theirs (a blocker)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", x=rng.random((64, 64), dtype=np.float32))
    np.savez(tmp_path / "val.npz", x=rng.random((16, 64), dtype=np.float32))
    result = cli(["export", "models:saturating_mlp", "--input", "x:Nx64", "--calibration", tmp_path / "cal.npz",
                  "--validation", tmp_path / "val.npz", "--reduce-range", "false", "--emulate", "x86_64",
                  "--device", f"{url}{device}/both", "--identity", identity, "--known-hosts", known_hosts,
                  "--device-python", sys.executable, "--bench-runs", "5", "--out", tmp_path / "dist", "--json"],
                 env={"EDGEKIT_HOST_ISA": "avx512-vnni"})
    assert result.exit_code == 1, result.output
    [m] = json.loads(result.stdout)["targets"]
    assert m["latency"]["where"].startswith(f"device {url[6:]}: ") and m["latency"]["on_device"], m["latency"]
    [parity] = [c for c in m["verification"] if c["name"] == "parity model.int8.onnx"]
    assert parity["passed"] and parity["where"].startswith(f"device {url[6:]}: "), parity
    assert m["emulated_kernels"]["kernels"].startswith("x86_64 (emulated, epyc-milan)"), m["emulated_kernels"]
    failed = [g["name"] for g in m["gates"] if not g["passed"]]
    assert failed == ["emulated_top1_agreement"], failed
    assert set(device.iterdir()) == before
