"""`slotssm-hf evaluate`: a converted official SAVi checkpoint evaluated end to end on a MOVi-format TFDS folder with
the official protocol (preprocessing, temporal slices, FG-ARI per video over all frames), against an expectation
computed independently here (NumPy preprocessing from the official ops' definitions, one pass over each whole video,
scikit-learn's ARI); SAVi++'s evaluation loss against the model's own loss on the same preprocessed videos; the
model-index entry `--update-card` writes; and the error for frames of the wrong size.
ConvS5 by rollouts; GrootV by top-1 / top-5 on an image folder, against the official torchvision transform and the
model run here, and the image datasets it refuses."""

import json

import numpy as np
import pytest
import torch
from flax_format import write_flax_checkpoint
from huggingface_hub import ModelCard
from savi_checkpoints import TINY, clu_checkpoint, official_params
from sklearn.metrics import adjusted_rand_score
from tfds_writer import write_movi

from slotssm_hf import SAViConfig, SAViForVideoReconstruction
from slotssm_hf.cli import main as cli
from slotssm_hf.conversion.convert_savi import convert_savi_checkpoint
from slotssm_hf.conversion.flax_checkpoint import flatten_tree
from slotssm_hf.conversion.references.savi import SAViReference
from slotssm_hf.evaluation.object_discovery import run_in_slices

