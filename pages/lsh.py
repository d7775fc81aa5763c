"""LSH & clustering: which keys hashing (Reformer) and clustering (Routing, clustered attention) put beside each
query, which of its true top-k keys they miss, and why — the collision probability of angular LSH against the
angle, recall against rounds and buckets, and the clusters drawn in 2-D."""
import math

import numpy as np
import streamlit as st
import torch

import xviz
from pages import common
from xviz import appstate
from xviz.analysis import lsh as la
from xviz.figures import explain as fx

MATRIX_MAX_N = 2048  # the reordered matrix and the missed-key view build N×N weights for one head
RECALL_MAX_N = 1024  # the recall grid runs the variant a few dozen times with dense masks
PROJECT_MAX_POINTS = 2000  # points drawn in 2-D (t-SNE is slower: at most 1000)


@st.cache_data(max_entries=32, show_spinner=False)
def collision_theory(thetas: tuple, buckets: int) -> np.ndarray:
    return la.collision_probability(np.asarray(thetas), buckets)


@st.cache_data(max_entries=16, show_spinner=False)
def collision_measured(thetas: tuple, buckets: int, d: int, pairs: int, seed: int):
    return la.measure_collisions(list(thetas), buckets, d=d, pairs=pairs, seed=seed)


ctx = common.context()
common.page_header("LSH & clustering", ctx)
if not common.require_input(ctx):
    st.stop()
b, h, n, d = ctx.shape
specs = [s for s in xviz.list_variants() if {"buckets", "clusters"} & set(s.artifact_names)]
if not specs:
    st.info("No variant in the catalog returns buckets or clusters.")
    st.stop()
names = [s.name for s in specs]
default_variant = "reformer" if "reformer" in names else names[0]
raw = st.query_params.to_dict()
_, messages = appstate.check_variant(raw.get("lsh_variant"), names, default_variant)
messages += appstate.check_choice(raw, "proj", ("pca", "tsne"))

with common.controls("Variant and view", ctx):
    top = st.columns([2, 3])
    name = top[0].selectbox("Variant", names, index=names.index(default_variant), key="lsh_variant",
                            bind=common.BIND, help="variants that hash (buckets) or cluster (cluster ids)")
    spec = xviz.get_variant(name)
    top[1].markdown(f"**{spec.display_name}** · {spec.complexity}  \n<small>{spec.paper}</small>",
                    unsafe_allow_html=True)
    _, pmsgs = appstate.check_params(raw, name, spec.params, n, d)
    messages += pmsgs
    params = common.param_widgets(spec, n, d)
    view = st.columns(4)
    head = int(view[0].number_input("head", min_value=0, max_value=h - 1, value=0, step=1, key="head",
                                    bind=common.BIND))
    topk = int(view[1].number_input("k (true top-k keys)", min_value=1, max_value=n, value=min(n, 8), step=1,
                                    key="topk", bind=common.BIND))
    rounds_here = int(params.get("rounds", 1)) if "buckets" in spec.artifact_names else 1
    rnd = int(view[2].number_input("round (sort order)", min_value=0, max_value=max(0, rounds_here - 1), value=0,
                                   step=1, key="lsh_round", bind=common.BIND,
                                   help="which hashing round orders the matrix below"))
    method = view[3].selectbox("2-D projection", ["pca", "tsne"], index=0, key="proj", bind=common.BIND,
                               help="pca: scikit-learn PCA; tsne: t-SNE (slower, at most 1000 points)")
common.link_messages(messages)
rnd = min(rnd, max(0, rounds_here - 1))

result = None
with common.guard(spec.display_name), st.spinner(f"Running {spec.display_name}…"):
    result, secs = common.run_variant(ctx, name, params)
if result is None:
    st.stop()
st.caption(f"{spec.display_name}({appstate.describe_params(result.params)}) on head {head}: "
           f"{secs * 1e3:.1f} ms (first run).")
arts = result.artifacts
shared = spec.shared_qk
q_h = ctx.inp.q[:, head:head + 1].detach().cpu().double()
k_h = ctx.inp.k[:, head:head + 1].detach().cpu().double()

# ------------------------------------------------------------------------------------------------ ids
st.subheader("Buckets and clusters, token by token")
ids_rows, ids_labels, group_word = None, [], "group"
if "buckets" in arts:
    ids_rows = arts["buckets"][0, min(head, arts["buckets"].shape[1] - 1)].cpu()  # (R, N)
    ids_labels = [f"round {r}" for r in range(ids_rows.shape[0])]
    group_word = "bucket"
