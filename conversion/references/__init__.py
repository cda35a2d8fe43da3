"""Each family's official model evaluated independently of `slotssm_hf.models` (float64 NumPy / torch on the
official parameter layout, or assembled from torch and transformers primitives): the oracles `--verify` and the
tests compare the converted models with."""
