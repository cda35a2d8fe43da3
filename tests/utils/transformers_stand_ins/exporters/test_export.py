"""Stand-in for transformers' tests/exporters/test_export.py, which its source distribution does not ship.

Left out: the `torch.export` / ExecuTorch tests that `ExportTesterMixin` adds to every model test.
"""


class ExportTesterMixin:
    pass
