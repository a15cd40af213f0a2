"""The optimisers behind ``warmstart.components.optimizers``' registry entries, written here rather than taken from
``torch.optim`` (kept apart so the registry imports no torch): ``base.PlainOptimizer`` (torch.optim's
bookkeeping and state-dict format), ``sgd.SGD``, ``adam.Adam`` (and ``adam.adam_step``, which Muon's AdamW
groups take too), ``muon.Muon``, and ``newton_schulz`` (the orthogonalisation Muon and FIRE's init share).

Why not ``torch.optim``: constructing any of its optimisers imports ``torch._dynamo`` (``Optimizer.__init__``
calls ``add_param_group``, which, like ``zero_grad``, ``state_dict``, ``load_state_dict`` and ``step``, is
wrapped by ``torch._disable_dynamo``, whose first call imports dynamo). Measured on the 2-core development
CPU with torch 2.14: 1.5-2.1 s per process, paid once by every training job. Subclassing
``torch.optim.Optimizer`` would mean overriding every one of those methods and its ``__init__``, so these
are plain classes with the part of its interface the engine uses: ``param_groups``, ``state`` (keyed by
parameter), ``zero_grad(set_to_none=True)``, ``step()``, ``state_dict()`` / ``load_state_dict()``.

Their state dicts are torch's, key for key (``state`` by parameter index with ``momentum_buffer`` /
``step``, ``exp_avg``, ``exp_avg_sq``; ``param_groups`` with torch's hyper-parameter keys), so optimiser
files written by ``torch.optim.SGD`` / ``Adam`` load here and the other way round, and the engine's
per-row slicing (``StackedModels.keep``, ``row_optimizer_state``) works unchanged. ``SGD`` and ``Adam``
compute what torch's default (non-foreach, non-fused) CPU implementations compute, op for op, so their
steps are bitwise torch's on the CPU (``tests/test_optim.py``). They use torch's ``_foreach`` kernels on
every device, which on a CPU fall back to the same per-tensor ops and on a GPU are the kernels torch's
default (foreach) path launches.
"""
