"""Layer defaults per view (cnnwidgets.core.layers): known answers on small hand-built models
that mirror torchvision's ResNet, GoogLeNet, DenseNet and VGG, a ViT, a dict-output model and
squeeze-and-excitation / shortcut nets; the user's model is left as it was found."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnwidgets.core import default_feature_layer, extract_features
from cnnwidgets.core.layers import (
    cam_layer,
    feature_layer,
    last_conv_layer,
    not_a_cnn_notice,
    optimizer_layer,
    patch_embedding_only,
    view_defaults,
)
from tests.conftest import BasicBlock, hook_count, requires_grad_flags, training_flags, view_pre_hook


# ---------------------------------------------------------------- torchvision-like ResNet
class ResNetLike(nn.Module):
    """torchvision names: conv1, bn1, relu, maxpool, layer1..layer4 (2 BasicBlocks each), avgpool, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [(4, 4, 1), (4, 8, 2), (8, 8, 2), (8, 16, 2)]
        for i, (cin, cout, stride) in enumerate(widths, 1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------- GoogLeNet-like: an aux head that runs in training only
class Inception(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch1 = nn.Conv2d(cin, 8, 1)
        self.branch2 = nn.Sequential(nn.Conv2d(cin, 8, 1), nn.Conv2d(8, 8, 3, padding=1))
        self.branch3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, 8, 1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class AuxHead(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, 8, 1)
        self.fc = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x):
        x = self.conv(F.adaptive_avg_pool2d(x, (2, 2)))
        return self.fc(torch.flatten(x, 1))


class GoogLeNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(2)
        self.inception = Inception(16)
        self.aux1 = AuxHead(24)  # registered after the main convs, runs only in training
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = self.maxpool2(self.conv2(self.maxpool1(self.conv1(x))))
        x = self.inception(x)
        aux = self.aux1(x) if self.training else None
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        return (x, aux) if self.training else x


# ---------------------------------------------------------------- DenseNet-like: functional relu + pooling before the classifier
class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(2 * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, n: int, cin: int, growth: int) -> None:
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth))

    def forward(self, init):
        features = [init]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(cin))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(cin, cout, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2))


class DenseNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, 8, 3, padding=1, bias=False)),
            ("norm0", nn.BatchNorm2d(8)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(2)),
            ("denseblock1", DenseBlock(2, 8, 4)),
            ("transition1", Transition(16, 8)),
            ("denseblock2", DenseBlock(2, 8, 4)),
            ("norm5", nn.BatchNorm2d(16)),
        ]))
        self.classifier = nn.Linear(16, 10)

    def forward(self, x):
        out = F.relu(self.features(x), inplace=True)
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


# ---------------------------------------------------------------- VGG-like Sequential
def vgg_like() -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("features", nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 0 1 2: 8x8 -> 4x4
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 3 4 5: -> 2x2
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 6 7 8: -> 1x1
        )),
        ("flatten", nn.Flatten()),
        ("classifier", nn.Sequential(nn.Linear(16, 32), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(32, 10))),
    ]))


# ---------------------------------------------------------------- tiny ViT
class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d)
        return self.proj(x)


class ViTBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """A wrapper that returns the conv's own output (4-D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 4, stride=4)

    def forward(self, x):
        return self.proj(x)


class TinyViT(nn.Module):
    def __init__(self, wrapped: bool = False, dim: int = 16) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(dim) if wrapped else nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 17, dim))
        self.blocks = nn.Sequential(ViTBlock(dim), ViTBlock(dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # N x 16 x D for 16 x 16 images
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


# ---------------------------------------------------------------- a dict output; the last Linear to run is not the classifier
class DictNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 10)
        self.early_pool = nn.AdaptiveAvgPool2d(1)
        self.early_flat = nn.Flatten()
        self.box = nn.Linear(8, 4)

    def forward(self, x):
        a = self.relu1(self.conv1(x))
        logits = self.fc(self.flatten(self.pool(self.relu2(self.conv2(a)))))
        box = torch.sigmoid(self.box(self.early_flat(self.early_pool(a))))  # runs last, not linked to `logits`
        return {"logits": logits, "box": box}


class TupleNet(DictNet):
    def forward(self, x):
        out = super().forward(x)
        return out["logits"], out["box"]


# ---------------------------------------------------------------- squeeze-excitation and depthwise convs
class SqueezeExcite(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(c, c // 4, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(c // 4, c, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class MBConv(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int) -> None:
        super().__init__()
        self.expand_conv = nn.Conv2d(cin, hidden, 1)
        self.act1 = nn.ReLU6()
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act2 = nn.ReLU6()
        self.se = SqueezeExcite(hidden)
        self.project = nn.Conv2d(hidden, cout, 1)

    def forward(self, x):
        return self.project(self.se(self.act2(self.dw(self.act1(self.expand_conv(x))))))


class SENet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.stem_act = nn.ReLU6()
        self.block1 = MBConv(8, 16, 8)
        self.block2 = MBConv(8, 32, 16)
        self.head = nn.Conv2d(16, 32, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.block2(self.block1(self.stem_act(self.stem(x))))
        return self.fc(self.flatten(self.pool(self.head(x))))


# ---------------------------------------------------------------- 1x1 shortcut convs
class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, 2, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.shortcut = nn.Conv2d(cin, cout, 1, 2)

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))) + self.shortcut(x))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(cin, cout // 4, 1)
        self.conv = nn.Conv2d(cout // 4, cout // 4, 3, padding=1)
        self.expand = nn.Conv2d(cout // 4, cout, 1)
        self.shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.expand(self.conv(self.reduce(x))) + self.shortcut(x)


class ShortcutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block1 = ResBlock(8, 16)
        self.block2 = Bottleneck(16, 32)

    def forward(self, x):
        return self.block2(self.block1(self.stem(x)))


# ---------------------------------------------------------------- known answers
def _seeded(factory):
    torch.manual_seed(0)
    return factory()


#: name -> (factory, input, expected view_defaults)
CASES = {
    "resnet": (ResNetLike, (1, 3, 64, 64), {
        "activation": "conv1", "cam": "layer4.1", "optimizer": "layer3.1.conv1",
        "feature": "avgpool", "feature_pool": "flatten", "patch_embedding": None}),
    "googlenet": (GoogLeNetLike, (1, 3, 16, 16), {
        "activation": "conv1", "cam": "inception", "optimizer": "inception.branch2.1",
        "feature": "dropout", "feature_pool": "flatten", "patch_embedding": None}),
    "densenet": (DenseNetLike, (1, 3, 16, 16), {
        "activation": "features.conv0", "cam": "features.norm5",
        "optimizer": "features.denseblock2.denselayer1.conv1",
        "feature": "features.norm5", "feature_pool": "avg", "patch_embedding": None}),
    "vgg": (vgg_like, (1, 3, 8, 8), {
        "activation": "features.0", "cam": "features.7", "optimizer": "features.3",
        "feature": "classifier.2", "feature_pool": "flatten", "patch_embedding": None}),
    "vit": (TinyViT, (1, 3, 16, 16), {
        "activation": "patch_embed", "cam": None, "optimizer": None,
        "feature": "patch_embed", "feature_pool": "avg", "patch_embedding": "patch_embed"}),
    "vit_wrapped": (lambda: TinyViT(wrapped=True), (1, 3, 16, 16), {
        "activation": "patch_embed.proj", "cam": None, "optimizer": None,
        "feature": "patch_embed", "feature_pool": "avg", "patch_embedding": "patch_embed.proj"}),
    "dict": (DictNet, (1, 3, 8, 8), {
        "activation": "conv1", "cam": "relu2", "optimizer": "conv2",
        "feature": "flatten", "feature_pool": "flatten", "patch_embedding": None}),
    "tuple": (TupleNet, (1, 3, 8, 8), {
        "activation": "conv1", "cam": "relu2", "optimizer": "conv2",
        "feature": "flatten", "feature_pool": "flatten", "patch_embedding": None}),
    "se": (SENet, (1, 3, 16, 16), {
        "activation": "stem", "cam": "head", "optimizer": "block2.expand_conv",
        "feature": "flatten", "feature_pool": "flatten", "patch_embedding": None}),
    "shortcut": (ShortcutNet, (1, 3, 8, 8), {
        "activation": "stem", "cam": "block2", "optimizer": "block2.reduce",
        "feature": "block2", "feature_pool": "avg", "patch_embedding": None}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_view_defaults_known_answers(case):
    factory, shape, expected = CASES[case]
    model = _seeded(factory)
    x = torch.randn(shape)
    assert view_defaults(model, x) == expected


@pytest.mark.parametrize("case", list(CASES))
def test_single_functions_agree_with_view_defaults(case):
    factory, shape, expected = CASES[case]
    model = _seeded(factory)
    x = torch.randn(shape)
    assert feature_layer(model, x) == (expected["feature"], expected["feature_pool"])
    assert patch_embedding_only(model, x) == expected["patch_embedding"]
    if expected["cam"] is None:
        with pytest.raises(ValueError, match="vision transformer"):
            cam_layer(model, x)
        with pytest.raises(ValueError, match="vision transformer"):
            optimizer_layer(model, x)
    else:
        assert cam_layer(model, x) == expected["cam"]
        assert optimizer_layer(model, x) == expected["optimizer"]


@pytest.mark.parametrize("case", list(CASES))
def test_model_left_as_found(case):
    factory, shape, _ = CASES[case]
    model = _seeded(factory).train()
    user_calls = []
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first.register_forward_hook(lambda m, i, o: user_calls.append(1))
    flags, grads, hooks = training_flags(model), requires_grad_flags(model), hook_count(model)
    view_defaults(model, torch.randn(shape))
    assert training_flags(model) == flags and all(flags.values())
    assert requires_grad_flags(model) == grads
    assert hook_count(model) == hooks == 1
    assert user_calls == []  # the pass ran on the private view, without the user's hooks


class Slotted(nn.Sequential):
    """``__slots__``: no private view, cnnwidgets works on the model itself."""

    __slots__ = ("extra",)


def test_model_without_a_private_view_is_left_as_found():
    from cnnwidgets.core.runner import view_note

    net = Slotted(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).train()
    assert view_note(net) is not None
    assert view_defaults(net, torch.randn(1, 3, 8, 8)) == {
        "activation": "0", "cam": "1", "optimizer": "0", "feature": "2", "feature_pool": "flatten",
        "patch_embedding": None}
    assert hook_count(net) == 0 and all(training_flags(net).values())


def test_one_forward_pass():
    model = _seeded(ResNetLike)
    runs = []
    handle = view_pre_hook(model.conv1, lambda m, inp: runs.append(1))
    try:
        view_defaults(model, torch.randn(1, 3, 64, 64))
    finally:
        handle.remove()
    assert runs == [1]


def test_googlenet_aux_head_is_skipped_although_registered_last():
    model = _seeded(GoogLeNetLike).train()
    x = torch.randn(1, 3, 16, 16)
    assert last_conv_layer(model) == "aux1.conv"  # registration order
    assert cam_layer(model, x) == "inception"  # what runs in eval mode
    assert isinstance(model(x), tuple)  # the user's model still trains, aux head included


def test_feature_layer_is_the_classifier_input():
    # ResNet: fc(features) is the model's output
    model = _seeded(ResNetLike).eval()
    x = torch.randn(3, 3, 64, 64)
    layer, pool = feature_layer(model, x[:1])
    assert (layer, pool) == ("avgpool", "flatten") and default_feature_layer(model, x[:1]) == layer
    f = torch.from_numpy(extract_features(model, x, layer, pool=pool))
    with torch.no_grad():
        torch.testing.assert_close(model.fc(f), model(x))
    # VGG: the last classifier Linear applied to the features gives the output
    vgg = _seeded(vgg_like).eval()
    x = torch.randn(3, 3, 8, 8)
    layer, pool = feature_layer(vgg, x[:1])
    f = torch.from_numpy(extract_features(vgg, x, layer, pool=pool))
    with torch.no_grad():
        torch.testing.assert_close(vgg.classifier[3](f), vgg(x))
    # dict output: fc (in the output) wins over box (ran last, through a functional sigmoid)
    net = _seeded(DictNet).eval()
    x = torch.randn(3, 3, 8, 8)
    layer, pool = feature_layer(net, x[:1])
    f = torch.from_numpy(extract_features(net, x, layer, pool=pool))
    with torch.no_grad():
        torch.testing.assert_close(net.fc(f), net(x)["logits"])


def test_densenet_feature_is_the_global_average_of_the_last_spatial_layer():
    model = _seeded(DenseNetLike).eval()
    x = torch.randn(2, 3, 16, 16)
    layer, pool = feature_layer(model, x[:1])
    f = torch.from_numpy(extract_features(model, x, layer, pool=pool))
    with torch.no_grad():
        torch.testing.assert_close(f, model.features(x).mean(dim=(2, 3)))


def test_cam_never_picks_a_container():
    # the VGG's "features" finishes after "features.7" and has a 1x1 output, but even where a
    # container's output is spatial (here "0") its last child is named
    net = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    x = torch.randn(1, 1, 8, 8)
    assert cam_layer(net, x) == "0.1"
    assert feature_layer(net, x) == ("1", "flatten")


def test_optimizer_rules_one_by_one():
    x = torch.randn(1, 4, 8, 8)
    # depthwise convs only: kept, as nothing else is left
    dw = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 4, 3, padding=1, groups=4))
    assert optimizer_layer(dw, x) == "1"
    # depthwise left out when there are others: candidates '0', '2', '3' -> position 1
    mixed = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=4),
                          nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1))
    assert optimizer_layer(mixed, x) == "2"
    # one conv
    assert optimizer_layer(nn.Sequential(nn.Conv2d(4, 2, 3)), x) == "0"


def test_patch_embedding_rule():
    x = torch.randn(1, 3, 16, 16)
    # a patchify stem followed by feature maps (ConvNeXt) is a CNN
    convnext_like = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    assert patch_embedding_only(convnext_like, x) is None
    assert cam_layer(convnext_like, x) == "2"
    # kernel != stride: not a patch embedding
    assert patch_embedding_only(nn.Sequential(nn.Conv2d(3, 8, 4, stride=2), nn.Flatten(2)), x) is None
    # a 4-D preprocessing layer before the patch embedding is allowed
    vit = nn.Sequential(nn.Identity(), nn.Conv2d(3, 8, 4, stride=4), nn.Flatten(2), nn.Linear(16, 4))
    assert patch_embedding_only(vit, x) == "1"
    notice = not_a_cnn_notice("1")
    for text in ("FilterGrid", "input", "Grad-CAM", "deconvnet", "OIP", "'1'"):
        assert text in notice


# ---------------------------------------------------------------- errors
def test_cam_layer_without_spatial_layers_says_what_to_do():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ValueError, match=r"no layer outputs a 4-D tensor.*pass layer="):
        cam_layer(mlp, torch.randn(1, 1, 8, 8))
    only_1x1 = nn.Sequential(nn.Conv2d(1, 4, 8), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"'0' \(1, 4, 1, 1\).*pass layer="):
        cam_layer(only_1x1, torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="pass layer="):
        optimizer_layer(mlp, torch.randn(1, 1, 8, 8))
    assert view_defaults(mlp, torch.randn(1, 1, 8, 8)) == {
        "activation": None, "cam": None, "optimizer": None, "feature": "0", "feature_pool": "flatten",
        "patch_embedding": None}


class FunctionalMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_feature_layer_without_any_candidate():
    with pytest.raises(ValueError, match="pass layer=... and pool="):
        feature_layer(FunctionalMLP(), torch.randn(1, 1, 8, 8))


class Boom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        self.conv(x)
        raise RuntimeError("boom")


def test_failing_forward_pass_is_a_clear_value_error_and_leaves_no_hook():
    model = Boom().train()
    with pytest.raises(ValueError, match="raised RuntimeError: boom") as info:
        view_defaults(model, torch.randn(1, 3, 8, 8))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert hook_count(model) == 0 and model.training
    vgg = vgg_like()
    with pytest.raises(ValueError, match="1 channel") as info:  # wrong channel count
        cam_layer(vgg, torch.randn(1, 1, 8, 8))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert hook_count(vgg) == 0


def test_defaults_are_computed_once_per_model_structure_and_input_shape():
    """The views of one model, and Grad-CAM without layer=, share one recorded pass; a changed
    model (a replaced layer) or another input size runs it again."""
    model = _seeded(ResNetLike)
    runs: list[int] = []
    handle = view_pre_hook(model.conv1, lambda m, inp: runs.append(1))
    try:
        x = torch.rand(2, 3, 64, 64)
        first = view_defaults(model, x)
        assert view_defaults(model, torch.rand(1, 3, 64, 64)) == first and cam_layer(model, x) == first["cam"]
        assert len(runs) == 1
        view_defaults(model, torch.rand(1, 3, 32, 32))
        assert len(runs) == 2
        model.fc = nn.Linear(model.fc.in_features, 3)  # a replaced layer: the pass runs again
        assert view_defaults(model, x) == first
        assert len(runs) == 3
    finally:
        handle.remove()
