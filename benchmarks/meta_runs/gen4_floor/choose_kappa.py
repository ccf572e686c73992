"""The choice of `ANCHOR_FLOOR` (κ) on the meta-validation tasks (issue 12).

Runs `hubopt meta-select --criterion train+valid --alone-and-inside-hub --seeds 3` on the
fourth generation's chosen θ under the `_floor` variant with κ set to the given value
(the module constant, read when the step is traced), in a run folder of its own:

    python benchmarks/meta_runs/gen4_floor/choose_kappa.py 1e-2 runs/kappa_1e-2
    (the folder needs thetas/theta_004050.msgpack: a copy of
     benchmarks/records/meta_gen4_floor/theta_004050.msgpack)

Meta-validation data only; the test set is not read.
"""

import sys

from hubopt.learned.small_lopt import architecture

architecture.ANCHOR_FLOOR = float(sys.argv[1])

from hubopt.bench.cli import main  # noqa: E402  (after κ is set)

sys.exit(
    main(
        [
            "meta-select",
            sys.argv[2],
            "--criterion",
            "train+valid",
            "--alone-and-inside-hub",
            "--seeds",
            "3",
        ]
    )
)
