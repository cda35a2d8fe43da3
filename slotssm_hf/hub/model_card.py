"""Model cards for saved checkpoints of every family, rendered from the templates in `model_cards/` with the fields
that each family's `describe_<family>` function gives for a config."""

import math
import re
from importlib import resources

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..registry import Head, head_of, load


# Metric keys of `Trainer.evaluate` that measure the machine, not the model.
TIMING_METRICS = ("runtime", "samples_per_second", "steps_per_second", "epoch")
METRIC_NAMES = {"loss": "Loss", "fg_ari": "FG-ARI", "miou": "mIoU", "accuracy": "Accuracy"}
PROVENANCE = re.compile(r"<!-- provenance -->\n(.*?)\n<!-- /provenance -->", flags=re.DOTALL)


def describe_slotssm(config) -> dict:
    """Template fields that describe the architecture of a SlotSSM `config`."""
    if config.encoder_type == "vit":
        encoder = (
            f"ViT, {config.encoder_num_layers} layers of width {config.encoder_hidden_size}, "
            f"patch {config.patch_size}"
        )
    elif config.encoder_type == "cnn":
        encoder = (
            f"CNN, {config.encoder_num_layers} residual stages of width {config.encoder_hidden_size}, "
            f"stride {config.cnn_downsampling_ratio}"
        )
    else:
        frozen = "frozen" if config.timm_frozen else "trained"
        encoder = f"timm `{config.timm_model_name}` ({frozen}), feature map {config.timm_feature_index}"
    if config.decoder_type == "vit":
        decoder = f"ViT, {config.decoder_num_layers} layers of width {config.decoder_hidden_size}"
    else:
        decoder = f"spatial broadcast from a {config.decoder_initial_size} x {config.decoder_initial_size} grid, alpha masks"
    attention = "inverted (softmax over slots)" if config.use_inverted_attention else "standard (softmax over tokens)"
    if not config.cnn_position_in_keys:
        attention += ", keys without the position embedding"
    if config.num_slot_attention_iterations > 1:
        attention += f", {config.num_slot_attention_iterations} rounds in the first block"
    fields = {name: getattr(config, name) for name in (
        "image_size", "num_channels", "num_slots", "hidden_size", "num_hidden_layers", "mamba_version",
        "mamba_d_state", "mamba_expand",
    )}  # fmt: skip
    return {
        **fields,
        "encoder_description": encoder,
        "decoder_description": decoder,
        "cross_attention_description": f"{attention}, {config.cross_attention_num_heads} head(s)",
    }


def describe_savi(config) -> dict:
    """Template fields that describe the architecture of a SAVi `config`."""
    if config.encoder_type == "cnn":
        encoder = f"CNN {config.encoder_features}, strides {config.encoder_strides}"
    else:
        encoder = f"ResNet (stages {config.resnet_stage_sizes}, GroupNorm)"
    if config.encoder_transformer_layers:
        encoder += f" + {config.encoder_transformer_layers}-layer transformer"
    initializer = {
        "conditional": f"MLP on the first-frame {'box centres' if config.center_of_mass else 'boxes'}",
        "learned": "learned slots",
        "gaussian": "Gaussian slots",
    }[config.initializer_type]
    decoder = f"spatial broadcast from {config.decoder_broadcast_size} x {config.decoder_broadcast_size}, alpha masks"
    if config.decoder_slot_readout:
        decoder += ", plus each slot's own linear readout (not in the official model)"
    fields = {name: getattr(config, name) for name in (
        "num_slots", "slot_size", "image_size", "slot_attention_qkv_size", "slot_attention_iterations",
        "predictor_num_heads", "predictor_mlp_size", "num_boxes",
    )}  # fmt: skip
    return {
        **fields,
        "targets": ", ".join(config.targets),
        "encoder_description": encoder,
        "initializer_description": initializer,
        "decoder_description": decoder,
    }


# ImageNet-1k top-1 at 224 px of the published GrootV variants (the authors' numbers).
GROOTV_PUBLISHED_TOP1 = {"tiny": 83.4, "small": 84.2, "base": 84.8}


def describe_grootv(config) -> dict:
    """Template fields that describe the architecture of a GrootV `config`, and which published variant it is."""
    from ..models.configuration_grootv import VARIANTS

    size = next(
        (name for name, fields in VARIANTS.items()
         if fields["embed_dim"] == config.embed_dim and fields["depths"] == config.depths),
        None,
    )  # fmt: skip
    return {
        "variant": f"GrootV-{size[0].upper()}" if size else "GrootV",
        "timm_size": size or "tiny",
        "accuracy": f"{GROOTV_PUBLISHED_TOP1[size]}%" if size else "not published",
        "embed_dim": config.embed_dim,
        "depths": "-".join(map(str, config.depths)),
    }


def describe_statm(config) -> dict:
    """Template fields that describe the architecture of a STATM-SAVi `config`: SAVi's, plus the memory."""
    memory = "every frame since the start" if config.memory_size is None else f"the last {config.memory_size} frames"
    return {
        **describe_savi(config),
        "predictor_qkv_size": config.predictor_qkv_size,
        "memory_description": memory,
    }


