"""`slotssm-hf evaluate MODEL --dataset FOLDER_OR_HUB_ID --split validation`: a model of the zoo evaluated with its
paper's protocol: `slotssm_hf.evaluation.object_discovery` for SlotSSM, SAVi / SAVi++ and STATM-SAVi on MOVi,
`slotssm_hf.evaluation.video_prediction` for ConvS5 on Moving-MNIST, `slotssm_hf.evaluation.image_classification`
(top-1 / top-5) for GrootV on ImageNet-style image folders.

It prints a table of the means, writes `eval_results.json` (the protocol, its settings, the means and every video's or
image's scores) and slot pictures of the first videos (`slots-<i>.png` / `.gif`) to `--output-dir`, and shows
progress. With `--update-card` the result is added to the saved folder MODEL: its `eval_results.json` gets an entry
under "evaluations" (replacing one of the same protocol, dataset, config and split) and its README.md is rendered
again, the result as a Hub `model-index` entry; `slotssm-hf push` publishes both.

For object discovery, DATASET is a MOVi TFDS folder (from `gsutil`; the shard files are named in errors), a folder
written by `datasets.save_to_disk` / `slotssm-hf tfds-export`, or anything `datasets.load_dataset` reads (a Parquet
folder, a Hub dataset id), holding the stored MOVi content or `load_movi`'s. For ConvS5 it is a Moving-MNIST `.npy`
file in torchvision's layout, or a folder holding one. For GrootV it is an imagefolder (a folder of class sub-folders
holding the images, as ImageNet's `val/n01440764/*.JPEG`, or of split folders holding those), a `save_to_disk` folder
or a Hub dataset id with `image` and `label` columns.
"""

import argparse
import json
import sys
from pathlib import Path

RESULTS_FILE = "eval_results.json"
# model_type -> (the head its protocol needs, the Auto class that loads it)
HEADS = {
    "slotssm": ("ForVideoReconstruction", "AutoModelForPreTraining"),
    "savi": ("ForVideoReconstruction", "AutoModelForPreTraining"),
    "statm": ("ForVideoReconstruction", "AutoModelForPreTraining"),
    "convs5": ("ForVideoPrediction", "AutoModelForPreTraining"),
    "grootv": ("ForImageClassification", "AutoModelForImageClassification"),
}
# protocol name -> the Hub task its results are filed under (type, name)
TASKS = {
    "movi-object-discovery": ("image-segmentation", "Unsupervised video object discovery"),
    "moving-mnist-prediction": ("other", "Video prediction"),
    "image-classification": ("image-classification", "Image classification"),
}


def load_model(source: str):
    """The model to evaluate from a saved folder or Hub id, in eval mode: the reconstruction head of an
    object-centric family (the head with per-slot masks), ConvS5's prediction head, GrootV's classification head."""
    import transformers

    import slotssm_hf  # noqa: F401  (registers the families with the Auto classes)

    config = transformers.AutoConfig.from_pretrained(source)
    if config.model_type not in HEADS:
        raise ValueError(f"{source} is a {config.model_type} model; `slotssm-hf evaluate` runs object discovery for "
                         "slotssm, savi and statm models, video prediction for convs5 models and image "
                         "classification for grootv models")  # fmt: skip
    architectures = config.architectures or []
    wanted, auto_class = HEADS[config.model_type]
    if architectures and not any(name.endswith(wanted) for name in architectures):
        raise ValueError(f"{source} holds a {architectures[0]}; its protocol needs the head that gives per-slot "
                         f"masks, predicted frames or class logits (…{wanted}) the model was trained "
                         "with")  # fmt: skip
    return getattr(transformers, auto_class).from_pretrained(source).eval()


