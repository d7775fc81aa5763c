"""LSH & clustering: which keys hashing (Reformer) and clustering (Routing, clustered attention) put beside each
query, which of its true top-k keys they miss, and why — the collision probability of angular LSH against the
angle, recall against rounds and buckets, and the clusters drawn in 2-D."""
import numpy as np
import streamlit as st

import xviz
from pages.ui import compute, display, widgets
from pages.ui.sidebar import context
from xviz.app import settings as appstate
from xviz.analysis import lsh as la
from xviz.app import lsh_views as lv
from xviz.figures import lsh as fx

MATRIX_MAX_N = 2048  # the sorted matrix and the missed-key view build N×N weights for one head
RECALL_MAX_N = 1024  # the recall grid runs the variant a few dozen times with dense masks
PROJECT_MAX_POINTS = 2000  # points drawn in 2-D (t-SNE is slower: at most 1000)


@st.cache_data(max_entries=32, show_spinner=False)
def collision_theory(thetas: tuple, buckets: int) -> np.ndarray:
    return la.collision_probability(np.asarray(thetas), buckets)


@st.cache_data(max_entries=16, show_spinner=False)
def collision_measured(thetas: tuple, buckets: int, d: int, pairs: int, seed: int):
    return la.measure_collisions(list(thetas), buckets, d=d, pairs=pairs, seed=seed)


def controls(ctx, names):
    b, h, n, d = ctx.shape
    raw = st.query_params.to_dict()
    default = "reformer" if "reformer" in names else names[0]
    display.link_messages(appstate.check_variant(raw.get("lsh_variant"), names, default)[1])
    top = st.columns([2, 3])
    name = top[0].selectbox("Variant", names, index=names.index(default), key="lsh_variant", bind=widgets.BIND,
                            help="variants that hash (buckets) or cluster (cluster ids)")
    spec = xviz.get_variant(name)
    top[1].markdown(f"**{display.escape(spec.display_name)}** · {display.escape(spec.complexity)}  \n"
                    f"{display.escape(spec.paper)}")
    display.link_messages(appstate.check_params(raw, name, spec.params, n, d)[1])
    params = widgets.param_widgets(spec, n, d)
    c = st.columns(4)
    rounds = int(params.get("rounds", 1)) if lv.hashes(spec) else 1
    view = dict(head=widgets.number("head", "head", 0, h - 1, 0, container=c[0]),
                topk=widgets.number("k (true top-k keys)", "topk", 1, n, 8, container=c[1]),
                round=widgets.number("round (sort order)", "lsh_round", 0, rounds - 1, 0, container=c[2],
                                     help="which hashing round orders the matrix below"),
                method=widgets.choice("2-D projection", ["pca", "tsne"], "proj", "pca", container=c[3],
                                      help="pca: scikit-learn PCA; tsne: t-SNE (slower, at most 1000 points)"))
    return spec, params, view


def strip(ctx, spec, g, head: int) -> None:
    st.subheader("Buckets and clusters, token by token")
    fig = fx.bucket_strip(g.rows, ctx.tokens, title=f"{g.word} of every token (head {head})", row_labels=g.labels,
                          font_size=ctx.font_size, word=g.word)
    display.show_figure(fig, f"{spec.name}_{g.word}s_head{head}", ctx, key="fig_strip")
    if spec.shared_qk:
        st.caption(f"{spec.display_name} shares QK: keys are the unit-normalised queries, so one id per token "
                   "serves as both query and key; a token never attends itself unless it is alone.")


