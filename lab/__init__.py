"""
The lab: measurements on top of the tutorial (the model and its scripts, one folder up). Run each from the
repository root as a module, python -m lab.<name>:

    eval_ckpt      a trained checkpoint: loss by segment by LTM size, memory reset, reach, recall by distance
    capacity       facts held at once, beside a peer recurrent memory transformer and the in-context ceiling
    report         every memory claim of README and RESULTS.md re-measured, PASS or FAIL
    probe          the quick start's first iterations on many seeds: does the memory learn on every seed?
    diagnose       what a recall checkpoint's memory holds, and where the answer's gradient goes
    attention_map  where each token reads from (sample.py --attention_map)
    jobs           report's and probe's runs, a few processes at a time, reused while current
"""
