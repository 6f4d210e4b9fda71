"""Inflated 3D ResNet (I3D-style) with Bottleneck blocks, in torchvision's ResNet parameter naming.

Written for radfinder from the ResNet ("Deep Residual Learning", He et al. 2016; torchvision's v1.5 Bottleneck
with the stride on the 3x3 conv) and I3D ("Quo Vadis, Action Recognition?", Carreira & Zisserman 2017: every 2D
k x k kernel becomes a t x k x k kernel) papers. Tensors are laid out (N, C, D, H, W): the first spatial axis is
the inflated one (depth for CT, time for video), so a checkpoint's conv weight (out, in, kD, kH, kW) maps directly.

Kernel sizes are fixed by the weights (the stem is kD x 7 x 7, every block's middle conv kD x 3 x 3, the rest
1 x 1 x 1); the strides are not stored in a state dict, so they are constructor arguments
(`ResNet3dConfig`). The defaults are the usual I3D inflation: the stem keeps depth (stride 1, 2, 2), the max-pool
and every stage transition halve all three axes. A (N, C, 32, 128, 128) input ends as (N, 2048, 2, 4, 4).

Parameter names are exactly torchvision's (`conv1`, `bn1`, `layer1.0.conv2`, `layer4.2.downsample.1`, ...),
with 5D conv kernels; there is no `fc` (this is a feature extractor).

`ResNet3dWindowEncoder` wraps the network as a radfinder window encoder (registered as kind "resnet3d"):
windows (N, 1, H, W, D) in [0, 1] -> `WindowFeatures` with cls = patch_average = the global average of the last
feature map and axis2 = its in-plane average, adaptively average-pooled along depth to `depth_tokens` positions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from .astra_weights import load_astra_state_dict
from .window_encoder import WindowEncoder, WindowFeatures, register_window_encoder

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class ResNet3dConfig:
    """Architecture of an inflated Bottleneck ResNet.

    layers: Bottleneck blocks per stage ((3, 8, 36, 3) is ResNet-152).
    in_channels: input channels of the stem (3 for ImageNet-inflated weights; grey CT is replicated).
    width: channels after the stem (64); stage i has width * 2**i middle and 4x that output channels.
    stem_kernel / stem_stride: the first conv, (depth, height, width).
    pool_kernel / pool_stride: the max-pool after the stem.
    block_depth_kernel: depth extent of each block's middle (3x3) conv.
    stage_depth_strides: depth stride of the first block of each stage (in-plane: 1, 2, 2, 2 as in ResNet).
    """

    layers: tuple[int, int, int, int] = (3, 8, 36, 3)
    in_channels: int = 3
    width: int = 64
    stem_kernel: Triple = (3, 7, 7)
    stem_stride: Triple = (1, 2, 2)
    pool_kernel: Triple = (3, 3, 3)
    pool_stride: Triple = (2, 2, 2)
    block_depth_kernel: int = 3
    stage_depth_strides: tuple[int, int, int, int] = (1, 2, 2, 2)
    expansion: int = field(default=4, init=False)

    @property
    def out_channels(self) -> int:
        return self.width * 8 * self.expansion

    def reduction(self) -> Triple:
        """Total stride of the network along (depth, height, width)."""
        d = self.stem_stride[0] * self.pool_stride[0]
        for s in self.stage_depth_strides:
            d *= s
        h = self.stem_stride[1] * self.pool_stride[1] * 8
        w = self.stem_stride[2] * self.pool_stride[2] * 8
        return d, h, w


RESNET152_3D = ResNet3dConfig()


def _pad(kernel: Sequence[int]) -> Triple:
    return tuple(k // 2 for k in kernel)  # type: ignore[return-value]


class Bottleneck3d(nn.Module):
    """1x1x1 reduce -> kD x 3 x 3 (strided) -> 1x1x1 expand, each followed by BatchNorm3d; residual add; ReLU."""

    expansion = 4

    def __init__(self, in_ch: int, mid_ch: int, stride: Triple, depth_kernel: int, downsample: nn.Module | None):
        super().__init__()
        out_ch = mid_ch * self.expansion
        k2 = (depth_kernel, 3, 3)
        self.conv1 = nn.Conv3d(in_ch, mid_ch, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid_ch)
        self.conv2 = nn.Conv3d(mid_ch, mid_ch, kernel_size=k2, stride=stride, padding=_pad(k2), bias=False)
        self.bn2 = nn.BatchNorm3d(mid_ch)
        self.conv3 = nn.Conv3d(mid_ch, out_ch, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet3d(nn.Module):
    """Inflated Bottleneck ResNet feature extractor: (N, C_in, D, H, W) -> (N, C_out, D', H', W')."""

    def __init__(self, config: ResNet3dConfig = RESNET152_3D):
        super().__init__()
        self.config = c = config
        self.conv1 = nn.Conv3d(
            c.in_channels,
            c.width,
            kernel_size=c.stem_kernel,
            stride=c.stem_stride,
            padding=_pad(c.stem_kernel),
            bias=False,
        )
        self.bn1 = nn.BatchNorm3d(c.width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=c.pool_kernel, stride=c.pool_stride, padding=_pad(c.pool_kernel))
        in_ch = c.width
        for i, (blocks, dstride) in enumerate(zip(c.layers, c.stage_depth_strides, strict=True)):
            mid = c.width * 2**i
            stride = (dstride, 1 if i == 0 else 2, 1 if i == 0 else 2)
            stage, in_ch = self._make_stage(in_ch, mid, blocks, stride)
            self.add_module(f"layer{i + 1}", stage)
        self.out_channels = in_ch
        self._init_weights()

    def _make_stage(self, in_ch: int, mid: int, blocks: int, stride: Triple) -> tuple[nn.Sequential, int]:
        out_ch = mid * Bottleneck3d.expansion
        downsample = None
        if stride != (1, 1, 1) or in_ch != out_ch:
            downsample = nn.Sequential(
                nn.Conv3d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), nn.BatchNorm3d(out_ch)
            )
        dk = self.config.block_depth_kernel
        mods = [Bottleneck3d(in_ch, mid, stride, dk, downsample)]
        mods += [Bottleneck3d(out_ch, mid, (1, 1, 1), dk, None) for _ in range(blocks - 1)]
        return nn.Sequential(*mods), out_ch

    def _init_weights(self) -> None:
        """He init for convs; BN gamma 1, beta 0, except the last BN of each block: gamma 0 (Goyal et al. 2017),
        so that a randomly initialised block is the identity and a random deep network does not blow up when its
        BatchNorms run on their initial statistics (frozen encoders are always in eval mode)."""
        if next(self.parameters()).is_meta:  # built on the meta device to be filled by a checkpoint
            return
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck3d):
                nn.init.zeros_(m.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def resnet152_3d(**overrides) -> ResNet3d:
    """Inflated ResNet-152 (Bottleneck blocks 3, 8, 36, 3; 2048 output channels); `overrides` go to the config."""
    return ResNet3d(ResNet3dConfig(**overrides))


def state_dict_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Name -> shape of every parameter and buffer the model expects in a state dict."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Raise `CheckpointError` listing missing keys, unexpected keys and shape mismatches (none are tolerated)."""
    want = state_dict_shapes(model)
    have = {k: list(v.shape) for k, v in state_dict.items()}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    mismatched = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if not (missing or unexpected or mismatched):
        return

    def show(keys: list[str], fmt) -> str:
        head = ", ".join(fmt(k) for k in keys[:8])
        return head + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {show(missing, str)}")
    if unexpected:
        parts.append(f"unexpected keys: {show(unexpected, str)}")
    if mismatched:
        parts.append(f"shape mismatches: {show(mismatched, lambda k: f'{k} model {want[k]} vs file {have[k]}')}")
    raise CheckpointError(f"{source} does not match the 3D ResNet: " + "; ".join(parts))


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state dict"
) -> nn.Module:
    """Check names and shapes first (a clear error beats torch's), then load with strict=True.

    Values are copied into the model's tensors, converting dtype on the way (e.g. a bfloat16 file into a float32
    model) without a second full-size copy of the weights.
    """
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)
    return model


