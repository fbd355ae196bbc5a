"""Evaluating a checkpoint file or run folder, and where its report goes."""

from __future__ import annotations

import json
from pathlib import Path

from img2img.evaluation.evaluate import EvalData, Report, evaluate_model
from img2img.train import load_model, resolve_device


def evaluate_checkpoint(path: str | Path, a: str | None = None, b: str | None = None, aligned: str | None = None,
                        metrics: tuple[str, ...] = (), features: str = "auto", inception_weights: str | None = None,
                        samples: int = 1000, seed: int = 0, device: str = "auto",
                        json_path: Path | None = None) -> tuple[Report, Path]:
    """Evaluate a checkpoint (its averaged weights when it has them) and write the report as JSON."""
    torch_device = resolve_device(device)
    model, run, payload = load_model(path, torch_device, option="CHECKPOINT")
    data = EvalData(a, b, aligned) if (a or b or aligned) else None
    report = evaluate_model(model, run, int(payload["step"]), data, features, inception_weights, samples, seed,
                            torch_device, metrics)
    report.protocol["checkpoint"] = payload["path"]
    if json_path is None:
        folder = Path(payload["path"]).resolve().parent
        if folder.name == "checkpoints":
            folder = folder.parent
        json_path = folder / "eval" / f"step-{report.step:08d}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report, json_path
