"""The zoo's one table of model families and their heads.

Everything that needs to know which classes exist reads it: Auto registration (`register_family`, run by
`import slotssm_hf`), the `auto_map` every saved folder carries, model cards, `slotssm-hf train --model/--head`,
and `slotssm-hf push`. A family's named variants (config overrides, as timm's `default_cfgs`) live beside its
config class, as the `VARIANTS` dict of its configuration module. Adding a family is one `Family` entry here plus its
configuration and modeling files.

Classes are named as "module.Class" within `slotssm_hf.models` (the code a saved folder carries), the form
transformers' `auto_map` uses, so this module imports nothing until a family is loaded.
"""

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Head:
    """One model class of a family.

    class_path: "module.Class" within `slotssm_hf.models`.
    auto_class: the transformers Auto class that loads it (also without this package, with trust_remote_code=True);
        None where transformers has no Auto class for the task (the class still ships in every saved folder).
    pipeline_tag: the transformers pipeline (and Hub tag) that runs it, or None.
    task_type, task_name: the Hub task its evaluation results are filed under.
    description, output: what its model card says about it, and how its output reads.
    train_task: its name for `slotssm-hf train --head`, or None when the train job does not train it.
    """

    class_path: str
    auto_class: str | None
    pipeline_tag: str | None
    task_type: str
    task_name: str
    description: str
    output: str
    train_task: str | None = None

    @property
    def class_name(self) -> str:
        return self.class_path.rsplit(".", 1)[1]


@dataclass(frozen=True)
class Family:
    """A model family: its `model_type`, config class, pretrained base class, heads (the backbone first), processor
    (a video processor, or an image processor for an image family), and what its model cards say: license (of the
    code and of converted weights), Hub tags, the template in model_cards/, the function giving the template's
    architecture fields for a config, and further card metadata.
    `describe_path`: "model_card.function" within `slotssm_hf.hub`.
    `train_module`: the module of `slotssm_hf.training` whose `main(argv)` is `slotssm-hf train --model <model_type>`
    (None: no train job)."""

    model_type: str
    config_path: str
    base_path: str
    heads: tuple[Head, ...]
    processor_path: str | None
    license: str
    tags: tuple[str, ...]
    card_template: str
    describe_path: str
    card_metadata: tuple[tuple[str, str], ...] = ()
    train_module: str | None = None

    @property
    def config_class(self):
        return load(self.config_path)

    @property
    def variants(self) -> dict[str, dict]:
        """Named configurations: overrides of the config's defaults."""
        return importlib.import_module(f"{MODELS}.{self.config_path.split('.')[0]}").VARIANTS

    def config(self, variant: str, **overrides):
        """The config of a named variant, with `overrides` on top."""
        if variant not in self.variants:
            raise ValueError(f"{self.model_type} has no variant {variant!r}; its variants: {sorted(self.variants)}")
        return self.config_class(**{**self.variants[variant], **overrides})

    @property
    def processor_auto_class(self) -> str | None:
        """The transformers Auto class that loads the family's processor, or None where it has none."""
        if not self.processor_path:
            return None
        from transformers import BaseVideoProcessor

        videos = issubclass(load(self.processor_path), BaseVideoProcessor)  # itself a kind of image processor
        return "AutoVideoProcessor" if videos else "AutoImageProcessor"

    def auto_map(self) -> dict[str, str]:
        """What a saved folder's config.json maps each Auto class to, so every class of the family loads from any
        saved folder with trust_remote_code=True (transformers itself records only the class that was saved)."""
        entries = {"AutoConfig": self.config_path}
        entries.update({head.auto_class: head.class_path for head in self.heads if head.auto_class})
        return entries

    def train_heads(self) -> dict[str, Head]:
        return {head.train_task: head for head in self.heads if head.train_task}


MODELS = f"{__package__}.models"


def load(path: str, package: str = MODELS):
    """The object at "module.Name" within `package` (by default the model code)."""
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(f"{package}.{module}"), name)


# The Hub task names of the object-centric families' heads.
REPRESENTATION_TASK = "Video object-centric representation"
DISCOVERY_TASK = "Video reconstruction and unsupervised object discovery"


