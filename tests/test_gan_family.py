"""The noise-to-image GANs beside the MNIST GAN: conditional GAN, AC-GAN, GMMN, WGAN (weight clipping), the
mode-collapse remedies (minibatch std, feature matching, packing), --data folders, sample --class and
--time-limit.  Every model also goes through the contract of tests/test_models.py."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from img2img import checkpoint
from img2img.data.mnist import image_folder, load_image_folder
from img2img.losses import feature_matching, mmd2
from img2img.models import MODELS
from img2img.models.dcgan import Dcgan, DcganConfig
from img2img.models.mnist_gan import MnistGan, MnistGanConfig
from img2img.nn.dcgan import DCGANDiscriminator, DCGANGenerator
from img2img.nn.gan_tricks import MinibatchStd, pack
from img2img.nn.mlp import GMMNGenerator, MLPDiscriminator, MLPGenerator

from test_cli import assert_one_line_error, invoke
from test_models import check_phases, tiny_trainer


# -- networks ----------------------------------------------------------------------------------------------
def test_conditional_networks_take_the_label_and_depend_on_it():
    noise, labels = torch.randn(4, 100), torch.tensor([0, 3, 7, 9])
    for g in (MLPGenerator(classes=10).eval(), DCGANGenerator(100, 1, 28, 8, classes=10).eval()):
        images = g(noise, labels)
        assert images.shape == (4, 1, 28, 28) and images.abs().max() <= 1
        assert not torch.allclose(images, g(noise, (labels + 1) % 10))  # the label changes the image
        with pytest.raises(ValueError, match="labels"):
            g(noise)
    d = MLPDiscriminator(classes=10)
    assert d(images, labels).shape == (4, 1)
    assert not torch.allclose(d(images, labels), d(images, (labels + 1) % 10))


def test_the_auxiliary_classifier_discriminator_has_two_heads():
    d = DCGANDiscriminator(1, 32, 8, classes=10)
    scores, classes = d(torch.randn(5, 1, 32, 32), classes=True)
    assert scores.shape == (5, 1) and classes.shape == (5, 10)
    assert d(torch.randn(5, 1, 32, 32)).shape == (5, 1)
    with pytest.raises(ValueError, match="class head"):
        DCGANDiscriminator(1, 32, 8)(torch.randn(2, 1, 32, 32), classes=True)


def test_gmmn_generator_is_the_papers_relu_mlp():
    g = GMMNGenerator()
    widths = [m.out_features for m in g.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [64, 256, 256, 1024, 784]
    assert g(torch.rand(3, 10) * 2 - 1).shape == (3, 1, 28, 28)


def test_minibatch_std_appends_one_feature_that_measures_the_batchs_spread():
    layer = MinibatchStd()
    flat, maps = torch.randn(6, 5), torch.randn(6, 4, 3, 3)
    assert layer(flat).shape == (6, 6) and layer(maps).shape == (6, 5, 3, 3)
    same = torch.ones(6, 5)  # every sample alike (a collapsed generator): no spread
    assert layer(same)[:, -1].max() < 1e-3 and layer(flat)[:, -1].min() > 0.5
    for d in (MLPDiscriminator(minibatch_std=True), DCGANDiscriminator(1, 28, 8, minibatch_std=True)):
        assert d(torch.randn(4, 1, 28, 28)).shape == (4, 1)


def test_packing_joins_pac_samples_along_the_channels():
    images = torch.arange(4 * 3 * 2 * 2, dtype=torch.float32).view(4, 3, 2, 2)
    packed = pack(images, 2)
    assert packed.shape == (2, 6, 2, 2)
    assert torch.equal(packed[1, :3], images[2]) and torch.equal(packed[1, 3:], images[3])
    assert pack(images, 1) is images
    with pytest.raises(ValueError, match="groups of 3"):
        pack(images, 3)
    for model, first in ((MnistGan(MnistGanConfig(pac=3)), "layers.1"), (Dcgan(DcganConfig(pac=3)), "main.0")):
        layer = model.nets["d"].get_submodule(first)
        assert (layer.in_features == 3 * 28 * 28) if isinstance(layer, torch.nn.Linear) else layer.in_channels == 3


# -- losses ------------------------------------------------------------------------------------------------
def test_mmd_is_zero_for_identical_samples_positive_for_shifted_ones_and_reaches_the_generator():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 28, 28)
    assert mmd2(x, x.clone(), (2.0, 5.0)).item() == pytest.approx(0, abs=1e-5)
    assert mmd2(x, x + 0.3, (2.0, 5.0)).item() > 1e-3
    assert mmd2(x, x + 0.6, (2.0, 5.0)) > mmd2(x, x + 0.3, (2.0, 5.0))
    g = GMMNGenerator()
    loss = mmd2(g(torch.rand(64, 10)).add(1).div(2), x, (2.0, 5.0, 10.0))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())


def test_feature_matching_compares_batch_means_and_is_zero_when_they_match():
    real = torch.randn(8, 5)
    assert feature_matching(real, real[torch.randperm(8)]).item() == pytest.approx(0, abs=1e-10)
    assert feature_matching(real, real + 1).item() == pytest.approx(5.0)


def test_gmmn_learns_the_digits_its_mmd_falls(tmp_path):
    defaults = MODELS["gmmn"].train_defaults
    trainer, _ = tiny_trainer("gmmn", tmp_path, batch_size=200, steps=60, lr=defaults["lr"], beta1=defaults["beta1"])
    from img2img.data.mnist import load_embedded  # noqa: PLC0415

    digits = load_embedded("train")
    real = digits.as_float()[:200]
    first = [trainer.train_step((real, digits.labels[:200]))["mmd"].item() for _ in range(5)]
    for _ in range(50):
        last = trainer.train_step((real, digits.labels[:200]))["mmd"].item()
    assert last < 0.5 * np.mean(first), (first, last)


# -- the models' phases with their options -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mnist-gan", "dcgan"])
@pytest.mark.parametrize("remedy", [{"minibatch_std": True}, {"feature_matching": True}, {"pac": 2},
                                    {"pac": 2, "minibatch_std": True, "loss": "wgan-gp"}])
def test_every_remedy_keeps_the_gradient_contract(name, remedy, tmp_path):
    trainer, batch = tiny_trainer(name, tmp_path, batch_size=4, options=remedy)
    check_phases(trainer, batch)


def test_weight_clipping_keeps_every_critic_weight_within_its_bound_and_uses_rmsprop(tmp_path):
    trainer, batch = tiny_trainer("wgan", tmp_path, batch_size=4, options={"clip": 0.005}, lr=0.05)
    assert all(isinstance(opt, torch.optim.RMSprop) for opt in trainer.optimizers.values())
    with torch.no_grad():  # weights far outside the bound: the first critic update must bring them back
        for p in trainer.model.nets["d"].parameters():
            p.mul_(10)
    phases = []
    for _ in range(5):
        phases.append(tuple(p.name for p in trainer.model.phases_at(trainer.step)))
        trainer.train_step(batch)
        for name, p in trainer.model.nets["d"].named_parameters():
            assert p.abs().max() <= 0.005, name
    assert phases == [("d",)] * 4 + [("d", "g")]  # one generator update per five critic updates
    generator_weights = torch.cat([p.flatten() for p in trainer.model.nets["g"].parameters()])
    assert generator_weights.abs().max() > 0.005  # only the critic is clipped


def test_acgan_classifies_real_and_generated_images_in_both_phases(tmp_path):
    trainer, batch = tiny_trainer("acgan", tmp_path, batch_size=4)
    logs = trainer.train_step(batch)
    assert {"g_loss", "g_cls", "d_loss", "d_cls"} <= set(logs)
    # with the class terms off, the class head gets no gradient: the class terms are what train it
    trainer, batch = tiny_trainer("acgan", tmp_path / "off", batch_size=4, options={"lambda_cls": 0.0})
    trainer.model.nets["d"].zero_grad()
    loss, _ = trainer.model.phase_loss("g", trainer.model.nets, batch, carry := {})
    loss, _ = trainer.model.phase_loss("d", trainer.model.nets, batch, carry)
    loss.backward()
    head = trainer.model.nets["d"].class_head.weight.grad
    assert head is None or head.abs().sum() == 0


def test_acgan_without_fake_classes_trains_the_class_head_on_real_images_only(tmp_path):
    for fake_classes in (False, True):  # --no-fake-classes, then the paper's L_C (generated images too)
        trainer, batch = tiny_trainer("acgan", tmp_path / str(fake_classes), batch_size=4,
                                      options={"fake_classes": fake_classes})
        model, (real, labels) = trainer.model, batch
        model.phase_loss("g", model.nets, batch, carry := {})
        fake, wanted = carry["fake"]
        expected = F.cross_entropy(model.nets["d"](real, classes=True)[1].float(), labels)
        if fake_classes:
            expected = expected + F.cross_entropy(model.nets["d"](fake, classes=True)[1].float(), wanted)
        _, logs = model.phase_loss("d", model.nets, batch, carry)
        torch.testing.assert_close(logs["d_cls"], expected.detach())


# -- conditional sampling ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cgan") / "run"
    result, output = invoke("train", "cgan", "--out", out, "--steps", 3, "--batch-size", 8, "--device", "cpu")
    assert result.exit_code == 0, output
    return out


def test_sample_class_draws_that_class_and_the_grid_has_one_row_per_class(cgan_run, tmp_path):
    result, output = invoke("sample", cgan_run, "--class", 7, "--n", 3, "--out", tmp_path / "seven", "--device",
                            "cpu")
    assert result.exit_code == 0, output
    assert len(list((tmp_path / "seven").glob("*.png"))) == 3
    from img2img.loading import load_model  # noqa: PLC0415

    model = load_model(cgan_run)[0]
    assert torch.equal(model.sample_labels(20), torch.arange(20) // 2)  # two of each class, class by class
    grid, per_row = model.sample_grid(torch.Generator().manual_seed(0))
    assert grid.shape == (100, 1, 28, 28) and per_row == 10
    seven = model.generate(3, torch.Generator().manual_seed(1), labels=torch.full((3,), 7))
    nine = model.generate(3, torch.Generator().manual_seed(1), labels=torch.full((3,), 9))
    assert not torch.allclose(seven, nine)
    result, output = invoke("sample", cgan_run, "--n", 20, "--out", tmp_path / "all", "--grid", tmp_path / "g.png",
                            "--device", "cpu")
    assert result.exit_code == 0, output
    assert Image.open(tmp_path / "g.png").size[1] == 10 * 30 + 2  # ten rows of 28 + 2 pixels of padding


def test_sample_makes_and_writes_a_chunk_at_a_time_the_images_of_one_call(cgan_run, tmp_path, monkeypatch):
    """sample held every image in memory (and copies of them) until the end: 50,000 samples for an FID are
    2.4 GB of 64-pixel images, and a million ran the machine out of memory.  It now makes and writes them a chunk
    at a time, and the files and the grid are those of one generate call for all, for every class in turn and
    for one class."""
    from torchvision.utils import make_grid  # noqa: PLC0415

    from img2img import sampling  # noqa: PLC0415
    from img2img.loading import load_model  # noqa: PLC0415

    model = load_model(cgan_run)[0]
    monkeypatch.setattr(sampling, "CHUNK", 5)
    monkeypatch.setattr(type(model), "generate", lambda *args, **kwargs: pytest.fail("all at once"))
    for label in (None, "4"):
        paths = sampling.sample_to_folder(cgan_run, 23, tmp_path / f"{label}", seed=3, device="cpu",
                                          grid=tmp_path / f"{label}.png", label=label)
        labels = None if label is None else torch.full((23,), 4)
        whole = torch.cat(list(model.generate_chunks(23, torch.Generator().manual_seed(3), 5, labels)))
        levels = whole.add(1).div(2).clamp(0, 1).mul(255).round().to(torch.uint8)
        assert len(paths) == 23
        for path, image in zip(paths, levels):
            assert np.array_equal(np.asarray(Image.open(path)), image[0].numpy())
        side = 3 if label is None else 4  # one row per class (3 of each of the 10), or a square
        grid = make_grid(levels, nrow=side).permute(1, 2, 0).numpy()[:, :, 0]  # grey, as the digits are
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"{label}.png")), grid)


def test_sample_holds_nothing_in_proportion_to_n_before_it_writes(cgan_run, tmp_path):
    """--n 2147483647, the most it takes: its refusals came after a list of every path (5 GB, still growing at
    100 s) and every label (17 GB: the kernel killed it, without a word)."""
    from img2img.loading import load_model  # noqa: PLC0415

    most = 2**31 - 1
    result, _ = invoke("sample", cgan_run, "--n", most, "--out", tmp_path / "a", "--grid", tmp_path / "g.png",
                       "--device", "cpu")
    assert_one_line_error(result, "--grid: 2,147,483,647 images make a grid")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "0000000007.png").write_bytes(b"the user's own")
    (tmp_path / "b" / "7.png").write_bytes(b"not one of the names it writes")
    result, _ = invoke("sample", cgan_run, "--n", most, "--out", tmp_path / "b", "--device", "cpu")
    assert_one_line_error(result, "0000000007.png exists (1 file would be replaced)")
    model = load_model(cgan_run)[0]
    for count in (23, 7):  # every class in turn, made a chunk at a time, as sample_labels draws them
        chunked = torch.cat(list(model.generate_chunks(count, torch.Generator().manual_seed(1), 5)))
        whole = model.generate_chunks(count, torch.Generator().manual_seed(1), 5, model.sample_labels(count))
        assert torch.equal(chunked, torch.cat(list(whole)))


def test_sample_says_what_it_wrote_without_a_list_of_every_file(cgan_run, tmp_path, monkeypatch):
    """--n 2147483647: once every image was written, sample made the list of all their paths (some 300 GB) to say
    how many it wrote, and died there, unsaid.  Here the generator draws nothing, so that the return is all."""
    from img2img import sampling  # noqa: PLC0415
    from img2img.models.mnist_gan import NoiseModel  # noqa: PLC0415

    monkeypatch.setattr(NoiseModel, "generate_chunks", lambda *args, **kwargs: iter(()))
    written = sampling.sample_to_folder(cgan_run, 2**31 - 1, tmp_path / "x", device="cpu")
    assert len(written) == 2**31 - 1 and written[-1] == tmp_path / "x" / "2147483646.png"
    assert list(written[5:7]) == [tmp_path / "x" / "0000000005.png", tmp_path / "x" / "0000000006.png"]
    assert written[2**31 - 2:][0] == written[-1] and tmp_path / "x" / "0000000009.png" in written


@pytest.mark.parametrize("value", ["12", "-1", "seven"])
def test_a_class_the_model_does_not_have_is_a_one_line_error(cgan_run, tmp_path, value):
    result, _ = invoke("sample", cgan_run, "--class", value, "--out", tmp_path / "x", "--device", "cpu")
    assert_one_line_error(result, "--class", value, "0, 1, 2")
    assert not (tmp_path / "x").exists()


def test_class_for_an_unconditional_model_is_a_one_line_error(mnist_run, tmp_path):
    from img2img.train import train  # noqa: PLC0415

    train(mnist_run(steps=2), tmp_path / "run")
    result, _ = invoke("sample", tmp_path / "run", "--class", "3", "--out", tmp_path / "x", "--device", "cpu")
    assert_one_line_error(result, "--class", "mnist-gan", "cgan")


def test_eval_reports_how_often_a_conditional_model_draws_the_class_asked_for(cgan_run):
    result, output = invoke("eval", cgan_run, "--samples", 100, "--device", "cpu", "--json", cgan_run / "e.json")
    assert result.exit_code == 0, output
    report = json.loads((cgan_run / "e.json").read_text())
    assert 0 <= report["metrics"]["class_agreement"] <= 1 and "class_agreement" in MODELS["cgan"].metrics()
    assert "class_agreement" not in MODELS["dcgan"].metrics()


def test_eval_holds_nothing_in_proportion_to_samples(cgan_run, monkeypatch):
    """--samples 2147483647, the most it takes: eval made every label at once (16 GiB) before its first image,
    and kept every sample's features, class and distance as they came.  Here the generator stops after one
    chunk; the labels each chunk is checked against are those of sample_labels, chunk by chunk (1,100 samples:
    two chunks, of 1,000 and 100)."""
    from img2img.evaluation.digits import load_classifier  # noqa: PLC0415
    from img2img.loading import load_model  # noqa: PLC0415
    from img2img.models.mnist_gan import NoiseModel  # noqa: PLC0415

    def agreement(count, first):  # class_agreement over the first `first` of `count` samples, all labels at once
        model = load_model(cgan_run)[0]
        images = torch.cat(list(itertools.islice(model.generate_chunks(count, torch.Generator().manual_seed(0)),
                                                 math.ceil(first / 1000))))[:first]
        predicted = load_classifier("cpu").classify(images).argmax(1)
        return (predicted == torch.arange(first) // math.ceil(count / 10)).double().mean().item()  # class by class

    for count, chunks, expected in ((1100, None, agreement(1100, 1100)), (2**31 - 1, 1, None)):
        if chunks is not None:
            whole = NoiseModel.generate_chunks
            monkeypatch.setattr(NoiseModel, "generate_chunks", lambda self, *args, **kwargs: itertools.islice(
                whole(self, *args, **kwargs), chunks))
        result, output = invoke("eval", cgan_run, "--samples", count, "--device", "cpu", "--json",
                                cgan_run / "e.json")
        assert result.exit_code == 0, output
        report = json.loads((cgan_run / "e.json").read_text())
        assert sum(report["metrics"]["class_counts"]) == (count if chunks is None else 1000 * chunks)
        assert report["metrics"]["class_agreement"] == pytest.approx(expected or agreement(count, 1000), abs=1e-6)


# -- data: a folder of images, with or without class sub-folders -------------------------------------------------
def _folder(root, classes=("cats", "dogs"), per_class=6, colour=True):
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        folder = root / name if name else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (40 + i, 30, 3) if colour else (40 + i, 30)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / f"{index}-{i}.png")
    return root


def test_a_folder_of_class_sub_folders_gives_images_and_labels(tmp_path):
    root = _folder(tmp_path / "pets")
    files, labels, classes = image_folder(root)
    assert classes == ("cats", "dogs") and sorted(set(labels)) == [0, 1] and len(files) == 12
    data = load_image_folder(root, 32, 3)
    assert data.images.shape == (12, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.classes == ("cats", "dogs")
    flat = _folder(tmp_path / "flat", classes=("",), per_class=5, colour=False)
    assert image_folder(flat)[2] == () and set(image_folder(flat)[1]) == {-1}


def test_a_folder_too_large_for_memory_is_refused_in_one_line_before_its_images_are_decoded(tmp_path, monkeypatch):
    """A folder's images are held in memory whole: one of more than fit was decoded an image at a time until the
    kernel killed the process, without a word, and one that fitted was copied whole once more at the end."""
    import cv2  # noqa: PLC0415

    from img2img import resources  # noqa: PLC0415
    from img2img.data import mnist  # noqa: PLC0415

    root, decoded = _folder(tmp_path / "pets"), []  # 12 colour images: 36 KiB at 32 × 32
    verify = mnist.verify_images
    monkeypatch.setattr(mnist, "verify_images", lambda *args: decoded.append(args) or verify(*args))
    arguments = ["--data", root, "--size", 32, "--batch-size", 4, "--steps", 1, "--device", "cpu",
                 "--out", tmp_path / "run"]
    for available, decoding in ((12 * 32 * 32 - 1, False), (12 * 3 * 32 * 32 - 1, True)):  # one channel's, three
        monkeypatch.setattr(resources, "available_memory", lambda unknown, left=available: left)
        result, _ = invoke("train", "dcgan", *arguments)
        assert_one_line_error(result, f"--data: {root} has 12 images, which need 0.0 GiB of memory held at 32×32",
                              "use a folder of fewer images or a smaller --size")
        assert bool(decoded) == decoding and not (tmp_path / "run").exists()
    monkeypatch.setattr(resources, "available_memory", lambda unknown: 12 * 3 * 32 * 32)
    data = load_image_folder(root, 32, 3)
    first = cv2.resize(np.asarray(Image.open(root / "cats" / "0-0.png")), (32, 32), interpolation=cv2.INTER_AREA)
    difference = data.images[0].int() - torch.from_numpy(first).permute(2, 0, 1).int()  # 1 level: its rounding
    assert data.images.is_contiguous() and difference.abs().max() <= 1


def test_a_class_sub_folder_without_images_is_said_once_not_dropped_unsaid(tmp_path, logged):
    root = _folder(tmp_path / "pets")
    (root / "birds").mkdir()  # a copy that left it empty: the model gets two classes, not three
    (root / ".cache").mkdir()  # hidden: not meant as a class
    for _ in range(2):  # a command lists its folder more than once, and says it once
        assert image_folder(root)[2] == ("cats", "dogs")
    assert logged == [f"--data: {root / 'birds'} holds no images, so it is not a class (the classes: cats, dogs)"]


def test_class_sub_folders_may_be_links_to_folders_kept_elsewhere(tmp_path):
    kept = _folder(tmp_path / "kept")
    root = tmp_path / "pets"
    root.mkdir()
    for name in ("cats", "dogs"):
        (root / name).symlink_to(kept / name, target_is_directory=True)
    files, labels, classes = image_folder(root)
    assert classes == ("cats", "dogs") and sorted(set(labels)) == [0, 1] and len(files) == 12
    assert files == [root / f.relative_to(kept) for f in image_folder(kept)[0]]
    _folder(root, classes=(".ipynb_checkpoints",), per_class=2)  # hidden: not a class, nor its images data
    (root / "cats" / "._0.png").write_bytes(b"macOS metadata")
    assert image_folder(root)[0] == files


def test_train_sample_and_eval_on_a_folder(tmp_path):
    root = _folder(tmp_path / "pets")
    out = tmp_path / "run"
    result, output = invoke("train", "acgan", "--data", root, "--size", 32, "--ngf", 8, "--ndf", 8, "--out", out,
                            "--steps", 2, "--batch-size", 4, "--device", "cpu")
    assert result.exit_code == 0, output
    config = json.loads((out / "config.json").read_text())["options"]
    assert config["classes"] == ["cats", "dogs"] and config["channels"] == 3
    result, output = invoke("sample", out, "--class", "dogs", "--n", 2, "--out", tmp_path / "dogs", "--device", "cpu")
    assert result.exit_code == 0, output
    assert np.asarray(Image.open(tmp_path / "dogs" / "000000.png")).shape == (32, 32, 3)
    result, output = invoke("eval", out, "--samples", 8, "--device", "cpu", "--features", "random")
    assert result.exit_code == 0 and "fid" in output and "nn_distance_to_train" in output, output


def test_a_grid_is_written_in_any_format_that_holds_the_models_images(tmp_path, mnist_run):
    """`sample --grid g.pgm` wrote every sample, then failed with a traceback: the grid was always colour (a grey
    model's too), which a PGM cannot hold.  A grey model's grid is grey now; a colour one's is refused in one
    line, before anything is drawn, naming the format that holds it.  A grid in a folder not yet made is written
    there (it failed, "No such file or directory", after every sample was written)."""
    from img2img.train import train  # noqa: PLC0415

    train(mnist_run(steps=1, batch_size=4), tmp_path / "digits")
    result, output = invoke("sample", tmp_path / "digits", "--n", 4, "--out", tmp_path / "d", "--grid",
                            tmp_path / "grids" / "digits.pgm", "--device", "cpu")
    assert result.exit_code == 0, output
    with Image.open(tmp_path / "grids" / "digits.pgm") as grid, Image.open(tmp_path / "d" / "000000.png") as first:
        assert grid.format == "PPM" and grid.mode == "L" and first.mode == "L"
    out = tmp_path / "pets-run"
    result, output = invoke("train", "dcgan", "--data", _folder(tmp_path / "pets"), "--size", 32, "--ngf", 8,
                            "--ndf", 8, "--out", out, "--steps", 1, "--batch-size", 4, "--device", "cpu")
    assert result.exit_code == 0, output
    result, _ = invoke("sample", out, "--n", 4, "--out", tmp_path / "drawn", "--grid", tmp_path / "pets.pgm",
                       "--device", "cpu")
    assert_one_line_error(result, "--grid: a .pgm file cannot hold this model's colour images; name it pets.ppm")
    assert not (tmp_path / "drawn").exists()
    result, output = invoke("sample", out, "--n", 4, "--out", tmp_path / "drawn", "--grid", tmp_path / "pets.ppm",
                            "--device", "cpu")
    assert result.exit_code == 0 and Image.open(tmp_path / "pets.ppm").mode == "RGB", output


def test_eval_of_a_run_whose_folder_moved_takes_its_new_place(tmp_path):
    """The evaluation of a model trained on a folder compares with that folder's images: once it moved, eval
    said `--data: DIR does not exist` and refused --data for the model, so nothing could evaluate the run."""
    root = _folder(tmp_path / "pets")
    out = tmp_path / "run"
    result, output = invoke("train", "dcgan", "--data", root, "--size", 32, "--ngf", 8, "--ndf", 8, "--out", out,
                            "--steps", 2, "--batch-size", 4, "--device", "cpu")
    assert result.exit_code == 0, output
    options = ("--samples", 8, "--device", "cpu", "--features", "random")
    result, output = invoke("eval", out, *options, "--json", tmp_path / "before.json")
    assert result.exit_code == 0, output
    root.rename(tmp_path / "moved")
    result, _ = invoke("eval", out, *options)
    assert_one_line_error(result, f"--data: {root}, the folder the run trained on", f"img2img eval {out} --data DIR")
    result, output = invoke("eval", out, *options, "--data", tmp_path / "moved", "--json", tmp_path / "after.json")
    assert result.exit_code == 0, output
    before, after = (json.loads((tmp_path / name).read_text()) for name in ("before.json", "after.json"))
    assert after["metrics"] == before["metrics"] and after["notes"] == []
    assert str(tmp_path / "moved") in after["protocol"]["reference"]
    other = _folder(tmp_path / "other", per_class=4)  # not what it trained on: compared all the same, and said
    result, output = invoke("eval", out, *options, "--data", other, "--json", tmp_path / "other.json")
    assert result.exit_code == 0, output
    assert json.loads((tmp_path / "other.json").read_text())["notes"] == [
        f"--data: {other} does not hold the images the run trained on ({root}, as the checkpoint of step 2 recorded "
        "them): its samples are compared with these"]
    result, output = invoke("train", "mnist-gan", "--steps", 1, "--batch-size", 4, "--out", tmp_path / "digits",
                            "--device", "cpu")  # a digit GAN, which trained on no folder, still refuses --data
    assert result.exit_code == 0, output
    result, _ = invoke("eval", tmp_path / "digits", "--data", other, "--device", "cpu")
    assert_one_line_error(result, "--data: evaluating a mnist-gan model does not read it")


def test_a_folder_whose_classes_changed_is_named_at_resume(tmp_path):
    root = _folder(tmp_path / "pets")
    out = tmp_path / "run"
    result, output = invoke("train", "cgan", "--data", root, "--out", out, "--steps", 2, "--batch-size", 4,
                            "--device", "cpu")
    assert result.exit_code == 0, output
    _folder(root, classes=("birds",), per_class=3)  # a third class appears
    result, _ = invoke("train", "cgan", "--resume", out, "--steps", 4)
    assert_one_line_error(result, "--data", "birds, cats, dogs", "cats, dogs")


def test_a_conditional_model_needs_labelled_folders(tmp_path):
    flat = _folder(tmp_path / "flat", classes=("",), per_class=5)
    result, _ = invoke("train", "cgan", "--data", flat, "--out", tmp_path / "run", "--steps", 1, "--batch-size", 2)
    assert_one_line_error(result, "--data", "sub-folder per class")
    assert not (tmp_path / "run").exists()
    result, _ = invoke("train", "mnist-gan", "--data", flat, "--mnist-root", tmp_path, "--out", tmp_path / "run")
    assert_one_line_error(result, "--data", "--mnist-root")


def test_a_broken_file_in_the_folder_is_named_before_training(tmp_path):
    root = _folder(tmp_path / "pets")
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    result, _ = invoke("train", "mnist-gan", "--data", root, "--out", tmp_path / "run", "--steps", 1,
                       "--batch-size", 2)
    assert_one_line_error(result, "broken.png")
    assert not (tmp_path / "run").exists()


# -- options that cannot work -------------------------------------------------------------------------------
def test_a_batch_that_does_not_pack_is_a_one_line_error_before_the_run_folder(tmp_path):
    result, _ = invoke("train", "mnist-gan", "--pac", 3, "--batch-size", 8, "--out", tmp_path / "run")
    assert_one_line_error(result, "--pac 3", "--batch-size 8")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, fragment", [(["dcgan", "--size", 48], "--size"), (["cgan", "--loss", "wgan-gp"],
                                                                                   "--loss"),
                                            (["wgan", "--clip", 0], "--clip"), (["mnist-gan", "--pac", 5], "--pac")])
def test_bad_values_are_one_line_errors(tmp_path, args, fragment):
    result, _ = invoke("train", *args, "--out", tmp_path / "run", "--steps", 1)
    assert_one_line_error(result, fragment)


def test_time_limit_stops_the_run_with_a_checkpoint_and_resume_goes_on(tmp_path):
    out = tmp_path / "run"
    result, output = invoke("train", "mnist-gan", "--out", out, "--steps", 100000, "--batch-size", 8,
                            "--time-limit", 0.5, "--device", "cpu")
    assert result.exit_code == 0, output
    step = checkpoint.read(out / "last.ckpt")["step"]
    assert 0 < step < 100000 and (out / "samples" / f"step-{step:08d}.png").exists()
    result, output = invoke("train", "mnist-gan", "--resume", out, "--steps", step + 3, "--time-limit", 0)
    assert result.exit_code == 0, output
    assert checkpoint.read(out / "last.ckpt")["step"] == step + 3


# -- export -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("conditional", [False, True])
def test_a_noise_models_generator_exports_and_onnxruntime_agrees(cgan_run, mnist_run, tmp_path, conditional):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from img2img.loading import load_model  # noqa: PLC0415
    from img2img.train import train  # noqa: PLC0415

    run = cgan_run if conditional else train(mnist_run(steps=2), tmp_path / "run").run_dir
    result, output = invoke("export", run, "--out", tmp_path / "g.onnx")
    assert result.exit_code == 0, output
    session = onnxruntime.InferenceSession(str(tmp_path / "g.onnx"))
    model = load_model(run)[0]
    g = model.nets["g"].eval()
    noise = torch.randn(3, 100)
    feeds, args = {"noise": noise.numpy()}, (noise,)
    if conditional:
        assert [i.name for i in session.get_inputs()] == ["noise", "label"]
        labels = torch.tensor([7, 0, 3])
        feeds["label"] = torch.nn.functional.one_hot(labels, 10).float().numpy()
        args = (noise, labels)
        assert session.get_modelmeta().custom_metadata_map["img2img.classes"] == ",".join("0123456789")
    (images,) = session.run(None, feeds)
    with torch.no_grad():
        expected = g(*args)
    assert images.shape == (3, 1, 28, 28)
    assert np.abs(images - expected.numpy()).max() < 1e-4
    result, _ = invoke("export", run, "--out", tmp_path / "h.onnx", "--direction", "a2b")
    assert_one_line_error(result, "--direction", "noise")


def test_time_limit_is_refused_under_torchrun_at_start_and_at_resume(tmp_path, monkeypatch):
    out = tmp_path / "run"
    result, output = invoke("train", "mnist-gan", "--out", out, "--steps", 2, "--batch-size", 8, "--device", "cpu")
    assert result.exit_code == 0, output
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; nothing starts before the refusal
    for args in (["--out", tmp_path / "new", "--steps", 5], ["--resume", out, "--steps", 5]):
        result, _ = invoke("train", "mnist-gan", *args, "--time-limit", 10)
        assert_one_line_error(result, "--time-limit", "torchrun")
    assert not (tmp_path / "new").exists()
