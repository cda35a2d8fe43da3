"""Training and measuring: the `slotssm-hf train` jobs (`train`, `train_convs5`), their data and collators, metrics,
slot pictures, and the zoo leaderboard (`slotssm-hf benchmark`)."""
