"""Parity metrics and gates (parity.py), on arrays with known answers."""
import json

import numpy as np
import pytest
from conftest import DIGITS, cli

from edgekit import parity
from edgekit.config import ParitySpec
from edgekit.errors import ExitCode, InputError, InternalError


def test_shape_disagreement_where_the_graph_fixes_it_is_an_internal_error():
    """Both sides are models edgekit made itself: a shape the graph fixes differing is edgekit's bug (exit 5)."""
    with pytest.raises(InternalError, match=r"shapes differ \(\(1, 3\) vs \(1, 4\) in sample 0\) where the graph "
                                            r"fixes them \(\[1, 3\]\)"):
        parity.compare(["y"], [[np.ones((1, 3))]], [[np.ones((1, 4))]], shapes=[(1, 3)])
    with pytest.raises(InternalError, match="where the graph fixes them"):  # the rank is never the values'
        parity.compare(["y"], [[np.ones((3,))]], [[np.ones((1, 3))]], shapes=[("K",)])
    assert InternalError.exit_code == ExitCode.INTERNAL == 5


def test_a_length_that_follows_the_values_differing_is_a_measured_failure():
    """NonMaxSuppression kept 10 boxes on every fp32 sample and 9 on int8's sample 2: exit 5, "internal error:
    reference and candidate shapes differ", no package. The length the graph leaves open ('K') follows the values:
    the samples that differ are counted, the figures are of the others, and a gate fails naming the output."""
    rng = np.random.default_rng(0)
    ref = [[rng.random((10, 3)), rng.random(4)] for _ in range(4)]
    cand = [[r[0] + 1e-3, r[1]] for r in ref]
    cand[2][0] = ref[2][0][:9]
    found = parity.compare(["selected", "fixed"], ref, cand, task="detect", shapes=[("K", 3), (4,)])
    sel, fixed = found
    assert (sel.length_mismatches, sel.length_example) == (1, "(10, 3) vs (9, 3) in sample 2")
    assert sel.cosine > 0.99 and abs(sel.max_abs - 1e-3) < 1e-9 and fixed.length_mismatches is None
    assert sel.as_dict()["length_mismatches"] == 1 and "length_mismatches" not in fixed.as_dict()
    gates = {g.name: g for g in parity.quantization_gates(found, None, ParitySpec(), "detect")}
    bad = gates["quant_length_mismatches"]
    assert (bad.passed, bad.value, bad.limit, bad.output) == (False, 1, 0, "selected")
    assert parity.trial_gate(bad.name) and parity.GATE_NAME.fullmatch(bad.name)
    # y[y > 0]: the reference's own lengths vary (exit 3 before), measured the same; no sample agreeing: None figures
    [y] = parity.compare(["y"], [[np.ones(5)], [np.ones(3)]], [[np.ones(4)], [np.ones(2)]])
    assert (y.length_mismatches, y.cosine, y.max_abs, y.reference_peak) == (2, None, None, 1.0)
    from edgekit import verdict

    said = verdict.length_warning("quantization", sel, 4)
    assert said.startswith("quantization parity: int8 keeps a different number of rows of output 'selected' on 1 of "
                           "4 samples ((10, 3) vs (9, 3) in sample 2)") and "of the samples that agree (3)" in said


def test_an_output_empty_on_every_sample_says_whether_the_data_or_the_model_empties_it():
    """NMS keeping nothing on every validation sample was told 'drop it from what the model returns'."""
    empty = [[np.zeros((0, 3))], [np.zeros((0, 3))]]
    with pytest.raises(InputError, match=r"'selected' holds no values on this validation data \(shape \[0, 3\] on "
                                         r"every sample; its length follows the values, \['K', 3\] in the graph\)"
                                         r".*give validation data on which it keeps some"):
        parity.compare(["selected"], empty, empty, shapes=[("K", 3)])
    with pytest.raises(InputError, match=r"'selected' holds no values \(shape \[0, 3\]\): .* so drop it"):
        parity.compare(["selected"], empty, empty, shapes=[(0, 3)])


def test_gates_from_typed_parity():
    ref = [[np.array([[1.0, 2.0, 3.0]])], [np.array([[3.0, 1.0, 0.5]])]]
    close = [[r[0] + 0.01] for r in ref]
    far = [[r[0][:, ::-1].copy()] for r in ref]  # the classes' scores reversed: top-1 disagrees everywhere
    spec = ParitySpec()
    good = parity.quantization_gates(parity.compare(["y"], ref, close, task="classify"), 0.0, spec, "classify")
    bad = parity.quantization_gates(parity.compare(["y"], ref, far, task="classify"), None, spec, "classify")
    assert all(g.passed for g in good) and {g.name for g in good} >= {"quant_cosine", "top1_agreement"}
    failed = {g.name for g in bad if not g.passed}
    assert {"quant_cosine", "top1_agreement"} <= failed
    [acc] = [g for g in bad if g.name == "accuracy_drop"]
    assert acc.skipped == "no labels in the validation data" and acc.passed and "skipped" in acc.as_dict()
    assert "skipped" not in good[0].as_dict()


def test_one_sample_far_off_fails_the_worst_sample_gate_the_mean_passes(tmp_path):
    """An attention model passed with one validation sample of 64 at cosine 0.64 (a huge value in a feature the
    model ignores crushed that sample's int8 input): the mean over samples, 0.994, held the only cosine gate, and
    SQNR over all samples was 19.8 dB."""
    from models import ignored_feature_data

    for name, n, seed, spike in (("cal", 64, 1, 0.0), ("val", 64, 2, 1000.0)):
        np.savez(tmp_path / f"{name}.npz", **ignored_feature_data(n, seed, spike))
    made = cli(["export", "models:ignored_feature_attention", "--input", "x:Nx16x16", "--calibration",
                tmp_path / "cal.npz", "--validation", tmp_path / "val.npz", "--no-bench", "--json", "--out",
                tmp_path / "out"])
    assert made.exit_code == 1, made.output
    [m] = json.loads(made.stdout)["targets"]
    gates = {g["name"]: g for g in m["gates"]}
    assert [n for n, g in gates.items() if not g["passed"]] == ["quant_cosine_worst"], gates
    assert gates["quant_cosine"]["value"] > 0.99 and gates["quant_cosine_worst"]["value"] < 0.8
    assert gates["quant_cosine_worst"]["limit"] == ParitySpec().quant_cosine_worst_min
    assert "| quant_cosine_worst on output | 0.6" in (tmp_path / "out" / "desktop-x86" / "report.md").read_text()


def test_the_worst_sample_leaves_out_samples_far_quieter_than_the_median():
    """The streaming VAD example failed the worst-sample gate at 0.9475 on a step whose two logits were (-0.13,
    0.094), 5% of the median step's size: int8's few steps of noise there are a wide angle, while every step of
    typical size kept 0.98 and up. A sample of a tenth or more does not leave the worst."""
    rng = np.random.default_rng(0)
    ref = [[rng.standard_normal((1, 2)) * 3] for _ in range(15)] + [[np.array([[-0.13, 0.094]])]]
    cand = [[r[0].copy()] for r in ref[:15]] + [[np.array([[-0.117, 0.164]])]]
    [o] = parity.compare(["speech"], ref, cand)
    assert o.cosine_min == pytest.approx(1.0) and o.quiet_samples == 1
    ref[-1] = [np.array([[-1.3, 0.94]])]  # as large as the others: its angle is the output's worst
    cand[-1] = [np.array([[-1.17, 1.64]])]
    assert parity.compare(["speech"], ref, cand)[0].cosine_min == pytest.approx(0.9475, abs=1e-3)


