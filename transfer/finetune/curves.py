"""The fine-tuning's per-epoch curves in metrics/finetune/train/, as DVCLive writes them (metrics.json and one TSV per
curve under plots/metrics/): train and validation ("eval") loss and accuracy."""

from __future__ import annotations

from pathlib import Path

from transfer.core.files import atomic_output

CURVES = [f"{split}/{name}" for split in ("train", "eval") for name in ("loss", "accuracy")]


def write_curves(live_dir: Path, epochs: list[dict]) -> None:
    """`epochs`: per finished epoch, {"train": {"loss", "accuracy"}, "eval": {...}}. With no epoch (finetune.epochs
    0), each curve is written with its header and no row, so that `dvc plots show` draws nothing and reports no
    missing file."""
    from dvclive import Live

    with atomic_output(Path(live_dir)) as tmp:
        with Live(str(tmp), dvcyaml=False, save_dvc_exp=False, report=None) as live:
            for epoch in epochs:
                for split, scores in epoch.items():
                    for name, value in scores.items():
                        live.log_metric(f"{split}/{name}", value)
                live.next_step()
        for curve in CURVES if not epochs else ():
            path = tmp / "plots" / "metrics" / f"{curve}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"step\t{curve.split('/')[-1]}\n", encoding="utf-8")
