"""The adapter folder: ``adapter_config.json`` + ``model.safetensors``, local or on the hub.

:class:`PretrainedMixin` gives :class:`~pila.adapter.PILAAdapter` its ``save_pretrained``,
``from_pretrained`` and ``push_to_hub``; the functions here are what they, checkpoint
reading and generation share:

- writing: each file goes to a temporary sibling and is moved into place with
  ``os.replace``; the weights first, so a finished config always sits next to finished
  weights (:meth:`PretrainedMixin.save_pretrained`);
- reading: the config is validated (format version, the category order, every size)
  before any weight is read, and every missing, unexpected or mis-shaped tensor is named
  (:func:`read_adapter_config`, :func:`load_state_checked`);
- the hub: a hub id (``org/name``) is fetched with ``huggingface_hub.snapshot_download``
  (only the two files, into the usual Hugging Face cache; offline with
  ``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) and pushed with ``HfApi.upload_folder``
  (:func:`resolve_adapter_folder`, :meth:`PretrainedMixin.push_to_hub`). Weights are safetensors
  only: nothing is unpickled and no code from a repository is run;
- generation: the check that an adapter fits a backbone (:func:`check_backbone_sizes`),
  its identity in sidecars (:func:`adapter_identity`), and :func:`load_adapter`, which
  does all of it for ``pila.generate`` and ``pila predict``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from huggingface_hub import HfApi, snapshot_download
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from pila.adapter.config import FORMAT_VERSION, AdapterConfig
from pila.io import atomic_path, is_hub_id

if TYPE_CHECKING:
    from pila.adapter.adapter import PILAAdapter
    from pila.backbone import WanBackbone

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
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise AdapterLoadError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(payload, dict) or "config" not in payload:
        raise AdapterLoadError(f"{path} has no 'config' entry; it was not written by PILAAdapter.save_pretrained")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise AdapterLoadError(f"{path} has format_version {version!r}; this version of pila reads {FORMAT_VERSION}")
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
            f"{path} is not a readable safetensors file ({err}); it should hold the adapter's weights "
            "as `pila export` / PILAAdapter.save_pretrained write them. Export or save the adapter again."
        ) from None


def load_state_checked(module: nn.Module, state: dict[str, Tensor], *, strict: bool, source: str) -> None:
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
        raise AdapterLoadError(f"{source} does not match the adapter built from its config:\n" + "\n".join(problems))
    if missing or unexpected:
        log.warning(
            "loading %s non-strictly: %d missing tensors kept at initialisation (%s), %d unexpected ignored (%s)",
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
                f"adapter folder {str(path)!r} does not exist; pass a folder written by PILAAdapter.save_pretrained "
                "or `pila export` (or a hub id org/name), or leave the adapter unset to generate the uncorrected baseline"
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
            f"could not fetch adapter {name!r} from the hub ({type(err).__name__}: {err}). Without network "
            f"access, download it once (or copy the folder with {CONFIG_NAME} and {WEIGHTS_NAME}) and pass the "
            "local folder."
        ) from err
    return Path(folder)


# ----------------------------------------------------------------------------- mixin
_Module = TypeVar("_Module", bound="PretrainedMixin")


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for a module built from one config.

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
        state = {name: t.detach().to("cpu").contiguous().clone() for name, t in self.state_dict().items()}
        payload = {
            "format_version": FORMAT_VERSION,
            "adapter_class": type(self).__name__,
            "num_parameters": sum(p.numel() for p in self.parameters()),
            "config": self.config.to_dict(),
        }
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "pila_format_version": str(FORMAT_VERSION)})
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
    def load_config(cls, directory: str | os.PathLike) -> AdapterConfig:
        """Read and validate the config of a saved adapter folder (no weights are read)."""
        return read_adapter_config(directory)

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
            path_or_id, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only
        )
        config = read_adapter_config(directory)
        state = read_adapter_weights(directory)
        model = cls(config)  # type: ignore[call-arg]
        load_state_checked(model, state, strict=strict, source=str(directory / WEIGHTS_NAME))
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return model


# ------------------------------------------------------------------------ generation
def adapter_config(adapter: nn.Module) -> AdapterConfig:
    """The adapter's ``AdapterConfig`` (raises a clear error for modules without one)."""
    config = getattr(adapter, "config", None)
    if config is None or not hasattr(config, "latent_channels") or not hasattr(config, "text_dim"):
        raise TypeError(
            f"{type(adapter).__name__} is not a PILA adapter (it has no config with latent_channels and "
            "text_dim); load one with pila.adapter.PILAAdapter.from_pretrained(folder)"
        )
    return config


