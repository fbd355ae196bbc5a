"""Evaluation: metric functions on known inputs, the digit classifier, `img2img eval`, best-checkpoint tracking."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import sys

import pytest
import torch
from torch import nn

from img2img.config import RunConfig, TrainConfig
from img2img.data.mnist import load_embedded
from img2img.errors import UserError
from img2img.evaluation import evaluate as evaluate_module
from img2img.evaluation.digits import held_out_accuracy, load_classifier
from img2img.evaluation.evaluate import Report
from img2img.evaluation.features import RandomFeatures, find_inception_weights
from img2img.evaluation.metrics import (Distances, class_statistics, fid_kid, fid_kid_of_features,
                                       nearest_neighbour_distance, paired_metrics)
from img2img.models.mnist_gan import MnistGanConfig
from img2img.train import Trainer, resume, train

from test_cli import assert_one_line_error, invoke
from test_unpaired import write_unpaired


class Flatten(nn.Module):
    """Features = the "images" themselves: FID becomes the Fréchet distance of the input distributions."""

    num_features = 4

    def forward(self, images):
        return images.flatten(1).double()


def gaussian(count, shift, seed):
    return (torch.randn(count, 4, 1, 1, generator=torch.Generator().manual_seed(seed)) + shift)


def test_fid_of_identical_sets_is_zero_and_of_shifted_gaussians_the_closed_form():
    real = gaussian(20000, 0.0, 0)
    same = fid_kid(Flatten(), [real], [real])
    assert abs(same["fid"]) < 1e-6 and abs(same["kid"]) < 1e-3
    # N(0, I) against N(μ, I): ‖μ‖² + Tr(I + I - 2 I) = 4 · 0.5² = 1
    shifted = fid_kid(Flatten(), [real], [gaussian(20000, 0.5, 1)])
    assert shifted["fid"] == pytest.approx(1.0, abs=0.05)
    assert shifted["kid"] > 10 * abs(fid_kid(Flatten(), [real], [gaussian(20000, 0.0, 2)])["kid"])


def test_generated_features_given_a_batch_at_a_time_keep_a_uniform_draw_for_kid_and_exact_sums_for_fid():
    """Distances holds no more than `kept` generated features however many come: what eval --samples needs."""
    real = gaussian(2000, 0.0, 0).flatten(1).double()
    fake = gaussian(30000, 0.5, 1).flatten(1).double()
    fake[:, 0] = torch.arange(30000) / 30000  # each feature's first number says which it is
    distances = Distances(real, kid_subset_size=500, kept=1500)
    for part in fake.split(700):
        distances.add(part)
    whole = fid_kid_of_features(real, fake, kid_subset_size=500)
    held = (distances.kept[0][:, 0] * 30000).round().long()
    assert len(distances.kept) == 1 and held.shape == (1500,) and len(held.unique()) == 1500
    tenths = torch.bincount(held // 3000, minlength=10)  # 150 of each tenth expected: a uniform draw
    assert tenths.min() > 100 and tenths.max() < 200
    result = distances.result()
    assert result["generated_images"] == 30000 and result["fid"] == pytest.approx(whole["fid"], rel=1e-9)
    assert result["kid"] == pytest.approx(whole["kid"], abs=2 * whole["kid_std"])  # within its spread over subsets
    below = Distances(real, kid_subset_size=500, kept=1500)  # up to `kept`, every feature: KID as from all of them
    for part in fake[:1500].split(700):
        below.add(part)
    expected = fid_kid_of_features(real, fake[:1500], kid_subset_size=500)
    assert below.result() == {**expected, "fid": pytest.approx(expected["fid"], rel=1e-12)}


def test_paired_metrics_known_values():
    image = torch.rand(3, 1, 32, 32) * 0.6 + 0.2
    exact = paired_metrics(image, image)
    assert exact["l1"] == 0 and exact["ssim"] == pytest.approx(1.0, abs=1e-5) and exact["psnr"] > 90
    offset = paired_metrics(image + 0.1, image)  # MSE 0.01: 20 dB
    assert offset["psnr"] == pytest.approx(20.0, abs=1e-3) and offset["l1"] == pytest.approx(0.1, abs=1e-5)


def test_class_statistics_and_nearest_neighbours():
    uniform = class_statistics(torch.full((10,), 10))  # how many samples each class has
    assert uniform["classes_covered"] == 10 and uniform["kl_to_uniform"] == pytest.approx(0.0, abs=1e-12)
    collapsed = class_statistics(torch.bincount(torch.full((50,), 3), minlength=10))
    assert collapsed["classes_covered"] == 1 and collapsed["kl_to_uniform"] == pytest.approx(math.log(10))
    reference = torch.rand(20, 1, 8, 8)
    assert nearest_neighbour_distance(reference[:5], reference) == pytest.approx(0.0, abs=1e-5)
    assert nearest_neighbour_distance(1 - reference[:5], reference) > 0.1


def test_the_shipped_digit_classifier_reads_held_out_digits():
    classifier = load_classifier()  # checks the file's SHA-256
    assert held_out_accuracy(classifier) >= 0.97
    features = classifier(load_embedded("test").as_float()[:8])
    assert features.shape == (8, classifier.num_features)


def test_random_features_are_fixed_and_feed_fid():
    images = torch.rand(16, 3, 16, 16) * 2 - 1
    assert torch.equal(RandomFeatures(3)(images), RandomFeatures(3)(images))
    assert fid_kid(RandomFeatures(3), [images], [images])["fid"] == pytest.approx(0.0, abs=1e-6)


def test_missing_inception_weights_are_a_one_line_error_that_says_where(tmp_path, monkeypatch):
    monkeypatch.delenv("IMG2IMG_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError, match="nothing is downloaded.*pt_inception-2015-12-05"):
        find_inception_weights()
    with pytest.raises(UserError, match="--inception-weights: .*missing.pth does not exist"):
        find_inception_weights(str(tmp_path / "missing.pth"))
    os.mkfifo(tmp_path / "pipe.pth")  # named as it is: it existed, and is not a file to read
    with pytest.raises(UserError, match="pipe.pth is not a regular file"):
        find_inception_weights(str(tmp_path / "pipe.pth"))
    (tmp_path / "weights").mkdir()
    with pytest.raises(UserError, match="weights is a folder"):
        find_inception_weights(str(tmp_path / "weights"))


def test_eval_prints_metrics_beside_the_floor_and_writes_json(tmp_path, mnist_run):
    train(mnist_run(steps=4, batch_size=4, save_every_steps=2), tmp_path / "run")
    result, output = invoke("eval", tmp_path / "run", "--samples", "64", "--device", "cpu")
    assert result.exit_code == 0, output
    assert "real-vs-real floor" in output and "fid" in output and "classes_covered" in output
    report = json.loads((tmp_path / "run" / "eval" / "step-00000004.json").read_text())
    assert report["step"] == 4 and report["metrics"]["fid"] > report["reference"]["real-vs-real floor"]["fid"]
    assert report["protocol"]["generated"] == 64


def test_eval_of_unpaired_models_needs_held_out_data_and_uses_any_extractor(cyclegan_run, tmp_path, monkeypatch):
    result, _ = invoke("eval", cyclegan_run)
    assert_one_line_error(result, "held-out data", "--a DIR --b DIR")
    data = cyclegan_run.parent
    result, output = invoke("eval", cyclegan_run, "--a", data / "a", "--b", data / "b", "--features", "random",
                            "--json", tmp_path / "e.json", "--device", "cpu")
    assert result.exit_code == 0, output
    metrics = json.loads((tmp_path / "e.json").read_text())["metrics"]
    assert {"fid_a2b", "kid_a2b", "fid_b2a", "kid_b2a"} <= set(metrics)
    with monkeypatch.context() as patch:  # a name that no cyclegan evaluation reports is refused before it runs
        patch.setattr("img2img.evaluation.evaluate._evaluate_unpaired", lambda *args: pytest.fail("evaluated"))
        result, _ = invoke("eval", cyclegan_run, "--a", data / "a", "--b", data / "b", "--metrics", "fid_a2b,bogus")
        assert_one_line_error(result, "--metrics: bogus: not a cyclegan metric (its metrics: fid_a2b, kid_a2b")
        # and so is one it reports on digit data only, on other images (it was refused after the evaluation)
        result, _ = invoke("eval", cyclegan_run, "--a", data / "a", "--b", data / "b", "--features", "random",
                           "--metrics", "psnr", "--json", tmp_path / "e2.json")
        assert_one_line_error(result, "--metrics: psnr: cyclegan evaluation reports it on digit data only")
    # nothing computed (FID without the Inception weights, on data other than digits): an empty table and JSON,
    # with exit status 0, before
    monkeypatch.delenv("IMG2IMG_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    result, _ = invoke("eval", cyclegan_run, "--a", data / "a", "--b", data / "b", "--json", tmp_path / "e3.json",
                       "--device", "cpu")
    assert_one_line_error(result, "no metric could be computed for this cyclegan model: fid/kid skipped:",
                          "no Inception weights here")
    assert not (tmp_path / "e3.json").exists()


def test_eval_names_every_broken_held_out_file_in_one_line_and_no_decoder_crash_ends_it(cyclegan_run, tmp_path,
                                                                                       monkeypatch):
    """As a training folder is: every file decoded once in worker processes before the model runs, the broken
    ones named together (the first one alone was named, when the model came to it), and a file whose decoder
    crashes named too (it ended ``eval`` with a segmentation fault)."""
    from test_robustness import crashing_reader  # noqa: PLC0415

    data = cyclegan_run.parent
    for side in "ab":
        (tmp_path / side).mkdir()
        for image in (data / side).iterdir():
            (tmp_path / side / image.name).write_bytes(image.read_bytes())
    for name in ("0", "1", "2", "3"):
        (tmp_path / "b" / f"{name}.png").write_bytes(b"broken")
    result, _ = invoke("eval", cyclegan_run, "--a", tmp_path / "a", "--b", tmp_path / "b", "--features", "random",
                       "--json", tmp_path / "e.json")
    assert_one_line_error(result, "--b: ", "0.png: not a readable image", "2.png: not a readable image",
                          "and 1 more broken files; fix or remove them before evaluating")
    crashing_reader(monkeypatch, when=lambda path: str(path).endswith("a/4.png"))
    result, _ = invoke("eval", cyclegan_run, "--a", tmp_path / "a", "--b", data / "b", "--features", "random",
                       "--json", tmp_path / "e.json")
    assert_one_line_error(result, "--a: ", "4.png", "crashed")
    assert not (tmp_path / "e.json").exists()


def test_best_checkpoint_follows_the_chosen_metric_and_survives_resume(tmp_path, mnist_run, monkeypatch):
    scores = iter([3.0, 1.0, 2.0, 5.0])

    def scripted(model, run, step, *args, **kwargs):
        return Report(run.model, step, metrics={"fid": next(scores)})

    monkeypatch.setattr(evaluate_module, "evaluate_model", scripted)
    run = mnist_run(steps=6, batch_size=4, save_every_steps=100, eval_every_steps=2)
    trainer = Trainer(run, tmp_path / "run")
    trainer.fit(stop_after_steps=4)
    best = torch.load(tmp_path / "run" / "best.ckpt", weights_only=True)
    assert best["step"] == 4 and trainer.best == {"metric": "fid", "value": 1.0, "step": 4}
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["eval"]["fid"] for line in lines if "eval" in line] == [3.0, 1.0]
    resumed = resume(tmp_path / "run")  # step 6 scores 2.0: not better than step 4's 1.0
    assert resumed.step == 6
    assert torch.load(tmp_path / "run" / "best.ckpt", weights_only=True)["step"] == 4
    assert torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)["best"]["value"] == 1.0


def test_eval_every_refuses_before_training_a_metric_its_held_out_data_cannot_give(tmp_path, monkeypatch):
    """Offline, FID and KID of images other than digits need the Inception weights, and the demo tasks' metrics
    need a demo task's data: a run that could never keep best.ckpt by its metric is refused in one line (it
    stopped with a KeyError at its first evaluation); the digits' own features need no weights."""
    monkeypatch.delenv("IMG2IMG_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty hub cache
    data = write_unpaired(tmp_path)
    held_out = ["--eval-every", 5, "--eval-a", data / "a", "--eval-b", data / "b", "--dry-run"]
    cyclegan = ["train", "cyclegan", "--a", data / "a", "--b", data / "b"]
    result, _ = invoke(*cyclegan, *held_out)
    # the metric --eval-every chose by default is named by the option given (--eval-metric was not)
    assert_one_line_error(result, "--eval-every (its metric fid_a2b)", "no Inception weights",
                          "IMG2IMG_INCEPTION_WEIGHTS")
    result, _ = invoke(*cyclegan, *held_out, "--eval-metric", "psnr")
    assert_one_line_error(result, "--eval-metric psnr", "digit data only")
    result, _ = invoke("train", "dcgan", "--data", data / "b", "--size", 32, "--eval-every", 5, "--dry-run")
    assert_one_line_error(result, "--eval-every (its metric fid)", "no Inception weights")
    result, _ = invoke("train", "dcgan", "--data", data / "b", "--size", 32, "--eval-every", 5, "--eval-metric",
                       "classes_covered", "--dry-run")
    assert_one_line_error(result, "--eval-metric classes_covered", "digit data only")
    result, _ = invoke("train", "pix2pix", "--a", data / "a", "--b", data / "a", "--eval-every", 5, "--eval-a",
                       data / "a", "--eval-b", data / "a", "--eval-metric", "lpips", "--dry-run")
    assert_one_line_error(result, "--eval-metric lpips", "AlexNet weights")
    for accepted in (["train", "dcgan", "--data", data / "b", "--size", 32, "--batch-size", 4, "--eval-every", 5,
                      "--eval-metric", "nn_distance_to_train"],
                     ["train", "mnist-gan", "--eval-every", 5]):  # FID through the digits' features
        result, output = invoke(*accepted, "--dry-run")
        assert result.exit_code == 0, output
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"found, not loaded before the first evaluation")
    monkeypatch.setenv("IMG2IMG_INCEPTION_WEIGHTS", str(weights))
    result, output = invoke(*cyclegan, *held_out)
    if importlib.util.find_spec("torch_fidelity") is None:  # an optional extra
        assert_one_line_error(result, "--eval-every (its metric fid_a2b)", 'pip install "img2img[inception]"')
    else:
        assert result.exit_code == 0, output