def sorted_matrix(ctx, spec, result, g, q_h, k_h, view):
    st.subheader("The attention matrix in sorted order, and the true top-k keys it misses")
    if ctx.n > MATRIX_MAX_N:
        st.info(f"At N = {ctx.n} the N×N view is not drawn (up to N = {MATRIX_MAX_N}); use a shorter input.")
        return None
    sv = lv.sorted_view(spec, result, q_h, k_h, g, head=view["head"], topk=view["topk"], causal=ctx.causal)
    if sv is None:
        st.info(f"{spec.display_name} has neither a mask nor an effective matrix: no missed-key view.")
        return None
    m = sv.missed
    fig = fx.reordered_matrix(sv.reference, sv.row_order, g.query_ids[sv.row_order], col_order=sv.col_order,
                              col_groups_sorted=g.key_ids[sv.col_order], tokens=ctx.tokens, chunk=sv.chunk, top=m.top,
                              hit=m.hit, counted=m.counted, group_word=g.word, font_size=ctx.font_size,
                              title=f"{'shared-QK ' if spec.shared_qk else ''}exact attention sorted by {g.what}")
    display.show_figure(fig, f"{spec.name}_sorted_head{view['head']}", ctx, key="fig_sorted")
    chunks = (f"; dashed orange lines cut the sorted order into chunks of {sv.chunk} (a query sees its own and the "
              "previous chunk, same bucket only)") if sv.chunk else ""
    st.caption(f"White lines separate {g.word}s{chunks}. Markers: each query's true top-{view['topk']} keys — green "
               f"kept by {spec.display_name}, red missed. Mean recall {m.mean_recall:.1%}.")
    display.show_figure(fx.recall_per_query_figure(m.recall, ctx.tokens, k=view["topk"], font_size=ctx.font_size),
                        f"{spec.name}_recall_head{view['head']}", ctx, key="fig_recall_q")
    return sv


def collision_section(ctx, spec, result, q_h, head: int) -> None:
    st.subheader("Collision probability against angle")
    if not lv.hashes(spec):
        st.info(f"{spec.display_name} does not hash: the collision probability of angular LSH applies to "
                "variants with buckets (Reformer).")
        return
    c = st.columns(2)
    pairs = widgets.number("random pairs per angle", "lsh_pairs", 100, 20000, 2000, container=c[0],
                           help="each pair gets its own random rotation: independent trials")
    with st.spinner("Integrating the collision probability…"):
        col = lv.collisions(result, q_h, head, d=ctx.shape[-1], pairs=pairs, seed=ctx.seed, theory=collision_theory,
                            measure=collision_measured)
    fig = fx.collision_figure(col.theta, col.theory, rounds=sorted({1, col.rounds, 2 * col.rounds}), buckets=col.buckets,
                              measured=col.measured, on_input=col.on_input, font_size=ctx.font_size)
    display.show_figure(fig, f"collision_b{col.buckets}", ctx, key="fig_collision")
    if col.measured is not None:
        c[1].metric("largest deviation of the measurement", f"{col.max_sigma:.1f} σ",
                    help="|measured − theory| in binomial standard errors; a few σ at most is sampling error")
    st.caption(f"One round of {col.buckets} buckets: h(x) = argmax([xR; −xR]) with R a d × {col.buckets // 2} Gaussian "
               "matrix, so a pair at angle θ collides with probability p(θ) (b = 2: 1 − θ/π; orthogonal vectors: 1/b). "
               "Over r rounds a pair shares a bucket at least once with probability 1 − (1 − p)^r. Purple circles: "
               f"the pairs of this input's head-{head} queries, binned by angle, in the run's own buckets.")


def recall_section(ctx, spec, result, sv, q_h, k_h, view) -> None:
    st.subheader("Recall of the true top-k against rounds and buckets")
    axes = lv.recall_axes(spec, ctx.n, ctx.shape[-1])
    if axes is None:
        st.info(f"{spec.display_name} has no rounds and buckets parameters: this grid is for hashing variants.")
        return
    if ctx.n > RECALL_MAX_N:
        st.info(f"At N = {ctx.n} the recall grid is not computed (up to N = {RECALL_MAX_N}).")
        return
    rows, cols = axes
    fixed = {k: v for k, v in result.params.items() if k not in ("rounds", "buckets")}
    head = view["head"]
    key = ctx.key("lsh_recall", spec.name, head, view["topk"], tuple(sorted(fixed.items())))
    with st.spinner(f"Running {spec.display_name} at {len(rows) * len(cols)} settings…"):
        grid = compute.derived(key, lambda: la.recall_grid(
            spec.name, q_h, k_h, ctx.inp.v[:, head:head + 1].detach().cpu().double(), rows=rows, cols=cols,
            topk=view["topk"], causal=ctx.causal, seeds=(ctx.seed,), fixed=fixed))
    cc = st.columns(2)
    with cc[0]:
        display.show_figure(fx.recall_grid_figure(grid, font_size=ctx.font_size), f"{spec.name}_recall_grid", ctx,
                            key="fig_recall_grid")
    if sv is not None:
        theory = lv.recall_theory(sv, q_h, k_h, rows=rows, cols=cols, topk=view["topk"], shared_qk=spec.shared_qk,
                                  theory=collision_theory)
        fig = fx.recall_grid_figure(theory, font_size=ctx.font_size)
        fig.update_layout(title_text=f"Predicted by the collision probability (no chunks), top-{view['topk']}")
        with cc[1]:
            display.show_figure(fig, f"{spec.name}_recall_theory", ctx, key="fig_recall_theory")
    not_run = "" if not grid.errors else " Not run: " + "; ".join(sorted(set(grid.errors.values())))
    st.caption(f"Measured: the share of each query's true top-{view['topk']} keys inside {spec.display_name}'s pattern "
               f"(other parameters as above), head {head}, seed {ctx.seed}. More rounds only add keys; more buckets "
               "split neighbours apart. The prediction ignores the chunks, so it is an upper bound when buckets "
               "overflow a chunk." + not_run)


