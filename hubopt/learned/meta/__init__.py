"""Meta-training hubopt's learned optimizer (`hubopt meta-train`).

One concern per module:

    task_distribution  the inner problems (pure init/loss tasks, data as arguments)
    estimators         antithetic ES and PES over truncated unrolls (vmapped, jitted)
    train              the outer loop: Adam on θ, checkpoints, exact resume
    ray_executor       optional: particles spread over Ray workers
    export             a finished run -> weights + provenance for `small`
    cli                `hubopt meta-train`
"""
