"""Reading MOVi's TFDS shards: slotssm_hf's TensorFlow-free reader against tensorflow-datasets on the same shards, one
core each, and whether a DataLoader over the reader keeps a SAVi training step fed.

The shards are written first (`movi_shards.py`: every MOVi-A feature, 24 frames of 128 x 128, rendered scenes whose
PNGs compress as real ones do, about 5.6 MB a video; `--folder` reads a folder of yours instead, e.g. a real MOVi
download). Each reader then runs in its own process pinned to one CPU (`--cpu`, by sched_setaffinity before it
starts, with OMP / MKL / OpenBLAS at one thread), the processes one after the other:

- ours, all features: `read_tfds(folder, split)` iterated (the streaming `datasets.IterableDataset`);
- ours, SAVi's features: `read_tfds(..., columns=[video, segmentations, backward_flow, depth, instances/bboxes,
  instances/bbox_frames, metadata])`, what SAVi (flow target) and SAVi++ (depth target) read;
- ours, all features without libpng: the 16-bit colour PNGs (`normal`, `object_coordinates`) through the NumPy
  unfiltering that `slotssm_hf.data.images` falls back on where torchvision has no usable `decode_png`, instead of
  libpng (torchvision's `decode_png`) after `check_png`;
- tensorflow-datasets: `tfds.builder_from_directory(folder).as_dataset(split, read_config=ReadConfig(
  try_autocache=False))` iterated with `tfds.as_numpy`, all features, and SAVi's through
  `tfds.decode.PartialDecoding`. It runs in the Python given by `--tfds-python` (TensorFlow is no dependency of
  this package); without one, or when it fails, the table says so. Autocaching is off because TFDS caches datasets
  under 250 MB in memory after the first pass, which a real MOVi split (tens of GB) never is.

Each reader's first pass is a warm-up (also filling the page cache), untimed; the cell is the median of `--repeats`
timed passes over all videos, in frames per second (24 frames a video). The ratio ours / tfds is the headline; the
goal is at least 1 on one core.

An untimed pass before checks that both readers give the same arrays: every key of every video (matched by
metadata/video_name), the stored values before any de-quantisation (flows uint16), compared by dtype, shape and
bytes, ragged rows row by row; text is compared as UTF-8 (tfds gives bytes, ours str). Ours is checked on the
examples `read_tfds` wraps (`TFDSFolder.examples`): iterated in `datasets`' default format, `read_tfds` itself gives
1-D sequences as Python lists and 0-d values as Python numbers.

Feeding a training step: a torch DataLoader with 2 workers over `read_tfds` (SAVi's features; the workers divide the
shards), unpinned, in videos per second, against the training step of the default SAVi model (SAVi-S: 64 px, flow
target, forward, backward and Adam update) on `--step-batch` clips of 6 frames, with `--step-threads` torch threads,
in clips per second. SAVi trains on one 6-frame clip cut from each video, so a loader delivering at least as many
videos per second as the step consumes clips keeps it fed (ratio >= 1). They are measured one after the other, not
competing for the cores; the step runs on the GPU where torch sees one.

Usage: python benchmarks/bench_tfds.py [--tfds-python /tmp/tfvenv/bin/python] [--folder PATH --split train]
       [--videos 24] [--shards 4] [--repeats 3] [--cpu 0] [--step-batch 2] [--quick]
"""

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SAVI_COLUMNS = ["video", "segmentations", "backward_flow", "depth", "instances/bboxes", "instances/bbox_frames",
                "metadata"]  # fmt: skip
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
SELECTIONS = ("all", "savi")  # every feature; SAVi's (SAVI_COLUMNS)
NUMPY_PNG = "all, NumPy PNG"  # ours only: every feature, 16-bit colour PNGs by the NumPy fallback instead of libpng
SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")

# --- what runs inside each pinned reader process (NumPy and the standard library only: the tfds Python has no torch)