def check_backbone_sizes(config: AdapterConfig, backbone: WanBackbone, source: str = "the adapter") -> None:
    """Refuse an adapter built for another backbone (latent channels or text width differ).

    Raises:
        ValueError: naming ``source``, both values and the fix.
    """
    problems = []
    if int(config.latent_channels) != backbone.latent_channels:
        problems.append(f"latent_channels {config.latent_channels} vs the backbone's {backbone.latent_channels}")
    if int(config.text_dim) != backbone.text_dim:
        problems.append(f"text_dim {config.text_dim} vs the backbone's text-encoder width {backbone.text_dim}")
    if problems:
        raise ValueError(
            f"{source} does not match the backbone {backbone.source!r}: {'; '.join(problems)}. "
            "Use an adapter trained (or exported) for a backbone with the same VAE latents and text encoder, "
            "or load the backbone it was trained with."
        )


def check_adapter_compatible(adapter: nn.Module, backbone: WanBackbone, source: str = "the adapter") -> None:
    """:func:`check_backbone_sizes` for a built adapter."""
    check_backbone_sizes(adapter_config(adapter), backbone, source)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _state_sha256(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _joined(hashes: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}:{v}" for k, v in sorted(hashes.items())).encode()).hexdigest()


def folder_weights_sha256(folder: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """The SHA-256 identifying an adapter folder's weights, and each ``*.safetensors`` file's.

    One file: that file's hash; several: a hash of their names and hashes.
    """
    weights = {p.name: _file_sha256(p) for p in sorted(Path(folder).glob("*.safetensors"))}
    return (next(iter(weights.values())) if len(weights) == 1 else _joined(weights)), weights


def adapter_identity(adapter: nn.Module | None, folder: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """What identifies the adapter in a sidecar: its folder and the SHA-256 of its weights.

    For a folder, the hash is that of its ``*.safetensors`` file(s); for an in-memory
    adapter, of its state dict (names and raw bytes).
    """
    if adapter is None:
        return None
    config = adapter_config(adapter)
    identity: dict[str, Any] = {
        "class": f"{type(adapter).__module__}.{type(adapter).__qualname__}",
        "num_parameters": sum(p.numel() for p in adapter.parameters()),
        "top_k": int(getattr(config, "top_k", -1)),
    }
    if folder is not None:
        identity["folder"] = str(Path(folder).resolve())
        identity["sha256"], identity["weights"] = folder_weights_sha256(folder)
    else:
        identity["folder"] = None
        identity["sha256"] = _state_sha256(adapter)
    return identity


def load_adapter(
    path_or_id: str | os.PathLike, backbone: WanBackbone, *, device: torch.device | str | None = None
) -> PILAAdapter:
    """``PILAAdapter.from_pretrained(path_or_id)``, checked against ``backbone``, frozen, in eval mode.

    The sizes are checked from the config before any weight is read.

    Raises:
        FileNotFoundError: the folder does not exist or the hub id cannot be fetched.
        ValueError: the adapter does not match the backbone (:func:`check_backbone_sizes`).
    """
    from pila.adapter.adapter import PILAAdapter

    folder = resolve_adapter_folder(path_or_id)
    check_backbone_sizes(read_adapter_config(folder), backbone, f"adapter {os.fspath(path_or_id)!r}")
    adapter = PILAAdapter.from_pretrained(folder)
    adapter.requires_grad_(False).eval()
    return adapter.to(device if device is not None else backbone.device)


__all__ = [
    "CONFIG_NAME",
    "FOLDER_FILES",
    "WEIGHTS_NAME",
    "AdapterLoadError",
    "PretrainedMixin",
    "adapter_config",
    "adapter_identity",
    "check_adapter_compatible",
    "check_backbone_sizes",
    "is_hub_id",
    "load_adapter",
    "load_state_checked",
    "read_adapter_config",
    "read_adapter_weights",
    "resolve_adapter_folder",
]
