"""Writing files so that none is ever left half-written; imports only the standard library, so the torch-free data
generators use it too."""

import os
import tempfile


def write_atomically(path, write):
    """`write(name)` fills a temporary file beside `path`, which is renamed to `path` once complete (and removed if
    writing fails), so `path` is never left half-written."""
    folder, suffix = os.path.dirname(os.path.abspath(path)), os.path.splitext(path)[1]
    with tempfile.NamedTemporaryFile(dir=folder, suffix=suffix, delete=False) as handle:
        pass
    try:
        write(handle.name)
        os.replace(handle.name, path)
    except BaseException:
        os.unlink(handle.name)
        raise


__all__ = ["write_atomically"]
