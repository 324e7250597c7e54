# The plain GPT-2 medium baseline (350M, no memory) trained from scratch on OpenWebText, as
# nanoGPT's train_gpt2.py does for the 124M model: ~0.5M tokens per iteration.
# 8 GPUs:  torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_medium.py
# data:    python prepare.py  (OpenWebText)
out_dir = "out-gpt2-medium"
dataset = "openwebtext"
init_from = "scratch"
n_layer = 24
n_head = 16
n_embd = 1024
mem_len = 0              # plain GPT: reads 1024-token windows
seg_len = 1024
n_seg = 1
# 8 samples * 1024 tokens * 64 micro-steps (8 per GPU) = 524,288 tokens per iteration
batch_size = 8
gradient_accumulation_steps = 64
# GPT-3's settings for its 350M model; nanoGPT's 600k-iteration schedule
learning_rate = 3e-4
min_lr = 3e-5
max_iters = 600000
lr_decay_iters = 600000
warmup_iters = 2000
weight_decay = 1e-1
eval_interval = 1000
eval_iters = 200
compile = True
