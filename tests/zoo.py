"""A zoo of tiny, fast re-implementations of real CNN architecture families, for the test suite.

Each family is a plain-torch, shrunken copy of the real thing (mostly torchvision's code), small
enough that a forward and backward pass on a 2 x 3 x 64 x 64 batch takes a few milliseconds, but
faithful in what interpretability tools trip over: which activations are modules and which are
functional calls, which ops are in place, how modules are named and registered, and what the
output is (logits, a dict, a tuple, a named tuple, probabilities). Each ``make_<name>(seed=0)``
builds a fresh model from ``seed`` (torch's global generator is left untouched), calibrates it
(see below) and returns it in eval mode. All take 3 x 64 x 64 inputs; all but ``vit`` also take
3 x 32 x 32 (see :data:`SIZES`).

What each family keeps faithful:

``resnet``
    torchvision ``ResNet`` (resnet18 layout: four stages of two ``BasicBlock`` s, widths shrunk to
    8/16/24/32): ``conv1`` 7x7 stride 2, ``bn1``, ``relu``, ``maxpool``, ``layer1..layer4``,
    ``avgpool``, functional ``torch.flatten``, ``fc``. Each block has ONE ``nn.ReLU(inplace=True)``
    (``relu``) called twice, adds the shortcut in place (``out += identity``) and has a
    ``downsample`` Sequential(conv1x1, bn) where the shape changes. torchvision's initialisation.
``densenet``
    torchvision ``DenseNet`` layout: ``features`` = conv0, norm0, relu0, pool0, denseblock1,
    transition1, denseblock2, norm5. Dense layers have NO ReLU modules: they call
    ``F.relu(..., inplace=True)`` (current torchvision registers ``relu1``/``relu2`` modules;
    functional ReLUs are the harder case) and concatenate their inputs with ``torch.cat``; a transition
    is norm, ``relu`` module, 1x1 conv, avg pool. The top-level forward applies
    ``F.relu(features, inplace=True)`` to norm5's output (so a hook on ``features.norm5`` sees a
    tensor that is rectified in place afterwards), then ``F.adaptive_avg_pool2d``,
    ``torch.flatten`` and ``classifier``.
``mobilenet_v3``
    torchvision ``MobileNetV3`` (a shrunken "small" config): ``features`` of
    ``Conv2dNormActivation`` (conv, bn, activation) and ``InvertedResidual`` blocks with
    ``nn.Hardswish(inplace=True)`` / ``nn.ReLU(inplace=True)``, depthwise convs
    (``groups=channels``), ``SqueezeExcitation`` (avg pool, 1x1 conv, ``nn.ReLU()``, 1x1 conv,
    ``nn.Hardsigmoid``, multiply) and residual adds; ``avgpool``, ``classifier`` =
    Sequential(Linear, Hardswish, Dropout, Linear).
``efficientnet``
    torchvision ``EfficientNet``: ``features`` = stem, stages of ``MBConv`` blocks (expand 1x1,
    depthwise, SE with ``nn.SiLU`` and ``nn.Sigmoid`` gate, project, stochastic depth that is the
    identity in eval, in-place residual add), head conv; ``avgpool``, ``classifier`` =
    Sequential(Dropout, Linear).
``convnext``
    torchvision ``ConvNeXt``: stem conv 4x4 stride 4 + ``LayerNorm2d`` (channels-first LayerNorm:
    permute, layer norm, permute back); ``CNBlock`` = depthwise 7x7 conv, ``Permute`` to NHWC,
    ``nn.LayerNorm``, Linear 4x, ``nn.GELU``, Linear, ``Permute`` back, times a layer-scale
    parameter, residual add; downsampling = LayerNorm2d + conv 2x2 stride 2; ``avgpool``,
    ``classifier`` = Sequential(LayerNorm2d, Flatten, Linear). No BatchNorm and no ReLU.
    (Layer scale starts at 0.5, not torchvision's 1e-6, so the blocks are not identities.)
``googlenet``
    torchvision ``GoogLeNet``: ``BasicConv2d`` = conv, bn, functional ``F.relu(x, inplace=True)``
    (no ReLU modules anywhere); two ``Inception`` modules of 4 concatenated branches (the "5x5"
    branch uses a 3x3 conv, as torchvision's does); an ``InceptionAux`` head ``aux1`` (avg pool,
    BasicConv2d, two Linear) that runs between them only ``if self.training and
    self.aux_logits:`` and is registered after all the inception
    modules and before ``avgpool``/``dropout``/``fc``, so the last ``nn.Conv2d`` in registration
    order is ``aux1.conv.conv``, which does not run in eval. Eval returns plain logits; train
    mode returns ``GoogLeNetOutputs(logits, aux_logits1)``.
``segnet``
    torchvision's ``_SimpleSegmentationModel`` (DeepLab/FCN) shape: ``backbone`` (encoder convs,
    returning its "out" and "aux" feature maps), ``classifier`` (convs with an ``nn.Upsample``
    decoder) and ``aux_classifier``, both bilinearly interpolated to the input size; returns an
    ``OrderedDict`` ``{"out": N x 4 x H x W, "aux": N x 4 x H x W}``.
``detector`` / ``detector_namedtuple``
    facenet-pytorch's MTCNN ``ONet``: convs with ``nn.PReLU`` activations, ceil-mode max pools,
    the permute before flattening, ``dense5`` + PReLU, a box head and a score head ending in
    ``nn.Softmax(dim=1)``; returns the tuple ``(boxes N x 4, scores N x 3)``, or the named tuple
    ``Detection(boxes, scores)``. (An adaptive pool before the flatten lets it take any size.)
``binary`` / ``binary_sigmoid``
    A single-logit ReLU CNN (N x 1 output); ``binary_sigmoid`` has ``nn.Sigmoid()`` as its last
    registered module, applied last.
``softmax_net``
    An ``nn.Sequential`` ReLU CNN without BatchNorm whose last module is ``nn.Softmax(dim=1)``
    (10 classes): it returns probabilities.
``vit``
    torchvision ``VisionTransformer``: ``conv_proj`` = ``nn.Conv2d(3, 32, kernel_size=8,
    stride=8)`` (the only layer with a 4-D output), tokens, ``class_token``, ``encoder`` with
    ``pos_embedding``, two ``EncoderBlock`` s (pre-LayerNorm, ``nn.MultiheadAttention``,
    GELU MLP), final LayerNorm, ``heads.head`` Linear on the class token. 64 x 64 inputs only.

Calibration: after building, every BatchNorm layer's running statistics are recomputed from
random images (train mode, no gradients, ``momentum=None``), and the last Linear layer of each
classifier-like head (before any Softmax/Sigmoid) is rescaled so that each output unit has zero
mean and unit spread over those images. So no ReLU layer is dead, and predictions vary across
random inputs (a binary logit takes both signs) instead of being dominated by the biases.
``segnet``'s classifier is left as initialized.

Examples
--------
>>> model = make_resnet()
>>> model(example_input("resnet")).shape
torch.Size([2, 10])
>>> sorted(OUTPUT_SELECTORS)
['detector', 'detector_namedtuple', 'segnet']
"""