def test_the_mean_cosine_and_the_worst_leave_out_the_same_quiet_samples():
    """A rank-0 scale input's quiet samples counted in the mean alone: quant_cosine 0.9778 failed at 0.99 while
    quant_cosine_worst, which leaves them out, was 0.9907. Both take the same samples, so the worst is never above
    the mean and the two gates cannot disagree that way; quiet_samples says how many were left out."""
    rng = np.random.default_rng(1)
    loud = [rng.standard_normal((1, 8)) * 3 for _ in range(12)]
    ref = [[a] for a in loud] + [[np.full((1, 8), 0.01) * (-1) ** np.arange(8)] for _ in range(4)]
    cand = [[a + 0.3 * rng.standard_normal(a.shape)] for a in loud] + [[np.full((1, 8), 0.01)] for _ in range(4)]
    [o] = parity.compare(["y"], ref, cand)
    assert o.cosine_min <= o.cosine < 1.0 and o.quiet_samples == 4
    assert o.cosine == pytest.approx(np.mean([parity._cosine(a.ravel(), b[0].ravel()) for a, b in zip(loud, cand)]))
    spec = ParitySpec(quant_cosine_min=o.cosine_min, quant_cosine_worst_min=o.cosine_min)
    gates = {g.name: g.passed for g in parity.quantization_gates([o], None, spec, "other")}
    assert gates["quant_cosine"] and gates["quant_cosine_worst"]  # at the worst's figure, both hold
    assert o.as_dict()["quiet_samples"] == 4


def test_a_given_quiet_floor_leaves_out_the_samples_under_it_as_the_run_did():
    """Check recomputes the cosine on the 8 golden samples, whose own median is not the validation set's: 6 quiet
    ones of 8 made the median quiet and all counted. compare() records the floor it used (quiet_floor, in the
    output's units) and takes it back (`floors`), leaving out the same samples; without one, their own median."""
    rng = np.random.default_rng(2)
    loud = [rng.standard_normal((1, 8)) * 3 for _ in range(56)]
    quiet = [rng.standard_normal((1, 8)) * 0.06 for _ in range(6)]
    ref = [[a] for a in loud[:2] + quiet + loud[2:]]
    cand = [[a[0] + 0.03 * rng.standard_normal(a[0].shape)] for a in ref]
    [run] = parity.compare(["y"], ref, cand)
    rms = np.median([np.sqrt(np.mean(a[0] ** 2)) for a in ref])
    assert run.quiet_samples == 6 and run.quiet_floor == pytest.approx(parity.QUIET * rms)
    assert run.as_dict()["quiet_floor"] == run.quiet_floor
    [own] = parity.compare(["y"], ref[:8], cand[:8])
    [same] = parity.compare(["y"], ref[:8], cand[:8], floors={"y": run.quiet_floor})
    assert own.quiet_samples is None and own.cosine < 0.95  # the quiet samples' noise counted
    assert same.quiet_samples == 6 and same.cosine == pytest.approx(np.mean(
        [parity._cosine(a[0].ravel(), b[0].ravel()) for a, b in zip(ref[:2], cand[:2])]))
    [none] = parity.compare(["y"], ref[2:8], cand[2:8], floors={"y": run.quiet_floor})
    assert none.quiet_samples == 6 and none.cosine is None and none.sqnr_db is not None


def test_top5_agreement_counts_the_reference_class_within_the_candidates_top5():
    ref = [[np.eye(8)[[0, 1, 2, 3]] * 10]]  # 4 rows, reference classes 0..3
    cand = ref[0][0].copy()
    cand[1] = [0, 1, 9, 8, 7, 6, 5, 4]  # class 1 ranks 7th: outside the top 5
    cand[2] = [0, 9, 1, 8, 7, 6, 0, 0]  # class 2 ranks 3rd: inside
    [o] = parity.compare(["y"], ref, [[cand]], task="classify")
    assert o.top1_agreement == 0.5 and o.top5_agreement == 0.75 and o.retrieval_at1 is None
    [plain] = parity.compare(["y"], ref, [[cand]], task="other")
    assert plain.top1_agreement is None and plain.top5_agreement is None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_top5_agreement_breaks_ties_by_class_index_on_every_host(seed):
    """int8 scores tie often: numpy's default argsort orders ties by the host's SIMD sort (this AVX-512 host's and an
    AVX2 one's differed), so the figure was the host's. Ties go to the lower class, as argmax's top-1."""
    rng = np.random.default_rng(seed)
    cand = (rng.integers(-20, 20, (400, 100)) * 0.1).astype(np.float32)  # steps apart: many ties at the 5th place
    ref = rng.normal(size=(400, 100)).astype(np.float32)
    by_index = [sorted(range(100), key=lambda c: (-row[c], c))[:5] for row in cand.astype(np.float64)]
    expected = np.mean([want in top for want, top in zip(ref.argmax(1), by_index)])
    assert parity._agreement([ref], [cand])[1] == expected


def test_retrieval_at1_is_nearest_neighbour_agreement():
    rng = np.random.default_rng(0)
    ref = [[rng.standard_normal((1, 16))] for _ in range(10)]
    noisy = [[r[0] + 1e-4 * rng.standard_normal((1, 16))] for r in ref]
    scrambled = [[rng.standard_normal((1, 16))] for _ in range(10)]
    [good] = parity.compare(["e"], ref, noisy, task="embed")
    [bad] = parity.compare(["e"], ref, scrambled, task="embed")
    assert good.retrieval_at1 == 1.0 and bad.retrieval_at1 < 0.5 and good.top1_agreement is None
    gates = {g.name: g for g in parity.quantization_gates([bad], None, ParitySpec(), "embed")}
    assert not gates["retrieval_at1"].passed and "top1_agreement" not in gates
    [few] = parity.compare(["e"], ref[:2], noisy[:2], task="embed")
    [skip] = [g for g in parity.quantization_gates([few], None, ParitySpec(), "embed") if g.name == "retrieval_at1"]
    assert skip.skipped == "fewer than 3 embeddings in the validation data"


def test_retrieval_near_ties_are_not_errors():
    """Row 0's two nearest rows are almost equally near (cosine 0.995 vs 0.990): picking either is right."""
    base = np.array([1.0, 0.0, 0.0])
    near = np.array([0.995, np.sqrt(1 - 0.995 ** 2), 0.0])
    nearer_too = np.array([0.990, 0.0, np.sqrt(1 - 0.990 ** 2)])
    far = np.array([-1.0, 0.0, 0.0])
    ref = [[v[None]] for v in (base, near, nearer_too, far)]
    flipped = [[v[None]] for v in (base, np.array([0.98, 0.199, 0.0]), np.array([0.999, 0.0, 0.0447]), far)]
    [o] = parity.compare(["e"], ref, flipped, task="embed")
    assert o.retrieval_at1 == 1.0


def test_every_per_output_gate_names_the_worst_output():
    """On a model with two outputs quant_sqnr_db failed as {'name', 'value', ...} with no output named, where the
    top-1 gate named its own: each gate over all outputs names the one that decided it."""
    ref = [[np.array([[3.0, 0.0, 0.0]]), np.array([[1.0, 2.0, 3.0]])]]
    cand = [[np.array([[3.0, 0.0, 0.0]]), np.array([[1.5, 1.5, 3.5]])]]  # the second output is the worse one
    outputs = parity.compare(["y0", "y1"], ref, cand, task="classify")
    gates = {g.name: g for g in parity.quantization_gates(outputs, None, ParitySpec(quant_sqnr_min_db=60.0),
                                                         "classify")}
    assert gates["quant_sqnr_db"].as_dict()["output"] == gates["quant_cosine"].output == "y1", gates
    assert not gates["quant_sqnr_db"].passed and gates["quant_sqnr_db"].label == "quant_sqnr_db on y1"
    assert gates["top1_agreement"].output == "y0"  # a class gate: the scored output, as before


