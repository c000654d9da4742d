"""Calibration and validation sequences for the VAD recipe: edgekit calls `data.py:calibration` and
`data.py:validation`, each yielding one dict per sequence, {"frame": (steps, 1, 160) float32}: a leading
steps axis on the model's frame input (batch 1). The state input is not in the data: edgekit starts it at
zeros and feeds stateN back. Same generator as training (synth.py), other seeds: 1 and 2 (training uses
1000+, its held-out set 99). No labels: edgekit does not score accuracy over sequences (labels given with
them are ignored); it judges int8 against fp32 on the outputs each carries over whole sequences, and
train.py reports the per-frame accuracy."""
import synth

STEPS = 100  # 1 s per sequence


def _sequences(seed: int, count: int):
    frames, _ = synth.batch(seed, count, STEPS)
    for sequence in frames:
        yield {"frame": sequence[:, None, :]}  # (steps, 1, 160)


def calibration():
    """16 sequences x 100 steps = 1600 calibration steps (the recipe's [quantize] samples uses them all)."""
    yield from _sequences(seed=1, count=16)


def validation():
    """8 held-out sequences x 100 steps."""
    yield from _sequences(seed=2, count=8)
