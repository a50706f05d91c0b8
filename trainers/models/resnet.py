"""ResNet-18/50 with torchvision's architecture and parameter names, written here.

torchvision cannot be imported beside the CPU-only torch on our nodes, and we want the
FOGZO paper's ResNets without a dependency: BasicBlock (18) and Bottleneck (50, stride on
the 3x3 conv as in torchvision's "v1.5"), BatchNorm, random init as in torchvision.
Module names (``conv1``, ``layer1.0.bn2``, ``fc`` ...) match torchvision's, so its
state dicts load and ``QuantSpec.exclude`` patterns read the same.

Every weight layer is an ``nn.Conv2d`` or ``nn.Linear``, so ``quantize_model`` swaps all
of them. ReLUs are not in-place: ``torch.func.vmap`` over perturbed copies (zeroth-order
estimators) must not mutate shared activations.
"""

from __future__ import annotations

from torch import Tensor, nn

#: Images at most this many pixels on their short side get the CIFAR stem by default.
SMALL_IMAGE = 64


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; identity (or 1x1 conv + BN) shortcut. ResNet-18/34."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand (x4), BN after each. ResNet-50/101/152."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem -> 4 stages (width w, 2w, 4w, 8w; strides 1, 2, 2, 2) -> global pool -> fc.

    ``cifar_stem`` replaces the 7x7/2 conv + 3x3/2 max-pool (built for 224 px ImageNet)
    by a 3x3/1 conv and no pool, the usual CIFAR variant: on 32 px inputs the ImageNet
    stem would shrink the image to 8x8 before the first block.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: tuple[int, ...],
        in_channels: int,
        num_classes: int,
        width: int = 64,
        cifar_stem: bool = False,
    ) -> None:
        super().__init__()
        self.inplanes = width
        if cifar_stem:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(block, width, layers[0], 1)
        self.layer2 = self._make_layer(block, 2 * width, layers[1], 2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], 2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)
        for m in self.modules():  # torchvision's init (fc keeps nn.Linear's default)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _build(
    name: str,
    block: type[BasicBlock | Bottleneck],
    layers: tuple[int, ...],
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int,
    cifar_stem: bool | None,
) -> ResNet:
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs a (C, H, W) input_shape, got {tuple(input_shape)}")
    if cifar_stem is not None and not isinstance(cifar_stem, bool):
        raise ValueError(f"{name}: option cifar_stem={cifar_stem!r} must be true, false or null")
    if cifar_stem is None:
        cifar_stem = min(input_shape[1:]) <= SMALL_IMAGE
    return ResNet(block, layers, input_shape[0], num_classes, width, cifar_stem)


def build_resnet18(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 64,
    cifar_stem: bool | None = None,
) -> ResNet:
    """ResNet-18 (BasicBlock x [2, 2, 2, 2]); ``width`` scales every stage (64 = paper).

    ``cifar_stem=None`` picks the CIFAR stem for images of at most 64 px.
    """
    return _build("resnet18", BasicBlock, (2, 2, 2, 2), input_shape, num_classes, width, cifar_stem)


def build_resnet50(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 64,
    cifar_stem: bool | None = None,
) -> ResNet:
    """ResNet-50 (Bottleneck x [3, 4, 6, 3]); options as for ``build_resnet18``."""
    return _build("resnet50", Bottleneck, (3, 4, 6, 3), input_shape, num_classes, width, cifar_stem)
