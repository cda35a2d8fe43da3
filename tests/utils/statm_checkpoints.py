"""Official-layout STATM-SAVi checkpoints: tiny configurations covering every switch and the official parameter
tree (SAVi's, with the spatial-temporal predictor)."""

from savi_checkpoints import CASES, TINY, official_params

from slotssm_hf import STATMConfig

STATM_CASES = {
    "cnn-boxes": TINY,
    "resnet-transformer-multihead-corrector": CASES["resnet-transformer-early-fusion"],
    "memory-of-two-frames-two-iterations": {**TINY, "memory_size": 2, "slot_attention_iterations": 2},
}


def statm_params(config: STATMConfig, seed: int = 0) -> dict:
    """The official STATM-SAVi parameter tree: SAVi's, with `TimeSpaceTransformerBlock2_0` (two attentions, three
    norms, an MLP) as the predictor instead of `TransformerBlock_0`."""
    params = official_params(config, seed)
    block = params.pop("TransformerBlock_0")
    other = official_params(config, seed + 1)["TransformerBlock_0"]  # a second attention and norm, other values
    params["TimeSpaceTransformerBlock2_0"] = {
        "MultiHeadDotProductAttention_0": block["MultiHeadDotProductAttention_0"],
        "MultiHeadDotProductAttention_1": other["MultiHeadDotProductAttention_0"],
        "LayerNorm_0": block["LayerNorm_0"], "LayerNorm_1": other["LayerNorm_0"], "LayerNorm_2": block["LayerNorm_1"],
        "MLP_0": block["MLP_0"],
    }  # fmt: skip
    return params
