"""Evaluating a model: what ``img2img eval`` and ``--eval-every`` compute, with baselines and floors.

The protocol (also in the README):

- MNIST GAN: ``samples`` digits (default 1,000) drawn with a fixed seed are
  compared with the 1,000 held-out digits through the shipped digit
  classifier: classifier-FID and KID, printed beside the real-vs-real floor
  (1,000 training digits against the held-out ones); class coverage and KL to
  uniform; and the mean nearest-neighbour distance to the 4,000 training
  digits beside that of the held-out digits (a memorising GAN scores near 0).
- pix2pix: every held-out pair, resized to the training size (bicubic) as in
  training without crop or flip, translated in evaluation mode: L1, PSNR and
  SSIM against the targets, FID/KID of outputs against targets.
- CycleGAN/DiscoGAN: every held-out image of each domain translated to the
  other; FID/KID against the real images of that domain.
- StarGAN: every held-out image of every other domain translated to each
  domain; FID/KID against that domain's held-out images (``fid_to_<domain>``,
  and their mean ``fid``); and every image translated to its own domain,
  PSNR against itself (``own_domain_psnr``).
- The offline demo tasks (``img2img demo``) add ground truth: PSNR/SSIM
  against the exact targets and label agreement by the digit classifier,
  beside the trivial baselines (identity and 3×3 dilation for
  skeleton→digit; identity and the colour map alone for grey→orange-on-navy;
  for the four digit styles, PSNR and label agreement of every
  source→target pair beside the colour map alone, which repaints the
  source's ink in the target's colours without changing its shape).

Features: ``digits`` for digit data (the MNIST GAN and the demos), else the
standard Inception (local weights only); FID and KID are skipped with a note
when those weights are missing and they were not asked for by name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from img2img.checkpoint import check_writable, refuse_replacing, replace_file, unwritable
from img2img.data.demo import COLOUR_TASK, SKELETON_TASK, colour_map, demo_task, ink_from_colour, label_of
from img2img.data.guard import verify_images
from img2img.data.images import convert_channels, folder_record, list_images
from img2img.data.mnist import load_embedded
from img2img.data.paired import check_pairs
from img2img.errors import UserError
from img2img.loading import load_model, resolve_device
from img2img.evaluation.digits import load_classifier
from img2img.evaluation.features import build_extractor, check_inception, find_inception_weights
from img2img.evaluation.metrics import (Distances, Lpips, PairedMeans, class_statistics, extract_features,
                                        fid_kid_of_features, lpips_backbone_file, nearest_neighbour_distance,
                                        nearest_neighbour_distances)

# higher is better for these; lower for the rest (fid, kid, l1, nn distance)
HIGHER_IS_BETTER = {"psnr", "ssim", "label_agreement", "classes_covered", "class_agreement"}  # lpips: lower is better
# what each protocol reports (the demo tasks add l1/psnr/ssim/label_agreement to the unpaired ones); the unpaired
# protocol reports FID/KID for each direction the model translates
SAMPLE_METRICS = ("fid", "kid", "fid_over_floor", "classes_covered", "kl_to_uniform", "nn_distance_to_train")
PAIRED_METRICS = ("l1", "psnr", "ssim", "lpips", "fid", "kid", "label_agreement")
DEMO_METRICS = ("l1", "psnr", "ssim", "label_agreement")
MULTI_DOMAIN_METRICS = ("fid", "kid", "own_domain_psnr", "psnr", "label_agreement")
# what each protocol reports on digit data only: the embedded digits (samples), a demo task's folders (the rest)
DIGIT_ONLY_METRICS = {"samples": ("fid_over_floor", "classes_covered", "kl_to_uniform", "class_agreement"),
                      "paired": ("label_agreement",), "unpaired": DEMO_METRICS,
                      "multi-domain": ("psnr", "label_agreement")}
# counts a protocol reports beside its metrics (StarGAN: pairs, pairs_beating_colour_map), never chosen by
ALSO_REPORTED = {"multi-domain": ("pairs",)}
DIGIT_ONLY = "on digit data only (the embedded digits, or the folders of an `img2img demo` task)"

log = logging.getLogger(__name__)


def protocol_metrics(model_class: Any) -> tuple[str, ...]:
    """The metrics the evaluation protocol of ``model_class`` (its ``evaluation``) reports."""
    protocol = model_class.evaluation
    if protocol == "samples":  # and how often a conditional model's digits are the class asked for
        return SAMPLE_METRICS + (("class_agreement",) if getattr(model_class, "conditional", False) else ())
    if protocol == "paired":
        return PAIRED_METRICS
    if protocol == "unpaired":
        directions = tuple(model_class.translation_networks)
        return (*(f"{kind}_{d}" for d in directions for kind in ("fid", "kid")), *DEMO_METRICS)
    if protocol == "multi-domain":  # and per domain (fid_to_<domain>) and per pair (psnr_<s>_to_<t>)
        return MULTI_DOMAIN_METRICS
    return ()


def metric_names(model_class: Any, domains: Sequence[str] | None = None) -> tuple[str, ...]:
    """Every name that ``--metrics`` may give for ``model_class``: its protocol's metrics, and StarGAN's per
    domain and per pair of its ``domains`` (fid_a2b passed for any model, as a name beginning with fid_, and was
    refused only after the evaluation had run)."""
    protocol = model_class.evaluation
    names = protocol_metrics(model_class) + ALSO_REPORTED.get(protocol, ())
    if protocol == "multi-domain":
        domains = list(domains or ())
        names += tuple(f"{kind}_to_{d}" for kind in ("fid", "kid") for d in domains)
        names += tuple(f"own_domain_psnr_{d}" for d in domains) + ("pairs_beating_colour_map",)
        names += tuple(f"{kind}_{s}_to_{t}" for kind in ("psnr", "label_agreement") for s in domains for t in domains
                       if s != t)
    return names


def check_training_evaluation(model_class: Any, metric: str, data: EvalData, options: Any = None) -> str:
    """The metric a run's --eval-every chooses best.ckpt by, after checking that it and the data can work (and
    that FID or KID, on images other than digits, has the Inception weights it needs)."""
    # an error about the metric names the option that chose it: --eval-metric, or --eval-every's default
    option = f"--eval-metric {metric}" if metric else f"--eval-every (its metric {model_class.default_metric})"
    metric = metric or model_class.default_metric
    available = protocol_metrics(model_class)
    if not available:
        raise UserError(f"--eval-every: no evaluation protocol for {model_class.name} models")
    if metric not in available:
        raise UserError(f"--eval-metric: {metric!r} is not a {model_class.name} metric "
                        f"(choose from {', '.join(available)})")
    refuse_unread_data(data, model_class, prefix="--eval-")
    if model_class.evaluation != "samples":
        _require(data, model_class, prefix="--eval-")
    digits = _digit_data(model_class, options, data)
    if metric in DIGIT_ONLY_METRICS[model_class.evaluation] and not digits:
        raise UserError(f"{option}: {model_class.name} evaluation reports it {DIGIT_ONLY}; choose "
                        "another --eval-metric")
    if metric == "lpips" and not lpips_backbone_file().is_file():
        raise UserError(f"{option} needs the AlexNet weights at {lpips_backbone_file()} (nothing is "
                        "downloaded); or choose another --eval-metric")
    if metric.startswith(("fid", "kid")) and not digits:
        try:
            check_inception(needed_by=option)
        except UserError as error:
            raise UserError(f"{error}; or choose another --eval-metric") from None
    return metric


def verify_held_out(data: EvalData) -> None:
    """Decode every held-out image once, before training (as the training files are), so that a folder that is
    missing or holds a broken file is named in one line before a step, not at the first evaluation."""
    for name in ("a", "b", "aligned", "data"):
        folder, option = getattr(data, name), f"{data.prefix}{name}"
        if folder is not None:
            verify_images([Path(folder) / path for path in list_images(folder, option)], option)


def _digit_only(metric: str, protocol: str) -> bool:
    """Whether ``metric`` is reported on digit data only (StarGAN's per-pair PSNR and label agreement too)."""
    if protocol == "multi-domain" and (metric in ("pairs", "pairs_beating_colour_map") or
                                       metric.startswith(("psnr_", "label_agreement_"))):
        return True
    return metric in DIGIT_ONLY_METRICS[protocol]


def _digit_data(model_class: Any, options: Any, data: EvalData | None) -> bool:
    """Whether evaluation compares digits (the embedded MNIST digits, or a demo task's), through the shipped
    digit classifier's features, which need no Inception weights."""
    if model_class.evaluation == "samples":
        return getattr(options, "data", None) is None
    return demo_task(data.a or data.aligned or data.data) is not None


BATCH = 100


@dataclass(frozen=True)
class EvalData:
    """Held-out data for image models: paired folders (``a``, ``b``), side-by-side files (``aligned``), or a folder
    of domain sub-folders (``data``)."""

    a: str | None = None
    b: str | None = None
    aligned: str | None = None
    data: str | None = None
    prefix: str = "--"  # how the options that name them are spelled where they were given

    @classmethod
    def of_training(cls, train: Any) -> EvalData:
        """The held-out data a training run's ``--eval-*`` options name."""
        return cls(train.eval_a, train.eval_b, train.eval_aligned, train.eval_data, prefix="--eval-")


@dataclass
class Report:
    """What an evaluation found: the model's metrics, and beside them baselines and floors."""

    model: str
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → metrics (baselines, floors)
    notes: list[str] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "step": self.step, "metrics": self.metrics, "reference": self.reference,
                "notes": self.notes, "protocol": self.protocol}

    def table(self) -> str:
        """The metrics as a text table: one row per metric, the model's value, then each reference's."""
        columns = ["model", *self.reference]
        names = [name for name, value in self.metrics.items() if isinstance(value, (int, float))]
        for values in self.reference.values():
            names += [n for n, v in values.items() if isinstance(v, (int, float)) and n not in names]
        rows = [["metric", *columns]]
        for name in names:
            row = [name]
            for column in columns:
                value = self.metrics.get(name) if column == "model" else self.reference[column].get(name)
                row.append("" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value)))
            rows.append(row)
        widths = [max(len(row[i]) for row in rows) for i in range(len(columns) + 1)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines + [f"note: {note}" for note in self.notes])


