"""Errors raised when publishing, pulling and converting checkpoints.

Each names what went wrong *and* what to do about it: these surface in a terminal, often far
from the code that could fix them. All are ``ValueError``/``RuntimeError`` subclasses so callers
that already catch the builtins keep working.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "hub_network_errors",
    "HubError",
    "HubUnavailableError",
    "CorruptCheckpointError",
    "ChecksumMismatchError",
    "ArchitectureMismatchError",
    "KeyMismatchError",
    "CatalogueError",
    "ReproductionError",
    "format_key_list",
]

_LIST_LIMIT = 40


def format_key_list(keys: Iterable[str], limit: int = _LIST_LIMIT) -> str:
    """Indented bullet list of ``keys``, truncated after ``limit`` (with a count of the rest)."""
    keys = list(keys)
    lines = [f"    {k}" for k in keys[:limit]]
    if len(keys) > limit:
        lines.append(f"    ... and {len(keys) - limit} more")
    return "\n".join(lines)


def hub_network_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub raises when the Hub is unreachable (or offline mode is on) and the file is not cached."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    errors: tuple[type[BaseException], ...] = (LocalEntryNotFoundError, OfflineModeIsEnabled)
    try:  # huggingface_hub 1.x/2.x speak httpx (2.x: "httpx2"); older ones requests
        import httpx2

        errors += (httpx2.ConnectError, httpx2.TimeoutException, httpx2.NetworkError)
    except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
        try:
            import httpx

            errors += (httpx.ConnectError, httpx.TimeoutException, httpx.NetworkError)
        except ImportError:
            pass
    return errors


class HubError(RuntimeError):
    """Base class of the hub/checkpoint errors that are not about a value the caller passed."""


class HubUnavailableError(HubError):
    """The Hub could not be reached (or offline mode is on) and the file is not in the local cache."""

    def __init__(self, repo_id: str, filename: str | None = None, cause: BaseException | None = None,
                 cache_dir: str | None = None) -> None:
        what = f"'{filename}' of '{repo_id}'" if filename else f"'{repo_id}'"
        where = f" (cache: {cache_dir})" if cache_dir else ""
        reason = f": {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}" if cause else ""
        super().__init__(
            f"cannot get {what}: the Hugging Face Hub is unreachable or offline mode is on, and it is not in the "
            f"local cache{where}{reason}\n"
            "What to do, one of:\n"
            "  - with network access, run once online so the file is cached, then set HF_HUB_OFFLINE=1 to reuse it;\n"
            "  - pre-populate a cache (copy a `models--<org>--<name>` folder from a machine that has it) and point "
            "HF_HUB_CACHE (or HF_HOME) at it, with HF_HUB_OFFLINE=1;\n"
            "  - or convert from a local file instead: "
            "`fdconv-zoo convert --checkpoint local.safetensors --model <arch> --output out.safetensors`, "
            "then load it with pretrained_cfg_overlay=dict(file='out.safetensors')."
        )
        self.repo_id = repo_id
        self.filename = filename


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be parsed (truncated download, wrong format, bad header)."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(
            f"checkpoint '{path}' is corrupt or not a valid safetensors/torch file: {detail}\n"
            "Delete it and download again (for a Hub file: hf_hub_download(..., force_download=True), or remove its "
            "`models--<org>--<name>` folder from the Hugging Face cache), or re-export it with "
            "fdconv_zoo.hub.save_for_hub."
        )
        self.path = path


class ChecksumMismatchError(ValueError):
    """A ``model.safetensors`` whose sha256 is not the one recorded in ``hub/catalogue.json``."""

    def __init__(self, path: str, repo_id: str, expected: str, actual: str) -> None:
        super().__init__(
            f"sha256 of '{path}' is {actual}, but hub/catalogue.json records {expected} for '{repo_id}'.\n"
            "The file is not the published checkpoint: a partial or stale download (re-download with "
            "force_download=True or delete it from the cache), or the Hub repo was changed without updating the "
            "catalogue (re-publish with `fdconv-zoo push`, which rewrites the entry)."
        )
        self.repo_id, self.expected, self.actual = repo_id, expected, actual


class ArchitectureMismatchError(ValueError):
    """A checkpoint built for another network: its config names another architecture, or shapes differ."""

    def __init__(self, architecture: str, mismatches: Mapping[str, tuple[Sequence[int], Sequence[int]]],
                 source: str = "checkpoint", *, checkpoint_architecture: str | None = None,
                 missing: Sequence[str] = (), unexpected: Sequence[str] = ()) -> None:
        if checkpoint_architecture:
            head = (f"{source} was saved from '{checkpoint_architecture}', not '{architecture}': "
                    "a checkpoint of another architecture")
        else:
            head = (f"{source} does not fit '{architecture}': a checkpoint of another architecture "
                    "(or of other model_args / num_classes)")
        parts = [head + "."]
        if mismatches:
            lines = [f"    {k}: checkpoint {tuple(a)} vs model {tuple(b)}"
                     for k, (a, b) in list(mismatches.items())[:40]]
            if len(mismatches) > 40:
                lines.append(f"    ... and {len(mismatches) - 40} more")
            parts.append(f"  {len(mismatches)} tensor(s) with another shape:\n" + "\n".join(lines))
        if missing:
            parts.append(f"  missing from the checkpoint ({len(missing)}):\n{format_key_list(missing, 10)}")
        if unexpected:
            parts.append(f"  unexpected, not in the model ({len(unexpected)}):\n{format_key_list(unexpected, 10)}")
        parts.append(f"Load it with the architecture it was saved from ({checkpoint_architecture})."
                     if checkpoint_architecture else
                     "Pick the matching --model (e.g. resnet50_fdconv for a ResNet-50 checkpoint) and model_args.")
        super().__init__("\n".join(parts))
        self.architecture = architecture
        self.checkpoint_architecture = checkpoint_architecture
        self.mismatches = dict(mismatches)
        self.missing = list(missing)
        self.unexpected = list(unexpected)


class KeyMismatchError(ValueError):
    """Checkpoint keys that the model lacks (unexpected) or model keys the checkpoint lacks (missing)."""

    def __init__(self, architecture: str, missing: Sequence[str], unexpected: Sequence[str],
                 source: str = "checkpoint") -> None:
        parts = [f"{source} does not match the keys of '{architecture}':"]
        if missing:
            parts.append(f"  missing from the checkpoint ({len(missing)}):\n{format_key_list(missing)}")
        if unexpected:
            parts.append(f"  unexpected, not in the model ({len(unexpected)}):\n{format_key_list(unexpected)}")
        parts.append(
            "Check --model and model_args (kernel_num, placement), or convert the checkpoint first with "
            "`fdconv-zoo convert`; a detector backbone has no classifier: use num_classes=0."
        )
        super().__init__("\n".join(parts))
        self.architecture = architecture
        self.missing = list(missing)
        self.unexpected = list(unexpected)


class CatalogueError(ValueError):
    """An entry of ``hub/catalogue.json`` that breaks its schema (see hub/README.md)."""


class ReproductionError(HubError):
    """A staged folder that, reloaded, does not reproduce the model it was saved from."""
