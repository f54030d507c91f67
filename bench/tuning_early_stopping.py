"""Tuning with early stopping (the median rule) against without: same trials, same seed, on the process backend.

Both runs draw the same hyperparameters (Random strategy with one seed: its draws do not depend on earlier
results), so the difference is only what early stopping cut. Prints the trial-epochs each run trained, the
share saved, and the best objective (the default: the last epoch's validation loss) each reached. Data:
scikit-learn's digits as JPEGs (no download).

    .venv/bin/python bench/tuning_early_stopping.py [--trials 8] [--epochs 4] [--steps-per-epoch 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import optuna

from imgclf_contract.metrics import DEFAULT_OBJECTIVE
from launcher.backends import TrainingSpec
from launcher.backends.process import ProcessBackend
from launcher.records import RecordStore
from launcher.sample_data import write_digits
from launcher.tuning import OptunaTuner, TuningSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=int, default=10, help="max_steps_per_epoch of every trial")
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ranges = {  # the original project's ranges, with batch sizes a 2-core machine can take
        "learning_rate": "ContinuousParameter(0.001, 0.1)",
        "batch_size": "CategoricalParameter([32, 64])",
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_digits(root / "digits", size=args.image_size)
        fixed = {"epochs": args.epochs, "image_size": args.image_size, "pretrained": False,
                 "max_steps_per_epoch": args.steps_per_epoch, "profiler_interval_ms": 0}  # fmt: skip
        training = TrainingSpec(job_name="unused", channels={"training": str(root / "digits")}, hyperparameters=fixed)
        outcome = {}
        for early_stopping in ("Off", "Auto"):
            work = root / early_stopping
            spec = TuningSpec(name=f"bench-{early_stopping.lower()}", training=training, ranges=ranges,
                              strategy="Random", max_jobs=args.trials, early_stopping=early_stopping)  # fmt: skip
            start = time.perf_counter()
            record = OptunaTuner(spec, ProcessBackend(work, RecordStore(work / "records")), work / "tuning").run()
            rows = json.loads((work / "tuning" / "results.json").read_text())
            epochs = sum(r["stopped_at_epoch"] if r["stopped_early"] else args.epochs for r in rows)
            outcome[early_stopping] = (epochs, record.best["objective"], time.perf_counter() - start, rows)

    off, auto = outcome["Off"], outcome["Auto"]
    print(f"{args.trials} trials x {args.epochs} epochs ({args.steps_per_epoch} steps each), Random, seed 0")
    for name, (epochs, best, seconds, rows) in outcome.items():
        stopped = sum(r["stopped_early"] for r in rows)
        print(f"early stopping {name:4}: {epochs} trial-epochs, {stopped} trials stopped, best {DEFAULT_OBJECTIVE} "
              f"{best:.4f}, {seconds:.0f} s")  # fmt: skip
    print(f"trial-epochs saved: {off[0] - auto[0]} of {off[0]} ({1 - auto[0] / off[0]:.0%}); "
          f"best objective with/without: {auto[1]:.4f} / {off[1]:.4f}; time ratio {auto[2] / off[2]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
