"""StarGAN (Choi et al. 2018): one generator that translates among N domains.

As in the official code (yunjey/stargan, single-dataset training): G takes
the image and the target domain's one-hot label tiled over it; D is a
PatchGAN with a real/fake head and a domain-classifier head.  Each step, the
target of every image is the domain of another image of the batch (a random
permutation of the batch's labels); D minimises the WGAN loss, λ_cls times
the cross-entropy of its class head on real images, and λ_gp times the
gradient penalty; every ``--n-critic`` steps G minimises the WGAN loss of its
translations, λ_cls times D's cross-entropy of them against their targets,
and λ_rec times the L1 of the cycle back to the source domain.  Adam 1e-4
(0.5, 0.999), batch 16, the learning rate decaying linearly over the second
half.

Data: ``--data DIR``, one sub-folder per domain (two or more), named by the
folder; translation takes ``--to DOMAIN``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from img2img.config import MAX_SIDE, TrainConfig, option
from img2img.data.images import NoImages, list_images, say_sub_folders_without_images
from img2img.data.paired import infer_channels
from img2img.data.unpaired import check_folder, load_augmented, single_transform
from img2img.errors import UserError
from img2img.losses import gradient_penalty
from img2img.models.base import GANModel, Logs, Phase, Translation, evaluating
from img2img.nn import init_weights
from img2img.nn.stargan import StarDiscriminator, StarGenerator, discriminator_depth

SAMPLE_IMAGES = 4


@dataclass(frozen=True)
class StarGANConfig:
    data: str | None = option(None, "Folder with one sub-folder of images per domain (two or more).", path=True)
    size: int = option(128, "Training crop side in pixels.", min=8, max=MAX_SIDE)
    load_size: int | None = option(None, "Side images are resized to before cropping.  [default: --size]",
                                   min=1, max=MAX_SIDE)
    flip: bool = option(True, "Random horizontal flips.")
    base_channels: int = option(64, "Generator base width.", flag="--ngf", min=1, max=4096)
    d_base_channels: int = option(64, "Discriminator base width.", flag="--ndf", min=1, max=4096)
    n_blocks: int = option(6, "Residual blocks of the generator.", min=0, max=64)
    lambda_cls: float = option(1.0, "Weight λ_cls of the domain-classification terms.", min=0)
    lambda_rec: float = option(10.0, "Weight λ_rec of the cycle reconstruction ‖G(G(x, c), c') − x‖₁.", min=0)
    lambda_gp: float = option(10.0, "Weight λ_gp of the gradient penalty.", min=0)
    n_critic: int = option(5, "The generator updates once every N discriminator steps.", min=1, max=100)
    domains: tuple[str, ...] = ()  # the sub-folders' names, sorted: found when resolving
    channels: int | None = None  # of the images, inferred from the files
    bits: int | None = None


def domain_folders(root: str | Path, option_name: str = "--data") -> list[tuple[str, list[Path]]]:
    """``(name, image files)`` of each sub-folder of ``root`` that holds images, sorted by name; errors name
    the option when there are fewer than two."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{option_name}: {root} {'is not a folder' if root.exists() else 'does not exist'}")
    domains, empty = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            files = [folder / relative for relative in list_images(folder, option_name)]
        except NoImages:  # a sub-folder without images is not a domain (one that cannot be read is an error)
            empty.append(folder.name)
            continue
        domains.append((folder.name, files))
    if len(domains) < 2:
        raise UserError(f"{option_name}: {root} needs two or more sub-folders of images, one per domain (found "
                        f"{len(domains)}: {', '.join(name for name, _ in domains) or 'none'})")
    say_sub_folders_without_images(root, empty, option_name, "domain", tuple(name for name, _ in domains))
    return domains


class DomainImages(Dataset):
    """``{"image": (C, S, S) in [-1, 1], "label": the domain's index}`` over every domain's images."""

    def __init__(self, domains: list[tuple[str, list[Path]]], channels: int, size: int, load_size: int,
                 flip: bool = True, train: bool = True) -> None:
        self.items = [(path, label) for label, (_, files) in enumerate(domains) for path in files]
        self.channels = channels
        self.transform = single_transform(size, load_size, flip, train)

    def __len__(self) -> int:
        return len(self.items)

    def files_for(self, key: Any) -> list[Path]:
        return [self.items[key[0] if isinstance(key, tuple) else int(key)][0]]

    def __getitem__(self, key: Any) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (int(key), 0)
        path, label = self.items[index]
        return {"image": load_augmented(path, self.channels, self.transform, seed), "label": label}


