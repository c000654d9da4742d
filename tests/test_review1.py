"""review1: failing tests, one per finding in the detection-matching change (96018d5..HEAD)."""
import json

import numpy as np
import pytest
from conftest import ROOT, cli

from edgekit import detections, package_check, parity
from edgekit.config import ParitySpec

SHAPES3 = [("K", 4), ("K",), ("K",)]


def _boxes(k, x0=0.0):
    return np.stack([x0 + np.arange(k) * 60., np.zeros(k), x0 + np.arange(k) * 60. + 40, np.full(k, 40.)], 1)


def test_figures_are_measured_when_every_sample_keeps_another_count():
    """Dense detectors move a box across the cut on every image: the figures must be of the matched rows, not
    unmeasured (quant_cosine None fails the package though 95% of detections agree and every match is exact)."""
    ref, cand = [], []
    for i in range(20):
        k = 10 + i % 3
        ref.append([_boxes(k), np.linspace(.95, .6, k), np.arange(k) % 4])
        cand.append([np.concatenate([_boxes(k), [[2000., 2000, 2040, 2040]]]), np.append(np.linspace(.95, .6, k), .51),
                     np.append(np.arange(k) % 4, 0)])
    out = parity.compare(["boxes", "scores", "labels"], ref, cand, task="detect", shapes=SHAPES3)
    assert out[0].detection_agreement > 0.9
    failed = [g.name for g in parity.quantization_gates(out, None, ParitySpec(), "detect") if not g.passed]
    assert failed == [], failed  # now: quant_cosine, quant_cosine_worst, quant_sqnr_db unmeasured


def test_one_degenerate_reference_box_does_not_turn_corner_boxes_into_centre_size():
    """Corner boxes; int8 lost box 0 and found a box 30 px off box 1 (IoU 0.14). One thin inverted box on another
    image (an unclipped regressor) flips the whole output to cx, cy, w, h, where the lost box 'matches'."""
    a = np.array([[100., 100, 140, 140], [150, 100, 190, 140], [400, 400, 440, 440]])
    c = np.array([[150., 100, 190, 140], [180, 100, 220, 140], [400, 400, 440, 440]])
    other = np.array([[10., 10, 50, 50], [300., 300, 299.5, 330]])
    ref, cand = [[a], [other]], [[c], [other]]
    plain = parity.compare(["boxes"], [[a], [other[:1]]], [[c], [other[:1]]], task="detect", shapes=[("K", 4)])
    flipped = parity.compare(["boxes"], ref, cand, task="detect", shapes=[("K", 4)])
    assert plain[0].detection_agreement == pytest.approx(2 * 3 / 8)
    assert flipped[0].detection_agreement == pytest.approx(2 * 4 / 10)  # now 1.0


def test_check_reads_the_golden_subset_as_the_export_read_validation():
    """The same flip makes check unsound: validation (with the inverted box on a late sample) reads centre-size,
    the golden samples (the first ones) corners, so a package's true claim is above what check allows."""
    a = np.array([[100., 100, 140, 140], [150, 100, 190, 140], [400, 400, 440, 440]])
    c = np.array([[150., 100, 190, 140], [180, 100, 220, 140], [400, 400, 440, 440]])
    late = np.array([[10., 10, 50, 50], [300., 300, 299.5, 330]])
    export = parity.compare(["boxes"], [[a], [late]], [[c], [late]], task="detect", shapes=[("K", 4)])[0]
    golden = parity.compare(["boxes"], [[a]], [[c]], task="detect", shapes=[("K", 4)], detected=("boxes",))[0]
    best = package_check._detection_best(golden.as_dict(), export.as_dict())
    assert export.detection_agreement <= best, (export.detection_agreement, best)


def test_masks_sharing_the_detections_count_are_matched_with_them():
    """Mask R-CNN: masks [K, 1, H, W] beside boxes/scores/labels. Left out of the group, they are neither reordered
    with their boxes (a near-tie swap: mask cosine 0.92 of the same detections) nor spared the length gate."""
    rng = np.random.default_rng(0)

    def sample(k):
        return [_boxes(k), np.linspace(.9, .5, k), np.arange(k), rng.uniform(0, 1, (k, 1, 8, 8))]
    ref = [sample(6), sample(4)]
    cand = [[a.copy() for a in s] for s in ref]
    cand[0] = [a[[1, 0, 2, 3, 4, 5]] for a in cand[0]]
    cand[1] = [np.concatenate([a, a[:1]]) for a in cand[1]]
    cand[1][0][-1] += 1000
    out = parity.compare(["boxes", "scores", "labels", "masks"], ref, cand, task="detect",
                         shapes=[*SHAPES3, ("K", 1, 8, 8)])
    assert out[3].detection_agreement is not None and out[3].cosine == pytest.approx(1.0)


def test_integer_boxes_match_by_iou_not_exact_equality():
    """Boxes cast to int64 pixels, one pixel off: IoU ~0.9, the same objects; matched as labels they agree 0."""
    b = np.array([[10, 10, 50, 50], [100, 100, 160, 150], [200, 20, 260, 90]], np.int64)
    ref = [[b, np.array([.9, .8, .7])], [b[:2], np.array([.9, .8])]]
    cand = [[b + 1, np.array([.9, .8, .7])], [b[:2] + 1, np.array([.9, .8])]]
    out = parity.compare(["boxes", "scores"], ref, cand, task="detect", shapes=[("K", 4), ("K",)])
    assert out[0].detection_agreement == 1.0  # now 0.0


def test_a_batched_rows_output_is_bounded_by_check_on_golden_samples_of_one_count():
    """[N, K, 6] (batch and count open): export matched it (K varied), check on golden samples keeping one count
    finds no row axis, so the manifest's agreement is never bounded."""
    same = [np.zeros((1, 5, 6))] * 3
    assert detections.row_axis(("N", "K", 6), same, same, matched_before=True) == 1  # now None


def test_check_fails_a_package_whose_detection_gate_was_deleted(tmp_path):
    """A strict profile fails quant_detection_agreement; the gate deleted (outputs still recording the agreement
    below the profile's limit), passed set true: check passes it."""
    rng = np.random.default_rng(0)
    for name in ("val", "cal"):
        np.savez(tmp_path / f"{name}.npz", image=rng.standard_normal((16, 1, 3, 16, 16)).astype(np.float32))
    profile = (ROOT / "targets" / "desktop-x86.toml").read_text().replace('name = "desktop-x86"', 'name = "strict"')
    (tmp_path / "strict.toml").write_text(profile.replace("detection_agreement_min = 0.9",
                                                          "detection_agreement_min = 1.0"))
    made = cli(["export", "models:score_cut_detector", "--input", "image:1x3x16x16", "--calibration",
                tmp_path / "cal.npz", "--validation", tmp_path / "val.npz", "--task", "detect", "--no-bench",
                "-t", tmp_path / "strict.toml", "--out", tmp_path / "o", "--json"])
    assert made.exit_code == 1, made.output
    folder = tmp_path / "o" / "strict"
    m = json.loads((folder / "manifest.json").read_text())
    m["gates"] = [g for g in m["gates"] if g["name"] != "quant_detection_agreement"]
    m["passed"] = True
    for c in m["verification"]:
        c["passed"], c["message"] = True, ""
    (folder / "manifest.json").write_text(json.dumps(m))
    assert cli(["check", folder]).exit_code == 1
