"""digits upsampled to 28x28 (``dataset_options: {size: 28}``): MNIST's shape, so the FOGZO
paper's 784-10-10 MLP (d = 7,960) runs offline on the same examples, split and labels."""

import pytest
import torch
import torch.nn.functional as F

from trainers.data import DatasetError, load_dataset
from trainers.models.registry import build_model


def test_size_28_is_the_same_split_upsampled():
    small, big = load_dataset("digits"), load_dataset("digits", size=28)
    assert small.input_shape == (1, 8, 8) and big.input_shape == (1, 28, 28)
    assert torch.equal(small.train_y, big.train_y) and torch.equal(small.test_y, big.test_y)
    # Area-downsampling the 28x28 images back to 8x8 gives (up to the standardisation's
    # affine map) the originals: same images, same orientation, no shuffle.
    back = F.adaptive_avg_pool2d(big.train_x, 8).flatten(1)
    orig = small.train_x.flatten(1)
    per_image = torch.nn.functional.cosine_similarity(
        back - back.mean(1, keepdim=True), orig - orig.mean(1, keepdim=True), dim=1
    )
    assert per_image.min() > 0.9
    assert abs(float(big.train_x.mean())) < 1e-4 and float(big.train_x.std()) == pytest.approx(
        1, abs=1e-3
    )


def test_the_papers_mlp_on_28x28_digits_has_d_7960():
    data = load_dataset("digits", size=28)
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=10)
    assert sum(p.numel() for p in model.parameters()) == 7960


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "28"])
def test_a_bad_size_is_one_line(size):
    with pytest.raises(DatasetError, match="digits: option size=.* must be a positive integer"):
        load_dataset("digits", size=size)
