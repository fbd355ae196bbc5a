"""Metric functions: distribution distances (FID, KID through torchmetrics), paired image metrics, digit
statistics.

FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to
the features of two image sets, ‖μ₁ - μ₂‖² + Tr(Σ₁ + Σ₂ - 2(Σ₁Σ₂)^½); KID
(Bińkowski et al. 2018) the unbiased squared MMD with the cubic polynomial
kernel, averaged over subsets.  Both take any feature extractor: a module
mapping ``(N, C, H, W)`` images in [-1, 1] to ``(N, D)`` features, with a
``num_features`` attribute (:mod:`img2img.evaluation.features`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from img2img.errors import UserError


def _torchmetrics():
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: PLC0415
        from torchmetrics.image.kid import KernelInceptionDistance  # noqa: PLC0415
    except ImportError:
        raise UserError("FID and KID need torchmetrics: pip install torchmetrics") from None
    return FrechetInceptionDistance, KernelInceptionDistance


@torch.no_grad()
def fid_kid(extractor: nn.Module, real: Iterable[Tensor], fake: Iterable[Tensor], kid_subsets: int = 10,
            kid_subset_size: int = 1000, device: torch.device | str = "cpu") -> dict[str, float]:
    """FID, KID mean and KID std between two streams of ``(N, C, H, W)`` batches in [-1, 1]."""
    return fid_kid_of_features(extract_features(extractor, real, device), extract_features(extractor, fake, device),
                               kid_subsets, kid_subset_size, device)


@torch.no_grad()
def extract_features(extractor: nn.Module, batches: Iterable[Tensor], device: torch.device | str = "cpu") -> Tensor:
    """``extractor``'s features ``(N, D)`` (float64, on ``device``) of a stream of ``(n, C, H, W)`` batches in
    [-1, 1]: what FID and KID compare, a few kilobytes an image, so that the images need not be kept."""
    extractor = extractor.to(device).eval()
    parts = [extractor(batch.to(device, torch.float32)).double() for batch in batches]
    return torch.cat(parts) if parts else torch.empty(0, extractor.num_features, dtype=torch.float64, device=device)


# KID keeps at most this many generated features (a uniform draw of them past that many), so that memory does not
# grow with the images generated: 0.1 GB with the digit features, 0.8 GB with Inception's
KID_KEPT = 50_000


@torch.no_grad()
def fid_kid_of_features(real: Tensor, fake: Tensor, kid_subsets: int = 10, kid_subset_size: int = 1000,
                        device: torch.device | str = "cpu") -> dict[str, float]:
    """FID, KID mean and KID std between two sets of features (:func:`extract_features`)."""
    return Distances(real, kid_subsets, kid_subset_size, device).add(fake).result()


class Distances:
    """FID and KID between the features of a reference set, given whole, and of generated images, given a batch
    at a time (:meth:`add`), holding nothing in proportion to how many are generated: FID's sums (torchmetrics
    keeps the count, the sum and the sum of outer products, float64), and for KID every feature up to
    ``kept``, past that a uniform draw of ``kept`` of them (reservoir sampling, seeded), from which KID draws its
    subsets as it would from all of them."""

    def __init__(self, real: Tensor, kid_subsets: int = 10, kid_subset_size: int = 1000,
                 device: torch.device | str = "cpu", kept: int = KID_KEPT) -> None:
        fid_class, self.kid_class = _torchmetrics()
        self.real, self.device, self.kid_subsets, self.kid_subset_size = real.to(device), device, kid_subsets, \
            kid_subset_size
        self.identity = _Identity(real.shape[1])  # the features, extracted once, fed through an identity extractor
        self.fid = fid_class(feature=self.identity, normalize=False).to(device)
        self.fid.update(self.real, real=True)
        self.kept, self.limit, self.count = [], kept, 0
        self.draw = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def add(self, fake: Tensor) -> Distances:
        fake = fake.to(self.device)
        self.fid.update(fake, real=False)
        room = max(self.limit - self.count, 0)
        self.kept.append(fake[:room])
        rest = fake[room:]
        if len(rest):  # the reservoir is full: the i-th feature (from 0) takes a place with chance kept / (i + 1)
            self.kept = [torch.cat(self.kept)]
            seen = torch.arange(self.count + room, self.count + len(fake), dtype=torch.float64)
            places = (torch.rand(len(rest), generator=self.draw, dtype=torch.float64) * (seen + 1)).long()
            rows = (places < self.limit).nonzero().flatten()
            for row, place in zip(rows.tolist(), places[rows].tolist()):  # in order: a later one replaces
                self.kept[0][place] = rest[row]
        self.count += len(fake)
        return self

    def result(self) -> dict[str, float]:
        if min(len(self.real), self.count) < 2:
            raise UserError(f"FID needs at least 2 images on each side, got {len(self.real)} real and "
                            f"{self.count} generated")
        fake = torch.cat(self.kept)
        subset = min(self.kid_subset_size, len(self.real), len(fake))
        with warnings.catch_warnings():  # torchmetrics warns that KID keeps its features in memory: `kept` at most
            warnings.simplefilter("ignore", UserWarning)
            kid = self.kid_class(feature=self.identity, subsets=self.kid_subsets, subset_size=subset,
                                 normalize=False).to(self.device)
        kid.update(self.real, real=True)
        kid.update(fake, real=False)
        generator_state = torch.get_rng_state()
        torch.manual_seed(0)  # KID draws its subsets at random: the same draw every time
        kid_mean, kid_std = kid.compute()
        torch.set_rng_state(generator_state)
        return {"fid": float(self.fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std),
                "real_images": len(self.real), "generated_images": self.count}


class _Identity(nn.Module):
    """Features already extracted pass through (both metrics are fed features computed once)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def paired_metrics(output: Tensor, target: Tensor) -> dict[str, float]:
    """Mean L1, PSNR (dB) and SSIM (11×11 Gaussian window) of ``(N, C, H, W)`` images in [0, 1], per image."""
    return PairedMeans().add(output, target).result()