def test_class_metrics_are_measured_on_the_scored_output_only():
    """An embedding beside the logits is no class scores: its argmax got top-1 gates, and a flip there failed."""
    ref = [[np.array([[3.0, 0.0, 0.0]]), np.array([[1.0, 1.001, 0.5]])]]
    cand = [[np.array([[2.9, 0.1, 0.0]]), np.array([[1.001, 1.0, 0.5]])]]  # the embedding's argmax moved
    logits, embedding = parity.compare(["logits", "embedding"], ref, cand, task="classify")
    assert logits.top1_agreement == 1.0 and embedding.top1_agreement is None
    gates = {g.name: g for g in parity.quantization_gates([logits, embedding], 0.0, ParitySpec(), "classify")}
    assert gates["top1_agreement"].passed and gates["top1_agreement"].as_dict()["output"] == "logits"
    assert gates["accuracy_drop"].label == "accuracy_drop on logits" and gates["quant_cosine"].output == "logits"
    same = [[np.array([0]), np.array([[[1.0, 0.0]]])]]  # class ids first and no 2-D scores: the ids are scored
    outputs = parity.compare(["ids", "map"], same, same, task="classify")
    gates = parity.quantization_gates(outputs, None, ParitySpec(), "classify")
    [top1] = [g for g in gates if g.name == "top1_agreement"]
    assert top1.skipped == "the output scored, 'ids', is not class scores (rows x classes, or a map of N x C x H x W)"
    # a streaming model returning its state first: the scores after it are scored (the state was, and lost top-1)
    state_first = [[np.array([[0.5, -0.5, 0.2]]), np.array([[3.0, 0.0]])]]
    outputs = parity.compare(["h", "score"], state_first, state_first, task="classify", plain=("h",))
    gates = {g.name: g for g in parity.quantization_gates(outputs, 0.0, ParitySpec(), "classify")}
    assert outputs[1].top1_agreement == 1.0 and gates["top1_agreement"].as_dict()["output"] == "score"
    assert parity.scored(["h", "score"], ("h",)) == 1 and parity.accuracy(state_first, np.array([0]), 1) == 100.0


def test_export_holds_an_embedding_beside_the_logits_to_cosine_not_top1(tmp_path):
    """An int8 argmax flip on the embedding's near-tie failed top1_agreement (logits' top-1 1.0, accuracy
    unchanged): export and check exited 1, and --auto kept the embedding's Gemm float to keep the tie."""
    from models import logits_and_embedding_data

    for name, n, seed in (("cal", 64, 1), ("val", 32, 2)):
        np.savez(tmp_path / f"{name}.npz", **logits_and_embedding_data(n, seed))
    args = ["export", "models:logits_and_embedding", "--input", "x:Nx4", "--output-name", "logits", "--output-name",
            "embedding", "--calibration", tmp_path / "cal.npz", "--validation", tmp_path / "val.npz",
            "-t", "android-arm64", "--no-bench", "--json"]
    made = cli([*args, "--out", tmp_path / "out"])
    assert made.exit_code == 0, made.output
    [m] = json.loads(made.stdout)["targets"]
    logits, embedding = m["parity"]["quantization"]["outputs"]
    assert m["task"] == "classify" and logits["top1_agreement"] == 1.0 and "top1_agreement" not in embedding
    gates = {g["name"]: g for g in m["gates"]}
    assert gates["top1_agreement"]["output"] == gates["accuracy_drop"]["output"] == "logits"
    assert "| top1_agreement on logits | 1 |" in (tmp_path / "out" / "android-arm64" / "report.md").read_text()
    assert cli(["check", tmp_path / "out" / "android-arm64"]).exit_code == 0
    tuned = cli([*args, "--auto", "--out", tmp_path / "auto"])
    assert tuned.exit_code == 0, tuned.output
    [trial] = json.loads(tuned.stdout)["targets"][0]["tuning"]["trials"]  # the defaults pass: nothing to search for
    assert trial["passed"] and trial["excluded"] == []


def _images(tmp_path, labels=None):
    """cal.npz / val.npz of 8x8 images; `labels(x)` gives the validation labels."""
    rng = np.random.default_rng(0)
    for name, n in (("cal", 32), ("val", 16)):
        x = rng.standard_normal((n, 3, 8, 8)).astype(np.float32)
        np.savez(tmp_path / f"{name}.npz", x=x, **({"labels": labels(x)} if labels and name == "val" else {}))
    return ["--input", "x:Nx3x8x8", "--calibration", tmp_path / "cal.npz", "--validation", tmp_path / "val.npz",
            "--no-bench"]


def test_accuracy_scores_the_class_scores_not_a_map_returned_first(tmp_path):
    """{"z_seg": [N,4,8,8], "a_logits": [N,10]}: accuracy took the argmax over the map's 256 values (0.00 -> 0.00,
    accuracy_drop passing) while top-1 was skipped on it. Both now score the 2-D logits, and check agrees."""
    import torch
    from models import seg_and_logits

    def labels(x):  # the model's own classes: accuracy 100% on the logits, ~10% or less on the map
        with torch.no_grad():
            return seg_and_logits()(torch.from_numpy(x))["a_logits"].argmax(1).numpy()

    made = cli(["export", "models:seg_and_logits", *_images(tmp_path, labels), "--out", tmp_path / "o", "--json"])
    assert made.exit_code == 0, made.output
    [m] = json.loads(made.stdout)["targets"]
    assert m["accuracy"]["fp32"] == m["accuracy"]["torch"] == 100.0, m["accuracy"]
    gates = {g["name"]: g for g in m["gates"]}
    assert gates["top1_agreement"]["output"] == gates["accuracy_drop"]["output"] == "a_logits"
    assert gates["top1_agreement"]["value"] is not None
    assert cli(["check", tmp_path / "o" / "desktop-x86"]).exit_code == 0
    assert parity.scored(["seg", "logits"], (), [(1, 4, 8, 8), ("N", 10)]) == 1
    assert parity.scored(["seg", "logit"], (), [(1, 4, 8, 8), (1, 1)]) == 0  # no 2-D scores: the first


def test_the_scored_output_is_float_scores_the_labels_fit_and_is_named():
    """(top-3 ids int64 [N, 3], logits [N, 10]) with the model's own classes as labels: the ids were scored, exit 3
    "16 labels for 48 predicted class ids" naming no output. A segmentation model's keypoint ids [N, 5] were scored
    against its masks beside the class map they fit. Float scores come first, then the one the labels fit."""
    rng = np.random.default_rng(0)
    logits = [rng.standard_normal((2, 10)) for _ in range(3)]
    cls = [[np.argsort(-z, 1)[:, :3], z] for z in logits]
    labels = np.concatenate([z.argmax(1) for z in logits])
    assert parity.scores(cls, labels) == (100.0, None, 6)
    [ids, scores] = parity.compare(["top3", "logits"], cls, cls, task="classify", labels=labels)
    assert scores.scored and scores.top1_agreement == 1.0 and not ids.scored
    seg = [rng.standard_normal((1, 4, 8, 8)) for _ in range(3)]  # heatmaps [1, 5, 4, 4] first, then the class map
    kpt = [[rng.random((1, 5, 4, 4)), s, s.argmax(1), rng.integers(0, 16, (1, 5))] for s in seg]
    masks = np.concatenate([s.argmax(1) for s in seg])  # (3, 8, 8)
    names = ["heat", "seg", "seg_ids", "kpt"]
    assert parity.scored(names, (), parity.shapes_of(kpt[0]), parity.integer_of(kpt[0])) == 0  # no labels: first map
    assert parity.scores(kpt, masks, names=names)[0] == 100.0
    assert [o.scored for o in parity.compare(names, kpt, kpt, task="classify", labels=masks)] == [0, 1, 0, 0]
    with pytest.raises(InputError, match=r"the scored output 'heat': labels of shape \[3, 7\] .*no output fits the "
                                         r"labels \(considered, float scores first: 'heat' \[1, 5, 4, 4\] float64, "
                                         r"'seg' \[1, 4, 8, 8\] float64, 'seg_ids' \[1, 8, 8\] int64, 'kpt'"):
        parity.scores(kpt, np.zeros((3, 7), int), names=names)
    with pytest.raises(InputError, match=r"label 12 \(row 0\) is out of range: the scored output, 'logits', has 10"):
        parity.scores(cls, np.array([12, 0, 0, 0, 0, 0]), names=["top3", "logits"])


