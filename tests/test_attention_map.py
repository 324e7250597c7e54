"""
The attention map's claims, as tests: the recorded weights are the ones the fast kernel used, and the normal
path records nothing; every key of a token is accounted for (the shares sum to 1 per head); a snapshot whose
keys match a token's query gets that token's attention; the map does not change what the stream reads.
"""
from functools import partial

import torch

from lab.attention_map import MapStream, recording
from memory import Memory
from model import GPT, GPTConfig
from stream import Stream

S, M, K = 8, 4, 2  # seg_len, mem_len, ltm


def tiny(mem_len=M):
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64, dropout=0.0,
                         mem_len=mem_len, ltm=K, seg_len=S)).eval()


def tokens(T, B=1, seed=1):
    return torch.randint(0, 64, (B, T), generator=torch.Generator().manual_seed(seed))


def test_recorded_weights_reproduce_the_attention_output():
    """weights @ v, through c_proj, equals what scaled_dot_product_attention gave, for every kind of call:
    whole segments [R | X | W] and a partial [R | X], streaming's R, token chunks, one token and W, the plain
    GPT's causal kernel and its one token."""
    checked = []

    def check(record, attn, args, out):
        x, past = args[0], args[1]
        B, T, C = x.shape
        v = attn.c_attn(x).split(C, dim=2)[2].view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2)
        v = v if past is None else torch.cat((past[1], v), dim=2)
        y = (record[-1] @ v).transpose(1, 2).reshape(B, T, C)
        torch.testing.assert_close(attn.c_proj(y), out[0], atol=1e-5, rtol=0)
        checked.append(record[-1].shape[-2:])

    for model in (tiny(), tiny(mem_len=0)):
        with recording(model) as records, torch.no_grad():
            for block, record in zip(model.transformer.h, records):  # after the recorder's hook: it runs first
                block.attn.register_forward_hook(partial(check, record))
            model(tokens(3 * S + 3 if model.config.mem_len else S, B=2))
            stream = Stream(model, 2)
            stream.feed(tokens(S + 3, B=2))  # a chunk filling the segment (then W, R), and 3 more
            stream.feed(tokens(1, B=2))
    whole = [(S + 2 * M, n * M + S + 2 * M) for n in range(K + 1)]  # (rows, keys), with n snapshots
    streaming = [(M, M), (S, M + S), (M, 2 * M + S), (M, 2 * M), (3, 2 * M + 3), (1, 2 * M + 4)]
    assert set(checked) == {*whole, (M + 3, K * M + M + 3), *streaming, (S, S), (S + 3, S + 3), (1, S + 4)}


def test_normal_path_computes_no_weights(monkeypatch):
    model = tiny()
    with recording(model) as records:
        pass
    assert records == [[], []]  # recording only while inside

    softmax = torch.Tensor.softmax

    def no_weights(t, *args, **kwargs):  # attention weights are (B, nh, rows, keys); the routed write's shares 3-D
        if t.dim() == 4:
            raise AssertionError("explicit attention weights computed")
        return softmax(t, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "softmax", no_weights)  # what the recorder uses
    model(tokens(3 * S + 3))
    stream = Stream(model, 1)
    stream.feed(tokens(2 * S + 3))
    stream.feed(tokens(1))  # (generate's sampling uses softmax: streaming alone here)
    assert not any(block.attn._forward_hooks for block in model.transformer.h)  # the recorder's hooks are gone


def test_shares_account_for_every_key():
    """Over 4 segments (the LTM fills, then slides): one row per token, the snapshots it saw labelled by the
    segment they came from, shares summing to 1 per head; and the stream reads as a Stream does."""
    model = tiny()
    x = tokens(4 * S + 3)
    stream = MapStream(model, 1)
    torch.testing.assert_close(stream.feed(x), Stream(model, 1).feed(x), atol=1e-5, rtol=0)
    assert len(stream.rows) == 4 * S + 3
    for t, (token, seg, segs, share) in enumerate(stream.rows):
        assert token.item() == x[0, t] and seg == t // S and segs == list(range(max(0, seg - K), seg))
        assert share.shape == (1, 2, 2, len(segs) + 2) and share.min() >= 0
        torch.testing.assert_close(share.sum(-1), torch.ones(1, 2, 2))


def test_share_goes_to_the_snapshot_that_matches():
    """Layer 0's query of a token at position 0 depends on the token alone: make one snapshot's layer-0 keys a
    large multiple of it (per head), and that snapshot gets the token's attention there, whichever it is."""
    model = tiny()
    _, _, mem = model(tokens(2 * S))
    token = tokens(1, seed=2)
    attn = model.transformer.h[0].attn
    with torch.no_grad():
        h = model.transformer.h[0].ln_1(model.transformer.wte(token) + model.transformer.wpe.weight[:1])
        q = attn.c_attn(h)[0, 0, :32].view(2, 16)  # (nh, hs)
    key = q * (100 * 16 ** 0.5 / q.pow(2).sum(-1, keepdim=True))  # q . key / sqrt(hs) = 100 in every head
    for target in (0, 1):
        ltm = [s.clone() for s in mem.snapshots]
        ltm[target][0, 0, 0] = key[:, None, :]  # layer 0, keys, batch 0: all M slots
        stream = MapStream(model, 1, Memory(mem.stm, ltm, mem.n_seg, mem.segs))
        stream.feed(token)
        share = stream.rows[0][3][0, 0]  # layer 0: (nh, K + 2)
        assert (share[:, target] > 0.99).all(), share
