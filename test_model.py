"""
The model's claims, as tests: plain GPT is GPT-2; no token sees the future, also through memory;
memory carries information across segments; streaming equals the batched forward; gradients
reach every memory parameter through time; the memory state is bounded, constant-size and
survives save/load bit-exactly.
"""
import json
import os

import pytest
import torch

from checkpoint import load_memory, save_memory
from memory import segment_mask
from model import GPT, GPTConfig
from stream import Stream

S, M, K = 8, 4, 2  # seg_len, mem_len, ltm of the small memoGPT used below


def tiny(mem_len=M, ltm=K, **kw):
    torch.manual_seed(0)
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64, dropout=0.0,
                mem_len=mem_len, ltm=ltm, seg_len=S)
    args.update(kw)
    model = GPT(GPTConfig(**args)).eval()
    if model.config.mem_len:  # as if trained: the LTM age slopes and the gate's content term start at 0, which would
        with torch.no_grad():  # hide their use (the keep would be the same for every sample and segment)
            model.ltm_age.normal_()
            model.mem_gate.weight.normal_(std=1.0)
    return model


def tokens(T, B=2, seed=1):
    return torch.randint(0, 64, (B, T), generator=torch.Generator().manual_seed(seed))


# --- plain GPT is GPT-2 ---

@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=32, vocab_size=101)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # HF inits biases to 0 and LayerNorms to 1: randomise all so every weight counts
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path_factory.mktemp("hf_gpt2")
    hf.save_pretrained(path)
    return path, hf


def test_plain_gpt_logits_equal_hf_gpt2(hf_dir):
    path, hf = hf_dir
    model = GPT.from_pretrained(str(path)).eval()
    assert model.config.mem_len == 0 and not any("mem" in n for n, _ in model.named_parameters())
    idx = torch.randint(0, 101, (2, 32))
    with torch.no_grad():
        ours, _, mem = model(idx)
        theirs = hf(idx).logits
    assert mem is None
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_from_pretrained_with_memory_copies_ffn(hf_dir):
    path, _ = hf_dir
    model = GPT.from_pretrained(str(path), mem_len=4, ltm=2, seg_len=16)
    for block in model.transformer.h:
        for ours, copy in ((block.mlp, block.mlp_mem), (block.ln_2, block.ln_2_mem)):
            for (n, a), (_, b) in zip(ours.named_parameters(), copy.named_parameters()):
                assert torch.equal(a, b), n
    # within one segment and with the memory at m_0 the model is still a (memory-reading) GPT-2: it runs
    logits, _, mem = model(torch.randint(0, 101, (1, 40)))
    assert logits.shape == (1, 40, 101) and mem.n_seg == 2


def test_a_bad_hf_directory_is_named_in_one_line(hf_dir, tmp_path):
    """A config.json that is missing, not JSON, not GPT-2's, or weights of another shape: a ValueError (train.py
    and sample.py print it as one line) naming the file, not a bare JSON error or an assert."""
    import shutil
    path, _ = hf_dir
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    for text, expect in (("", "config.json is not a GPT-2 config (JSONDecodeError: Expecting value"),
                         ("[1, 2]", "config.json is not a GPT-2 config (AttributeError"),
                         ('{"n_layer": 2}', "config.json is not a GPT-2 config (KeyError: 'n_head')"),
                         ('{"activation_function": "relu"}', "activation_function 'relu', not GPT-2's gelu_new"),
                         (None, "config.json is not a GPT-2 config (FileNotFoundError")):
        if text is None:
            (bad / "config.json").unlink()
        else:
            (bad / "config.json").write_text(text)
        with pytest.raises(ValueError) as e:
            GPT.from_pretrained(str(bad))
        assert str(e.value).startswith(f"{bad}/config.json is not a GPT-2 config") and expect in str(e.value)
        assert "\n" not in str(e.value)
    config = json.loads((path / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "n_embd": 32}))
    with pytest.raises(ValueError, match=r"^transformer\.\S+: \(\d+,.*\) in .*/model.safetensors, \(\d+,.*\) in its "
                                         r"config.json$"):
        GPT.from_pretrained(str(bad))