def test_export_scores_the_logits_after_class_ids_and_names_them(tmp_path):
    """A classifier returning its top-3 ids before its logits, labelled with its own classes: exit 3 blamed the
    labels; now the logits are scored (100%), the manifest's accuracy names them, and check agrees."""
    import torch
    from models import ids_before_scores

    def labels(x):
        with torch.no_grad():
            return ids_before_scores()(torch.from_numpy(x))["z_logits"].argmax(1).numpy()

    made = cli(["export", "models:ids_before_scores", *_images(tmp_path, labels), "--out", tmp_path / "o", "--json"])
    assert made.exit_code in (0, 1), made.output  # 1: an int8 flip in the top-3 ids (integer_output_agreement)
    [m] = json.loads(made.stdout)["targets"]
    assert m["accuracy"]["output"] == "z_logits" and m["accuracy"]["fp32"] == 100.0, m["accuracy"]
    gates = {g["name"]: g for g in m["gates"]}
    assert gates["top1_agreement"]["output"] == gates["accuracy_drop"]["output"] == "z_logits"
    assert "labelled samples of output 'z_logits'" in (tmp_path / "o" / "desktop-x86" / "report.md").read_text()
    checked = cli(["check", tmp_path / "o" / "desktop-x86"])
    assert "class gates" not in checked.output, checked.output


def test_a_class_map_is_scored_pixel_by_pixel():
    """[N, C, H, W] logits: top1_agreement was skipped ('not 2-D class scores') and passed, and accuracy took the
    argmax over all C*H*W values. Each pixel is now a row: top-1 (top-5 past 5 classes), the argmax maps' mean IoU,
    and accuracy and mean IoU against a mask per sample."""
    rng = np.random.default_rng(0)
    ref = [[rng.standard_normal((1, 6, 4, 5))] for _ in range(3)]
    cand = [[r[0].copy()] for r in ref]
    cand[0][0][0, :, 0, 0] = -ref[0][0][0, :, 0, 0]  # one pixel of 60 flips its class
    [o] = parity.compare(["map"], ref, cand, task="classify")
    assert o.top1_agreement == 59 / 60 and o.top5_agreement is not None and 0.9 < o.iou_agreement < 1.0
    gates = {g.name: g for g in parity.quantization_gates([o], None, ParitySpec(), "classify")}
    assert gates["top1_agreement"].value == 59 / 60 and gates["top1_agreement"].skipped is None
    masks = np.stack([r[0][0].argmax(0) for r in ref])  # (3, 4, 5): the reference's own classes
    assert parity.scores(ref, masks) == (100.0, 100.0, 60) and parity.accuracy(cand, masks) == 59 / 60 * 100
    with pytest.raises(InputError, match=r"labels of shape \[3, 5, 4\] for class maps of \[4, 5\] pixels per "
                                         r"sample .*labels of shape \[samples, 4, 5\]"):
        parity.accuracy(ref, masks.transpose(0, 2, 1))
    with pytest.raises(InputError, match=r"labels of shape \[3\] for class maps"):  # one label per image
        parity.accuracy(ref, np.zeros(3, int))


def test_a_1x1_class_map_is_rows_of_scores():
    """A SqueezeNet-style [N, C, 1, 1] classifier was read as a class map: accuracy against one label per image was
    reported as "Pixel accuracy ..." with a mean IoU over its classes, and compare gave an iou_agreement. Its one
    pixel is one row, as [N, C] is."""
    from edgekit import report

    rng = np.random.default_rng(0)
    ref = [[rng.standard_normal((2, 10, 1, 1))] for _ in range(3)]
    [o] = parity.compare(["logits"], ref, ref, task="classify")
    assert o.top1_agreement == 1.0 and o.top5_agreement == 1.0 and o.iou_agreement is None
    labels = np.concatenate([r[0][:, :, 0, 0].argmax(1) for r in ref])  # [6]: one per image
    acc, iou, n = parity.scores(ref, labels)
    assert (acc, iou, n) == (100.0, None, 6)
    assert report.accuracy_line(parity.Accuracy(n, acc, acc)).startswith("Accuracy on 6 labelled samples")


def test_a_masks_255_is_ignored_and_a_bad_label_is_placed_by_sample_and_pixel():
    """VOC/Cityscapes masks (255: ignore) exited 3 after the whole export, "label 255 (row 0) is out of range: the
    scored output has 4 class scores", naming a flattened pixel as a row. 255's pixels are left out of accuracy and
    IoU (and the count); a label past the classes names its sample and pixel."""
    rng = np.random.default_rng(0)
    ref = [[rng.standard_normal((1, 4, 3, 5))] for _ in range(2)]
    masks = np.stack([r[0][0].argmax(0) for r in ref])  # (2, 3, 5): right everywhere
    masks[0, :, :2] = 255
    wrong = (masks[1] + 1) % 4
    masks[1, 0] = wrong[0]  # 5 pixels of the 24 kept are wrong
    acc, iou, n = parity.scores(ref, masks)
    assert n == 30 - 6 and acc == pytest.approx(19 / 24 * 100) and iou < 100.0
    masks[1, 2, 3] = 7
    with pytest.raises(InputError, match=r"label 7 \(sample 1, pixel \(2, 3\)\) is out of range: the scored output has "
                                         r"4 class scores \(a mask's 255 marks a pixel to ignore\)"):
        parity.scores(ref, masks)
    with pytest.raises(InputError, match=r"every label is 255, the ignore label"):
        parity.scores(ref, np.full((2, 3, 5), 255))


def test_export_of_a_segmenter_scores_its_pixels_and_masks(tmp_path):
    """--task classify on a [N, 4, 16, 16] map: top1 n/a, the gate passed as skipped; masks as labels exited 3
    ('give one class id per row (not one-hot rows)'). Now a per-pixel top1_agreement gate, pixel accuracy and mean
    IoU; masks of the wrong shape exit 3 naming the map's; without --task classify they are set aside, said."""
    import torch
    from models import tiny_seg

    def masks(x):
        with torch.no_grad():
            return tiny_seg()(torch.from_numpy(x)).argmax(1).numpy()

    rng = np.random.default_rng(0)
    x = {n: rng.standard_normal((k, 3, 16, 16)).astype(np.float32) for n, k in (("cal", 32), ("val", 8))}
    np.savez(tmp_path / "cal.npz", x=x["cal"])
    np.savez(tmp_path / "val.npz", x=x["val"], labels=masks(x["val"]))
    np.savez(tmp_path / "half.npz", x=x["val"], labels=masks(x["val"])[:, ::2])
    args = ["export", "models:tiny_seg", "--input", "x:Nx3x16x16", "--calibration", tmp_path / "cal.npz",
            "--no-bench", "--json"]
    made = cli([*args, "--validation", tmp_path / "val.npz", "--task", "classify", "--out", tmp_path / "o"])
    assert made.exit_code == 0, made.output
    [m] = json.loads(made.stdout)["targets"]
    top1 = next(g for g in m["gates"] if g["name"] == "top1_agreement")
    assert "skipped" not in top1 and top1["value"] > 0.95 and top1["limit"] == ParitySpec().top1_agreement_min
    [out] = m["parity"]["quantization"]["outputs"]
    assert out["top1_agreement"] == top1["value"] and 0.8 < out["iou_agreement"] <= 1.0
    assert "output 'output' is read as a class map (N x C x H x W, class axis 1)" in " ".join(m["warnings"])
    acc = m["accuracy"]
    assert acc["samples"] == 8 * 16 * 16 and acc["fp32"] == 100.0 and acc["mean_iou"]["fp32"] == 100.0, acc
    bad = cli([*args, "--validation", tmp_path / "half.npz", "--task", "classify", "--out", tmp_path / "b"])
    assert bad.exit_code == ExitCode.BAD_INPUT, bad.output
    assert "labels of shape [8, 8, 16] for class maps of [16, 16] pixels per sample" in bad.output
    aside = cli([*args, "--validation", tmp_path / "val.npz", "--out", tmp_path / "a"])
    assert aside.exit_code == 0, aside.output
    [m] = json.loads(aside.stdout)["targets"]
    assert m["task"] == "other" and m["accuracy"] is None and "(its labels set aside: masks)" in aside.output


