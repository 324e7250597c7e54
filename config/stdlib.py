# memoGPT on real text, offline: the source files of this Python's standard library, as bytes.
#   python prepare.py --dataset=stdlib --tokenizer=bytes
#   python train.py config/stdlib.py
#   python sample.py --out_dir=out-stdlib --start=FILE:some.py --read=long.py
# A sample is 8 segments of 32 bytes; every evaluation logs the val loss by segment with the memory
# carried and with it reset before every segment (log.jsonl: memory_gain_by_segment), what the memory
# carries; lab/eval_ckpt.py adds it by reach (from how many segments back it comes). RESULTS.md has the
# measured table beside the plain GPT's, and why segments of 32, 8 slots and no LTM (the ablation).
out_dir = "out-stdlib"
dataset = "stdlib"
seg_len = 32
curriculum = (2, 4)      # memory learned at distance 1 first, then further
stage_iters = 200
n_seg = 8
n_layer = 4
n_head = 4
n_embd = 128
mem_len = 8
ltm = 0                  # on text the LTM's keys of the last segment are a shortcut the STM then never learns
batch_size = 8
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 100
max_iters = 2000
lr_decay_iters = 2000
eval_interval = 200
eval_iters = 20
