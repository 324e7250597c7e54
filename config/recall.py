# The CPU quick start: memoGPT learns to carry facts across segments, on 2 cores.
#   python prepare.py --dataset=recall
#   python train.py config/recall.py                                         # memoGPT
#   python train.py config/recall.py --mem_len=0 --out_dir=out-recall-gpt    # plain GPT: chance
# A sample is 8 segments of 16 tokens: segment 0 states 7 facts "key value", segment d = 1..7 is
# filler ending with the question "? key" about one of them and its value (each fact asked once,
# so no earlier answer gives a later one away). With ltm=2 the long-term memory holds the last 2
# segments' snapshots: the facts reach distances 3..7 through the short-term memory alone.
# The plain GPT reads each 16-token segment as its own window: it never sees segment 0.
out_dir = "out-recall"
dataset = "recall"
seg_len = 16
n_seg = 8                # no curriculum: full samples give 7 answers each and learn fastest here
answer_loss = True       # everything else is random filler; predicting it only adds noise
n_layer = 2
n_head = 4
n_embd = 128
mem_len = 4
ltm = 2
batch_size = 64
learning_rate = 3e-3
min_lr = 1e-4
warmup_iters = 50
max_iters = 800
lr_decay_iters = 800
eval_interval = 100
eval_iters = 8
recall_samples = 1000
