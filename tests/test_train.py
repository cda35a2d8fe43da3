"""The main job (`slotssm-hf train`) on tiny settings: outputs, resuming, the non-finite loss guard and
multi-process launches on the CPU; and the ConvS5 job (`--model convs5`) improving its rollouts."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from slotssm_inputs import tiny_config
from transformers import TrainingArguments

from slotssm_hf import ConvS5ForVideoPrediction, ConvS5VideoProcessor, SlotSSMForVideoReconstruction
from slotssm_hf.cli import main as cli
from slotssm_hf.training.train import NonFiniteLossError, main, make_trainer_class

TINY_RUN = ["--steps", "4", "--train-videos", "8", "--eval-videos", "2", "--batch-size", "2", "--num-frames", "4",
            "--image-size", "32", "--save-steps", "2"]  # fmt: skip


def test_default_job_writes_model_processor_card_metrics_and_pictures(tmp_path, capsys):
    assert main([*TINY_RUN, "--eval-steps", "2", "--output-dir", str(tmp_path)]) == 0
    final = tmp_path / "final"
    for name in ["config.json", "model.safetensors", "video_preprocessor_config.json", "README.md", "eval_results.json"]:
        assert (final / name).is_file(), name
    results = json.loads((final / "eval_results.json").read_text())
    assert {"untrained_fg_ari", "untrained_miou", "untrained_loss"} <= set(results["untrained"])
    assert {"eval_fg_ari", "eval_miou", "eval_loss", "eval_psnr", "eval_object_psnr"} <= set(results["trained"])
    assert (tmp_path / "slots.png").stat().st_size > 0 and (tmp_path / "slots.gif").stat().st_size > 0
    # The learning curve: the evaluation before training, then every 2 steps; its last row is the final evaluation.
    curve = (tmp_path / "learning_curve.md").read_text().splitlines()[2:]
    assert [row.split("|")[1].strip() for row in curve] == ["0", "2", "4"]
    assert float(curve[0].split("|")[2]) == pytest.approx(results["untrained"]["untrained_fg_ari"], abs=5e-4)
    assert float(curve[-1].split("|")[3]) == pytest.approx(results["trained"]["eval_miou"], abs=5e-4)
    assert '"fg_ari"' in capsys.readouterr().out
    model = SlotSSMForVideoReconstruction.from_pretrained(final)
    assert model.config.decoder_type == "spatial_broadcast" and model.config.use_inverted_attention
    assert model.config.image_size == 16 * model.config.decoder_initial_size


def test_learning_curve_tabulates_and_draws_every_evaluation(tmp_path):
    from slotssm_hf.training.visualize import learning_curve

    metrics = {"fg_ari": 0.5, "miou": 0.25, "psnr": 20.0, "object_psnr": 12.0}
    history = [
        {"untrained_" + key: value / 2 for key, value in metrics.items()} | {"step": 0},
        {"loss": 1.0, "step": 2},
        {"eval_" + key: value for key, value in metrics.items()} | {"step": 4},
        {"eval_loss": 0.5, "step": 4},
    ]
    paths = learning_curve(history, str(tmp_path / "curve"))
    assert paths == [str(tmp_path / "curve.md"), str(tmp_path / "curve.png")]
    assert (tmp_path / "curve.md").read_text().splitlines()[2:] == [
        "| 0 | 0.250 | 0.125 | 10.0 | 6.0 |", "| 4 | 0.500 | 0.250 | 20.0 | 12.0 |"
    ]
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="no evaluation"):
        learning_curve([{"loss": 1.0, "step": 2}], str(tmp_path / "empty"))


def test_builtin_videos_hold_three_or_four_objects():
    from slotssm_hf.training.data import builtin_datasets
    from slotssm_hf.training.train import parse_args

    args = parse_args([*TINY_RUN, "--train-videos", "24", "--eval-videos", "24"])
    for videos in builtin_datasets(args):
        counts = [len(boxes) for boxes in videos["boxes"]]
        assert set(counts) == {3, 4}, counts
        masks = videos.with_format("torch", columns=["instance_masks"])["instance_masks"]
        assert all(len(frames.unique()) - 1 in (3, 4) for frames in masks)  # every object shows in some frame


def assert_resumed_run_matches_the_whole_run(arguments, checkpoint: str, tmp_path):
    """Train with `arguments` uninterrupted; then restart from what was on disk after `checkpoint` of that run (the
    interrupted run) and resume: the final weights must be bit-identical."""
    main([*arguments, "--output-dir", str(tmp_path / "whole")])
    shutil.copytree(tmp_path / "whole" / checkpoint, tmp_path / "resumed" / checkpoint)
    main([*arguments, "--output-dir", str(tmp_path / "resumed"), "--resume-from-checkpoint", "last"])
    whole = load_file(tmp_path / "whole" / "final" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "final" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=0, msg=key)


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    arguments = [*TINY_RUN, "--no-pictures"]
    assert_resumed_run_matches_the_whole_run(arguments, "checkpoint-2", tmp_path)


def test_a_non_finite_loss_stops_training_before_any_checkpoint(tmp_path):
    model = SlotSSMForVideoReconstruction(tiny_config())
    rows = [{"x": i} for i in range(4)]

    def poisoned_batches(batch):
        pixels = torch.zeros(len(batch), 2, 3, 32, 32)
        pixels[0, 0, 0, 0, 0] = float("nan")
        return {"pixel_values_videos": pixels}

    args = TrainingArguments(tmp_path, max_steps=3, per_device_train_batch_size=2, save_steps=1, report_to=[],
                             use_cpu=True, remove_unused_columns=False)  # fmt: skip
    trainer = make_trainer_class()(model=model, args=args, train_dataset=rows, data_collator=poisoned_batches)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="the training loss became nan at step 1; training stopped"):
        trainer.train()
    assert not any(p.name.startswith("checkpoint") for p in tmp_path.iterdir())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"],
    # accelerate's --cpu flag runs one process; --multi_gpu launches through torch's elastic launcher, which puts
    # processes on the CPU when there is no GPU.
    "accelerate": [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                   "--main_process_port", "29518"],
}  # fmt: skip


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_processes_on_the_cpu(tmp_path, launcher):
    command = [*LAUNCHERS[launcher], "-m", "slotssm_hf.training.train", *TINY_RUN, "--no-pictures", "--output-dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "final" / "model.safetensors").is_file()
    state = json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())
    # Each optimizer step saw one batch per process: 4 steps x 2 processes x batch 2 = 16 videos = 2 epochs of 8.
    assert state["global_step"] == 4 and state["epoch"] == pytest.approx(2.0)


def test_resumed_run_with_random_clip_starts_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    import datasets
    import numpy as np

    # 12-frame videos trained as 4-frame clips: every clip starts at a random frame. 7 training videos (one is held
    # out) in batches of 2 make 4 steps an epoch: the run resumes in the middle of the first epoch and goes on into
    # the second, whose clips differ from the first's.
    videos = np.random.default_rng(0).integers(0, 256, (8, 12, 32, 32, 3), dtype=np.uint8)
    datasets.Dataset.from_dict({"video": list(videos)}).save_to_disk(tmp_path / "data")
    arguments = [*TINY_RUN, "--steps", "6", "--save-steps", "3", "--no-pictures", "--data", str(tmp_path / "data")]
    assert_resumed_run_matches_the_whole_run(arguments, "checkpoint-3", tmp_path)


def test_resumed_run_through_savis_clip_curriculum_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    # 12 steps of 4 an epoch: clips of 2, 3 and then 4 frames in epochs 0, 1 and 2. The run resumes in the middle
    # of epoch 1 and must take up its clip length, then lengthen the clips when epoch 2 begins.
    arguments = [*TINY_RUN, "--model", "savi", "--steps", "12", "--save-steps", "6", "--no-pictures"]
    assert_resumed_run_matches_the_whole_run(arguments, "checkpoint-6", tmp_path)


def test_a_non_finite_loss_on_one_process_stops_every_process_with_the_same_message(tmp_path):
    script = Path(__file__).parent / "utils" / "distributed_non_finite.py"
    command = [*LAUNCHERS["torchrun"][:-1], "29519", str(script), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(script.parent), *sys.path])}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    outcomes = [(tmp_path / f"process-{rank}.txt") for rank in (0, 1)]
    assert all(path.is_file() for path in outcomes), result.stdout[-3000:] + result.stderr[-3000:]
    outcomes = [path.read_text() for path in outcomes]
    message = (
        "stopped, weights unchanged: True: the training loss became nan at step 1 on process 1 of 2; training "
        "stopped before applying it"
    )
    assert outcomes[0] == outcomes[1] and outcomes[0].startswith(message), outcomes
    assert not any(p.name.startswith("checkpoint") for p in tmp_path.iterdir())


def test_a_non_finite_loss_under_torchrun_is_one_error_line_from_process_0(tmp_path):
    # A learning rate of 1e30 makes the second step's loss NaN on both processes.
    command = [*LAUNCHERS["torchrun"][:-1], "29520", "-m", "slotssm_hf.training.train", *TINY_RUN, "--steps", "3",
               "--learning-rate", "1e30", "--no-pictures", "--output-dir", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "the training loss became nan at step 2" in errors[0], result.stderr[-3000:]
    assert "[rank" not in result.stderr, result.stderr[-3000:]  # no process's traceback
    # The first process to stop exits with status 2 (torchrun's summary says so; it may end the other one with a
    # signal), and no model is written.
    assert re.search(r"exitcode\s*:\s*2\b", result.stderr) and not (tmp_path / "final").exists()


def test_clip_seeds_depend_on_seed_epoch_and_row_only():
    from transformers import TrainerControl, TrainerState

    from slotssm_hf.training.data import EpochCallback, SeededClips

    clips = SeededClips([{"pixel_values_videos": "a.mp4"}, {"pixel_values_videos": "b.mp4"}], seed=0)
    first_epoch = [clips[i]["clip_seed"] for i in range(2)]
    assert first_epoch == [clips[i]["clip_seed"] for i in range(2)] and first_epoch[0] != first_epoch[1]
    EpochCallback(clips).on_epoch_begin(None, TrainerState(epoch=1.5), TrainerControl())  # resumed mid-epoch 1
    second_epoch = [clips[i]["clip_seed"] for i in range(2)]
    assert clips.epoch == 1 and set(first_epoch).isdisjoint(second_epoch)
    assert [SeededClips(clips.dataset, seed=1)[i]["clip_seed"] for i in range(2)] != first_epoch


def test_training_job_improves_the_rollouts(tmp_path, capsys):
    arguments = ["train", "--model", "convs5", "--image-size", "32", "--num-frames", "6", "--context-frames", "3",
                 "--steps", "6", "--train-videos", "4", "--eval-videos", "2", "--batch-size", "2",
                 "--output-dir", str(tmp_path)]  # fmt: skip
    assert cli(arguments) == 0
    results = json.loads((tmp_path / "final" / "eval_results.json").read_text())
    assert results["trained"]["eval_loss"] < results["untrained"]["untrained_loss"]
    assert results["trained"]["eval_rollout_mse"] < results["untrained"]["untrained_rollout_mse"]
    assert {"eval_rollout_psnr", "eval_rollout_ssim"} <= set(results["trained"])
    model = ConvS5ForVideoPrediction.from_pretrained(tmp_path / "final")
    assert model.config.image_size == 32 and model.config.num_frames == 6
    assert isinstance(ConvS5VideoProcessor.from_pretrained(tmp_path / "final"), ConvS5VideoProcessor)


def test_conditional_models_train_on_clips_from_the_first_frame_their_boxes_describe():
    """Frame k of a 12-frame video is filled with 10 k: a conditional SAVi's training clips start at frame 0, whose
    boxes the rows carry, whatever the clip seed; an unconditional model's clips start where the seed says."""
    import numpy as np

    from slotssm_hf import FAMILIES, SAViVideoProcessor
    from slotssm_hf.training.data import training_collator

    video = np.broadcast_to((np.arange(12) * 10).astype(np.uint8)[:, None, None, None], (12, 32, 32, 3)).copy()
    rows = [{"pixel_values_videos": video, "boxes": [[0.1, 0.1, 0.5, 0.5]], "clip_seed": seed} for seed in range(8)]
    processor = SAViVideoProcessor(do_resize=False, do_center_crop=False, num_frames=4)

    def first_frames(model_size):
        batch = training_collator(processor, FAMILIES["savi"].config(model_size))(rows)
        return {round(float(value), 3) for value in batch["pixel_values_videos"][:, 0].mean(dim=(1, 2, 3))}

    frame_zero = round(float(processor([video[:4]])["pixel_values_videos"][0, 0].mean()), 3)
    assert first_frames("tiny") == {frame_zero}
    assert len(first_frames("tiny-unconditional")) > 1


