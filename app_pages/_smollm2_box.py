"""The sidebar's SmolLM2 box: how its student was made, or a button that builds it."""

from __future__ import annotations

import streamlit as st

from boomerang import ui
from boomerang.errors import BoomerangError


def smollm2_box() -> None:
    """How the SmolLM2 student was made, and a button that builds the distilled one when absent."""
    info = ui.smollm2_student_info()
    if info is not None:
        st.caption(info)
        return
    job = ui.smollm2_build_job()
    if job is not None and job.running:
        h = job.history[-1] if job.history else {}
        st.progress(min(1.0, job.step / max(1, job.config.steps)),
                    text=f"Building the distilled student: step {job.step:,} of at most {job.config.steps:,}"
                         + (f", local loss {h['loss']:.3f}" if "loss" in h else ""))
        if st.button("Stop (resumes from its checkpoint)", key="smollm2_stop"):
            job.stop()
        return
    if job is not None and job.state in ("failed", "done", "stopped"):
        (st.error if job.state == "failed" else st.success)(ui.present.literal(job.message))
    st.caption("This installation has no distilled SmolLM2 student (the shipped one is missing): "
               "block-local distillation builds one, 1,000 steps, about an hour on 2 idle CPU cores "
               "(`python -m boomerang smollm2 build` does the same).")
    if st.button("Build the distilled student", key="smollm2_build", icon=":material/model_training:"):
        try:
            ui.start_smollm2_build()
        except BoomerangError as e:
            st.error(ui.present.literal(str(e)))
        st.rerun()
