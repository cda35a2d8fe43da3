"""Converters from checkpoints written by each family's official code (`slotssm-hf convert-<family>`), installed as
`slotssm_hf.conversion`: one `convert_<family>` module per family, the rules and command line they share, the Flax
checkpoint reader (no JAX), and `references/`, the official models re-implemented independently as oracles."""
