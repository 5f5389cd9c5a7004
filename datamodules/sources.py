"""Finding WISA-80K videos on disk: shard zips, per-shard folders or one flat folder.

WISA-80K publishes its videos as ``data/videos/<N>.zip``; inside a zip the files sit
under long nested folders and a name can repeat across shards. :class:`VideoIndex`
scans a videos folder once and accepts any mix of the three layouts:

- shard zips ``<root>/<N>.zip`` (members are read one at a time, the zip is never unpacked),
- per-shard folders ``<root>/<N>/…/<name>.mp4`` (unpacked zips, any nesting),
- a flat folder ``<root>/<name>.mp4``.

Every video is keyed by ``(shard, name)`` (shard: the zip's stem, the top-level folder,
or ``""`` for the flat folder). A record names only the file, so when a name occurs in
several shards the first in sorted shard order is used and the others are counted in
:attr:`VideoIndex.duplicates`.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


@dataclass(frozen=True)
class VideoRef:
    """Where one video lives.

    Attributes:
        name: the file name a record refers to.
        shard: the shard key (zip stem, top-level folder, or ``""``).
        path: the plain file, or the zip that holds it.
        member: the member name inside ``path`` when it is a zip, else None.
        size: bytes (uncompressed size for a zip member).
    """

    name: str
    shard: str
    path: str
    member: str | None
    size: int

    def describe(self) -> str:
        return f"{self.path}:{self.member}" if self.member else self.path


class VideoIndex:
    """Name → :class:`VideoRef` for every video under a folder (see the module docstring).

    Args:
        refs: the index.
        duplicates: how many further copies of already indexed names were seen.
        unreadable: zips that could not be opened (their videos are reported missing).
    """

    def __init__(
        self, refs: dict[str, VideoRef], duplicates: int = 0, unreadable: list[str] | None = None
    ) -> None:
        self.refs = refs
        self.duplicates = duplicates
        self.unreadable = unreadable or []

    @classmethod
    def scan(cls, root: str | os.PathLike) -> VideoIndex:
        """Index every video file and zip member under ``root``.

        Raises:
            FileNotFoundError: ``root`` is not a folder.
        """
        base = Path(root)
        if not base.is_dir():
            raise FileNotFoundError(
                f"videos folder {str(base)!r} does not exist; pass the folder holding WISA-80K's "
                "<N>.zip shards, their unpacked per-shard folders, or the flat folder of .mp4 files"
            )
        found: list[VideoRef] = []
        unreadable: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel = Path(dirpath).relative_to(base)
            folder_shard = rel.parts[0] if rel.parts else ""
            for filename in sorted(filenames):
                full = os.path.join(dirpath, filename)
                lower = filename.lower()
                if lower.endswith(".zip"):
                    stem = Path(filename).stem
                    shard = f"{folder_shard}/{stem}" if rel.parts else stem
                    try:
                        found += _zip_videos(full, shard)
                    except (zipfile.BadZipFile, OSError) as err:
                        log.warning("skipping unreadable zip %s: %s", full, err)
                        unreadable.append(full)
                elif lower.endswith(VIDEO_SUFFIXES) and not filename.startswith("."):
                    size = os.path.getsize(full)
                    found.append(VideoRef(filename, folder_shard, full, None, size))
        found.sort(key=lambda r: (r.shard, r.path, r.member or ""))
        refs: dict[str, VideoRef] = {}
        duplicates = 0
        for ref in found:
            if ref.name in refs:
                duplicates += 1
            else:
                refs[ref.name] = ref
        if duplicates:
            log.info(
                "%d video names occur in more than one shard; the first shard's copy is used",
                duplicates,
            )
        return cls(refs, duplicates, unreadable)

    def __len__(self) -> int:
        return len(self.refs)

    def __contains__(self, name: str) -> bool:
        return name in self.refs

    def get(self, name: str) -> VideoRef | None:
        return self.refs.get(name)


# Zip handles are cached per process: a handle inherited through fork shares its file
# offset with the parent, so each worker opens its own.
_ZIP_HANDLES: dict[str, tuple[int, zipfile.ZipFile]] = {}


def _zip_videos(path: str, shard: str) -> list[VideoRef]:
    """The video members of the zip at ``path`` (a shard named ``shard``), in archive order."""
    found = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            member_name = info.filename.rsplit("/", 1)[-1]
            if info.is_dir() or not member_name.lower().endswith(VIDEO_SUFFIXES):
                continue
            found.append(VideoRef(member_name, shard, path, info.filename, info.file_size))
    return found


def _zip_handle(path: str) -> zipfile.ZipFile:
    pid = os.getpid()
    cached = _ZIP_HANDLES.get(path)
    if cached is not None and cached[0] == pid:
        return cached[1]
    archive = zipfile.ZipFile(path)
    _ZIP_HANDLES[path] = (pid, archive)
    return archive


def open_video(ref: VideoRef) -> str | io.BytesIO:
    """Something PyAV can open: the plain file's path, or the zip member's bytes in memory.

    Only the one member is read (and CRC-checked) from the zip.

    Raises:
        FileNotFoundError: the file or zip is gone.
        zipfile.BadZipFile: the member is corrupt (CRC mismatch, truncated zip).
    """
    if ref.member is None:
        if not os.path.exists(ref.path):
            raise FileNotFoundError(ref.path)
        return ref.path
    return io.BytesIO(_zip_handle(ref.path).read(ref.member))
