"""Save a built (patched) model as a standalone Hugging Face checkpoint.

A model from :meth:`BoomerangPair.build` shares its tensors with the teacher and the student;
``export_model`` writes it as an ordinary safetensors checkpoint that reloads with
``AutoModelForCausalLM.from_pretrained`` and gives the same logits. The folder is written beside
its destination and renamed into place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import PreTrainedModel

from ..errors import BoomerangError
from ..io import atomic_dir


def export_model(model: PreTrainedModel, out_dir: str | os.PathLike, tokenizer=None) -> Path:
    """Write ``model`` (+ tokenizer) to ``out_dir`` as safetensors; returns the folder."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BoomerangError(f"{out} is a file; choose a new folder for the export.")
    if out.exists() and any(out.iterdir()):
        raise BoomerangError(f"{out} exists and is not empty; choose a new folder for the export.")
    try:
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            patched = getattr(model, "boomerang_patched", None)
            if patched is not None:
                (tmp / "boomerang_patch.json").write_text(
                    json.dumps({"patched_student_layers": list(patched)}, indent=2) + "\n"
                )
    except OSError as e:
        raise BoomerangError(f"Could not write the export to {out}: {e.strerror or e}.") from None
    return out
