"""Training engine: the trainer, checkpoints, seeding, schedules."""
