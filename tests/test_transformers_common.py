"""transformers' own common tests, for the installed transformers version, against every class of every family of the
zoo (SlotSSM, SAVi, STATM-SAVi, ConvS5, GrootV): `ModelTesterMixin` (saving and loading, output classes, hidden states
and attentions, gradient checkpointing, the attention implementations, initialisation, training), `ConfigTester`, and
`VideoProcessingTestMixin` for every video processor (SlotSSM's, SAVi's, shared by STATM-SAVi, and ConvS5's). The
mixins come from transformers' source distribution (tests/transformers_common_tests.py).

Skipped, as transformers' own video models skip them: tests of `inputs_embeds` and of resizing token embeddings (a
video model has neither). Every other skip below states its reason.
"""

import copy
import os
import unittest

import pytest
import torch
import transformers
from transformers.models.auto import modeling_auto
from transformers.testing_utils import torch_device
from transformers.video_utils import VideoMetadata
from transformers_common_tests import common_tests_module

from slotssm_hf import FAMILIES, ConvS5VideoProcessor, SAViVideoProcessor, SlotSSMVideoProcessor
from slotssm_hf.registry import load

try:
    ModelTesterMixin = common_tests_module("test_modeling_common").ModelTesterMixin
    floats_tensor = common_tests_module("test_modeling_common").floats_tensor
    ConfigTester = common_tests_module("test_configuration_common").ConfigTester
    video_common = common_tests_module("test_video_processing_common")
except RuntimeError as error:  # no package index reachable: only CI must have them
    if os.environ.get("CI"):
        raise
    pytest.skip(f"transformers' common tests are not available: {error}", allow_module_level=True)

FAMILY = FAMILIES["slotssm"]
MODEL_CLASSES = tuple(load(head.class_path) for head in FAMILY.heads)

# The static name tables the mixins consult to tell a base model from a head and to build labels, as a built-in
# family would appear in them.
NAME_TABLES = {
    "AutoModel": modeling_auto.MODEL_MAPPING_NAMES,
    "AutoModelForPreTraining": modeling_auto.MODEL_FOR_PRETRAINING_MAPPING_NAMES,
    "AutoModelForVideoClassification": modeling_auto.MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES,
    "AutoModelForImageClassification": modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
}
TESTED_FAMILIES = ("slotssm", "savi", "statm", "grootv", "convs5")


@pytest.fixture(autouse=True, scope="module")
def families_in_transformers_name_tables():
    entries = [
        (NAME_TABLES[head.auto_class], model_type, head.class_name)
        for model_type in TESTED_FAMILIES
        for head in FAMILIES[model_type].heads
        if head.auto_class
    ]
    for table, model_type, class_name in entries:
        table[model_type] = class_name
    yield
    for table, model_type, _ in entries:
        del table[model_type]


class ZooModelTestMixin(ModelTesterMixin):
    """transformers' common model tests as every family of the zoo runs them. A test class sets `family`,
    `model_tester_class`, `has_attentions`, `input_embeddings` (the backbone's module `get_input_embeddings` must
    return) and, for a backbone without attention heads, `config_common_properties` (as transformers' ConvNext test
    does)."""

    test_resize_embeddings = False
    config_common_properties = None

    def setUp(self):
        transformers.logging.set_verbosity_warning()  # transformers' default, which some tests read the log at
        self.model_tester = self.model_tester_class(self)
        properties = self.config_common_properties
        self.config_tester = ConfigTester(
            self, config_class=self.family.config_class, has_text_modality=False,
            **({} if properties is None else {"common_properties": properties}),
        )  # fmt: skip

    def _check_caches_are_equal(self, cache, other):
        """The recurrent state of every layer, conv and SSM state (the hook transformers' own SSM tests define)."""
        self.assertEqual(len(cache.layers), len(other.layers))
        for layer in range(len(cache.layers)):
            for state in ("get_conv_state", "get_recurrent_state"):
                mine, theirs = getattr(cache, state)(layer), getattr(other, state)(layer)
                self.assertEqual(mine is None, theirs is None)
                if mine is not None:
                    torch.testing.assert_close(mine, theirs, rtol=0, atol=0)

    def check_hidden_state_shapes(self, expected: list[tuple]):
        """`output_hidden_states`, given as an argument and through the config, returns maps of the `expected`
        shapes (the override transformers' convolutional models make of `test_hidden_states_output`)."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            for by_config in (False, True):
                config.output_hidden_states = by_config
                model = model_class(config).eval()
                with torch.no_grad():
                    outputs = model(**inputs, **({} if by_config else {"output_hidden_states": True}))
                self.assertEqual([tuple(h.shape) for h in outputs.hidden_states], expected)

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model_get_set_embeddings(self):
        """As transformers' vision and video models test it: the input embedding is the module that embeds the pixels,
        and there is no output embedding to tie."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIs(model.get_input_embeddings(), type(self).input_embeddings(model.base_model))
            self.assertIsNone(model.get_output_embeddings())

    @unittest.skip(reason="a vision or video model takes pixels, it has no inputs_embeds")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="a vision or video model takes pixels, it has no inputs_embeds")
    def test_inputs_embeds_matches_input_ids(self):
        pass