def test_an_output_holding_no_values_is_refused(tmp_path):
    """f[:, :0] among the outputs exited 5, 'zero-size array to reduction operation maximum'."""
    made = cli(["export", "models:zero_element", *_images(tmp_path), "--out", tmp_path / "o"])
    assert made.exit_code == ExitCode.BAD_INPUT, made.output
    assert "output 'z_seg' holds no values (shape [1, 0, 8, 8])" in made.output and "Traceback" not in made.output


def test_export_error_is_judged_relative_to_a_large_outputs_peak(tmp_path):
    """A map peaking near 50,000 (a depth map in mm) failed export_max_abs at ~0.01 (3e-7 relative, cosine 1.0)."""
    made = cli(["export", "models:depth_in_mm", *_images(tmp_path), "--out", tmp_path / "o", "--json"])
    assert made.exit_code == 0, made.output
    [m] = json.loads(made.stdout)["targets"]
    [gate] = [g for g in m["gates"] if g["name"] == "export_scaled_max_abs"]
    seg = m["parity"]["export"]["outputs"][0]
    assert gate["passed"] and gate["value"] < 1e-5 and seg["reference_peak"] > 1e3, (gate, seg)
    assert cli(["check", tmp_path / "o" / "desktop-x86"]).exit_code == 0
    # within ±1 it stays absolute; integer outputs stay absolute however large
    small = parity.OutputParity("y", 1.0, 1.0, 60.0, 0.002, 0.001, reference_peak=0.5)
    big = parity.OutputParity("y", 1.0, 1.0, 60.0, 0.002, 0.001, reference_peak=5000.0)
    ids = parity.OutputParity("y", None, None, None, 1.0, 0.1, reference_peak=999.0, exact_agreement=0.9)
    assert [parity.scaled_max_abs(o) for o in (small, big, ids)] == [0.002, 0.002 / 5000, 1.0]


def test_a_single_logit_with_binary_labels_says_how_to_score_it(tmp_path):
    """[N, 1] with 0/1 labels: 'label 1 is out of range: ... scores 1 classes', no way forward."""
    made = cli(["export", "models:binary_logit", *_images(tmp_path, lambda x: np.arange(len(x)) % 2),
                "--out", tmp_path / "o"])
    assert made.exit_code == ExitCode.BAD_INPUT, made.output
    assert "a single score is a binary classifier's" in made.output and "--task regress" in made.output
    assert "Traceback" not in made.output


def test_centred_sqnr_sees_a_small_channel_and_an_offset_the_whole_output_hides():
    """Cosine and SQNR over a whole output are ruled by its largest channels and any offset: a logit beside pixel
    boxes kept 3 int8 values (0.8 dB) and a 300 +- 3 regressor 13 (18.3 dB around its mean) while the output passed
    at 45.7 and 58.7 dB. The worst channel's SQNR on values centred on its reference mean shows them."""
    rng = np.random.default_rng(0)
    step = 310 / 255  # a uint8 scale over [0, 310]
    head = np.concatenate([rng.normal(0, 100, (64, 4, 2, 2)), rng.normal(0, 0.1, (64, 2, 2, 2))], 1)
    offset = 300 + rng.normal(0, 2.9, (64, 1))
    for ref, low, high in ((head, -1, 5), (offset, 15, 25)):
        got = np.round(ref / step) * step
        [o] = parity.compare(["y"], [[r] for r in ref[:, None]], [[g] for g in got[:, None]])
        assert o.sqnr_db > 40 and low < o.centred_sqnr_db < high, (o.sqnr_db, o.centred_sqnr_db)
    [same] = parity.compare(["y"], [[offset]], [[offset]])
    assert same.centred_sqnr_db == 200.0
    # a constant channel carries no signal to lose; a 1-D output is one channel; the worse axis of a [N, A, F] output
    flat = np.concatenate([np.ones((64, 1)), rng.normal(0, 1, (64, 1))], 1)
    assert parity.centred_sqnr([flat], [flat + 0.01]) == pytest.approx(parity.centred_sqnr([flat[:, 1:]],
                                                                                           [flat[:, 1:] + 0.01]))
    assert parity.centred_sqnr([offset[:, 0]], [offset[:, 0] + 0.29]) == pytest.approx(20, abs=0.5)
    fields = np.concatenate([rng.normal(0, 100, (8, 30, 4)), rng.normal(0, 0.1, (8, 30, 1))], 2)
    assert parity.centred_sqnr([fields], [fields + 0.1]) < 1  # along the last axis, not the 30 anchors


def test_detect_and_regress_gate_the_worst_channels_centred_sqnr_at_every_bundled_profile():
    """centred_sqnr_db was a figure: a logit beside pixel boxes at 3 int8 values (0.8 dB) and a 300 +- 2.9 regressor
    at 13 (18 dB) passed every gate at cosine 1.0000 when the few-levels rule could not keep them float. Task detect
    and regress now hold it to the profile's centred_sqnr_min_db; classify, embed and other have no such gate (their
    outputs' channels are not read as values)."""
    from edgekit.config import list_targets, load_target

    rng = np.random.default_rng(0)
    step = 310 / 255
    head = np.concatenate([rng.normal(0, 100, (64, 4, 2, 2)), rng.normal(0, 0.1, (64, 2, 2, 2))], 1)
    offset = 300 + rng.normal(0, 2.9, (64, 1))
    for ref in (head, offset):
        rounded = parity.compare(["y"], [[ref]], [[np.round(ref / step) * step]])
        kept = parity.compare(["y"], [[ref]], [[ref + rng.normal(0, 0.01, ref.shape) * ref.std(0)]])  # ~40 dB
        for name in list_targets():
            spec = load_target(name).parity
            for task in ("detect", "regress"):
                [bad] = [g for g in parity.quantization_gates(rounded, None, spec, task) if "centred" in g.name]
                [good] = [g for g in parity.quantization_gates(kept, None, spec, task) if "centred" in g.name]
                assert (bad.name, bad.op, bad.limit) == ("quant_centred_sqnr_db", ">=", spec.centred_sqnr_min_db)
                assert not bad.passed and bad.value < 20 and good.passed, (name, bad, good)
                assert parity.limit_of(bad.name) == (">=", "centred_sqnr_min_db") and parity.GATE_NAME.fullmatch(
                    bad.name)
            for task in ("classify", "embed", "other"):
                assert parity.CENTRED_GATE not in {g.name for g in parity.quantization_gates(rounded, None, spec, task)}
    # integer outputs only: skipped with the cause, as cosine and SQNR are
    ids = parity.compare(["c"], [[np.arange(4)]], [[np.arange(4)]])
    [skip] = [g for g in parity.quantization_gates(ids, None, ParitySpec(), "detect") if g.name == parity.CENTRED_GATE]
    assert skip.passed and skip.skipped == "integer outputs only: compared exactly", skip


def test_a_streaming_models_state_is_no_output_the_centred_sqnr_gate_reads():
    """The VAD with --task regress failed quant_centred_sqnr_db on its GRU state (18.0 dB; speech 38.3), and the
    advice named --exclude-nodes and --task classify: the state is the model's own, not a value the task reads."""
    rng = np.random.default_rng(0)
    speech = rng.normal(0, 1, (64, 2))
    state = np.concatenate([rng.normal(0, 50, (64, 4)), rng.normal(0, 0.05, (64, 4))], 1)  # a quiet channel
    step = np.abs(state).max() / 127
    found = parity.compare(["speech", "state"], [[speech, state]],
                           [[speech + rng.normal(0, 0.01, speech.shape), np.round(state / step) * step]],
                           "regress", ("state",))
    assert [o.centred_sqnr_db is None for o in found] == [False, True] and found[1].sqnr_db is not None
    gates = parity.quantization_gates(found, None, ParitySpec(), "regress")
    [gate] = [g for g in gates if g.name == parity.CENTRED_GATE]
    assert gate.passed and gate.output == "speech", gate