def unit(images: Tensor) -> Tensor:
    """Images in [-1, 1] → [0, 1]."""
    return images.add(1).div(2).clamp(0, 1)


def better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value > best if metric in HIGHER_IS_BETTER else value < best


def evaluate_model(model: Any, run: Any, step: int, data: EvalData | None = None, features: str = "auto",
                   inception_weights: str | None = None, samples: int = 1000, seed: int = 0,
                   device: torch.device | str = "cpu", metrics: tuple[str, ...] = ()) -> Report:
    """Evaluate ``model`` (in evaluation mode, on ``device``) by the protocol of its kind."""
    known = protocol_metrics(type(model))
    foreign = [m for m in metrics if m not in metric_names(type(model), getattr(run.options, "domains", None))]
    if foreign:  # before any compute
        per_domain = ", and per domain or pair: fid_to_D, kid_to_D, own_domain_psnr_D, psnr_S_to_T, " \
                     "label_agreement_S_to_T" if model.evaluation == "multi-domain" else ""
        raise UserError(f"--metrics: {', '.join(foreign)}: not {'a ' if len(foreign) == 1 else ''}{run.model} "
                        f"metric{'s' if len(foreign) > 1 else ''} (its metrics: {', '.join(known) or 'none'}"
                        f"{per_domain})")
    refuse_unread_data(data, type(model))
    if metrics and (data is not None or model.evaluation == "samples") and \
            not _digit_data(type(model), run.options, data):  # before any compute too
        only = [m for m in metrics if _digit_only(m, model.evaluation)]
        if only:
            raise UserError(f"--metrics: {', '.join(only)}: {run.model} evaluation reports "
                            f"{'it' if len(only) == 1 else 'them'} {DIGIT_ONLY}, and these are other images")
    report = Report(run.model, step, protocol={"seed": seed, "features": features, "name": model.evaluation})
    if model.evaluation == "samples":
        _evaluate_digits_gan(model, report, samples, seed, device, features, inception_weights)
    elif model.evaluation == "paired":
        _evaluate_pix2pix(model, run.options, report, _require(data, type(model)), device, features,
                          inception_weights, metrics)
    elif model.evaluation == "unpaired":
        _evaluate_unpaired(model, run.options, report, _require(data, type(model)), device, features,
                           inception_weights, metrics)
    elif model.evaluation == "multi-domain":
        _evaluate_domains(model, run.options, report, _require(data, type(model)), device, features,
                          inception_weights, metrics)
    else:
        raise UserError(f"no evaluation protocol for {run.model} models")
    if metrics:
        unknown = [m for m in metrics if m not in report.metrics]
        if unknown:
            why = [f"{m} is reported {DIGIT_ONLY}" for m in unknown if _digit_only(m, model.evaluation)]
            computed = ", ".join(k for k in report.metrics if not k.endswith("_counts")) or "none"
            raise UserError(f"--metrics: {', '.join(unknown)} not computed for {run.model} ("
                            + "; ".join([*why, f"computed: {computed}", *report.notes]) + ")")
    return report


