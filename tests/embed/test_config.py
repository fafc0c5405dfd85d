"""Stage options: presets, nested overrides and typos."""

from __future__ import annotations

import pytest

from embed.config import FAST, EmbedConfig, crop_from_dict
from patientgraph.errors import InputError


def test_defaults_and_presets():
    assert EmbedConfig.from_dict({}) == EmbedConfig()
    assert EmbedConfig.from_dict({"preset": "fast"}) == FAST
    assert EmbedConfig().crop.channels == 12  # 3 slices and the context view, 3 windows each
    assert EmbedConfig().encoder.embedding_dim == 128


def test_nested_overrides_and_round_trip():
    cfg = EmbedConfig.from_dict({"preset": "fast", "train": {"max_epochs": 7},
                                 "crop": {"windows": ["lung", "bone"]},
                                 "weights": {"imaging": 1.0, "records": 0.0}})
    assert cfg.train.max_epochs == 7 and cfg.train.batch_size == FAST.train.batch_size
    assert cfg.crop.windows == ("lung", "bone")
    d = cfg.to_dict()
    assert d["weights"] == {"imaging": 1.0, "records": 0.0}
    assert crop_from_dict(d["crop"]) == cfg.crop
    older = {k: v for k, v in d["crop"].items() if k != "context_mm"}
    assert crop_from_dict(older).context_mm is None


@pytest.mark.parametrize("config, message", [
    ({"trian": {}}, "unknown option embed.trian. Did you mean 'train'"),
    ({"train": {"max_epoch": 3}}, "embed.train.max_epoch. Did you mean 'max_epochs'"),
    ({"preset": "fsat"}, "Did you mean 'fast'"),
    ({"train": 3}, "must be a mapping"),
    ({"crop": {"context_mm": -96}}, "crop.context_mm is -96"),
    ({"crop": {"size_mm": "wide"}}, "crop.size_mm is 'wide'"),
    ({"weights": [1, 2]}, "not a mapping"),
    ({"on_image_error": "skp"}, "Did you mean 'skip'"),
    ({"train": {"keep": "lats"}}, "train.keep is 'lats'. Did you mean 'last'"),
    ({"train": {"round_start": "previus"}}, "round_start is 'previus'. Did you mean 'previous'"),
    ({"train": {"rounds": 0}}, "train.rounds is 0"),
    ({"train": {"rounds": "two"}}, "train.rounds is 'two'"),
    ({"train": {"pseudo_label_threshold": 95}}, "pseudo_label_threshold is 95"),
    ({"train": {"pseudo_label_threshold": "0.9"}}, "pseudo_label_threshold is '0.9'"),
    ({"train": {"validation_share": 1.0}}, "validation_share is 1.0.*less than 1"),
    ({"train": {"labelled_share": -0.1}}, "labelled_share is -0.1"),
    ({"train": {"pseudo_label_patient_mix": -1}}, "pseudo_label_patient_mix is -1"),
])
def test_bad_options_are_input_errors(config, message):
    with pytest.raises(InputError, match=message):
        EmbedConfig.from_dict(config)
