"""Wire protocol: compressed smashed data / gradients <-> compact bytes, with bit accounting.

Layout of a serialized payload (little endian)::

    b"ACPW" | version u8 | flags u8 | ndim u8 | shape: ndim x u32
    [mask]    ceil(N/8) bytes, bit-packed channel mask (N = shape[1])
    [indices] dtype code u8 | k u32 | B*k indices (smallest unsigned type that fits)
    [labels]  dtype code u8 | B labels (uint8 / uint16 / uint32)
    [counts]  dtype code u8 | classes u32 | B x classes label counts (merged samples, instead of labels)
    [quant]   bits u8 | groups u32 | scale: groups x f32 | offset: groups x f32
    [dropout] seed u64 | p f64 | rescale u8
    values    float32, or quantization codes bit-packed at `bits` bits each

The number of values follows from shape, mask and k (and, with dropout, from the seeded
keep mask that both sides draw), so the total length is checked exactly.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from dataclasses import dataclass

import numpy as np
import torch

MAGIC = b"ACPW"
VERSION = 1
_F_MASK, _F_INDICES, _F_LABELS, _F_QUANT, _F_DROP, _F_COUNTS = 1, 2, 4, 8, 16, 32
_DROP_BITS = 64 + 64 + 1  # seed, p, rescale flag
_UINTS = (np.uint8, np.uint16, np.uint32)
FLOAT_BITS = 32


class PayloadError(ValueError):
    """A malformed or inconsistent payload."""


@dataclass(frozen=True)
class Dropout:
    """Random activation dropout on a payload's values (lightweight FedSL, arXiv 2412.06414).

    Of the values the codec would send, each is dropped with probability ``p`` by a mask
    that sender and receiver both draw from ``seed``; only the kept values travel (the
    seed, not the mask, is sent). With ``rescale`` the receiver multiplies them by
    1 / (1 - p), as inverted dropout does, and the gradient that comes back on the same
    elements gets the same factor (it is the chain rule of that scaling).
    """

    seed: int
    p: float
    rescale: bool = True

    def keep(self, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The boolean keep mask over ``count`` codec values."""
        gen = torch.Generator().manual_seed(self.seed)
        return (torch.rand(count, generator=gen, dtype=torch.float64) >= self.p).to(device)

    @property
    def factor(self) -> float:
        return 1.0 / (1.0 - self.p) if self.rescale else 1.0


