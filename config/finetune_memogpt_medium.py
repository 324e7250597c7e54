# memoGPT fine-tuned from GPT-2 medium on OpenWebText: 32 memory slots, 4 long-term snapshots,
# 256-token segments, 8 segments (2048 tokens) per sample, grown by a curriculum 2 -> 4 -> 8.
# The memory FFN starts as a copy of each block's FFN; the memory embeddings start random.
# 8 GPUs:  torchrun --standalone --nproc_per_node=8 train.py config/finetune_memogpt_medium.py
# data:    python prepare.py  (OpenWebText)
out_dir = "out-memogpt-medium"
dataset = "openwebtext"
init_from = "gpt2-medium"
mem_len = 32
ltm = 4
seg_len = 256
n_seg = 8
curriculum = (2, 4)
stage_iters = 2000
bptt = 0                 # gradients through all 8 segments; e.g. 4 to save activation memory
# 4 samples * 2048 tokens * 64 micro-steps (8 per GPU) = 524,288 tokens per iteration
batch_size = 4
gradient_accumulation_steps = 64
# fine-tuning: a small learning rate, short warmup
learning_rate = 1e-4
min_lr = 1e-5
max_iters = 20000
lr_decay_iters = 20000
warmup_iters = 500
weight_decay = 1e-1
eval_interval = 500
eval_iters = 100
compile = True
