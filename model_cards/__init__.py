"""Model card templates, shipped inside the package as `slotssm_hf.model_cards`."""
