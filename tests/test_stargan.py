"""StarGAN: label tiling, the discriminator's two heads, the gradient penalty, the update schedule, domain
folders, --to, and the four-style demo data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import img2img
from img2img.data.demo import STYLES, write_style_digits
from img2img.errors import UserError
from img2img.losses import gradient_penalty
from img2img.models.stargan import StarGAN, StarGANConfig
from img2img.nn.stargan import StarDiscriminator, StarGenerator, tile_labels

from test_cli import assert_one_line_error, invoke


def test_labels_are_tiled_as_constant_channels_after_the_image():
    images = torch.randn(2, 3, 5, 7)
    labels = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    tiled = tile_labels(images, labels)
    assert tiled.shape == (2, 6, 5, 7)
    assert torch.equal(tiled[:, :3], images)
    for n in range(2):
        for k in range(3):
            assert torch.all(tiled[n, 3 + k] == labels[n, k])


def test_the_generator_depends_on_the_target_label():
    torch.manual_seed(0)
    g = StarGenerator(3, 4, base_channels=8, n_blocks=1)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    one, two = (g(x, torch.eye(4)[[k, k]]) for k in (0, 2))
    assert one.shape == x.shape and not torch.allclose(one, two)


def test_the_discriminator_scores_patches_and_classifies_the_whole_image():
    d = StarDiscriminator(3, 32, domains=5, base_channels=8)
    scores, logits = d(torch.randn(3, 3, 32, 32))
    assert scores.shape == (3, 1, 2, 2) and logits.shape == (3, 5)
    assert len([m for m in d.main if isinstance(m, torch.nn.Conv2d)]) == 4  # 32 → 2: four halvings
    with pytest.raises(ValueError):
        StarDiscriminator(3, 36, domains=2)  # 36 is not divisible by 16


def test_the_gradient_penalty_reaches_the_discriminators_real_fake_path():
    torch.manual_seed(0)
    d = StarDiscriminator(3, 16, domains=2, base_channels=4)
    real, fake = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    penalty = gradient_penalty(lambda x: d(x)[0], real, fake)
    penalty.backward()
    for name, parameter in d.named_parameters():
        if name.startswith("conv2"):  # the class head is not on the real/fake path
            assert parameter.grad is None
        elif name.endswith("weight"):  # (a bias moves ∇ₓD only through LeakyReLU's kinks: zero almost surely)
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def _domains(root, names=("a", "b", "c"), count=3):
    for k, name in enumerate(names):
        for i in range(count):
            value = np.full((16, 16, 3), 40 * k + 10 * i, np.uint8)
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(value).save(root / name / f"{i}.png")
    return root


def test_domains_are_the_sub_folders_and_fewer_than_two_are_refused(tmp_path):
    config = StarGAN.resolve(StarGANConfig(data=str(_domains(tmp_path / "data")), size=16))
    assert config.domains == ("a", "b", "c") and config.channels == 3
    assert StarGAN.dataset_size(config) == 9
    item = StarGAN.dataset(config)[(4, 0)]
    assert item["label"] == 1 and item["image"].shape == (3, 16, 16)
    (tmp_path / "one" / "only").mkdir(parents=True)
    _domains(tmp_path / "one", names=("only",))
    result, _ = invoke("train", "stargan", "--data", tmp_path / "one", "--size", 16, "--dry-run")
    assert_one_line_error(result, "--data", "two or more")
    _domains(tmp_path / "named", names=("all", "b"))  # `--to all` could never mean it
    result, _ = invoke("train", "stargan", "--data", tmp_path / "named", "--size", 16, "--dry-run")
    assert_one_line_error(result, f"--data: {tmp_path / 'named' / 'all'}: a domain cannot be named 'all'")


def test_a_domain_folder_without_images_is_said_and_one_that_cannot_be_read_is_refused(tmp_path, monkeypatch,
                                                                                       logged):
    """A sub-folder whose listing failed for any reason was skipped as one without images: a domain whose folder
    could not be read was gone from the model unsaid."""
    import errno  # noqa: PLC0415
    import os  # noqa: PLC0415

    from img2img.data import images  # noqa: PLC0415
    from img2img.models.stargan import domain_folders  # noqa: PLC0415

    root = _domains(tmp_path / "data")
    (root / "d").mkdir()
    (root / "e").mkdir()
    assert [name for name, _ in domain_folders(root)] == ["a", "b", "c"]
    assert logged == [f"--data: {root / 'd'}, {root / 'e'} hold no images, so they are not domains (the domains: a, "
                    "b, c)"]
    scandir = os.scandir

    def locked(path):  # as a folder of another user's, mode 700, is (this test may run as root)
        if os.path.basename(path) == "c":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return scandir(path)

    monkeypatch.setattr(images.os, "scandir", locked)
    with pytest.raises(UserError, match="--data: .*c: a folder that cannot be read"):
        domain_folders(root)


def test_the_generator_steps_once_every_n_critic_steps(tmp_path):
    config = StarGAN.resolve(StarGANConfig(data=str(_domains(tmp_path)), size=16, base_channels=4,
                                           d_base_channels=4, n_blocks=1))
    model = StarGAN(config)
    schedule = ["".join(p.name for p in model.phases_at(step)) for step in range(10)]
    assert schedule == ["d", "d", "d", "d", "dg", "d", "d", "d", "d", "dg"]


def test_translate_to_one_domain_to_all_and_an_unknown_one(tmp_path):
    data = _domains(tmp_path / "data")
    result, output = invoke("train", "stargan", "--data", data, "--size", 16, "--steps", 2,
                            "--batch-size", 3,
                            "--ngf", 4, "--ndf", 4, "--n-blocks", 1, "--device", "cpu", "--out", tmp_path / "run")
    assert result.exit_code == 0, output
    result, output = invoke("translate", tmp_path / "run", data / "a", tmp_path / "to-b", "--to", "b")
    assert result.exit_code == 0, output
    assert sorted(p.name for p in (tmp_path / "to-b").iterdir()) == ["0.png", "1.png", "2.png"]
    result, output = invoke("translate", tmp_path / "run", data / "a", tmp_path / "all", "--to", "all")
    assert result.exit_code == 0, output
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["a", "b", "c"]
    assert len(list((tmp_path / "all" / "c").glob("*.png"))) == 3
    result, _ = invoke("translate", tmp_path / "run", data / "a", tmp_path / "x", "--to", "purple")
    assert_one_line_error(result, "--to", "purple", "a, b, c")
    translator = img2img.load(tmp_path / "run")
    image = np.zeros((16, 16, 3), np.uint8)
    assert translator.translate(image, to="c").shape == (16, 16, 3)
    with pytest.raises(UserError, match="purple"):
        translator.translate(image, to="purple")


def test_the_style_demo_has_four_styles_that_differ_in_shape_as_well_as_colour(tmp_path):
    counts = write_style_digits(tmp_path)
    assert sorted(counts) == sorted([*STYLES, "test"]) and counts["test"] == 1000
    names = {p.name for p in (tmp_path / "test" / "white-on-black").iterdir()}
    for style in STYLES:
        assert {p.name for p in (tmp_path / "test" / style).iterdir()} == names  # every held-out digit, each style
    train = [set(p.name for p in (tmp_path / "train" / style).iterdir()) for style in STYLES]
    assert all(not (a & b) for i, a in enumerate(train) for b in train[i + 1:])  # disjoint quarters
    name = sorted(names)[0]
    inks = {}
    for style_name, style in STYLES.items():  # each style's ink, back on one axis
        rgb = torch.from_numpy(np.array(Image.open(tmp_path / "test" / style_name / name))).permute(2, 0, 1)
        inks[style_name] = style.ink_of(rgb[None].float() / 255)[0, 0]
    shapes = list(inks.values())
    for i, one in enumerate(shapes):  # every two styles differ in shape, not only in colour
        for other in shapes[i + 1:]:
            assert (one - other).abs().mean() > 0.02


def test_onnx_export_takes_the_target_domain_as_a_second_input(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    data = _domains(tmp_path / "data")
    result, output = invoke("train", "stargan", "--data", data, "--size", 16, "--steps", 2,
                            "--batch-size", 3, "--ngf", 4, "--ndf", 4, "--n-blocks", 1, "--device", "cpu",
                            "--out", tmp_path / "run")
    assert result.exit_code == 0, output
    result, output = invoke("export", tmp_path / "run", "--out", tmp_path / "g.onnx")
    assert result.exit_code == 0, output
    session = onnxruntime.InferenceSession(str(tmp_path / "g.onnx"))
    assert [i.name for i in session.get_inputs()] == ["image", "domain"]
    translator = img2img.load(tmp_path / "run", device="cpu")
    image = torch.rand(2, 3, 16, 24) * 2 - 1
    for index, domain in enumerate(("a", "b", "c")):
        one_hot = torch.eye(3)[[index, index]].numpy()
        (exported,) = session.run(None, {"image": image.numpy(), "domain": one_hot})
        assert np.abs(exported - translator.translate(image, to=domain).numpy()).max() < 1e-4
    result, output = invoke("export", tmp_path / "run", "--out", tmp_path / "to-c.onnx", "--to", "c")
    assert result.exit_code == 0, output
    assert [i.name for i in onnxruntime.InferenceSession(str(tmp_path / "to-c.onnx")).get_inputs()] == ["image"]
    result, _ = invoke("export", tmp_path / "run", "--out", tmp_path / "x.onnx", "--to", "purple")
    assert_one_line_error(result, "--to", "purple")


def test_eval_reports_every_target_domain_and_on_the_demo_every_pair_beside_the_colour_map(tmp_path, demo_task):
    import json  # noqa: PLC0415

    demo_task("stargan", tmp_path / "demo", 12, 40)  # the same 12 digits held out in every style, 40 to train on
    result, output = invoke("train", "stargan", "--data", tmp_path / "demo" / "train", "--size", 32, "--steps", 2,
                            "--batch-size", 4, "--ngf", 4, "--ndf", 4, "--n-blocks", 1, "--device", "cpu",
                            "--out", tmp_path / "run")
    assert result.exit_code == 0, output
    result, output = invoke("eval", tmp_path / "run", "--data", tmp_path / "demo" / "test", "--device", "cpu",
                            "--json", tmp_path / "eval.json")
    assert result.exit_code == 0, output
    report = json.loads((tmp_path / "eval.json").read_text())
    metrics, baseline = report["metrics"], report["reference"]["colour map only"]
    for style in STYLES:
        assert f"fid_to_{style}" in metrics and f"own_domain_psnr_{style}" in metrics
    pairs = [f"{s}_to_{t}" for s in STYLES for t in STYLES if s != t]
    assert metrics["pairs"] == len(pairs) == 12
    for pair in pairs:
        assert 0 <= metrics[f"label_agreement_{pair}"] <= 1 and f"psnr_{pair}" in baseline
        assert baseline[f"psnr_{pair}"] < 60  # every pair changes the shape: repainting alone is not exact
    assert baseline["label_agreement"] > 0.9  # the classifier reads every style's ink
    result, _ = invoke("eval", tmp_path / "run", "--device", "cpu")
    assert_one_line_error(result, "--data")
