"""`edgekit search` on the bundled digits example: the Pareto front (int8 accuracy x latency x size) and the
time a trial takes, desktop-x86, every trial a whole export on this host.

    python benchmarks/search_digits.py [--trials 12] [--workers 2] [--budget size_mb=0.04] [--out DIR]

The recipe is examples/digits/edgekit.toml with `[distill]` on the bundled training reader (4 epochs), so the
search also chooses distillation epochs, temperature and learning rate; bench runs are cut to 50 a model to keep
trials short. With --out, the search's folder (pareto.json, report.html, the best package) is kept there.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from edgekit import search  # noqa: E402
from edgekit.config import load_recipe, load_target  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sampler", default="tpe", choices=search.SAMPLERS)
    ap.add_argument("--budget", action="append", default=[], help="latency_ms=N or size_mb=N")
    ap.add_argument("--out", type=Path, help="keep the search's folder here (default: a temporary one)")
    args = ap.parse_args()
    digits = ROOT / "examples" / "digits"
    with tempfile.TemporaryDirectory(prefix="edgekit-search-") as tmp:
        out = args.out or Path(tmp)
        text = ((digits / "edgekit.toml").read_text().replace("runs = 300", "runs = 50")
                .replace('"model.py:build"', f'"{digits / "model.py"}:build"')
                .replace('"digits_cnn.pt"', f'"{digits / "digits_cnn.pt"}"').replace('"data/', f'"{digits}/data/'))
        recipe_path = Path(tmp) / "edgekit.toml"
        recipe_path.write_text(text + f'\n[distill]\ndata = "{ROOT / "calibration" / "readers.py"}:digits_train"\n'
                                      "epochs = 4\n")
        recipe = load_recipe(recipe_path)
        start = time.perf_counter()
        report = search.run(recipe, load_target("desktop-x86"), search.parse_budgets(args.budget), args.trials,
                            args.sampler, None, "digits", None, args.workers, out)
        wall = time.perf_counter() - start
    print(f"{len(report.points)} trials done, {len(report.failed)} failed, {args.workers} worker(s), "
          f"{args.sampler}; {wall:.0f} s wall, {report.seconds_per_trial:.1f} s a trial (each trial's own time)")
    print(f"budgets {report.budgets or 'none'}; {report.metric}; latency measured on {report.where}")
    print("trial | int8 accuracy | int8 p50 ms | int8 MB | settings")
    for p in report.pareto:
        print(f"{p.trial} | {p.accuracy:.2f} | {p.latency_ms:.4f} | {p.size_mb:.4f} | "
              + ", ".join(f"{k.removeprefix('prune_')}={v}" for k, v in p.params.items()))
    print(f"best: trial {report.best.trial}" if report.best else "no trial met the budgets and gates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