elif "clusters" in arts:
    c = arts["clusters"][0, min(head, arts["clusters"].shape[1] - 1)].cpu()
    ids_rows = c if c.dim() == 2 else c[None]  # routing: (2, N) queries, keys; clustered: (N,) queries
    ids_labels = ["queries", "keys"][:ids_rows.shape[0]]
    group_word = "cluster"
with common.guard("Strip"):
    fig = fx.bucket_strip(ids_rows, ctx.tokens, title=f"{group_word} of every token (head {head})",
                          row_labels=ids_labels, font_size=ctx.font_size)
    common.show_figure(fig, f"{name}_{group_word}s_head{head}", ctx, key="fig_strip")
    if shared:
        st.caption(f"{spec.display_name} shares QK: keys are the unit-normalised queries, so one id per token "
                   "serves as both query and key; a token never attends itself unless it is alone.")

# ------------------------------------------------------------------------------------------------ matrix
st.subheader("The attention matrix in sorted order, and the true top-k keys it misses")
ref = sup = missed = None
if n > MATRIX_MAX_N:
    st.info(f"At N = {n} the N×N view is not drawn (up to N = {MATRIX_MAX_N}); use a shorter input.")
else:
    with common.guard("Missed keys"):
        ref = la.reference_weights(spec, q_h, q_h if shared else k_h, 1.0 / math.sqrt(d), ctx.causal)[0, 0]
        full = la.support_of(result)
        if full is None:
            st.info(f"{spec.display_name} has neither a mask nor an effective matrix: no missed-key view.")
        else:
            sup = full[0, min(head, full.shape[1] - 1)] if full.dim() == 4 else full
            sup = sup.cpu() if sup.dtype == torch.bool else sup.cpu().double()
            missed = la.missed_topk(ref, sup, topk)
            if "buckets" in arts:
                row_ids = arts["buckets"][0, min(head, arts["buckets"].shape[1] - 1), rnd].cpu()
                col_ids = row_ids
                chunk = int(result.params.get("chunk", 0)) or None
                what = f"bucket (round {rnd})"
            else:
                c = arts["clusters"][0, min(head, arts["clusters"].shape[1] - 1)].cpu()
                row_ids = c[0] if c.dim() == 2 else c
                col_ids = c[1] if c.dim() == 2 else torch.zeros(n, dtype=torch.long)
                chunk = None
                what = "cluster (rows: query cluster, columns: key cluster)" if c.dim() == 2 else \
                    "query cluster (columns in position order)"
            ro, co = la.group_order(row_ids), la.group_order(col_ids)
            fig = fx.reordered_matrix(ref, ro, row_ids[ro], col_order=co, col_groups_sorted=col_ids[co],
                                      tokens=ctx.tokens, chunk=chunk, top=missed.top, hit=missed.hit,
                                      counted=missed.counted, group_word=group_word, font_size=ctx.font_size,
                                      title=f"{'shared-QK ' if shared else ''}exact attention sorted by {what}")
            common.show_figure(fig, f"{name}_sorted_head{head}", ctx, key="fig_sorted")
            st.caption(
                f"White lines separate {group_word}s"
                + (f"; dashed orange lines cut the sorted order into chunks of {chunk} (a query sees its own and the "
                   "previous chunk, same bucket only)" if chunk else "")
                + f". Markers: each query's true top-{topk} keys — green kept by {spec.display_name}, red missed. "
                f"Mean recall {missed.mean_recall:.1%}.")
            common.show_figure(fx.recall_per_query_figure(missed.recall, ctx.tokens, k=topk, font_size=ctx.font_size),
                               f"{name}_recall_head{head}", ctx, key="fig_recall_q")

# ------------------------------------------------------------------------------------------------ collisions
st.subheader("Collision probability against angle")
if "buckets" not in arts:
    st.info(f"{spec.display_name} does not hash: the collision probability of angular LSH applies to "
            "variants with buckets (Reformer).")
