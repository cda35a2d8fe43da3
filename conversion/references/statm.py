"""A float64 STATM-SAVi evaluated directly on an official Flax parameter tree, for checking conversions: SAVi's
reference (`savi_reference.py`, which shares no code with the model) with the official `TimeSpaceTransformerBlock2`
predictor written out from its equations on the Flax names."""

import torch

from .savi import SAViReference


class STATMReference(SAViReference):
    """As `SAViReference`; the predictor reads the stacked corrected slots of every frame so far (the official
    `STATMSAVi` loop), cut to the last `memory_size` frames when the config sets one."""

    def predict(self, slots, history):
        cfg, root = self.config, "TimeSpaceTransformerBlock2_0"
        heads = cfg.predictor_num_heads
        if cfg.memory_size is not None:
            history = history[-cfg.memory_size :]
        b, k, d = slots.shape
        xs = slots + self.attention(slots, f"{root}/MultiHeadDotProductAttention_0", heads)
        xs = self.layer_norm(xs, f"{root}/LayerNorm_0")
        # 'b t o d -> (b o) t d': one sequence per slot, its history; the query is the slot now.
        buffer = torch.stack(history, dim=1).permute(0, 2, 1, 3).reshape(b * k, len(history), d)
        xt = self.attention(slots.reshape(b * k, 1, d), f"{root}/MultiHeadDotProductAttention_1", heads, buffer)
        xt = self.layer_norm(xt.reshape(b, k, d) + slots, f"{root}/LayerNorm_1")
        y = xt + xs
        return self.layer_norm(self.mlp(y, f"{root}/MLP_0", 2) + y, f"{root}/LayerNorm_2")


__all__ = ["STATMReference"]
