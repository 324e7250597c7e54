"""lab/diagnose.py's smoke test: on a tiny recall checkpoint (random weights, the gate's content term randomised) it
measures each slot's keep at every segment's write, the content term included, and writes diagnose.json."""
import json
import os
import subprocess
import sys
from dataclasses import asdict

import torch

import prepare
from checkpoint import FORMAT
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_keep_per_slot_and_segment(tmp_path):
    meta = prepare.prepare(dataset="recall", data_dir=str(tmp_path / "data"), n_train=64, n_val=64)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=128, mem_len=4, ltm=2,
                          seg_len=16))
    with torch.no_grad():  # as if trained: the keep then depends on what is written
        model.mem_gate.weight.normal_()
    torch.save(dict(format=FORMAT, model=model.state_dict(), model_args=asdict(model.config), meta=meta,
                    config=dict(dataset="recall", seg_len=16, n_seg=meta["n_seg"], answer_loss=False)),
               tmp_path / "ckpt.pt")
    proc = subprocess.run([sys.executable, "-m", "lab.diagnose", "--ckpt=ckpt.pt", "--samples=16"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "diagnose.json").read_text())
    keep, bias = result["keep_by_slot_and_segment"], result["keep_bias"]
    assert len(keep) == 4 and all(len(row) == meta["n_seg"] for row in keep)
    assert all(0 < k < 1 for row in keep for k in row) and bias == torch.sigmoid(model.mem_keep).tolist()
    assert any(abs(k - b) > 1e-3 for row, b in zip(keep, bias) for k in row)  # the content term counts
    assert result["gate_norm"] == model.mem_gate.weight.norm().item()
    for j, row in enumerate(keep):
        assert f"| slot {j} | " + " | ".join(f"{k:.3f}" for k in row) + f" | {bias[j]:.3f} |" in proc.stdout
