"""Errors a user can fix (bad data, bad hyperparameters) versus everything else."""


class UserError(Exception):
    """A problem with the job's input or configuration; the message says what to change."""


class Preempted(Exception):
    """SIGTERM arrived during training; the checkpoint is written and the job should end now."""
