"""Load teachers, students and pairs from local folders or hub ids.

``load_pair(teacher=..., student=...)`` loads any teacher and boomerang student (local directories, or hub ids such as the published
``Harvard-DCML/boomerang-*`` students where a network exists). The student's mapping comes from
its ``student_config.json``; its teacher, when not given, from the ``teacher`` field there.

Local checkpoints are checked before transformers sees them, so that a missing folder or a
truncated safetensors file produces one clear sentence instead of a deep traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ..errors import BoomerangError, CheckpointError
from .mapping import LayerMapping
from .pair import BoomerangPair
from .student import STUDENT_CONFIG


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device`` that exists here (default: CUDA when present, else CPU);
    one clear sentence for an unknown name or a GPU this machine does not have."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise BoomerangError(f"Unknown device {str(device)!r}; use cpu, cuda or cuda:N.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BoomerangError(f"Device {str(device)!r} was asked for, but CUDA is not available here; use --device cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BoomerangError(
                f"Device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s), "
                f"cuda:0..cuda:{torch.cuda.device_count() - 1}."
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise BoomerangError(f"Device {str(device)!r} was asked for, but this build of torch has no MPS support "
                             "here (Apple GPUs only); use --device cpu.")
    elif dev.type not in ("cpu", "mps"):
        raise BoomerangError(f"Device {str(device)!r} is not supported; use cpu, cuda or cuda:N.")
    return dev


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPU, fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _looks_like_hub_id(ref: str) -> bool:
    """``org/name`` whose ``org`` is not a local folder (``runs/x`` with ``runs/`` here is a path)."""
    p = Path(ref).expanduser()
    return (not p.is_absolute() and ref.count("/") == 1 and not ref.startswith((".", "~"))
            and not p.parent.is_dir())


#: safetensors dtypes of weights that load as what they are (others would be cast silently).
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


def check_checkpoint(path: str | os.PathLike) -> Path:
    """Check a local model folder: it exists, has a config, and its safetensors are intact."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"No such model folder: {p}.")
    if not p.is_dir():
        raise CheckpointError(f"{p} is a file; give the folder that holds config.json.")
    if not (p / "config.json").is_file():
        raise CheckpointError(f"{p} has no config.json; it is not a Hugging Face model folder.")
    files = sorted(p.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{p} has no .safetensors weights (only safetensors are loaded).")
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                st.keys()
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise CheckpointError(f"{f} is corrupt or truncated ({e}).") from None
        with open(f, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_len))
        data_end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
                       default=0)
        for key, v in header.items():
            if key.endswith(".weight") and isinstance(v, dict) and v.get("dtype") not in FLOAT_DTYPES:
                raise CheckpointError(
                    f"{f} stores '{key}' as {v.get('dtype')}; only floating-point weights are loaded "
                    "(an integer or quantised tensor would be cast to float without a word).")
        if f.stat().st_size < 8 + header_len + data_end:
            raise CheckpointError(
                f"{f} is truncated: {f.stat().st_size} bytes, but its header needs "
                f"{8 + header_len + data_end}; copy or download it again."
            )
    return p


def _check_shapes(folder: Path, trust_remote_code: bool) -> None:
    """Name the first tensor whose shape in the safetensors files differs from what config.json
    builds (transformers would only say that some size mismatched)."""
    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - not buildable here: from_pretrained reports it below
        return
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                want = expected.get(key)
                got = tuple(st.get_slice(key).get_shape())
                if want is not None and got != want:
                    raise CheckpointError(
                        f"The checkpoint '{folder}' has a wrongly shaped tensor '{key}': {list(got)} in "
                        f"{f.name}, but its config.json needs {list(want)}."
                    )


def _check_loading_info(ref: str, info: dict) -> None:
    """Refuse weights that do not fit the config: transformers would fill a missing tensor with
    random values and load on, giving silently wrong numbers."""
    problems = [
        ("lacks", info.get("missing_keys") or ()),
        ("has an unexpected", info.get("unexpected_keys") or ()),
        ("has a wrongly shaped", [m[0] if isinstance(m, (tuple, list)) else m
                                  for m in info.get("mismatched_keys") or ()]),
    ]
    for what, keys in problems:
        keys = sorted(keys)
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise CheckpointError(
                f"The checkpoint '{ref}' {what} tensor '{keys[0]}'{more} for its config.json; "
                "its weights do not fit its config, so it is refused rather than filled with random values."
            )