def fold_input_channels(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum the stem kernel over its input channels: a 1-channel stem on a grey volume then computes exactly what
    the C-channel stem computes on that volume replicated C times (convolution is linear in its input)."""
    out = dict(state_dict)
    w = out["conv1.weight"]
    if w.shape[1] != 1:
        out["conv1.weight"] = w.sum(dim=1, keepdim=True, dtype=torch.float32)  # summed in float32 (bf16 files)
    return out


class ResNet3dWindowEncoder(WindowEncoder):
    """A (frozen) inflated 3D ResNet as a radfinder window encoder.

    Input: windows (N, 1, H, W, D) as produced by the preprocessing spec (HU [-1000, 1000] -> [0, 1], depth last).
    They are fed to the network as (N, 1, D, H, W), depth on the inflated kernel axis. The stem takes one grey
    channel; weights pretrained on C replicated channels are folded by `load_backbone_state_dict`.

    `inplane_pool` > 1 average-pools each window in-plane by that factor first (e.g. 2 turns 0.75 mm pixels into
    the 1.5 mm of a backbone pretrained at 1.5 mm; 4x fewer FLOPs, coarser maps).

    Features, from the last feature map (N, C, d, h, w) (2 x 4 x 4 for a 32 x 128 x 128 window):
    cls (N, C) and patch_average (N, C): both the global average (a CNN has no separate class token);
    axis2 (N, depth_tokens, C): the in-plane average keeping depth, adaptive-average-pooled along depth to
    `depth_tokens` positions (with d = 2 and 8 tokens, tokens 0-3 repeat depth cell 0 and 4-7 repeat cell 1).
    """

    def __init__(
        self,
        config: ResNet3dConfig = RESNET152_3D,
        window_size: tuple[int, int, int] = (128, 128, 32),
        depth_tokens: int = 8,
        inplane_pool: int = 1,
        frozen: bool = True,
    ):
        super().__init__()
        if inplane_pool < 1 or window_size[0] % inplane_pool or window_size[1] % inplane_pool:
            raise ValueError(f"inplane_pool {inplane_pool} must be >= 1 and divide the window {window_size[:2]}")
        self.config = config
        self.backbone = ResNet3d(replace(config, in_channels=1))
        self.embed_dim = self.feature_dim = self.backbone.out_channels
        self.window_size = tuple(int(v) for v in window_size)
        self.depth_tokens = int(depth_tokens)
        self.inplane_pool = int(inplane_pool)
        self.frozen = frozen
        if frozen:
            self.backbone.requires_grad_(False)
            self.eval()

    @property
    def depth_positions(self) -> int:
        """Depth positions of the last feature map per window (2 for ResNet-152 on 32 slices): coarser than the
        depth tokens, which repeat them (see the class doc)."""
        return max(1, self.window_size[2] // self.config.reduction()[0])

    def train(self, mode: bool = True) -> ResNet3dWindowEncoder:
        """A frozen encoder stays in eval mode (BatchNorm uses its running statistics) whatever is asked."""
        return super().train(False if self.frozen else mode)

    def feature_map(self, windows: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W, D) windows -> last feature map (N, C, d, h, w)."""
        p = next(self.backbone.parameters())
        x = windows.to(device=p.device, dtype=p.dtype)
        if self.inplane_pool > 1:
            k = self.inplane_pool
            x = F.avg_pool3d(x, kernel_size=(k, k, 1))
        return self.backbone(x.permute(0, 1, 4, 2, 3))

    def forward_features(self, windows: torch.Tensor) -> WindowFeatures:
        fmap = self.feature_map(windows)
        pooled = fmap.mean(dim=(2, 3, 4))
        depth = F.adaptive_avg_pool1d(fmap.mean(dim=(3, 4)), self.depth_tokens).transpose(1, 2)
        return WindowFeatures(cls=pooled, patch_average=pooled, axis2=depth.contiguous())

    def load_backbone_state_dict(self, state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
        """Load torchvision-named backbone weights strictly (any missing or unexpected key or shape is an error).

        The file's stem may have any number of input channels: it is checked as such, then folded to one.
        """
        if "conv1.weight" not in state_dict:
            check_state_dict(self.backbone, state_dict, source)  # raises, listing everything that is missing
        in_ch = int(state_dict["conv1.weight"].shape[1])
        with torch.device("meta"):
            reference = ResNet3d(replace(self.config, in_channels=in_ch))
        check_state_dict(reference, state_dict, source)
        load_state_dict_strict(self.backbone, fold_input_channels(state_dict), source)


def _build_resnet3d(cfg) -> ResNet3dWindowEncoder:
    """Builder for `WindowEncoderConfig(kind="resnet3d", embed_dim=2048, options={...})`.

    options: layers (default ResNet-152's), width, inplane_pool, depth_tokens, weights ("astra" loads the
    pretrained ASTRA backbone, see `radfinder.models.astra_weights`; absent: random init, e.g. to be filled by a
    checkpoint).
    """
    opts = dict(cfg.options)
    weights = opts.pop("weights", None)
    arch = {k: tuple(opts.pop(k)) if k == "layers" else opts.pop(k) for k in ("layers", "width") if k in opts}
    enc_kw = {k: opts.pop(k) for k in ("inplane_pool", "depth_tokens") if k in opts}
    if opts:
        raise ConfigError(f"window encoder resnet3d: unknown options {sorted(opts)}")
    encoder = ResNet3dWindowEncoder(ResNet3dConfig(**arch), window_size=tuple(cfg.window_size), **enc_kw)
    if encoder.feature_dim != cfg.resolved_feature_dim:
        raise ConfigError(
            f"window encoder resnet3d has {encoder.feature_dim} output channels but the config says "
            f"{cfg.resolved_feature_dim} (set embed_dim: {encoder.feature_dim})"
        )
    if weights == "astra":
        state_dict, _ = load_astra_state_dict()
        encoder.load_backbone_state_dict(state_dict, source="ASTRA I3ResNet-152 weights")
    elif weights is not None:
        raise ConfigError(f"window encoder resnet3d: unknown weights {weights!r} (known: 'astra')")
    return encoder


register_window_encoder("resnet3d", _build_resnet3d)
