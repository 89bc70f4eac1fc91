"""Face datasets that need not fit in memory.

A `FaceSet` is face crops (uint8, n x s x s x 3) with their labels, sources and groups.
At 299 px a crop is 268 KB, so the full FaceForensics++ at 50 faces per clip (5,000 clips,
250,000 faces) is 67 GB: more than most machines hold, and every copy counts. So:

- `FaceWriter` spills crops to an unlinked temporary file as they are made (extraction,
  self-blends) and hands back a memory-mapped array;
- `FaceSet.load` maps a saved `.npz` instead of reading it (numpy stores its members
  uncompressed, so the array's bytes sit in the file as they would in memory);
- `FaceSet.subset` and `FaceSet.concat` of mapped crops give a `FaceRows`, a list of row
  numbers into the mapped arrays, not a copy;
- `FaceSet.save` streams the crops into the `.npz` a batch at a time.

Only what a step reads (a batch, a chunk to score) is ever in memory; the operating system's
page cache keeps the rest as RAM allows. Small in-memory sets stay plain arrays.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

CHUNK = 256  # crops per read or write when streaming


class FaceRows:
    """Face crops picked by row from one or more arrays (usually memory-mapped files).

    Indexing follows numpy: an int gives one crop, a slice, boolean mask or index array
    gives an in-memory array of those crops. `take` gives a `FaceRows` view instead.
    """

    def __init__(self, parts: list[np.ndarray], part: np.ndarray, row: np.ndarray) -> None:
        if not parts:
            raise ValueError("FaceRows needs at least one array")
        shape = parts[0].shape[1:]
        for p in parts:
            if p.shape[1:] != shape or p.dtype != parts[0].dtype:
                raise ValueError(
                    f"face crops of shape {p.shape[1:]} {p.dtype} cannot join "
                    f"crops of shape {shape} {parts[0].dtype}"
                )
        self.parts = parts
        self.part = np.asarray(part, np.int32)
        self.row = np.asarray(row, np.int64)

    @classmethod
    def of(cls, x: np.ndarray | FaceRows) -> FaceRows:
        if isinstance(x, FaceRows):
            return x
        return cls([x], np.zeros(len(x), np.int32), np.arange(len(x)))

    @classmethod
    def concat(cls, xs: list[np.ndarray | FaceRows]) -> FaceRows:
        parts: list[np.ndarray] = []
        where: dict[int, int] = {}  # id(array) -> its place in parts
        part_ids, rows = [], []
        for x in map(cls.of, xs):
            for p in x.parts:
                if id(p) not in where:
                    where[id(p)] = len(parts)
                    parts.append(p)
            remap = np.array([where[id(p)] for p in x.parts], np.int32)
            part_ids.append(remap[x.part])
            rows.append(x.row)
        return cls(parts, np.concatenate(part_ids), np.concatenate(rows))

    def take(self, selection: Any) -> FaceRows:
        """The selected crops (mask, index array or slice) as a view: nothing is read."""
        return FaceRows(self.parts, self.part[selection], self.row[selection])

    def __len__(self) -> int:
        return len(self.row)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.parts[0].shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.parts[0].dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, int | np.integer):
            return np.asarray(self.parts[self.part[key]][self.row[key]])
        part, row = self.part[key], self.row[key]
        out = np.empty((len(row), *self.shape[1:]), self.dtype)
        for p in np.unique(part):
            m = part == p
            rows = row[m]
            # Read each array's rows in file order, then put them back in the asked order.
            order = np.argsort(rows, kind="stable")
            got = np.empty_like(out[: len(rows)])
            got[order] = self.parts[p][rows[order]]
            out[m] = got
        return out

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def astype(self, dtype: Any) -> np.ndarray:
        return self[:].astype(dtype)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        a = self[:]
        return a if dtype is None else a.astype(dtype)


def is_lazy(x: Any) -> bool:
    """Crops that live on disk: subsets and joins of them must not copy."""
    return isinstance(x, FaceRows | np.memmap)


def chunks(x: np.ndarray | FaceRows, size: int = CHUNK):
    """In-memory arrays of at most `size` consecutive crops of x."""
    for start in range(0, len(x), size):
        yield np.asarray(x[start : start + size])


class FaceWriter:
    """Crops of one size appended to an unlinked temporary file, then mapped.

    The file lives in `TMPDIR` (the system's temporary folder by default) and disappears
    when the last array mapped on it is freed. Point TMPDIR at a disk, not a RAM disk,
    for large extractions.
    """

    def __init__(self, size: int | None = None) -> None:
        self.size = size
        self.count = 0
        # Open for the writer's whole life; closed by array(), when the mapping takes over.
        self._file: BinaryIO = tempfile.TemporaryFile(prefix="verity-faces-")  # noqa: SIM115

    def add(self, crop: np.ndarray) -> None:
        crop = np.ascontiguousarray(crop, np.uint8)
        if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] != crop.shape[1]:
            raise ValueError(f"a face crop must be s x s x 3, not {crop.shape}")
        if self.size is None:
            self.size = crop.shape[0]
        if crop.shape[0] != self.size:
            raise ValueError(f"crop of {crop.shape[0]} px in a set of {self.size} px crops")
        self._file.write(crop.tobytes())
        self.count += 1

    def array(self) -> np.ndarray:
        """The crops so far, memory-mapped (an empty in-memory array when there are none)."""
        s = self.size or 0
        self._file.flush()
        if not self.count:
            self._file.close()
            return np.zeros((0, s, s, 3), np.uint8)
        x = np.memmap(self._file, np.uint8, "r", shape=(self.count, s, s, 3))
        self._file.close()  # the mapping keeps the data
        return x


@dataclass
class FaceSet:
    """Face crops with, for each, its label, source and group (one video, or one image)."""

    x: np.ndarray | FaceRows  # (n, s, s, 3) uint8, in memory or on disk
    y: np.ndarray  # (n,) int
    sources: np.ndarray  # (n,) str
    groups: np.ndarray  # (n,) str: never split across train / validation / test
    # (n,) str: the file each face came from, for video-level scores; None: use groups.
    videos: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def video_ids(self) -> np.ndarray:
        return self.videos if self.videos is not None else self.groups

    def subset(self, mask: np.ndarray) -> FaceSet:
        """The selected faces; crops on disk stay there (a view, not a copy)."""
        x = FaceRows.of(self.x).take(mask) if is_lazy(self.x) else self.x[mask]
        return FaceSet(x, self.y[mask], self.sources[mask], self.groups[mask], self.video_ids[mask])

    def save(self, path: str | Path) -> Path:
        """An uncompressed .npz (as np.savez writes), streamed: see save_npz."""
        return save_npz(
            path,
            {
                "x": self.x,
                "y": self.y,
                "sources": self.sources,
                "groups": self.groups,
                "videos": self.video_ids,
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> FaceSet:
        """A saved set, its crops memory-mapped rather than read."""
        d = load_npz(path)
        return cls(d["x"], d["y"], d["sources"], d["groups"], d.get("videos"))

    @classmethod
    def concat(cls, sets: list[FaceSet]) -> FaceSet:
        sets = [s for s in sets if len(s)]
        if not sets:
            raise ValueError("no faces in any source")
        if any(is_lazy(s.x) for s in sets):
            x: np.ndarray | FaceRows = FaceRows.concat([s.x for s in sets])
        else:
            x = np.concatenate([s.x for s in sets])
        return cls(
            x,
            *(
                np.concatenate([getattr(s, a) for s in sets])
                for a in ("y", "sources", "groups", "video_ids")
            ),
        )

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for g, y in sorted(zip(self.groups.tolist(), self.y.tolist(), strict=True)):
            h.update(f"{g}:{y};".encode())
        return h.hexdigest()[:16]


# ---- .npz files ------------------------------------------------------------------------


def save_npz(path: str | Path, arrays: dict[str, np.ndarray | FaceRows]) -> Path:
    """What np.savez writes (stored, not compressed), streamed a chunk at a time, and
    renamed into place so that a reader never sees half a file. Like np.savez, adds
    `.npz` to a path that lacks it."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                    if isinstance(arr, FaceRows):
                        header = {
                            "descr": np.lib.format.dtype_to_descr(arr.dtype),
                            "fortran_order": False,
                            "shape": tuple(arr.shape),
                        }
                        np.lib.format.write_array_header_2_0(fh, header)
                        for chunk in chunks(arr):
                            fh.write(np.ascontiguousarray(chunk).tobytes())
                    else:
                        np.lib.format.write_array(fh, np.asanyarray(arr), allow_pickle=False)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _member_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start: after its local header, whose name and extra
    field may differ in length from the central directory's."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: damaged zip entry {info.filename}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        return info.header_offset + 30 + name_len + extra_len


def load_npz(path: str | Path, mapped: tuple[str, ...] = ("x",)) -> dict[str, np.ndarray]:
    """Every array of an .npz; those named in `mapped` are memory-mapped where stored
    uncompressed (np.savez, save_npz) and read whole otherwise (np.savez_compressed)."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename.removesuffix(".npy"): i for i in zf.infolist()}
    with np.load(path, allow_pickle=False) as d:
        for name in d.files:
            info = infos.get(name)
            if name in mapped and info is not None and info.compress_type == zipfile.ZIP_STORED:
                start = _member_offset(path, info)
                with open(path, "rb") as fh:
                    fh.seek(start)
                    version = np.lib.format.read_magic(fh)
                    read = HEADER_READERS.get(version)
                    shape, fortran, dtype = read(fh) if read else ((), True, np.dtype("O"))
                    offset = fh.tell()
                if fortran or dtype.hasobject:  # not a plain C array: read it whole
                    out[name] = d[name]
                elif int(np.prod(shape)) == 0:
                    out[name] = np.zeros(shape, dtype)
                else:
                    out[name] = np.memmap(path, dtype, "r", offset=offset, shape=shape)
            else:
                out[name] = d[name]
    return out