def test_an_evaluation_without_the_runs_metric_warns_and_the_run_goes_on(tmp_path, mnist_run, monkeypatch, caplog):
    """Should an evaluation still come back without the metric (the weights went away mid-run), the run is not
    lost: it warns, saying why, keeps no best.ckpt by it, and trains on."""
    def scripted(model, run, step, *args, **kwargs):
        return Report(run.model, step, metrics={"kid": 0.5}, notes=["fid/kid skipped: the weights went away"])

    monkeypatch.setattr(evaluate_module, "evaluate_model", scripted)
    trainer = Trainer(mnist_run(steps=4, batch_size=4, eval_every_steps=2), tmp_path / "run")
    with caplog.at_level("WARNING", logger="img2img"):
        result = trainer.fit()
    assert result.step == 4 and trainer.best is None and not (tmp_path / "run" / "best.ckpt").exists()
    warnings = [r.getMessage() for r in caplog.records if "--eval-metric fid was not computed" in r.getMessage()]
    assert len(warnings) == 2 and "the weights went away" in warnings[0], caplog.text


def test_held_out_files_are_decoded_before_training_and_again_on_resume(tmp_path):
    """A held-out folder that is missing or holds a broken file is named in one line before a step (as the
    training files are), not at the first evaluation; and again when the run is resumed."""
    data = write_unpaired(tmp_path)
    held = tmp_path / "held"
    held.mkdir()
    for image in (data / "a").iterdir():
        (held / image.name).write_bytes(image.read_bytes())
    pix2pix = ["train", "pix2pix", "--a", data / "a", "--b", data / "a", "--size", 32, "--load-size", 32,
               "--ngf", 4, "--ndf", 4, "--batch-size", 2, "--device", "cpu", "--eval-every", 2, "--eval-metric",
               "psnr"]
    result, _ = invoke(*pix2pix, "--eval-a", tmp_path / "gone", "--eval-b", held, "--dry-run")
    assert_one_line_error(result, "--eval-a", "gone", "does not exist")
    result, output = invoke(*pix2pix, "--eval-a", held, "--eval-b", held, "--steps", 2, "--out", tmp_path / "run")
    assert result.exit_code == 0, output
    (held / "0.png").write_bytes(b"broken")
    result, _ = invoke(*pix2pix, "--eval-a", held, "--eval-b", held, "--dry-run")
    assert_one_line_error(result, "--eval-a", "0.png", "not a readable image")
    result, _ = invoke("train", "pix2pix", "--resume", tmp_path / "run", "--steps", 4)
    assert_one_line_error(result, "--eval-a", "0.png", "not a readable image")
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2