def test_clip_curriculum_lengthens_clips_evenly_then_keeps_whole_clips():
    from slotssm_hf.training.data import ClipCurriculum
    from slotssm_hf.training.train import clip_curriculum, mean_clip_frames, parse_args

    assert [ClipCurriculum(2, 8, ramp_epochs=3)(epoch) for epoch in range(6)] == [2, 4, 6, 8, 8, 8]
    assert [ClipCurriculum(2, 8, ramp_epochs=12)(epoch) for epoch in range(0, 14, 2)] == [2, 3, 4, 5, 6, 7, 8]
    # The default run: 2000 steps of batch 8 over 512 videos, 64 steps an epoch; the first half is 16 epochs.
    args = parse_args(["--model", "savi"])
    curriculum = clip_curriculum(args, 512)
    assert curriculum == ClipCurriculum(2, 8, ramp_epochs=16)
    by_step = [curriculum(step // 64) for step in range(2000)]
    assert mean_clip_frames(curriculum, args, 512) == pytest.approx(sum(by_step) / 2000)
    assert clip_curriculum(parse_args([]), 512) is None  # SlotSSM trains on whole clips
    assert clip_curriculum(parse_args(["--model", "savi", "--curriculum-frames", "8"]), 512) is None
    assert clip_curriculum(parse_args(["--curriculum-frames", "3"]), 512).start == 3


def test_rows_set_their_clips_length_through_the_collator():
    import numpy as np

    from slotssm_hf import SlotSSMVideoProcessor
    from slotssm_hf.training.data import SeededClips, VideoCollator

    videos = [{"pixel_values_videos": np.zeros((8, 16, 16, 3), np.uint8)} for _ in range(3)]
    clips = SeededClips(videos, seed=0, clip_frames=lambda epoch: 2 + epoch)
    collator = VideoCollator(SlotSSMVideoProcessor(do_resize=False, do_center_crop=False, num_frames=8))
    assert collator([clips[i] for i in range(3)])["pixel_values_videos"].shape[1] == 2
    clips.set_epoch(3)
    assert collator([clips[i] for i in range(3)])["pixel_values_videos"].shape[1] == 5
    assert collator(videos)["pixel_values_videos"].shape[1] == 8  # rows without it: the processor's
    with pytest.raises(ValueError, match=r"clips of different lengths \(\[2, 5\] frames\)"):
        collator([clips[0], {**clips[1], "clip_frames": 2}])


def test_training_on_shorter_clips_evaluates_on_whole_clips(tmp_path):
    """SAVi's curriculum trains on 2-frame clips of the 6-frame videos in this 4-step run's only epoch, while the
    Trainer evaluates (at step 2 and at the end) on the whole clips: the metrics compare every frame's slot masks
    with that frame's instance masks, and refuse clips of another length."""
    run = [*TINY_RUN, "--model", "savi", "--num-frames", "6", "--eval-steps", "2", "--no-pictures"]
    assert main([*run, "--output-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "final" / "eval_results.json").read_text())
    assert results["training"]["train_frames_per_clip"] == 2
    assert -1 <= results["trained"]["eval_fg_ari"] <= 1
