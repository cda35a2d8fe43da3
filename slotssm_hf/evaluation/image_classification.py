"""Image classification, the protocol of GrootV's ImageNet-1k results (EasonXiao-888/GrootVL,
`GrootV/classification/main.py` `validate` and `dataset/build.py` `build_transform`): top-1 and top-5 accuracy over
every image of the evaluation split, each image through the official evaluation transform.

The protocol, step by step:

1. Each image is read as RGB (torchvision's `ImageFolder` loader: `Image.convert("RGB")`) and goes through the
   official evaluation transform, whose sizes and interpolation are the saved image processor's (the converted
   folder's `preprocessor_config.json`, written from the checkpoint's run configuration): for a ConvNeXt processor
   (`ConvNextImageProcessor`, GrootV's built on it) `transforms.Resize(int(shortest_edge / crop_pct), interpolation)`
   of the short side and `transforms.CenterCrop(shortest_edge)` (from 384 px, a square resize, as that processor
   does), for a processor resizing to a fixed height and width `transforms.Resize((height, width))`; then `ToTensor`
   and `Normalize(mean, std)`. The transform is torchvision's itself on the PIL image, as the official code runs it,
   rather than the processor's own call: transformers' image processors place the centre crop at
   floor((size - crop) / 2) where torchvision rounds half to even (one pixel off the official crop for about a
   quarter of non-square images), and their default backend resizes tensors rather than PIL images (values up to
   ~0.03 apart after normalisation). Any other kind of processor is applied as it is.
2. The model's logits; an image counts for top-k when its label is among the k largest (`torch.topk`; top-5 is
   reported when the model has more than 5 classes).
3. Labels are the dataset's `label` column. With class names (a `ClassLabel`, e.g. an imagefolder's sub-folder
   names) they are matched to the model's `config.id2label` by name; ImageNet synset ids (n01440764, the folder
   names of the ImageNet validation set) are matched through timm's ImageNet-1k table when the model carries its
   class descriptions. A class name the model does not know is refused, naming it. Without names (or when the model
   has only transformers' placeholder names LABEL_0, ...) a label is the model's class index, and an index outside
   the model's classes is refused.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import torch

METRIC_NAMES = {"accuracy": "Top-1 accuracy", "top_5_accuracy": "Top-5 accuracy"}
# PILImageResampling's values (Pillow's filter numbers) -> torchvision's InterpolationMode names
INTERPOLATIONS = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}
SYNSET = re.compile(r"n\d{8}")
TRAIN_FOLDERS = ("train", "training")  # the folder names datasets' imagefolder reads as the train split


@dataclass
class ImageClassificationProtocol:
    """top_k: the accuracies reported (a k is left out when the model has no more than k classes: it would be 1)."""

    top_k: tuple = (1, 5)
    name: str = "image-classification"


def metric_key(k: int) -> str:
    return "accuracy" if k == 1 else f"top_{k}_accuracy"


def official_transform(processor):
    """(the transform PIL image -> (3, H, W) float32, its description) from the saved image processor's settings
    (see the module docstring); processors of other kinds are applied as they are."""
    from torchvision import transforms

    size = dict(getattr(processor, "size", None) or {})
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    interpolation = getattr(processor, "resample", None)
    plain = (getattr(processor, "do_rescale", True) and abs(getattr(processor, "rescale_factor", 1 / 255) - 1 / 255)
             < 1e-12 and interpolation is not None and int(interpolation) in INTERPOLATIONS)  # fmt: skip
    resize = None
    # ConvNeXt's processor of either backend (ConvNextImageProcessor, ...Pil), or one built on it (GrootV's).
    convnext = any(cls.__name__.startswith("ConvNextImageProcessor") for cls in type(processor).__mro__)
    if plain and convnext and size.get("shortest_edge"):
        edge = size["shortest_edge"]
        if edge < 384:
            resize = [("Resize", int(edge / processor.crop_pct)), ("CenterCrop", edge)]
        else:
            resize = [("Resize", (edge, edge))]
    elif plain and size.get("height") and size.get("width") and not getattr(processor, "do_center_crop", False):
        resize = [("Resize", (size["height"], size["width"]))]
    if resize is None:

        def apply(image):
            return processor(images=image, return_tensors="pt")["pixel_values"][0]

        return apply, f"{type(processor).__name__} as it is"
    mode = getattr(transforms.InterpolationMode, INTERPOLATIONS[int(interpolation)])
    steps = [transforms.Resize(value, interpolation=mode) if name == "Resize" else transforms.CenterCrop(value)
             for name, value in resize]  # fmt: skip
    steps.append(transforms.ToTensor())
    described = [f"{name}({value}{', ' + mode.value if name == 'Resize' else ''})" for name, value in resize]
    described.append("ToTensor")
    if getattr(processor, "do_normalize", True) and mean is not None:
        steps.append(transforms.Normalize(list(mean), list(std)))
        described.append(f"Normalize({[round(m, 4) for m in mean]}, {[round(s, 4) for s in std]})")
    compose = transforms.Compose(steps)

    def apply(image):
        return compose(image)

    return apply, " -> ".join(described) + f" (torchvision, from the saved {type(processor).__name__})"


def label_map(label_feature, config, source: str):
    """(the model class of each dataset label as a dict, or None to read labels as model indices; how labels are
    mapped). Refuses, naming them, dataset class names the model does not know."""
    names = list(getattr(label_feature, "names", None) or [])
    model_names = [str(config.id2label[index]) for index in range(config.num_labels)]
    placeholders = all(name == f"LABEL_{index}" for index, name in enumerate(model_names))
    if not names or names == [str(index) for index in range(len(names))]:
        return None, "labels are the model's class indices (the dataset has no class names)"
    if placeholders:
        return None, "labels are the model's class indices (the model has no class names: LABEL_0, ...)"
    if names == model_names[: len(names)]:
        return {index: index for index in range(len(names))}, "by class name (the model's order)"
    lookup = {}
    for index, name in enumerate(model_names):
        lookup.setdefault(name, []).append(index)
    how = "by class name"
    if all(SYNSET.fullmatch(name) for name in names) and len(model_names) == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        if model_names == list(info.label_descriptions()):
            lookup = {synset: [index] for index, synset in enumerate(info.label_names())}
            how = "by ImageNet synset id (timm's ImageNet-1k table)"
    unknown = [name for name in names if name not in lookup]
    if unknown:
        shown = ", ".join(repr(name) for name in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10
                                                                    else "")  # fmt: skip
        known = ", ".join(repr(name) for name in model_names[:5]) + (", ..." if len(model_names) > 5 else "")
        raise ValueError(f"{source}: class names the model does not know: {shown} (the model's {len(model_names)} "
                         f"classes, config.id2label: {known})")  # fmt: skip
    ambiguous = [name for name in names if len(lookup[name]) > 1]
    if ambiguous:
        raise ValueError(f"{source}: class names the model gives to several classes: "
                         f"{', '.join(map(repr, ambiguous))} (config.id2label)")  # fmt: skip
    return {index: lookup[name][0] for index, name in enumerate(names)}, how


def count_images(data_files) -> int:
    """How many of `data_files` (an imagefolder split's files) are images."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    extensions = {extension.lower() for extension in ImageFolder.EXTENSIONS}
    return sum(Path(str(name)).suffix.lower() in extensions for name in data_files)


def image_examples(source: str, split: str):
    """(dataset, total or None, how it was read) for `split` of `source`: an imagefolder (a folder of class
    sub-folders, or of split folders holding them; a folder without split folders is the split asked for), a
    `save_to_disk` folder, or anything `datasets.load_dataset` reads (a Hub id). Read streaming, so nothing is copied
    to the datasets cache."""
    import datasets

    path = Path(source)
    if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            if split not in dataset:
                raise ValueError(f"{source} has no split '{split}'; its splits: {', '.join(dataset)}")
            dataset = dataset[split]
        return dataset, len(dataset), "datasets.load_from_disk"
    if path.is_dir():
        from datasets.data_files import EmptyDatasetError

        try:
            builder = datasets.load_dataset_builder("imagefolder", data_dir=str(path))
        except EmptyDatasetError:
            builder = None
        files = dict(builder.config.data_files or {}) if builder is not None else {}
        counts = {str(name): count_images(names) for name, names in files.items()}
        if not any(counts.values()):
            raise ValueError(f"{source} holds no images: an imagefolder is a folder of class sub-folders holding the "
                             "images (or of split folders, e.g. val/, holding those)")  # fmt: skip
        # Without split folders, datasets names the whole folder "train": it is the split asked for.
        train_folders = [child for child in path.iterdir() if child.is_dir() and child.name.lower() in TRAIN_FOLDERS]
        if list(counts) == ["train"] and not train_folders:
            chosen, read_as = "train", "imagefolder (no split folders: all its images)"
        elif split in counts:
            chosen, read_as = split, f"imagefolder (split '{split}')"
        else:
            raise ValueError(f"{source} has no split '{split}'; its splits: {', '.join(counts)}")
        return builder.as_streaming_dataset(split=chosen), counts[chosen], read_as
    return datasets.load_dataset(source, split=split, streaming=True), None, "datasets.load_dataset"


@torch.no_grad()
def top_k_hits(model, pixel_values, labels, top_k) -> tuple[torch.Tensor, torch.Tensor]:
    """(hits (batch, len(top_k)) bool: whether each label is among the k largest logits, the top max(k) classes)."""
    logits = model(pixel_values=pixel_values).logits
    ranked = logits.topk(min(max(top_k), logits.shape[-1]), dim=-1).indices
    hits = torch.stack([(ranked[:, :k] == labels[:, None]).any(dim=-1) for k in top_k], dim=-1)
    return hits, ranked


__all__ = ["METRIC_NAMES", "ImageClassificationProtocol", "image_examples", "label_map", "official_transform",
           "top_k_hits"]  # fmt: skip