def test_an_evaluation_that_fails_costs_that_evaluation_only(tmp_path, mnist_run, monkeypatch, caplog):
    """A held-out file that broke or went away (or memory that ran out) mid-run stopped the run at the
    evaluation, before that step's checkpoint: now it warns, naming the file, and the run trains on."""
    outcomes = iter([UserError("held/3.png: not a readable image (truncated)"), 2.0])

    def scripted(model, run, step, *args, **kwargs):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return Report(run.model, step, metrics={"fid": outcome})

    monkeypatch.setattr(evaluate_module, "evaluate_model", scripted)
    trainer = Trainer(mnist_run(steps=4, batch_size=4, eval_every_steps=2, save_every_steps=100), tmp_path / "run")
    with caplog.at_level("WARNING", logger="img2img"):
        trainer.fit()
    assert "eval step=2 failed, and the run goes on without it: held/3.png: not a readable image" in caplog.text
    assert sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step-00000002.ckpt", "step-00000004.ckpt"]
    assert trainer.best == {"metric": "fid", "value": 2.0, "step": 4}


def test_eval_every_checks_its_metric_and_data_before_training(tmp_path):
    run = RunConfig("mnist-gan", TrainConfig(steps=2, device="cpu", eval_every_steps=1, eval_metric="psnr"),
                    MnistGanConfig())
    with pytest.raises(UserError, match="--eval-metric"):
        train(run, tmp_path / "run")
    data = write_unpaired(tmp_path)
    result, _ = invoke("train", "cyclegan", "--a", data / "a", "--b", data / "b", "--eval-every", "5")
    assert_one_line_error(result, "held-out data")
    # one side only: named, before the metric (hypothesis found --eval-a alone refused for the Inception weights)
    result, _ = invoke("train", "cyclegan", "--a", data / "a", "--b", data / "b", "--eval-every", "5", "--eval-a",
                       data / "a", "--dry-run")
    assert_one_line_error(result, "--eval-a: evaluating a cyclegan model for --eval-every needs held-out data: "
                          "--eval-a DIR --eval-b DIR, not --eval-a alone")


