"""The adapter folder: ``adapter_config.json`` + ``model.safetensors``, local or on the hub.

:class:`PretrainedMixin` gives :class:`~pila.adapter.PILAAdapter` its ``save_pretrained``,
``from_pretrained`` and ``push_to_hub``; the functions here are what they and checkpoint
reading share:

- writing: each file goes to a temporary sibling and is moved into place with
  ``os.replace``; the weights first, so a finished config always sits next to finished
  weights (:meth:`PretrainedMixin.save_pretrained`);
- reading: the config is validated (format version, the category order, every size)
  before any weight is read, and every missing, unexpected or mis-shaped tensor is named
  (:func:`read_adapter_config`, :func:`load_state_checked`);
- the hub: a hub id (``org/name``) is fetched with ``huggingface_hub.snapshot_download``
  (only the two files, into the usual Hugging Face cache; offline with
  ``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) and pushed with
  ``HfApi.upload_folder`` (:func:`resolve_adapter_folder`,
  :meth:`PretrainedMixin.push_to_hub`). Weights are safetensors only: nothing is
  unpickled and no code from a repository is run.

Checking an adapter against a backbone, its identity in sidecars and ``load_adapter``
are in :mod:`pila.adapter.loading`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TypeVar

import torch
from huggingface_hub import HfApi, snapshot_download
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from pila.adapter.config import FORMAT_VERSION, AdapterConfig
from pila.io import atomic_path, is_hub_id, read_json

log = logging.getLogger(__name__)

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "model.safetensors"
FOLDER_FILES: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME)
"""Everything an adapter folder holds (and all that is fetched from or pushed to the hub)."""


class AdapterLoadError(ValueError):
    """A saved adapter folder does not match what this version builds from its config."""


# ---------------------------------------------------------------------------- reading
def read_adapter_config(directory: str | os.PathLike) -> AdapterConfig:
    """Read and validate the config of a saved adapter folder.

    Raises:
        FileNotFoundError: no ``adapter_config.json``.
        AdapterLoadError: not JSON, not written by ``save_pretrained``, another format
            version, or an invalid config (the message names the file and the value).
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: a PILA adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME} "
            f"(written by PILAAdapter.save_pretrained)"
        )
    try:
        payload = read_json(path)
    except json.JSONDecodeError as err:
        raise AdapterLoadError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(payload, dict) or "config" not in payload:
        raise AdapterLoadError(
            f"{path} has no 'config' entry; it was not written by PILAAdapter.save_pretrained"
        )
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise AdapterLoadError(
            f"{path} has format_version {version!r}; this version of pila reads {FORMAT_VERSION}"
        )
    try:
        return AdapterConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as err:
        raise AdapterLoadError(f"{path}: {err}") from None