def flatten(example: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in example.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def to_numpy(value):
    """tf.RaggedTensor (what tfds.as_numpy leaves nested sequences as) -> a list of per-row arrays."""
    if hasattr(value, "nested_row_lengths"):
        return [to_numpy(row) for row in value]
    return value.numpy() if hasattr(value, "numpy") else value


def canonical(value):
    """A comparable digest: ["text", sha1 of the UTF-8], ["ragged", [rows]] or [dtype, shape, sha1 of the bytes]."""
    if isinstance(value, (str, bytes)):
        return ["text", hashlib.sha1(value.encode() if isinstance(value, str) else value).hexdigest()]
    if isinstance(value, (list, tuple)):
        return ["ragged", [canonical(item) for item in value]]
    array = np.asarray(value)
    return [array.dtype.str, list(array.shape), hashlib.sha1(array.tobytes()).hexdigest()]


def run_worker(reader: str, folder: str, split: str, repeats: int, output: str) -> None:
    """Each selection of one reader ("ours": also NUMPY_PNG, last; or "tfds"), one after the other in this process;
    writes {selection: result} as JSON."""
    results = {}
    for selection in selections(reader):
        if selection == NUMPY_PNG:
            from slotssm_hf.data import images

            images._libpng = lambda: None  # the fallback's switch; this process reads nothing after this selection
        if reader == "ours":
            results[selection] = time_ours(folder, split, SAVI_COLUMNS if selection == "savi" else None, repeats)
        else:
            results[selection] = time_tfds(folder, split, selection, repeats)
    Path(output).write_text(json.dumps(results))


def selections(reader: str) -> tuple:
    return (*SELECTIONS, NUMPY_PNG) if reader == "ours" else SELECTIONS


def time_ours(folder: str, split: str, columns, repeats: int) -> dict:
    """Ours, timed through `read_tfds` and checked on the examples it wraps (`TFDSFolder.examples`, the decoded
    stored values; iterated in datasets' default format, `read_tfds` gives 1-D sequences as Python lists and 0-d
    values as Python numbers)."""
    from slotssm_hf.data import read_tfds
    from slotssm_hf.data.tfds import TFDSFolder

    dataset = read_tfds(folder, split, columns=columns)
    return timed(lambda: TFDSFolder(folder).examples(split, columns), lambda: iter(dataset), repeats, {})


def time_tfds(folder: str, split: str, selection: str, repeats: int) -> dict:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    decoders = None
    if selection == "savi":
        wanted = {name: True for name in SAVI_COLUMNS if "/" not in name}
        wanted["instances"] = {"bboxes": True, "bbox_frames": True}
        decoders = tfds.decode.PartialDecoding(wanted)
    builder = tfds.builder_from_directory(folder)
    dataset = builder.as_dataset(split=split, decoders=decoders, read_config=tfds.ReadConfig(try_autocache=False))
    versions = {"tensorflow": tf.__version__, "tensorflow_datasets": tfds.__version__}
    return timed(lambda: tfds.as_numpy(dataset), lambda: tfds.as_numpy(dataset), repeats, versions)


def timed(decoded, passes, repeats: int, versions: dict) -> dict:
    """A pass over `decoded()` taking the digests of every video, then a warm-up pass and `repeats` timed passes
    over `passes()`."""
    digests, frames = {}, 0
    for example in decoded():
        flat = {key: to_numpy(value) for key, value in flatten(example).items()}
        name = flat["metadata/video_name"]
        digests[name.decode() if isinstance(name, bytes) else str(name)] = {k: canonical(v) for k, v in flat.items()}
        frames += len(example["video"])
    seconds = []
    for index in range(repeats + 1):  # the first pass warms up
        start = time.perf_counter()
        for example in passes():
            len(example["video"])
        if index:
            seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "frames": frames, "videos": len(digests), "digests": digests, "versions": versions}


# --- the benchmark ---------------------------------------------------------------------------------------------------


def measure_reader(reader: str, python: str, folder: Path, split: str, repeats: int, cpu: int) -> dict:
    """One reader ("ours" or "tfds") in its own process pinned to `cpu`: {selection: result}, or {selection:
    {"error": ...}} where it could not run."""
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "result.json"
        command = [python, __file__, "--worker", reader, "--folder", str(folder), "--split", split, "--repeats",
                   str(repeats), "--output", str(output)]  # fmt: skip
        env = {**os.environ, **ONE_THREAD, "TF_CPP_MIN_LOG_LEVEL": "2"}
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True,
                                  preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))  # fmt: skip
        except OSError as error:
            return {selection: {"error": str(error)} for selection in selections(reader)}
        if done.returncode != 0 or not output.is_file():
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            error = lines[-1] if lines else f"exit status {done.returncode}"
            return {selection: {"error": error} for selection in selections(reader)}
        return json.loads(output.read_text())