def test_labels_are_scored_as_accuracy_for_a_classifier_only(tmp_path):
    """--task detect with labels in the data: accuracy was computed on the first output's argmax ("0.00 -> 0.00")
    and the accuracy_drop gate passed on it."""
    result = cli(["export", DIGITS / "edgekit.toml", "-t", "desktop-x86", "--task", "detect", "--no-bench", "--out",
                  tmp_path, "--json"])
    assert result.exit_code == 0, result.output
    [m] = json.loads(result.stdout)["targets"]
    [drop] = [g for g in m["gates"] if g["name"] == "accuracy_drop"]
    assert m["accuracy"] is None and drop["skipped"] == "task detect: accuracy scores a classifier's labels only", drop
    [centred] = [g for g in m["gates"] if g["name"] == "quant_centred_sqnr_db"]  # 32.2 dB: its logits spread widely
    assert centred["passed"] and centred["value"] > centred["limit"] + 5, centred


def test_a_nan_or_inf_candidate_is_no_perfect_match_and_float16_is_measured_in_float64():
    """NaN noise read as 200 dB (`noise > 0` and min(200, nan) are False and 200), Inf raised a math domain error,
    and centred_sqnr squared float16 errors in float16: a small channel's underflowed to 0, 200 dB."""
    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.normal(0, 100, (64, 1)), rng.normal(0, 0.1, (64, 1))], 1)
    got = ref + np.concatenate([np.zeros((64, 1)), rng.normal(0, 1e-3, (64, 1))], 1)
    assert parity.centred_sqnr([ref.astype(np.float16)], [got.astype(np.float16)]) == pytest.approx(40, abs=1)
    for bad in (np.nan, np.inf):
        broken = got.copy()
        broken[0, 0] = bad
        [o] = parity.compare(["y"], [[ref]], [[broken]])
        assert o.sqnr_db == o.centred_sqnr_db == -200.0, o


def test_an_nchw_outputs_channels_are_axis_1_not_its_columns():
    """channel_axes gave {1, last}: an NCHW map's W columns were scored as channels, so a border column of near
    constant values read as a channel at 0.04 dB (46.9 now). Axis 1 for 4-D and more; 3-D keeps both ([N, anchors,
    fields])."""
    assert [parity.channel_axes(n) for n in (1, 2, 3, 4, 5)] == [[], [1], [1, 2], [1], [1]]
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, (8, 3, 4, 5))
    ref[..., 0] = 5 + rng.normal(0, 0.01, (8, 3, 4))  # a border column
    assert parity.centred_sqnr([ref], [ref + rng.normal(0, 0.01, ref.shape)]) > 30


def _boxes(rng, k):
    """k corner boxes (x1, y1, x2, y2) spread over a 640 image, each apart from the others."""
    xy = np.stack([np.arange(k) * 60.0, rng.uniform(0, 400, k)], 1)
    return np.concatenate([xy, xy + rng.uniform(20, 50, (k, 2))], 1)


def _detector(rng, counts):
    """torchvision-style samples: boxes [K, 4], scores [K], labels [K] (int64), K per sample as given."""
    found = []
    for k in counts:
        found.append([_boxes(rng, k), np.sort(rng.uniform(0.3, 1.0, k))[::-1].copy(), rng.integers(0, 5, k)])
    return found


NAMES, SHAPES = ["boxes", "scores", "labels"], [("K", 4), ("K",), ("K",)]


def _agreement(ref, cand, shapes=SHAPES, names=NAMES):
    found = parity.compare(names, ref, cand, task="detect", shapes=shapes)
    assert len({o.detection_agreement for o in found}) == 1, found  # one group, one figure on each of its outputs
    return found[0].detection_agreement, found


def test_detections_matched_whatever_their_order():
    """Two near-tie boxes swapping places were errors position by position; matched, int8 finds the same objects."""
    rng = np.random.default_rng(0)
    ref = _detector(rng, [10, 7, 4])
    cand = [[a.copy() for a in sample] for sample in ref]
    order = [1, 0, *range(2, 10)]
    cand[0] = [a[order] for a in cand[0]]  # scores 0 and 1 swapped places, and so their boxes and labels
    agreed, found = _agreement(ref, cand)
    assert agreed == 1.0 and found[0].as_dict()["detection_agreement"] == 1.0 and found[0].detection_rows == 42
    # compared as the same detections: exact, where in order the boxes were 60 px apart
    assert found[0].max_abs == 0.0 and found[2].exact_agreement == 1.0, found
    assert "detection_agreement" not in parity.compare(NAMES, ref, cand, task="other", shapes=SHAPES)[0].as_dict()


def test_one_box_more_in_int8_is_most_of_its_detections_agreeing():
    """int8 keeps one box more on one image: 2 x 9 / (10 + 9) agree there, not a failed sample; the agreement gate
    holds it in place of quant_length_mismatches (still counted), and a limit above it fails, naming the output."""
    rng = np.random.default_rng(1)
    ref = _detector(rng, [9, 5])
    cand = [[a.copy() for a in sample] for sample in ref]
    extra = _detector(rng, [1])[0]
    extra[0][0] += 700  # a box nowhere near the others
    cand[0] = [np.concatenate([a, b]) for a, b in zip(cand[0], extra)]
    agreed, found = _agreement(ref, cand)
    assert agreed == pytest.approx(2 * (9 + 5) / (10 + 9 + 5 + 5)) and found[0].length_mismatches == 1
    only = parity.compare(NAMES, ref[:1], cand[:1], task="detect", shapes=SHAPES)
    assert only[0].detection_agreement == pytest.approx(2 * 9 / (10 + 9))
    gates = {g.name: g for g in parity.quantization_gates(found, None, ParitySpec(), "detect")}
    assert "quant_length_mismatches" not in gates and gates["quant_detection_agreement"].passed
    g = gates["quant_detection_agreement"]
    assert (g.op, g.limit, g.output, g.value) == (">=", 0.9, "boxes", agreed)
    bad = {g.name: g for g in parity.quantization_gates(found, None, ParitySpec(detection_agreement_min=1.0),
                                                        "detect")}["quant_detection_agreement"]
    assert not bad.passed and bad.label == "quant_detection_agreement on boxes"
    assert parity.trial_gate(bad.name) and parity.GATE_NAME.fullmatch(bad.name)
    assert parity.limit_of(bad.name) == (">=", "detection_agreement_min")
    # other tasks keep the count at a limit of 0
    other = parity.compare(NAMES, ref, cand, task="other", shapes=SHAPES)
    assert not {g.name: g for g in parity.quantization_gates(other, None, ParitySpec(), "other")}[
        "quant_length_mismatches"].passed
    from edgekit import verdict

    [said] = verdict.length_warnings("quantization", found, 2)  # one line for the detector's three outputs
    assert said.startswith("quantization parity: int8 keeps a different number of rows of outputs 'boxes', 'scores', "
                           "'labels' on 1 of 2 samples"), said
    assert "its detections matched (IoU >= 0.5, labels equal): 0.9655 of them agree" in said, said


def test_a_box_whose_label_moved_is_not_the_same_detection():
    rng = np.random.default_rng(2)
    ref = _detector(rng, [6, 3])
    cand = [[a.copy() for a in sample] for sample in ref]
    cand[1][2] = cand[1][2].copy()
    cand[1][2][0] += 1
    agreed, _ = _agreement(ref, cand)
    assert agreed == pytest.approx(2 * 8 / 18)


def test_centre_size_boxes_are_read_as_such():
    """x2 < x1 on a reference row: the box is cx, cy, w, h. Read as corners, a box shifted by a quarter of its width
    would have matched nothing (an inverted box has no area); as centre-size its IoU is 0.6."""
    ref = [[np.array([[100.0, 100.0, 40.0, 40.0], [300.0, 300.0, 40.0, 40.0]])], [np.array([[50.0, 50, 10, 10]])]]
    cand = [[ref[0][0] + [10.0, 0, 0, 0]], [ref[1][0] + [2.0, 0, 0, 0]]]  # IoU 30 / 50, 8 / 12
    agreed, _ = _agreement(ref, cand, [("K", 4)], ["boxes"])
    assert agreed == 1.0
    cand[1][0] = ref[1][0] + [6.0, 0, 0, 0]  # IoU 4 / 16 = 0.25 under 0.5
    cand[0][0] = cand[0][0] + [[0, 30.0, 0, 0], [0, 0, 0, 0]]
    agreed, _ = _agreement(ref, cand, [("K", 4)], ["boxes"])
    assert agreed == pytest.approx(2 * 1 / 6)


