"""Stand-in for transformers' tests/generation/test_utils.py, which its source distribution does not ship.

Left out: `GenerationTesterMixin`'s `generate()` tests; no class of this package generates text, and
`ModelTesterMixin` checks that a model that cannot generate does not inherit it.
"""


class GenerationTesterMixin:
    pass
