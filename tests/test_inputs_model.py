"""Real models: the captured Q/K/V reproduce the model's own attention, for the default MiniLM and for
tiny local GPT-2 (fused QKV, causal) and LLaMA (rotary, grouped-query, causal) folders."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import xviz
from xviz import inputs
from xviz.inputs import model as M

TEXT = "The kettle clicked off just as the rain began, and the dog waited by the bus stop."
# Tolerance for "the engine's exact attention equals the model's probabilities": both are float32 softmaxes
# of the same q·k products (the scale folded into q changes rounding by ~1 ulp); 1e-5 absolute is ~100× the
# float32 noise on probabilities ≤ 1 and far below any real difference (a missing rotary or mask is ~1e-1).
ATOL = 1e-5


def engine_attention(seq):
    return xviz.run("exact", seq.q, seq.k, seq.v, causal=seq.causal).matrix()


def own_attentions(path, ids):
    """The model's attention probabilities from a separate, plain transformers load (eager, output_attentions):
    independent of xviz's capture function."""
    from transformers import AutoModel

    net = M.quiet_load(lambda: AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager"))
    with torch.no_grad():
        return net.eval()(input_ids=torch.tensor([ids]), output_attentions=True).attentions, net


@pytest.fixture(scope="module")
def minilm():
    return inputs.model_info()  # loads and caches the default model once for this module


def test_default_model_info(minilm):
    assert minilm["layers"] == 6 and minilm["heads"] == 12 and minilm["max_tokens"] == 512
    assert minilm["causal"] is False and "MiniLM" in minilm["name"]
    assert inputs.default_model_path().endswith("model") and minilm["path"] == inputs.default_model_path()
    assert M._load(None) is M._load(inputs.default_model_path()) is M._load("")  # one cached model per process


def test_minilm_engine_exact_equals_model_attention_every_layer_and_head(minilm):
    seqs = [inputs.from_text(TEXT, layer=layer) for layer in range(6)]
    theirs, _ = own_attentions(inputs.default_model_path(), seqs[0].meta["token_ids"])
    for layer, seq in enumerate(seqs):
        n = len(seq.tokens)
        assert seq.q.shape == (1, 12, n, 32) and seq.reference_attention.shape == (1, 12, n, n)
        assert not seq.causal and seq.tokens[0] == "[CLS]" and seq.tokens[-1] == "[SEP]"
        ours = engine_attention(seq)
        per_head = (ours - seq.reference_attention).abs().amax(dim=(0, 2, 3))
        assert (per_head <= ATOL).all(), f"layer {layer}: max diff per head {per_head.tolist()}"
        # ... and the recorded probabilities are the model's own, as plain transformers returns them.
        assert (seq.reference_attention - theirs[layer]).abs().max() <= ATOL
        assert seq.notices == [] and seq.meta["max_abs_diff_vs_model"] <= ATOL
        assert f"layer {layer} of 6" in seq.provenance


def test_minilm_attention_is_not_trivially_equal(minilm):
    # The check above could pass vacuously if the attention were uniform or every layer the same.
    a0, a3 = (inputs.from_text(TEXT, layer=layer).reference_attention for layer in (0, 3))
    n = a0.shape[-1]
    assert (a0 - 1 / n).abs().max() > 0.1 and (a0 - a3).abs().max() > 0.1


def test_long_text_is_cut_with_a_notice(minilm):
    seq = inputs.from_text("attention " * 700)
    assert seq.n == 512 and seq.tokens[-1] == "[SEP]"
    assert len(seq.notices) == 1 and "702 tokens" in seq.notices[0] and "at most 512" in seq.notices[0]
    assert "cut" in seq.provenance
    short = inputs.from_text(TEXT, max_tokens=8)
    assert short.n == 8 and "limit is set to 8" in short.notices[0]
    assert inputs.from_text(TEXT).notices == []


def test_text_through_the_upload_path(minilm):
    seq = inputs.load_upload("note.txt", TEXT.encode("utf-8"), layer=2)
    assert seq.provenance.startswith("note.txt: ") and seq.meta["layer"] == 2
    assert (engine_attention(seq) - seq.reference_attention).abs().max() <= ATOL
    assert inputs.from_text(TEXT, layer=np.int64(1)).meta["layer"] == 1  # NumPy integers from widgets


@pytest.mark.parametrize("call,pattern", [
    (lambda: inputs.from_text(TEXT, layer=6), r"layer = 6 is outside 0–5: all-MiniLM-L6-v2 has 6 layers"),
    (lambda: inputs.from_text(TEXT, layer=-1), r"layer = -1 is outside 0–5"),
    (lambda: inputs.from_text("   "), r"the text is empty; give at least one word"),
    (lambda: inputs.from_text(TEXT, max_tokens=0), r"max_tokens = 0 must be a whole number of at least 1"),
    (lambda: inputs.from_text(b"bytes"), r"the text must be a string, not bytes"),
    (lambda: inputs.model_info(42), r"model must be None \(the default model\) or the path of a local model folder"),
])
def test_bad_model_calls(minilm, call, pattern):
    """Each bad argument is one clear InputError."""
    with pytest.raises(xviz.InputError, match=pattern):
        call()


# ------------------------------------------------------------------ tiny local GPT-2 and LLaMA folders


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Random tiny GPT-2 (fused c_attn, 1/(layer+1) scaling), LLaMA (rotary, 4 query / 2 key-value heads) and
    Mistral (sliding window) folders saved with save_pretrained, each with the MiniLM tokenizer (vocabulary 30,522)."""
    from transformers import (AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                              MistralConfig, MistralForCausalLM)

    tok = AutoTokenizer.from_pretrained(inputs.default_model_path(), local_files_only=True)
    torch.manual_seed(0)
    configs = {
        "gpt2": (GPT2LMHeadModel, GPT2Config(vocab_size=tok.vocab_size, n_positions=32, n_embd=32, n_layer=2,
                                             n_head=4, scale_attn_by_inverse_layer_idx=True,
                                             bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)),
        "llama": (LlamaForCausalLM, LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                max_position_embeddings=64, rope_theta=100.0)),
        # A sliding window of 4: attention the captured Q/K with a causal mask cannot reproduce.
        "mistral": (MistralForCausalLM, MistralConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                                                      num_hidden_layers=2, num_attention_heads=4,
                                                      num_key_value_heads=2, max_position_embeddings=64,
                                                      sliding_window=4)),
    }
    # The folders are served only because the operator's allow-list (XVIZ_MODEL_DIRS) names their root.
    allow = pytest.MonkeyPatch()
    allow.setenv(M.MODEL_DIRS_ENV, str(tmp_path_factory.getbasetemp()))
    paths = {}
    for name, (cls, cfg) in configs.items():
        path = tmp_path_factory.mktemp(name)
        net = cls(cfg)
        with torch.no_grad():  # larger weights than the default init, so attention is far from uniform
            for p in net.parameters():
                if p.dim() == 2:
                    p.mul_(8.0)
        M.quiet_load(lambda: net.save_pretrained(path))
        tok.save_pretrained(path)
        paths[name] = str(path)
    yield paths
    allow.undo()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_local_causal_model_matches_its_own_attention(tiny_models, arch):
    path = tiny_models[arch]
    info = inputs.model_info(path)
    assert info["layers"] == 2 and info["heads"] == 4 and info["causal"] is True and info["model_type"] == arch
    for layer in range(2):
        seq = inputs.from_text(TEXT, model=path, layer=layer)
        n = seq.n
        assert seq.causal and seq.q.shape == (1, 4, n, 8) and seq.k.shape == seq.q.shape == seq.v.shape
        ref = seq.reference_attention
        assert torch.equal(ref.triu(1), torch.zeros_like(ref))  # the model's own attention is causal
        ours = engine_attention(seq)
        assert (ours - ref).abs().max() <= ATOL, f"{arch} layer {layer}"
        # Without the causal mask the captured Q/K would not match: the test sees the difference.
        acausal = xviz.run("exact", seq.q, seq.k, seq.v).matrix()
        assert (acausal - ref).abs().max() > 1e-2
        theirs, _ = own_attentions(path, seq.meta["token_ids"])
        assert (ref - theirs[layer]).abs().max() <= ATOL
        assert seq.notices == []


def test_gpt2_scale_is_folded_into_q(tiny_models):
    seq = inputs.from_text(TEXT, model=tiny_models["gpt2"], layer=1)
    assert seq.meta["scaling"] == pytest.approx(8 ** -0.5 / 2)  # 1/√d, divided by layer + 1
    assert "folded into q" in seq.provenance
    # v is the third part of the fused c_attn output, reshaped to heads.
    _, net = own_attentions(tiny_models["gpt2"], seq.meta["token_ids"])
    captured = {}
    hook = net.h[1].attn.c_attn.register_forward_hook(lambda mod, args, out: captured.update(qkv=out))
    with torch.no_grad():
        net(input_ids=torch.tensor([seq.meta["token_ids"]]))
    hook.remove()
    v = captured["qkv"][0, :, 64:].reshape(seq.n, 4, 8).transpose(0, 1)
    assert (seq.v[0] - v).abs().max() < 1e-6


def test_llama_rotary_is_applied_where_the_model_applies_it(tiny_models):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    path = tiny_models["llama"]
    seq = inputs.from_text(TEXT, model=path, layer=1)
    ids = seq.meta["token_ids"]
    _, net = own_attentions(path, ids)
    attn = net.layers[1].self_attn
    raw = {}  # hooks return None (dict.update), so they observe without changing the forward
    hooks = [getattr(attn, f"{x}_proj").register_forward_hook(lambda mod, a, out, x=x: raw.update({x: out}))
             for x in "qkv"]
    hooks.append(attn.register_forward_pre_hook(lambda mod, a, kw: raw.update(pe=kw["position_embeddings"]),
                                                with_kwargs=True))
    with torch.no_grad():
        net(input_ids=torch.tensor([ids]))
    for h in hooks:
        h.remove()
    n = seq.n
    q_raw = raw["q"].view(1, n, 4, 8).transpose(1, 2)
    k_raw = raw["k"].view(1, n, 2, 8).transpose(1, 2)
    q_rot, k_rot = apply_rotary_pos_emb(q_raw, k_raw, *raw["pe"])
    # Captured = the model's projections with its own rotary embedding; keys repeated for grouped-query heads.
    assert (seq.q - q_rot).abs().max() < 1e-5
    assert (seq.k - k_rot.repeat_interleave(2, dim=1)).abs().max() < 1e-5
    assert (seq.v - raw["v"].view(1, n, 2, 8).transpose(1, 2).repeat_interleave(2, dim=1)).abs().max() < 1e-6
    # ... and rotary really moved them: position 0 is unrotated, later positions are not.
    assert (seq.q[..., 0, :] - q_raw[..., 0, :]).abs().max() < 1e-5
    assert (seq.q[..., 1:, :] - q_raw[..., 1:, :]).abs().max() > 1e-2
    assert "2 key/value heads repeated" in seq.provenance


def test_local_model_truncation_uses_its_own_maximum(tiny_models):
    seq = inputs.from_text("attention " * 100, model=tiny_models["gpt2"])
    assert seq.n == 32 and "reads at most 32 tokens" in seq.notices[0]
    assert inputs.model_info(tiny_models["gpt2"])["max_tokens"] == 32


def test_model_that_masks_more_than_causal_gets_a_notice(tiny_models):
    seq = inputs.from_text(TEXT, model=tiny_models["mistral"], layer=1)
    assert seq.causal and len(seq.notices) == 2
    assert "sliding window" in seq.notices[0] and "differs from" in seq.notices[1]
    assert seq.meta["max_abs_diff_vs_model"] > 1e-2  # measured ≈ 0.2: the window drops real attention mass
    # The reference is still the model's own (windowed) attention: zero beyond 4 keys back.
    ref = seq.reference_attention[0, :, 8]
    assert torch.equal(ref[:, :5], torch.zeros_like(ref[:, :5])) and (ref[:, 5:9].sum(-1) - 1).abs().max() < 1e-5


def test_model_folders_come_from_the_allow_list(tiny_models, monkeypatch):
    """A folder outside XVIZ_MODEL_DIRS is refused before anything about it is looked at; the bundled
    model is always allowed."""
    monkeypatch.delenv(M.MODEL_DIRS_ENV)
    M._CACHE.clear()
    with pytest.raises(xviz.InputError, match=r"is not one this server allows; an operator allows") as info:
        inputs.model_info(tiny_models["gpt2"])
    assert str(info.value).count("/") <= tiny_models["gpt2"].count("/")  # only what was typed
    assert inputs.model_info()["layers"] == 6
    monkeypatch.setenv(M.MODEL_DIRS_ENV, os.pathsep.join(["/nonexistent", str(Path(tiny_models["gpt2"]).parent)]))
    assert inputs.model_info(tiny_models["gpt2"])["layers"] == 2


def test_partly_random_weights_are_refused(tiny_models, tmp_path, monkeypatch):
    import shutil

    import safetensors.torch

    folder = tmp_path / "half"
    shutil.copytree(tiny_models["gpt2"], folder)
    weights = safetensors.torch.load_file(folder / "model.safetensors")
    keep = dict(list(weights.items())[:3])  # a valid file that names only a few of the tensors
    safetensors.torch.save_file(keep, folder / "model.safetensors")
    monkeypatch.setenv(M.MODEL_DIRS_ENV, str(tmp_path))
    with pytest.raises(xviz.InputError, match=r"cover only \d+ of the model's \d+ tensors; the rest would be random"):
        inputs.model_info(str(folder))
