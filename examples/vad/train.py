"""Train the streaming VAD on synthetic audio made in code and write its weights (fixed seeds, no downloads).

    python examples/vad/train.py            # writes vad.pt here, prints held-out per-frame accuracy

Training unrolls the step model's own weights over whole 2 s sequences (an nn.GRU that shares the
GRUCell's parameters: same gates, same layout, one fused kernel instead of 200 Python steps); the held-out
accuracy is then measured the way edgekit and a device run it: the step model, one 10 ms frame at a time,
the state starting at zeros and fed back. Seeds: training audio 1000 + epoch, held-out 99 (data.py's
calibration and validation sets use 1 and 2).
"""
from pathlib import Path

import numpy as np
import torch
from torch import nn

import synth
from model import build

HERE = Path(__file__).resolve().parent
HELD_OUT_SEED = 99


def unrolled(model: nn.Module) -> nn.GRU:
    """An nn.GRU over whole sequences that uses (not copies) the model's GRUCell parameters."""
    cell = model.cell
    gru = nn.GRU(cell.input_size, cell.hidden_size, batch_first=True)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        setattr(gru, f"{name}_l0", getattr(cell, name))
    return gru


def frame_accuracy(model: nn.Module, frames: np.ndarray, labels: np.ndarray) -> float:
    """Per-frame accuracy (%) of the step model streamed over (sequences, steps, 160), state from zeros."""
    model.eval()
    x = torch.from_numpy(frames)
    state = torch.zeros(len(x), model.cell.hidden_size)
    correct = 0
    with torch.no_grad():
        for t in range(x.shape[1]):
            logits, state = model(x[:, t], state)
            correct += int((logits.argmax(1).numpy() == labels[:, t]).sum())
    return 100.0 * correct / labels.size


def train(epochs: int = 12, sequences: int = 256, steps: int = 200, held_out: int = 64,
          seed: int = 0) -> tuple[nn.Module, float]:
    """Each epoch draws `sequences` fresh training sequences; returns (model, held-out frame accuracy %)."""
    torch.manual_seed(seed)
    model = build()
    gru = unrolled(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=epochs * -(-sequences // 32))
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        frames, labels = (torch.from_numpy(a) for a in synth.batch(1000 + seed + epoch, sequences, steps))
        model.train()
        for idx in torch.randperm(sequences, generator=gen).split(32):
            out, _ = gru(model.features(frames[idx]))  # (batch, steps, hidden), state from zeros
            loss = nn.functional.cross_entropy(model.head(out).flatten(0, 1), labels[idx].flatten())
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
    acc = frame_accuracy(model, *synth.batch(HELD_OUT_SEED, held_out, steps))
    return model, acc


def main() -> None:
    import time

    torch.set_num_threads(1)  # bit-reproducible training on any core count
    start = time.perf_counter()
    model, acc = train()
    torch.save(model.state_dict(), HERE / "vad.pt")
    print(f"held-out per-frame accuracy {acc:.2f}% (64 sequences x 200 frames, streamed step by step); "
          f"trained in {time.perf_counter() - start:.1f} s; wrote vad.pt")


if __name__ == "__main__":
    main()