# the held-out data options each protocol reads; any other one given is refused, not silently dropped
DATA_OPTIONS = {"samples": (), "paired": ("a", "b", "aligned"), "unpaired": ("a", "b"), "multi-domain": ("data",)}


def refuse_unread_data(data: EvalData | None, model_class: Any, prefix: str = "--") -> None:
    """A one-line error for held-out data options that ``model_class``'s evaluation does not read: ``eval`` of
    a CycleGAN run given ``--aligned`` or ``--data`` evaluated on ``--a``/``--b`` alone, and said nothing."""
    if data is None:
        return
    reads = DATA_OPTIONS.get(model_class.evaluation, ())
    given = [f"{prefix}{name}" for name in ("a", "b", "aligned", "data")
             if getattr(data, name) is not None and name not in reads]
    if given:
        where = " for --eval-every" if prefix == "--eval-" else ""
        what = (f"takes {_held_out_flags(model_class, prefix)}" if reads else
                "compares its own samples, so it takes no held-out folders")
        raise UserError(f"{given[0]}: evaluating a {model_class.name} model{where} does not read it (it {what}); "
                        f"leave out {', '.join(given)}")


def _held_out_flags(model_class: Any, prefix: str) -> str:
    """The held-out options that ``model_class``'s evaluation takes, as its messages spell them."""
    if model_class.evaluation == "multi-domain":
        return f"{prefix}data DIR"
    return f"{prefix}a DIR {prefix}b DIR" + (f" (or {prefix}aligned DIR)" if model_class.evaluation == "paired" else "")


def _require(data: EvalData | None, model_class: Any, prefix: str = "--") -> EvalData:
    """``prefix``: how the options are named where they were given (``--eval-`` when training)."""
    where = " for --eval-every" if prefix == "--eval-" else ""
    if model_class.evaluation == "multi-domain":
        if data is None or data.data is None:
            raise UserError(f"evaluating a {model_class.name} model{where} needs held-out data: "
                            f"{_held_out_flags(model_class, prefix)} (one sub-folder per domain)")
        return data
    paired = model_class.evaluation == "paired"
    if data is None or (data.a is None or data.b is None) and not (paired and data.aligned is not None):
        given = [f"{prefix}{name}" for name in ("a", "b") if data is not None and getattr(data, name) is not None]
        raise UserError(f"{given[0] + ': ' if given else ''}evaluating a {model_class.name} model{where} needs "
                        f"held-out data: {_held_out_flags(model_class, prefix)}"
                        + (f", not {given[0]} alone" if given else ""))
    return data


# -- streaming: an evaluation holds a chunk of images at a time, and features and per-image numbers of the rest --
def _spans(count: int) -> Iterator[range]:
    """The positions ``0 .. count - 1``, ``BATCH`` at a time."""
    return (range(start, min(start + BATCH, count)) for start in range(0, count, BATCH))


def _counting(items: Iterable[Any], total: int, what: str, size: Callable[[Any], int] = len) -> Iterator[Any]:
    """``items`` as they come, counted on a progress bar of ``total`` images, on a terminal only (a log, or a
    test's captured output, gets no bar): an evaluation of thousands of images took minutes without a word."""
    with tqdm(total=total, unit="img", desc=what, leave=False, dynamic_ncols=True, disable=None) as bar:
        for item in items:
            yield item
            bar.update(size(item))