def test_held_out_folders_an_evaluation_does_not_read_are_refused_not_dropped(tmp_path, cyclegan_run, mnist_run,
                                                                              monkeypatch):
    data = cyclegan_run.parent
    monkeypatch.setattr("img2img.evaluation.evaluate._evaluate_unpaired", lambda *args: pytest.fail("evaluated"))
    for extra in ("--aligned", "--data"):  # a CycleGAN run was evaluated on --a/--b alone, and said nothing
        result, _ = invoke("eval", cyclegan_run, "--a", data / "a", "--b", data / "b", extra, data / "a",
                           "--json", tmp_path / "e.json")
        assert_one_line_error(result, f"{extra}: evaluating a cyclegan model does not read it",
                              "it takes --a DIR --b DIR", f"leave out {extra}")
    assert not (tmp_path / "e.json").exists()
    train(mnist_run(steps=2, batch_size=4), tmp_path / "mnist")
    result, _ = invoke("eval", tmp_path / "mnist", "--a", data / "a")
    assert_one_line_error(result, "--a: evaluating a mnist-gan model does not read it", "its own samples")
    result, _ = invoke("train", "cyclegan", "--a", data / "a", "--b", data / "b", "--eval-every", "5",
                       "--eval-a", data / "a", "--eval-b", data / "b", "--eval-aligned", data / "a",
                       "--out", tmp_path / "run")
    assert_one_line_error(result, "--eval-aligned: evaluating a cyclegan model for --eval-every does not read it",
                          "--eval-a DIR --eval-b DIR")
    assert not (tmp_path / "run").exists()


