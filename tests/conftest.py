"""Shared fixtures: tiny hand-built CNNs with known layer names.

Every model is built fresh per test (they are tiny) and seeded, so tests may change weights,
training modes or hooks without affecting each other.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

# every process the tests start (kernels, servers, notebooks) keeps pass results in a folder of
# this run, never in the user's ~/.cache
os.environ["CNNW_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnnw-cache-")


@pytest.fixture(autouse=True)
def _fresh_pass_cache(tmp_path, monkeypatch):
    """Each test starts with no cached pass results (on disk or in memory), so a test that counts
    batches or progress sees its own pass."""
    from cnnwidgets.core import passes

    monkeypatch.setenv("CNNW_CACHE_DIR", str(tmp_path / "cnnw-cache"))
    passes._memory.clear()
    yield
    passes._memory.clear()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of small passes (``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``): two threads fighting over the machine's
    shared cores only cost time there. Restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo():
    """The shipped MNIST demo (``cnnwidgets.demo.mnist("val")``), once per module."""
    import cnnwidgets

    return cnnwidgets.demo.mnist("val")


HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
)


def hook_count(model: nn.Module) -> int:
    """Total number of module hooks registered anywhere in ``model`` (all hook dictionaries)."""
    return sum(len(getattr(m, attr, {})) for m in model.modules() for attr in HOOK_DICTS)


def training_flags(model: nn.Module) -> dict[str, bool]:
    """The ``training`` flag of every module, root included (as ``""``)."""
    return {name: m.training for name, m in model.named_modules()}


def requires_grad_flags(model: nn.Module) -> dict[str, bool]:
    return {name: p.requires_grad for name, p in model.named_parameters()}


def _first_weight(m: nn.Module):
    for p in m.parameters():
        return p.data_ptr()
    return None


def is_run_of(m: nn.Module, target: nn.Module) -> bool:
    """Whether ``m`` is ``target`` or its counterpart in one of cnnwidgets' private views (same
    type, sharing its weights): the views run the user's model, never the user's hooks."""
    if m is target:
        return True
    w = _first_weight(target)
    return type(m) is type(target) and w is not None and _first_weight(m) == w


def view_pre_hook(target: nn.Module, fn: Callable) -> object:
    """Call ``fn(module, inputs)`` before ``target`` or its counterpart in any private view runs,
    in any thread (a global forward pre-hook); returns the handle to remove."""
    return nn.modules.module.register_module_forward_pre_hook(
        lambda m, inp: fn(m, inp) if is_run_of(m, target) else None
    )


# ---------------------------------------------------------------- model definitions
def make_seq_cnn() -> nn.Sequential:
    """Layer names '0'..'6': conv(1->4, 3x3), relu, pool, conv(4->6, 3x3), relu, flatten, linear."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),  # 0: 1x8x8 -> 4x6x6
        nn.ReLU(),  # 1
        nn.MaxPool2d(2),  # 2: -> 4x3x3
        nn.Conv2d(4, 6, 3, padding=1),  # 3: -> 6x3x3
        nn.ReLU(),  # 4
        nn.Flatten(),  # 5: -> 54
        nn.Linear(54, 3),  # 6
    )


class Block(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class NestedCNN(nn.Module):
    """Names: stem, block, block.conv1, block.act, block.conv2, head, head.0, head.1."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = Block(4, 5)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


def make_nested_cnn() -> NestedCNN:
    torch.manual_seed(1)
    return NestedCNN()


class BasicBlock(nn.Module):
    """torchvision-style residual block; ``relu`` (inplace) is called twice per forward."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(BasicBlock(4, 4))
        self.layer2 = nn.Sequential(BasicBlock(4, 8, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def make_tiny_resnet() -> TinyResNet:
    torch.manual_seed(2)
    net = TinyResNet()
    # non-trivial BatchNorm statistics, so eval and train mode give different outputs
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net.eval()


# ---------------------------------------------------------------- reference renderer
def slow_render(codes, table, columns=None, zoom=1, padding=1, background=(255, 255, 255)):
    """Slow per-pixel renderer written from the documented layout rules (and js/src/lib/tiles.js).

    Tile t at row t // cols, column t % cols; each tile zoom x its kernel size; ``padding``
    pixels between tiles, no outer border; RGB codes coloured per channel through the LUT's
    matching column, and a pixel with any NaN code (255) is drawn in lut[255].
    """
    n, kh, kw = codes.shape[:3]
    cols = columns if columns else math.ceil(math.sqrt(n))
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    cell_h, cell_w = kh * zoom + padding, kw * zoom + padding
    H, W = rows * cell_h - padding, cols * cell_w - padding
    img = np.zeros((H, W, 3), np.uint8)
    for y in range(H):
        for x in range(W):
            r, oy = divmod(y, cell_h)
            c, ox = divmod(x, cell_w)
            t = r * cols + c
            if oy >= kh * zoom or ox >= kw * zoom or t >= n:
                img[y, x] = background
                continue
            code = codes[t, oy // zoom, ox // zoom]
            if codes.ndim == 3:
                img[y, x] = table[code]
            elif (code == 255).any():
                img[y, x] = table[255]
            else:
                img[y, x] = [table[code[0], 0], table[code[1], 1], table[code[2], 2]]
    return img


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def seq_cnn() -> nn.Sequential:
    return make_seq_cnn()


@pytest.fixture
def nested_cnn() -> NestedCNN:
    return make_nested_cnn()


@pytest.fixture
def tiny_resnet() -> TinyResNet:
    return make_tiny_resnet()


@pytest.fixture
def gray_batch() -> torch.Tensor:
    """2 x 1 x 8 x 8 input for ``seq_cnn``."""
    return torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(10))


@pytest.fixture
def rgb_batch() -> torch.Tensor:
    """2 x 3 x 8 x 8 input for ``nested_cnn`` and ``tiny_resnet``."""
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(11))


@pytest.fixture
def count_hooks() -> Callable[[nn.Module], int]:
    return hook_count


@pytest.fixture
def flags() -> Callable[[nn.Module], dict[str, bool]]:
    return training_flags


@pytest.fixture
def reference_render() -> Callable[..., np.ndarray]:
    return slow_render


@pytest.fixture(scope="module")
def one_thread():
    """For a test module of tiny convolutions (the model zoo): one torch thread, faster than two
    and much faster on a busy machine; the count is restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