def _chunks(read: Callable[[int], Tensor], indices: Sequence[int]) -> Iterator[Tensor]:
    """The images ``read(i)`` for ``i`` in ``indices``, stacked ``BATCH`` at a time."""
    for span in _spans(len(indices)):
        yield torch.stack([read(int(indices[position])) for position in span])


class _Features:
    """FID/KID features of image batches as they come (:func:`extract_features`); none with no extractor."""

    def __init__(self, extractor: Any, device: Any) -> None:
        self.extractor, self.device, self.parts = extractor, device, []

    def add(self, images: Tensor) -> None:
        if self.extractor is not None:
            self.parts.append(extract_features(self.extractor, images.split(BATCH), self.device))

    def all(self) -> Tensor:  # none at all: FID's own error says it needs two images
        return torch.cat(self.parts) if self.parts else torch.empty(0, 0, dtype=torch.float64)


def _features(extractor: Any, batches: Iterable[Tensor], device: Any) -> Tensor:
    features = _Features(extractor, device)
    for batch in batches:
        features.add(batch)
    return features.all()


class _Agreement:
    """How often the digit classifier names the expected labels, over batches as they come."""

    def __init__(self, classifier: Any, device: Any) -> None:
        self.classifier, self.device, self.hits, self.count = classifier, device, 0.0, 0

    def add(self, images: Tensor, labels: Tensor) -> None:
        self.hits += (_classify(self.classifier, images, self.device) == labels).float().sum().item()
        self.count += len(labels)

    def result(self) -> float:
        return self.hits / max(self.count, 1)


# -- the MNIST GAN -----------------------------------------------------------------------------------------
def _generated(model: Any, samples: int, seed: int) -> Iterator[tuple[Tensor, Tensor | None]]:
    """``model.generate``'s images (``samples`` of them, drawn with ``seed``; a conditional model's of every class
    in turn) as float32 CPU chunks, each with the labels it was asked for (None for an unconditional model)."""
    start = 0
    for chunk in model.generate_chunks(samples, torch.Generator(device="cpu").manual_seed(seed)):
        yield chunk.float().cpu(), model.sample_labels(samples, start, start + len(chunk))
        start += len(chunk)


class _Samples:
    """What the evaluation of generated images keeps as they come, nothing in proportion to their number: FID and
    KID against a reference (:class:`Distances`), the sum of their distances to the nearest training image and,
    with the digit classifier, how many it puts in each class and how many in the class asked for."""

    def __init__(self, extractor: Any, reference: Tensor | None, device: Any, classifier: Any = None) -> None:
        self.extractor, self.device, self.classifier = extractor, device, classifier
        self.distances = None if extractor is None else Distances(reference, device=device)
        self.nearest, self.count, self.classes, self.hits, self.asked = 0.0, 0, torch.zeros(10, dtype=torch.int64), 0, 0

    def add(self, images: Tensor, labels: Tensor | None, nearest: Tensor) -> None:
        if self.distances is not None:
            self.distances.add(extract_features(self.extractor, images.split(BATCH), self.device))
        self.nearest += nearest.double().sum().item()
        self.count += len(images)
        if self.classifier is not None:
            predicted = _classify(self.classifier, images, self.device)
            self.classes += torch.bincount(predicted, minlength=10)
            if labels is not None:
                self.hits, self.asked = self.hits + (predicted == labels).sum().item(), self.asked + len(labels)

    def report(self, report: Report) -> None:
        if self.distances is not None:
            result = self.distances.result()
            report.metrics.update({"fid": result["fid"], "kid": result["kid"]})
        if self.classifier is not None:
            report.metrics.update(class_statistics(self.classes))
        if self.asked:
            report.metrics["class_agreement"] = self.hits / self.asked
        report.metrics["nn_distance_to_train"] = self.nearest / max(self.count, 1)


def _evaluate_digits_gan(model: Any, report: Report, samples: int, seed: int, device: Any, features: str,
                         inception_weights: str | None) -> None:
    if model.config.data is not None:
        _evaluate_folder_gan(model, report, samples, seed, device, features, inception_weights)
        return
    classifier = load_classifier(device)
    extractor = classifier if features in ("auto", "digits") else build_extractor(features, inception_weights, 1)
    report.protocol["features"] = "digits" if features == "auto" else features
    held_out_digits = load_embedded("test")
    held_out, train = held_out_digits.as_float(), load_embedded("train").as_float()
    floor_draw = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:len(held_out)]]
    held_out_features, reference = _features(extractor, [held_out], device), unit(train)
    generated = _Samples(extractor, held_out_features, device, classifier)
    for chunk, labels in _counting(_generated(model, samples, seed), samples, "samples", lambda item: len(item[0])):
        chunk = _digit_frame(chunk)
        generated.add(chunk, labels, nearest_neighbour_distances(unit(chunk), lambda: [reference]))
    generated.report(report)
    report.reference["real-vs-real floor"] = _distribution(held_out_features,
                                                           _features(extractor, [floor_draw], device), device)
    if model.conditional:
        report.protocol["classes"] = f"{samples} samples, every class in turn; class_agreement: how often the " \
                                     "digit classifier names the class asked for"
    report.reference["held-out digits"] = class_statistics(torch.bincount(held_out_digits.labels, minlength=10))
    report.reference["held-out digits"]["nn_distance_to_train"] = nearest_neighbour_distance(unit(held_out),
                                                                                             reference)
    report.metrics["fid_over_floor"] = report.metrics["fid"] / max(report.reference["real-vs-real floor"]["fid"],
                                                                   1e-12)
    report.protocol.update({"generated": samples, "reference": "1,000 held-out embedded digits",
                            "floor": "1,000 training digits vs the held-out digits",
                            "features": "digit classifier" if extractor is classifier else features})


