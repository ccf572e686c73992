"""Does a commit change meta-training's numerics? Four outer steps of the shipped θ's
recipe on two of its tasks, θ's SHA-256 and meta-losses printed (issue 12).

Run it inside a checkout of each commit to compare (output of 2026-12-05, jax 0.10.2, x86_64,
in reproduce_bytes.log):

    git worktree add /tmp/at_6b46cbc 6b46cbc
    cd /tmp/at_6b46cbc && PYTHONPATH=. python /path/to/reproduce_bytes.py 6b46cbc
"""

import hashlib
import json
import sys
import tempfile

import jax
import numpy as np

from hubopt.learned.meta.train import MetaTrainConfig, meta_train

config = MetaTrainConfig(
    tasks=("digits_mlp32relub32", "synreg_mlp32tanhb32"), outer_steps=4, checkpoint_every=4
)
with tempfile.TemporaryDirectory() as folder:
    result = meta_train(config, folder, progress=False)
flat = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(result.theta)])
print(
    json.dumps(
        {
            "commit": sys.argv[1] if len(sys.argv) > 1 else "?",
            "sha": hashlib.sha256(flat.tobytes()).hexdigest()[:16],
            "meta_loss": [float(np.mean(x["meta_loss"])) for x in result.log],
            "theta_head": flat[:3].tolist(),
        }
    )
)