FRAMES = 10  # not a multiple of the 6-frame slices: the last slice is shorter


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A tiny official-format SAVi checkpoint (16 px frames, 3 boxes) converted with `convert_savi_checkpoint`."""
    root = tmp_path_factory.mktemp("savi")
    (root / "workdir" / "checkpoints-0").mkdir(parents=True)
    checkpoint = root / "workdir" / "checkpoints-0" / "ckpt-5.flax"
    write_flax_checkpoint(clu_checkpoint(official_params(SAViConfig(**TINY))), checkpoint)
    return convert_savi_checkpoint(root / "workdir", root / "converted", overrides=TINY, log=lambda *_: None)


def official_inputs(values: dict, max_instances: int):
    """The official evaluation preprocessing of one written MOVi example, from the ops' definitions, for 32 x 32
    frames and resize_small(16): convert_image_dtype (x * float32(1 / 255)); bilinear with half-pixel centres at an
    exact factor 2 (the mean of each 2 x 2 block); nearest with half-pixel centres (pixel 2i + 1); the first frame's
    boxes, the no-track box where an instance is not visible there."""
    video = values["video"].astype(np.float32) * np.float32(1 / 255)
    t, h, w, c = video.shape
    video = video.reshape(t, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    segmentations = values["segmentations"][:, 1::2, 1::2, 0].astype(np.int64)
    segmentations[segmentations > max_instances] = 0
    boxes = np.zeros((max_instances, 4), np.float32)
    for k, (box, frames) in enumerate(zip(values["instances"]["bboxes"], values["instances"]["bbox_frames"])):
        if k < max_instances and 0 in frames:
            boxes[k] = box[list(frames).index(0)]
    return torch.from_numpy(video).permute(0, 3, 1, 2), torch.from_numpy(boxes), segmentations


def test_converted_official_savi_checkpoint_reports_the_official_fg_ari(tmp_path, converted, capsys):
    written = write_movi(tmp_path / "movi", splits=(("validation", (2, 1)),), frames=FRAMES, height=32, width=32)
    out = tmp_path / "eval"
    assert cli(["evaluate", str(converted), "--dataset", str(tmp_path / "movi"), "--output-dir", str(out),
                "--no-progress", "--num-pictures", "2"]) == 0  # fmt: skip
    results = json.loads((out / "eval_results.json").read_text())
    model = SAViForVideoReconstruction.from_pretrained(converted).eval()
    # The official model itself, as a float64 evaluation of the official Flax arrays.
    reference = SAViReference(flatten_tree(official_params(SAViConfig(**TINY))), SAViConfig(**TINY))
    expected, expected_first_excluded, expected_reference = [], [], []
    for values in written["validation"]:
        video, boxes, segmentations = official_inputs(values, model.config.num_boxes)
        with torch.no_grad():  # the whole video in one pass: slices carrying the state must give the same
            masks = model(video[None], boxes=boxes[None]).masks[0, :, :, 0]
        predicted = masks.argmax(dim=1).numpy()
        foreground = segmentations != 0
        expected.append(adjusted_rand_score(segmentations[foreground], predicted[foreground]))
        alphas = reference(video[None].permute(0, 1, 3, 4, 2).double(), boxes[None].double())["alphas"]
        official = alphas[0, ..., 0].argmax(dim=1).numpy()
        expected_reference.append(adjusted_rand_score(segmentations[foreground], official[foreground]))
        later = foreground.copy()
        later[0] = False
        expected_first_excluded.append(adjusted_rand_score(segmentations[later], predicted[later]))
    assert results["num_videos"] == 3 and [row["video"] for row in results["per_video"]] == [
        values["metadata"]["video_name"] for values in written["validation"]
    ]
    assert results["settings"]["slice_size"] == 6 and results["settings"]["max_instances"] == 3
    assert results["metrics"]["fg_ari"] == pytest.approx(np.mean(expected), abs=1e-9)
    assert results["metrics"]["fg_ari"] == pytest.approx(np.mean(expected_reference), abs=1e-9)
    assert results["metrics"]["fg_ari_first_excluded"] == pytest.approx(np.mean(expected_first_excluded), abs=1e-9)
    printed = capsys.readouterr().out
    assert f"| FG-ARI | {np.mean(expected):.4f} |" in printed
    assert sorted(p.name for p in out.iterdir()) == ["eval_results.json", "slots-0.gif", "slots-0.png", "slots-1.gif",
                                                     "slots-1.png"]  # fmt: skip


def test_sliced_evaluation_carries_the_state_and_equals_one_pass(converted):
    model = SAViForVideoReconstruction.from_pretrained(converted).eval()
    video = torch.rand(2, FRAMES, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8], [0.0, 0.0, 0.0, 0.0]]).expand(2, 3, 4)
    with torch.no_grad():
        whole = model(video, boxes=boxes).masks[:, :, :, 0]
    torch.testing.assert_close(run_in_slices(model, video, boxes, slice_size=4)[0], whole, rtol=0, atol=1e-5)


def test_savi_pp_reports_the_official_eval_loss_its_own_loss_on_the_preprocessed_videos(tmp_path):
    from slotssm_hf import SAViVideoProcessor
    from slotssm_hf.data.movi import movi_example

    config = SAViConfig(**{**TINY, "targets": {"flow": 3, "depth": 1}, "early_fusion": True})  # SAVi++'s targets
    torch.manual_seed(0)
    model = SAViForVideoReconstruction(config).eval()
    model.save_pretrained(tmp_path / "savi-pp")
    written = write_movi(tmp_path / "movi", splits=(("validation", (2, 1)),), frames=FRAMES, height=32, width=32)
    out = tmp_path / "eval"
    assert cli(["evaluate", str(tmp_path / "savi-pp"), "--dataset", str(tmp_path / "movi"), "--output-dir", str(out),
                "--no-progress", "--num-pictures", "0"]) == 0  # fmt: skip
    results = json.loads((out / "eval_results.json").read_text())
    # The model's own loss on the same preprocessed videos (depth log_plus-transformed, flow drawn as RGB), each
    # video in one pass over its 24 padded frames: the evaluation ran 6-frame slices carrying the state.
    examples = [movi_example(values, config.num_boxes) for values in written["validation"]]
    batch = SAViVideoProcessor.for_config(config).preprocess_examples(examples, max_instances=config.num_boxes,
                                                                      targets=config.targets)  # fmt: skip
    with torch.no_grad():
        losses = [model(batch["pixel_values_videos"][i : i + 1], boxes=batch["boxes"][i : i + 1],
                        labels=batch["labels"][i : i + 1]).loss.item() for i in range(3)]  # fmt: skip
        batch_loss = model(batch["pixel_values_videos"], boxes=batch["boxes"], labels=batch["labels"]).loss.item()
    assert [row["loss"] for row in results["per_video"]] == pytest.approx(losses, rel=1e-5)
    assert results["metrics"]["loss"] == pytest.approx(batch_loss, rel=1e-5)
    assert results["settings"]["loss"].startswith("the official eval_loss: squared error of the decoded flow, depth")


@pytest.mark.parametrize("export", [[], ["--movi", "--max-instances", "3"], ["--format", "parquet"]],
                         ids=["arrow", "arrow-movi", "parquet"])  # fmt: skip
def test_movi_exported_with_tfds_export_evaluates_as_the_tfds_folder(tmp_path, converted, export):
    write_movi(tmp_path / "movi", splits=(("validation", (2, 1)),), frames=4, height=32, width=32)
    assert cli(["tfds-export", str(tmp_path / "movi"), str(tmp_path / "copy"), *export]) == 0
    results = {}
    for source in ("movi", "copy"):
        assert cli(["evaluate", str(converted), "--dataset", str(tmp_path / source), "--output-dir",
                    str(tmp_path / f"eval-{source}"), "--no-progress", "--num-pictures", "0"]) == 0  # fmt: skip
        results[source] = json.loads((tmp_path / f"eval-{source}" / "eval_results.json").read_text())
    assert results["copy"]["num_videos"] == 3
    assert results["copy"]["metrics"] == results["movi"]["metrics"]


def test_update_card_writes_a_model_index_entry_push_publishes(tmp_path, converted):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(converted, folder)
    write_movi(tmp_path / "movi", splits=(("validation", (2,)),), frames=4, height=16, width=16)
    assert cli(["evaluate", str(folder), "--dataset", str(tmp_path / "movi"), "--output-dir", str(tmp_path / "eval"),
                "--no-progress", "--update-card", "--dataset-id", "kubric/movi_a", "--dataset-config", "128x128",
                "--dataset-name", "MOVi-A"]) == 0  # fmt: skip
    stored = json.loads((folder / "eval_results.json").read_text())
    assert [entry["dataset_id"] for entry in stored["evaluations"]] == ["kubric/movi_a"]
    card = ModelCard.load(folder / "README.md")
    results = {result.metric_type: result for result in card.data.eval_results}
    fg_ari = results["fg_ari"]
    assert (fg_ari.dataset_type, fg_ari.dataset_name, fg_ari.dataset_config, fg_ari.dataset_split) == (
        "kubric/movi_a", "MOVi-A", "128x128", "validation")
    assert fg_ari.metric_name == "FG-ARI" and fg_ari.metric_value == stored["evaluations"][0]["metrics"]["fg_ari"]
    assert fg_ari.task_type == "image-segmentation" and "mbo" in results and "miou" in results
    assert card.data.datasets == ["kubric/movi_a"]
    assert "This checkpoint" not in card.text or "Apache" in card.text  # the family's card, rendered again
    # A second run of the same protocol, dataset and split replaces the entry instead of adding one.
    assert cli(["evaluate", str(folder), "--dataset", str(tmp_path / "movi"), "--output-dir", str(tmp_path / "eval"),
                "--no-progress", "--update-card", "--dataset-id", "kubric/movi_a", "--dataset-config", "128x128",
                "--max-videos", "1"]) == 0  # fmt: skip
    stored = json.loads((folder / "eval_results.json").read_text())
    assert len(stored["evaluations"]) == 1 and stored["evaluations"][0]["num_videos"] == 1


def test_frames_not_the_size_the_model_takes_are_refused_naming_the_file_and_field(tmp_path, converted, capsys):
    write_movi(tmp_path / "movi", splits=(("validation", (1,)),), frames=3, height=24, width=32)
    assert cli(["evaluate", str(converted), "--dataset", str(tmp_path / "movi"), "--output-dir", str(tmp_path / "e"),
                "--no-progress"]) == 1  # fmt: skip
    error = capsys.readouterr().err
    assert "movi_a-validation.tfrecord-00000-of-00001 (record 0): field 'video' gives frames of 16 x 21" in error
    assert "resize_small(16)" in error and "the model takes 16 x 16 frames" in error
    assert not (tmp_path / "e").exists()


def test_convs5_is_evaluated_by_rollouts_after_the_context_frames(tmp_path, capsys):
    from saved_folders import TINY as TINY_CONFIGS

    from slotssm_hf import ConvS5Config, ConvS5ForVideoPrediction
    from slotssm_hf.evaluation.metrics import psnr, ssim

    model = ConvS5ForVideoPrediction(ConvS5Config(**TINY_CONFIGS["convs5"])).eval()
    model.save_pretrained(tmp_path / "convs5")
    sequences = np.random.default_rng(0).integers(0, 256, (7, 2, 16, 16), dtype=np.uint8)  # torchvision's layout
    np.save(tmp_path / "mnist_test_seq.npy", sequences)
    assert cli(["evaluate", str(tmp_path / "convs5"), "--dataset", str(tmp_path), "--context-frames", "4",
                "--output-dir", str(tmp_path / "eval"), "--no-progress"]) == 0  # fmt: skip
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    frames = 2 * torch.from_numpy(sequences).float().permute(1, 0, 2, 3)[:, :, None] / 255 - 1
    with torch.no_grad():
        future = model.rollout(frames[:, :4], 3)
    predicted, target = (future.double().clamp(-1, 1) + 1) / 2, (frames[:, 4:].double() + 1) / 2
    assert results["protocol"] == "moving-mnist-prediction" and results["num_videos"] == 2
    assert results["metrics"]["psnr"] == pytest.approx(psnr(predicted, target).mean().item(), abs=1e-4)
    assert results["metrics"]["ssim"] == pytest.approx(ssim(predicted, target).mean().item(), abs=1e-4)
    assert "| PSNR |" in capsys.readouterr().out


# --- GrootV: top-1 / top-5 on an image folder ------------------------------------------------------------------------

GROOTV_CLASSES = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen"]
# (height, width, grey) of the test images. 40 x 59 resizes to 73 x 107, whose centre crop of 64 starts at column 22
# in torchvision (round(21.5), half to even) and at 21 in transformers' processors (floor): the official crop is 22.
IMAGE_SIZES = [(40, 59, False), (64, 64, False), (80, 50, True), (73, 100, False), (33, 47, False), (90, 120, False)]


@pytest.fixture(scope="module")
def grootv(tmp_path_factory):
    """A tiny GrootV with 8 named classes at 64 px, saved with the official evaluation pipeline as the converter
    writes it: a ConvNextImageProcessor resizing the short side to 64 / 0.875 = 73 (bicubic), centre crop 64."""
    from saved_folders import tiny_config
    from transformers import ConvNextImageProcessor
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

    from slotssm_hf import GrootVForImageClassification

    config = tiny_config("grootv")
    config.image_size = 64
    config.id2label = dict(enumerate(GROOTV_CLASSES))
    config.label2id = {name: index for index, name in enumerate(GROOTV_CLASSES)}
    torch.manual_seed(0)
    model = GrootVForImageClassification(config).eval()
    folder = tmp_path_factory.mktemp("grootv") / "grootv-tiny"
    model.save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.875, resample=PILImageResampling.BICUBIC,
                           image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD).save_pretrained(folder)
    return folder, model


def official_pixels(image):
    """GrootVL's evaluation transform (`build_transform` with TEST.CROP, 256 / 224 scale) for 64 px, written out."""
    from torchvision import transforms
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return transforms.Compose([
        transforms.Resize(73, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(64),
        transforms.ToTensor(), transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    ])(image.convert("RGB"))  # fmt: skip


def smooth_image(rng, height, width, grey):
    """A smooth image (a colour gradient plus a disc), RGB or grey, as a PIL image."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(a * x + b * y + c) for a, b, c in rng.uniform(1, 6, (3, 3))]
    pixels = (np.stack(channels, -1) * 100 + 128).clip(0, 255).astype(np.uint8)
    centre = rng.uniform(0.2, 0.8, 2)
    pixels[(x - centre[0]) ** 2 + (y - centre[1]) ** 2 < 0.05] = rng.integers(0, 256, 3)
    image = Image.fromarray(pixels)
    return image.convert("L") if grey else image


def write_image_folder(folder, images: list, classes: list[str]) -> list:
    """An imagefolder: image i as `<classes[i]>/<i>.png`. Returns the paths."""
    paths = []
    for index, (image, name) in enumerate(zip(images, classes)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        image.save(folder / name / f"{index}.png")
        paths.append(folder / name / f"{index}.png")
    return paths


def test_grootv_reports_top1_and_top5_with_the_official_transform(tmp_path, grootv, capsys):
    folder, model = grootv
    rng = np.random.default_rng(0)
    images = [smooth_image(rng, *size) for size in IMAGE_SIZES]
    with torch.no_grad():  # the model on the official transform's output, image by image
        logits = [model(pixel_values=official_pixels(image)[None]).logits[0] for image in images]
    ranking = [torch.argsort(row, descending=True).tolist() for row in logits]
    # Each image filed under the class at a chosen rank of its own prediction: top-1 hits, top-5-only hits, misses.
    ranks = [0, 2, 7, 0, 4, 6]
    classes = [GROOTV_CLASSES[order[rank]] for order, rank in zip(ranking, ranks)]
    paths = write_image_folder(tmp_path / "images", images, classes)
    out = tmp_path / "eval"
    assert cli(["evaluate", str(folder), "--dataset", str(tmp_path / "images"), "--output-dir", str(out),
                "--batch-size", "1", "--no-progress"]) == 0  # fmt: skip
    results = json.loads((out / "eval_results.json").read_text())
    assert results["protocol"] == "image-classification" and results["num_images"] == len(images)
    assert results["metrics"] == {"accuracy": pytest.approx(2 / 6), "top_5_accuracy": pytest.approx(4 / 6)}
    by_path = {row["image"]: row for row in results["per_image"]}
    for path, order, name in zip(paths, ranking, classes):
        row = by_path[str(path)]
        assert row["label"] == GROOTV_CLASSES.index(name) and row["predicted"] == order[:5]
    assert "Resize(73, bicubic) -> CenterCrop(64)" in results["settings"]["preprocessing"]
    assert results["settings"]["labels"] == "by class name"
    printed = capsys.readouterr().out
    assert f"| Top-1 accuracy | {2 / 6:.4f} |" in printed and f"| Top-5 accuracy | {4 / 6:.4f} |" in printed


def test_grootv_preprocessing_is_the_official_transform_to_the_bit(grootv):
    from transformers import AutoImageProcessor

    from slotssm_hf.evaluation.image_classification import official_transform

    transform, _ = official_transform(AutoImageProcessor.from_pretrained(grootv[0]))
    rng = np.random.default_rng(1)
    for size in IMAGE_SIZES:
        image = smooth_image(rng, *size)
        assert torch.equal(transform(image.convert("RGB")), official_pixels(image)), size


def test_grootv_update_card_files_top1_and_top5_under_image_classification(tmp_path, grootv):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(grootv[0], folder)
    rng = np.random.default_rng(2)
    write_image_folder(tmp_path / "images" / "val", [smooth_image(rng, 48, 64, False) for _ in range(3)],
                       ["cat", "dog", "cat"])  # fmt: skip
    assert cli(["evaluate", str(folder), "--dataset", str(tmp_path / "images"), "--output-dir", str(tmp_path / "e"),
                "--no-progress", "--update-card", "--dataset-id", "ILSVRC/imagenet-1k", "--dataset-name",
                "ImageNet-1k"]) == 0  # fmt: skip
    stored = json.loads((folder / "eval_results.json").read_text())["evaluations"][0]
    assert stored["num_images"] == 3 and stored["settings"]["read_as"] == "imagefolder (split 'validation')"
    card = ModelCard.load(folder / "README.md")
    results = {result.metric_type: result for result in card.data.eval_results}
    assert sorted(results) == ["accuracy", "top_5_accuracy"]
    top1, top5 = results["accuracy"], results["top_5_accuracy"]
    assert (top1.metric_name, top1.metric_value) == ("Top-1 accuracy", stored["metrics"]["accuracy"])
    assert (top5.metric_name, top5.metric_value) == ("Top-5 accuracy", stored["metrics"]["top_5_accuracy"])
    assert top1.task_type == "image-classification" and top1.dataset_type == "ILSVRC/imagenet-1k"
    assert top1.dataset_split == "validation" and card.data.pipeline_tag == "image-classification"


def test_grootv_refuses_class_names_it_does_not_know_naming_them(tmp_path, grootv, capsys):
    rng = np.random.default_rng(3)
    write_image_folder(tmp_path / "images", [smooth_image(rng, 32, 32, False) for _ in range(3)],
                       ["cat", "zebra", "yak"])  # fmt: skip
    assert cli(["evaluate", str(grootv[0]), "--dataset", str(tmp_path / "images"), "--output-dir", str(tmp_path / "e"),
                "--no-progress"]) == 1  # fmt: skip
    error = capsys.readouterr().err
    assert "class names the model does not know: 'yak', 'zebra'" in error and "'ant', 'bee'" in error
    assert not (tmp_path / "e").exists()


def test_grootv_refuses_a_folder_without_images(tmp_path, grootv, capsys):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "images" / "cat" / "notes.txt").write_text("not an image")
    assert cli(["evaluate", str(grootv[0]), "--dataset", str(tmp_path / "images"), "--no-progress"]) == 1
    assert f"{tmp_path / 'images'} holds no images" in capsys.readouterr().err


def test_grootv_refuses_a_label_index_outside_its_classes(tmp_path, grootv, capsys):
    import datasets

    rng = np.random.default_rng(4)
    images = [smooth_image(rng, 32, 32, False) for _ in range(2)]
    datasets.Dataset.from_dict({"image": images, "label": [3, 8]},
                               features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
                               ).save_to_disk(str(tmp_path / "saved"))  # fmt: skip
    assert cli(["evaluate", str(grootv[0]), "--dataset", str(tmp_path / "saved"), "--output-dir", str(tmp_path / "e"),
                "--no-progress"]) == 1  # fmt: skip
    assert "(split validation, image 1): label 8 is not a class of the model (0 to 7" in capsys.readouterr().err


def test_grootv_without_its_classification_head_is_refused(tmp_path, capsys):
    from saved_folders import tiny_config

    from slotssm_hf import GrootVModel

    GrootVModel(tiny_config("grootv")).save_pretrained(tmp_path / "backbone")
    assert cli(["evaluate", str(tmp_path / "backbone"), "--dataset", str(tmp_path), "--no-progress"]) == 1
    assert "holds a GrootVModel; its protocol needs" in capsys.readouterr().err


def test_imagenet_synset_folders_map_to_the_models_imagenet_classes():
    from types import SimpleNamespace

    import datasets
    from timm.data import ImageNetInfo

    from slotssm_hf.evaluation.image_classification import label_map

    info = ImageNetInfo()
    config = SimpleNamespace(id2label=dict(enumerate(info.label_descriptions())), num_labels=1000)
    folders = datasets.ClassLabel(names=["n01443537", "n01440764", "n15075141"])  # sorted as an imagefolder sorts
    mapping, how = label_map(folders, config, "val")
    assert mapping == {0: 1, 1: 0, 2: 999} and how == "by ImageNet synset id (timm's ImageNet-1k table)"
    assert config.id2label[1] == "goldfish, Carassius auratus"
    assert config.id2label[999] == "toilet tissue, toilet paper, bathroom tissue"