def _digit_frame(images: Tensor) -> Tensor:
    """Generated digits in the 28 × 28 frame of the real ones: 32-pixel images (the digits padded by 2) cropped,
    64-pixel ones (those resized ×2) resized back to 32 first."""
    if images.shape[-1] == 64:
        images = F.interpolate(images, size=32, mode="area")
    if images.shape[-1] == 32:
        images = images[..., 2:30, 2:30]
    return images


def _evaluate_folder_gan(model: Any, report: Report, samples: int, seed: int, device: Any, features: str,
                         inception_weights: str | None) -> None:
    """A model trained on ``--data DIR``: its samples against as many of DIR's images (there is no held-out
    split of a folder, so the reference is the training data itself), and the distance to the nearest one."""
    data = type(model).load_data(model.config)
    draw = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(seed))[:samples]
    as_unit = lambda images: unit(images.float().div(127.5).sub(1.0))  # noqa: E731 - uint8 levels → [0, 1]
    extractor = _extractor_or_note(report, features, inception_weights, (), False, data.images.shape[1])
    reference = None if extractor is None else \
        _features(extractor, (data.images[part].float().div(127.5).sub(1.0) for part in draw.split(BATCH)), device)
    generated = _Samples(extractor, reference, device)
    for chunk, _ in _counting(_generated(model, samples, seed), samples, "samples", lambda item: len(item[0])):
        # the whole folder is the reference, a part at a time
        generated.add(chunk, None, nearest_neighbour_distances(unit(chunk), lambda: map(as_unit,
                                                                                       data.images.split(4096))))
    generated.report(report)
    report.protocol.update({"generated": samples, "reference": f"{len(draw)} training images of {model.config.data} "
                            "(a folder has no held-out split)"})


def _training_folder(model: Any, payload: dict[str, Any], place: str | None, checkpoint: str | Path) -> str | None:
    """Point ``model`` (trained on ``--data DIR``, which its evaluation reads) at ``place``, where ``DIR`` lies now
    (given as ``eval --data``); the warning, also returned, if it does not hold what the checkpoint's record of
    ``DIR`` says.  With no ``place``, a ``DIR`` that is gone is named in one line."""
    if place is None:
        if not Path(model.config.data).exists():
            raise UserError(f"--data: {model.config.data}, the folder the run trained on and whose images its samples "
                            f"are compared with, does not exist; if it moved, give its new place: img2img eval "
                            f"{checkpoint} --data DIR")
        return None
    was = (payload.get("data") or {}).get("--data")
    model.config = replace(model.config, data=str(Path(place).absolute()))
    if was is None or not Path(place).is_dir() or folder_record(place)["digest"] == was["digest"]:
        return None
    note = (f"--data: {place} does not hold the images the run trained on ({was.get('folder')}, as the checkpoint "
            f"of step {payload['step']} recorded them): its samples are compared with these")
    log.warning("%s", note)
    return note


def _distribution(real: Tensor, fake: Tensor, device: Any) -> dict[str, float]:
    result = fid_kid_of_features(real, fake, device=device)
    return {"fid": result["fid"], "kid": result["kid"]}


@torch.no_grad()
def _classify(classifier: Any, images: Tensor, device: Any) -> Tensor:
    return torch.cat([classifier.classify(chunk.to(device)).argmax(1).cpu() for chunk in images.split(BATCH)])


# -- pix2pix -------------------------------------------------------------------------------------------------
def _evaluate_pix2pix(model: Any, options: Any, report: Report, data: EvalData, device: Any, features: str,
                      inception_weights: str | None, metrics: tuple[str, ...]) -> None:
    held_out = replace(options, a=data.a, b=data.b, aligned=data.aligned)
    if (held_out.aligned is None) == (held_out.a is None or held_out.b is None):
        raise UserError("held-out pix2pix data: give --a DIR --b DIR (paired by name) or --aligned DIR")
    dataset = type(model).dataset(held_out, train=False)
    # what training checks of its data: broken files, aligned files of odd width
    check_pairs(dataset.pairs, data.prefix, before="evaluating")
    task = demo_task(data.a or data.aligned)
    files = [pair.b or pair.a for pair in dataset.pairs]
    try:
        perceptual = Lpips(device)
    except UserError as error:
        if "lpips" in metrics:
            raise
        report.notes.append(f"lpips skipped: {error}")
        perceptual = None
    extractor = _extractor_or_note(report, features, inception_weights, metrics, task is not None,
                                   options.channels_b)
    paired, identity, targets, outputs = PairedMeans(), PairedMeans(), _Features(extractor, device), \
        _Features(extractor, device)
    skeleton = task == SKELETON_TASK
    if skeleton:
        classifier = load_classifier(device)
        labels = torch.tensor([label_of(path) for path in files])
        dilation = PairedMeans()
        agree = {name: _Agreement(classifier, device) for name in ("outputs", "dilation", "targets")}
    for span in _counting(_spans(len(dataset)), len(dataset), "pairs"):
        items = [dataset[index] for index in span]
        inputs, target = (torch.stack([item[key] for item in items]) for key in ("a", "b"))
        output = _translate(model, inputs, "a2b", device)
        paired.add(unit(output), unit(target))
        identity.add(unit(_match_channels(inputs, target)), unit(target))
        if perceptual is not None:
            perceptual.add(output, target)
        targets.add(target)
        outputs.add(output)
        if skeleton:
            dilated = F.max_pool2d(unit(inputs), 3, 1, 1)
            dilation.add(dilated, unit(target))
            expected = labels[span.start:span.stop]
            agree["outputs"].add(output, expected)
            agree["dilation"].add(dilated * 2 - 1, expected)
            agree["targets"].add(target, expected)
    report.metrics.update(paired.result())
    report.reference["identity"] = identity.result()
    if perceptual is not None:
        report.metrics["lpips"] = perceptual.result()
    if extractor is not None:
        _record(report, targets.all(), outputs.all(), device)
        _floor(report, extractor, targets.all(), lambda: type(model).dataset(options, train=False),
               lambda dataset: len(dataset), lambda dataset, index: dataset[index]["b"], device)
    if skeleton:
        report.reference["dilation 3x3"] = dilation.result()
        report.metrics["label_agreement"] = agree["outputs"].result()
        report.reference["dilation 3x3"]["label_agreement"] = agree["dilation"].result()
        report.reference["exact targets"] = {"label_agreement": agree["targets"].result()}
    report.protocol.update({"pairs": len(dataset), "size": options.size, "resize": "bicubic to the training size",
                            "demo_task": task})


