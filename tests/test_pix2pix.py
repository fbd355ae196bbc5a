"""pix2pix: networks faithful to the official layout, paired data, the L1 term, and the CLI."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from img2img.cli import main
from img2img.config import RunConfig, TrainConfig
from img2img.data.images import read_image
from img2img.data.paired import PairedImages, aligned_files, check_pairs, match_folders
from img2img.errors import UserError
from img2img.models.pix2pix import Pix2Pix, Pix2PixConfig
from img2img.nn.patchgan import PatchDiscriminator, PixelDiscriminator, receptive_field
from img2img.nn.unet import UnetGenerator
from img2img.train import Trainer

from test_cli import assert_one_line_error, invoke


def write_gray(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def smooth_images(count, size=32, seed=0):
    rng = np.random.default_rng(seed)
    low = rng.random((count, 4, 4))
    return np.stack([cv2.resize(x, (size, size), interpolation=cv2.INTER_CUBIC) for x in low]).clip(0, 1) * 255


@pytest.fixture
def inverse_pairs(tmp_path):
    """B = 1 - A: a pairing a U-Net learns at once."""
    images = smooth_images(8)
    for index, image in enumerate(images):
        write_gray(tmp_path / "a" / f"{index}.png", image)
        write_gray(tmp_path / "b" / f"{index}.png", 255 - image)
    return tmp_path


def tiny_config(root, **changes):
    settings = dict(a=str(root / "a"), b=str(root / "b"), size=32, load_size=32, flip=False, base_channels=8,
                    d_base_channels=8)
    settings.update(changes)
    return Pix2Pix.resolve(Pix2PixConfig(**settings))


@pytest.mark.parametrize("depth,size,dropouts", [(7, 128, 2), (8, 256, 3), (5, 32, 0)])
def test_unet_shapes_and_dropout_blocks(depth, size, dropouts):
    g = UnetGenerator(3, 1, depth, base_channels=2).eval()
    out = g(torch.randn(1, 3, size, size))
    assert out.shape == (1, 1, size, size) and out.abs().max() <= 1
    assert sum(isinstance(m, torch.nn.Dropout) for m in g.modules()) == dropouts


def test_unet_parameter_names_follow_the_official_layout():
    keys = set(UnetGenerator(3, 3, 7, base_channels=4).state_dict())
    assert {"model.model.0.weight", "model.model.3.weight", "model.model.3.bias",  # outermost down / up conv
            "model.model.1.model.1.weight", "model.model.1.model.2.weight", "model.model.1.model.2.running_mean",
            "model.model.1.model.3.model.3.model.3.model.3.model.3.model.1.weight"} <= keys  # innermost down
    assert "model.model.0.bias" not in keys  # no bias before batch norm, as the official code
    instance = set(UnetGenerator(3, 3, 7, base_channels=4, norm="instance").state_dict())
    assert "model.model.1.model.1.bias" in instance and not any("running" in k for k in instance)


@pytest.mark.parametrize("n_layers,size,out", [(3, 32, 2), (2, 32, 6), (3, 256, 30)])
def test_patch_discriminator_shapes(n_layers, size, out):
    d = PatchDiscriminator(6, base_channels=2, n_layers=n_layers)
    assert d(torch.randn(2, 6, size, size)).shape == (2, 1, out, out)


def test_discriminator_parameter_names_and_receptive_field():
    basic = set(PatchDiscriminator(6, base_channels=4).state_dict())
    assert {"model.0.weight", "model.0.bias", "model.2.weight", "model.3.running_var", "model.8.weight",
            "model.11.weight", "model.11.bias"} <= basic
    pixel = PixelDiscriminator(6, base_channels=4)
    assert pixel(torch.randn(2, 6, 9, 7)).shape == (2, 1, 9, 7)
    assert {"net.0.weight", "net.2.weight", "net.3.weight", "net.5.weight"} <= set(pixel.state_dict())
    assert receptive_field(3) == 70


def test_pix2pix_model_shapes_for_every_discriminator(inverse_pairs):
    for discriminator in ("basic", "n_layers", "pixel"):
        depth = {"n_layers": 2} if discriminator == "n_layers" else {}  # only that one takes --n-layers
        model = Pix2Pix(tiny_config(inverse_pairs, discriminator=discriminator, **depth))
        a = torch.randn(2, 1, 32, 32)
        fake = model.nets["g"](a)
        assert fake.shape == (2, 1, 32, 32)
        assert model.nets["d"](torch.cat([a, fake], 1)).shape[:2] == (2, 1)


def _trainer(root, tmp_path, steps=40, lr=2e-4, **changes):
    run = RunConfig("pix2pix", TrainConfig(steps=steps, batch_size=4, device="cpu", num_workers=0, lr=lr),
                    tiny_config(root, **changes))
    return Trainer(run, tmp_path / "run")


def test_generator_step_trains_all_of_g_and_leaves_d_alone_and_the_reverse(inverse_pairs, tmp_path):
    trainer = _trainer(inverse_pairs, tmp_path)
    batch = next(trainer.data.iterate(0))
    g, d = trainer.model.nets["g"], trainer.model.nets["d"]
    # parameters, not batch-norm running statistics: D always runs in training mode, as in the official code
    d_before = {k: v.clone() for k, v in d.named_parameters()}
    carry = {}
    trainer.train_phase(trainer.model.phases[0], batch, carry)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in g.parameters())
    assert all(p.grad is None and torch.equal(d_before[k], p) for k, p in d.named_parameters())
    g_before = {k: v.clone() for k, v in g.named_parameters()}
    trainer.train_phase(trainer.model.phases[1], batch, carry)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in d.parameters())
    assert all(torch.equal(g_before[k], v) for k, v in g.named_parameters())


def test_l1_falls_on_a_trivially_learnable_pairing(inverse_pairs, tmp_path):
    trainer = _trainer(inverse_pairs, tmp_path, steps=50, lr=1e-3)
    batches = trainer.data.iterate(0)
    l1 = [trainer.train_step(next(batches))["g_l1"].item() for _ in range(50)]
    assert np.mean(l1[-5:]) < 0.4 * np.mean(l1[:5])


def test_unpaired_file_is_named(inverse_pairs):
    (inverse_pairs / "b" / "3.png").unlink()
    with pytest.raises(UserError, match=r"--a/--b: 1 files are unpaired .*a/3\.png has no partner"):
        match_folders(inverse_pairs / "a", inverse_pairs / "b")


def test_nested_folders_pair_by_relative_path_and_any_extension(tmp_path):
    image = smooth_images(1)[0]
    write_gray(tmp_path / "a" / "x" / "1.png", image)
    Image.fromarray(image.astype(np.uint8)).convert("RGB").save(tmp_path / "a.jpg")
    (tmp_path / "b" / "x").mkdir(parents=True)
    (tmp_path / "a.jpg").rename(tmp_path / "b" / "x" / "1.jpg")
    pairs = match_folders(tmp_path / "a", tmp_path / "b")
    assert [(p.a.name, p.b.name) for p in pairs] == [("1.png", "1.jpg")]
    assert check_pairs(pairs).channels_a == 1 and check_pairs(pairs).channels_b == 3


def test_empty_missing_and_unreadable_inputs_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"--a: .*empty holds no images"):
        match_folders(tmp_path / "empty", tmp_path / "empty")
    with pytest.raises(UserError, match=r"--a: .*nowhere does not exist"):
        match_folders(tmp_path / "nowhere", tmp_path / "empty")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "0.png").write_bytes(b"not a png")
    (tmp_path / "b" / "0.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"a/0\.png: not a readable image"):
        check_pairs(match_folders(tmp_path / "a", tmp_path / "b"))


def test_aligned_files_split_into_halves_and_odd_widths_are_named(tmp_path):
    left, right = np.full((32, 32), 40, np.uint8), np.full((32, 32), 200, np.uint8)
    write_gray(tmp_path / "al" / "0.png", np.concatenate([left, right], 1))
    pairs = aligned_files(tmp_path / "al")
    dataset = PairedImages(pairs, 1, 1, 32, 32, flip=False)
    item = dataset[0]
    assert torch.allclose(item["a"], torch.full((1, 32, 32), 40 / 127.5 - 1), atol=1e-5)
    assert torch.allclose(item["b"], torch.full((1, 32, 32), 200 / 127.5 - 1), atol=1e-5)
    swapped = PairedImages(pairs, 1, 1, 32, 32, flip=False, b_to_a=True)[0]
    assert torch.equal(swapped["a"], item["b"])
    write_gray(tmp_path / "al" / "1.png", np.zeros((32, 63)))
    with pytest.raises(UserError, match=r"al/1\.png: an aligned file .* width must be even"):
        check_pairs(aligned_files(tmp_path / "al"))


def test_a_folder_of_only_square_files_given_as_aligned_is_doubted_in_one_line(tmp_path, caplog):
    """Split in two, a square file makes halves twice as tall as wide: possible (portraits side by side), so not
    refused, but a folder of nothing else is most likely single images, which training or `eval --aligned` would
    take as pairs.  One warning line says so; a folder with the usual A|B files (or any of them) gets none."""
    for index in range(3):
        write_gray(tmp_path / "single" / f"{index}.png", np.zeros((16, 16)))
        write_gray(tmp_path / "usual" / f"{index}.png", np.zeros((16, 32)))
    with caplog.at_level(logging.WARNING, logger="img2img"):
        check_pairs(aligned_files(tmp_path / "usual"))
        assert not caplog.records
        check_pairs(aligned_files(tmp_path / "single"))
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith("--aligned: every file is square (") and "16×16" in warnings[0]
    assert warnings[0].endswith("give --a DIR --b DIR")


def test_eval_checks_held_out_aligned_files_as_training_does(inverse_pairs, tmp_path, monkeypatch):
    """`eval --aligned` splits each file in two as training does, so it checks them as training does: a file of odd
    width is a one-line error naming it, a folder of only square files is doubted in a warning."""
    for index, image in enumerate(smooth_images(4)):
        write_gray(tmp_path / "aligned" / f"{index}.png", np.concatenate([image, 255 - image], 1))
        write_gray(tmp_path / "square" / f"{index}.png", image)
    train = ["train", "pix2pix", "--aligned", tmp_path / "aligned", "--size", 32, "--steps", 1, "--batch-size", 2,
             "--ngf", 4, "--ndf", 4, "--workers", 0, "--out", tmp_path / "run"]
    result, output = invoke(*train)
    assert result.exit_code == 0, output
    evaluate = ["eval", tmp_path / "run", "--features", "random", "--device", "cpu", "--aligned"]
    warnings = []  # what the CLI logs, however the img2img logger is set up (the CLI stops its propagation)
    collect = logging.Handler(logging.WARNING)
    collect.emit = lambda record: warnings.append(record.getMessage())
    logger = logging.getLogger("img2img")
    logger.addHandler(collect)
    try:
        result, output = invoke(*evaluate, tmp_path / "aligned")
        assert result.exit_code == 0 and not warnings, output
        result, output = invoke(*evaluate, tmp_path / "square")
    finally:
        logger.removeHandler(collect)
    assert result.exit_code == 0, output
    assert len(warnings) == 1 and warnings[0].startswith("--aligned: every file is square"), warnings
    write_gray(tmp_path / "aligned" / "odd.png", np.zeros((32, 63)))
    result, _ = invoke(*evaluate, tmp_path / "aligned")
    assert_one_line_error(result, "odd.png", "width must be even")


def test_augmentation_crops_and_flips_a_and_b_identically(tmp_path):
    rng = np.random.default_rng(1)
    image = (rng.random((48, 48)) * 255).astype(np.uint8)
    write_gray(tmp_path / "a" / "0.png", image)
    Image.fromarray(image).convert("RGB").save(tmp_path / "b0.png")
    (tmp_path / "b").mkdir()
    (tmp_path / "b0.png").rename(tmp_path / "b" / "0.png")
    dataset = PairedImages(match_folders(tmp_path / "a", tmp_path / "b"), 1, 3, 32, 40, flip=True)
    crops = set()
    for seed in range(12):
        item = dataset[(0, seed)]
        assert item["a"].shape == (1, 32, 32) and item["b"].shape == (3, 32, 32)
        for channel in range(3):
            assert torch.allclose(item["a"][0], item["b"][channel], atol=1e-6)
        crops.add(item["a"].sum().item())
        assert torch.equal(item["a"], dataset[(0, seed)]["a"])  # the seed decides the augmentation
    assert len(crops) > 3


def test_one_channel_and_16_bit_pngs_survive_loading(tmp_path):
    grey16 = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 61 + 7)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    loaded = read_image(tmp_path / "g16.png")
    assert loaded.shape == (32, 32, 1)
    assert np.allclose(loaded[:, :, 0] * 65535, grey16, atol=0.01)  # every one of the 65,536 levels kept
    rgb16 = np.stack([grey16, 65535 - grey16, grey16 // 2], -1)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[:, :, ::-1])  # OpenCV writes BGR
    loaded = read_image(tmp_path / "c16.png")
    assert loaded.shape == (32, 32, 3) and np.allclose(loaded * 65535, rgb16, atol=0.01)
    summary = check_pairs(match_folders(*_pair_dirs(tmp_path, "g16.png")))
    assert (summary.bits_a, summary.bits_b) == (16, 16)


def _pair_dirs(root, name):
    for side in ("pa", "pb"):
        (root / side).mkdir()
        (root / side / name).write_bytes((root / name).read_bytes())
    return root / "pa", root / "pb"


def test_sample_grid_rows_are_input_output_target(inverse_pairs, tmp_path):
    trainer = _trainer(inverse_pairs, tmp_path)
    inputs = trainer.model.sample_inputs(trainer.data, 0, trainer.device)
    grid, per_row = trainer.model.sample_grid(inputs)
    assert per_row == 3 and grid.shape == (24, 3, 32, 32)
    assert torch.equal(grid[0], inputs["a"][0].expand(3, -1, -1))


def test_cli_trains_pix2pix_and_explains_bad_data(inverse_pairs, tmp_path):
    runner = CliRunner()
    args = ["train", "pix2pix", "--a", inverse_pairs / "a", "--b", inverse_pairs / "b", "--size", "32", "--steps",
            "2", "--batch-size", "2", "--ngf", "4", "--ndf", "4", "--workers", "0", "--out", tmp_path / "run"]
    result = runner.invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert '"channels_a": 1' in result.output and '"num_downs": 5' in result.output
    assert (tmp_path / "run" / "last.ckpt").is_file()
    missing = runner.invoke(main, ["train", "pix2pix", "--a", str(inverse_pairs / "a")])
    assert missing.exit_code == 1 and "--b is missing" in missing.output and "Traceback" not in missing.output
    odd = runner.invoke(main, ["train", "pix2pix", "--a", str(inverse_pairs / "a"), "--b", str(inverse_pairs / "b"),
                               "--size", "48", "--dry-run"])
    assert odd.exit_code == 1 and "--size: 48" in odd.output
