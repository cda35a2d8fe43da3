"""`slotssm-hf tfds-export`: a TFDS-prepared folder (MOVi or any other this reader reads) as an Arrow or Parquet copy
that `datasets` loads directly (`load_from_disk` / `load_dataset`) and that can live on the Hub as a normal dataset.

    slotssm-hf tfds-export movi_a/128x128/1.0.0 movi_a_128 --format parquet
    slotssm-hf tfds-export movi_a/128x128 movi_a_128_meaning --movi --columns video segmentations boxes
    slotssm-hf tfds-export movi_a/128x128 movi_a_128 --format parquet --push-to-hub you/movi_a_128

The copy holds the decoded content (images as arrays, depth and flow still uint16 as stored: `load_movi` on the copy
applies MOVi's meaning), or with `--movi` what `load_movi` yields. It is written under a temporary name beside
OUTPUT and renamed when complete, so OUTPUT is never half-written. Every failure is one `error:` line on stderr: exit 2
for input that cannot be read (a missing split, a corrupt shard, an unsupported feature), 1 for anything else.
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from ..atomic_files import staged_folder
from .movi import MAX_INSTANCES, MOVi, generate_movi_examples
from .tfds import TFDSFolder, TFDSFormatError, generate_examples
from .tfrecord import TFRecordError

FORMATS = ("arrow", "parquet")
INPUT_ERRORS = (TFDSFormatError, TFRecordError)


class ExportError(ValueError):
    """An export refused before anything is written (bad output path, unknown format)."""


def _check_output(source: Path, output: Path, overwrite: bool) -> None:
    source_path, output_path = source.resolve(), output.resolve()
    if output_path == source_path or source_path in output_path.parents or output_path in source_path.parents:
        raise ExportError(f"the output {output} and the source {source} overlap; write the copy outside the source")
    if output.exists() and not output.is_dir():
        raise ExportError(f"{output} is a file, not a folder; it is never replaced: choose another output")
    if output.exists() and not overwrite:
        raise ExportError(f"{output} already exists; pass --overwrite to replace it")


def _parquet_shards(dataset, max_shard_size: int) -> int:
    """How many Parquet files keep each under `max_shard_size` bytes (of Arrow data; Parquet compresses it)."""
    return max(1, min(len(dataset), -(-dataset.data.nbytes // max_shard_size)))


def export(source, output, splits=None, format: str = "arrow", columns=None, movi: bool = False,
           max_instances: int = MAX_INSTANCES, push_to_hub: str | None = None, private: bool = False,
           overwrite: bool = False, num_proc: int | None = None, max_shard_size: str | int = "500MB",
           log=print) -> Path:  # fmt: skip
    """Write the `splits` (all when None) of the TFDS folder `source` to `output` as `format`:

    - "arrow": `DatasetDict.save_to_disk` (read back with `datasets.load_from_disk(output)`);
    - "parquet": `output/data/<split>-<i>-of-<n>.parquet`, the Hub's layout (`datasets.load_dataset(output)`),
      features (ClassLabel names, array shapes) kept in the files' schema metadata.

    `columns` picks features by path; `movi` writes MOVi's meaning (`load_movi`'s output) instead of the stored
    content; `push_to_hub` also pushes the copy to that dataset repo. Returns `output`."""
    import datasets
    from datasets.exceptions import DatasetGenerationError
    from datasets.utils.py_utils import convert_file_size_to_int

    source, output = Path(source), Path(output)
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    reader = MOVi(source, columns, max_instances) if movi else TFDSFolder(source)
    folder = reader.tfds if movi else reader
    splits = list(splits or folder.splits)
    for split in splits:
        folder.shards(split)  # a missing split or shard fails here, before anything is written
    _check_output(folder.folder, output, overwrite)
    if movi:
        features = reader.features()
    else:
        selected = tuple(folder.select(columns))
        features = folder.hf_features(columns)
    output.resolve().parent.mkdir(parents=True, exist_ok=True)
    # datasets' Arrow cache of the generated splits, beside the output (same disk), deleted once written
    cache = Path(tempfile.mkdtemp(prefix=f".{output.name}.cache-", dir=output.resolve().parent))
    try:
        with staged_folder(output, log=log) as staging:
            built = {}
            for split in splits:
                log(f"reading {folder.folder} split '{split}' ({folder.num_examples(split) or '?'} examples)")
                if movi:
                    generator, gen_kwargs = generate_movi_examples, reader.generator_kwargs(split)
                else:
                    generator, gen_kwargs = generate_examples, {"shards": folder.shards(split), "columns": selected}
                try:
                    dataset = datasets.Dataset.from_generator(
                        generator, features=features, gen_kwargs=gen_kwargs, cache_dir=str(cache),
                        num_proc=num_proc, split=datasets.NamedSplit(split),
                    )  # fmt: skip
                except DatasetGenerationError as error:  # datasets wraps the reader's own error: raise that one
                    raise error.__cause__ if isinstance(error.__cause__, INPUT_ERRORS) else error
                dataset.info.description = folder.info.get("description", "")
                dataset.info.citation = folder.info.get("citation", "")
                dataset.info.homepage = (folder.info.get("location", {}).get("urls") or [""])[0]
                built[split] = dataset
            dataset_dict = datasets.DatasetDict(built)
            if format == "arrow":
                dataset_dict.save_to_disk(str(staging))
            else:
                limit = convert_file_size_to_int(max_shard_size)
                for split, dataset in built.items():
                    count = _parquet_shards(dataset, limit)
                    for index in range(count):
                        path = staging / "data" / f"{split}-{index:05d}-of-{count:05d}.parquet"
                        path.parent.mkdir(exist_ok=True)
                        dataset.shard(count, index, contiguous=True).to_parquet(str(path))
            if push_to_hub:
                log(f"pushing to the Hub dataset repo {push_to_hub}")
                dataset_dict.push_to_hub(push_to_hub, private=private, max_shard_size=max_shard_size)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    log(f"wrote {', '.join(splits)} of {folder.folder} to {output} ({format})")
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="slotssm-hf tfds-export",
        description="Copy a TFDS-prepared folder (e.g. MOVi as downloaded with gsutil) to Arrow or Parquet, "
        "readable by `datasets` without TensorFlow, and optionally push it to the Hub.",
    )  # fmt: skip
    parser.add_argument("source", help="the TFDS folder (e.g. movi_a/128x128/1.0.0, or movi_a/128x128)")
    parser.add_argument("output", help="folder to write the copy to")
    parser.add_argument("--split", dest="splits", action="append", metavar="SPLIT",
                        help="a split to copy (repeat for several; all by default)")  # fmt: skip
    parser.add_argument("--format", choices=FORMATS, default="arrow",
                        help="arrow (for load_from_disk) or parquet (the Hub's layout, for load_dataset)")
    parser.add_argument("--columns", nargs="+", metavar="PATH",
                        help="features to keep, by path (e.g. video segmentations metadata)")
    parser.add_argument("--movi", action="store_true",
                        help="write MOVi's meaning: float32 depth and flow, dense per-frame boxes")
    parser.add_argument("--max-instances", type=int, default=MAX_INSTANCES, help="box slots per frame with --movi")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also push the copy to this Hub dataset repo")
    parser.add_argument("--private", action="store_true", help="make a new Hub repo private")
    parser.add_argument("--num-proc", type=int, help="processes reading shards in parallel")
    parser.add_argument("--max-shard-size", default="500MB", help="largest Parquet file (default 500MB)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    try:
        export(**vars(args))
    except (*INPUT_ERRORS, ExportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # one line, not a traceback, whatever went wrong
        print(f"error: the export failed ({type(error).__name__}: {error})", file=sys.stderr)
        return 1
    return 0
