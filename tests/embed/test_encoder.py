"""The lesion encoder: shapes, location features, checkpoints that rebuild the model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from embed.config import FAST
from embed.encoder import LesionEncoder, LocationFeatures, load_encoder, save_encoder
from patientgraph.errors import InputError


def _encoder(**changes) -> LesionEncoder:
    torch.manual_seed(0)
    return LesionEncoder(dataclasses.replace(FAST.encoder, **changes), FAST.crop).eval()


def _crops(n: int = 4) -> torch.Tensor:
    return torch.randn(n, FAST.crop.depth, FAST.crop.out_px, FAST.crop.out_px) * 300


def test_output_is_unit_norm_128d():
    z = _encoder()(_crops(), torch.rand(4, 3))
    assert z.shape == (4, 128)
    assert torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-5)


def test_location_changes_the_embedding_and_may_be_missing():
    encoder, hu = _encoder(), _crops(2)
    with torch.no_grad():
        a = encoder(hu, torch.tensor([[0.2, 0.5, 0.3], [0.2, 0.5, 0.3]]))
        b = encoder(hu, torch.tensor([[0.8, 0.5, 0.9], [0.2, 0.5, 0.3]]))
        unknown = encoder(hu)
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
    assert torch.isfinite(unknown).all()
    features = LocationFeatures()(torch.tensor([[0.1, 0.2, 0.3], [float("nan"), 0.2, 0.3]]))
    assert features.shape == (2, LocationFeatures().width)
    assert features[1, :-1].abs().sum() == 0 and features[:, -1].tolist() == [0, 1]


def test_image_only_encoder_ignores_location():
    encoder, hu = _encoder(location_input=False), _crops(1)
    with torch.no_grad():
        assert torch.equal(encoder(hu, torch.rand(1, 3)), encoder(hu))


def test_checkpoint_rebuilds_the_model(tmp_path):
    encoder = _encoder()
    path = save_encoder(encoder, tmp_path / "models" / "lesion_encoder.pt", {"epochs": 2})
    loaded = load_encoder(path, expect_crop=FAST.crop, expect_encoder=FAST.encoder)
    hu, loc = _crops(), torch.rand(4, 3)
    with torch.no_grad():
        assert torch.equal(loaded(hu, loc), encoder(hu, loc))


def test_incompatible_checkpoint_is_a_clear_error(tmp_path):
    path = save_encoder(_encoder(), tmp_path / "lesion_encoder.pt")
    other_crop = dataclasses.replace(FAST.crop, size_mm=80.0)
    with pytest.raises(InputError, match=r"crop\.size_mm is 64\.0, not 80\.0"):
        load_encoder(path, expect_crop=other_crop)
    with pytest.raises(InputError, match=r"encoder\.widths"):
        load_encoder(path, expect_encoder=dataclasses.replace(FAST.encoder, widths=(8, 8, 8, 8)))


def test_files_that_are_not_checkpoints(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_encoder(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot be read as an encoder checkpoint"):
        load_encoder(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a PatientGraph lesion-encoder checkpoint"):
        load_encoder(tmp_path / "other.pt")


def test_context_view_feeds_the_network_and_round_trips(tmp_path):
    crop = dataclasses.replace(FAST.crop, context_mm=160.0)
    torch.manual_seed(0)
    encoder = LesionEncoder(FAST.encoder, crop).eval()
    hu = torch.randn(3, crop.depth, crop.out_px, crop.out_px) * 300
    changed = hu.clone()
    changed[:, -1] += 400.0  # only the wide view differs
    with torch.no_grad():
        z, z_changed = encoder(hu), encoder(changed)
    assert crop.depth == 4 and z.shape == (3, 128)
    assert not torch.allclose(z, z_changed)
    path = save_encoder(encoder, tmp_path / "lesion_encoder.pt")
    with torch.no_grad():
        assert torch.equal(load_encoder(path, expect_crop=crop)(hu), z)
    with pytest.raises(InputError, match=r"crop\.context_mm is 160\.0, not None"):
        load_encoder(path, expect_crop=dataclasses.replace(crop, context_mm=None))
