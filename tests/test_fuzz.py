"""Property tests (hypothesis): the input-spec parser, the recipe/profile loaders and the archive
reader either accept input or raise edgekit's own error; they never crash or write outside their
folder. A few hundred cases each."""
import io
import json
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit import archive, cli, config
from edgekit.config import InputSpec
from edgekit.errors import EdgekitError, InputError, UsageError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

spec_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda n, dims, dt: f"{n}:{'x'.join(dims)}" + (f":{dt}" if dt else ""),
              st.text(alphabet="abcxyz_0123.-", min_size=0, max_size=8),
              st.lists(st.one_of(st.integers(-3, 300).map(str), st.sampled_from(["N", "seq", "", "?", "1.5"])),
                       max_size=5),
              st.one_of(st.none(), st.sampled_from(list(config.DTYPES) + ["float64", "", "int"]))))


@FUZZ
@given(spec_text)
def test_input_spec_parser(text):
    try:
        spec = InputSpec.parse(text)
    except UsageError:
        return
    assert InputSpec.parse(str(spec)) == spec
    assert all((isinstance(d, int) and d > 0) or isinstance(d, str) for d in spec.shape)


scalar = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=32),
                   st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-.:/ 0123456789", max_size=12),
                   st.lists(st.text(alphabet="abcXYZ_0123:x", max_size=8), max_size=3))
TARGET_KEYS = ["name", "description", "opset", "runtime", "quantize", "parity", "budgets", "package", "nmae", "threads"]
SECTION_KEYS = {"runtime": ["providers", "threads", "arch", "thread"],
                "quantize": ["mode", "format", "activation_type", "weight_type", "per_channel", "reduce_range",
                             "calibrate_method", "samples", "op_types", "auto", "max_trials", "percentil"],
                "parity": ["quant_cosine_min", "quant_sqnr_min_db", "export_max_abs", "accuracy_drop_max"],
                "budgets": ["latency_p50_ms_max", "size_mb_max"],
                "package": ["ort_format", "coverage", "min_coverage", "golden_samples", "c_header"],
                "model": ["source", "inputs", "weights", "exporter", "task", "sourc"],
                "data": ["calibration", "validation"], "export": ["targets", "out", "seed", "archive"],
                "bench": ["warmup", "runs"], "prune": ["ratio", "method"], "distill": ["data", "epochs", "alpha"]}


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\\\", "\\\\\\\\").replace('"', '\\\\"') + '"'
    return "[" + ", ".join(toml_value(x) for x in v) + "]"


def toml_doc(top: dict, sections: dict) -> str:
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for name, body in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def docs(top_keys, section_names):
    return st.builds(
        toml_doc,
        st.dictionaries(st.sampled_from(top_keys), scalar, max_size=4),
        st.dictionaries(st.sampled_from(section_names),
                        st.deferred(lambda: st.dictionaries(st.sampled_from(sum(SECTION_KEYS.values(), [])), scalar,
                                                            max_size=4)), max_size=3))


@FUZZ
@given(st.one_of(docs(["name", "description", "opset", "nmae"], ["runtime", "quantize", "parity", "budgets",
                                                                   "package", "extra"]),
                 st.binary(max_size=64).map(lambda b: b.decode("latin-1"))))
def test_profile_loader(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.toml"
        path.write_text(text)
        try:
            target = config.load_target(str(path))
        except UsageError as e:
            assert "p.toml" in str(e)
            return
        assert config.TARGET_NAME.match(target.name)


@FUZZ
@given(docs(["model", "seed"], ["model", "data", "export", "quantize", "bench", "prune", "distill", "other"]))
def test_recipe_loader(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edgekit.toml"
        path.write_text(text)
        try:
            recipe = cli.recipe_from(str(path), {})
        except UsageError as e:
            assert "edgekit.toml" in str(e) or "flags" in str(e)
            return
        assert recipe.source


member = st.tuples(
    st.one_of(st.sampled_from(["t/a.bin", "t/../x", "/abs", "t//b", "..", "t/./c", "t/sub/d", "t\\\\e", "C:/f", ""]),
              st.text(alphabet="ab./_-", min_size=1, max_size=10)),
    st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                     tarfile.FIFOTYPE]),
    st.binary(max_size=64),
    st.sampled_from(["t/a.bin", "/etc/passwd", "../x", ""]))


@FUZZ
@given(st.lists(member, max_size=6))
def test_archive_reader(members):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "a.tar.gz"
        # a manifest listing every member's file name, so the member checks themselves are exercised
        manifest = json.dumps({"files": {Path(n).name: "" for n, *_ in members}}).encode()
        with tarfile.open(path, "w:gz") as tar:
            for name, kind, data, link in [("t/manifest.json", tarfile.REGTYPE, manifest, ""), *members]:
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, link
                info.size = len(data) if kind == tarfile.REGTYPE else 0
                tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        dest = _extract_into(tmp, path)
        outside = [p for p in tmp.rglob("*") if p != path and dest not in p.parents and p != dest]
        assert not outside, outside
        assert not [p for p in dest.rglob("*") if p.is_symlink()]


def test_garbage_archive_is_input_error(tmp_path):
    bad = tmp_path / "x.tar.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    try:
        archive.extract(bad, tmp_path / "d")
    except EdgekitError as e:
        assert e.exit_code == 3
    else:
        raise AssertionError("garbage accepted")


npy_member = st.tuples(st.sampled_from(["image", "labels", "other"]),
                       st.lists(st.integers(0, 1 << 40), max_size=3).map(tuple),  # declared shape: lies welcome
                       st.integers(0, 256),  # bytes of data really there
                       st.sampled_from(["<f4", "<i8", "|u1", "|O"]))


@FUZZ
@given(st.lists(npy_member, max_size=3, unique_by=lambda m: m[0]))
def test_npz_reader_with_declared_size_lies(members):
    """Bounded or refused: never allocates what a header merely claims, never another exception."""
    import zipfile

    import numpy as np

    from edgekit import arrays
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        with zipfile.ZipFile(path, "w") as z:
            for name, shape, real, descr in members:
                buf = io.BytesIO()
                np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
                z.writestr(f"{name}.npy", buf.getvalue() + bytes(real))
        try:
            found = arrays.read_npz(path, lambda n: n != "other", max_bytes=1 << 12)
        except InputError:
            return
        assert sum(a.nbytes for a in found.values()) <= 1 << 12
        assert all(found[n].shape == shape for n, shape, _, _ in members)


@FUZZ
@given(st.integers(0, 1 << 36), st.integers(0, 2048), st.sampled_from([tarfile.REGTYPE, tarfile.GNUTYPE_LONGNAME,
                                                                       tarfile.XHDTYPE]))
def test_archive_reader_with_declared_size_lies(declared, real, kind):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        info = tarfile.TarInfo("t/manifest.json")
        info.type, info.size = kind, declared
        path = tmp / "a.tar"
        path.write_bytes(info.tobuf(format=tarfile.GNU_FORMAT) + b"{" * real + bytes(1024))
        dest = _extract_into(tmp, path)
        assert all(p.stat().st_size <= min(declared, real) for p in dest.rglob("*") if p.is_file())


def _extract_into(tmp: Path, path: Path) -> Path:
    """Extract `path` into tmp/dest; refusing (InputError) is an allowed outcome, nothing else is."""
    dest = tmp / "dest"
    dest.mkdir()
    try:
        archive.extract(path, dest)
    except InputError:
        pass
    return dest
