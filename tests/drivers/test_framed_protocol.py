from __future__ import annotations

import random
import struct

import pytest

from drivers.arm import framed as fp
from drivers.errors import ProtocolError


def test_crc_check_value_and_layout():
    assert fp.crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE check value
    data = fp.encode_frame(fp.COMMAND, 0x1234, b"\x01\x02\x03", t_us=0x0A0B0C0D)
    assert data[:2] == b"\xA5\x5A"
    assert data[2:4] == b"\x03\x00"  # payload length
    assert data[4] == fp.VERSION and data[5] == fp.COMMAND
    assert data[6:8] == b"\x34\x12" and data[8:12] == b"\x0D\x0C\x0B\x0A"
    assert struct.unpack("<H", data[-2:])[0] == fp.crc16(data[2:-2])
    f = fp.decode_frame(data)
    assert (f.type, f.seq, f.payload, f.t_us) == (fp.COMMAND, 0x1234, b"\x01\x02\x03", 0x0A0B0C0D)


def test_decode_rejects_bad_crc_and_length():
    data = bytearray(fp.encode_frame(fp.HEARTBEAT, 1))
    data[-1] ^= 1
    with pytest.raises(ProtocolError, match="CRC"):
        fp.decode_frame(bytes(data))
    with pytest.raises(ProtocolError, match="length"):
        fp.decode_frame(fp.encode_frame(fp.HEARTBEAT, 1, b"ab")[:-3] + b"\x00\x00")
    with pytest.raises(ProtocolError, match="exceeds"):
        fp.encode_frame(fp.COMMAND, 1, bytes(fp.MAX_PAYLOAD + 1))


def test_parser_resyncs_after_garbage_bad_crc_and_truncated_frames():
    good = [fp.encode_frame(fp.COMMAND, s, bytes([s]) * s) for s in range(1, 6)]
    bad_crc = bytearray(fp.encode_frame(fp.COMMAND, 99, b"xyz"))
    bad_crc[-2] ^= 0x55
    truncated = fp.encode_frame(fp.COMMAND, 98, b"0123456789")[:9]
    huge_len = b"\xA5\x5A\xFF\xFF" + b"\x00" * 8  # impossible length field
    stream = (b"\x00\xFFnoise\xA5" + good[0] + bytes(bad_crc) + good[1] + truncated + good[2] + huge_len + good[3]
              + b"\xA5\x5A" + good[4])
    p = fp.FrameParser()
    frames = p.feed(stream)
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5]
    assert all(f.payload == bytes([f.seq]) * f.seq for f in frames)
    assert p.bad_crc >= 2 and p.garbage_bytes > 0 and p.bad_length >= 1


def test_parser_byte_by_byte_and_random_splits():
    frames = [fp.encode_frame(fp.STATE, s, fp.pack_positions([s, -s, 2 * s])) for s in range(50)]
    stream = b"".join(frames)
    p = fp.FrameParser()
    got = []
    for b in stream:
        got += p.feed(bytes([b]))
    assert [f.seq for f in got] == list(range(50))
    rng = random.Random(0)
    noisy = b"".join(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 20))) + f for f in frames)
    p, got, i = fp.FrameParser(), [], 0
    while i < len(noisy):
        n = rng.randrange(1, 40)
        got += p.feed(noisy[i:i + n])
        i += n
    assert [f.seq for f in got] == list(range(50))
    values, end = fp.unpack_positions(got[7].payload)
    assert values.tolist() == [7, -7, 14] and end == len(got[7].payload)