def read_adapter_weights(directory: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a saved adapter folder (safetensors; nothing is unpickled).

    Raises:
        FileNotFoundError: no ``model.safetensors`` next to the config.
        AdapterLoadError: the file is not readable safetensors (e.g. truncated by a kill).
    """
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found next to {Path(directory) / CONFIG_NAME}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise AdapterLoadError(
            f"{path} is not a readable safetensors file ({err}); it should hold the adapter's "
            "weights as `pila export` / PILAAdapter.save_pretrained write them. Export or save "
            "the adapter again."
        ) from None


def load_state_checked(
    module: nn.Module, state: dict[str, Tensor], *, strict: bool, source: str
) -> None:
    """Load ``state`` into ``module`` after naming every missing, unexpected and mis-shaped tensor.

    Mis-shaped tensors are always refused; with ``strict=False`` missing tensors keep their
    initialisation and unexpected ones are ignored, both logged.

    Raises:
        AdapterLoadError: naming ``source`` and each offending tensor with both shapes.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = [
        f"{name}: saved {tuple(state[name].shape)}, expected {tuple(expected[name].shape)}"
        for name in sorted(set(state) & set(expected))
        if state[name].shape != expected[name].shape
    ]
    problems = []
    if mis_shaped:
        problems.append("mis-shaped tensors:\n  " + "\n  ".join(mis_shaped))
    if strict and missing:
        problems.append("missing tensors:\n  " + "\n  ".join(missing))
    if strict and unexpected:
        problems.append("unexpected tensors:\n  " + "\n  ".join(unexpected))
    if problems:
        raise AdapterLoadError(
            f"{source} does not match the adapter built from its config:\n" + "\n".join(problems)
        )
    if missing or unexpected:
        log.warning(
            "loading %s non-strictly: %d missing tensors kept at initialisation (%s), "
            "%d unexpected ignored (%s)",
            source, len(missing), ", ".join(missing), len(unexpected), ", ".join(unexpected),
        )  # fmt: skip
    module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


# -------------------------------------------------------------------------------- hub
def resolve_adapter_folder(
    path_or_id: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """A local adapter folder, or the hub snapshot of ``org/name`` holding the two adapter files.

    Args:
        path_or_id: a folder written by ``save_pretrained`` / ``pila export``, or a hub id.
        revision: hub branch, tag or commit (default: ``main``).
        cache_dir: the Hugging Face cache to use (default: ``HF_HUB_CACHE``).
        token: hub token (default: the logged-in one).
        local_files_only: use the cache only (as ``HF_HUB_OFFLINE=1`` does).

    Raises:
        FileNotFoundError: the folder does not exist, or the hub id cannot be fetched (with
            the reason and the fix).
    """
    name = os.fspath(path_or_id)
    path = Path(name).expanduser()
    if path.exists() or not is_hub_id(name):
        if not path.is_dir():
            raise FileNotFoundError(
                f"adapter folder {str(path)!r} does not exist; pass a folder written by "
                "PILAAdapter.save_pretrained or `pila export` (or a hub id org/name), or leave "
                "the adapter unset to generate the uncorrected baseline"
            )
        return path
    log.info("fetching adapter %s from the hub", name)
    try:
        folder = snapshot_download(
            name,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            allow_patterns=list(FOLDER_FILES),
        )
    except Exception as err:  # noqa: BLE001 - every hub failure gets the same advice
        raise FileNotFoundError(
            f"could not fetch adapter {name!r} from the hub ({type(err).__name__}: {err}). "
            "Without network access, download it once (or copy the folder with "
            f"{CONFIG_NAME} and {WEIGHTS_NAME}) and pass the local folder."
        ) from err
    return Path(folder)


# ----------------------------------------------------------------------------- mixin
_Module = TypeVar("_Module", bound="PretrainedMixin")


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for a module of one config.

    The class it is mixed into is an ``nn.Module`` with a ``config`` (an
    :class:`~pila.adapter.config.AdapterConfig`) that its constructor takes as its only
    argument, as :class:`~pila.adapter.PILAAdapter` does.
    """

    config: AdapterConfig

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``adapter_config.json`` and ``model.safetensors`` into ``directory``, atomically.

        Each file goes to a temporary sibling and is moved into place; the weights first, so
        a finished config always sits next to finished weights. The state includes buffers
        such as the residual loss's running means.

        Returns:
            The folder.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            name: t.detach().to("cpu").contiguous().clone()
            for name, t in self.state_dict().items()
        }
        payload = {
            "format_version": FORMAT_VERSION,
            "adapter_class": type(self).__name__,
            "num_parameters": sum(p.numel() for p in self.parameters()),
            "config": self.config.to_dict(),
        }
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            metadata = {"format": "pt", "pila_format_version": str(FORMAT_VERSION)}
            save_file(state, str(tmp), metadata=metadata)
        with atomic_path(directory / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return directory

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str = "Upload PILA adapter",
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
    ) -> str:
        """Upload the folder :meth:`save_pretrained` writes to the hub repository ``repo_id``.

        The folder is written to a temporary directory and its two files are uploaded in
        one commit with ``HfApi.upload_folder``.

        Args:
            repo_id: ``org/name``; created when missing.
            commit_message: the commit's message.
            private: visibility of a newly created repository (None: the hub's default).
            token: hub token (default: the logged-in one).
            revision: the branch to commit to (default: ``main``).

        Returns:
            The URL of the commit.
        """
        api = HfApi(token=token)
        repo = api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="pila-adapter-") as tmp:
            self.save_pretrained(tmp)
            commit = api.upload_folder(
                repo_id=repo.repo_id,
                folder_path=tmp,
                commit_message=commit_message,
                revision=revision,
                allow_patterns=list(FOLDER_FILES),
            )
        return str(getattr(commit, "commit_url", commit))

    @classmethod
    def from_pretrained(
        cls: type[_Module],
        path_or_id: str | os.PathLike,
        *,
        strict: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
    ) -> _Module:
        """Rebuild a module from a folder written by :meth:`save_pretrained`, or from the hub.

        Args:
            path_or_id: the folder, or a hub id ``org/name`` (fetched into the Hugging Face
                cache with ``snapshot_download``, as a backbone's hub id is).
            strict: refuse missing and unexpected tensors (mis-shaped ones are always
                refused); with ``strict=False`` they are logged and skipped.
            device: where to put the module.
            dtype: floating dtype to cast to (default: as saved).
            revision: hub branch, tag or commit (hub ids only).
            cache_dir: Hugging Face cache folder (hub ids only).
            token: hub token (hub ids only).
            local_files_only: use the cache only, no network (hub ids only).

        Raises:
            FileNotFoundError: a file is missing, or the hub id cannot be fetched.
            AdapterLoadError: the config is invalid, or tensors are missing, unexpected or
                mis-shaped (each named, with the saved and expected shapes).
        """
        directory = resolve_adapter_folder(
            path_or_id,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
        )
        config = read_adapter_config(directory)
        state = read_adapter_weights(directory)
        model = cls(config)  # type: ignore[call-arg]
        load_state_checked(model, state, strict=strict, source=str(directory / WEIGHTS_NAME))
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return model


__all__ = [
    "CONFIG_NAME",
    "FOLDER_FILES",
    "WEIGHTS_NAME",
    "AdapterLoadError",
    "PretrainedMixin",
    "is_hub_id",
    "load_state_checked",
    "read_adapter_config",
    "read_adapter_weights",
    "resolve_adapter_folder",
]
