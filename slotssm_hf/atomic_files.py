"""Writing files and folders so that none is ever left half-written; imports only the standard library, so the
torch-free data generators use it too."""

import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


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


def move_into_place(staging: Path, output: Path, log):
    """Rename the complete `staging` folder to `output`. An existing `output` is first renamed aside, put back if
    the second rename fails, and deleted only once the new folder is in place; failing to delete it is reported,
    not an error, since the new folder itself is complete."""
    if not output.exists():
        staging.rename(output)
        return
    old = output.with_name(f".{output.name}.replaced-{os.getpid()}")
    output.rename(old)
    try:
        staging.rename(output)
    except BaseException:
        old.rename(output)
        raise
    try:
        shutil.rmtree(old)
    except OSError as error:
        log(f"warning: could not delete the replaced checkpoint, left at {old} ({error}); delete it yourself")


@contextmanager
def staged_folder(output: Path, log=print):
    """A new folder beside `output` to write into; when the block completes it is moved into place
    (`move_into_place`), and when the block fails it is deleted, leaving nothing behind. Callers check `output` first
    (the converters with `check_output_path`)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not tempfile.mkdtemp: the folder gets the user's umask instead of mode 0700.
    staging = output.with_name(f".{output.name}.incomplete-{secrets.token_hex(4)}")
    staging.mkdir()
    try:
        yield staging
        move_into_place(staging, output, log)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
