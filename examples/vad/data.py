"""Calibration and validation sequences for the VAD recipe: edgekit calls `data.py:calibration` and
`data.py:validation`, each yielding one dict per sequence, {"frame": (steps, 1, 160) float32}: a leading
steps axis on the model's frame input (batch 1), and for validation `labels` (steps,): speech or not, per
frame. The state input is not in the data: edgekit starts it at zeros and feeds stateN back. Same generator
as training (synth.py), other seeds: 1 and 2 (training uses 1000+, its held-out set 99)."""
import synth

STEPS = 100  # 1 s per sequence


def _sequences(seed: int, count: int, labelled: bool = False):
    frames, labels = synth.batch(seed, count, STEPS)
    for sequence, speech in zip(frames, labels):
        yield {"frame": sequence[:, None, :], **({"labels": speech} if labelled else {})}  # (steps, 1, 160)


def calibration():
    """16 sequences x 100 steps = 1600 calibration steps, of which the profile's 128 (`[quantize] samples`) are used,
    spread evenly over the sequences."""
    yield from _sequences(seed=1, count=16)


def validation():
    """8 held-out sequences x 100 steps, labelled per frame."""
    yield from _sequences(seed=2, count=8, labelled=True)
