"""Random views: shapes, reproducibility and that a view stays close to its crop."""

from __future__ import annotations

import torch

from embed.augment import ViewConfig, random_view


def _crops() -> torch.Tensor:
    hu = torch.full((4, 3, 32, 32), -100.0)
    hu[:, :, 10:22, 12:20] = 60.0  # a lesion-like block
    return hu


def test_random_view_is_reproducible_with_a_seeded_generator():
    a = random_view(_crops(), torch.Generator().manual_seed(3))
    b = random_view(_crops(), torch.Generator().manual_seed(3))
    c = random_view(_crops(), torch.Generator().manual_seed(4))
    assert a.shape == (4, 3, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_identity_view_config_changes_nothing():
    none = ViewConfig(max_rotation_deg=0, max_scale=0, max_shift=0, flip_p=0, slice_flip_p=0,
                      hu_offset=0, hu_gain=0, noise_hu=0)
    hu = _crops()
    assert torch.allclose(random_view(hu, torch.Generator().manual_seed(0), none), hu, atol=1e-3)


def test_default_view_keeps_the_lesion_in_place():
    hu = _crops()
    view = random_view(hu, torch.Generator().manual_seed(0))
    inside = view[:, :, 13:19, 14:18].mean()
    outside = view[:, :, :4, :4].mean()
    assert inside > 0 > outside


def test_slice_flip_leaves_the_context_view_last():
    flip_only = ViewConfig(max_rotation_deg=0, max_scale=0, max_shift=0, flip_p=0,
                           slice_flip_p=1.0, hu_offset=0, hu_gain=0, noise_hu=0)
    hu = torch.arange(4.0).view(1, 4, 1, 1).expand(2, 4, 8, 8).contiguous()
    view = random_view(hu, torch.Generator().manual_seed(0), flip_only, n_slices=3)
    assert view[:, :, 4, 4].tolist() == [[2.0, 1.0, 0.0, 3.0]] * 2
    every = random_view(hu, torch.Generator().manual_seed(0), flip_only)
    assert every[:, :, 4, 4].tolist() == [[3.0, 2.0, 1.0, 0.0]] * 2
