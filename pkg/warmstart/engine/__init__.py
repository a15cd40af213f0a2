"""The training loop and what it runs on: trainees (one model or a stack of seeds), the objective, the hooks
(everything that acts during training), checkpoints and resume (docs/engine.md)."""