class ToDomain(nn.Module):
    """The generator fixed to one target domain: ``(N, C, H, W)`` → ``(N, C, H, W)`` (what translate runs)."""

    def __init__(self, generator: StarGenerator, index: int) -> None:
        super().__init__()
        self.generator = generator
        self.index = index
        self.size_multiple, self.min_size = generator.size_multiple, generator.min_size

    def forward(self, images: Tensor) -> Tensor:
        labels = F.one_hot(torch.full((images.shape[0],), self.index, device=images.device),
                           self.generator.domains)
        return self.generator(images, labels.to(images.dtype))


class StarGAN(GANModel):
    """StarGAN: one generator for every pair of N domains (sub-folders of --data), WGAN-GP + domain classifier."""

    name = "stargan"
    Config = StarGANConfig
    phases = (Phase("d", ("d",)), Phase("g", ("g",)))
    inference_networks = ("g",)
    translation_option = "--to"
    evaluation = "multi-domain"
    default_metric = "fid"
    # decay_steps None: the second half of --steps, as the official code decays over the second half
    train_defaults = dict(batch_size=16, lr=1e-4, steps=200000, decay_steps=None, save_every_steps=10000,
                          sample_every_steps=1000, log_every_steps=100, num_workers=2)
    bench_batch_size = 16
    order = 40

    def __init__(self, config: StarGANConfig) -> None:
        super().__init__(config)
        if not config.domains or config.channels is None:
            raise ValueError("resolve the configuration first (StarGAN.resolve)")
        count = len(config.domains)
        self.nets["g"] = init_weights(StarGenerator(config.channels, count, config.base_channels, config.n_blocks))
        self.nets["d"] = init_weights(StarDiscriminator(config.channels, config.size, count,
                                                        config.d_base_channels))

    # -- configuration and data -----------------------------------------------------------------------------
    @classmethod
    def check_size(cls, size: int) -> None:
        depth = discriminator_depth(size)
        if size < 8 or size % 4 or size % 2**depth:
            raise UserError(f"--size: {size} must be a multiple of 4, and of {2**depth} for the discriminator's "
                            f"{depth} halvings")

    @classmethod
    def resolve(cls, config: StarGANConfig) -> StarGANConfig:
        cls.check_size(config.size)
        if config.data is None:
            raise UserError("--data is missing: give a folder with one sub-folder of images per domain")
        load_size = config.size if config.load_size is None else config.load_size
        if load_size < config.size:
            raise UserError(f"--load-size ({load_size}) must be at least --size ({config.size})")
        folders = domain_folders(config.data)
        if any(name == "all" for name, _ in folders):  # translate --to all, export --to all: every domain
            raise UserError(f"--data: {Path(config.data) / 'all'}: a domain cannot be named 'all', which `--to all` "
                            "means every domain; rename the folder")
        found = [check_folder(files, f"--data {name}/") for name, files in folders]
        channels = config.channels or infer_channels([c for c, _ in found])
        return replace(config, load_size=load_size, domains=tuple(name for name, _ in folders), channels=channels,
                       bits=max(bits for _, bits in found))

    @classmethod
    def dataset_size(cls, config: StarGANConfig) -> int:
        return sum(len(files) for _, files in domain_folders(config.data))

    @classmethod
    def dataset(cls, config: StarGANConfig, train: bool = True) -> DomainImages:
        folders = domain_folders(config.data)
        if tuple(name for name, _ in folders) != config.domains:
            raise UserError(f"--data: {config.data} now holds the domains {', '.join(n for n, _ in folders)}; the "
                            f"run was made with {', '.join(config.domains)}")
        return DomainImages(folders, config.channels, config.size, config.load_size, config.flip, train)

    @classmethod
    def synthetic(cls, size: int, batch_size: int, generator: torch.Generator) -> tuple[StarGANConfig, Any]:
        config = StarGANConfig(size=size, load_size=size, domains=("a", "b", "c", "d", "e"), channels=3, bits=8)
        batch = {"image": torch.rand(batch_size, 3, size, size, generator=generator) * 2 - 1,
                 "label": torch.randint(5, (batch_size,), generator=generator)}
        return config, batch

    @classmethod
    def schedule(cls, train: TrainConfig, config: StarGANConfig) -> TrainConfig:
        """The learning rate decays linearly over the second half of --steps unless --decay-steps says."""
        steps = train.steps if train.steps is not None else cls.train_defaults["steps"]
        return replace(train, steps=steps, decay_steps=steps // 2 if train.decay_steps is None else train.decay_steps)

    # -- training --------------------------------------------------------------------------------------------
    def _one_hot(self, labels: Tensor, like: Tensor) -> Tensor:
        return F.one_hot(labels, len(self.config.domains)).to(like.dtype)

    def phase_loss(self, phase: str, nets: Mapping[str, nn.Module], batch: dict[str, Tensor],
                   carry: dict[str, Any]) -> tuple[Tensor, Logs]:
        real, source = batch["image"], batch["label"]
        if "target" not in carry:  # each image's target: the domain of another image of the batch
            carry["target"] = source[torch.randperm(len(source), device=source.device)]
        target = carry["target"]
        if phase == "d":
            with torch.no_grad():
                fake = nets["g"](real, self._one_hot(target, real))
            real_src, real_cls = nets["d"](real)
            fake_src, _ = nets["d"](fake.detach())
            d_real, d_fake = -real_src.float().mean(), fake_src.float().mean()
            d_cls = F.cross_entropy(real_cls.float(), source)
            penalty = gradient_penalty(lambda x: nets["d"](x)[0], real.float(), fake.float())
            loss = d_real + d_fake + self.config.lambda_cls * d_cls + self.config.lambda_gp * penalty
            return loss, {"d_loss": loss.detach(), "d_real": d_real.detach(), "d_fake": d_fake.detach(),
                          "d_cls": d_cls.detach(), "gp": penalty.detach()}
        if phase == "g":
            fake = nets["g"](real, self._one_hot(target, real))
            fake_src, fake_cls = nets["d"](fake)
            g_fake = -fake_src.float().mean()
            g_cls = F.cross_entropy(fake_cls.float(), target)
            reconstructed = nets["g"](fake, self._one_hot(source, real))
            g_rec = F.l1_loss(reconstructed.float(), real.float())
            loss = g_fake + self.config.lambda_cls * g_cls + self.config.lambda_rec * g_rec
            return loss, {"g_loss": loss.detach(), "g_fake": g_fake.detach(), "g_cls": g_cls.detach(),
                          "g_rec": g_rec.detach()}
        raise KeyError(phase)

    @classmethod
    def compile_refusal(cls, config: StarGANConfig) -> str | None:
        return "StarGAN's gradient penalty needs a double backward, which torch.compile cannot take"

    # -- inference and monitoring ----------------------------------------------------------------------------
    def translation_targets(self) -> tuple[str, ...]:
        return self.config.domains

    def translation(self, target: str | None = None) -> Translation:
        targets = self.translation_targets()
        target = targets[0] if target is None else target
        if target not in targets:
            raise UserError(f"--to: this stargan model translates to {', '.join(targets)} (or all), not {target!r}")
        return Translation(ToDomain(self.nets["g"], targets.index(target)), ("g",), self.config.channels,
                           self.config.channels, self.config.bits or 8)

    def conditional_generator(self) -> tuple[nn.Module, tuple[str, ...]]:
        return self.nets["g"], self.config.domains

    def sample_inputs(self, data: Any, seed: int, device: torch.device) -> dict[str, Tensor]:
        """Images spread over every domain (the first of each, then the next, ...)."""
        dataset = self.dataset(self.config, train=False)
        by_domain: dict[int, list[int]] = {}
        for index, (_, label) in enumerate(dataset.items):
            by_domain.setdefault(label, []).append(index)
        picks = [indices[i] for i in range(SAMPLE_IMAGES) for indices in by_domain.values() if i < len(indices)]
        items = [dataset[index] for index in picks[:max(SAMPLE_IMAGES, len(by_domain))]]
        return {"image": torch.stack([item["image"] for item in items]).to(device),
                "label": torch.tensor([item["label"] for item in items], device=device)}

    @torch.no_grad()
    def sample_grid(self, inputs: dict[str, Tensor]) -> tuple[Tensor, int]:
        """Each row: the input, then its translation to every domain in order."""
        from img2img.models.pix2pix import as_rgb  # noqa: PLC0415

        images = inputs["image"]
        with evaluating(self.nets["g"]):
            columns = [images] + [self.nets["g"](images, self._one_hot(torch.full_like(inputs["label"], index),
                                                                       images)).float()
                                  for index in range(len(self.config.domains))]
        return torch.stack([as_rgb(c) for c in columns], 1).flatten(0, 1), len(columns)
