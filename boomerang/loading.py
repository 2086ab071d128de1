"""Load teachers, students and pairs from local folders, hub ids, or the bundled names.

``load_pair("demo")`` gives the bundled demo family; ``load_pair(teacher=..., student=...)``
loads any teacher and boomerang student (local directories, or hub ids such as the published
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
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from .errors import BoomerangError, CheckpointError
from .mapping import LayerMapping
from .pair import BoomerangPair
from .student import STUDENT_CONFIG

NAMED_PAIRS = ("demo", "smollm2")


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPU, fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _looks_like_hub_id(ref: str) -> bool:
    return not os.path.isabs(ref) and ref.count("/") == 1 and not ref.startswith(".")


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
        if f.stat().st_size < 8 + header_len + data_end:
            raise CheckpointError(
                f"{f} is truncated: {f.stat().st_size} bytes, but its header needs "
                f"{8 + header_len + data_end}; copy or download it again."
            )
    return p


def load_model(
    ref: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    with_tokenizer: bool = True,
):
    """Load a causal LM (and its tokenizer, or None) from a local folder or a hub id."""
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    ref_s = str(ref)
    if Path(ref_s).exists() or not _looks_like_hub_id(ref_s):
        check_checkpoint(ref_s)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            ref_s, dtype=dtype, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as e:
        raise CheckpointError(f"Could not load a causal LM from '{ref_s}': {e}".split("\n")[0]) from None
    model.to(device).eval()
    tokenizer = None
    if with_tokenizer:
        try:
            tokenizer = AutoTokenizer.from_pretrained(ref_s, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, TypeError):
            tokenizer = None
    return model, tokenizer


def _student_config(ref: str) -> dict:
    p = Path(ref)
    if p.exists():
        f = p / STUDENT_CONFIG
        if not f.is_file():
            raise CheckpointError(
                f"{p} has no {STUDENT_CONFIG}; it is not a boomerang student (save students with "
                "boomerang.save_student)."
            )
        return json.loads(f.read_text())
    if not _looks_like_hub_id(ref):
        raise CheckpointError(f"No such student folder: {ref}.")
    from huggingface_hub import hf_hub_download

    try:
        return json.loads(Path(hf_hub_download(ref, STUDENT_CONFIG)).read_text())
    except Exception as e:
        raise CheckpointError(
            f"Could not fetch {STUDENT_CONFIG} of '{ref}' from the hub ({type(e).__name__}); "
            "check the id and your network."
        ) from None


def named_pair_dirs(name: str, student: str | None) -> tuple[Path, Path]:
    """(teacher_dir, student_dir) of a bundled pair: ``demo`` or ``smollm2``."""
    from . import demo

    if name == "demo":
        return demo.demo_dirs(student or "boomerang")
    if name == "smollm2":
        from .pretrained import smollm2_dirs

        return smollm2_dirs()
    raise BoomerangError(f"Unknown named pair '{name}'; choose one of {', '.join(NAMED_PAIRS)}.")


def load_pair(
    name: str | None = None,
    *,
    teacher: str | os.PathLike | None = None,
    student: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> BoomerangPair:
    """Load a :class:`BoomerangPair`: a bundled ``name`` ("demo", "smollm2") or teacher + student.

    ``load_pair("demo", student="no-align")`` picks one of the demo's ablation students.
    ``student`` alone works when its ``student_config.json`` records its teacher.
    """
    label = None
    if name is not None:
        if teacher is not None:
            raise BoomerangError("Give either a named pair or a teacher, not both.")
        teacher, student = named_pair_dirs(name, None if student is None else str(student))
        label = name
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
        beside = Path(student) / teacher
        if not Path(teacher).is_absolute() and beside.exists():
            teacher = beside.resolve()  # a path relative to the student folder
    kw = dict(device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    t_model, t_tok = load_model(teacher, **kw)
    s_model, s_tok = load_model(student, with_tokenizer=t_tok is None, **kw)
    label = label or f"{Path(str(teacher)).name} / {Path(student).name}"
    return BoomerangPair(t_model, s_model, mapping, t_tok or s_tok, name=label)
