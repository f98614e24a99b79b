"""ADC: K-means merging, soft labels, token selection, exact gradients to every member, bytes."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acp_flower.codecs.adc import AdcCodec, AdcOptions, kmeans, top_tokens
from acp_flower.exchanges.base import train_tail
from acp_flower.runtime.server import ServerRuntime
from acp_flower.runtime.stats import train_stats
from acp_flower.wire import Payload, PayloadError, from_bytes, ideal_bits, to_bytes

B, D, T, K = 8, 5, 6, 4


class FakeHead(nn.Module):
    """Stands for a ViT head: a CLS attention (B x T) that the test sets."""

    def __init__(self) -> None:
        super().__init__()
        self.cls_attention = None


def _codec(ratio=0.5, tokens=3, **kw):
    codec = AdcCodec(AdcOptions(adc_batch_ratio=ratio, adc_tokens=tokens, **kw), seed=0)
    head = FakeHead()
    codec.attach(head, (D, T), K)
    return codec, head


def _batch():
    """4 distinct attention rows, each for two samples (0,4), (1,5), (2,6), (3,7)."""
    gen = torch.Generator().manual_seed(0)
    base = torch.softmax(3 * torch.randn(4, T, generator=gen), dim=1)
    attention = torch.cat([base, base])
    smashed = torch.randn(B, D, T, generator=gen)
    labels = torch.tensor([0, 1, 2, 3, 1, 1, 3, 0])
    return attention, smashed, labels


def test_kmeans_groups_identical_points_and_drops_surplus_clusters():
    attention, _, _ = _batch()
    assign = kmeans(attention, 4, torch.Generator().manual_seed(1))
    assert assign.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]  # ids by smallest member
    # More clusters asked than distinct points: still one cluster per distinct point.
    assert kmeans(attention, 8, torch.Generator().manual_seed(1)).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert kmeans(attention, 1, torch.Generator().manual_seed(1)).tolist() == [0] * 8
    # Seeded: the same generator state gives the same clusters.
    pts = torch.randn(40, 3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(kmeans(pts, 5, torch.Generator().manual_seed(3)), kmeans(pts, 5, torch.Generator().manual_seed(3)))


def test_top_tokens_keeps_cls_and_the_most_attended():
    att = torch.tensor([[0.5, 0.1, 0.3, 0.05, 0.05, 0.0], [0.0, 0.0, 0.0, 0.1, 0.2, 0.7]])
    assert top_tokens(att, 3).tolist() == [[0, 1, 2], [0, 4, 5]]
    assert top_tokens(att, 1).tolist() == [[0], [0]]


def test_training_upload_merges_clusters_with_soft_labels_and_top_tokens():
    codec, head = _codec()
    attention, smashed, labels = _batch()
    head.cls_attention = attention
    payload = codec.encode(smashed, labels)
    assert payload.shape == (4, D, 3) and payload.labels is None and payload.source_shape == (B, D, T)
    values = payload.to_dense()
    for c, (i, j) in enumerate([(0, 4), (1, 5), (2, 6), (3, 7)]):
        idx = top_tokens(attention[i:i + 1], 3)[0]
        torch.testing.assert_close(values[c], ((smashed[i] + smashed[j]) / 2)[:, idx])
        expected = torch.bincount(labels[[i, j]], minlength=K)
        assert torch.equal(payload.label_counts[c], expected)
    assert payload.kept_fraction == pytest.approx(4 * 3 / (B * T))


def test_gradient_reaches_every_member_by_the_chain_rule_of_the_mean():
    codec, head = _codec()
    attention, smashed, labels = _batch()
    head.cls_attention = attention
    payload = codec.encode(smashed, labels)
    grad = torch.randn(payload.shape, generator=torch.Generator().manual_seed(5))
    # Reference: merge + token selection written with autograd.
    x = smashed.clone().requires_grad_()
    rows = []
    for i, j in [(0, 4), (1, 5), (2, 6), (3, 7)]:
        idx = top_tokens(attention[i:i + 1], 3)[0]
        rows.append(((x[i] + x[j]) / 2)[:, idx])
    torch.stack(rows).backward(grad)
    member_grad = codec.decode_grad(Payload(payload.shape, grad.reshape(-1)))
    torch.testing.assert_close(member_grad, x.grad)
    dropped = torch.ones(T, dtype=torch.bool)
    dropped[top_tokens(attention[:1], 3)[0]] = False
    assert torch.all(member_grad[0][:, dropped] == 0)  # zeros at tokens that were not sent


def test_inference_never_merges():
    codec, head = _codec()
    attention, smashed, _ = _batch()
    head.cls_attention = attention
    payload = codec.encode(smashed, train=False)
    assert payload.shape == (B, D, 3) and payload.label_counts is None
    torch.testing.assert_close(payload.to_dense()[1], smashed[1][:, top_tokens(attention[1:2], 3)[0]])
    everything, _ = _codec(adc_eval_select=False)
    everything.head.cls_attention = attention
    assert torch.equal(everything.encode(smashed, train=False).to_dense(), smashed)


def test_bytes_and_ideal_bits_are_exact():
    codec, head = _codec()
    attention, smashed, labels = _batch()
    head.cls_attention = attention
    payload = codec.encode(smashed, labels)
    data = to_bytes(payload)
    header = 4 + 3 + 3 * 4
    counts = 1 + 4 + 4 * K  # dtype code, classes, uint8 counts
    assert len(data) == header + counts + 4 * D * 3 * 4
    assert ideal_bits(payload, K) == 4 * D * 3 * 32 + 4 * K * math.ceil(math.log2(B + 1))
    back = from_bytes(data)
    assert torch.equal(back.label_counts, payload.label_counts) and torch.equal(back.values, payload.values)
    with pytest.raises(PayloadError, match="labels or label counts, not both"):
        to_bytes(Payload(payload.shape, payload.values, labels=torch.zeros(4, dtype=torch.long),
                         label_counts=payload.label_counts))


def test_server_trains_on_soft_labels_and_counts_every_member():
    torch.manual_seed(0)
    tail = nn.Sequential(nn.Flatten(1), nn.Linear(D * 3, K))
    server = ServerRuntime(tail, torch.optim.SGD(tail.parameters(), lr=0.1), torch.device("cpu"),
                           sample_shape=(D, T), num_classes=K, token_axis=1)
    counts = torch.tensor([[2, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 3]])
    x = torch.randn(3, D, 3)
    with torch.no_grad():
        logits = tail(x)
    expected = F.cross_entropy(logits, counts.float() / counts.sum(1, keepdim=True))
    expected_stats = train_stats(expected, logits, counts)
    train_tail(server, x, counts)
    stats = server.pop_stats()
    assert stats.samples == 7 and stats.correct == expected_stats.correct
    # Members' cross-entropy against their merged sample's prediction: sum of counts x -log p.
    assert stats.loss_sum == pytest.approx(float(-(counts * logits.log_softmax(1)).sum()))
    server.check_upload(Payload((3, D, 3), x.reshape(-1), label_counts=counts))
    with pytest.raises(PayloadError, match=r"at most 6 along axis 2"):
        server.check_upload(Payload((3, D, 7), torch.zeros(3 * D * 7), label_counts=counts))
    with pytest.raises(PayloadError, match="no labels"):
        server.check_upload(Payload((3, D, 3), x.reshape(-1), label_counts=counts * 0))


def test_attach_names_the_key():
    with pytest.raises(ValueError, match=r"'adc_tokens': invalid value 7; the head produces 6 tokens"):
        _codec(tokens=7)
    with pytest.raises(ValueError, match="exposes its CLS attention"):
        AdcCodec(AdcOptions()).attach(nn.Identity(), (D, T), K)