def test_nms_selected_indices_match_as_sets_and_empty_samples_agree():
    """ONNX NonMaxSuppression's selected_indices [K, 3] (batch, class, box): the same rows in any order."""
    ref = [[np.array([[0, 0, 3], [0, 1, 5], [0, 0, 7]])], [np.array([[0, 2, 1]])], [np.zeros((0, 3), np.int64)]]
    cand = [[ref[0][0][::-1].copy()], [np.array([[0, 2, 1], [0, 2, 4]])], [np.zeros((0, 3), np.int64)]]
    agreed, found = _agreement(ref, cand, [("K", 3)], ["selected"])
    assert agreed == pytest.approx(2 * 4 / (4 + 5)) and found[0].length_mismatches == 1
    cand[0][0] = np.array([[0, 0, 3], [0, 1, 6], [0, 0, 7]])  # box 5 of class 1 lost, box 6 found instead
    assert _agreement(ref, cand, [("K", 3)], ["selected"])[0] == pytest.approx(2 * 3 / 9)
    # no detection on any sample in either: all agree (parity itself refuses such data: nothing to compare values of)
    from edgekit import detections

    none = [[np.zeros((0, 4)), np.zeros(0)], [np.zeros((0, 4)), np.zeros(0)]]
    agreed = detections.measure(["boxes", "scores"], none, none, [("K", 4), ("K",)],
                                recorded=dict.fromkeys(("boxes", "scores"))).agreed
    assert {k: a.agreement for k, a in agreed.items()} == {0: 1.0, 1: 1.0}
    with pytest.raises(InputError, match="holds no values on this validation data"):
        parity.compare(["boxes", "scores"], none, none, task="detect", shapes=[("K", 4), ("K",)])


def test_yolo_rows_match_by_their_box_and_class_column():
    """[K, 6]: x1, y1, x2, y2, score, class; the class column moved is another detection."""
    rng = np.random.default_rng(3)
    rows = [np.concatenate([_boxes(rng, k), rng.uniform(0.3, 1, (k, 1)), rng.integers(0, 3, (k, 1))], 1)
            for k in (5, 8)]
    ref = [[r] for r in rows]
    cand = [[r[::-1] + [[1.0, 1, 1, 1, 0.01, 0]]] for r in rows]  # a pixel off, in reverse order
    assert _agreement(ref, cand, [("K", 6)], ["rows"])[0] == 1.0
    batched = [[r[None]] for r in rows]  # [1, K, 6]: one image's rows
    assert _agreement(batched, [[c[0][None]] for c in cand], [(1, "K", 6)], ["rows"])[0] == 1.0
    cand[1][0][0, 5] += 1
    assert _agreement(ref, cand, [("K", 6)], ["rows"])[0] == pytest.approx(2 * 12 / 26)


def test_a_box_swapped_for_another_on_a_sample_of_the_same_count_leaves_the_others_compared_as_themselves():
    """NMS returns its boxes by score: int8 losing box 2 and finding another, last, kept the count and shifted every
    box after 2 one place up, each compared with its neighbour (errors of 60 px). The figures are of the matched
    detections; the one found by each alone is the agreement's to count."""
    rng = np.random.default_rng(4)
    ref = _detector(rng, [8, 6])
    cand = [[a + 0.01 if a.dtype.kind == "f" else a.copy() for a in sample] for sample in ref]
    other = [np.array([[900.0, 900, 930, 930]]), np.array([0.31]), ref[0][2][:1]]
    cand[0] = [np.concatenate([np.delete(a, 2, axis=0), b]) for a, b in zip(cand[0], other)]
    agreed, found = _agreement(ref, cand)
    assert agreed == pytest.approx(2 * 13 / 28) and found[0].length_mismatches is None
    assert found[0].max_abs == pytest.approx(0.01) and found[2].exact_agreement == 1.0, found


def _far_boxes(k, x0=0.0):
    """k corner boxes 60 px apart along x from x0, each 40 px square."""
    return np.stack([x0 + np.arange(k) * 60.0, np.zeros(k), x0 + np.arange(k) * 60.0 + 40, np.full(k, 40.0)], 1)


def test_figures_are_of_the_matched_rows_on_every_sample_whatever_the_counts():
    """A dense detector moves a box across the cut on every image: the figures were of the samples keeping one count,
    none, so cosine and SQNR were unmeasured and failed the package though 95% of the detections agree, each exactly.
    They are of the matched rows on every sample with one; a sample with none is left out (unmatched_samples), and
    length_mismatches still counts the samples whose count differs, said in their own shapes."""
    ref, cand = [], []
    for i in range(20):
        k = 10 + i % 3
        ref.append([_far_boxes(k), np.linspace(0.95, 0.6, k), np.arange(k) % 4])
        cand.append([np.concatenate([_far_boxes(k), [[2000.0, 2000, 2040, 2040]]]),
                     np.append(np.linspace(0.95, 0.6, k), 0.51), np.append(np.arange(k) % 4, 0)])
    cand[5] = [_far_boxes(3, x0=5000.0), np.array([0.9, 0.8, 0.7]), np.arange(3)]  # nothing of sample 5's found
    out = parity.compare(NAMES, ref, cand, task="detect", shapes=SHAPES)
    assert out[0].detection_agreement > 0.9 and out[0].cosine == pytest.approx(1.0) and out[2].exact_agreement == 1.0
    assert [(o.length_mismatches, o.unmatched_samples) for o in out] == [(20, 1)] * 3, out
    assert out[0].length_example == "(10, 4) vs (11, 4) in sample 0" and out[1].length_example.startswith("(10,) vs")
    failed = [g.name for g in parity.quantization_gates(out, None, ParitySpec(), "detect") if not g.passed]
    assert failed == [], failed


def test_one_inverted_reference_box_does_not_read_corner_boxes_as_centre_size():
    """Corner boxes; int8 lost box 0 and found one 30 px off box 1 (IoU 0.14). One thin inverted box on another image
    (an unclipped regressor) read the whole output as cx, cy, w, h, where the lost box matched: most rows decide. The
    degenerate box both models give is one detection (IoU 1 with the very same box)."""
    a = np.array([[100.0, 100, 140, 140], [150, 100, 190, 140], [400, 400, 440, 440]])
    c = np.array([[150.0, 100, 190, 140], [180, 100, 220, 140], [400, 400, 440, 440]])
    other = np.array([[10.0, 10, 50, 50], [300.0, 300, 299.5, 330]])
    plain = parity.compare(["boxes"], [[a], [other[:1]]], [[c], [other[:1]]], task="detect", shapes=[("K", 4)])
    flipped = parity.compare(["boxes"], [[a], [other]], [[c], [other]], task="detect", shapes=[("K", 4)])
    assert plain[0].detection_agreement == pytest.approx(2 * 3 / 8)
    assert flipped[0].detection_agreement == pytest.approx(2 * 4 / 10)
    assert flipped[0].detection_match == {"group": 0, "axis": 0, "role": "box", "centre_size": False}


