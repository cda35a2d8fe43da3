"""Task heads: losses against direct computations, the Trainer (label names, gradient accumulation), the
video-classification pipeline, and autoregressive rollout."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_modeling import tiny_config, video
from test_video_processing import synthetic_frames, write_video
from transformers import AutoModelForVideoClassification, Trainer, TrainingArguments, pipeline

from slotssm_hf import (
    SlotSSMForVideoClassification,
    SlotSSMForVideoDepthEstimation,
    SlotSSMForVideoPrediction,
    SlotSSMVideoProcessor,
    VideoCollator,
    video_folder_dataset,
)
from slotssm_hf.models.modeling_slotssm import scale_invariant_log_loss

SMALL = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}, "num_frames": 4}


@pytest.mark.parametrize(
    "problem_type,labels,loss_fn",
    [
        ("single_label_classification", torch.tensor([2, 0]), lambda logits, y: F.cross_entropy(logits, y)),
        ("multi_label_classification", torch.tensor([[1.0, 0, 1], [0, 1, 0]]), F.binary_cross_entropy_with_logits),
        ("regression", torch.randn(2, 3), F.mse_loss),
    ],
)
def test_classification_losses(problem_type, labels, loss_fn):
    model = SlotSSMForVideoClassification(tiny_config(num_labels=3, problem_type=problem_type))
    out = model(video(model.config), labels=labels)
    assert out.logits.shape == (2, 3)
    torch.testing.assert_close(out.loss, loss_fn(out.logits, labels))


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_reads_the_configured_frames(pooling):
    model = SlotSSMForVideoClassification(tiny_config(num_labels=4, classifier_pooling=pooling)).eval()
    frames = video(model.config)
    with torch.no_grad():
        out = model(frames, output_hidden_states=True)
        slots = out.hidden_states[-1]
        pooled = slots[:, -1] if pooling == "last" else slots.mean(1)
        torch.testing.assert_close(out.logits, model.classifier(model.norm(pooled).mean(1)))


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    """Two micro-batches of 2 with accumulation give the update of one batch of 4 (mean losses, equal sizes)."""
    rows = [{"pixel_values_videos": np.random.default_rng(i).random((3, 32, 32, 3), dtype=np.float32), "labels": i % 3} for i in range(4)]
    collator = VideoCollator(SlotSSMVideoProcessor(**SMALL))
    torch.manual_seed(0)
    initial = SlotSSMForVideoClassification(tiny_config(num_labels=3)).state_dict()
    trained = []
    for batch_size, accumulation in [(4, 1), (2, 2)]:
        model = SlotSSMForVideoClassification(tiny_config(num_labels=3))
        model.load_state_dict(initial)
        args = TrainingArguments(
            tmp_path / f"run{batch_size}", max_steps=1, per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation, learning_rate=0.1, optim="sgd", lr_scheduler_type="constant",
            report_to=[], use_cpu=True, dataloader_drop_last=False, data_seed=0, seed=0,
        )  # fmt: skip
        Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
        trained.append(model.state_dict())
    changed = [k for k in initial if not torch.equal(initial[k], trained[0][k])]
    assert changed
    for key in changed:
        torch.testing.assert_close(trained[0][key], trained[1][key], rtol=1e-4, atol=1e-6, msg=key)


def test_trainer_finds_labels_and_the_pipeline_classifies_a_file(tmp_path):
    for name in ["left", "right"]:
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(2):
            write_video(tmp_path / "data" / name / f"{i}.mp4", synthetic_frames(6, 40, 40, seed=i + 5 * (name == "left")))
    dataset = video_folder_dataset(tmp_path / "data")
    names = dataset.features["labels"].names
    config = tiny_config(num_labels=2, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}, num_frames=4)
    model = SlotSSMForVideoClassification(config)
    processor = SlotSSMVideoProcessor(**SMALL)
    args = TrainingArguments(tmp_path / "out", max_steps=2, per_device_train_batch_size=2, report_to=[], use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset, data_collator=VideoCollator(processor))
    trainer.train()
    assert "eval_loss" in trainer.evaluate()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    assert type(AutoModelForVideoClassification.from_pretrained(tmp_path / "model")).__name__ == "SlotSSMForVideoClassification"
    classify = pipeline("video-classification", model=str(tmp_path / "model"))
    result = classify(dataset[0]["pixel_values_videos"])
    assert sorted(r["label"] for r in result) == ["left", "right"]
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-5)


def test_prediction_is_teacher_forced_on_the_clip():
    model = SlotSSMForVideoPrediction(tiny_config())
    frames = video(model.config, frames=4)
    out = model(frames)
    assert out.predictions.shape == frames.shape
    torch.testing.assert_close(out.loss, F.mse_loss(out.predictions[:, :-1], frames[:, 1:]))
    nxt = torch.randn_like(frames)
    torch.testing.assert_close(model(frames, labels=nxt).loss, F.mse_loss(out.predictions, nxt))
    assert model(frames[:, :1]).loss is None


def test_rollout_feeds_each_prediction_back():
    model = SlotSSMForVideoPrediction(tiny_config(decoder_type="spatial_broadcast", decoder_initial_size=4)).eval()
    context = video(model.config, frames=3)
    rolled = model.rollout(context, num_steps=4)
    assert rolled.shape == (2, 4, 3, 32, 32)
    with torch.no_grad():  # the same thing through full passes over the growing clip
        clip = context
        for step in range(4):
            prediction = model(clip).predictions[:, -1:]
            torch.testing.assert_close(rolled[:, step : step + 1], prediction, rtol=1e-4, atol=1e-5)
            clip = torch.cat([clip, prediction], dim=1)


def test_depth_losses():
    model = SlotSSMForVideoDepthEstimation(tiny_config(num_dense_channels=2))
    frames = video(model.config, frames=3)
    depth = torch.rand(2, 3, 2, 32, 32) + 0.1
    out = model(frames, labels=depth)
    assert out.predicted_depth.shape == depth.shape
    torch.testing.assert_close(out.loss, F.mse_loss(out.predicted_depth, depth))
    with pytest.raises(ValueError, match=r"expected labels of shape \(2, 3, 2, 32, 32\) \(a map per frame\)"):
        model(frames, labels=depth[:, :, :1])

    log_model = SlotSSMForVideoDepthEstimation(tiny_config(dense_loss="scale_invariant"))
    depth = torch.rand(2, 3, 1, 32, 32) + 0.1
    depth[0, 0, 0, :4] = 0  # invalid pixels are ignored
    out = log_model(frames, labels=depth)
    log_prediction = out.predicted_depth.log()
    valid = depth > 0
    d = (log_prediction - depth.clamp_min(1e-12).log())[valid]
    torch.testing.assert_close(out.loss, (d**2).mean() - 0.5 * d.mean() ** 2, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="no pixel of the labels is positive"):
        scale_invariant_log_loss(torch.zeros(4), torch.zeros(4))