else:
    with common.guard("Collision probability"):
        nb = int(result.params.get("buckets", 2))
        nb = nb if nb == 1 or nb % 2 == 0 else nb - 1  # an odd count (= N) uses N − 1 buckets, as the variant
        rounds = int(result.params.get("rounds", 1))
        c = st.columns(2)
        pairs = int(c[0].number_input("random pairs per angle", min_value=100, max_value=20000, value=2000,
                                      step=100, key="lsh_pairs", bind=common.BIND,
                                      help="each pair gets its own random rotation: independent trials"))
        fine = tuple(np.linspace(0, math.pi, 37).round(6))
        coarse = tuple(np.linspace(0, math.pi, 13)[1:-1].round(6))
        with st.spinner("Integrating the collision probability…"):
            p_fine = collision_theory(fine, nb)
            meas = collision_measured(coarse, nb, d, pairs, ctx.seed) if nb > 1 else None
        on_input = la.collisions_on_input(q_h[0, 0], arts["buckets"][0, min(head, arts["buckets"].shape[1] - 1)].cpu())
        fig = fx.collision_figure(np.asarray(fine), p_fine, rounds=sorted({1, rounds, 2 * rounds}), buckets=nb,
                                  measured=meas, on_input=on_input, font_size=ctx.font_size)
        common.show_figure(fig, f"collision_b{nb}", ctx, key="fig_collision")
        if meas is not None:
            z = np.abs(meas.measured - meas.theory) / np.sqrt(np.clip(meas.theory * (1 - meas.theory), 1e-12, None)
                                                             / meas.pairs)
            c[1].metric("largest deviation of the measurement", f"{z.max():.1f} σ",
                        help="|measured − theory| in binomial standard errors; a few σ at most is sampling error")
        st.caption(f"One round of {nb} buckets: h(x) = argmax([xR; −xR]) with R a d × {nb // 2} Gaussian matrix, so a "
                   f"pair at angle θ collides with probability p(θ) (b = 2: 1 − θ/π; orthogonal vectors: 1/b). Over r "
                   "rounds a pair shares a bucket at least once with probability 1 − (1 − p)^r. Purple circles: the "
                   f"pairs of this input's head-{head} queries, binned by angle, in the run's own buckets.")

# ------------------------------------------------------------------------------------------------ recall grid
st.subheader("Recall of the true top-k against rounds and buckets")
if not {"rounds", "buckets"} <= {p.name for p in spec.params}:
    st.info(f"{spec.display_name} has no rounds and buckets parameters: this grid is for hashing variants.")
elif n > RECALL_MAX_N:
    st.info(f"At N = {n} the recall grid is not computed (up to N = {RECALL_MAX_N}).")
else:
    with common.guard("Recall grid"):
        p_rounds, p_buckets = spec.param("rounds"), spec.param("buckets")
        rmax = int(p_rounds.bounds(n, d)[1] or 8)
        rows = [r for r in (1, 2, 4, 8) if r <= rmax]
        cols = [x for x in (2, 4, 8, 16, 32, 64) if x <= n]
        fixed = {k: v for k, v in result.params.items() if k not in ("rounds", "buckets")}
        key = ctx.key("lsh_recall", name, head, topk, tuple(sorted(fixed.items())))
        with st.spinner(f"Running {spec.display_name} at {len(rows) * len(cols)} settings…"):
            grid = common.cached(key, lambda: la.recall_grid(
                name, q_h, k_h, ctx.inp.v[:, head:head + 1].detach().cpu().double(), rows=rows, cols=cols, topk=topk,
                causal=ctx.causal, seeds=(ctx.seed,), fixed=fixed))
        cc = st.columns(2)
        with cc[0]:
            common.show_figure(fx.recall_grid_figure(grid, font_size=ctx.font_size), f"{name}_recall_grid", ctx,
                               key="fig_recall_grid")
        if ref is not None:
            # The theory's prediction without chunking: each true top-k key shares a bucket with its query in at
            # least one round with probability 1 − (1 − p(θ))^r, θ the angle between query and (unit) key.
            qs = q_h[0, 0]
            ks = qs if shared else k_h[0, 0]
            ang = torch.arccos((torch.nn.functional.normalize(qs, dim=-1)
                                @ torch.nn.functional.normalize(ks, dim=-1).T).clamp(-1, 1))
            mk = la.missed_topk(ref, torch.ones(n, n, dtype=torch.bool), topk)
            th = ang.gather(-1, mk.top)[mk.counted].numpy()
            theory = np.full((len(rows), len(cols)), np.nan)
            for j, nbk in enumerate(cols):
                pf = collision_theory(fine, nbk)
                pk = np.interp(th, np.asarray(fine), pf)
                for i, r in enumerate(rows):
                    theory[i, j] = float(np.mean(1 - (1 - pk) ** r)) if th.size else np.nan
            tgrid = la.RecallGrid(rows=rows, cols=cols, row_param="rounds", col_param="buckets", recall=theory,
                                  errors={}, k=topk)
            with cc[1]:
                fig = fx.recall_grid_figure(tgrid, font_size=ctx.font_size)
                fig.update_layout(title_text=f"Predicted by the collision probability (no chunks), top-{topk}")
                common.show_figure(fig, f"{name}_recall_theory", ctx, key="fig_recall_theory")
        st.caption(f"Measured: the share of each query's true top-{topk} keys inside {spec.display_name}'s pattern "
                   f"(chunk and other parameters as above), head {head}, seed {ctx.seed}. More rounds only add keys; "
                   "more buckets split neighbours apart. The prediction ignores the chunks, so it is an upper bound "
                   "when buckets overflow a chunk." + ("" if not grid.errors else
                                                       " Not run: " + "; ".join(sorted(set(grid.errors.values())))))