def test_check_matches_the_golden_samples_as_the_run_recorded():
    """Check's few golden samples may read otherwise than validation: the box format (an inverted box late in
    validation), or no row axis at all ([N, K, 6], batch and count open, every golden sample keeping 5 rows): the
    agreement claimed was then unbounded. The run records each output's Match; check matches as it says."""
    from edgekit import package_check

    a = np.array([[100.0, 100, 140, 140], [150, 100, 190, 140], [400, 400, 440, 440]])
    c = np.array([[150.0, 100, 190, 140], [180, 100, 220, 140], [400, 400, 440, 440]])
    late = np.array([[10.0, 10, 50, 50], [300.0, 300, 299.5, 330]])
    export = parity.compare(["boxes"], [[a], [late]], [[c], [late]], task="detect", shapes=[("K", 4)])[0]
    golden = parity.compare(["boxes"], [[a]], [[c]], task="detect", shapes=[("K", 4)],
                            detected={"boxes": export.detection_match})[0]
    assert export.detection_agreement <= package_check._detection_best(golden.as_dict(), export.as_dict())
    rng = np.random.default_rng(5)

    def rows(k):
        return np.concatenate([_boxes(rng, k), np.linspace(0.9, 0.5, k)[:, None], np.arange(k)[:, None] % 3], 1)[None]
    ref = [[rows(5)], [rows(4)]]
    cand = [[ref[0][0][:, ::-1].copy()], [ref[1][0][:, :3].copy()]]
    run = parity.compare(["rows"], ref, cand, task="detect", shapes=[("N", "K", 6)])[0]
    assert run.detection_match == {"group": 0, "axis": 1, "role": "box", "centre_size": False}, run
    same = parity.compare(["rows"], ref[:1], cand[:1], task="detect", shapes=[("N", "K", 6)],
                          detected={"rows": run.detection_match})[0]
    assert same.detection_agreement == 1.0 and same.cosine == pytest.approx(1.0)
    guessed = parity.compare(["rows"], ref[:1], cand[:1], task="detect", shapes=[("N", "K", 6)], detected=("rows",))
    assert guessed[0].detection_agreement == 1.0  # a package recording no Match: the graph's last open axis
    edited = {**run.detection_match, "axis": 7}  # a record that fits no array is no record
    assert parity.compare(["rows"], ref[:1], cand[:1], task="detect", shapes=[("N", "K", 6)],
                          detected={"rows": edited})[0].detection_agreement == 1.0


def test_masks_and_keypoints_ride_with_their_boxes():
    """Mask R-CNN's masks [K, 1, H, W], a keypoint head's [K, 17, 3]: left out of the group (every axis but the rows'
    and the last had to be 1), they were not reordered with their boxes (a near-tie swap: mask cosine 0.92 of the
    same detections) and kept the length gate. They ride along now, never matched by."""
    rng = np.random.default_rng(0)

    def sample(k):
        return [_far_boxes(k), np.linspace(0.9, 0.5, k), np.arange(k), rng.uniform(0, 1, (k, 1, 8, 8)),
                rng.uniform(0, 1, (k, 17, 3))]
    ref = [sample(6), sample(4)]
    cand = [[a.copy() for a in s] for s in ref]
    cand[0] = [a[[1, 0, 2, 3, 4, 5]] for a in cand[0]]
    cand[1] = [np.concatenate([a, a[:1]]) for a in cand[1]]
    cand[1][0][-1] += 1000
    out = parity.compare(["boxes", "scores", "labels", "masks", "keypoints"], ref, cand, task="detect",
                         shapes=[*SHAPES, ("K", 1, 8, 8), ("K", 17, 3)])
    assert [o.detection_agreement for o in out] == [pytest.approx(2 * 10 / 21)] * 5
    assert out[3].cosine == pytest.approx(1.0) and out[4].cosine == pytest.approx(1.0), out
    assert [o.detection_match["role"] for o in out] == ["box", "score", "equal", "carried", "carried"]
    gates = {g.name: g.passed for g in parity.quantization_gates(out, None, ParitySpec(), "detect")}
    assert gates["quant_detection_agreement"] and "quant_length_mismatches" not in gates and all(gates.values())


def test_integer_boxes_match_by_iou_and_whole_number_float_labels_are_labels():
    """Boxes cast to int64 pixels, one pixel off, were equal fields: agreement 0 for the same objects. labels.float()
    beside the scores was taken for the score, and a label changed went unseen."""
    b = np.array([[10, 10, 50, 50], [100, 100, 160, 150], [200, 20, 260, 90]], np.int64)
    ref = [[b, np.array([0.9, 0.8, 0.7])], [b[:2], np.array([0.9, 0.8])]]
    cand = [[b + 1, np.array([0.9, 0.8, 0.7])], [b[:2] + 1, np.array([0.9, 0.8])]]
    out = parity.compare(["boxes", "scores"], ref, cand, task="detect", shapes=[("K", 4), ("K",)])
    assert out[0].detection_agreement == 1.0 and out[0].detection_match["role"] == "box"
    boxes = np.array([[10.0, 10, 50, 50], [100, 100, 160, 150]])
    ref = [[boxes, np.array([1.0, 2.0]), np.array([0.9, 0.8])], [boxes[:1], np.array([1.0]), np.array([0.9])]]
    cand = [[boxes, np.array([3.0, 4.0]), np.array([0.9, 0.8])], [boxes[:1], np.array([1.0]), np.array([0.9])]]
    out = parity.compare(["boxes", "labels", "scores"], ref, cand, task="detect", shapes=[("K", 4), ("K",), ("K",)])
    assert out[0].detection_agreement == pytest.approx(2 * 1 / 6)
    assert [o.detection_match["role"] for o in out] == ["box", "equal", "score"]


def test_an_output_of_more_rows_than_a_detector_keeps_is_not_matched_and_iou_stays_small():
    """A raw dense head [1, N, 85] on images of other sizes varies in N with the image, not the values: matched, its
    6,000 rows took 2.3 GB. Over MAX_DETECTION_ROWS rows it is compared as before; IoU takes a few n x m arrays."""
    import tracemalloc

    from edgekit import detections

    most = detections.MAX_DETECTION_ROWS
    rng = np.random.default_rng(0)
    ref = [[rng.uniform(0, 1, (1, n, 6))] for n in (most + 1, most - 1)]
    out = parity.compare(["head"], ref, [[a.copy() for a in s] for s in ref], task="detect", shapes=[(1, "N", 6)])
    assert out[0].detection_agreement is None and out[0].cosine == pytest.approx(1.0)
    xy = rng.uniform(0, 600, (most, 2))
    boxes = np.concatenate([xy, xy + 30], 1)
    tracemalloc.start()
    try:
        detections.iou(boxes, boxes + 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 4 * 8 * most * most, peak  # was 8 (n x m x 2 float64 temporaries)


def _boxes_all_off():
    """4 samples whose int8 boxes are all 50 px off fp32's (IoU 0), labels equal."""
    rng = np.random.default_rng(0)
    ref, cand = [], []
    for i in range(4):
        xy = rng.uniform(0, 100, (5 + i, 2)).astype(np.float32)
        boxes, labels = np.concatenate([xy, xy + 10], 1), rng.integers(0, 3, 5 + i)
        ref.append([boxes, labels])
        cand.append([boxes + 50, labels])
    return ref, cand


def test_a_forged_detection_match_does_not_raise_the_agreement_check_measures():
    """check matches as the manifest's detection_match says: boxes recorded as `carried` (never what the export
    records for a [K, 4] float output) match by labels alone, and check re-measures 1.0 where the boxes agree on
    none (0.0), so a claimed agreement edited to 1.0 with the record passes its bound."""
    ref, cand = _boxes_all_off()
    names, shapes = ["boxes", "labels"], [(None, 4), (None,)]
    honest = {"boxes": {"group": 0, "axis": 0, "role": "box", "centre_size": False},
              "labels": {"group": 0, "axis": 0, "role": "equal"}}
    forged = {**honest, "boxes": {"group": 0, "axis": 0, "role": "carried"}}
    measured, claimed = ({o.output: o.detection_agreement
                          for o in parity.compare(names, ref, cand, "detect", shapes=shapes, detected=said)}
                         for said in (honest, forged))
    assert measured["boxes"] == 0.0
    assert claimed["boxes"] is None or claimed["boxes"] <= measured["boxes"], claimed


def test_an_emulated_cpus_gates_are_quantization_gates_held_at_their_own_limits():
    """export --emulate x86_64 writes EMULATED + each quantization gate (parity.trial_gate), held where the gate is."""
    assert parity.written_gate("emulated_quant_sqnr_db") and parity.written_gate("emulated_top1_agreement")
    assert parity.limit_of("emulated_quant_sqnr_db") == parity.limit_of("quant_sqnr_db") == (">=", "quant_sqnr_min_db")
    for name in ("emulated_size_mb", "emulated_export_cosine", "emulated_emulated_quant_cosine", "emulated_"):
        assert not parity.written_gate(name), name
