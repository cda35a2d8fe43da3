"""The zoo leaderboard: every object-centric family trained with the same budget, data and seeds, compared on the
same held-out videos (FG-ARI, mIoU, reconstruction MSE, training frames/s, streaming ms/frame). The same as
`slotssm-hf benchmark`; see `slotssm_hf/leaderboard.py` for what each column measures.

Usage: python benchmarks/zoo_leaderboard.py [--steps 600] [--output-dir zoo-leaderboard] [--quick]
"""

import sys

from slotssm_hf.training.leaderboard import command_line

if __name__ == "__main__":
    sys.exit(command_line())
