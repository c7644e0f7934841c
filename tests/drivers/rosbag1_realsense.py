"""Write a RealSense recording as older librealsense versions did: a ROS1 bag (format 2.0), librealsense file
format version 3, optionally with LZ4-compressed chunks. pyrealsense2 2.59 records ROS2 `.db3` only but still plays
these, so this is how the tests reproduce a `.bag` made by another team with an older librealsense.

Layout written (what `rosbag info` shows for a D435 recording):
    /file_version                                   std_msgs/UInt32 (3)
    /device_0/info                                  diagnostic_msgs/KeyValue (Name, Serial Number, ...)
    /device_0/sensor_N/info                         diagnostic_msgs/KeyValue (Name)
    /device_0/sensor_N/option/Depth_Units/value     std_msgs/Float32 (+ /description std_msgs/String)
    /device_0/sensor_N/<Depth|Color>_0/info         realsense_msgs/StreamInfo (fps, encoding, is_recommended)
    /device_0/sensor_N/<...>_0/info/camera_info     sensor_msgs/CameraInfo (intrinsics)
    /device_0/sensor_N/<...>_0/tf/0                 geometry_msgs/Transform (extrinsics to the reference)
    /device_0/sensor_N/<...>_0/image/data           sensor_msgs/Image (seq = frame number, stamp = device time)
    /device_0/sensor_N/<...>_0/image/metadata       diagnostic_msgs/KeyValue (timestamp_domain, system_time)
Only what the tests need: video streams, uncompressed or LZ4 chunks (LZ4 frames of literal-only blocks, which every
LZ4 decoder accepts), one chunk per message group.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

MD5 = {
    "std_msgs/UInt32": "304a39449588c7f8ce2df6e8001c5fce",
    "std_msgs/Float32": "73fcbf46b49191e672908e50842a83d4",
    "std_msgs/String": "992ce8a1687cec8c8bd883ec73ca41d1",
    "diagnostic_msgs/KeyValue": "cf57fdc6617a881a88c16e768132149c",
    "realsense_msgs/StreamInfo": "311d7e24eac31bb87271d041bf70ff7d",
    "geometry_msgs/Transform": "ac9eff44abf714214112b05d54a3cf9b",
    "sensor_msgs/Image": "060021388200f6f0f447d0fcd9c64743",
    "sensor_msgs/CameraInfo": "c9a58c1b0b154e0e6da7578cb991d214",
}
DEFINITION = {
    "std_msgs/UInt32": "uint32 data\n", "std_msgs/Float32": "float32 data\n", "std_msgs/String": "string data\n",
    "diagnostic_msgs/KeyValue": "string key\nstring value\n",
    "realsense_msgs/StreamInfo": "uint32 fps\nstring encoding\nbool is_recommended\n",
}
STATIC_NS = 1  # librealsense stamps the static description at the smallest ROS time


# --- ROS1 serialisation ------------------------------------------------------------------------------------------
def _s(text: str) -> bytes:
    b = text.encode()
    return struct.pack("<I", len(b)) + b


def _header(seq: int, stamp_ns: int, frame_id: str = "0") -> bytes:
    return struct.pack("<III", seq, stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000) + _s(frame_id)


def _image(seq: int, stamp_ns: int, pixels: np.ndarray, encoding: str) -> bytes:
    h, w = pixels.shape[:2]
    data = np.ascontiguousarray(pixels).tobytes()
    return (_header(seq, stamp_ns) + struct.pack("<II", h, w) + _s(encoding) + struct.pack("<BI", 0, len(data) // h)
            + struct.pack("<I", len(data)) + data)


def _camera_info(w: int, h: int, fx, fy, ppx, ppy, model: str, coeffs) -> bytes:
    k = [fx, 0, ppx, 0, fy, ppy, 0, 0, 1]
    return (_header(0, 0) + struct.pack("<II", h, w) + _s(model) + struct.pack("<I", len(coeffs))
            + struct.pack(f"<{len(coeffs)}d", *coeffs) + struct.pack("<9d", *k) + struct.pack("<9d", *([0.0] * 9))
            + struct.pack("<12d", *([0.0] * 12)) + struct.pack("<II", 0, 0) + struct.pack("<IIIIB", 0, 0, 0, 0, 0))


def _keyvalue(key: str, value: str) -> bytes:
    return _s(key) + _s(value)


def _transform(translation=(0.0, 0.0, 0.0), quaternion=(0.0, 0.0, 0.0, 1.0)) -> bytes:
    return struct.pack("<3d", *translation) + struct.pack("<4d", *quaternion)


# --- LZ4 frames (literal-only blocks) and xxHash32 for its checksums -----------------------------------------
_P1, _P2, _P3, _P4, _P5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
_M = 0xFFFFFFFF


def _rotl(x, r):
    return ((x << r) | (x >> (32 - r))) & _M


def xxh32(data: bytes, seed: int = 0) -> int:
    n, i = len(data), 0
    if n >= 16:
        v = [(seed + _P1 + _P2) & _M, (seed + _P2) & _M, seed & _M, (seed - _P1) & _M]
        while i + 16 <= n:
            for j in range(4):
                lane = struct.unpack_from("<I", data, i + 4 * j)[0]
                v[j] = (_rotl((v[j] + lane * _P2) & _M, 13) * _P1) & _M
            i += 16
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M
    else:
        h = (seed + _P5) & _M
    h = (h + n) & _M
    while i + 4 <= n:
        h = (_rotl((h + struct.unpack_from("<I", data, i)[0] * _P3) & _M, 17) * _P4) & _M
        i += 4
    while i < n:
        h = (_rotl((h + data[i] * _P5) & _M, 11) * _P1) & _M
        i += 1
    h ^= h >> 15
    h = (h * _P2) & _M
    h ^= h >> 13
    h = (h * _P3) & _M
    return h ^ (h >> 16)


def _lz4_literal_block(data: bytes) -> bytes:
    n = len(data)
    if n < 15:
        return bytes([n << 4]) + data
    rest, extra = n - 15, bytearray()
    while rest >= 255:
        extra.append(255)
        rest -= 255
    extra.append(rest)
    return bytes([0xF0]) + bytes(extra) + data


def lz4_frame(data: bytes, block: int = 1 << 16) -> bytes:
    """An LZ4 frame (block size 64 KiB, independent blocks, content checksum) of literal-only blocks."""
    flg, bd = 0x64, 0x40  # version 01, block independence, content checksum; 64 KiB blocks
    out = bytearray(struct.pack("<I", 0x184D2204) + bytes([flg, bd, (xxh32(bytes([flg, bd])) >> 8) & 0xFF]))
    for k in range(0, len(data), block - 16):
        body = _lz4_literal_block(data[k:k + block - 16])
        out += struct.pack("<I", len(body)) + body
    out += struct.pack("<I", 0) + struct.pack("<I", xxh32(data))
    return bytes(out)


# --- bag records ---------------------------------------------------------------------------------------------
def _fields(**kw) -> bytes:
    out = b""
    for k, v in kw.items():
        f = k.encode() + b"=" + v
        out += struct.pack("<I", len(f)) + f
    return out


def _record(header: bytes, data: bytes) -> bytes:
    return struct.pack("<I", len(header)) + header + struct.pack("<I", len(data)) + data


def _time(ns: int) -> bytes:
    return struct.pack("<II", ns // 1_000_000_000, ns % 1_000_000_000)


@dataclass
class _Conn:
    id: int
    topic: str
    type: str


@dataclass
class BagWriter:
    path: str
    compression: str = "none"  # or "lz4"
    conns: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)  # (ns, conn id, payload)

    def write(self, topic: str, msg_type: str, ns: int, payload: bytes) -> None:
        c = self.conns.get(topic)
        if c is None:
            c = self.conns[topic] = _Conn(len(self.conns), topic, msg_type)
        self.messages.append((int(ns), c.id, payload))

    def _conn_record(self, c: _Conn) -> bytes:
        data = _fields(topic=c.topic.encode(), type=c.type.encode(), md5sum=MD5[c.type].encode(),
                       message_definition=DEFINITION.get(c.type, "").encode(), latching=b"1")
        return _record(_fields(op=b"\x07", conn=struct.pack("<I", c.id), topic=c.topic.encode()), data)

    def close(self, chunk_messages: int = 64) -> str:
        by_id = {c.id: c for c in self.conns.values()}
        msgs = sorted(self.messages, key=lambda m: m[0])
        body, chunk_infos = bytearray(), []
        start = 13 + 4096
        for k in range(0, len(msgs), chunk_messages):
            group = msgs[k:k + chunk_messages]
            raw, index, seen = bytearray(), {}, set()
            for ns, cid, payload in group:
                if cid not in seen:
                    raw += self._conn_record(by_id[cid])
                    seen.add(cid)
                index.setdefault(cid, []).append((ns, len(raw)))
                raw += _record(_fields(op=b"\x02", conn=struct.pack("<I", cid), time=_time(ns)), payload)
            data = bytes(raw) if self.compression == "none" else lz4_frame(bytes(raw))
            pos = start + len(body)
            body += _record(_fields(op=b"\x05", compression=self.compression.encode(),
                                    size=struct.pack("<I", len(raw))), data)
            for cid, entries in sorted(index.items()):
                idx = b"".join(_time(ns) + struct.pack("<I", off) for ns, off in entries)
                body += _record(_fields(op=b"\x04", ver=struct.pack("<I", 1), conn=struct.pack("<I", cid),
                                        count=struct.pack("<I", len(entries))), idx)
            chunk_infos.append((pos, group[0][0], group[-1][0], {cid: len(v) for cid, v in index.items()}))
        index_pos = start + len(body)
        tail = bytearray()
        for c in sorted(by_id.values(), key=lambda c: c.id):
            tail += self._conn_record(c)
        for pos, t0, t1, counts in chunk_infos:
            data = b"".join(struct.pack("<II", cid, n) for cid, n in sorted(counts.items()))
            tail += _record(_fields(op=b"\x06", ver=struct.pack("<I", 1), chunk_pos=struct.pack("<Q", pos),
                                    start_time=_time(t0), end_time=_time(t1), count=struct.pack("<I", len(counts))),
                            data)
        head = _fields(op=b"\x03", index_pos=struct.pack("<Q", index_pos), conn_count=struct.pack("<I", len(by_id)),
                       chunk_count=struct.pack("<I", len(chunk_infos)))
        pad = 4096 - (4 + len(head) + 4)
        with open(self.path, "wb") as f:
            f.write(b"#ROSBAG V2.0\n" + _record(head, b" " * pad) + bytes(body) + bytes(tail))
        return self.path


def write_ros1_recording(path: str, colors: Optional[Sequence[np.ndarray]], depths: Optional[Sequence[np.ndarray]],
                         *, intrinsics, depth_intrinsics=None, fps: int = 30, depth_scale: float = 0.001,
                         serial: str = "819612070123", name: str = "Intel RealSense D435",
                         color_times_ms: Optional[Sequence[float]] = None,
                         depth_times_ms: Optional[Sequence[float]] = None, compression: str = "lz4",
                         start_ns: int = 1_000_000) -> str:
    """A librealsense (format 3) ROS1 bag with the given frames. Message times follow the device timestamps
    (relative to the earliest one, from `start_ns`), as a camera delivering at those times would leave them."""
    bag = BagWriter(path, compression)
    bag.write("/file_version", "std_msgs/UInt32", STATIC_NS, struct.pack("<I", 3))
    for k, v in (("Name", name), ("Serial Number", serial), ("Firmware Version", "05.12.07.100"),
                 ("Product Id", "0B07"), ("Product Line", "D400"), ("Usb Type Descriptor", "3.2")):
        bag.write("/device_0/info", "diagnostic_msgs/KeyValue", STATIC_NS, _keyvalue(k, v))
    streams = [(kind, frames, times, intr) for kind, frames, times, intr in (
        ("Depth", depths, depth_times_ms, depth_intrinsics or intrinsics), ("Color", colors, color_times_ms, intrinsics))
        if frames]
    all_times = [t for kind, frames, times, _ in streams
                 for t in (times if times is not None else [k * 1000.0 / fps for k in range(len(frames))])]
    t_first = min(all_times)
    for sensor, (kind, frames, times, intr) in enumerate(streams):
        prefix = f"/device_0/sensor_{sensor}"
        bag.write(f"{prefix}/info", "diagnostic_msgs/KeyValue", STATIC_NS,
                  _keyvalue("Name", "Stereo Module" if kind == "Depth" else "RGB Camera"))
        if kind == "Depth":
            bag.write(f"{prefix}/option/Depth_Units/value", "std_msgs/Float32", STATIC_NS,
                      struct.pack("<f", depth_scale))
            bag.write(f"{prefix}/option/Depth_Units/description", "std_msgs/String", STATIC_NS,
                      _s("Number of meters represented by a single depth unit"))
        s = f"{prefix}/{kind}_0"
        encoding = "mono16" if kind == "Depth" else "rgb8"
        bag.write(f"{s}/info", "realsense_msgs/StreamInfo", STATIC_NS,
                  struct.pack("<I", fps) + _s(encoding) + struct.pack("<B", 1))
        bag.write(f"{s}/info/camera_info", "sensor_msgs/CameraInfo", STATIC_NS,
                  _camera_info(intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy,
                               "Brown Conrady", list(intr.coeffs)))
        bag.write(f"{s}/tf/0", "geometry_msgs/Transform", STATIC_NS, _transform())
        times = times if times is not None else [k * 1000.0 / fps for k in range(len(frames))]
        for n, (pixels, t_ms) in enumerate(zip(frames, times)):
            ns = start_ns + int(round((t_ms - t_first) * 1e6))
            stamp = int(round(t_ms * 1e6))
            bag.write(f"{s}/image/data", "sensor_msgs/Image", ns, _image(n, stamp, pixels, encoding))
            for k, v in (("timestamp_domain", "Hardware Clock"), ("system_time", f"{t_ms:.6f}"),
                         ("Frame Timestamp", str(int(t_ms * 1000)))):
                bag.write(f"{s}/image/metadata", "diagnostic_msgs/KeyValue", ns, _keyvalue(k, v))
    return bag.close()
