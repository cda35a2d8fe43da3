"""Convert a checkpoint trained with the official SlotSSM code into a slotssm_hf checkpoint.

    python conversion/convert_official_slotssm.py SRC OUT [--verify] [--overwrite]

SRC is an official checkpoint step folder (holding vitencoder/ or cnnencoder/, slotssm/, vitdecoder/ or
sbdecoder/) or a run folder, whose latest checkpoint is used. The same command is `slotssm-hf convert-official`.
"""

import sys

from slotssm_hf.convert_official import main

if __name__ == "__main__":
    sys.exit(main())