def describe_convs5(config) -> dict:
    """Template fields that describe the architecture of a ConvS5 `config`."""
    return {name: getattr(config, name) for name in (
        "image_size", "num_channels", "hidden_size", "num_hidden_layers", "state_size", "latent_size", "encoder_depths",
    )}  # fmt: skip


def model_metrics(results: dict, prefix: str) -> dict[str, float]:
    """The finite model metrics among `Trainer.evaluate` results, keyed without `prefix` ("eval_": {"loss": ...})."""
    metrics = {key.removeprefix(prefix): value for key, value in results.items() if key.startswith(prefix)}
    return {
        key: value for key, value in metrics.items()
        if key not in TIMING_METRICS and isinstance(value, (int, float)) and math.isfinite(value)
    }  # fmt: skip


def evaluation_results(eval_results: dict, head: Head, dataset: str | None) -> list[EvalResult]:
    """The model-index entries of `eval_results` (a folder's eval_results.json): the train job's metrics of the
    trained model ({"untrained": {"untrained_loss": ...}, "trained": {"eval_loss": ...}}, filed under `head`'s task
    and `dataset`), then every protocol result that `slotssm-hf evaluate --update-card` added under "evaluations"
    (each with its own task, dataset id, config and split)."""
    results = [
        EvalResult(
            task_type=head.task_type,
            task_name=head.task_name,
            dataset_type=dataset or "custom",
            dataset_name=dataset or "held-out split of the training data",
            metric_type=key,
            metric_name=METRIC_NAMES.get(key, key),
            metric_value=value,
        )
        for key, value in model_metrics(eval_results.get("trained", {}), "eval_").items()
    ]
    for entry in eval_results.get("evaluations", []):
        names = entry.get("metric_names", {})
        for key, value in entry["metrics"].items():
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            results.append(EvalResult(
                task_type=entry["task_type"],
                task_name=entry.get("task_name"),
                dataset_type=entry["dataset_id"],
                dataset_name=entry.get("dataset_name") or entry["dataset_id"],
                dataset_config=entry.get("dataset_config"),
                dataset_split=entry.get("dataset_split"),
                metric_type=key,
                metric_name=names.get(key, METRIC_NAMES.get(key, key)),
                metric_value=value,
                metric_config=entry.get("protocol"),
            ))  # fmt: skip
    return results


def evaluation_table(eval_results: dict) -> str:
    """Markdown rows `| metric | untrained | trained |` for the metrics the trained model has."""
    trained = model_metrics(eval_results.get("trained", {}), "eval_")
    untrained = model_metrics(eval_results.get("untrained", {}), "untrained_")
    return "\n".join(
        f"| {METRIC_NAMES.get(key, key)} | {untrained[key]:.4g} | {value:.4g} |" if key in untrained
        else f"| {METRIC_NAMES.get(key, key)} | | {value:.4g} |"
        for key, value in trained.items()
    )  # fmt: skip


def provenance_of(card_text: str) -> str | None:
    """The provenance paragraph of a card rendered by `render_model_card`, or None."""
    found = PROVENANCE.search(card_text)
    return found.group(1) if found else None


def render_model_card(model, repo_id: str, provenance: str, datasets=None, base_model=None, eval_results=None,
                      has_processor: bool = False) -> ModelCard:  # fmt: skip
    """A model card for `model` (any model class of the registry; the meta device is enough) to be published as
    `repo_id`, from its family's template and description (registry.Family.card_template, .describe_path).

    provenance: a paragraph on where the weights come from (training run, conversion).
    datasets, base_model: Hub ids for the metadata. eval_results: the folder's eval_results.json contents (the train
    job's metrics and `slotssm-hf evaluate --update-card`'s protocol results), which become the card's
    `model-index`, and the train job's an evaluation table. has_processor: whether a processor (a video processor,
    or GrootV's image processor) is published beside the model (the card then shows how to load it).
    """
    class_name = type(model).__name__
    family, head = head_of(class_name)
    model_name = repo_id.split("/")[-1]
    datasets = [datasets] if isinstance(datasets, str) else datasets
    results = evaluation_results(eval_results, head, (datasets or [None])[0]) if eval_results else None
    if results and not datasets:
        datasets = list(dict.fromkeys(entry["dataset_id"] for entry in eval_results.get("evaluations", []))) or None
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=head.pipeline_tag,
        license=family.license,
        tags=list(family.tags),
        **dict(family.card_metadata),
        datasets=datasets,
        base_model=base_model,
        model_name=model_name if results else None,
        eval_results=results or None,
    )
    template = resources.files("slotssm_hf.model_cards").joinpath(family.card_template).read_text()
    return ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=model_name,
        repo_id=repo_id,
        provenance=provenance,
        model_class=class_name,
        auto_class=head.auto_class,
        output=head.output,
        has_processor=has_processor,
        evaluation_rows=evaluation_table(eval_results) if eval_results else "",
        task_description=head.description,
        num_parameters=f"{sum(p.numel() for p in model.parameters()):,}",
        **load(family.describe_path, __package__)(model.config),
    )
