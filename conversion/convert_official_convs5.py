"""Convert a checkpoint of the official ConvS5 training (NVlabs/ConvSSM, Flax) into a slotssm_hf checkpoint.

    python conversion/convert_official_convs5.py SRC OUT [--verify] [--overwrite] [--image-size 64] [--no-clip-eigs]

SRC is a `checkpoint_<step>` file or a folder of them (the highest step is used); no JAX is needed. The same command
is `slotssm-hf convert-convs5`. Converted official weights are for non-commercial use only (NVIDIA's source code
license).
"""

import sys

from slotssm_hf.convert_convs5 import main

if __name__ == "__main__":
    sys.exit(main())
