"""Tests for the embedded MNIST demo (cnnwidgets.demo)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets.demo import MnistCNN, MnistDemo, load_mnist_arrays, mnist

SPLIT_SIZES = {"all": 10_000, "train": 8_000, "val": 2_000}
CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def val_demo() -> MnistDemo:
    return mnist("val")


def test_raw_arrays() -> None:
    images, labels = load_mnist_arrays()
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and labels.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0
    assert np.bincount(labels, minlength=10).tolist() == CLASS_COUNTS
    assert load_mnist_arrays() is load_mnist_arrays()  # cached


@pytest.mark.parametrize("split", ["all", "train", "val"])
def test_split_shapes_and_dtypes(split: str) -> None:
    demo = mnist(split)
    n = SPLIT_SIZES[split]
    assert isinstance(demo, MnistDemo)
    assert demo.split == split
    assert demo.images.shape == (n, 1, 28, 28)
    assert demo.images.dtype == torch.float32
    assert demo.labels.shape == (n,)
    assert demo.labels.dtype == torch.int64
    assert demo.classes == tuple(str(i) for i in range(10))
    assert demo.mean == (0.1307,) and demo.std == (0.3081,)
    assert len(demo) == n
    r = repr(demo)
    assert "tensor" not in r and len(r) < 200 and repr(split) in r


def test_default_split_is_all_and_splits_partition() -> None:
    all_, train, val = mnist(), mnist("train"), mnist("val")
    assert all_.split == "all"
    assert torch.equal(torch.cat([train.images, val.images]), all_.images)
    assert torch.equal(torch.cat([train.labels, val.labels]), all_.labels)


def test_class_counts_all() -> None:
    counts = torch.bincount(mnist("all").labels, minlength=10).tolist()
    assert counts == CLASS_COUNTS


def test_normalization(val_demo: MnistDemo) -> None:
    images, _ = load_mnist_arrays()
    raw = torch.from_numpy(images[8_000:].astype(np.float32)).unsqueeze(1)
    expected = (raw / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(val_demo.images, expected)


def test_bad_split_raises() -> None:
    with pytest.raises(ValueError) as excinfo:
        mnist("test")
    msg = str(excinfo.value)
    for word in ("'all'", "'train'", "'val'", "'test'"):
        assert word in msg


def test_model_eval_mode_cpu(val_demo: MnistDemo) -> None:
    model = val_demo.model
    assert isinstance(model, MnistCNN)
    assert not model.training
    assert all(not m.training for m in model.modules())
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_layer_names(val_demo: MnistDemo) -> None:
    modules = dict(val_demo.model.named_modules())
    for name, out_channels in [("features.0", 32), ("features.3", 64), ("features.6", 128)]:
        assert isinstance(modules[name], nn.Conv2d)
        assert modules[name].out_channels == out_channels
    assert isinstance(modules["classifier.1"], nn.Linear)
    assert modules["classifier.1"].in_features == 128 * 3 * 3
    assert modules["classifier.1"].out_features == 70
    assert isinstance(modules["classifier.4"], nn.Linear)
    assert modules["classifier.4"].out_features == 10
    relus = [m for m in val_demo.model.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)


def test_feature_map_shapes(val_demo: MnistDemo) -> None:
    with torch.no_grad():
        feats = val_demo.model.features(val_demo.images[:2])
    assert feats.shape == (2, 128, 3, 3)


def test_model_accepts_images_as_is(val_demo: MnistDemo) -> None:
    with torch.no_grad():
        logits = val_demo.model(val_demo.images[:16])
    assert logits.shape == (16, 10)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_val_accuracy(val_demo: MnistDemo) -> None:
    correct = 0
    with torch.no_grad():
        for i in range(0, len(val_demo.images), 500):
            pred = val_demo.model(val_demo.images[i : i + 500]).argmax(dim=1)
            correct += int((pred == val_demo.labels[i : i + 500]).sum())
    accuracy = correct / len(val_demo.images)
    assert accuracy >= 0.98, accuracy


def test_fresh_model_each_call() -> None:
    a, b = mnist("val"), mnist("val")
    assert a.model is not b.model
    pa, pb = dict(a.model.named_parameters()), dict(b.model.named_parameters())
    for name in pa:
        assert pa[name] is not pb[name]
        assert pa[name].data_ptr() != pb[name].data_ptr()
        assert torch.equal(pa[name], pb[name])
    # modifying one model leaves later ones untouched
    with torch.no_grad():
        a.model.features[0].weight.zero_()
    c = mnist("val")
    assert torch.equal(c.model.features[0].weight, b.model.features[0].weight)


def test_demo_is_frozen(val_demo: MnistDemo) -> None:
    with pytest.raises(AttributeError):
        val_demo.split = "train"  # type: ignore[misc]