def _match_channels(images: Tensor, like: Tensor) -> Tensor:
    """``images`` (N, 1, 3 or 4, H, W) in [-1, 1] on the CPU with the channels of ``like``, converted as the data
    loaders convert a file (:func:`~img2img.data.images.convert_channels`): luminance, repetition, alpha dropped
    or added opaque.  (A colour input beside an RGBA target left three channels against four.)"""
    if images.shape[1] == like.shape[1]:
        return images
    converted = convert_channels(images.add(1).div(2).permute(0, 2, 3, 1).numpy(), like.shape[1])
    return torch.from_numpy(np.ascontiguousarray(converted)).permute(0, 3, 1, 2).mul(2).sub(1)


# -- CycleGAN and DiscoGAN -------------------------------------------------------------------------------------
def _evaluate_unpaired(model: Any, options: Any, report: Report, data: EvalData, device: Any, features: str,
                       inception_weights: str | None, metrics: tuple[str, ...]) -> None:
    held_out = replace(options, a=data.a, b=data.b, gpu_augment=False)  # both given (_require)
    dataset = type(model).dataset(held_out, train=False)
    files = {"a": dataset.a_files, "b": dataset.b_files}
    for side, paths in files.items():  # every broken file named in one line, and no decoder crash in this process
        verify_images(paths, f"{data.prefix}{side}", before="evaluating")
    directions = model.translation_targets()  # a2b, and b2a for the two-way models
    task = demo_task(data.a)
    digits = task is not None
    # each direction's FID compares its translations with the real images of the side it translates to
    sides = [("_a2b", "a", "b", "a2b"), *([("_b2a", "b", "a", "b2a")] if "b2a" in directions else [])]
    extractors = {to: _extractor_or_note(report, features, inception_weights, metrics, digits,
                                         dataset.channels_b if to == "b" else dataset.channels_a)
                  for _, _, to, _ in sides}
    real = {side: _Features(extractors.get(side), device) for side in "ab"}
    fake = {side: _Features(extractors.get(side), device) for side in "ab"}
    colour = None
    if task == COLOUR_TASK:
        names_b = {Path(p).name: index for index, p in enumerate(dataset.b_files)}
        order = [names_b[Path(p).name] for p in dataset.a_files if Path(p).name in names_b]
        if len(order) == len(dataset.a_files):  # test/b holds the exact targets of test/a
            classifier = load_classifier(device)
            labels = torch.tensor([label_of(path) for path in dataset.a_files])
            colour = {"model": PairedMeans(), "map": PairedMeans(), "identity": PairedMeans(),
                      **{name: _Agreement(classifier, device) for name in ("agree", "agree_map", "agree_exact")}}
    ink = lambda rgb: ink_from_colour(rgb) * 2 - 1  # noqa: E731
    for source in "ab":  # one pass over each side: its real images' features and its translations'
        direction = "a2b" if source == "a" else "b2a"
        to = "b" if source == "a" else "a"
        for span in _counting(_spans(len(files[source])), len(files[source]), f"images of {source.upper()}"):
            chunk = torch.stack([dataset.side_image(source, index) for index in span])
            real[source].add(chunk)
            if direction not in directions:
                continue
            translated = _translate(model, chunk, direction, device)
            fake[to].add(translated)
            if colour is not None and source == "a":
                target = unit(torch.stack([dataset.side_image("b", order[index]) for index in span]))
                expected = labels[span.start:span.stop]
                colour["model"].add(unit(translated), target)
                colour["map"].add(colour_map(unit(chunk)), target)
                colour["identity"].add(unit(chunk).expand(-1, 3, -1, -1), target)
                colour["agree"].add(ink(unit(translated)), expected)
                colour["agree_map"].add(ink(colour_map(unit(chunk))), expected)
                colour["agree_exact"].add(ink(target), expected)
    for name, source, to, _ in sides:
        extractor = extractors[to]
        if extractor is not None:
            _record(report, real[to].all(), fake[to].all(), device, name)
            _floor(report, extractor, real[to].all(),
                   lambda: type(model).dataset(replace(options, gpu_augment=False), False),
                   lambda dataset, side=to: len(dataset.a_files if side == "a" else dataset.b_files),
                   lambda dataset, index, side=to: dataset.side_image(side, index), device, name)
    if colour is not None:
        report.metrics.update(colour["model"].result())
        report.reference["colour map only"] = colour["map"].result()
        report.reference["identity"] = colour["identity"].result()
        report.metrics["label_agreement"] = colour["agree"].result()
        report.reference["colour map only"]["label_agreement"] = colour["agree_map"].result()
        report.reference["exact targets"] = {"label_agreement": colour["agree_exact"].result()}
    report.protocol.update({"images_a": len(files["a"]), "images_b": len(files["b"]), "size": options.size,
                            "resize": "bicubic to the training size", "demo_task": task})


