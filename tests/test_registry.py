"""The registry is the one table of families and heads: every model class of a family is in it, and Auto
registration, saved folders' auto_map and the train job's choices follow from it."""

import inspect
import json
import sys

import pytest
import transformers

from slotssm_hf.registry import FAMILIES, family_of, head_of, load


def smallest_config(family):
    """The config of the family's variant with the fewest parameters (built on the meta device to count)."""
    import torch

    def size(variant):
        with torch.device("meta"):
            return load(family.heads[0].class_path)(family.config(variant)).num_parameters()

    return family.config(min(family.variants, key=size))


@pytest.mark.parametrize("family", FAMILIES.values(), ids=list(FAMILIES))
def test_every_model_class_of_a_family_is_in_its_table(family):
    base = load(family.base_path)
    module = sys.modules[base.__module__]
    defined = {
        name for name, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, base) and cls is not base and cls.__module__ == module.__name__
    }  # fmt: skip
    assert defined == {head.class_name for head in family.heads}


@pytest.mark.parametrize("family", FAMILIES.values(), ids=list(FAMILIES))
def test_auto_classes_build_the_registered_heads(family):
    config = smallest_config(family)
    assert type(transformers.AutoConfig.for_model(family.model_type)) is family.config_class
    for head in family.heads:
        if head.auto_class:
            model = getattr(transformers, head.auto_class).from_config(config)
            assert type(model).__name__ == head.class_name


@pytest.mark.parametrize("family", FAMILIES.values(), ids=list(FAMILIES))
def test_a_saved_folder_maps_every_auto_class_of_its_family(family, tmp_path):
    config = smallest_config(family)
    load(family.heads[0].class_path)(config).save_pretrained(tmp_path)  # the backbone: the other heads are mapped too
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == family.auto_map()


def test_unknown_names_are_refused_naming_what_exists():
    with pytest.raises(ValueError, match="its families: .*slotssm"):
        family_of("savi-typo")
    with pytest.raises(ValueError, match="no variant 'huge'; its variants: .*tiny"):
        FAMILIES["slotssm"].config("huge")
    with pytest.raises(ValueError, match="NotAModel is not a model class"):
        head_of("NotAModel")


def test_train_job_offers_the_heads_and_variants_of_the_table():
    from slotssm_hf.cli import UsageError
    from slotssm_hf.training.train import parse_args

    expected = ", ".join(FAMILIES["slotssm"].train_heads())
    with pytest.raises(UsageError, match=f"--head 'depth' is not one of slotssm's: {expected}"):
        parse_args(["--head", "depth"])
    assert parse_args(["--model-size", "small"]).model_size == "small"