def compare(ours: dict, theirs: dict) -> tuple[bool, str]:
    """Whether two readers' digests agree on every video and key; a summary, naming the first differences."""
    if "error" in ours or "error" in theirs:
        return False, "not checked: " + (ours.get("error") or theirs.get("error"))
    ours, theirs = ours["digests"], theirs["digests"]
    differences = []
    if set(ours) != set(theirs):
        differences.append(f"videos only ours: {sorted(set(ours) - set(theirs))[:3]}, only tfds: "
                           f"{sorted(set(theirs) - set(ours))[:3]}")  # fmt: skip
    keys = 0
    for video in sorted(set(ours) & set(theirs)):
        a, b = ours[video], theirs[video]
        if set(a) != set(b):
            only_ours, only_tfds = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            differences.append(f"{video}: keys only ours {only_ours}, only tfds {only_tfds}")
        for key in sorted(set(a) & set(b)):
            keys += 1
            if a[key] != b[key]:
                differences.append(f"{video} {key}: ours {str(a[key])[:80]}, tfds {str(b[key])[:80]}")
    if differences:
        return False, f"DIFFERENT in {len(differences)} places; first: " + "; ".join(differences[:3])
    return True, f"identical: {len(ours)} videos, {keys} arrays (every key of every video)"


def measure_loader(folder: Path, split: str, repeats: int) -> dict:
    """Videos and frames per second of a DataLoader with 2 workers over read_tfds (SAVi's features)."""
    import torch

    from slotssm_hf.data import read_tfds

    loader = torch.utils.data.DataLoader(read_tfds(folder, split, columns=SAVI_COLUMNS), batch_size=None,
                                         num_workers=2)  # fmt: skip
    seconds, videos, frames = [], 0, 0
    for index in range(repeats + 1):  # the first pass warms up
        start = time.perf_counter()
        videos = frames = 0
        for example in loader:
            videos, frames = videos + 1, frames + len(example["video"])
        if index:
            seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"videos_per_s": videos / median, "frames_per_s": frames / median}


def measure_step(batch: int, threads: int, steps: int, variant: str | None) -> dict:
    """Clips per second of the SAVi model's training step (the default config, or a named variant) on `batch` clips
    of 6 frames."""
    import torch

    from slotssm_hf import FAMILIES, SAViConfig, SAViForVideoReconstruction

    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = FAMILIES["savi"].config(variant) if variant else SAViConfig()
    model = SAViForVideoReconstruction(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    g = torch.Generator().manual_seed(0)
    size = config.image_size
    video = torch.rand(batch, 6, 3, size, size, generator=g)
    corner = torch.rand(batch, config.num_slots - 1, 2, generator=g) * 0.5
    boxes = torch.cat([corner, corner + 0.25], dim=-1)
    labels = torch.rand(batch, 6, sum(config.targets.values()), size, size, generator=g)
    video, boxes, labels = video.to(device), boxes.to(device), labels.to(device)
    seconds = []
    for index in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        loss = model(video, boxes=boxes, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if index:
            seconds.append(time.perf_counter() - start)
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {threads} threads"
    return {"clips_per_s": batch / statistics.median(seconds), "image_size": size, "device": where}


def cpu_line() -> str:
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    present = [flag for flag in SIMD_FLAGS if flag in flags]
    return f"{model}, {os.cpu_count()} CPUs; flags: {' '.join(present) or 'none of ' + ', '.join(SIMD_FLAGS)}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", default=None, help="a TFDS MOVi folder to read (default: write one)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--tfds-python", default=None, help="a Python with tensorflow-datasets installed")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0, help="the CPU every reader process is pinned to")
    parser.add_argument("--step-batch", type=int, default=2, help="clips of 6 frames per SAVi training step")
    parser.add_argument("--step-threads", type=int, default=os.cpu_count(), help="torch threads of the step on a CPU")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps (after one warm-up step)")
    parser.add_argument("--step-variant", default=None, help="a SAVi variant for the step (default: SAViConfig())")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 4 videos of 4 frames of 32 x 32, one repeat, one step of SAVi 'tiny'")
    parser.add_argument("--worker", choices=["ours", "tfds"], help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args.worker, args.folder, args.split, args.repeats, args.output)
    if args.quick:
        args.videos, args.shards, args.frames, args.size, args.repeats = 4, 2, 4, 32, 1
        args.step_batch, args.steps, args.step_variant = 1, 1, "tiny"
    with tempfile.TemporaryDirectory() as scratch:
        if args.folder is None:
            from movi_shards import write_movi_folder

            start = time.perf_counter()
            folder = write_movi_folder(Path(scratch) / "movi_a" / f"{args.size}x{args.size}" / "1.0.0", args.videos,
                                       args.shards, args.frames, args.size, args.split)  # fmt: skip
            size = sum(path.stat().st_size for path in folder.glob("*.tfrecord-*"))
            print(f"wrote {args.videos} videos of {args.frames} frames of {args.size} x {args.size} (every MOVi-A "
                  f"feature) in {args.shards} shards, {size / 2**20:.0f} MiB, in {time.perf_counter() - start:.0f} s")
        else:
            folder = Path(args.folder)
        report(args, folder)