def _evaluate_domains(model: Any, options: Any, report: Report, data: EvalData, device: Any, features: str,
                      inception_weights: str | None, metrics: tuple[str, ...]) -> None:
    """StarGAN's protocol (see the module docstring)."""
    from img2img.data.demo import STYLE_TASK, STYLES  # noqa: PLC0415
    from img2img.models.stargan import DomainImages, domain_folders  # noqa: PLC0415

    folders = domain_folders(data.data, f"{data.prefix}data")
    names = tuple(name for name, _ in folders)
    if names != tuple(options.domains):
        raise UserError(f"{data.prefix}data: {data.data} holds the domains {', '.join(names)}; the model was "
                        f"trained on {', '.join(options.domains)}")
    verify_images([path for _, paths in folders for path in paths], f"{data.prefix}data", before="evaluating")
    datasets = {name: DomainImages([(name, paths)], options.channels, options.size, options.size, flip=False,
                                   train=False) for name, paths in folders}
    files = {name: [Path(path).name for path in paths] for name, paths in folders}
    task = demo_task(data.data)
    extractor = _extractor_or_note(report, features, inception_weights, metrics, task is not None,
                                   options.channels)
    real = {name: _Features(extractor, device) for name in names}
    fake = {(s, t): _Features(extractor, device) for s in names for t in names if s != t}
    own = {name: PairedMeans() for name in names}
    styles = task == STYLE_TASK and set(names) == set(STYLES) and all(files[n] == files[names[0]] for n in names)
    if styles:  # test/<style> holds every held-out digit in every style: the exact target of every pair
        classifier = load_classifier(device)
        labels = torch.tensor([label_of(name) for name in files[names[0]]])
        pairs = [(s, t) for s in names for t in names if s != t]
        psnr = {pair: PairedMeans() for pair in pairs}
        mapped_psnr = {pair: PairedMeans() for pair in pairs}
        agree = {pair: _Agreement(classifier, device) for pair in pairs}
        mapped_agree = {pair: _Agreement(classifier, device) for pair in pairs}
    longest = max(len(dataset) for dataset in datasets.values())
    for span in _counting(_spans(longest), longest, "images of each domain"):  # every domain's chunk
        chunk = {name: torch.stack([dataset[index]["image"] for index in span if index < len(dataset)])
                 for name, dataset in datasets.items() if span.start < len(dataset)}
        for name, images in chunk.items():
            real[name].add(images)
        for source, images in chunk.items():
            for target in names:
                translated = _translate(model, images, target, device)
                if source == target:
                    own[source].add(unit(translated), unit(images))
                    continue
                fake[(source, target)].add(translated)
                if styles:
                    exact, expected = unit(chunk[target]), labels[span.start:span.stop]
                    mapped = STYLES[target].paint(STYLES[source].ink_of(unit(images)))
                    psnr[(source, target)].add(unit(translated), exact)
                    mapped_psnr[(source, target)].add(mapped, exact)
                    agree[(source, target)].add(STYLES[target].ink_of(unit(translated)) * 2 - 1, expected)
                    mapped_agree[(source, target)].add(STYLES[target].ink_of(mapped) * 2 - 1, expected)
    if extractor is not None:
        fid, kid = [], []
        for target in names:
            translated = torch.cat([fake[(s, target)].all() for s in names if s != target])
            _record(report, real[target].all(), translated, device, f"_to_{target}")
            fid.append(report.metrics[f"fid_to_{target}"])
            kid.append(report.metrics[f"kid_to_{target}"])
        report.metrics["fid"], report.metrics["kid"] = sum(fid) / len(fid), sum(kid) / len(kid)
    own_psnr = {name: means.result()["psnr"] for name, means in own.items()}
    report.metrics.update({f"own_domain_psnr_{name}": value for name, value in own_psnr.items()})
    report.metrics["own_domain_psnr"] = sum(own_psnr.values()) / len(own_psnr)
    if styles:
        baseline = report.reference.setdefault("colour map only", {})
        for source, target in pairs:
            pair = f"{source}_to_{target}"
            report.metrics[f"psnr_{pair}"] = psnr[(source, target)].result()["psnr"]
            report.metrics[f"label_agreement_{pair}"] = agree[(source, target)].result()
            baseline[f"psnr_{pair}"] = mapped_psnr[(source, target)].result()["psnr"]
            baseline[f"label_agreement_{pair}"] = mapped_agree[(source, target)].result()
        model_psnr = [report.metrics[f"psnr_{s}_to_{t}"] for s, t in pairs]
        model_agree = [report.metrics[f"label_agreement_{s}_to_{t}"] for s, t in pairs]
        base_psnr = [baseline[f"psnr_{s}_to_{t}"] for s, t in pairs]
        base_agree = [baseline[f"label_agreement_{s}_to_{t}"] for s, t in pairs]
        report.metrics["psnr"] = sum(model_psnr) / len(pairs)
        report.metrics["label_agreement"] = sum(model_agree) / len(pairs)
        baseline["psnr"], baseline["label_agreement"] = sum(base_psnr) / len(pairs), sum(base_agree) / len(pairs)
        report.metrics["pairs_beating_colour_map"] = sum(p > b for p, b in zip(model_psnr, base_psnr))
        report.metrics["pairs"] = len(pairs)
    report.protocol.update({"domains": list(names), "images": {n: len(d) for n, d in datasets.items()},
                            "size": options.size, "resize": "bicubic to the training size", "demo_task": task})