from __future__ import annotations

import collections
import copy
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CLASSIFIERS",
    "Detection",
    "GoogLeNetOutputs",
    "OUTPUT_SELECTORS",
    "RELU_FAMILY",
    "SIZES",
    "ZOO",
    "compiled",
    "example_input",
    "half",
    "make_binary",
    "make_binary_sigmoid",
    "make_convnext",
    "make_densenet",
    "make_detector",
    "make_detector_namedtuple",
    "make_efficientnet",
    "make_googlenet",
    "make_mobilenet_v3",
    "make_resnet",
    "make_segnet",
    "make_softmax_net",
    "make_vit",
]

NUM_CLASSES = 10
SEG_CLASSES = 4


# ---------------------------------------------------------------- shared pieces (torchvision.ops.misc)
def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class Conv2dNormActivation(nn.Sequential):
    """conv, norm, activation as a Sequential (children ``0``, ``1``, ``2``), as torchvision's."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
        activation_layer: Callable[..., nn.Module] | None = nn.ReLU,
        bias: bool | None = None,
    ) -> None:
        if bias is None:
            bias = norm_layer is None
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=bias)
        ]
        if norm_layer is not None:
            layers.append(norm_layer(cout))
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)
        self.out_channels = cout


class SqueezeExcitation(nn.Module):
    """torchvision's SE block: ``scale_activation(fc2(activation(fc1(avgpool(x))))) * x``."""

    def __init__(
        self,
        channels: int,
        squeeze: int,
        activation: Callable[..., nn.Module] = nn.ReLU,
        scale_activation: Callable[..., nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.avgpool(x)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._scale(x) * x


class StochasticDepth(nn.Module):
    """torchvision's row-mode stochastic depth: the identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        noise = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device)
        return x * noise.bernoulli_(survival).div_(survival)


class Permute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)


class LayerNorm2d(nn.LayerNorm):
    """Channels-first LayerNorm: permute to NHWC, layer norm over C, permute back (torchvision's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


# ---------------------------------------------------------------- resnet
def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet(nn.Module):
    def __init__(self, layers=(2, 2, 2, 2), widths=(8, 16, 24, 32), num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(widths[0], layers[0])
        self.layer2 = self._make_layer(widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * BasicBlock.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return x


# ---------------------------------------------------------------- densenet
class _DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1-BN-ReLU-Conv3x3 with functional in-place ReLUs (no ReLU modules)."""

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)

    def bn_function(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        concated_features = torch.cat(inputs, 1)
        return self.conv1(F.relu(self.norm1(concated_features), inplace=True))

    def forward(self, input: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        prev_features = [input] if isinstance(input, torch.Tensor) else input
        bottleneck_output = self.bn_function(prev_features)
        return self.conv2(F.relu(self.norm2(bottleneck_output), inplace=True))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size))

    def forward(self, init_features: torch.Tensor) -> torch.Tensor:
        features = [init_features]
        for _, layer in self.items():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, num_input_features: int, num_output_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, 1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    def __init__(
        self,
        growth_rate: int = 8,
        block_config=(3, 3),
        num_init_features: int = 16,
        bn_size: int = 4,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv0", nn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)),
                    ("norm0", nn.BatchNorm2d(num_init_features)),
                    ("relu0", nn.ReLU(inplace=True)),
                    ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
                ]
            )
        )
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(num_layers, num_features, bn_size, growth_rate))
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(num_features, num_features // 2))
                num_features //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(num_features))
        self.classifier = nn.Linear(num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        out = F.relu(features, inplace=True)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        out = torch.flatten(out, 1)
        out = self.classifier(out)
        return out


# ---------------------------------------------------------------- mobilenet_v3
class InvertedResidualConfig:
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, use_se: bool, activation: str, stride: int) -> None:
        self.input_channels = cin
        self.kernel = kernel
        self.expanded_channels = expanded
        self.out_channels = cout
        self.use_se = use_se
        self.use_hs = activation == "HS"
        self.stride = stride


class InvertedResidual(nn.Module):
    def __init__(self, cnf: InvertedResidualConfig) -> None:
        super().__init__()
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        activation_layer = nn.Hardswish if cnf.use_hs else nn.ReLU
        layers: list[nn.Module] = []
        if cnf.expanded_channels != cnf.input_channels:  # expand
            layers.append(
                Conv2dNormActivation(cnf.input_channels, cnf.expanded_channels, 1, activation_layer=activation_layer)
            )
        layers.append(  # depthwise
            Conv2dNormActivation(
                cnf.expanded_channels,
                cnf.expanded_channels,
                cnf.kernel,
                cnf.stride,
                groups=cnf.expanded_channels,
                activation_layer=activation_layer,
            )
        )
        if cnf.use_se:
            squeeze = _make_divisible(cnf.expanded_channels // 4, 8)
            layers.append(SqueezeExcitation(cnf.expanded_channels, squeeze, scale_activation=nn.Hardsigmoid))
        layers.append(  # project
            Conv2dNormActivation(cnf.expanded_channels, cnf.out_channels, 1, activation_layer=None)
        )
        self.block = nn.Sequential(*layers)
        self.out_channels = cnf.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result += x
        return result


class MobileNetV3(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES, last_channel: int = 128) -> None:
        super().__init__()
        settings = [
            InvertedResidualConfig(16, 3, 16, 16, True, "RE", 2),
            InvertedResidualConfig(16, 3, 48, 24, False, "RE", 2),
            InvertedResidualConfig(24, 3, 64, 24, False, "RE", 1),
            InvertedResidualConfig(24, 5, 72, 32, True, "HS", 2),
            InvertedResidualConfig(32, 5, 96, 32, True, "HS", 1),
        ]
        layers: list[nn.Module] = [Conv2dNormActivation(3, 16, 3, 2, activation_layer=nn.Hardswish)]
        layers += [InvertedResidual(cnf) for cnf in settings]
        lastconv_output_channels = 3 * settings[-1].out_channels
        layers.append(Conv2dNormActivation(settings[-1].out_channels, lastconv_output_channels, 1, activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(lastconv_output_channels, last_channel),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=0.2, inplace=True),
            nn.Linear(last_channel, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


# ---------------------------------------------------------------- efficientnet
class MBConv(nn.Module):
    def __init__(self, cin: int, expand_ratio: float, kernel: int, stride: int, cout: int, stochastic_depth_prob: float) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        expanded = _make_divisible(cin * expand_ratio, 8)
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(Conv2dNormActivation(cin, expanded, 1, activation_layer=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, expanded, kernel, stride, groups=expanded, activation_layer=nn.SiLU))
        layers.append(SqueezeExcitation(expanded, max(1, cin // 4), activation=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, cout, 1, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result += x
        return result


class EfficientNet(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = 0.2, stochastic_depth_prob: float = 0.2) -> None:
        super().__init__()
        # (expand_ratio, kernel, stride, input_channels, out_channels, num_layers)
        setting = [(1, 3, 1, 16, 8, 1), (6, 3, 2, 8, 16, 2), (6, 5, 2, 16, 32, 1)]
        layers: list[nn.Module] = [Conv2dNormActivation(3, setting[0][3], 3, 2, activation_layer=nn.SiLU)]
        total_blocks = sum(s[-1] for s in setting)
        stage_block_id = 0
        for expand_ratio, kernel, stride, cin, cout, num_layers in setting:
            stage: list[nn.Module] = []
            for i in range(num_layers):
                sd_prob = stochastic_depth_prob * float(stage_block_id) / total_blocks
                stage.append(MBConv(cin if i == 0 else cout, expand_ratio, kernel, stride if i == 0 else 1, cout, sd_prob))
                stage_block_id += 1
            layers.append(nn.Sequential(*stage))
        lastconv_output_channels = 4 * setting[-1][4]
        layers.append(Conv2dNormActivation(setting[-1][4], lastconv_output_channels, 1, activation_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(lastconv_output_channels, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                init_range = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -init_range, init_range)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


# ---------------------------------------------------------------- convnext
class CNBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float, stochastic_depth_prob: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=True),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        result = self.layer_scale * self.block(input)
        result = self.stochastic_depth(result)
        result += input
        return result


class ConvNeXt(nn.Module):
    def __init__(
        self, dims=(16, 32, 48), depths=(1, 1, 1), layer_scale: float = 0.5,
        stochastic_depth_prob: float = 0.1, num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        norm_layer = partial(LayerNorm2d, eps=1e-6)
        layers: list[nn.Module] = [
            Conv2dNormActivation(3, dims[0], kernel_size=4, stride=4, norm_layer=norm_layer, activation_layer=None, bias=True)
        ]
        total_blocks = sum(depths)
        block_id = 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            stage = []
            for _ in range(depth):
                stage.append(CNBlock(dim, layer_scale, stochastic_depth_prob * block_id / max(1, total_blocks - 1)))
                block_id += 1
            layers.append(nn.Sequential(*stage))
            if i + 1 < len(dims):
                layers.append(nn.Sequential(norm_layer(dim), nn.Conv2d(dim, dims[i + 1], kernel_size=2, stride=2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(norm_layer(dims[-1]), nn.Flatten(1), nn.Linear(dims[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = self.classifier(x)
        return x


# ---------------------------------------------------------------- googlenet
GoogLeNetOutputs = collections.namedtuple("GoogLeNetOutputs", ["logits", "aux_logits1"])


class BasicConv2d(nn.Module):
    """conv (no bias), bn, then functional ``F.relu(x, inplace=True)``."""

    def __init__(self, cin: int, cout: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.bn(x)
        return F.relu(x, inplace=True)


class Inception(nn.Module):
    def __init__(self, cin: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, ch3x3red, kernel_size=1), BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        # torchvision's "5x5" branch really uses a 3x3 convolution
        self.branch3 = nn.Sequential(BasicConv2d(cin, ch5x5red, kernel_size=1), BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True), BasicConv2d(cin, pool_proj, kernel_size=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(outputs, 1)


class InceptionAux(nn.Module):
    def __init__(self, cin: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(cin, 16, kernel_size=1)
        self.fc1 = nn.Linear(16 * 2 * 2, 32)
        self.fc2 = nn.Linear(32, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, (2, 2))
        x = self.conv(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x), inplace=True)
        x = self.dropout(x)
        x = self.fc2(x)
        return x


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES, aux_logits: bool = True, dropout: float = 0.2) -> None:
        super().__init__()
        self.aux_logits = aux_logits
        self.conv1 = BasicConv2d(3, 16, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(16, 16, kernel_size=1)
        self.conv3 = BasicConv2d(16, 32, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(32, 12, 12, 16, 4, 8, 8)  # -> 44
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(44, 16, 12, 20, 4, 12, 8)  # -> 56
        # registered after every inception module and before the final layers, as in torchvision
        self.aux1 = InceptionAux(44, num_classes) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(56, num_classes)

    def forward(self, x: torch.Tensor):
        x = self.conv1(x)
        x = self.maxpool1(x)
        x = self.conv2(x)
        x = self.conv3(x)
        x = self.maxpool2(x)
        x = self.inception3a(x)
        x = self.maxpool3(x)
        aux1: torch.Tensor | None = None
        if self.aux1 is not None:
            if self.training and self.aux_logits:
                aux1 = self.aux1(x)
        x = self.inception4a(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        x = self.fc(x)
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux1)
        return x


# ---------------------------------------------------------------- segnet
class _SegBackbone(nn.Module):
    """Encoder returning its intermediate ("aux") and final ("out") feature maps, like
    torchvision's IntermediateLayerGetter on a ResNet."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = Conv2dNormActivation(3, 16, 3)
        self.pool1 = nn.MaxPool2d(2)
        self.layer1 = Conv2dNormActivation(16, 24, 3)
        self.pool2 = nn.MaxPool2d(2)
        self.layer2 = nn.Sequential(Conv2dNormActivation(24, 32, 3), Conv2dNormActivation(32, 32, 3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = OrderedDict()
        x = self.pool1(self.stem(x))
        x = self.layer1(x)
        out["aux"] = x
        x = self.layer2(self.pool2(x))
        out["out"] = x
        return out


class SegNet(nn.Module):
    def __init__(self, num_classes: int = SEG_CLASSES) -> None:
        super().__init__()
        self.backbone = _SegBackbone()
        self.classifier = nn.Sequential(
            Conv2dNormActivation(32, 24, 3),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            Conv2dNormActivation(24, 16, 3),
            nn.Conv2d(16, num_classes, 1),
        )
        self.aux_classifier = nn.Sequential(Conv2dNormActivation(24, 16, 3), nn.Conv2d(16, num_classes, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        input_shape = x.shape[-2:]
        features = self.backbone(x)
        result = OrderedDict()
        x = self.classifier(features["out"])
        result["out"] = F.interpolate(x, size=input_shape, mode="bilinear", align_corners=False)
        x = self.aux_classifier(features["aux"])
        result["aux"] = F.interpolate(x, size=input_shape, mode="bilinear", align_corners=False)
        return result


# ---------------------------------------------------------------- detector (MTCNN ONet)
Detection = collections.namedtuple("Detection", "boxes scores")


class ONet(nn.Module):
    """MTCNN's output network, shrunk: returns ``(boxes N x 4, scores N x 3)``."""

    def __init__(self, num_scores: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, kernel_size=3)
        self.prelu1 = nn.PReLU(8)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(16, 16, kernel_size=3)
        self.prelu3 = nn.PReLU(16)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(16, 32, kernel_size=2)
        self.prelu4 = nn.PReLU(32)
        self.pool4 = nn.AdaptiveAvgPool2d(3)  # not in ONet (fixed 48 x 48 input): any size in
        self.dense5 = nn.Linear(32 * 3 * 3, 64)
        self.prelu5 = nn.PReLU(64)
        self.dense6_1 = nn.Linear(64, 4)
        self.dense6_2 = nn.Linear(64, num_scores)
        self.softmax6_2 = nn.Softmax(dim=1)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.pool4(self.prelu4(self.conv4(x)))
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        boxes = self.dense6_1(x)
        scores = self.softmax6_2(self.dense6_2(x))
        return boxes, scores

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._heads(x)


class ONetNamed(ONet):
    """:class:`ONet` returning ``Detection(boxes, scores)``."""

    def forward(self, x: torch.Tensor) -> Detection:
        return Detection(*self._heads(x))


# ---------------------------------------------------------------- binary / softmax_net
class BinaryNet(nn.Module):
    def __init__(self, sigmoid: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 1)
        self.sigmoid = nn.Sigmoid() if sigmoid else None  # registered last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(torch.flatten(self.pool(self.features(x)), 1))
        if self.sigmoid is not None:
            x = self.sigmoid(x)
        return x


def _softmax_sequential(num_classes: int = NUM_CLASSES) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
        nn.Softmax(dim=1),
    )


# ---------------------------------------------------------------- vit
class MLPBlock(nn.Sequential):
    def __init__(self, dim: int, mlp_dim: int, dropout: float) -> None:
        super().__init__(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout))


class EncoderBlock(nn.Module):
    def __init__(self, num_heads: int, hidden_dim: int, mlp_dim: int, dropout: float = 0.0, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, dropout=attention_dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.mlp = MLPBlock(hidden_dim, mlp_dim, dropout)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(input)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.dropout(x)
        x = x + input
        y = self.ln_2(x)
        y = self.mlp(y)
        return x + y


class Encoder(nn.Module):
    def __init__(self, seq_length: int, num_layers: int, num_heads: int, hidden_dim: int, mlp_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, hidden_dim).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(
            OrderedDict((f"encoder_layer_{i}", EncoderBlock(num_heads, hidden_dim, mlp_dim, dropout)) for i in range(num_layers))
        )
        self.ln = nn.LayerNorm(hidden_dim, eps=1e-6)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        input = input + self.pos_embedding
        return self.ln(self.layers(self.dropout(input)))


class VisionTransformer(nn.Module):
    def __init__(
        self, image_size: int = 64, patch_size: int = 8, num_layers: int = 2, num_heads: int = 2,
        hidden_dim: int = 32, mlp_dim: int = 64, num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.conv_proj = nn.Conv2d(3, hidden_dim, kernel_size=patch_size, stride=patch_size)
        seq_length = (image_size // patch_size) ** 2 + 1
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.encoder = Encoder(seq_length, num_layers, num_heads, hidden_dim, mlp_dim)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(hidden_dim, num_classes)))
        fan_in = 3 * patch_size**2
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)

    def _process_input(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        p = self.patch_size
        torch._assert(h == self.image_size, f"Wrong image height! Expected {self.image_size} but got {h}!")
        torch._assert(w == self.image_size, f"Wrong image width! Expected {self.image_size} but got {w}!")
        x = self.conv_proj(x)  # n, hidden, h/p, w/p
        x = x.reshape(n, self.hidden_dim, (h // p) * (w // p))
        return x.permute(0, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._process_input(x)
        n = x.shape[0]
        batch_class_token = self.class_token.expand(n, -1, -1)
        x = torch.cat([batch_class_token, x], dim=1)
        x = self.encoder(x)
        x = x[:, 0]
        return self.heads(x)


# ---------------------------------------------------------------- building and calibration
@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _random_images(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) - 0.45) / 0.25


def _calibrate(model: nn.Module, head: nn.Linear | None, seed: int, size: int = 64) -> nn.Module:
    """Recompute BatchNorm statistics on random images; standardize ``head``'s outputs over them."""
    images = _random_images(32, size, 1000 + seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        if norms:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None
            model.train()
            for m in model.modules():  # batch statistics of the deterministic network
                if isinstance(m, (nn.Dropout, StochasticDepth)):
                    m.eval()
            model(images)  # momentum None: the statistics of this batch
            for m in norms:
                m.momentum = 0.1
        model.eval()
        if head is not None:
            outputs: list[torch.Tensor] = []
            handle = head.register_forward_hook(lambda m, i, o: outputs.append(o))
            try:
                model(images)
            finally:
                handle.remove()
            out = outputs[0]
            mean, std = out.mean(0), out.std(0).clamp_min(1e-6)
            head.weight.div_(std[:, None])
            head.bias.sub_(mean).div_(std)
    return model


def _build(cls: Callable[[], nn.Module], head: Callable[[nn.Module], nn.Linear | None], seed: int) -> nn.Module:
    with _seeded(seed):
        model = cls()
    return _calibrate(model, head(model), seed)


def make_resnet(seed: int = 0) -> ResNet:
    """torchvision-style ResNet-18 layout (2 BasicBlocks per stage, widths 8-32), 10 logits."""
    return _build(ResNet, lambda m: m.fc, seed)


def make_densenet(seed: int = 0) -> DenseNet:
    """torchvision-style DenseNet (2 dense blocks of 3 layers, growth 8) with functional ReLUs, 10 logits."""
    return _build(DenseNet, lambda m: m.classifier, seed)


def make_mobilenet_v3(seed: int = 0) -> MobileNetV3:
    """torchvision-style MobileNetV3 (Hardswish/ReLU, depthwise convs, Hardsigmoid SE), 10 logits."""
    return _build(MobileNetV3, lambda m: m.classifier[-1], seed)


def make_efficientnet(seed: int = 0) -> EfficientNet:
    """torchvision-style EfficientNet (MBConv, SiLU, Sigmoid-gated SE), 10 logits."""
    return _build(EfficientNet, lambda m: m.classifier[-1], seed)


def make_convnext(seed: int = 0) -> ConvNeXt:
    """torchvision-style ConvNeXt (LayerNorm2d, depthwise 7x7, GELU MLP, layer scale), 10 logits."""
    return _build(ConvNeXt, lambda m: m.classifier[-1], seed)


def make_googlenet(seed: int = 0) -> GoogLeNet:
    """torchvision-style GoogLeNet with an eval-dead aux head ``aux1``; 10 logits in eval."""
    return _build(GoogLeNet, lambda m: m.fc, seed)


def make_segnet(seed: int = 0) -> SegNet:
    """Segmentation net returning ``{"out": N x 4 x H x W, "aux": N x 4 x H x W}``."""
    return _build(SegNet, lambda m: None, seed)


def make_detector(seed: int = 0) -> ONet:
    """MTCNN-ONet-like detector returning the tuple ``(boxes N x 4, scores N x 3)``."""
    return _build(ONet, lambda m: m.dense6_2, seed)


def make_detector_namedtuple(seed: int = 0) -> ONetNamed:
    """:func:`make_detector` returning ``Detection(boxes, scores)``, a named tuple."""
    return _build(ONetNamed, lambda m: m.dense6_2, seed)


def make_binary(seed: int = 0) -> BinaryNet:
    """ReLU CNN with a single logit (N x 1), centred so that it takes both signs."""
    return _build(BinaryNet, lambda m: m.fc, seed)


def make_binary_sigmoid(seed: int = 0) -> BinaryNet:
    """:func:`make_binary` ending in an ``nn.Sigmoid()`` module (N x 1 probabilities)."""
    return _build(partial(BinaryNet, sigmoid=True), lambda m: m.fc, seed)


def make_softmax_net(seed: int = 0) -> nn.Sequential:
    """``nn.Sequential`` ReLU CNN ending in ``nn.Softmax(dim=1)`` (N x 10 probabilities)."""
    return _build(_softmax_sequential, lambda m: m[-2], seed)


def make_vit(seed: int = 0) -> VisionTransformer:
    """torchvision-style ViT for 64 x 64 inputs (8 x 8 patches, 2 encoder blocks), 10 logits."""
    return _build(VisionTransformer, lambda m: m.heads.head, seed)


ZOO: dict[str, Callable[[], nn.Module]] = {
    "resnet": make_resnet,
    "densenet": make_densenet,
    "mobilenet_v3": make_mobilenet_v3,
    "efficientnet": make_efficientnet,
    "convnext": make_convnext,
    "googlenet": make_googlenet,
    "segnet": make_segnet,
    "detector": make_detector,
    "detector_namedtuple": make_detector_namedtuple,
    "binary": make_binary,
    "binary_sigmoid": make_binary_sigmoid,
    "softmax_net": make_softmax_net,
    "vit": make_vit,
}

#: CNN classifiers whose output is a plain N x K tensor of logits (``softmax_net``: probabilities),
#: K = 10. ``vit`` also returns N x 10 logits but is left out: it takes 64 x 64 inputs only and
#: has a single 4-D layer (its patch embedding), so it is no convolutional classifier.
CLASSIFIERS: tuple[str, ...] = ("resnet", "densenet", "mobilenet_v3", "efficientnet", "convnext", "googlenet", "softmax_net")

#: Models with ReLU activations, as modules (nn.ReLU) or functional calls (F.relu).
RELU_FAMILY: tuple[str, ...] = ("resnet", "densenet", "mobilenet_v3", "googlenet", "softmax_net", "binary", "binary_sigmoid", "segnet")

#: Models LRP refuses (it covers ReLU CNNs), with what its message names: the first operation
#: that has no LRP rule.
LRP_REFUSED: dict[str, str] = {
    "mobilenet_v3": "Hardswish in 'features.0.2'", "efficientnet": "SiLU in 'features.0.2'",
    "convnext": "LayerNorm in 'features.0.1'", "detector": "PReLU in 'prelu1'", "detector_namedtuple": "PReLU in 'prelu1'",
    "vit": "LayerNorm in 'encoder.layers.encoder_layer_0.ln_1'",
}

#: The natural output selector of each model with a structured output (dict key or tuple index / field).
OUTPUT_SELECTORS: dict[str, str | int] = {"segnet": "out", "detector": 1, "detector_namedtuple": "scores"}

#: Input sizes (square) each model accepts.
SIZES: dict[str, tuple[int, ...]] = {name: (64,) if name == "vit" else (32, 64) for name in ZOO}


def half(model: nn.Module) -> nn.Module:
    """A float16 copy of ``model`` (deepcopy, then ``.half()``); ``model`` is not changed."""
    return copy.deepcopy(model).half()


def compiled(model: nn.Module) -> nn.Module:
    """``torch.compile(model, backend="eager")``: dynamo-traced, sharing ``model``'s parameters."""
    return torch.compile(model, backend="eager")


def example_input(name: str, n: int = 2, size: int = 64, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An ``n x 3 x size x size`` batch of normalized random images for model ``name``.

    Uniform noise in [0, 1) standardized with mean 0.45 and std 0.25, from a private generator
    (the same batch for every model, given ``seed``).
    """
    if name not in ZOO:
        raise KeyError(f"unknown zoo model {name!r}; known: {sorted(ZOO)}")
    if size not in SIZES[name]:
        raise ValueError(f"{name} takes inputs of size {SIZES[name]}, not {size}")
    return _random_images(n, size, seed).to(dtype)
