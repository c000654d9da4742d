"""Train the digits CNN in seconds and write its weights and data sets (fixed seed, reproducible).

    python examples/digits/train.py            # writes digits_cnn.pt and data/*.npz here

Splits of scikit-learn's load_digits (1797 images): 1197 for training, of which 256 are also the
calibration set (calibration should look like training data); the other 600 are the held-out
validation set with labels, never seen by training or calibration.
"""
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from model import build

HERE = Path(__file__).resolve().parent


def splits(seed: int = 0):
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # N x 1 x 8 x 8 in [0, 1]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    train, val = order[:1197], order[1197:]
    return (x[train], y[train]), (x[val], y[val])


def train(epochs: int = 30, seed: int = 0) -> tuple[nn.Module, float]:
    torch.manual_seed(seed)
    (xt, yt), (xv, yv) = splits(seed)
    model = build()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    xt_t, yt_t = torch.from_numpy(xt), torch.from_numpy(yt)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt_t), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt_t[idx]), yt_t[idx]).backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(xv)).argmax(1).numpy() == yv).mean() * 100
    return model, float(acc)


def main() -> None:
    torch.set_num_threads(1)  # bit-reproducible training on any core count
    model, acc = train()
    (xt, yt), (xv, yv) = splits()
    (HERE / "data").mkdir(exist_ok=True)
    torch.save(model.state_dict(), HERE / "digits_cnn.pt")
    np.savez(HERE / "data" / "calibration.npz", image=xt[:256], labels=yt[:256])
    np.savez(HERE / "data" / "validation.npz", image=xv, labels=yv)
    print(f"held-out accuracy {acc:.2f}% on {len(yv)} images; wrote digits_cnn.pt and data/")


if __name__ == "__main__":
    main()
