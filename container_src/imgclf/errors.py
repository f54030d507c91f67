"""Errors a user can fix (bad data, bad hyperparameters) versus everything else, and the exit statuses of `train`."""

from imgclf_contract.errors import ContractError

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2
EXIT_STOPPED = 128 + 15  # ended by SIGTERM, as a shell reports it; the checkpoint lets the job resume


class UserError(ContractError):
    """A problem with the job's input or configuration that only the image sees (files that do not decode, a
    checkpoint of another model); the message says what to change. The contract's own refusals are ContractErrors
    too, so `train` answers both alike."""


class Preempted(Exception):
    """SIGTERM arrived during training; the checkpoint is written and the job should end now."""


class WorkersFailed(Exception):
    """One of several training processes failed and the others were ended; `exit_code` is what `train` exits with."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
