import torch

# The test models are tiny: one thread each is faster than torch's default on a small machine.
torch.set_num_threads(1)