# ------------------------------------------------------------------------------------------------ projection
st.subheader("Queries and keys in 2-D")
if "clusters" not in arts and "buckets" not in arts:
    st.info(f"{spec.display_name} returns no cluster ids.")
else:
    with common.guard("Projection"):
        hh = min(head, (arts["clusters"] if "clusters" in arts else arts["buckets"]).shape[1] - 1)
        pts, ids, kinds, hover = [], [], [], []
        toks = ctx.tokens
        if "clusters" in arts:
            c = arts["clusters"][0, hh].cpu()
            qids = c[0] if c.dim() == 2 else c
            kids = c[1] if c.dim() == 2 else None
            unit = c.dim() == 2  # routing clusters unit vectors; clustered attention the raw queries
            qx = torch.nn.functional.normalize(q_h[0, 0], dim=-1) if unit else q_h[0, 0]
            pts.append(qx)
            ids.append(qids)
            kinds += ["query"] * n
            hover += [f"query {i} {toks[i] if i < len(toks) else ''}" for i in range(n)]
            if kids is not None:
                pts.append(torch.nn.functional.normalize(k_h[0, 0], dim=-1))
                ids.append(kids)
                kinds += ["key"] * n
                hover += [f"key {i} {toks[i] if i < len(toks) else ''}" for i in range(n)]
            if "centroids" in arts:
                cen = arts["centroids"][0, hh].detach().cpu().double()
                pts.append(cen)
                ids.append(torch.arange(cen.shape[0]))
                kinds += ["centroid"] * cen.shape[0]
                hover += [f"centroid {i}" for i in range(cen.shape[0])]
            cmax = int(arts["centroids"].shape[2]) if "centroids" in arts else int(qids.max()) + 1
            sizes = {"queries": la.cluster_sizes(qids, cmax)}
            if kids is not None:
                sizes["keys"] = la.cluster_sizes(kids, cmax)
            word = "cluster"
        else:
            bk = arts["buckets"][0, hh, rnd].cpu()
            pts.append(torch.nn.functional.normalize(q_h[0, 0], dim=-1))
            ids.append(bk)
            kinds += ["query"] * n
            hover += [f"token {i} {toks[i] if i < len(toks) else ''}" for i in range(n)]
            sizes = {"tokens": la.cluster_sizes(bk, int(result.params.get("buckets", 2)))}
            word = f"bucket (round {rnd})"
        x = torch.cat([p.double() for p in pts])
        gid = torch.cat([i.long() for i in ids])
        limit = PROJECT_MAX_POINTS if method == "pca" else 1000
        keep = np.arange(x.shape[0])
        if x.shape[0] > limit:  # an even subsample (centroids kept)
            base = np.linspace(0, x.shape[0] - 1, limit).astype(np.int64)
            keep = np.union1d(base, np.nonzero(np.asarray(kinds) == "centroid")[0])
            st.caption(f"{x.shape[0]} points: {len(keep)} of them are drawn.")
        key = ctx.key("lsh_proj", name, tuple(sorted(result.params.items())), head, rnd, method)
        with st.spinner("Projecting…" if method == "pca" else "Running t-SNE…"):
            xy = common.cached(key, lambda: la.project_2d(x[keep], method, seed=ctx.seed))
        fig = fx.projection_figure(xy, gid[keep], [kinds[i] for i in keep], hover=[hover[i] for i in keep],
                                   method="PCA" if method == "pca" else "t-SNE", font_size=ctx.font_size)
        fig.update_layout(title_text=f"{fig.layout.title.text}, coloured by {word} — head {head}")
        cc = st.columns([3, 2])
        with cc[0]:
            common.show_figure(fig, f"{name}_projection_{method}_head{head}", ctx, key="fig_projection")
        with cc[1]:
            common.show_figure(fx.cluster_sizes_figure(sizes, font_size=ctx.font_size), f"{name}_sizes_head{head}",
                               ctx, key="fig_sizes")
            sz = next(iter(sizes.values()))
            st.caption(f"{int((sz > 0).sum())} of {len(sz)} {word.split()[0]}s used; the largest holds {int(sz.max())} "
                       f"of {int(sz.sum())} ({sz.max() / max(1, sz.sum()):.0%}).")
        if shared:
            st.caption("Reformer hashes directions: the points are the unit queries (its keys).")
