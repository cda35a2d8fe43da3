"""Saved folders of every family load and compute what the saving code computed: with the package (the registered
classes) and with `trust_remote_code=True` where the package cannot be imported (the code stored in the folder);
both for folders saved by today's code and for folders saved before the package was split into `slotssm_hf.models`
and its tooling sub-packages (tests/data/legacy_folders, whose outputs that older code computed)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from remote_code import run_without_package
from safetensors.torch import load_file
from saved_folders import LEGACY_FOLDERS, TINY, family_of, save_folder

from slotssm_hf.hub.push import PROCESSOR_CONFIGS
from slotssm_hf.registry import load

# A legacy folder's outputs were computed on another machine, possibly with other vector instructions: float32
# sums in another order differ by a few ulp (measured: 0 on the machine that saved them); 1e-5 leaves a wide margin
# at these magnitudes (|values| < 10) while any change of the computation shows far above it.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
FRAMES = np.random.default_rng(0).integers(0, 256, (5, 20, 24, 3), dtype=np.uint8)


def has_processor(folder) -> bool:
    """Whether the folder holds a processor (GrootV's legacy folder was saved before GrootV had one of its own)."""
    return any((folder / name).is_file() for name in PROCESSOR_CONFIGS)


def processed(processor, frames):
    """What a processor of the package makes of `frames`: the clip of a video processor, the first frame for an image
    processor."""
    if "pixel_values_videos" in processor.model_input_names:
        return processor(frames, num_frames=3)["pixel_values_videos"]
    return processor(frames[0], return_tensors="pt")["pixel_values"]


def folders(tmp_path, case):
    """The case's folder saved by today's code, and the one saved before the split where the case has one."""
    legacy = {"legacy": LEGACY_FOLDERS / case} if (LEGACY_FOLDERS / case).is_dir() else {}
    return {"today": save_folder(case, tmp_path / "today"), **legacy}


def split_io(folder):
    io = load_file(folder / "io.safetensors")
    inputs = {k.removeprefix("input."): v for k, v in io.items() if k.startswith("input.")}
    return inputs, {k.removeprefix("output."): v for k, v in io.items() if k.startswith("output.")}


@pytest.mark.parametrize("case", TINY)
def test_saved_folders_load_with_the_package(tmp_path, case):
    family = family_of(case)
    for source, folder in folders(tmp_path, case).items():
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        assert auto_map == family.auto_map(), source  # the names a saved folder records stay what they were
        for auto_class, class_path in auto_map.items():
            if auto_class != "AutoConfig":
                loaded = getattr(transformers, auto_class).from_pretrained(folder)
                assert type(loaded) is load(class_path), (source, auto_class)
        model = load(family.heads[1].class_path).from_pretrained(folder).eval()
        inputs, expected = split_io(folder)
        with torch.no_grad():
            outputs = model(**inputs)
        for name, value in expected.items():
            torch.testing.assert_close(outputs[name], value, **TOLERANCE, msg=f"{source}: output {name}")
        if has_processor(folder):
            processor = getattr(transformers, family.processor_auto_class).from_pretrained(folder)
            assert type(processor) is load(family.processor_path), source


@pytest.mark.parametrize("case", TINY)
def test_saved_folders_load_with_remote_code_where_the_package_is_absent(tmp_path, case):
    """Every Auto class of the folder's auto_map loads the folder's own code; the saved head computes the saved
    outputs; the folder's processor turns frames into what the package's processor makes of them."""
    family = family_of(case)
    paths = {source: str(folder) for source, folder in folders(tmp_path, case).items()}
    torch.save(torch.from_numpy(FRAMES), tmp_path / "frames.pt")
    processors = {source for source, folder in paths.items() if has_processor(Path(folder))}
    for source in processors:
        pixels = processed(load(family.processor_path).from_pretrained(paths[source]), FRAMES)
        torch.save(pixels, tmp_path / f"{source}-pixels.pt")
    stdout = run_without_package(
        tmp_path,
        f"""
        import json
        from pathlib import Path
        import torch
        import transformers
        from safetensors.torch import load_file
        frames = torch.load({str(tmp_path / "frames.pt")!r})
        for source, folder in {paths!r}.items():
            auto_map = json.loads((Path(folder) / "config.json").read_text())["auto_map"]
            for auto_class in auto_map:
                if auto_class == "AutoConfig":
                    continue
                model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True).eval()
                assert "slotssm_hf" not in type(model).__module__, type(model).__module__
                print(source, auto_class, type(model).__name__)
            model = transformers.AutoModelForPreTraining if "AutoModelForPreTraining" in auto_map else None
            model = (model or transformers.AutoModelForImageClassification).from_pretrained(folder, trust_remote_code=True)
            io = load_file(Path(folder) / "io.safetensors")
            inputs = {{k.removeprefix("input."): v for k, v in io.items() if k.startswith("input.")}}
            with torch.no_grad():
                outputs = model.eval()(**inputs)
            for name, value in io.items():
                if name.startswith("output."):
                    torch.testing.assert_close(outputs[name.removeprefix("output.")], value, rtol={TOLERANCE["rtol"]},
                                               atol={TOLERANCE["atol"]}, msg=f"{{source}}: {{name}}")
            if source in {processors!r}:
                auto_class = {family.processor_auto_class!r}
                processor = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True)
                assert "slotssm_hf" not in type(processor).__module__, type(processor).__module__
                if auto_class == "AutoVideoProcessor":
                    pixels = processor(frames.numpy(), num_frames=3)["pixel_values_videos"]
                else:
                    pixels = processor(frames[0].numpy(), return_tensors="pt")["pixel_values"]
                torch.testing.assert_close(pixels, torch.load({str(tmp_path)!r} + f"/{{source}}-pixels.pt"), rtol=0, atol=0)
                print(source, auto_class, type(processor).__name__)
        """,
    )
    expected = [
        f"{source} {auto_class} {class_path.rsplit('.', 1)[1]}"
        for source in paths
        for auto_class, class_path in family.auto_map().items()
        if auto_class != "AutoConfig"
    ]
    processor_name = family.processor_path.rsplit(".", 1)[1] if processors else None
    expected += [f"{source} {family.processor_auto_class} {processor_name}" for source in processors]
    assert sorted(stdout.splitlines()) == sorted(expected)