def test_plain_gpt_rejects_long_input():
    with pytest.raises(ValueError, match="block_size"):
        tiny(mem_len=0)(tokens(17))


# --- causality, also through memory ---

@pytest.mark.parametrize("pool", ["parts", "route"])
@pytest.mark.parametrize("j", [3, 2 * S + 5, 4 * S + 1])  # first, a middle and the last (partial) segment
def test_no_token_sees_the_future(j, pool):
    model = tiny(pool=pool)
    idx = tokens(4 * S + 3)
    idx2 = idx.clone()
    idx2[:, j] = (idx[:, j] + 1) % 64
    with torch.no_grad():
        a, _, _ = model(idx)
        b, _, _ = model(idx2)
    torch.testing.assert_close(a[:, :j], b[:, :j], atol=1e-6, rtol=0)
    assert (a[:, j] - b[:, j]).abs().max() > 1e-4  # the changed token itself does count


def test_mask_matches_the_drawing():
    m = segment_mask(2, 2, 3, 2, torch.device("cpu")).int()
    assert m.tolist() == [
        [1, 1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1]]
    assert segment_mask(2, 2, 3, 2, torch.device("cpu")) is segment_mask(2, 2, 3, 2, torch.device("cpu"))


# --- memory carries information ---

@pytest.mark.parametrize("ltm", [0, K])
def test_memory_carries_information_to_later_segments(ltm):
    model = tiny(ltm=ltm)
    idx = tokens(4 * S)
    idx2 = idx.clone()
    idx2[:, 2] = (idx[:, 2] + 1) % 64  # a token of segment 0
    with torch.no_grad():
        a, _, _ = model(idx)
        b, _, _ = model(idx2)
    assert (a[:, 3 * S:] - b[:, 3 * S:]).abs().max() > 1e-4  # segment 3 knows


def test_ltm_fifo_keeps_the_newest_snapshots():
    model = tiny()
    idx = tokens(5 * S)
    with torch.no_grad():
        mems = [model(idx[:, :n * S])[2] for n in range(1, 6)]
    assert [len(m.snapshots) for m in mems] == [min(n, K) for n in range(1, 6)]
    assert [m.n_seg for m in mems] == [1, 2, 3, 4, 5]
    assert mems[4].segs == [3, 4]
    torch.testing.assert_close(mems[4].snapshots[0], mems[3].snapshots[1])  # the snapshot of segment 3, one step older
    assert model(idx[:, :S + 3])[2].n_seg == 1  # a partial segment is not written


def test_a_steep_age_slope_hides_the_ltm():
    """The age bias reaches every row that attends to the LTM: with slopes so steep that a snapshot one
    segment old weighs exp(-1e4), reading is the same as reading with no LTM at all."""
    model = tiny()
    idx = tokens(4 * S)
    with torch.no_grad():
        a = model(idx)[0]
        model.ltm_age.fill_(-1e4)
        hidden, none = model(idx)[0], model(idx, ltm_size=0)[0]
    torch.testing.assert_close(hidden, none, rtol=0, atol=1e-5)
    assert (a - none).abs().max() > 1e-3  # with the trained slopes the LTM is read