class PairedMeans:
    """:func:`paired_metrics` over pairs given a batch at a time: each image's L1, PSNR and SSIM are kept (three
    numbers an image), never the images."""

    def __init__(self) -> None:
        self.values: dict[str, list[Tensor]] = {"l1": [], "psnr": [], "ssim": []}

    def add(self, output: Tensor, target: Tensor) -> PairedMeans:
        import kornia  # noqa: PLC0415 - 0.2 s to import: not for every command line (--help)

        output, target = output.float().clamp(0, 1), target.float()
        mse = (output - target).pow(2).flatten(1).mean(1).clamp_min(1e-10)
        self.values["l1"].append((output - target).abs().flatten(1).mean(1).cpu())
        self.values["psnr"].append((10 * torch.log10(1.0 / mse)).cpu())
        self.values["ssim"].append(kornia.metrics.ssim(output, target, window_size=11).flatten(1).mean(1).cpu())
        return self

    def per_image(self, name: str) -> Tensor:
        return torch.cat(self.values[name])

    def result(self) -> dict[str, float]:
        return {name: self.per_image(name).mean().item() for name in self.values}


def class_statistics(counts: Tensor) -> dict[str, float]:
    """Coverage (classes predicted for at least 1% of the samples) and KL(class histogram ‖ uniform), in nats, of
    how many samples each class has (``torch.bincount`` of their labels)."""
    counts = counts.cpu().double()
    share, classes = counts / counts.sum(), len(counts)
    kl = float((share[share > 0] * (share[share > 0] * classes).log()).sum())
    return {"classes_covered": int((share >= 0.01).sum()), "kl_to_uniform": kl,
            "class_counts": [int(c) for c in counts]}


def nearest_neighbour_distance(samples: Tensor, reference: Tensor, chunk: int = 256) -> float:
    """Mean over ``samples`` of the root-mean-square pixel distance to the closest image of ``reference``.

    Near zero means copies of the reference (memorisation), which FID does not see.
    """
    return nearest_neighbour_distances(samples, lambda: reference.split(4096), chunk).mean().item()


@torch.no_grad()
def nearest_neighbour_distances(samples: Tensor, reference: Callable[[], Iterable[Tensor]],
                                chunk: int = 256) -> Tensor:
    """Each sample's root-mean-square pixel distance to the closest image of the reference, whose chunks
    ``reference()`` gives anew for each chunk of samples (so that a large reference need not be held whole)."""
    distances = []
    for start in range(0, len(samples), chunk):
        part = samples[start:start + chunk].flatten(1).float()
        closest = None
        for reference_part in reference():
            near = torch.cdist(part, reference_part.flatten(1).float()).min(1).values
            closest = near if closest is None else torch.minimum(closest, near)
        distances.append(closest / part.shape[1] ** 0.5)
    return torch.cat(distances) if distances else torch.empty(0)


def lpips_backbone_file() -> Path:
    """Where torchvision keeps the AlexNet weights that LPIPS needs (torch's hub cache)."""
    from torchvision.models import AlexNet_Weights  # noqa: PLC0415

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(AlexNet_Weights.IMAGENET1K_V1.url).name


class Lpips:
    """Mean LPIPS (AlexNet; Zhang et al. 2018) of ``(N, C, H, W)`` images in [-1, 1], over pairs given a batch at
    a time.  Needs the AlexNet weights already in torch's hub cache: :class:`UserError` otherwise (nothing is
    downloaded)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        backbone = lpips_backbone_file()
        if not backbone.is_file():
            raise UserError(f"LPIPS needs the AlexNet weights at {backbone} (nothing is downloaded)")
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity  # noqa: PLC0415

        self.device = device
        self.metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=False).to(device)

    @torch.no_grad()
    def add(self, output: Tensor, target: Tensor) -> None:
        grey_to_rgb = lambda images: images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images[:, :3]  # noqa
        self.metric.update(grey_to_rgb(output.float().clamp(-1, 1)).to(self.device),
                           grey_to_rgb(target.float()).to(self.device))

    def result(self) -> float:
        return float(self.metric.compute())