def _check_finite(ref: str, model: torch.nn.Module) -> None:
    """Refuse weights holding NaN or inf: every number computed from them would be meaningless."""
    for name, p in model.named_parameters():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise CheckpointError(f"The checkpoint '{ref}' has NaN or infinite values in '{name}'; "
                                  "its weights are damaged, so it is refused.")


def load_model(
    ref: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    with_tokenizer: bool = True,
):
    """Load a causal LM (and its tokenizer, or None) from a local folder or a hub id."""
    device = resolve_device(device)
    dtype = dtype or default_dtype(device)
    ref_s = str(ref)
    local = Path(ref_s).exists() or not _looks_like_hub_id(ref_s)
    if local:
        check_checkpoint(ref_s)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            ref_s, dtype=dtype, trust_remote_code=trust_remote_code, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as e:
        if local:  # transformers only says that some size mismatched: name the tensor if one did
            _check_shapes(Path(ref_s), trust_remote_code)
        raise CheckpointError(f"Could not load a causal LM from '{ref_s}': {e}".split("\n")[0]) from None
    _check_loading_info(ref_s, info)
    _check_finite(ref_s, model)
    model.to(device).eval()
    tokenizer = None
    if with_tokenizer:
        try:
            tokenizer = AutoTokenizer.from_pretrained(ref_s, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, TypeError):
            tokenizer = None
    return model, tokenizer


def _parse_student_config(text: str, where: str) -> dict:
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where} is not valid JSON ({e.msg} at line {e.lineno}).") from None
    except RecursionError:
        raise CheckpointError(f"{where} is nested deeper than a student config can be.") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where} must hold a JSON object, not a {type(meta).__name__}.")
    if "teacher" in meta and not isinstance(meta["teacher"], str):
        raise CheckpointError(f"{where}: teacher must be a folder or hub id written as text, not {meta['teacher']!r}.")
    return meta


def _student_config(ref: str) -> dict:
    p = Path(ref)
    if p.exists():
        f = p / STUDENT_CONFIG
        if not f.is_file():
            raise CheckpointError(
                f"{p} has no {STUDENT_CONFIG}; it is not a boomerang student (save students with "
                "boomerang.save_student)."
            )
        return _parse_student_config(f.read_text(encoding="utf-8", errors="replace"), str(f))
    if not _looks_like_hub_id(ref):
        raise CheckpointError(f"No such student folder: {ref}.")
    try:
        path = Path(hf_hub_download(ref, STUDENT_CONFIG, etag_timeout=10))
    except Exception as e:
        raise CheckpointError(
            f"There is no local folder '{ref}', and {STUDENT_CONFIG} of the hub id '{ref}' could "
            f"not be fetched ({type(e).__name__}); check the path, the id or your network."
        ) from None
    return _parse_student_config(path.read_text(encoding="utf-8"), f"{STUDENT_CONFIG} of '{ref}'")


def recorded_teacher_path(student: str | os.PathLike, teacher: str) -> str:
    """The teacher a student's ``student_config.json`` names: a relative path that exists beside
    the student folder is resolved from there (students record ``../teacher``); anything else (an
    absolute path, a hub id, a name) is returned as written."""
    beside = Path(student) / teacher
    return str(beside.resolve()) if not Path(teacher).is_absolute() and beside.exists() else teacher


def load_pair(
    *,
    teacher: str | os.PathLike | None = None,
    student: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    name: str | None = None,
) -> BoomerangPair:
    """Load a :class:`BoomerangPair` from a teacher and a student (folders or hub ids).

    ``student`` alone works when its ``student_config.json`` records its teacher (a path
    relative to the student folder is resolved from there). Named pairs ("demo", "smollm2")
    are resolved a layer above, by :func:`boomerang.zoo.load_pair`.
    """
    if student is None:
        raise BoomerangError("A student is needed: give student=<folder or hub id>.")
    student = str(student)
    meta = _student_config(student)
    mapping = LayerMapping.from_student_config(meta)
    if teacher is None:
        teacher = meta.get("teacher")
        if teacher is None:
            raise BoomerangError(
                f"{STUDENT_CONFIG} of '{student}' does not name its teacher; pass teacher=..."
            )
        teacher = recorded_teacher_path(student, teacher)
    kw = dict(device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    t_model, t_tok = load_model(teacher, **kw)
    s_model, s_tok = load_model(student, with_tokenizer=t_tok is None, **kw)
    label = name or f"{Path(str(teacher)).name} / {Path(student).name}"
    return BoomerangPair(t_model, s_model, mapping, t_tok or s_tok, name=label)
