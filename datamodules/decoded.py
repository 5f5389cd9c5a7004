"""From records to model inputs: decode + flow targets (worker side), VAE + text encoding.

Legend: B batch, F pixel frames, H_px, W_px pixel size, C latent channels, T latent
frames, H, W latent grid, L text tokens, D text width.

Decoding a clip and computing its Farneback flow target is CPU work done per record in
DataLoader workers (:class:`DecodedClips`); the frozen VAE and text encoder then run in
the main process on batches (:func:`encode_clips`), on the GPU when there is one. The
same two steps serve ``pila prepare`` (which writes the results to the cache) and
training with ``encode_on_the_fly`` (:class:`OnTheFlyClips`, encoded after the batch
reaches the device).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cv2
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pila.categories import labels_to_multihot

from .clips import ClipConfig, load_record_clip
from .flow_targets import FlowConfig, flow_target
from .records import WisaRecord
from .rejections import RecordError
from .sources import VideoIndex

log = logging.getLogger(__name__)


def workers_start() -> None:
    """Called in the main process before DataLoader workers are forked: one OpenCV thread.

    The workers are the parallelism, so each should run OpenCV on one thread. That is set
    here, before the fork, and inherited: ``cv2.setNumThreads`` changing the count inside a
    forked child whose parent had already started OpenCV's thread pool never returns (seen
    with OpenCV 5.1: a test process that had run Farneback, then a training worker calling
    it, hung with the run idle). The main process does no OpenCV work while its workers run
    (it encodes with the VAE, or trains), so nothing there is slowed.
    """
    cv2.setNumThreads(1)


def worker_init(_worker_id: int) -> None:
    """One torch thread per DataLoader worker (OpenCV's is set before the fork:
    :func:`workers_start`)."""
    torch.set_num_threads(1)


def keep_item(item: Any) -> Any:
    """Identity ``collate_fn`` for ``batch_size=None`` loaders (picklable)."""
    return item


class DecodedClips(Dataset):
    """Per record: the sampled clip and its flow target, or the rejection.

    Args:
        records: relabeled records.
        videos: where their videos are.
        clip: clip sampling settings.
        flow: Farneback settings.
        temporal_factor: the VAE's r_t (4 for Wan).
        spatial_factor: the VAE's r_s (8 for Wan).

    Items are dicts with ``position`` (index into ``records``) and either ``video``
    (3, F, H_px, W_px) uint8 and ``flow`` (2, T, H, W) float32, or ``rejection`` (a
    ``rejected.jsonl`` line).
    """

    def __init__(
        self,
        records: Sequence[WisaRecord],
        videos: VideoIndex,
        clip: ClipConfig,
        flow: FlowConfig,
        temporal_factor: int = 4,
        spatial_factor: int = 8,
    ) -> None:
        self.records = list(records)
        self.videos = videos
        self.clip = clip
        self.flow = flow
        self.temporal_factor = temporal_factor
        self.spatial_factor = spatial_factor

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, position: int) -> dict[str, Any]:
        record = self.records[position]
        try:
            video_ref = self.videos.get(record.video_name)
            frames = load_record_clip(record, video_ref, self.clip)  # (F, H_px, W_px, 3)
        except RecordError as err:
            return {"position": position, "rejection": err.rejection.to_json()}
        # (2, T, H, W)
        flow = flow_target(frames, self.flow, self.temporal_factor, self.spatial_factor)
        # (3, F, H_px, W_px) uint8
        video = torch.from_numpy(frames).permute(3, 0, 1, 2).contiguous()
        return {"position": position, "video": video, "flow": flow}


class OnTheFlyClips(Dataset):
    """Training items decoded from the videos each time (``encode_on_the_fly=True``).

    Items carry ``video`` (3, F, H_px, W_px) uint8 instead of latents and text
    embeddings; :func:`encode_clips` turns a batch of them into the cached form on the
    device. A record whose video fails to decode is logged and replaced by the next
    record, so a bad file never stops training (``pila prepare`` lists such files in
    ``rejected.jsonl`` instead).

    Args:
        decoded: the records and decoding settings.
        max_skips: how many consecutive bad records to step over before giving up.
    """

    def __init__(self, decoded: DecodedClips, max_skips: int = 16) -> None:
        if len(decoded) == 0:
            raise ValueError("no records to train on")
        self.decoded = decoded
        self.max_skips = max_skips

    def __len__(self) -> int:
        return len(self.decoded)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.decoded.records]

    def __getitem__(self, index: int) -> dict[str, Any]:
        for step in range(self.max_skips + 1):
            position = (index + step) % len(self.decoded)
            item = self.decoded[position]
            if "rejection" not in item:
                record = self.decoded.records[position]
                return {
                    "video": item["video"],
                    "flow": item["flow"],
                    "labels": labels_to_multihot(record.labels),
                    "prompt": record.captions,
                    "condition_text": record.condition_text,
                    "id": record.id,
                }
            rejection = item["rejection"]
            log.warning(
                "skipping %s: %s (%s)",
                rejection["video_name"], rejection["reason"], rejection["detail"],
            )  # fmt: skip
        raise RuntimeError(
            f"{self.max_skips + 1} consecutive records from position {index} could not be "
            "decoded; check the videos folder"
        )


def video_to_model_range(video: Tensor) -> Tensor:
    """uint8 video (..., 3, F, H_px, W_px) → float32 in [-1, 1] (same arithmetic as the cache)."""
    return video.float().div(127.5).sub(1.0)


@torch.no_grad()
def encode_clips(
    backbone,
    video: Tensor,
    prompts: Sequence[str],
    max_sequence_length: int,
    condition_texts: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """Run the frozen VAE and text encoder on a batch.

    Args:
        backbone: a :class:`~pila.backbone.WanBackbone`.
        video: (B, 3, F, H_px, W_px) uint8, or float in [-1, 1].
        prompts: B strings (the captions the backbone is conditioned on).
        max_sequence_length: L, the text encoder's padded length.
        condition_texts: B strings whose pooled embeddings condition the adapter (the
            parser's refined descriptions); None or equal to ``prompts``: the prompts'.

    Returns:
        ``latents`` (B, C, T, H, W) float32 normalised, ``prompt_embeds`` (B, L, D),
        ``prompt_mask`` (B, L) bool, ``pooled`` (B, D) of the prompts and
        ``pooled_refined`` (B, D) of the condition texts, on the backbone's device.
    """
    if video.dtype == torch.uint8:
        video = video_to_model_range(video)
    latents = backbone.encode_video(video)  # (B, C, T, H, W)
    text = backbone.encode_prompt(list(prompts), max_sequence_length=max_sequence_length)
    pooled = text.pooled.float()  # (B, D)
    refined = pooled
    if condition_texts is not None:
        if len(condition_texts) != len(prompts):
            raise ValueError(f"{len(condition_texts)} condition texts for {len(prompts)} prompts")
        pairs = zip(condition_texts, prompts, strict=True)
        differ = [i for i, (c, p) in enumerate(pairs) if c != p]
        if differ:  # encode only the descriptions that are not the caption itself
            described = backbone.encode_prompt(
                [condition_texts[i] for i in differ], max_sequence_length=max_sequence_length
            )
            refined = pooled.clone()
            refined[differ] = described.pooled.float().to(refined.device)
    return {
        "latents": latents.float(),
        "prompt_embeds": text.embeds.float(),  # (B, L, D)
        "prompt_mask": text.mask,  # (B, L)
        "pooled": pooled,  # (B, D)
        "pooled_refined": refined,  # (B, D)
    }