def report(args, folder: Path) -> None:
    import platform

    import torch
    import torchvision

    from slotssm_hf.data import images

    ours = measure_reader("ours", sys.executable, folder, args.split, args.repeats, args.cpu)
    if args.tfds_python:
        tfds = measure_reader("tfds", args.tfds_python, folder, args.split, args.repeats, args.cpu)
    else:
        tfds = {selection: {"error": "no --tfds-python given"} for selection in SELECTIONS}
    loader = measure_loader(folder, args.split, args.repeats)
    step = measure_step(args.step_batch, args.step_threads, args.steps, args.step_variant)
    equal, check = compare(ours["all"], tfds["all"])

    def rate(result):
        return result["frames"] / statistics.median(result["seconds"]) if "seconds" in result else None

    versions = tfds["all"].get("versions", {})
    tfds_name = f"tensorflow-datasets {versions['tensorflow_datasets']}" if versions else "tensorflow-datasets"
    print(f"CPU: {cpu_line()}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}; "
          f"{', '.join(f'{k} {v}' for k, v in versions.items()) or 'tensorflow-datasets: not run'}")  # fmt: skip
    print(f"each reader in its own process pinned to CPU {args.cpu}, one thread (OMP/MKL/OpenBLAS); median of "
          f"{args.repeats} passes after a warm-up; {folder}")  # fmt: skip
    png = "checked, then libpng (torchvision's decode_png)" if images._libpng() else "NumPy (no usable decode_png)"
    print(f"ours, 16-bit colour PNGs (normal, object_coordinates): {png}")
    print()
    print("| measurement | ours | reference | ours / reference |")
    print("|---|---|---|---|")
    for label, selection, reference, how in (("all features, 1 core", "all", "all", "as_dataset"),
                                             ("SAVi's features, 1 core", "savi", "savi", "PartialDecoding"),
                                             ("all features, 1 core, NumPy PNG fallback", NUMPY_PNG, "all",
                                              "as_dataset")):  # fmt: skip
        mine, theirs = rate(ours[selection]), rate(tfds[reference])
        ours_cell = f"{mine:.0f} frames/s" if mine else f"not run: {ours[selection]['error']}"
        theirs_cell = (f"{theirs:.0f} frames/s ({tfds_name}, {how})" if theirs
                       else f"not run: {tfds[reference]['error']}")  # fmt: skip
        ratio = f"{mine / theirs:.2f}x" if mine and theirs else "-"
        print(f"| {label} | {ours_cell} | {theirs_cell} | {ratio} |")
    model = f"SAVi {args.step_variant}" if args.step_variant else "SAVi-S (SAViConfig())"
    print(f"| DataLoader, 2 workers, SAVi's features | {loader['videos_per_s']:.1f} videos/s "
          f"({loader['frames_per_s']:.0f} frames/s) | {step['clips_per_s']:.1f} clips/s: {model} training step, "
          f"{args.step_batch} x 6 frames at {step['image_size']} px, {step['device']} | "
          f"{loader['videos_per_s'] / step['clips_per_s']:.2f}x |")  # fmt: skip
    print()
    print(f"same arrays as tensorflow-datasets (all features, stored values): {check}")
    return equal


if __name__ == "__main__":
    sys.exit(main())