@torch.no_grad()
def _translate(model: Any, images: Tensor, direction: str, device: Any) -> Tensor:
    return torch.cat([model.translate(chunk.to(device), direction).float().cpu() for chunk in images.split(BATCH)])


def _extractor_or_note(report: Report, features: str, inception_weights: str | None, metrics: tuple[str, ...],
                       digits: bool, channels: int) -> Any:
    """The FID/KID feature extractor, or None when FID and KID are skipped (with a note): the Inception weights
    are missing and neither the metrics nor the features were asked for by name."""
    name = ("digits" if digits else "inception") if features == "auto" else features
    try:
        extractor = build_extractor(name, inception_weights, channels)
    except UserError as error:
        if any(m.startswith(("fid", "kid")) for m in metrics) or features != "auto":
            raise
        if f"fid/kid skipped: {error}" not in report.notes:
            report.notes.append(f"fid/kid skipped: {error}")
        return None
    report.protocol["features"] = name
    return extractor


def _record(report: Report, real: Tensor, fake: Tensor, device: Any, suffix: str = "") -> None:
    """FID and KID between two sets of features into the report's metrics (``fid<suffix>``, ``kid<suffix>``)."""
    result = _distribution(real, fake, device)
    report.metrics[f"fid{suffix}"], report.metrics[f"kid{suffix}"] = result["fid"], result["kid"]


def _floor(report: Report, extractor: Any, held_out: Tensor, training: Any, count: Any, image: Any, device: Any,
           suffix: str = "", seed: int = 0) -> None:
    """The real-vs-real floor: as many training images of the target domain (drawn with ``seed``) against the
    held-out ones (``held_out``: their features).  ``training()`` builds the training dataset, ``count(dataset)``
    and ``image(dataset, i)`` read it."""
    try:
        dataset = training()
        size = count(dataset)
    except (UserError, TypeError, OSError) as error:  # an imported checkpoint names no data; data moved away
        note = f"real-vs-real floor skipped: the training data cannot be read ({error})"
        if note not in report.notes:
            report.notes.append(note)
        return
    draw = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:len(held_out)]
    if len(draw) < 2:
        return
    train = _features(extractor, _chunks(lambda index: image(dataset, index), draw), device)
    result = _distribution(held_out, train, device)
    floor = report.reference.setdefault("real-vs-real floor", {})
    floor[f"fid{suffix}"], floor[f"kid{suffix}"] = result["fid"], result["kid"]
    report.protocol[f"floor{suffix}"] = f"{len(draw)} training images vs the {len(held_out)} held-out ones"


def evaluate_checkpoint(path: str | Path, a: str | None = None, b: str | None = None, aligned: str | None = None,
                        metrics: tuple[str, ...] = (), features: str = "auto", inception_weights: str | None = None,
                        samples: int | None = None, seed: int = 0, device: str = "auto",
                        json_path: Path | None = None, data: str | None = None) -> tuple[Report, Path | None]:
    """Evaluate a checkpoint file or run folder (its averaged weights when it has them).  Returns the report and
    where :func:`write_report` is to write it: ``json_path``, or by default ``RUN/eval/step-N.json`` beside the
    checkpoint; None, with a warning said before the evaluation, where that folder cannot be written (weights on
    a read-only file system), so that the metrics are still computed and shown.  A ``json_path`` that cannot be
    written is refused before the evaluation."""
    if inception_weights is not None:  # refused before the model loads, whether or not the features need it
        find_inception_weights(inception_weights)
    if json_path is not None:
        check_writable(json_path, "--json")
    torch_device = resolve_device(device)
    model, run, payload = load_model(path, torch_device, option="CHECKPOINT")
    if json_path is not None:
        refuse_replacing(json_path, "--json", {"CHECKPOINT": payload["path"]})
    destination = json_path
    if destination is None:
        folder = Path(payload["path"]).resolve().parent
        if folder.name == "checkpoints":
            folder = folder.parent
        destination = folder / "eval" / f"step-{int(payload['step']):08d}.json"
        refusal = unwritable(destination)
        if refusal is not None:
            log.warning("cannot write the report into %s (%s): the metrics are printed only; pass --json FILE to "
                        "keep them", *refusal)
            destination = None
    if samples is not None and model.evaluation != "samples":
        log.warning("--samples applies to models that generate images (mnist-gan); a %s model is evaluated on "
                    "the held-out data, so it is ignored", run.model)
    samples = 1000 if samples is None else samples
    moved = None
    if model.evaluation == "samples" and getattr(model.config, "data", None) is not None:
        moved, data = _training_folder(model, payload, data, path), None  # the one folder it reads, perhaps moved
    data = EvalData(a, b, aligned, data) if (a or b or aligned or data) else None
    report = evaluate_model(model, run, int(payload["step"]), data, features, inception_weights, samples, seed,
                            torch_device, metrics)
    if moved:
        report.notes.append(moved)
    if not report.metrics:  # an empty table and JSON, with an exit status that says all went well
        raise UserError(f"no metric could be computed for this {run.model} model: " + "; ".join(report.notes))
    used = report.protocol.get("features")
    if inception_weights is not None and used != "inception":
        note = f"--inception-weights not used: FID/KID were computed on the {used or 'no'} features"
        report.notes.append(note)
        log.warning("%s", note)
    report.protocol["checkpoint"] = payload["path"]
    return report, destination


def write_report(report: Report, path: Path) -> None:
    """Write ``report`` as JSON to ``path`` (an earlier report there stays whole until the new one is)."""
    replace_file(path, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
