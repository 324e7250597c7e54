# Several facts at once: 4 key-value facts in segment 0, each asked once at a random later segment
# (distance 1..7), the answers hidden from the input so no question is answered by elimination.
#   python prepare.py --dataset=recall --name=recall_facts --n_facts=4
#   python train.py config/recall_facts.py
# With ltm=2, facts asked 3..7 segments later reach the question through the short-term memory alone.
out_dir = "out-recall-facts"
dataset = "recall_facts"
seg_len = 16
curriculum = (2, 4)      # distance 1 first (samples cut to 2, then 4 segments), then every distance up to 7
stage_iters = 300
n_seg = 8
answer_loss = True
n_layer = 2
n_head = 4
n_embd = 128
mem_len = 8
ltm = 2
batch_size = 32
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 50
max_iters = 1500
lr_decay_iters = 1500
eval_interval = 250
eval_iters = 8
recall_samples = 1000