def savi_reconstruction_head(class_path: str) -> Head:
    """The reconstruction head of SAVi and of the families built on its backbone (STATM-SAVi)."""
    return Head(
        class_path, "AutoModelForPreTraining", None, "other", DISCOVERY_TASK,
        "This checkpoint carries the official objective: each frame's target (RGB, flow or depth) is decoded from its "
        "slots with per-slot alpha masks.",
        "outputs.reconstruction, outputs.masks  # decoded targets and per-slot masks",
        train_task="reconstruction",
    )  # fmt: skip


FAMILIES = {
    family.model_type: family
    for family in (
        Family(
            model_type="slotssm",
            config_path="configuration_slotssm.SlotSSMConfig",
            base_path="modeling_slotssm.SlotSSMPreTrainedModel",
            heads=(
                Head(
                    "modeling_slotssm.SlotSSMModel", "AutoModel", None, "other", REPRESENTATION_TASK,
                    "This checkpoint is the backbone: video in, slots per frame out.",
                    "outputs.last_hidden_state  # slots: (batch, frames, slots, width)",
                ),
                Head(
                    "modeling_slotssm.SlotSSMForVideoReconstruction", "AutoModelForPreTraining", None, "other",
                    DISCOVERY_TASK,
                    "This checkpoint carries the reconstruction head: each frame is decoded back to pixels from that "
                    "frame's slots (the official pre-training objective).",
                    "outputs.reconstruction  # (batch, frames, channels, height, width); outputs.last_hidden_state: "
                    "the slots",
                    train_task="reconstruction",
                ),
                Head(
                    "modeling_slotssm.SlotSSMForVideoClassification", "AutoModelForVideoClassification",
                    "video-classification", "video-classification", "Video classification",
                    "This checkpoint carries a classification head on the pooled slots.",
                    "outputs.logits  # (batch, num_labels)",
                    train_task="classification",
                ),
                Head(
                    "modeling_slotssm.SlotSSMForVideoPrediction", None, None, "other", "Next-frame prediction",
                    "This checkpoint carries a next-frame prediction head: entry t predicts frame t + 1 from the slots "
                    "up to t.",
                    "outputs.predictions  # (batch, frames, channels, height, width)",
                    train_task="prediction",
                ),
                Head(
                    "modeling_slotssm.SlotSSMForVideoDepthEstimation", None, None, "depth-estimation",
                    "Per-frame dense prediction",
                    "This checkpoint carries a dense head predicting a per-pixel map (such as depth) for every frame.",
                    "outputs.predicted_depth  # (batch, frames, num_dense_channels, height, width)",
                ),
            ),
            processor_path="video_processing_slotssm.SlotSSMVideoProcessor",
            license="mit",
            tags=("slotssm", "video", "object-centric", "state-space-model", "mamba"),
            card_template="slotssm.md",
            describe_path="model_card.describe_slotssm",
            train_module="train",
        ),
        Family(
            model_type="savi",
            config_path="configuration_savi.SAViConfig",
            base_path="modeling_savi.SAViPreTrainedModel",
            heads=(
                Head(
                    "modeling_savi.SAViModel", "AutoModel", None, "other", REPRESENTATION_TASK,
                    "This checkpoint is the backbone: video (and first-frame boxes) in, corrected and predicted slots "
                    "per frame out.",
                    "outputs.last_hidden_state  # corrected slots: (batch, frames, slots, slot_size)",
                ),
                savi_reconstruction_head("modeling_savi.SAViForVideoReconstruction"),
            ),
            processor_path="video_processing_savi.SAViVideoProcessor",
            license="apache-2.0",
            tags=("savi", "video", "object-centric", "slot-attention"),
            card_template="savi.md",
            describe_path="model_card.describe_savi",
            train_module="train",
        ),
        Family(
            model_type="grootv",
            config_path="configuration_grootv.GrootVConfig",
            base_path="modeling_grootv.GrootVPreTrainedModel",
            heads=(
                Head(
                    "modeling_grootv.GrootVModel", "AutoModel", "image-feature-extraction", "image-feature-extraction",
                    "Image feature extraction",
                    "This checkpoint is the backbone: an image in, four levels of feature maps and a pooled feature out.",
                    "outputs.pooler_output  # (batch, channels); outputs.last_hidden_state: the last feature map",
                ),
                Head(
                    "modeling_grootv.GrootVForImageClassification", "AutoModelForImageClassification",
                    "image-classification", "image-classification", "Image classification",
                    "This checkpoint carries the ImageNet-1k classification head.",
                    "outputs.logits  # (batch, num_labels)",
                ),
            ),
            processor_path="image_processing_grootv.GrootVImageProcessor",
            license="other",
            tags=("grootv", "state-space-model", "timm", "image-classification"),
            card_template="grootv.md",
            describe_path="model_card.describe_grootv",
        ),
        Family(
            model_type="statm",
            config_path="configuration_statm.STATMConfig",
            base_path="modeling_statm.STATMPreTrainedModel",
            heads=(
                Head(
                    "modeling_statm.STATMModel", "AutoModel", None, "other", REPRESENTATION_TASK,
                    "This checkpoint is the backbone: video (and first-frame boxes) in, corrected and predicted slots "
                    "per frame out, the predictions read from a memory of every earlier frame's slots.",
                    "outputs.last_hidden_state  # corrected slots: (batch, frames, slots, slot_size)",
                ),
                savi_reconstruction_head("modeling_statm.STATMForVideoReconstruction"),
            ),
            # SAVi's data convention (frames in [0, 1], first-frame boxes): the same processor.
            processor_path="video_processing_savi.SAViVideoProcessor",
            license="apache-2.0",
            tags=("statm", "savi", "video", "object-centric", "slot-attention"),
            card_template="statm.md",
            describe_path="model_card.describe_statm",
            train_module="train",
        ),
        Family(
            model_type="convs5",
            config_path="configuration_convs5.ConvS5Config",
            base_path="modeling_convs5.ConvS5PreTrainedModel",
            heads=(
                Head(
                    "modeling_convs5.ConvS5Model", "AutoModel", None, "other", "Video representation",
                    "This checkpoint is the backbone: frames in, the ConvS5 layers' feature maps per frame out.",
                    "outputs.last_hidden_state  # (batch, frames, hidden_size, latent_size, latent_size)",
                ),
                Head(
                    "modeling_convs5.ConvS5ForVideoPrediction", "AutoModelForPreTraining", None, "other",
                    "Video prediction",
                    "This checkpoint predicts the next frame (teacher-forced training; `rollout` generates).",
                    "outputs.predictions  # (batch, frames, channels, height, width) in [-1, 1]",
                ),
            ),
            processor_path="video_processing_convs5.ConvS5VideoProcessor",
            license="other",
            tags=("convs5", "video", "video-prediction", "state-space-model"),
            card_template="convs5.md",
            describe_path="model_card.describe_convs5",
            # The official weights are under NVIDIA's source code license: non-commercial use only.
            card_metadata=(
                ("license_name", "nvidia-source-code-license-nc"),
                ("license_link", "https://github.com/NVlabs/ConvSSM/blob/main/LICENSE"),
            ),
            train_module="train_convs5",
        ),
    )
}


