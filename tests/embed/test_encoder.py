"""The lesion encoder: shapes, location and reading-window features, checkpoints that
rebuild the model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from embed.config import FAST
from embed.crops import METADATA
from embed.encoder import (
    LesionEncoder,
    LocationFeatures,
    ReadingWindowFeatures,
    load_encoder,
    read_checkpoint,
    save_encoder,
)
from patientgraph.errors import InputError


def _encoder(**changes) -> LesionEncoder:
    torch.manual_seed(0)
    return LesionEncoder(dataclasses.replace(FAST.encoder, **changes), FAST.crop).eval()


def _crops(n: int = 4) -> torch.Tensor:
    return torch.randn(n, FAST.crop.depth, FAST.crop.out_px, FAST.crop.out_px) * 300


def _metadata(n: int = 4) -> torch.Tensor:
    """Random locations and a soft-tissue reading window, ``(n, len(METADATA))``."""
    return torch.cat([torch.rand(n, 3), torch.tensor([[-175.0, 275.0]]).repeat(n, 1)], 1)


def _rows(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_output_is_unit_norm_128d():
    z = _encoder()(_crops(), _metadata())
    assert z.shape == (4, 128)
    assert torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-5)


def test_location_changes_the_embedding_and_may_be_missing():
    encoder, hu = _encoder(), _crops(2)
    with torch.no_grad():
        a = encoder(hu, _rows([0.2, 0.5, 0.3, -175, 275], [0.2, 0.5, 0.3, -175, 275]))
        b = encoder(hu, _rows([0.8, 0.5, 0.9, -175, 275], [0.2, 0.5, 0.3, -175, 275]))
        unknown = encoder(hu)
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
    assert torch.isfinite(unknown).all()
    features = LocationFeatures()(torch.tensor([[0.1, 0.2, 0.3], [float("nan"), 0.2, 0.3]]))
    assert features.shape == (2, LocationFeatures().width)
    assert features[1, :-1].abs().sum() == 0 and features[:, -1].tolist() == [0, 1]


def test_reading_window_changes_the_embedding_and_may_be_missing():
    encoder, hu = _encoder(), _crops(2)
    with torch.no_grad():
        lung = encoder(hu, _rows([0.2, 0.5, 0.3, -1350, 150], [0.2, 0.5, 0.3, -175, 275]))
        soft = encoder(hu, _rows([0.2, 0.5, 0.3, -175, 275], [0.2, 0.5, 0.3, -175, 275]))
    assert not torch.allclose(lung[0], soft[0]) and torch.allclose(lung[1], soft[1])
    features = ReadingWindowFeatures()(_rows([-1350, 150], [-450, 1050], [float("nan"), 240]))
    assert features.shape == (3, ReadingWindowFeatures.width)
    assert torch.allclose(features[0], _rows([-0.6, 1.5, 0.0])[0])
    assert torch.allclose(features[1], _rows([0.3, 1.5, 0.0])[0])
    assert features[2].tolist() == [0.0, 0.0, 1.0]


def test_image_only_encoder_ignores_location_and_window():
    encoder, hu = _encoder(location_input=False, window_input=False), _crops(1)
    with torch.no_grad():
        assert torch.equal(encoder(hu, _metadata(1)), encoder(hu))


def test_metadata_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=f"metadata must be \\(batch, {len(METADATA)}\\)"):
        _encoder()(_crops(2), torch.rand(2, 3))


def test_checkpoint_rebuilds_the_model(tmp_path):
    encoder = _encoder()
    path = save_encoder(encoder, tmp_path / "models" / "lesion_encoder.pt", {"epochs": 2})
    loaded = load_encoder(path, expect_crop=FAST.crop, expect_encoder=FAST.encoder)
    hu, meta = _crops(), _metadata()
    with torch.no_grad():
        assert torch.equal(loaded(hu, meta), encoder(hu, meta))


@pytest.mark.parametrize("option", ["window_input", "centre"])
def test_checkpoint_from_before_an_option_loads_without_it(tmp_path, option):
    encoder = _encoder(**{option: False})
    path = save_encoder(encoder, tmp_path / "lesion_encoder.pt")
    payload = read_checkpoint(path)
    del payload["encoder"][option]  # as written before the option existed
    torch.save(payload, path)
    loaded = load_encoder(path)
    assert getattr(loaded.encoder_config, option) is False
    hu, meta = _crops(), _metadata()
    with torch.no_grad():
        assert torch.equal(loaded(hu, meta), encoder(hu, meta))
    with pytest.raises(InputError, match=f"encoder.{option} is False, not True"):
        load_encoder(path, expect_encoder=FAST.encoder)


def test_centring_subtracts_the_training_mean_and_round_trips(tmp_path):
    encoder, hu, meta = _encoder(), _crops(6), _metadata(6)
    with torch.no_grad():
        raw = encoder(hu, meta)  # the centre is zero until training sets it
        encoder.set_centre(raw)
        centred = encoder(hu, meta)
    expected = torch.nn.functional.normalize(raw - raw.mean(dim=0), dim=1)
    assert torch.allclose(centred, expected, atol=1e-6)
    assert torch.allclose(centred.norm(dim=1), torch.ones(6), atol=1e-5)
    assert centred.mean(dim=0).norm() < raw.mean(dim=0).norm()
    path = save_encoder(encoder, tmp_path / "lesion_encoder.pt")
    with torch.no_grad():
        assert torch.equal(load_encoder(path)(hu, meta), centred)  # the centre is saved
    with pytest.raises(ValueError, match=r"\(n > 0, 128\) embeddings, not \(6, 64\)"):
        encoder.set_centre(raw[:, :64])
    plain = _encoder(centre=False)
    assert plain.mean_embedding is None and "mean_embedding" not in plain.state_dict()
    with pytest.raises(ValueError, match="built without centre"):
        plain.set_centre(raw)


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


@pytest.mark.parametrize(("size_mm", "out_px", "scale", "slices"),
                         [(96.0, 16, 1.0, 3), (256.0, 12, 256 / 96, 1)])
def test_context_signature_is_each_rings_share_at_or_above_each_threshold(size_mm, out_px,
                                                                          scale, slices):
    import numpy as np

    from embed.encoder import ContextSignature

    sig = ContextSignature(size_mm, out_px, scale)
    hu = torch.rand(3, slices, out_px, out_px) * 1800 - 1100
    hu[0, 0, 0, :4] = torch.tensor([-600.0, 500.0, 499.9, -30.0])  # on and beside thresholds
    got = sig(hu).numpy().reshape(3, -1, len(ContextSignature.THRESHOLDS_HU))
    # the definition, pixel by pixel: distance from the centre in mm, ring by ring
    centre = (out_px - 1) / 2
    yy, xx = np.meshgrid(np.arange(out_px), np.arange(out_px), indexing="ij")
    radius = np.hypot(yy - centre, xx - centre) * size_mm / out_px
    edges = [*(np.array(ContextSignature.RINGS_MM) * scale), np.inf]
    rings = [(radius >= lo) & (radius < hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    rings = [r for r in rings if r.any()]
    assert got.shape[1] == len(rings)
    values = hu.numpy()
    for b in range(3):
        for r, ring in enumerate(rings):
            for t, threshold in enumerate(ContextSignature.THRESHOLDS_HU):
                expected = (values[b][:, ring] >= threshold).mean()
                assert got[b, r, t] == pytest.approx(expected, abs=1e-6)
