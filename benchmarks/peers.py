"""Peer implementations against the xviz variants: same shapes, same math (as close as each peer
allows), same run. A benchmark-only extra: the peers come from requirements-bench.txt (installed
with --no-deps, so none of them can pull a torch), never from the app or the library.

    .venv/bin/pip install --no-deps -r requirements-bench.txt
    .venv/bin/python benchmarks/peers.py --n 1024,4096 --out docs/bench/cpu

Each entry names the xviz variant and the parameters that give it the peer's math, and builds the
peer as a function of (q, k, v) on (B, H, N, d); the comments say where the two still differ.
Timing is ``xviz.analysis.bench.measure`` on both (median after a warm-up); the targets
(``targets.peer_targets``: xviz ≤ 1.25× its best peer) are printed and written to peers.md.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xviz  # noqa: E402
from xviz.analysis import bench, targets  # noqa: E402


@dataclass
class Peer:
    variant: str
    peer: str
    params: Callable[[int], dict]  # xviz parameters at N that match the peer
    build: Callable[[int, int, int], Callable]  # (N, heads, d) -> fn(q, k, v)
    note: str = ""


def _local(exact: bool):
    def build(n, h, d):
        from local_attention import LocalAttention

        attn = LocalAttention(window_size=64, look_backward=1, look_forward=1, exact_windowsize=exact, autopad=True,
                              use_rotary_pos_emb=False).eval()
        return lambda q, k, v: attn(q, k, v)
    return build


def _routing(n, h, d):
    from routing_transformer.routing_transformer import KmeansAttention

    c = math.ceil(math.sqrt(n))
    attn = KmeansAttention(num_clusters=c, window_size=n // c, num_heads=h, head_dim=d).eval()
    return lambda q, k, v: attn(q, k, v)[0]


def _linear(n, h, d):
    from linear_attention_transformer.linear_attention_transformer import linear_attn

    return lambda q, k, v: linear_attn(q, k, v)


def _performer(n, h, d):
    from performer_pytorch import FastAttention

    attn = FastAttention(dim_heads=d, nb_features=266).eval()
    return lambda q, k, v: attn(q, k, v)


def _reformer(n, h, d):
    from reformer_pytorch.reformer_pytorch import LSHAttention

    attn = LSHAttention(bucket_size=64, n_hashes=2, causal=False).eval()

    def fn(q, k, v):
        b = q.shape[0]
        out = attn(q.flatten(0, 1), v.flatten(0, 1))[0]  # shared QK: heads folded into the batch
        return out.view(b, h, n, -1)
    return fn


def _identity_projections(module, names):
    for name in names:
        setattr(module, name, torch.nn.Identity())
    return module


def _nystrom(n, h, d):
    from nystrom_attention import NystromAttention

    attn = _identity_projections(NystromAttention(dim=h * d, dim_head=d, heads=h, num_landmarks=64, pinv_iterations=6,
                                                  residual=False), ("to_qkv", "to_out")).eval()

    def fn(q, k, v):
        x = torch.cat([t.transpose(1, 2).flatten(2) for t in (q, k, v)], -1)  # (B, N, 3·H·d): q | k | v
        return attn(x)
    return fn


def _linformer(n, h, d):
    from linformer import LinformerSelfAttention

    attn = _identity_projections(LinformerSelfAttention(dim=h * d, seq_len=n, heads=h, k=64, dim_head=d),
                                 ("to_q", "to_k", "to_v", "to_out")).eval()
    return lambda q, k, v: attn(q.transpose(1, 2).flatten(2))  # one input: q = k = v (same cost)


def _sinkhorn(n, h, d):
    from sinkhorn_transformer.sinkhorn_transformer import SinkhornAttention

    attn = SinkhornAttention(bucket_size=64, dim=h * d, dim_heads=d, heads=h, max_seq_len=n, temperature=0.75,
                             sinkhorn_iter=8).eval()
    return lambda q, k, v: attn(q, k, v)


def _bigbird(n, h, d):
    from transformers import BigBirdConfig
    from transformers.models.big_bird.modeling_big_bird import BigBirdBlockSparseAttention, BigBirdModel

    block = 32
    config = BigBirdConfig(hidden_size=h * d, num_attention_heads=h, block_size=block, num_random_blocks=3,
                           attention_type="block_sparse", max_position_embeddings=max(4096, n))
    attn = BigBirdBlockSparseAttention(config, seed=0).eval()

    def fn(q, k, v):
        b = q.shape[0]
        masks = BigBirdModel.create_masks_for_block_sparse_attn(torch.ones(b, n, dtype=q.dtype), block)
        blocked, band, from_mask, to_mask = masks
        return attn.bigbird_block_sparse_attention(q, k, v, band, from_mask, to_mask, blocked, blocked, h, 3, d,
                                                   block, block, b, n, n, seed=0, plan_from_length=None,
                                                   plan_num_rand_blocks=None)[0]
    return fn


PEERS = [
    Peer("sliding_window", "local-attention (exact_windowsize)", lambda n: {"window": 64}, _local(True)),
    Peer("blocked_local", "local-attention", lambda n: {"block": 64, "look_back": 1, "look_forward": 1}, _local(False)),
    Peer("routing", "routing-transformer KmeansAttention", lambda n: {"clusters": math.ceil(math.sqrt(n)),
                                                                        "window": n // math.ceil(math.sqrt(n)),
                                                                        "iterations": 0}, _routing,
         "peer: queries and keys each take the window nearest every centroid; xviz: each query its own "
         "cluster's keys; eval k-means: no iterations in either"),
    Peer("linear", "linear-attention-transformer linear_attn", lambda n: {}, _linear,
         "peer's feature maps are softmax(q) over d and softmax(k) over N, xviz's elu + 1; same O(N·d²) shape"),
    Peer("performer", "performer-pytorch FastAttention", lambda n: {"features": 266}, _performer,
         "both: 266 orthogonal positive features"),
    Peer("reformer", "reformer-pytorch LSHAttention", lambda n: {"buckets": n // 64, "rounds": 2, "chunk": 64},
         _reformer, "both: shared QK, N/64 buckets, chunks of 64, 2 rounds"),
    Peer("nystrom", "nystrom-attention", lambda n: {"landmarks": 64, "pinv_iterations": 6}, _nystrom,
         "peer's projections replaced by identities, no residual conv"),
    Peer("linformer", "linformer", lambda n: {"rank": 64}, _linformer,
         "peer's projections replaced by identities; it gets one input (q = k = v)"),
    Peer("sinkhorn", "sinkhorn-transformer SinkhornAttention", lambda n: {"block": 64, "iterations": 8,
                                                                           "temperature": 0.75}, _sinkhorn,
         "peer sorts with a (random) attention sort net, xviz with block means"),
    Peer("bigbird", "transformers BigBird block-sparse", lambda n: {"block": 32, "window_blocks": 3, "global_blocks": 2,
                                                                   "random_blocks": 3}, _bigbird,
         "peer's global blocks are the first and last, xviz's the first two"),
]


def run_peers(ns, heads: int = 8, d: int = 64, repeats: int = 3, only=None, progress=print) -> list[bench.PeerRow]:
    dev = torch.device("cpu")
    rows = []
    for n in ns:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, heads, n, d, generator=g) for _ in range(3))
        for p in PEERS:
            if only and p.variant not in only:
                continue
            note = p.note
            try:
                fn = p.build(n, heads, d)
                with torch.no_grad():
                    peer_s, _ = bench.measure(lambda: fn(q, k, v), dev, repeats)
            except Exception as exc:  # a peer that cannot run this shape is reported, not fatal
                peer_s, note = None, f"peer failed: {type(exc).__name__}: {exc}"[:160]
            params = p.params(n)
            with torch.no_grad():
                xviz_s, _ = bench.measure(lambda: xviz.run(p.variant, q, k, v, **params).out, dev, repeats)
            rows.append(bench.PeerRow(p.variant, p.peer, n, xviz_s, peer_s, note))
            if progress:
                progress(f"N={n} {p.variant} vs {p.peer}: xviz {xviz_s:.4f}s, peer {peer_s}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="1024,4096")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", help="comma-separated xviz variants (default: every peer)")
    ap.add_argument("--out", default="bench-output")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: as the engine tables, on a shared machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run_peers([int(x) for x in args.n.split(",")], args.heads, args.d, args.repeats,
                     args.variants.split(",") if args.variants else None)
    title = f"{bench.device_label(torch.device('cpu'))}, float32, d={args.d}, heads={args.heads}, batch=1"
    path = bench.write_peer_tables(rows, args.out, title)
    print("\n".join(["Targets:"] + [t.line() for t in targets.peer_targets(rows)]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    raise SystemExit(main())