@dataclass(frozen=True)
class Payload:
    """Compressed view of a dense tensor of shape ``shape`` = (B, N, H, W) (or (B, D...)).

    Exactly one of three layouts: dense (no mask, no indices), channel-masked (``values``
    holds the kept channels of every sample, B x kept x H x W), or sparse (``indices``
    B x k flat per-sample positions, ``values`` the matching B x k elements). ``bits`` > 0
    means ``values`` are integer codes of uniform quantization with per-group ``scale``
    and ``offset`` (one group, or one per channel). With ``dropout``, ``values`` holds
    only the kept ones of those values (see ``Dropout``).

    Labels are ``labels`` (B class indices) or, for a batch of merged samples (ADC),
    ``label_counts`` (B x classes: how many members of each class a merged sample has).
    ``source_shape`` is client-side bookkeeping, never on the wire: the shape of the smashed
    data the codec made this payload from, when it sends fewer samples or tokens than that.
    """

    shape: tuple[int, ...]
    values: torch.Tensor
    channel_mask: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    bits: int = 0
    scale: torch.Tensor | None = None
    offset: torch.Tensor | None = None
    dropout: Dropout | None = None
    label_counts: torch.Tensor | None = None
    source_shape: tuple[int, ...] | None = None

    @property
    def batch_size(self) -> int:
        return self.shape[0]

    @property
    def sample_numel(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def dense_numel(self) -> int:
        return math.prod(self.shape)

    @property
    def kept_fraction(self) -> float:
        """Fraction of the dense elements (of ``source_shape``, when known) whose values travel."""
        return self.values.numel() / math.prod(self.source_shape or self.shape)

    @property
    def codec_numel(self) -> int:
        """Values the layout (mask / indices) holds before any dropout."""
        if self.indices is not None:
            return self.indices.numel()
        if self.channel_mask is not None:
            return self.batch_size * int(self.channel_mask.sum()) * math.prod(self.shape[2:])
        return self.dense_numel

    def keep_mask(self) -> torch.Tensor | None:
        """Which of the layout's values travel (None without dropout)."""
        return None if self.dropout is None else self.dropout.keep(self.codec_numel, self.values.device)

    def to_dense(self) -> torch.Tensor:
        """The dense float32 tensor the receiver reconstructs (zeros where nothing was sent)."""
        keep = self.keep_mask()
        groups = self._group_index()
        if keep is not None and groups is not None:
            groups = groups[keep]
        vals = dequantize(self.values, self.scale, self.offset, groups) if self.bits else self.values
        vals = vals.float()
        if keep is not None:
            full = torch.zeros(keep.numel(), dtype=torch.float32, device=vals.device)
            full[keep] = vals * self.dropout.factor
            vals = full
        batch = self.batch_size
        if self.indices is not None:
            out = torch.zeros(batch, self.sample_numel, dtype=torch.float32, device=vals.device)
            out.scatter_(1, self.indices.long(), vals.view(batch, -1))
            return out.view(self.shape)
        if self.channel_mask is not None:
            out = torch.zeros(self.shape, dtype=torch.float32, device=vals.device)
            out[:, self.channel_mask] = vals.view(batch, int(self.channel_mask.sum()), *self.shape[2:])
            return out
        return vals.view(self.shape)

    def _group_index(self) -> torch.Tensor | None:
        """Channel of each value, for per-channel quantization (dense layout only)."""
        if self.scale is None or self.scale.numel() == 1:
            return None
        channels = torch.arange(self.shape[1], device=self.values.device)
        return channels.view(1, -1, *([1] * (len(self.shape) - 2))).expand(self.shape).reshape(-1)


# ---------------------------------------------------------------- quantization
def quantize(values: torch.Tensor, bits: int, groups: torch.Tensor | None = None, num_groups: int = 1):
    """Uniform ``bits``-bit quantization with min/max range per group.

    Returns (codes int32, scale f32 [G], offset f32 [G]); x ~= codes * scale + offset.
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    x = values.detach().float().reshape(-1)
    levels = (1 << bits) - 1
    if groups is None:
        lo, hi = x.min().reshape(1), x.max().reshape(1)
    else:
        lo = torch.full((num_groups,), float("inf"), device=x.device).scatter_reduce(0, groups, x, "amin")
        hi = torch.full((num_groups,), float("-inf"), device=x.device).scatter_reduce(0, groups, x, "amax")
    scale = (hi - lo) / levels
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    g = groups if groups is not None else 0
    codes = torch.round((x - lo[g]) / safe[g]).clamp_(0, levels).to(torch.int32)
    return codes, scale, lo


def dequantize(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, groups: torch.Tensor | None):
    g = groups if groups is not None else 0
    return codes.float() * scale[g] + offset[g]


# ---------------------------------------------------------------- gradient mirroring
def like(ref: Payload, dense: torch.Tensor, *, bits: int | None = None) -> Payload:
    """Compress ``dense`` (same shape as ``ref``) with ref's mask / indices / bit width.

    This is how the server sparsifies the gradient w.r.t. the smashed data: the same
    channels or positions that came up go back down. ``bits`` overrides ref's bit width
    (down-link quantization; 0 = float32), with ref's quantization groups when it has
    per-channel ones, else one range for the tensor.
    """
    if tuple(dense.shape) != tuple(ref.shape):
        raise PayloadError(f"gradient shape {tuple(dense.shape)} != smashed shape {ref.shape}")
    dense = dense.detach()
    if ref.indices is not None:
        values = dense.reshape(ref.batch_size, -1).gather(1, ref.indices.long().to(dense.device)).reshape(-1)
    elif ref.channel_mask is not None:
        values = dense[:, ref.channel_mask.to(dense.device)].reshape(-1)
    else:
        values = dense.reshape(-1)
    keep = ref.keep_mask()
    if keep is not None:
        values = values[keep.to(values.device)]
    bits = ref.bits if bits is None else bits
    if not bits:
        return Payload(ref.shape, values, ref.channel_mask, ref.indices, dropout=ref.dropout)
    num_groups = 1 if ref.scale is None or not ref.bits else ref.scale.numel()
    groups = ref._group_index() if ref.bits else None
    if groups is not None and keep is not None:
        groups = groups[keep]
    codes, scale, offset = quantize(values, bits, groups.to(values.device) if groups is not None else None, num_groups)
    return Payload(ref.shape, codes, ref.channel_mask, ref.indices, None, bits, scale, offset, ref.dropout)


def drop(payload: Payload, dropout: Dropout) -> Payload:
    """``payload`` with activation dropout: only the values ``dropout`` keeps travel."""
    if payload.dropout is not None:
        raise PayloadError("payload already has dropout")
    keep = dropout.keep(payload.values.numel(), payload.values.device)
    return dataclasses.replace(payload, values=payload.values[keep], dropout=dropout)


# ---------------------------------------------------------------- accounting
def ideal_bits(payload: Payload, num_classes: int) -> int:
    """Bits of information under the RandTopk paper's convention.

    A float element costs 32 bits, a sparse element 32 + ceil(log2 d) (d = elements per
    sample), a quantized element ``bits`` plus 64 bits of scale/offset per group, a channel
    mask one bit per channel, a label ceil(log2 num_classes), dropout its seed, p and flag.
    """
    total = payload.values.numel() * (payload.bits or FLOAT_BITS)
    if payload.indices is not None:  # every index travels, also those of values dropped by dropout
        total += payload.indices.numel() * max(1, math.ceil(math.log2(payload.sample_numel)))
    if payload.channel_mask is not None:
        total += payload.channel_mask.numel()
    if payload.bits and payload.scale is not None:
        total += 2 * FLOAT_BITS * payload.scale.numel()
    if payload.labels is not None:
        total += payload.labels.numel() * max(1, math.ceil(math.log2(max(num_classes, 2))))
    if payload.label_counts is not None:  # a count is at most the members of the whole batch
        total += payload.label_counts.numel() * max(1, math.ceil(math.log2(int(payload.label_counts.sum()) + 1)))
    if payload.dropout is not None:
        total += _DROP_BITS  # seed, p and the rescale flag: the receiver draws the mask itself
    return total


# ---------------------------------------------------------------- serialization
def _uint_code(max_value: int) -> int:
    for code, dtype in enumerate(_UINTS):
        if max_value <= np.iinfo(dtype).max:
            return code
    raise PayloadError(f"value {max_value} does not fit in uint32")


def _pack_codes(codes: np.ndarray, bits: int) -> bytes:
    if bits == 8:
        return codes.astype(np.uint8).tobytes()
    if bits == 16:
        return codes.astype("<u2").tobytes()
    bitplanes = (codes.astype(np.uint32)[:, None] >> np.arange(bits, dtype=np.uint32)) & 1
    return np.packbits(bitplanes.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def _unpack_codes(buf: memoryview, count: int, bits: int) -> np.ndarray:
    if bits == 8:
        return np.frombuffer(buf, dtype=np.uint8, count=count).astype(np.int32)
    if bits == 16:
        return np.frombuffer(buf, dtype="<u2", count=count).astype(np.int32)
    flat = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), bitorder="little", count=count * bits)
    weights = (1 << np.arange(bits, dtype=np.int32))
    return (flat.reshape(count, bits).astype(np.int32) * weights).sum(axis=1, dtype=np.int32)


def _packed_len(count: int, bits: int) -> int:
    return count * 4 if not bits else (count * bits + 7) // 8


def to_bytes(payload: Payload) -> bytes:
    """Serialize a payload (tensors are moved to CPU)."""
    flags = ((payload.channel_mask is not None) * _F_MASK | (payload.indices is not None) * _F_INDICES
             | (payload.labels is not None) * _F_LABELS | (payload.bits > 0) * _F_QUANT
             | (payload.dropout is not None) * _F_DROP | (payload.label_counts is not None) * _F_COUNTS)
    if payload.labels is not None and payload.label_counts is not None:
        raise PayloadError("a payload carries labels or label counts, not both")
    parts = [MAGIC, struct.pack("<BBB", VERSION, flags, len(payload.shape)),
             struct.pack(f"<{len(payload.shape)}I", *payload.shape)]
    if payload.channel_mask is not None:
        parts.append(np.packbits(payload.channel_mask.cpu().numpy().astype(np.uint8)).tobytes())
    if payload.indices is not None:
        code = _uint_code(max(payload.sample_numel - 1, 0))
        parts.append(struct.pack("<BI", code, payload.indices.shape[1]))
        parts.append(payload.indices.cpu().numpy().astype(np.dtype(_UINTS[code]).newbyteorder("<")).tobytes())
    if payload.labels is not None:
        labels = payload.labels.cpu().numpy()
        if labels.size and labels.min() < 0:
            raise PayloadError("labels must be non-negative")
        code = _uint_code(int(labels.max()) if labels.size else 0)
        parts.append(struct.pack("<B", code) + labels.astype(np.dtype(_UINTS[code]).newbyteorder("<")).tobytes())
    if payload.label_counts is not None:
        counts = payload.label_counts.cpu().numpy()
        if counts.ndim != 2 or counts.shape[0] != payload.batch_size or (counts.size and counts.min() < 0):
            raise PayloadError(f"label counts must be non-negative, batch x classes; got shape {counts.shape}")
        code = _uint_code(int(counts.max()) if counts.size else 0)
        parts.append(struct.pack("<BI", code, counts.shape[1])
                     + counts.astype(np.dtype(_UINTS[code]).newbyteorder("<")).tobytes())
    if payload.bits:
        assert payload.scale is not None and payload.offset is not None
        parts.append(struct.pack("<BI", payload.bits, payload.scale.numel()))
        parts.append(payload.scale.detach().cpu().numpy().astype("<f4").tobytes())
        parts.append(payload.offset.detach().cpu().numpy().astype("<f4").tobytes())
    if payload.dropout is not None:
        d = payload.dropout
        parts.append(struct.pack("<QdB", d.seed, d.p, d.rescale))
    if payload.bits:
        parts.append(_pack_codes(payload.values.cpu().numpy().reshape(-1), payload.bits))
    else:
        parts.append(payload.values.detach().cpu().numpy().astype("<f4", copy=False).tobytes())
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.view, self.pos = memoryview(data), 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.view):
            raise PayloadError(f"payload truncated while reading {what} ({len(self.view)} bytes)")
        out = self.view[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


def from_bytes(data: bytes) -> Payload:
    """Parse and validate a serialized payload; raises PayloadError on anything malformed."""
    r = _Reader(data)
    if bytes(r.take(4, "magic")) != MAGIC:
        raise PayloadError("not an acp-flower payload (bad magic)")
    version, flags, ndim = r.unpack("<BBB", "header")
    if version != VERSION:
        raise PayloadError(f"unsupported payload version {version} (expected {VERSION})")
    if (flags & ~(_F_MASK | _F_INDICES | _F_LABELS | _F_QUANT | _F_DROP | _F_COUNTS)
            or (flags & _F_MASK and flags & _F_INDICES) or (flags & _F_LABELS and flags & _F_COUNTS)):
        raise PayloadError(f"invalid flags {flags:#x}")
    if not 2 <= ndim <= 8:
        raise PayloadError(f"invalid number of dimensions {ndim}")
    shape = tuple(r.unpack(f"<{ndim}I", "shape"))
    batch, sample_numel = shape[0], math.prod(shape[1:])
    mask = indices = labels = counts = scale = offset = None
    count = math.prod(shape)
    if flags & _F_MASK:
        n_ch = shape[1]
        bits = np.unpackbits(np.frombuffer(r.take((n_ch + 7) // 8, "channel mask"), np.uint8), count=n_ch)
        mask = torch.from_numpy(bits.astype(bool))
        count = batch * int(mask.sum()) * math.prod(shape[2:])
    if flags & _F_INDICES:
        code, k = r.unpack("<BI", "index header")
        if code >= len(_UINTS) or k > sample_numel:
            raise PayloadError(f"invalid index section (dtype code {code}, k={k}, d={sample_numel})")
        dtype = np.dtype(_UINTS[code]).newbyteorder("<")
        idx = np.frombuffer(r.take(batch * k * dtype.itemsize, "indices"), dtype).astype(np.int64)
        if idx.size and idx.max() >= sample_numel:
            raise PayloadError(f"index {idx.max()} out of range for {sample_numel} elements per sample")
        indices, count = torch.from_numpy(idx.reshape(batch, k)), batch * k
    if flags & _F_LABELS:
        (code,) = r.unpack("<B", "label dtype")
        if code >= len(_UINTS):
            raise PayloadError(f"invalid label dtype code {code}")
        dtype = np.dtype(_UINTS[code]).newbyteorder("<")
        labels = torch.from_numpy(np.frombuffer(r.take(batch * dtype.itemsize, "labels"), dtype).astype(np.int64))
    if flags & _F_COUNTS:
        code, classes = r.unpack("<BI", "label count header")
        if code >= len(_UINTS) or not 1 <= classes <= 1 << 16:
            raise PayloadError(f"invalid label count section (dtype code {code}, classes={classes})")
        dtype = np.dtype(_UINTS[code]).newbyteorder("<")
        raw_counts = r.take(batch * classes * dtype.itemsize, "label counts")
        counts = torch.from_numpy(np.frombuffer(raw_counts, dtype).astype(np.int64).reshape(batch, classes))
    nbits = 0
    if flags & _F_QUANT:
        nbits, groups = r.unpack("<BI", "quantization header")
        if not 1 <= nbits <= 16 or groups not in (1, shape[1]) or (groups > 1 and (mask is not None or indices is not None)):
            raise PayloadError(f"invalid quantization section (bits={nbits}, groups={groups})")
        scale = torch.from_numpy(np.frombuffer(r.take(4 * groups, "scale"), "<f4").astype(np.float32))
        offset = torch.from_numpy(np.frombuffer(r.take(4 * groups, "offset"), "<f4").astype(np.float32))
        if not (torch.isfinite(scale).all() and torch.isfinite(offset).all() and (scale >= 0).all()):
            raise PayloadError("quantization scale/offset must be finite and scale >= 0")
    dropout = None
    if flags & _F_DROP:
        seed, p, rescale = r.unpack("<QdB", "dropout section")
        if not (0.0 <= p < 1.0) or rescale > 1:
            raise PayloadError(f"invalid dropout section (p={p}, rescale={rescale})")
        dropout = Dropout(seed, p, bool(rescale))
        count = int(dropout.keep(count).sum())
    raw = r.take(_packed_len(count, nbits), "values")
    if r.pos != len(r.view):
        raise PayloadError(f"payload has {len(r.view) - r.pos} trailing bytes")
    if nbits:
        values = torch.from_numpy(_unpack_codes(raw, count, nbits))
    else:
        values = torch.from_numpy(np.frombuffer(raw, "<f4").astype(np.float32))
        if not torch.isfinite(values).all():
            raise PayloadError("payload values contain NaN or Inf")
    return Payload(shape, values, mask, indices, labels, nbits, scale, offset, dropout, counts)
