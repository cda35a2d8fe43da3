"""Conversion of checkpoints written by the official STATM-SAVi training code (intell-sci-comput/STATM, jax-statm;
the published ones are on the Hugging Face Hub as `Kang-na/STATM`) into `STATMForVideoReconstruction` checkpoints,
without JAX or TensorFlow.

The official code is a fork of SAVi's, and saves the same way (CLU's `MultihostCheckpoint`:
`checkpoints-<host>/ckpt-<n>.flax`, parameters under `optimizer/target`); its parameter tree is SAVi's with the
predictor `TransformerBlock_0` replaced by `TimeSpaceTransformerBlock2_0`. So everything but the predictor goes
through `convert_savi`'s rules, ledger, atomic writing and `--verify` (against `STATMReference`, float64 on the
Flax arrays); the rules below map the predictor:

- `MultiHeadDotProductAttention_0` (created first: the spatial attention across slots) -> `space_attention`,
  `MultiHeadDotProductAttention_1` (the temporal attention over the memory) -> `time_attention`, each `dense_general`
  (query/key/value kernels (in, heads, head_dim), out kernel (heads, head_dim, out));
- `LayerNorm_0` (after the spatial branch), `LayerNorm_1` (after the temporal branch), `LayerNorm_2` (after the
  MLP) -> `space_norm`, `time_norm`, `mlp_norm`;
- `MLP_0/dense_mlp_{0,1}` -> `mlp.layers.{0,1}`.
"""

import sys

from ..models.configuration_statm import VARIANTS, STATMConfig
from .convert_savi import SHARED_RULES, FlaxFamily, convert_savi_checkpoint
from .convert_savi import main as convert_main

_BLOCK = "TimeSpaceTransformerBlock2_0"
PREDICTOR_RULES = [
    *[(rf"{_BLOCK}/MultiHeadDotProductAttention_{i}/(?P<qkv>query|key|value)/(?P<p>kernel|bias)",
       f"savi.predictor.{name}_attention.{{qkv}}_proj.{{p}}", "dense_general")
      for i, name in enumerate(("space", "time"))],
    *[(rf"{_BLOCK}/MultiHeadDotProductAttention_{i}/out/(?P<p>kernel|bias)",
       f"savi.predictor.{name}_attention.o_proj.{{p}}", "dense_general") for i, name in enumerate(("space", "time"))],
    *[(rf"{_BLOCK}/LayerNorm_{i}/(?P<p>scale|bias)", f"savi.predictor.{name}.{{p}}", "norm")
      for i, name in enumerate(("space_norm", "time_norm", "mlp_norm"))],
    (rf"{_BLOCK}/MLP_0/dense_mlp_(?P<i>\d)/(?P<p>kernel|bias)", "savi.predictor.mlp.layers.{i}.{p}", "dense"),
]  # fmt: skip
RULES = [*SHARED_RULES, *PREDICTOR_RULES]

STATM = FlaxFamily(
    "STATM-SAVi", "convert-statm", STATMConfig, VARIANTS, "statm_savi_conditional_small",
    "modeling_statm.STATMForVideoReconstruction", "statm.STATMReference", tuple(RULES),
    "intell-sci-comput/STATM", ("STATMSAVi", "SAVi"), "TimeSpaceTransformerBlock2",
    "License of the weights: the Apache License 2.0, under which the STATM authors publish their checkpoints "
    "(`Kang-na/STATM`) and code.",
)  # fmt: skip


def convert_statm_checkpoint(source, output, variant: str | None = None, overrides: dict | None = None, **kwargs):
    """`convert_savi_checkpoint` for STATM-SAVi: `source` a `ckpt-<n>.flax`, a folder of them (the latest is used)
    or the official work folder; `variant` one of `VARIANTS` (default `statm_savi_conditional_small`)."""
    return convert_savi_checkpoint(source, output, variant, overrides, family=STATM, **kwargs)


def main(argv=None) -> int:
    return convert_main(argv, family=STATM)


__all__ = ["convert_statm_checkpoint", "RULES", "PREDICTOR_RULES", "STATM"]


if __name__ == "__main__":
    sys.exit(main())
