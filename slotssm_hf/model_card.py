"""Model cards for saved SlotSSM checkpoints, rendered from the templates in `model_cards/`."""

from importlib import resources

from huggingface_hub import ModelCard, ModelCardData

TASK_DESCRIPTIONS = {
    "SlotSSMForVideoReconstruction": "This checkpoint carries the reconstruction head: each frame is decoded back to "
    "pixels from that frame's slots (the official pre-training objective).",
    "SlotSSMModel": "This checkpoint is the backbone: video in, slots per frame out.",
}


def describe(config) -> dict:
    """Template fields that describe the architecture of `config`."""
    if config.encoder_type == "vit":
        encoder = (
            f"ViT, {config.encoder_num_layers} layers of width {config.encoder_hidden_size}, "
            f"patch {config.patch_size}"
        )
    else:
        encoder = (
            f"CNN, {config.encoder_num_layers} residual stages of width {config.encoder_hidden_size}, "
            f"stride {config.cnn_downsampling_ratio}"
        )
    if config.decoder_type == "vit":
        decoder = f"ViT, {config.decoder_num_layers} layers of width {config.decoder_hidden_size}"
    else:
        decoder = f"spatial broadcast from a {config.decoder_initial_size} x {config.decoder_initial_size} grid, alpha masks"
    attention = "inverted (softmax over slots)" if config.use_inverted_attention else "standard (softmax over tokens)"
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


def render_model_card(model, repo_id: str, provenance: str, datasets=None, base_model=None) -> ModelCard:
    """A model card for `model` (a SlotSSM model) to be published as `repo_id`."""
    card_data = ModelCardData(
        library_name="transformers",
        license="mit",
        tags=["slotssm", "video", "object-centric", "state-space-model", "mamba"],
        datasets=datasets,
        base_model=base_model,
    )
    template = resources.files("slotssm_hf.model_cards").joinpath("slotssm.md").read_text()
    return ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        provenance=provenance,
        task_description=TASK_DESCRIPTIONS.get(type(model).__name__, ""),
        num_parameters=f"{sum(p.numel() for p in model.parameters()):,}",
        **describe(model.config),
    )