class SlotSSMModelTester:
    """A tiny SlotSSM: ViT encoder at 16 px (16 patch tokens), 3 slots of width 32, 2 blocks."""

    def __init__(self, parent, batch_size=2, num_frames=3, image_size=16, patch_size=4, num_slots=3, hidden_size=32,
                 num_hidden_layers=2, num_attention_heads=2, num_labels=3, is_training=True):  # fmt: skip
        self.parent = parent
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = 3
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_labels = num_labels
        self.is_training = is_training
        # hidden_states[i]: (batch, frames, num_slots, hidden_size); attentions[i]: (batch, frames, heads, num_slots,
        # num_tokens), the cross-attention of the slots to the frame's patch tokens.
        self.seq_length = num_slots
        self.key_length = (image_size // patch_size) ** 2
        self.num_slots = num_slots

    def get_config(self):
        return FAMILY.config(
            "vit-tiny",
            image_size=self.image_size,
            patch_size=self.patch_size,
            encoder_hidden_size=16,
            encoder_num_attention_heads=2,
            num_slots=self.num_slots,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            cross_attention_num_heads=self.num_attention_heads,
            mamba_d_state=8,
            mamba_headdim=16,
            decoder_hidden_size=16,
            decoder_num_attention_heads=2,
            num_labels=self.num_labels,
        )

    def prepare_config_and_inputs_for_common(self):
        shape = [self.batch_size, self.num_frames, self.num_channels, self.image_size, self.image_size]
        return self.get_config(), {"pixel_values_videos": floats_tensor(shape)}


class SlotSSMModelTest(ZooModelTestMixin, unittest.TestCase):
    family = FAMILY
    model_tester_class = SlotSSMModelTester
    all_model_classes = MODEL_CLASSES
    has_attentions = True
    input_embeddings = staticmethod(lambda backbone: backbone.encoder.patch_embedding)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = copy.deepcopy(inputs_dict)
        if return_labels and model_class.__name__.endswith("VideoClassification"):
            inputs_dict["labels"] = torch.zeros(self.model_tester.batch_size, dtype=torch.long, device=torch_device)
        if return_labels and model_class.__name__.endswith("DepthEstimation"):  # the one head without a default target
            # positive maps, the same for the same inputs (some tests compare two calls)
            inputs_dict["labels"] = inputs_dict["pixel_values_videos"][:, :, :1].abs() + 0.5
        return inputs_dict


class ZooVideoProcessingTester:
    """Videos of 4 frames between 24 and 48 px, resized to a short side of 20 and cropped to 18 x 18. The processor
    gives frames of `output_channels` channels, or of as many as the input videos have (`num_channels`) when None."""

    def __init__(self, parent, output_channels=None, batch_size=3, num_frames=4, min_resolution=24, max_resolution=48):
        self.parent = parent
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.num_channels = 3
        self.output_channels = output_channels
        self.min_resolution = min_resolution
        self.max_resolution = max_resolution
        self.size = {"shortest_edge": 20}
        self.crop_size = {"height": 18, "width": 18}

    def prepare_video_processor_dict(self):
        return {"size": self.size, "crop_size": self.crop_size, "num_frames": self.num_frames}

    def expected_output_video_shape(self, videos):
        channels = self.num_channels if self.output_channels is None else self.output_channels
        return self.num_frames, channels, self.crop_size["height"], self.crop_size["width"]

    def prepare_video_inputs(self, equal_resolution=False, return_tensors="pil"):
        return video_common.prepare_video_inputs(
            batch_size=self.batch_size,
            num_frames=self.num_frames,
            num_channels=self.num_channels,
            min_resolution=self.min_resolution,
            max_resolution=self.max_resolution,
            equal_resolution=equal_resolution,
            return_tensors=return_tensors,
        )


class ZooVideoProcessingTestMixin(video_common.VideoProcessingTestMixin):
    """transformers' video processor tests as every processor of the zoo (a `ZooVideoProcessor`) runs them. A test
    class sets `fast_video_processing_class` and, when its frames are not RGB, `output_channels`."""

    input_name = "pixel_values_videos"
    output_channels = None

    def setUp(self):
        super().setUp()
        self.video_processor_tester = ZooVideoProcessingTester(self, output_channels=self.output_channels)

    @property
    def video_processor_dict(self):
        return self.video_processor_tester.prepare_video_processor_dict()

    def test_call_sample_frames(self):
        """transformers' version with the zoo's clip semantics (`ZooVideoProcessor`), which follow the official data
        pipelines where transformers' default sampling differs: a clip is always `num_frames` long, `fps` spaces its
        frames (rather than setting how many are taken: duration x fps), and a video shorter than the clip is padded
        with its last frame (counted in `padded_frames`) rather than refused. The rest of the test holds as written."""
        processor = self.fast_video_processing_class(**self.video_processor_dict)
        self.video_processor_tester.num_frames = 8
        videos = self.video_processor_tester.prepare_video_inputs(equal_resolution=False, return_tensors="torch")
        self.video_processor_tester.num_frames = self.video_processor_dict["num_frames"]

        processor.do_sample_frames = False  # no sampling even when num_frames is given
        self.assertEqual(processor(videos[0], num_frames=3)[self.input_name].shape[1], 8)
        self.assertEqual(processor(videos, num_frames=3)[self.input_name].shape[1], 8)
        processor.do_sample_frames = True
        self.assertEqual(processor(videos[0], num_frames=3)[self.input_name].shape[1], 3)
        self.assertEqual(processor(videos, num_frames=3)[self.input_name].shape[1], 3)

        with self.assertRaises(ValueError):  # fps needs the video's frame rate
            processor.sample_frames(metadata=VideoMetadata(total_num_frames=8), fps=3)
        for metadata in ({"duration": 2.0, "total_num_frames": 8, "fps": 4}, VideoMetadata(total_num_frames=8, fps=8)):
            sampled = processor(videos[0], num_frames=3, fps=4, video_metadata=[[metadata]], return_metadata=True)
            stride = round(metadata["fps"] if isinstance(metadata, dict) else metadata.fps) // 4
            self.assertEqual(sampled["video_metadata"][0].frames_indices, [0, stride, 2 * stride])

        padded = processor(videos[0], num_frames=10)
        self.assertEqual(padded[self.input_name].shape[1], 10)
        self.assertEqual(padded["padded_frames"].tolist(), [2])


class SlotSSMVideoProcessingTest(ZooVideoProcessingTestMixin, unittest.TestCase):
    fast_video_processing_class = SlotSSMVideoProcessor


class SAViVideoProcessingTest(ZooVideoProcessingTestMixin, unittest.TestCase):
    """SAVi's processor, which STATM-SAVi shares: frames in [0, 1], not normalised."""

    fast_video_processing_class = SAViVideoProcessor


class ConvS5VideoProcessingTest(ZooVideoProcessingTestMixin, unittest.TestCase):
    """ConvS5's processor: grayscale frames (the luma of colour ones) in [-1, 1]."""

    fast_video_processing_class = ConvS5VideoProcessor
    output_channels = 1

    def test_call_numpy_4_channels(self):
        """transformers' version expects `do_convert_rgb` to give 3 channels; ConvS5's processor converts the
        4-channel frames to RGB and then to their luma, one channel. The rest of the test holds as written."""
        processor = self.fast_video_processing_class(**self.video_processor_dict)
        self.video_processor_tester.num_channels = 4
        videos = self.video_processor_tester.prepare_video_inputs(equal_resolution=False, return_tensors="pil")
        options = {"return_tensors": "pt", "input_data_format": "channels_last", "image_mean": 0.0, "image_std": 1.0}
        shape = self.video_processor_tester.expected_output_video_shape(videos)
        self.assertEqual(tuple(processor(videos[0], **options)[self.input_name].shape), (1, *shape))
        batch = self.video_processor_tester.batch_size
        self.assertEqual(tuple(processor(videos, **options)[self.input_name].shape), (batch, *shape))


SAVI = FAMILIES["savi"]


class SAViModelTester:
    """A tiny SAVi on two 16 px frames: a two-layer CNN at stride 2 (8 x 8 = 64 tokens), 4 slots of width 16 from 3
    first-frame boxes, two-head slot attention, one iteration per frame (so that the maps it records are as few as the
    2 layers transformers' `test_num_layers_is_small` allows; several iterations are tested in
    tests/models/savi), the frames as the decoder's target (so the reconstruction head has a loss without labels).
    Seven videos: transformers' eager-versus-SDPA test fills every input up to seven with uniform noise, which makes no
    boxes (ymin <= ymax, xmin <= xmax)."""

    family = SAVI

    def __init__(self, parent, batch_size=7, num_frames=2, image_size=16, num_slots=4, slot_size=16,
                 num_attention_heads=2, iterations=1, is_training=True):  # fmt: skip
        self.parent = parent
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.image_size = image_size
        self.num_channels = 3
        self.num_slots = num_slots
        self.hidden_size = slot_size
        self.num_attention_heads = num_attention_heads
        self.iterations = iterations
        self.is_training = is_training
        # What the common tests check of the recorded outputs (see SAViModelOutput): one slot-attention map
        # (batch, heads, num_slots, num_tokens) per frame and iteration; the slots the first frame starts from, then
        # each frame's corrected and predicted slots (batch, num_slots, slot_size).
        self.num_hidden_layers = num_frames * iterations
        self.expected_num_hidden_layers = 2 * num_frames + 1
        self.seq_length = num_slots
        self.key_length = (image_size // 2) ** 2

    def get_config(self):
        return self.family.config(
            "tiny",
            image_size=self.image_size,
            encoder_features=[8, 8],
            encoder_strides=[2, 1],
            encoder_mlp_size=8,
            num_slots=self.num_slots,
            slot_size=self.hidden_size,
            initializer_mlp_size=16,
            slot_attention_qkv_size=8,
            slot_attention_num_heads=self.num_attention_heads,
            slot_attention_iterations=self.iterations,
            predictor_num_heads=self.num_attention_heads,
            predictor_qkv_size=8,
            predictor_mlp_size=16,
            decoder_broadcast_size=4,
            decoder_features=[8, 8, 8],
            decoder_kernel_sizes=[3, 3, 3],
            decoder_strides=[2, 2, 1],
            decoder_transposed=[True, True, False],
            targets={"video": 3},
            num_frames=self.num_frames,
        )

    def prepare_config_and_inputs_for_common(self):
        shape = [self.batch_size, self.num_frames, self.num_channels, self.image_size, self.image_size]
        # First-frame boxes (ymin, xmin, ymax, xmax) in [0, 1] for the conditional initialiser.
        corners = floats_tensor([self.batch_size, self.num_slots - 1, 2, 2]).sort(dim=2).values
        boxes = corners.flatten(2)
        return self.get_config(), {"pixel_values_videos": floats_tensor(shape), "boxes": boxes}


class SAViModelTest(ZooModelTestMixin, unittest.TestCase):
    family = SAVI
    model_tester_class = SAViModelTester
    all_model_classes = tuple(load(head.class_path) for head in SAVI.heads)
    has_attentions = True
    additional_model_inputs = ["boxes"]  # besides the frames, for the tests that build their own inputs
    config_common_properties = ["num_channels", "num_slots", "slot_size"]  # slots, not hidden_size and layers
    input_embeddings = staticmethod(lambda backbone: backbone.encoder.backbone.convs[0])

    def test_can_capture_specific_layers_hidden_states(self):
        """transformers skips this test when hidden states are recorded from several module classes (here the
        corrector's and the predictor's outputs), as it cannot tell in general how their indices interleave; they
        count in call order across both, so selecting some works as the test expects: those of the full capture, None
        for the others. Negative indices need the number of hidden states, which depends on the number of frames and
        not on the config: they are refused, naming the reason."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            with self.subTest(model_class.__name__):
                model = model_class(copy.deepcopy(config)).to(torch_device).eval()
                inputs = self._prepare_for_class(inputs_dict, model_class)
                with torch.no_grad():
                    hidden_states = model(**inputs, output_hidden_states=True).hidden_states
                    kept = list(range(0, len(hidden_states), 2))
                    captured = model(**inputs, output_hidden_states=kept).hidden_states
                self.assertEqual(len(captured), len(hidden_states))
                for i, (mine, full) in enumerate(zip(captured, hidden_states)):
                    if i in kept:
                        torch.testing.assert_close(mine, full)
                    else:
                        self.assertIsNone(mine)
                with self.assertRaisesRegex(ValueError, "negative indices"):
                    model(**inputs, output_hidden_states=[-1])


STATM = FAMILIES["statm"]


class STATMModelTester(SAViModelTester):
    """SAVi's tiny tester with STATM's predictor (memory of every frame)."""

    family = STATM


class STATMModelTest(SAViModelTest):
    family = STATM
    model_tester_class = STATMModelTester
    all_model_classes = tuple(load(head.class_path) for head in STATM.heads)


GROOTV = FAMILIES["grootv"]


class GrootVModelTester:
    """A tiny GrootV: 32 px images, four levels of widths 16-128."""

    def __init__(self, parent, batch_size=2, image_size=32, num_labels=3, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.num_labels = num_labels
        self.is_training = is_training
        self.embed_dim = 16
        self.num_levels = 4

    def get_config(self):
        return GROOTV.config("tiny", embed_dim=self.embed_dim, depths=[1] * self.num_levels,
                             num_labels=self.num_labels, image_size=self.image_size)  # fmt: skip

    def prepare_config_and_inputs_for_common(self):
        shape = [self.batch_size, 3, self.image_size, self.image_size]
        return self.get_config(), {"pixel_values": floats_tensor(shape)}


class GrootVModelTest(ZooModelTestMixin, unittest.TestCase):
    family = GROOTV
    model_tester_class = GrootVModelTester
    all_model_classes = tuple(load(head.class_path) for head in GROOTV.heads)
    has_attentions = False
    config_common_properties = ["num_channels", "embed_dim"]  # no hidden_size or attention heads
    input_embeddings = staticmethod(lambda backbone: backbone.stem)

    def test_hidden_states_output(self):
        """The stem's output and every level's features, channels first, at strides 4, 4, 8, 16, 32."""
        batch, size, width = self.model_tester.batch_size, self.model_tester.image_size, self.model_tester.embed_dim
        self.check_hidden_state_shapes([(batch, width, size // 4, size // 4)] + [
            (batch, width * 2**level, size // 2 ** (level + 2), size // 2 ** (level + 2))
            for level in range(self.model_tester.num_levels)
        ])  # fmt: skip


CONVS5 = FAMILIES["convs5"]


class ConvS5ModelTester:
    """A tiny ConvS5: 16 px frames in [-1, 1], two ConvS5 layers of width 16."""

    def __init__(self, parent, batch_size=2, num_frames=3, image_size=16, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.image_size = image_size
        self.is_training = is_training
        self.num_hidden_layers = 2

    def get_config(self):
        return CONVS5.config(
            "tiny", image_size=self.image_size, encoder_depths=[8, 16], decoder_depths=[8, 16], resnet_num_groups=4,
            hidden_size=16, num_hidden_layers=self.num_hidden_layers, ssm_size=16, ssm_num_groups=4,
            num_frames=self.num_frames, num_context_frames=2,
        )  # fmt: skip

    def prepare_config_and_inputs_for_common(self):
        shape = [self.batch_size, self.num_frames, 1, self.image_size, self.image_size]
        return self.get_config(), {"pixel_values_videos": floats_tensor(shape) * 2 - 1}


class ConvS5ModelTest(ZooModelTestMixin, unittest.TestCase):
    family = CONVS5
    model_tester_class = ConvS5ModelTester
    all_model_classes = tuple(load(head.class_path) for head in CONVS5.heads)
    has_attentions = False
    config_common_properties = ["num_channels", "hidden_size", "num_hidden_layers"]  # no attention heads
    input_embeddings = staticmethod(lambda backbone: backbone.encoder.conv_in)

    def test_hidden_states_output(self):
        """The first layer's input and every layer's output: feature maps (batch, frames, hidden_size, latent_size,
        latent_size)."""
        tester, config = self.model_tester, self.model_tester.get_config()
        shape = (tester.batch_size, tester.num_frames, config.hidden_size, config.latent_size, config.latent_size)
        self.check_hidden_state_shapes([shape] * (config.num_hidden_layers + 1))
