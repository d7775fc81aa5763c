"""The per-head planner: the pattern measures on hand-made attention maps, and on a real decoder's heads the
chosen variant is the cheapest candidate that meets the target (checked against every candidate's own run)."""
import pytest
import torch

import xviz
from xviz import inputs
from xviz.analysis import planner
from xviz.analysis.metrics import compare
from xviz.figures.generation import plan_map

N = 64


def rows_normalised(a):
    a = a.double().tril()
    return a / a.sum(-1, keepdim=True)


def test_pattern_classes_of_hand_made_maps():
    i, j = torch.arange(N)[:, None], torch.arange(N)[None]
    sink = rows_normalised((j == 0).double() + 1e-6 * (j <= i))
    local = rows_normalised(((j <= i) & (j > i - 4) & (j > 0)).double() + 1e-6 * (j <= i))
    sink_local = rows_normalised(((j == 0) | ((j > i - 3) & (j <= i))).double())
    vertical = rows_normalised(((j == 0) | (j == 17) | (j == 30) | (j == i - 20)).double() * (j <= i) + 1e-9)
    blocks = rows_normalised((((j // 4) == (i // 8)) | ((j // 4) == (i // 4))).double() * (j <= i) + 1e-9)  # routed
    uniform = rows_normalised(torch.ones(N, N))
    got = {name: planner.classify(planner.measure(a)) for name, a in [
        ("sink", sink), ("local", local), ("sink+local", sink_local), ("vertical-slash", vertical),
        ("block-sparse", blocks), ("global", uniform)]}
    assert got == {name: name for name in got}, got
    m = planner.measure(sink)
    assert m["sink_mass"] > 0.99 and m["local_mass"] < 0.01


@pytest.fixture(scope="module")
def layers(smollm2):
    text = "The kettle clicked off just as the rain began, and the dog waited by the bus stop for the children."
    return [inputs.from_text(text, model="smollm2-135m", layer=layer) for layer in (1, 5)]


def test_the_plan_is_the_cheapest_candidate_meeting_the_target(layers):
    target = 0.1
    rows = planner.plan_layers(layers, target=target)
    assert len(rows) == 2 * 9 and {r["pattern"] for r in rows} <= set(planner.PATTERNS)
    seq = layers[1]
    b, h, n, d = seq.q.shape
    exact = xviz.run("exact", seq.q, seq.k, seq.v, causal=True)
    # every candidate's per-head error, recomputed here, and its FLOPs from the variant's own cost model
    tried = []
    for name, params in planner.candidates(n):
        spec = xviz.get_variant(name)
        flops = spec.cost(xviz.Shape(1, h, n, d, d, True), **params).flops
        err = [0.0] * h if name == "exact" else compare(
            exact, xviz.run(name, seq.q, seq.k, seq.v, causal=True, seed=0, **params), with_matrix=False
        ).per_head["rel_out"]
        tried.append((flops, name, params, err))
    exact_flops = next(f for f, name, _, _ in tried if name == "exact")
    for r in rows[9:]:
        meets = [f for f, name, params, err in tried if err[r["head"]] <= target]
        assert r["error"] <= target
        assert r["flops_ratio"] * exact_flops == pytest.approx(min(meets), rel=1e-9)  # nothing cheaper meets it
        assert r["sink_mass"] == pytest.approx(float(seq.reference_attention[0, r["head"], n // 4:, 0].double().mean()))
    assert any(r["variant"] != "exact" for r in rows), "some head of SmolLM2 is cheaper than exact at 10 %"
    with pytest.raises(xviz.ParameterError, match="target"):
        planner.plan_layers(layers, target=0)


def test_plan_map_draws_thirty_layers_by_nine_heads():
    rows = [dict(layer=li, head=h, pattern=planner.PATTERNS[(li + h) % 6], sink_mass=0.1, local_mass=0.2,
                 column_mass=0.3, block_mass=0.4, variant="sinks" if h else "exact",
                 params="sinks=1, window=8" if h else "", error=0.01, flops_ratio=0.5)
            for li in range(30) for h in range(9)]
    fig = plan_map(rows)
    z = fig.data[0].z
    assert len(z) == 30 and len(z[0]) == 9 and "sinks=1" in fig.data[1].text[1]
    assert [list(c) for c in fig.data[1].customdata[:2]] == [[0, 0], [0, 1]]  # a click opens (layer, head)


def test_cli_plan(smollm2, tmp_path, capsys):
    import csv

    from xviz.cli import main

    out = tmp_path / "plan.csv"
    code = main(["plan", "--model", "smollm2-135m", "--text", "The cat sat on the mat and looked at the dog.",
                 "--target", "0.05", "--csv", str(out)])
    assert code == 0 and "270 heads" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 270 and {"layer", "head", "pattern", "variant", "params", "error"} <= set(rows[0])
    assert all(float(r["error"]) <= 0.05 for r in rows)
    assert main(["plan", "--text", "A cat.", "--target", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "target" in err and len(err.strip().splitlines()) == 1
