# The CPU quick start: memoGPT learns to carry a fact across segments, on 2 cores, in minutes.
#   python prepare.py --dataset=recall
#   python train.py config/recall.py                                         # memoGPT
#   python train.py config/recall.py --mem_len=0 --out_dir=out-recall-gpt    # plain GPT: chance
# A sample is 8 segments of 16 tokens of filler: segment 0 opens with a fact "key value", and one
# later segment, at random, ends with the question "? key value". With ltm=2 the long-term memory
# holds the last 2 segments' snapshots: facts asked 3..7 segments later reach the question through
# the short-term memory alone. The plain GPT reads each segment as its own window: it never sees
# segment 0.
out_dir = "out-recall"
dataset = "recall"
seg_len = 16
curriculum = (2, 4)      # memory is learned at distance 1 first (samples cut to 2, then 4 segments) ...
stage_iters = 600
n_seg = 8                # ... then at every distance up to 7
answer_loss = True       # everything else is random filler; predicting it only adds noise
n_layer = 2
n_head = 4
n_embd = 64
mem_len = 4
ltm = 2
batch_size = 64
learning_rate = 6e-3
min_lr = 1e-4
warmup_iters = 50
max_iters = 3000
lr_decay_iters = 3000
eval_interval = 200
eval_iters = 8
recall_samples = 1000
