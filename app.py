"""boomerang dashboard: `streamlit run app.py`.

Pages live in pages/; the shared sidebar (pair, data, device) in pages/_sidebar.py; all
computation in boomerang/ (see boomerang/dashboard.py).
"""

import streamlit as st

st.set_page_config(page_title="boomerang", page_icon="🪃", layout="wide")

from pages._sidebar import sidebar  # noqa: E402  (after set_page_config)

PAGES = [
    st.Page("pages/interpolate.py", title="Interpolate", icon=":material/linear_scale:",
            url_path="interpolate", default=True),
    st.Page("pages/layers.py", title="Layer picker", icon=":material/view_week:", url_path="layers"),
    st.Page("pages/compare.py", title="Compare orders", icon=":material/stacked_line_chart:",
            url_path="compare"),
    st.Page("pages/similarity.py", title="Similarity", icon=":material/grid_on:", url_path="similarity"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
    st.Page("pages/learn.py", title="Learn", icon=":material/school:", url_path="learn"),
]

page = st.navigation(PAGES)
with st.sidebar:
    st.markdown("## 🪃 boomerang")
    st.caption("Boomerang distillation & zero-shot model size interpolation "
               "([arXiv 2510.05064](https://arxiv.org/abs/2510.05064))")
st.session_state["_ctx"] = sidebar()
page.run()
