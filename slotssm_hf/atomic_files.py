"""Writing files and folders so that none is ever left half-written; imports only the standard library, so the
torch-free data generators use it too."""

import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def folder_path_problem(path: Path, what: str) -> str | None:
    """Why no folder can be written into at `path`, or None when one is there or can be made: a file stands where a
    folder on its path must be, `path` is a symbolic link to nothing (dangling or looping), or it is a file (`what`
    names the folder expected instead; a file is never replaced)."""
    blocking = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        return f"{path} cannot be created: {blocking} is a file, not a folder"
    if path.is_symlink() and not path.exists():
        return f"{path} is a symbolic link to nothing (dangling or looping); give a folder or a new path"
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a {what}; it is never replaced: choose another one"
    return None


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
    (`folder_path_problem`; the converters with `check_output_path`)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not tempfile.mkdtemp: the folder gets the user's umask instead of mode 0700.
    staging = output.with_name(f".{output.name}.incomplete-{secrets.token_hex(4)}")
    try:
        staging.mkdir()
    except OSError as error:  # name the folder asked for, not the temporary one
        raise OSError(error.errno, error.strerror, str(output)) from error
    try:
        yield staging
        move_into_place(staging, output, log)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