def projection_section(ctx, spec, result, q_h, k_h, view) -> None:
    st.subheader("Queries and keys in 2-D")
    limit = PROJECT_MAX_POINTS if view["method"] == "pca" else 1000
    pr = lv.projection(spec, result.artifacts, q_h, k_h, view["head"], view["round"], ctx.tokens, limit)
    if len(pr.keep) < pr.points.shape[0]:
        st.caption(f"{pr.points.shape[0]} points: {len(pr.keep)} of them are drawn.")
    key = ctx.key("lsh_proj", spec.name, tuple(sorted(result.params.items())), view["head"], view["round"],
                  view["method"])
    with st.spinner("Projecting…" if view["method"] == "pca" else "Running t-SNE…"):
        xy = compute.derived(key, lambda: la.project_2d(pr.points[pr.keep], view["method"], seed=ctx.seed))
    fig = fx.projection_figure(xy, pr.ids[pr.keep], [pr.kinds[i] for i in pr.keep], hover=[pr.hover[i] for i in pr.keep],
                               method="PCA" if view["method"] == "pca" else "t-SNE", font_size=ctx.font_size,
                               word=pr.word)
    fig.update_layout(title_text=f"{fig.layout.title.text}, head {view['head']}")
    cc = st.columns([3, 2])
    with cc[0]:
        display.show_figure(fig, f"{spec.name}_projection_{view['method']}_head{view['head']}", ctx, key="fig_projection")
    with cc[1]:
        display.show_figure(fx.cluster_sizes_figure(pr.sizes, font_size=ctx.font_size, word=pr.word.split()[0]),
                            f"{spec.name}_sizes_head{view['head']}", ctx, key="fig_sizes")
        sz = next(iter(pr.sizes.values()))
        st.caption(f"{int((sz > 0).sum())} of {len(sz)} {pr.word.split()[0]}s used; the largest holds {int(sz.max())} "
                   f"of {int(sz.sum())} ({sz.max() / max(1, sz.sum()):.0%}).")


ctx = context()
display.page_header("LSH & clustering", ctx)
if not display.require_input(ctx):
    st.stop()
specs = lv.groups_variants(xviz.list_variants())
if not specs:
    st.info("No variant in the catalog returns buckets or clusters.")
    st.stop()
with display.controls("Variant and view", ctx):
    spec, params, view = controls(ctx, [s.name for s in specs])
result = None
with display.guard(spec.display_name), st.spinner(f"Running {spec.display_name}…"):
    result, _ = compute.run(ctx, spec.name, params)
if result is None:
    st.stop()
head = view["head"]
st.caption(f"{spec.display_name}({appstate.describe_params(result.params)}), head {head}.")
q_h = ctx.inp.q[:, head:head + 1].detach().cpu().double()
k_h = ctx.inp.k[:, head:head + 1].detach().cpu().double()
g = lv.groups(spec, result.artifacts, head, view["round"])
with display.guard("Strip"):
    strip(ctx, spec, g, head)
sv = None
with display.guard("Missed keys"):
    sv = sorted_matrix(ctx, spec, result, g, q_h, k_h, view)
with display.guard("Collision probability"):
    collision_section(ctx, spec, result, q_h, head)
with display.guard("Recall grid"):
    recall_section(ctx, spec, result, sv, q_h, k_h, view)
with display.guard("Projection"):
    projection_section(ctx, spec, result, q_h, k_h, view)
if spec.shared_qk:
    st.caption("Reformer hashes directions: the points are the unit queries (its keys).")
