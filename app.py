"""boomerang dashboard: `streamlit run app.py`.

Pages live in app_pages/, not pages/: with a pages/ folder, a real Streamlit 1.67 server still
follows st.navigation, but its AppTest reruns a page file alone, without this script and the
sidebar it builds, and the test suite drives every page through AppTest (shown by
tests/test_layout.py::test_why_the_pages_are_not_in_a_folder_named_pages). The shared sidebar
(pair, data, device) is in app_pages/_sidebar.py, beside _context.py (what pages get), _state.py
(URL state), _results.py (cached results) and _student_box.py (a named pair's student); all
computation in boomerang/ (see boomerang/ui/).
"""

import streamlit as st

st.set_page_config(page_title="boomerang", page_icon="🪃", layout="wide")

from app_pages._sidebar import sidebar  # noqa: E402  (after set_page_config)
from boomerang.errors import BoomerangError  # noqa: E402
from boomerang.ui import configure_threads  # noqa: E402

try:
    configure_threads()
except BoomerangError as e:  # a bad $BOOMERANG_THREADS: say so, run on torch's default
    st.error(str(e), icon=":material/error:")

PAGES = [
    st.Page("app_pages/interpolate.py", title="Interpolate", icon=":material/linear_scale:",
            url_path="interpolate", default=True),
    st.Page("app_pages/layers.py", title="Layer picker", icon=":material/view_week:", url_path="layers"),
    st.Page("app_pages/compare.py", title="Compare orders", icon=":material/stacked_line_chart:",
            url_path="compare"),
    st.Page("app_pages/similarity.py", title="Similarity", icon=":material/grid_on:", url_path="similarity"),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
    st.Page("app_pages/learn.py", title="Learn", icon=":material/school:", url_path="learn"),
]

page = st.navigation(PAGES)
with st.sidebar:
    st.markdown("## boomerang")
    st.caption("Boomerang distillation & zero-shot model size interpolation "
               "([arXiv 2510.05064](https://arxiv.org/abs/2510.05064))")
st.session_state["_ctx"] = sidebar()
page.run()
