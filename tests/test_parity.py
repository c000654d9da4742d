"""Parity metrics and gates (parity.py), on arrays with known answers."""
import numpy as np
import pytest

from edgekit import parity
from edgekit.config import ParitySpec
from edgekit.errors import ExitCode, InternalError


def test_shape_disagreement_between_edgekit_models_is_an_internal_error():
    """Both sides are models edgekit made itself: different shapes are edgekit's bug (exit 5), not bad input."""
    with pytest.raises(InternalError, match=r"shapes differ \(\(1, 3\) vs \(1, 4\)"):
        parity.compare(["y"], [[np.ones((1, 3))]], [[np.ones((1, 4))]])
    assert InternalError.exit_code == ExitCode.INTERNAL == 5


def test_gates_from_typed_parity():
    ref = [[np.array([[1.0, 2.0, 3.0]])], [np.array([[3.0, 1.0, 0.5]])]]
    close = [[r[0] + 0.01] for r in ref]
    far = [[r[0][:, ::-1].copy()] for r in ref]  # the classes' scores reversed: top-1 disagrees everywhere
    spec = ParitySpec()
    good = parity.quantization_gates(parity.compare(["y"], ref, close, classifier=True), 0.0, spec, True)
    bad = parity.quantization_gates(parity.compare(["y"], ref, far, classifier=True), None, spec, True)
    assert all(g.passed for g in good) and {g.name for g in good} >= {"quant_cosine", "top1_agreement"}
    failed = {g.name for g in bad if not g.passed}
    assert {"quant_cosine", "top1_agreement"} <= failed
    [acc] = [g for g in bad if g.name == "accuracy_drop"]
    assert acc.skipped == "no labels in the validation data" and acc.passed and "skipped" in acc.as_dict()
    assert "skipped" not in good[0].as_dict()
