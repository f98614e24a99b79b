"""Wire protocol: compact encodings and clear errors on malformed payloads."""

import struct

import pytest
import torch

from acp_flower.wire import Payload, PayloadError, from_bytes, to_bytes


def _masked():
    mask = torch.tensor([True, False, True, False, False])
    return Payload((2, 5, 1, 1), torch.arange(4, dtype=torch.float32), channel_mask=mask, labels=torch.tensor([1, 300]))


def test_masked_round_trip_and_label_dtype():
    p = _masked()
    data = to_bytes(p)
    # labels need uint16 (300 > 255): 1 + 2 * 2 bytes; mask 1 byte; 4 float32 values
    assert len(data) == 4 + 3 + 16 + 1 + 5 + 16
    q = from_bytes(data)
    assert q.labels.tolist() == [1, 300] and q.channel_mask.tolist() == p.channel_mask.tolist()
    assert q.to_dense()[:, :, 0, 0].tolist() == [[0, 0, 1, 0, 0], [2, 0, 3, 0, 0]]


def test_index_dtype_is_smallest_that_fits():
    small = Payload((1, 200), torch.ones(2), indices=torch.tensor([[3, 199]]))
    big = Payload((1, 70000), torch.ones(2), indices=torch.tensor([[3, 69999]]))
    assert len(to_bytes(small)) == 4 + 3 + 8 + 5 + 2 + 8  # uint8 indices
    assert len(to_bytes(big)) == 4 + 3 + 8 + 5 + 8 + 8  # uint32 indices


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"XXXX" + b[4:], "bad magic"),
        (lambda b: b[:-3], "truncated"),
        (lambda b: b + b"\0", "trailing"),
        (lambda b: b[:4] + bytes([9]) + b[5:], "version"),
        (lambda b: b[:5] + bytes([0x13]) + b[6:], "flags"),
    ],
)
def test_malformed_payloads_raise(mutate, message):
    with pytest.raises(PayloadError, match=message):
        from_bytes(mutate(to_bytes(_masked())))


def test_non_finite_values_rejected():
    data = to_bytes(Payload((1, 2), torch.tensor([1.0, float("nan")])))
    with pytest.raises(PayloadError, match="NaN"):
        from_bytes(data)


def test_index_out_of_range_rejected():
    data = bytearray(to_bytes(Payload((1, 200), torch.ones(2), indices=torch.tensor([[3, 199]]))))
    data[4 + 3 + 8 + 5 + 1] = 250  # second index -> 250 >= 200
    with pytest.raises(PayloadError, match="out of range"):
        from_bytes(bytes(data))


def test_bad_quantization_header_rejected():
    p = Payload((1, 4), torch.tensor([0, 1, 2, 3], dtype=torch.int32), bits=2,
                scale=torch.ones(1), offset=torch.zeros(1))
    data = bytearray(to_bytes(p))
    assert from_bytes(bytes(data)).to_dense().tolist() == [[0, 1, 2, 3]]
    data[4 + 3 + 8] = 0  # bits = 0
    with pytest.raises(PayloadError, match="quantization"):
        from_bytes(bytes(data))


def test_shape_header_mismatch_is_truncation():
    data = bytearray(to_bytes(Payload((2, 3), torch.ones(6))))
    data[7:11] = struct.pack("<I", 3)  # claims 3 rows
    with pytest.raises(PayloadError, match="truncated"):
        from_bytes(bytes(data))