def load_processor(source: str, config):
    """The video processor saved with the model, else its family's for the config; GrootV's image processor, else
    the official evaluation pipeline of the published checkpoints (resize to image_size / 0.875, centre crop)."""
    import transformers

    from ..registry import FAMILIES, load

    if config.model_type == "grootv":
        try:
            return transformers.AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError):
            from ..conversion.convert_grootv import image_processor

            return image_processor(config)
    try:
        return transformers.AutoVideoProcessor.from_pretrained(source)
    except (OSError, ValueError):
        processor_class = load(FAMILIES[config.model_type].processor_path)
        if hasattr(processor_class, "for_config"):
            return processor_class.for_config(config)
        size = config.image_size
        return processor_class(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def is_tfds_folder(path: Path) -> bool:
    return path.is_dir() and (any(path.glob("features.json")) or any(path.glob("*/features.json")))


def dataset_examples(source: str, split: str, max_instances: int, fields=()):
    """(where, example) pairs of `split`: `where` names the file and record (TFDS shards) or the dataset and row.
    A TFDS folder's examples hold the fields the protocol needs and those of `fields` it has (decoding them costs)."""
    path = Path(source)
    if is_tfds_folder(path):
        from ..data.movi import MOVi, generate_movi_examples

        columns = ["video", "segmentations", "boxes", "metadata", *fields]
        movi = MOVi(path, columns=None, max_instances=max_instances)
        movi = MOVi(path, columns=[name for name in columns if name in movi.outputs], max_instances=max_instances)
        shards = movi.tfds.shards(split)
        total = sum(shard.length or 0 for shard in shards) or None

        def tfds_examples():
            for shard in shards:
                for index, example in enumerate(generate_movi_examples([shard], movi.columns, max_instances,
                                                                       movi.outputs)):  # fmt: skip
                    yield f"{shard.path} (record {index})", example

        return tfds_examples(), total
    import datasets
    import numpy as np

    from ..data.movi import load_movi

    if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[split]
    else:
        dataset = datasets.load_dataset(source, split=split, streaming=True)
    total = len(dataset) if isinstance(dataset, datasets.Dataset) else None
    if "boxes" not in (dataset.column_names or []) and "instances" in (dataset.column_names or []):
        dataset = load_movi(dataset, max_instances=max_instances)
    elif isinstance(dataset, datasets.Dataset):
        dataset = dataset.to_iterable_dataset()

    # datasets' NumPy format widens integer arrays to int64; the processors take them as stored (uint8 frames).
    stored = {name: feature.dtype for name, feature in (dataset.features or {}).items()
              if isinstance(getattr(feature, "dtype", None), str)}  # fmt: skip

    def hf_examples():
        for index, example in enumerate(dataset.with_format("numpy")):
            for name, dtype in stored.items():
                if isinstance(example.get(name), np.ndarray):
                    example[name] = example[name].astype(dtype, copy=False)
            yield f"{source} (split {split}, row {index})", example

    return hf_examples(), total


def video_name(example: dict, fallback: str) -> str:
    name = example.get("metadata", {}).get("video_name") if isinstance(example.get("metadata"), dict) else None
    if isinstance(name, bytes):
        name = name.decode()
    return str(name) if name is not None and str(name) else fallback


def preprocess(processor, example: dict, where: str, settings: dict, targets: dict | None = None):
    """One example through the processor's evaluation pipeline (SAVi's with the `targets` the model reconstructs,
    for the loss); errors name where the example came from."""
    from ..models.video_processing_savi import SAViVideoProcessor

    try:
        if isinstance(processor, SAViVideoProcessor):
            return processor.preprocess_examples(example, num_frames=settings["num_frames"],
                                                 max_instances=settings["max_instances"], targets=targets)  # fmt: skip
        return processor.preprocess_examples(example, num_frames=settings["num_frames"])
    except (KeyError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from error


def resize_description(processor) -> str:
    from ..models.video_processing_savi import SAViVideoProcessor

    size = dict(processor.size)
    if isinstance(processor, SAViVideoProcessor):
        return f"resize_small({size.get('shortest_edge')})"
    return f"resizing to {size} and cropping to {dict(processor.crop_size)}"


def evaluate(model_source: str, dataset: str, split: str = "validation", protocol=None, max_videos: int | None = None,
             batch_size: int = 8, output_dir: str | None = None, num_pictures: int = 4, seed: int = 0,
             progress: bool = True) -> dict:  # fmt: skip
    """Evaluate the model at `model_source` on `split` of `dataset` with its family's protocol: object discovery
    (`ObjectDiscoveryProtocol()` by default), for ConvS5 video prediction (`VideoPredictionProtocol()`), for GrootV
    image classification (`ImageClassificationProtocol()`; `max_videos` counts images). Returns (and with
    `output_dir` writes) the results: "protocol", "settings", "metrics" (means over videos or images), "per_video"
    and "num_videos" (image classification: "per_image", "num_images")."""
    import torch
    from tqdm.auto import tqdm

    from ..models.video_processing_savi import TARGET_FIELDS
    from .image_classification import ImageClassificationProtocol
    from .object_discovery import (
        LOSS_FAMILIES,
        ObjectDiscoveryProtocol,
        check_frame_size,
        mean_metrics,
        run_in_slices,
        video_loss,
        video_metrics,
    )
    from .video_prediction import VideoPredictionProtocol

    model = load_model(model_source)
    processor = load_processor(model_source, model.config)
    if model.config.model_type == "grootv":
        protocol = protocol if isinstance(protocol, ImageClassificationProtocol) else ImageClassificationProtocol()
        return evaluate_classification(model, processor, model_source, dataset, split, protocol, max_videos,
                                       batch_size, output_dir, progress)  # fmt: skip
    if model.config.model_type == "convs5":
        protocol = protocol if isinstance(protocol, VideoPredictionProtocol) else VideoPredictionProtocol()
        return evaluate_prediction(model, processor, model_source, dataset, protocol, max_videos, output_dir, progress)
    protocol = protocol if isinstance(protocol, ObjectDiscoveryProtocol) else ObjectDiscoveryProtocol()
    settings = protocol.settings_for(model.config)
    # The loss compares the decoded targets with the data's: only where the data holds every target's field (a
    # dataset's fields are fixed: read from its first video).
    loss_targets = dict(model.config.targets) if model.config.model_type in LOSS_FAMILIES else {}
    loss_fields = [TARGET_FIELDS[name] for name in loss_targets]
    missing_fields = []
    examples, total = dataset_examples(dataset, split, max(settings["max_instances"], 1), loss_fields)
    if max_videos is not None:
        total = min(total, max_videos) if total else max_videos
    generator = torch.Generator().manual_seed(seed)
    per_video, pictures = [], []
    conditional = getattr(model.config, "initializer_type", None) == "conditional"

    def run(batch):
        inputs = {name: torch.cat([item[1][name] for item in batch]) for name in batch[0][1]}
        boxes = inputs.get("boxes") if conditional else None
        if conditional and boxes is None:
            raise ValueError(f"{batch[0][0]}: the conditional model needs the first frame's boxes; the example has "
                             "no 'boxes' or 'instances' field")  # fmt: skip
        masks, reconstruction = run_in_slices(model, inputs["pixel_values_videos"], boxes, settings["slice_size"],
                                              generator)  # fmt: skip
        if masks.shape[-2:] != inputs["segmentations"].shape[-2:]:
            raise ValueError(f"the model's masks are {tuple(masks.shape[-2:])}, the segmentations "
                             f"{tuple(inputs['segmentations'].shape[-2:])}")  # fmt: skip
        predicted = masks.argmax(dim=2)
        for index, (where, _, name) in enumerate(batch):
            row = {"video": name, "source": where}
            row.update(video_metrics(inputs["segmentations"][index], predicted[index], inputs["padding_mask"][index]))
            if "labels" in inputs:
                row["loss"] = video_loss(reconstruction[index], inputs["labels"][index])
            per_video.append(row)
            if len(pictures) < num_pictures:
                pictures.append((name, inputs["pixel_values_videos"][index], masks[index]))

    def prepared():
        for count, (where, example) in enumerate(examples):
            if max_videos is not None and count >= max_videos:
                return
            if "segmentations" not in example:
                raise ValueError(f"{where}: no field 'segmentations' to evaluate object discovery against")
            if count == 0:
                missing_fields.extend(name for name in loss_fields if name not in example)
            targets = loss_targets if loss_targets and not missing_fields else None
            inputs = preprocess(processor, example, where, settings, targets)
            check_frame_size(inputs["pixel_values_videos"], model.config, where, resize_description(processor))
            yield where, inputs, video_name(example, f"video {count}")

    bar = tqdm(total=total, unit="video", desc="evaluating", disable=not progress)
    run_in_batches(prepared(), batch_size, run, bar)
    if not per_video:
        raise ValueError(f"{dataset} has no videos in split '{split}'")
    if loss_targets:
        settings["loss"] = (f"not computed: the data has no {' or '.join(map(repr, missing_fields))} field"
                            if missing_fields else
                            f"the official eval_loss: squared error of the decoded {', '.join(loss_targets)} summed "
                            "over each video's frames, pixels and channels, the mean over videos")  # fmt: skip
    results = {
        "protocol": protocol.name,
        "model": str(model_source),
        "dataset": str(dataset),
        "split": split,
        "settings": {**settings, "preprocessing": f"{type(processor).__name__}.preprocess_examples",
                     "resize": resize_description(processor)},  # fmt: skip
        "num_videos": len(per_video),
        "metrics": mean_metrics(per_video),
        "per_video": per_video,
    }
    if output_dir is not None:
        write_results(Path(output_dir), results, pictures, processor)
    return results


def run_in_batches(items, batch_size: int, run, bar):
    """Call `run` on consecutive lists of `batch_size` items (the last one shorter), advancing the progress `bar`
    by each batch's size, and close it."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            run(batch)
            bar.update(len(batch))
            batch = []
    if batch:
        run(batch)
        bar.update(len(batch))
    bar.close()


def evaluate_prediction(model, processor, model_source, dataset, protocol, max_videos, output_dir, progress) -> dict:
    """ConvS5's video-prediction protocol (`slotssm_hf.evaluation.video_prediction`) over a Moving-MNIST file."""
    import numpy as np
    from tqdm.auto import tqdm

    from .object_discovery import check_frame_size
    from .video_prediction import lpips_metric, moving_mnist_sequences, prediction_metrics

    lpips = lpips_metric()
    per_video = []
    for count, (where, sequence) in enumerate(tqdm(moving_mnist_sequences(dataset), desc="evaluating", unit="video",
                                                   total=max_videos, disable=not progress)):  # fmt: skip
        if max_videos is not None and count >= max_videos:
            break
        pixels = processor.preprocess_examples(sequence)["pixel_values_videos"][0]
        check_frame_size(pixels, model.config, where, resize_description(processor))
        per_video.append({"video": f"sequence {count}", "source": where,
                          **prediction_metrics(model, pixels, protocol, where, lpips)})  # fmt: skip
    if not per_video:
        raise ValueError(f"{dataset} holds no sequences")
    keys = [key for key in per_video[0] if key not in ("video", "source")]
    results = {
        "protocol": protocol.name, "model": str(model_source), "dataset": str(dataset), "split": "test",
        "settings": {"context_frames": protocol.context_frames, "total_frames": protocol.total_frames},
        "num_videos": len(per_video),
        "metrics": {key: float(np.mean([row[key] for row in per_video])) for key in keys},
        "per_video": per_video,
    }  # fmt: skip
    if output_dir is not None:
        write_results(Path(output_dir), results, [], processor)
    return results


def evaluate_classification(model, processor, model_source, dataset, split, protocol, max_images, batch_size,
                            output_dir, progress) -> dict:  # fmt: skip
    """GrootV's image-classification protocol (`slotssm_hf.evaluation.image_classification`): top-1 / top-5 over
    the images of `split`."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from .image_classification import image_examples, label_map, metric_key, official_transform, top_k_hits

    images, total, read_as = image_examples(dataset, split)
    columns = list(images.features) if images.features else images.column_names
    if columns is not None and not {"image", "label"} <= set(columns):
        raise ValueError(f"{dataset}: image classification needs an 'image' and a 'label' column; it has "
                         f"{', '.join(columns) or 'none'}")  # fmt: skip
    mapping, labels_read = label_map((images.features or {}).get("label"), model.config, str(dataset))
    transform, preprocessing = official_transform(processor)
    num_labels = model.config.num_labels
    top_k = tuple(k for k in protocol.top_k if k == 1 or k < num_labels)
    if max_images is not None:
        total = min(total, max_images) if total else max_images
    per_image = []

    def run(batch):
        pixels = torch.stack([pixel for _, _, pixel, _ in batch])
        labels = torch.tensor([label for _, _, _, label in batch])
        hits, ranked = top_k_hits(model, pixels, labels, top_k)
        for (name, where, _, label), hit, best in zip(batch, hits.tolist(), ranked.tolist()):
            row = {"image": name, "source": where, "label": label, "predicted": best}
            row.update({metric_key(k): float(value) for k, value in zip(top_k, hit)})
            per_image.append(row)

    def prepared():
        for count, example in enumerate(images):
            if max_images is not None and count >= max_images:
                return
            where = f"{dataset} (split {split}, image {count})"
            if example.get("image") is None or example.get("label") is None:
                raise ValueError(f"{where}: no 'image' or no 'label'")
            label = int(example["label"])
            if mapping is not None:
                if label not in mapping:
                    raise ValueError(f"{where}: label {label} is not one of the dataset's {len(mapping)} classes")
                label = mapping[label]
            elif not 0 <= label < num_labels:
                raise ValueError(f"{where}: label {label} is not a class of the model (0 to {num_labels - 1}: "
                                 f"{labels_read})")  # fmt: skip
            image = example["image"]
            name = getattr(image, "filename", None) or f"image {count}"
            yield str(name), where, transform(image.convert("RGB")), label

    bar = tqdm(total=total, unit="image", desc="evaluating", disable=not progress)
    run_in_batches(prepared(), batch_size, run, bar)
    if not per_image:
        raise ValueError(f"{dataset} has no images in split '{split}'")
    keys = [metric_key(k) for k in top_k]
    results = {
        "protocol": protocol.name, "model": str(model_source), "dataset": str(dataset), "split": split,
        "settings": {"top_k": list(top_k), "preprocessing": preprocessing, "labels": labels_read, "read_as": read_as},
        "num_images": len(per_image),
        "metrics": {key: float(np.mean([row[key] for row in per_image])) for key in keys},
        "per_image": per_image,
    }  # fmt: skip
    if output_dir is not None:
        write_results(Path(output_dir), results, [], processor)
    return results


def write_results(folder: Path, results: dict, pictures, processor) -> None:
    from ..atomic_files import write_atomically
    from ..training.visualize import pixel_range, save_slot_pictures, to_uint8_frames

    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / RESULTS_FILE, lambda name: Path(name).write_text(json.dumps(results, indent=2) + "\n"))
    mean, std = pixel_range(processor)
    for index, (_, pixels, masks) in enumerate(pictures):
        frames = to_uint8_frames(pixels, mean[: pixels.shape[1]], std[: pixels.shape[1]])
        if frames.shape[-1] == 1:
            frames = frames.repeat(3, axis=-1)
        save_slot_pictures(str(folder / f"slots-{index}"), frames, masks)


def metric_names() -> dict:
    from .image_classification import METRIC_NAMES as CLASSIFICATION
    from .object_discovery import METRIC_NAMES as DISCOVERY
    from .video_prediction import METRIC_NAMES as PREDICTION

    return {**DISCOVERY, **PREDICTION, **CLASSIFICATION}


def counted(results: dict) -> tuple[str, int]:
    """("num_videos" or "num_images", the count) of a protocol's results."""
    key = "num_images" if "num_images" in results else "num_videos"
    return key, results[key]


def results_table(results: dict) -> str:
    names = metric_names()
    key, count = counted(results)
    lines = [f"{results['protocol']} on {results['dataset']} ({results['split']}, {count} {key[4:]})",
             "", "| metric | value |", "|---|---|"]  # fmt: skip
    lines += [f"| {names.get(key, key)} | {value:.4f} |" for key, value in results["metrics"].items()]
    return "\n".join(lines)


def card_entry(results: dict, dataset_id: str, dataset_config: str | None, dataset_name: str | None) -> dict:
    """The entry `--update-card` adds under "evaluations" in the folder's eval_results.json, which
    `hub.model_card.evaluation_results` turns into model-index entries."""
    names = metric_names()
    task_type, task_name = TASKS[results["protocol"]]
    key, count = counted(results)
    return {
        "protocol": results["protocol"],
        "task_type": task_type,
        "task_name": task_name,
        "dataset_id": dataset_id,
        "dataset_name": dataset_name or dataset_id,
        "dataset_config": dataset_config,
        "dataset_split": results["split"],
        key: count,
        "settings": results["settings"],
        "metrics": {key: value for key, value in results["metrics"].items() if value == value},
        "metric_names": {key: names[key] for key in results["metrics"] if key in names},
        "source": "slotssm-hf evaluate",
    }


def update_card(folder: Path, entry: dict) -> None:
    """Add `entry` to `folder`'s eval_results.json (replacing one of the same protocol, dataset, config and split)
    and render its README.md again with the result in the model-index, keeping the card's provenance paragraph."""
    import transformers

    from ..atomic_files import write_atomically
    from ..hub.model_card import provenance_of, render_model_card
    from ..hub.push import PROCESSOR_CONFIGS

    if not (folder / "config.json").is_file():
        raise ValueError(f"--update-card needs MODEL to be a saved folder (with config.json); {folder} is not one")
    path = folder / RESULTS_FILE
    current = json.loads(path.read_text()) if path.is_file() else {}
    same = ("protocol", "dataset_id", "dataset_config", "dataset_split")
    kept = [old for old in current.get("evaluations", []) if any(old.get(k) != entry.get(k) for k in same)]
    current["evaluations"] = [*kept, entry]
    write_atomically(path, lambda name: Path(name).write_text(json.dumps(current, indent=2) + "\n"))
    card = folder / "README.md"
    provenance = provenance_of(card.read_text(errors="replace")) if card.is_file() else None
    config = transformers.AutoConfig.from_pretrained(folder)
    auto_class = HEADS.get(config.model_type, (None, "AutoModelForPreTraining"))[1]
    with __import__("torch").device("meta"):
        model = getattr(transformers, auto_class).from_config(config)
    rendered = render_model_card(model, folder.resolve().name, provenance or "Evaluated with `slotssm-hf evaluate`.",
                                 datasets=[entry["dataset_id"]], eval_results=current,
                                 has_processor=any((folder / name).is_file() for name in PROCESSOR_CONFIGS))  # fmt: skip
    write_atomically(card, lambda name: Path(name).write_text(str(rendered)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="slotssm-hf evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("model", help="a saved folder or Hub model id")
    parser.add_argument("--dataset", required=True,
                        help="a MOVi TFDS folder, a Moving-MNIST .npy, an image folder (GrootV), a saved / exported "
                             "dataset, or a Hub id")  # fmt: skip
    parser.add_argument("--split", default="validation")
    parser.add_argument("--max-videos", "--max-images", dest="max_videos", type=int, default=None,
                        help="evaluate the first N videos (images) only")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-frames", type=int, default=24, help="temporal_crop_or_pad length (official: 24)")
    parser.add_argument("--slice-size", type=int, default=None,
                        help="frames per model call, the state carried across (default: the family's official: SAVi 6, "
                             "STATM-SAVi 24, SlotSSM the whole video)")  # fmt: skip
    parser.add_argument("--max-instances", type=int, default=None,
                        help="sparse_to_dense_annotation's (default: the model's number of boxes, else 23)")
    parser.add_argument("--context-frames", type=int, default=100,
                        help="video prediction: frames given before the rollout (official Moving-MNIST: 100)")
    parser.add_argument("--total-frames", type=int, default=None,
                        help="video prediction: context plus rollout frames (default: each sequence's length)")
    parser.add_argument("--output-dir", default="slotssm-eval")
    parser.add_argument("--num-pictures", type=int, default=4, help="videos to draw slot pictures of")
    parser.add_argument("--seed", type=int, default=0, help="seed of random slot initialisers")
    parser.add_argument("--update-card", action="store_true",
                        help="add the result to MODEL's eval_results.json and model card (model-index)")
    parser.add_argument("--dataset-id", default=None,
                        help="the dataset's Hub id for the card (default: the --dataset name, e.g. movi_a)")
    parser.add_argument("--dataset-config", default=None, help="the dataset config for the card, e.g. 128x128")
    parser.add_argument("--dataset-name", default=None, help="a readable dataset name for the card, e.g. MOVi-A")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from .image_classification import ImageClassificationProtocol
    from .object_discovery import ObjectDiscoveryProtocol
    from .video_prediction import VideoPredictionProtocol

    protocol = ObjectDiscoveryProtocol(num_frames=args.num_frames, slice_size=args.slice_size,
                                       max_instances=args.max_instances)  # fmt: skip
    try:
        import transformers

        import slotssm_hf  # noqa: F401

        model_type = transformers.AutoConfig.from_pretrained(args.model).model_type
        if model_type == "convs5":
            protocol = VideoPredictionProtocol(args.context_frames, args.total_frames)
        elif model_type == "grootv":
            protocol = ImageClassificationProtocol()
        results = evaluate(args.model, args.dataset, args.split, protocol, args.max_videos, args.batch_size,
                           args.output_dir, args.num_pictures, args.seed, progress=not args.no_progress)  # fmt: skip
        print(results_table(results))
        print(f"wrote {Path(args.output_dir) / RESULTS_FILE}")
        if args.update_card:
            dataset_id = args.dataset_id or default_dataset_id(args.dataset)
            entry = card_entry(results, dataset_id, args.dataset_config, args.dataset_name)
            update_card(Path(args.model), entry)
            print(f"added the result to {Path(args.model) / RESULTS_FILE} and {Path(args.model) / 'README.md'}")
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def default_dataset_id(source: str) -> str:
    """A dataset name for the card from a path: the TFDS dataset's name (e.g. movi_a) or the last path part."""
    path = Path(source)
    if is_tfds_folder(path):
        from ..data.tfds import TFDSFolder

        return TFDSFolder(path).name
    return source if not path.exists() else path.resolve().name


if __name__ == "__main__":
    sys.exit(main())