def family_of(model_type: str) -> Family:
    if model_type not in FAMILIES:
        raise ValueError(f"model_type {model_type!r} is not a family of this package; its families: {sorted(FAMILIES)}")
    return FAMILIES[model_type]


def head_of(class_name: str) -> tuple[Family, Head]:
    """The family and head of a model class name (e.g. "SlotSSMForVideoClassification")."""
    for family in FAMILIES.values():
        for head in family.heads:
            if head.class_name == class_name:
                return family, head
    raise ValueError(f"{class_name} is not a model class of this package")


def register_family(family: Family):
    """Register the family's config, heads and processor with the transformers Auto classes (idempotently), and make
    every saved folder carry the model code and the whole family's auto_map."""
    import transformers

    config_class = family.config_class
    transformers.AutoConfig.register(family.model_type, config_class, exist_ok=True)
    config_class.register_for_auto_class()
    for head in family.heads:
        if head.auto_class:
            model_class = load(head.class_path)
            getattr(transformers, head.auto_class).register(config_class, model_class, exist_ok=True)
            model_class.register_for_auto_class(head.auto_class)
    load(family.base_path).family_auto_map = family.auto_map()
    if family.processor_path:
        processor_class = load(family.processor_path)
        if family.processor_auto_class == "AutoImageProcessor":
            transformers.AutoImageProcessor.register(
                config_class, image_processor_classes={"torchvision": processor_class}, exist_ok=True
            )
        else:
            transformers.AutoVideoProcessor.register(config_class, video_processor_class=processor_class, exist_ok=True)
        processor_class.register_for_auto_class()
