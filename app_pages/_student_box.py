"""The sidebar's box under a named pair: how its student was made, or a button that builds it."""

from __future__ import annotations

import streamlit as st

from boomerang import ui
from boomerang.errors import BoomerangError


def student_box(spec: ui.PairSpec) -> None:
    """How a named pair's distilled student was made; when its family has none installed but a
    recipe that builds one, the build's progress or a button that starts it."""
    entry = spec.entry
    if entry is None:
        return
    info = spec.student_record()
    if info is not None:
        st.caption(info)
        return
    family = entry.family
    if family.build_run is None:
        return
    job = ui.student_build_job(family)
    if job is not None and job.running:
        h = job.history[-1] if job.history else {}
        st.progress(min(1.0, job.step / max(1, job.config.steps)),
                    text=f"Building the distilled student: step {job.step:,} of at most {job.config.steps:,}"
                         + (f", local loss {h['loss']:.3f}" if "loss" in h else ""))
        if st.button("Stop (resumes from its checkpoint)", key="student_build_stop"):
            job.stop()
        return
    if job is not None and job.state in ("failed", "done", "stopped"):
        (st.error if job.state == "failed" else st.success)(ui.present.literal(job.message))
    st.caption(family.build_note)
    if st.button("Build the distilled student", key="student_build", icon=":material/model_training:"):
        try:
            ui.start_student_build(family)
        except BoomerangError as e:
            st.error(ui.present.literal(str(e)))
        st.rerun()