TINY = ("--size", 32, "--steps", 1, "--batch-size", 2, "--ngf", 4, "--ndf", 4, "--device", "cpu", "--workers", 0)
EVALUATED = {  # model: (demo, training options, held-out options), each demo task's ground truth included
    "cyclegan": ("cyclegan", lambda d: ["--a", d / "train/a", "--b", d / "train/b", "--load-size", 32],
                 lambda d: ["--a", d / "test/a", "--b", d / "test/b"]),
    "pix2pix": ("pix2pix", lambda d: ["--a", d / "train/a", "--b", d / "train/b", "--load-size", 32],
                lambda d: ["--a", d / "test/a", "--b", d / "test/b"]),
    "stargan": ("stargan", lambda d: ["--data", d / "train", "--n-blocks", 1], lambda d: ["--data", d / "test"]),
}


@pytest.mark.parametrize("name", sorted(EVALUATED))
def test_evaluation_holds_a_batch_of_images_at_a_time_and_gives_the_same_figures(tmp_path, monkeypatch, name,
                                                                                 demo_task):
    """Every held-out image and every translation was held at once, in float32: a held-out set of a few
    thousand photos was enough for the out-of-memory killer.  Now images pass a batch at a time, and only their
    features and per-image figures are kept; the figures are those of one large batch."""
    kind, train_options, held_out = EVALUATED[name]
    demo = demo_task(kind, tmp_path / "demo", test_count=11, train_count=12)
    result, output = invoke("train", name, *train_options(demo), *TINY, "--out", tmp_path / "run")
    assert result.exit_code == 0, output
    evaluate = ["eval", tmp_path / "run", *held_out(demo), "--device", "cpu", "--json"]
    result, output = invoke(*evaluate, tmp_path / "whole.json")
    assert result.exit_code == 0, output
    import weakref  # noqa: PLC0415

    translate, sizes, outputs, alive = evaluate_module._translate, [], [], []

    def watched(model, images, direction, device):
        sizes.append(len(images))
        alive.append(sum(ref() is not None for ref in outputs))  # translations of earlier batches still held
        translated = translate(model, images, direction, device)
        outputs.append(weakref.ref(translated))
        return translated

    monkeypatch.setattr(evaluate_module, "BATCH", 3)
    monkeypatch.setattr(evaluate_module, "_translate", watched)
    result, output = invoke(*evaluate, tmp_path / "batched.json")
    assert result.exit_code == 0, output
    assert max(sizes) == 3 and len(sizes) >= 4 and max(alive) <= 1, (sizes, alive)
    whole, batched = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("whole", "batched"))
    assert list(batched["metrics"]) == list(whole["metrics"]) and batched["notes"] == whole["notes"]
    for part in ("metrics", "reference"):
        flat = lambda report: {k: v for k, v in report[part].items() if not isinstance(v, dict)}  # noqa: E731
        assert flat(batched) == pytest.approx(flat(whole), rel=1e-4, abs=1e-6)
        for key, value in whole[part].items():
            if isinstance(value, dict):
                assert batched[part][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    if kind != "stargan":  # the ground truth of the demo tasks was computed
        assert "label_agreement" in whole["metrics"]


def test_evaluation_of_many_samples_holds_a_chunk_of_them_at_a_time(tmp_path, mnist_run, monkeypatch):
    """``eval --samples 10000000`` made every sample at once (31 GB for the MNIST GAN) before any was compared."""
    import weakref  # noqa: PLC0415

    train(mnist_run(steps=2, batch_size=4, save_every_steps=2), tmp_path / "run")
    generated, chunks, alive = evaluate_module._generated, [], []

    def watched(*args, **kwargs):
        for images, labels in generated(*args, **kwargs):
            alive.append(sum(ref() is not None for ref in chunks))
            chunks.append(weakref.ref(images))
            yield images, labels

    monkeypatch.setattr(evaluate_module, "_generated", watched)
    result, output = invoke("eval", tmp_path / "run", "--samples", 2500, "--device", "cpu", "--json",
                            tmp_path / "e.json")
    assert result.exit_code == 0, output
    assert len(chunks) == 3 and max(alive) <= 1, alive
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["protocol"]["generated"] == 2500 and sum(report["metrics"]["class_counts"]) == 2500


@pytest.mark.parametrize("have, want", [(h, w) for h in (1, 3, 4) for w in (1, 3, 4)])
def test_the_identity_baseline_converts_the_input_as_the_loaders_convert_a_file(have, want):
    """The input set beside a target of other channels (pix2pix --channels-b 4 on colour inputs ended eval in a
    size mismatch): as :func:`convert_channels` converts a file's levels."""
    from img2img.data.images import convert_channels  # noqa: PLC0415

    levels = torch.rand(2, have, 5, 6, generator=torch.Generator().manual_seed(have))
    expected = torch.stack([torch.from_numpy(convert_channels(image.permute(1, 2, 0).numpy(), want)).permute(2, 0, 1)
                            for image in levels]) * 2 - 1
    converted = evaluate_module._match_channels(levels * 2 - 1, torch.zeros(2, want, 5, 6))
    assert converted.shape == (2, want, 5, 6)
    torch.testing.assert_close(converted, expected, atol=1e-6, rtol=0)


def test_pix2pix_with_an_alpha_channel_out_evaluates_on_colour_inputs(tmp_path):
    data = write_unpaired(tmp_path)
    result, output = invoke("train", "pix2pix", "--a", data / "a", "--b", data / "a", "--channels-b", 4, "--size", 32,
                            "--load-size", 32, "--ngf", 4, "--ndf", 4, "--batch-size", 2, "--steps", 1, "--device",
                            "cpu", "--out", tmp_path / "run")
    assert result.exit_code == 0, output
    result, output = invoke("eval", tmp_path / "run", "--a", data / "a", "--b", data / "a", "--features", "random",
                            "--device", "cpu", "--json", tmp_path / "e.json")
    assert result.exit_code == 0, output
    report = json.loads((tmp_path / "e.json").read_text())
    assert math.isfinite(report["metrics"]["psnr"]) and math.isfinite(report["reference"]["identity"]["psnr"])


def test_metric_names_are_checked_exactly_before_the_evaluation_runs(tmp_path, mnist_run, monkeypatch):
    """Any name beginning with a metric's and an underscore passed (fid_a2b for the MNIST GAN), and was refused
    only after the evaluation had run; StarGAN's per-domain names are checked against its domains."""
    from img2img.evaluation.evaluate import metric_names  # noqa: PLC0415
    from img2img.models import MODELS  # noqa: PLC0415

    train(mnist_run(steps=2, batch_size=4), tmp_path / "run")
    monkeypatch.setattr(evaluate_module, "_evaluate_digits_gan", lambda *args: pytest.fail("evaluated"))
    result, _ = invoke("eval", tmp_path / "run", "--metrics", "fid_a2b", "--device", "cpu")
    assert_one_line_error(result, "--metrics: fid_a2b: not a mnist-gan metric")
    names = metric_names(MODELS["stargan"], ["x", "y"])
    assert {"fid_to_x", "kid_to_y", "own_domain_psnr_x", "psnr_x_to_y", "label_agreement_y_to_x", "pairs"} <= set(names)
    assert "fid_to_w" not in names and "psnr_x_to_x" not in names
    assert "fid_b2a" not in metric_names(MODELS["cut"]) and "fid_b2a" in metric_names(MODELS["cyclegan"])
    assert "class_agreement" in metric_names(MODELS["cgan"]) and "class_agreement" not in metric_names(MODELS["dcgan"])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_eval_counts_the_images_it_evaluates_on_a_terminal_only(cyclegan_run, tmp_path, monkeypatch):
    """An evaluation of thousands of images took minutes without a word: on a terminal, a progress bar counts
    each side's held-out images; a log, or captured output, gets none of it."""
    data = cyclegan_run.parent
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    report, _ = evaluate_module.evaluate_checkpoint(cyclegan_run, str(data / "a"), str(data / "b"), None, (),
                                                    "random", None, None, 0, "cpu", tmp_path / "e.json", None)
    monkeypatch.undo()
    shown = terminal.getvalue()
    count = len(list((data / "a").iterdir()))
    assert "images of A:" in shown and "images of B:" in shown and f"/{count} [" in shown, shown
    assert report.metrics["fid_a2b"] >= 0
    result, output = invoke("eval", cyclegan_run, "--a", data / "a", "--b", data / "b", "--features", "random",
                            "--json", tmp_path / "e2.json", "--device", "cpu")
    assert result.exit_code == 0 and "images of" not in output and "img/s" not in output, output