def test_write_slot_j_starts_from_part_j_of_the_segment():
    """pool="parts" (the ablation): with the blocks' residual branches silenced, W's final state is its input: STM +
    slot embedding + the mean of part j of the segment. A token in part 1 then reaches slot 1 of the new STM, and no
    other slot."""
    model = tiny(pool="parts")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("c_proj.weight") or n.endswith("c_proj.bias"):
                p.zero_()
        model.mem_keep.fill_(-30.0)  # take the new write
        idx = tokens(S)
        idx2 = idx.clone()
        idx2[:, S // M] = (idx[:, S // M] + 1) % 64  # the first token of part 1 (S/M tokens per part)
        a, b = model(idx)[2].stm, model(idx2)[2].stm
    changed = (a - b).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.tolist() == [j == 1 for j in range(M)]


def test_routed_slots_start_from_the_pairs_they_win():
    """pool="route": a pair is a token with the one before (their mean at init); with no content match yet every
    pair is shared out alike among the M slots and the null, so every slot starts from the mean of the pairs; a
    null that wins every pair leaves every slot empty (filler can go nowhere)."""
    model = tiny(pool="route")
    idx = tokens(S)
    query = model.empty_memory(2).stm + model.mem_write
    with torch.no_grad():
        model.mem_route.weight.zero_()
        tok = model.transformer.wte(idx)  # tokens, not places
        pairs = (tok + torch.nn.functional.pad(tok, (0, 0, 1, 0))[:, :-1]) / 2  # the token before the first: zeros
        torch.testing.assert_close(model.route(model.embed(idx), query)[0],
                                   pairs.mean(1, keepdim=True).expand(-1, M, -1))
        model.route_null.fill_(1e4)
        part, shares = model.route(model.embed(idx), query)
        assert not part.any() and torch.equal(shares[..., -1], torch.ones(2, S))  # every pair to the null


def test_routed_slots_read_tokens_not_places():
    """pool="route": where a fact sits does not enter what a slot wins; other position embeddings, the same slots."""
    model = tiny(pool="route")
    idx, query = tokens(S), model.empty_memory(2).stm + model.mem_write
    with torch.no_grad():
        a = model.route(model.embed(idx), query)
        model.transformer.wpe.weight.normal_(std=1.0)
        torch.testing.assert_close(model.route(model.embed(idx), query), a)  # the slots' starts and the shares


def one_pair_repeated(model):
    """A segment of one token repeated (the same pair from place 1 on), and slot queries (B, M, C) of which slot 0
    matches that pair and the others do not."""
    idx = torch.full((2, S), 5)
    with torch.no_grad():
        seg = model.embed(idx) - model.transformer.wpe.weight[:S]
        key = model.mem_route(torch.cat((model.ln_route(seg), model.ln_route(seg)), -1))[:, 1:2]  # (B, 1, C)
    return idx, torch.cat((key, -key.expand(-1, M - 1, -1)), 1)


def test_a_slot_a_pair_took_goes_to_the_next_pair_last():
    """route_alloc: pairs that all match slot 0 best do not all pile into it. One token repeated makes the same pair
    from place 1 on (the first pairs it with zeros); with no allocation each goes to slot 0, with it the first takes
    slot 0 and the next, seeing slot 0 used, another (first come, first served)."""
    model = tiny(pool="route", route_alloc=1)
    idx, query = one_pair_repeated(model)
    with torch.no_grad():
        model.config.route_alloc = 0
        top = model.route(model.embed(idx), query)[1][..., :M].argmax(-1)  # (B, S)
        assert (top == 0).all()
        model.config.route_alloc = 1
        top = model.route(model.embed(idx), query)[1][..., :M].argmax(-1)
    assert (top[:, 0] == 0).all() and (top[:, 1] != 0).all()


def test_a_closed_slot_passes_its_gradient_with_route_alloc_grad():
    """route_alloc_grad: the same shares forward; backward as the open match, so the pairs after the one that took
    slot 0 still pull slot 0's query (without it they pass none: the slot is closed to them, -inf)."""
    out = []
    for straight_through in (False, True):
        model = tiny(pool="route", route_alloc=1, route_alloc_grad=straight_through)
        idx, query = one_pair_repeated(model)
        query.requires_grad_()
        shares = model.route(model.embed(idx), query)[1]
        shares[:, 1:, 0].sum().backward()  # slot 0, closed from place 1 on
        out.append((shares.detach(), query.grad[:, 0].abs().sum()))
    (shares, grad), (shares_st, grad_st) = out
    assert torch.equal(shares, shares_st) and grad == 0 and grad_st > 0


def test_a_null_matched_by_content_takes_the_pairs_it_matches():
    """route_null_query: the null has a query as a slot does, so a pair that matches it best (filler, say) is kept
    by no slot, while the null's logit alone is the same for every pair."""
    model = tiny(pool="route", route_null_query=True)
    idx = torch.full((2, S), 5)
    with torch.no_grad():
        seg = model.embed(idx) - model.transformer.wpe.weight[:S]
        key = model.mem_route(torch.cat((model.ln_route(seg), model.ln_route(seg)), -1))[0, 1]  # (C,)
        model.route_null_q.copy_(key)
        shares = model.route(model.embed(idx), -key.expand(2, M, -1))[1]  # (B, S, M + 1)
    assert (shares[:, 1:, -1] > 0.9).all()


@pytest.mark.parametrize("bias, keeps", [(30.0, True), (-30.0, False)])
def test_gate_keeps_the_stm_or_takes_the_write(bias, keeps):
    model = tiny()
    with torch.no_grad():
        model.mem_keep.fill_(bias)
        mem = model(tokens(3 * S))[2]
    m0 = model.empty_memory(2).stm
    assert torch.allclose(mem.stm, m0, atol=1e-6) == keeps  # a gate at 1 holds the STM through every segment


@pytest.mark.parametrize("pool", ["route", "parts"])
def test_slots_start_open_and_the_write_holds_the_pooled_part(pool):
    """Untrained, every slot keeps 0.12 of its STM per segment whatever it reads (the gate's content term starts
    at zero), and the write itself holds slot j's pooled part: with the blocks silenced and the slots taking
    the write alone, STM' = part_j + ln_mem(h)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64, mem_len=M, ltm=K,
                          seg_len=S, pool=pool)).eval()  # as made, not tiny()'s "as if trained"
    assert torch.allclose(torch.sigmoid(model.mem_keep), torch.full((M,), 0.1192), atol=1e-4)
    assert not model.mem_gate.weight.any()
    idx = tokens(S)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("c_proj.weight") or n.endswith("c_proj.bias"):
                p.zero_()
        model.mem_keep.fill_(-30.0)  # take the write alone
        stm = model(idx)[2].stm
        seg, query = model.embed(idx), model.empty_memory(2).stm + model.mem_write
        part = (model.route(seg, query)[0] if pool == "route" else
                torch.nn.functional.adaptive_avg_pool1d(seg.transpose(1, 2), M).transpose(1, 2))
        h = query + part  # W's final state: its input, blocks silenced
    torch.testing.assert_close(stm, part + model.ln_mem(h))


def test_no_weight_decay_on_embeddings():
    """AdamW decays the blocks' matrices; the token, position and memory-slot embeddings, the memory's gate and age
    slopes join the biases and gains without decay (decay merged the recall values' embeddings while nothing could
    be read yet, and pulls a holding gate back open)."""
    model = tiny()
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, plain = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu").param_groups
    got = {names[id(p)] for p in decayed["params"]}
    assert not got & {"transformer.wte.weight", "transformer.wpe.weight", "mem_init", "mem_read", "mem_write",
                      "mem_gate.weight", "ltm_age", "transformer.ln_f.weight", "transformer.h.0.attn.c_attn.bias"}
    assert {"transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp_mem.c_fc.weight"} <= got
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert len(decayed["params"]) + len(plain["params"]) == len(names)


def test_shared_ffn_ablation_has_no_memory_ffn():
    model = tiny(dual_ffn=False)
    assert not any("mlp_mem" in n or "ln_2_mem" in n for n, _ in model.named_parameters())
    assert model(tokens(3 * S))[2].n_seg == 3


# --- streaming inference ---

@pytest.mark.parametrize("pool", ["parts", "route"])
def test_streaming_generation_equals_batched_forward(pool):
    model = tiny(pool=pool)
    prompt = tokens(5, B=2)
    out = model.generate(prompt, 4 * S, top_k=1)  # greedy across 4 segment boundaries
    with torch.no_grad():
        batched, _, _ = model(out)
    assert torch.equal(batched[:, 4:-1].argmax(-1), out[:, 5:])  # each step chose the batched argmax
    stream = Stream(model, 2)
    streamed = torch.cat([stream.feed(out[:, t:t + 1]) for t in range(out.size(1))], dim=1)
    torch.testing.assert_close(streamed, batched, atol=1e-4, rtol=0)
    torch.testing.assert_close(Stream(model, 2).feed(out), batched, atol=1e-4, rtol=0)  # prompt in chunks


def test_streaming_from_a_memory_equals_batched_continuation():
    model = tiny()
    idx = tokens(6 * S + 2)
    with torch.no_grad():
        full, _, _ = model(idx)
        _, _, mem = model(idx[:, :3 * S])
        rest = Stream(model, 2, mem).feed(idx[:, 3 * S:])
    torch.testing.assert_close(rest, full[:, 3 * S:], atol=1e-4, rtol=0)


def test_plain_gpt_streaming_equals_batched_and_slides_past_block_size():
    model = tiny(mem_len=0)
    idx = tokens(16)
    with torch.no_grad():
        batched, _, _ = model(idx)
    stream = Stream(model, 2)
    streamed = torch.cat([stream.feed(idx[:, t:t + 1]) for t in range(16)], dim=1)
    torch.testing.assert_close(streamed, batched, atol=1e-4, rtol=0)
    assert model.generate(idx[:, :3], 40).shape == (2, 43)  # past block_size the window slides
    assert stream.cache[0].size(3) <= model.config.block_size


def test_inference_state_is_constant_size():
    model = tiny()
    stream = Stream(model, 1)
    sizes, max_keys = {}, 0
    for t, tok in enumerate(stream.generate(tokens(1, B=1), 16 * S), start=2):
        max_keys = max(max_keys, stream.cache[0].size(3))
        if t % S == 0:
            sizes[t // S] = stream.nbytes()
    assert sizes[4] == sizes[16] and stream.mem.n_seg == 16
    assert max_keys <= K * M + M + S  # per-token work is bounded


# --- training through time ---

def last_segment_loss(model, idx, **kw):
    targets = idx.clone()
    targets[:, :-S] = -1  # loss on the last segment alone
    return model(idx, targets, **kw)[1]


@pytest.mark.parametrize("pool", ["parts", "route"])
def test_gradients_reach_every_parameter_through_time(pool):
    model = tiny(pool=pool).train()
    last_segment_loss(model, tokens(4 * S)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("bptt, reaches_segment_0", [(0, True), (1, False), (4, True)])
def test_bptt_truncates_gradients(bptt, reaches_segment_0):
    model = tiny().train()
    embeddings = []  # the token embeddings of the whole input
    hook = model.transformer.wte.register_forward_hook(lambda m, i, out: embeddings.append(out) or out.retain_grad())
    last_segment_loss(model, tokens(4 * S), bptt=bptt).backward()
    hook.remove()
    grad = embeddings[0].grad
    assert (grad[:, :S].abs().sum() > 0) == reaches_segment_0
    assert grad[:, 3 * S:].abs().sum() > 0
    assert model.mem_init.grad.abs().sum() > 0 or bptt == 1



def grads(model, idx, **kw):
    """Every parameter's gradient of the loss over all tokens (None, no gradient, as zeros)."""
    model.zero_grad(set_to_none=True)
    logits, loss, _ = model(idx, idx, **kw)
    loss.backward()
    return logits.detach(), {n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                             for n, p in model.named_parameters()}


@pytest.mark.parametrize("bptt", [0, 2])
def test_recompute_gives_the_same_gradients(bptt):
    """Recomputing each segment in the backward pass changes what is kept, not what is computed: with the LTM,
    the gated STM write and BPTT truncation, the same gradients (dropout replayed from the same RNG state)."""
    model = tiny(dropout=0.1).train()
    idx = tokens(5 * S)
    torch.manual_seed(2)
    logits, plain = grads(model, idx, bptt=bptt)
    torch.manual_seed(2)
    logits_r, recomputed = grads(model, idx, bptt=bptt, recompute=True)
    torch.testing.assert_close(logits_r, logits, rtol=0, atol=1e-5)
    for name, g in plain.items():
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(recomputed[name], g, rtol=0, atol=1e-5, msg=name)



@pytest.mark.parametrize("T", [4 * S, 4 * S - 3])
def test_skipping_the_last_write_changes_no_logit_nor_gradient(T):
    """need_mem=False (training: nothing reads the memory after the sample) skips the last segment's W rows,
    which no token sees: the same logits, loss and gradients (a partial last segment is not written anyway)."""
    model = tiny().train()
    idx = tokens(T)
    logits, full = grads(model, idx)
    logits_skip, skipped = grads(model, idx, need_mem=False)
    torch.testing.assert_close(logits_skip, logits, rtol=0, atol=1e-6)
    for name, g in full.items():
        torch.testing.assert_close(skipped[name], g, rtol=0, atol=1e-6, msg=name)
    assert model(idx, need_mem=False)[2] is None


# --- the memory state ---

def test_memory_stays_bounded_over_1000_segments():
    model = tiny()
    mem, norms = None, []
    with torch.no_grad():
        for s in range(1000):
            logits, _, mem = model(tokens(S, B=1, seed=s), mem=mem)
            norms.append(mem.stm.norm().item())
    assert torch.isfinite(logits).all() and all(torch.isfinite(x).all() for x in mem.snapshots)
    assert max(norms) < 2 * norms[0]


def test_memory_save_load_is_exact(tmp_path):
    model = tiny()
    idx = tokens(3 * S + 2)
    with torch.no_grad():
        _, _, mem = model(idx)
        path = str(tmp_path / "mem.pt")
        save_memory(mem, path, model)
        assert os.listdir(tmp_path) == ["mem.pt"]  # no temp file left behind
        loaded = load_memory(path, model)
        a = Stream(model, 2, mem).feed(idx[:, :S])
        b = Stream(model, 2, loaded).feed(idx[:, :S])
    assert torch.equal(a, b) and loaded.n_seg == 3
    assert torch.equal(loaded.stm, mem.stm) and all(torch.equal(x, y) for x, y in zip(loaded.snapshots, mem.snapshots))
    assert loaded.drop_snapshot(-1).segs == [1] and loaded.clear_ltm().snapshots == [] and loaded.segs == [1, 2]


def test_memory_from_another_model_is_refused(tmp_path):
    model = tiny()
    path = str(tmp_path / "mem.pt")
    save_memory(model.empty_memory(1), path, model)
    with pytest.raises(ValueError, match="other shape .* read the document again"):
        load_memory(path, tiny(mem_len=8))
    other = tiny()
    with torch.no_grad():
        other.mem_write.add_(1e-3)  # the same shape, trained a step further
    with pytest.raises(ValueError, match="other weights"):
        load_memory(path, other)
    gated = tiny()
    with torch.no_grad():  # the same memory slots, another gate: an older model.py's init (issue 40)
        gated.mem_keep.add_(1.0)
    with pytest.raises(ValueError, match="other weights"):
        load_memory(path, gated)
    torch.save({"model": other.state_dict()}, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="not a memory file"):
        load_memory(str(tmp_path / "ckpt.pt"), model)
    with pytest.raises(FileNotFoundError, match="save_memory"):
        load_memory(str(tmp_path / "missing.pt"), model)
