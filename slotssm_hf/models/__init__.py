"""The model code: exactly what a saved folder carries for `trust_remote_code=True`.

transformers copies a model file and the files it imports with a single-dot relative import from the same folder
(`from .sibling import name`), so this folder stays flat and its modules import only their siblings that way, and
nothing heavy at the top (timm, PyAV and the CUDA kernels are imported inside the functions that need them).
Tooling (`slotssm_hf.conversion`, `.training`, `.synthetic`, `.hub`) imports this code, never the other way round.
"""
