"""
The synthetic long-range recall task: a sample is n_seg segments of seg_len random filler tokens;
segment 0 opens with n_facts facts "key value ...", and each fact is asked once, "? key value", at
the end of a random later segment. The distance from a fact to its question (in segments) is what
the memory must bridge; past the LTM's reach only the STM can answer.

    vocab(cfg)           token strings by id
    samples(n, cfg, rng) token rows (n, n_seg * seg_len), made in a second (prepare.py shards them)
    xy(rows, meta)       inputs and targets: the answers only, and every answer hidden from the input
    sample_xy(rows)      the same of whole samples (nothing after their last token)
"""
import numpy as np

QUESTION = 1  # the id of "?": the fact's key and its value (the answer) follow it
META = dict(question=QUESTION, eot=0)  # what xy needs of the recall set's meta (prepare.py writes the same)


def vocab(cfg):
    """Token strings by id: 0 = <eot> (also padding), 1 = ? (question marker), then keys, values, filler."""
    return (["<eot>", "?"] + [f"k{j}" for j in range(cfg["n_keys"])] + [f"v{j}" for j in range(cfg["n_values"])]
            + [f"f{j}" for j in range(cfg["n_filler"])])


def first_ids(cfg):
    """The first id of the keys, of the values and of the filler in vocab(cfg)."""
    return 2, 2 + cfg["n_keys"], 2 + cfg["n_keys"] + cfg["n_values"]


def samples(n, cfg, rng):
    """n samples (n, n_seg * seg_len) of filler: segment 0 holds the n_facts facts "k v", and each fact is
    asked once, "? k v" (v the answer), in a random later segment; a segment's questions close it, up to
    seg_len // 3 of them, so several facts can share a segment (each (segment, place) is drawn alike). No
    answer gives another away, and the first segments of a sample are a valid sample too.
    cfg["layout"]: "clustered" (the default) opens segment 0 with the facts, "k v k v ..."; "scattered"
    puts each at a random even place of segment 0, filler between. cfg["restate"]: see restate()."""
    S, n_seg, F = cfg["seg_len"], cfg["n_seg"], cfg["n_facts"]
    key0, val0, fil0 = first_ids(cfg)
    x = fil0 + rng.integers(cfg["n_filler"], size=(n, n_seg * S))
    keys = key0 + rng.random((n, cfg["n_keys"])).argsort(axis=1)[:, :F]  # distinct within a sample
    values = val0 + rng.integers(cfg["n_values"], size=(n, F))
    rows = np.arange(n)[:, None]
    if cfg.get("layout", "clustered") == "scattered":
        at = 2 * rng.random((n, S // 2)).argsort(axis=1)[:, :F]  # (n, F) distinct pair places
    else:
        at = np.arange(0, 2 * F, 2)[None]
    x[rows, at], x[rows, at + 1] = keys, values
    per_seg = S // 3
    slot = rng.random((n, (n_seg - 1) * per_seg)).argsort(axis=1)[:, :F]  # (n, F) distinct question slots
    asked_in = 1 + slot // per_seg
    # a segment's questions in the random order of their slots, closing it
    order = ((asked_in[:, :, None] == asked_in[:, None, :]) & (slot[:, None, :] < slot[:, :, None])).sum(2)
    answers = asked_in * S + S - 1 - 3 * order
    x[rows, answers - 2], x[rows, answers - 1], x[rows, answers] = QUESTION, keys, values
    if cfg.get("restate"):
        restate(x, keys, values, asked_in, answers, cfg, rng)
    return x.astype(np.uint16)


def restate(x, keys, values, asked_in, answers, cfg, rng):
    """Each fact asked in segment 2 or later is stated again, "k v'" with a new value v', at a free even place of
    a random segment between (before that segment's questions); its question's answer becomes v', the newest.
    A fact with no free place left keeps its first value."""
    S, V = cfg["seg_len"], cfg["n_values"]
    val0 = first_ids(cfg)[1]
    new = val0 + (values - val0 + 1 + rng.integers(V - 1, size=values.shape)) % V  # never the old value
    for i in range(x.shape[0]):
        # where segment s's questions begin (S if it has none): a restatement must end before
        ends = {s: S for s in range(1, cfg["n_seg"])}
        for s, a in zip(asked_in[i], answers[i]):
            ends[s] = min(ends[s], a - 2 - s * S)
        used = set()
        for f in rng.permutation(len(keys[i])):
            free = [(s, p) for s in range(1, asked_in[i, f]) for p in range(0, ends[s] - 1, 2) if (s, p) not in used]
            if free:
                s, p = free[rng.integers(len(free))]
                used.add((s, p))
                x[i, s * S + p], x[i, s * S + p + 1], x[i, answers[i, f]] = keys[i, f], new[i, f], new[i, f]


def check(cfg):
    """Stop with one line on settings that make no valid sample."""
    S, n_seg, F = cfg["seg_len"], cfg["n_seg"], cfg["n_facts"]
    if cfg.get("layout", "clustered") not in ("clustered", "scattered"):
        raise SystemExit(f"recall layout is clustered or scattered, got {cfg['layout']!r}")
    if cfg.get("restate") and cfg["n_values"] < 2:
        raise SystemExit("restated facts need n_values >= 2: a new value differs from the old one")
    if not (1 <= F <= (n_seg - 1) * (S // 3) and S >= max(3, 2 * F) and cfg["n_keys"] >= F
            and min(cfg["n_values"], cfg["n_filler"]) >= 1):
        raise SystemExit("recall needs n_seg >= 2, seg_len >= 3, 1 <= n_facts <= (n_seg-1) * (seg_len//3) questions, "
                         "the facts in segment 0 (2*n_facts <= seg_len), n_keys >= n_facts and n_values, "
                         "n_filler >= 1; "
                         f"got n_facts={F}, n_seg={n_seg}, seg_len={S}, n_keys={cfg['n_keys']}, "
                         f"n_values={cfg['n_values']}, n_filler={cfg['n_filler']}")


def xy(rows, meta):
    """Inputs and targets (both (n, L)) of rows (n, L + 1). Targets are -1 everywhere but at the answers,
    the tokens two after each "?" (each target sits at the prediction made just before its answer). In the
    inputs every answer is hidden (end-of-text): a question asked after others could otherwise be answered
    by elimination, from the values already given, without recalling its own fact."""
    L = rows.shape[1] - 1
    asked = rows[:, :-2] == meta["question"]  # "?" at t: its key at t+1, the answer at t+2
    y = np.full((rows.shape[0], L), -1, dtype=np.int64)
    y[:, 1:][asked] = rows[:, 2:][asked]
    x = rows[:, :-1].copy()
    x[:, 2:][asked[:, :L - 2]] = meta["eot"]
    return x, y


def sample_xy(rows, meta=META):
    """xy of whole samples (n, L), as samples() makes them: inputs and targets (n, L), no token after the last."""
    return xy(np.pad(np.asarray(rows, dtype=np.int64), ((0, 0), (0, 1)), constant_values=-1), meta)
